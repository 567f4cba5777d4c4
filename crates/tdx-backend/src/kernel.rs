//! The Linux releases whose TDX code this crate follows, as data: which one a host runs, and
//! what differs between them.
//!
//! TDX host support begins in Linux 6.16. This crate has read, line by line, the TDX paths of
//! 6.18.2 and 7.3.4 (`arch/x86/kvm/vmx/tdx.c`, `virt/kvm/guest_memfd.c`,
//! `arch/x86/kvm/mmu/mmu.c`); [`Kernel`] names them, and [`Kernel::from_release`] picks one
//! from a release string (`uname -r`). What differs (the README's Kernel conformance table has
//! a column per release):
//!
//! | | 6.18.2 | 7.3.4 |
//! |---|---|---|
//! | `source_addr` 0 | passes the ioctl's check, the pin fails: `EFAULT` | `EINVAL` (`tdx_vcpu_init_mem_region`) |
//! | TDH.MEM.PAGE.ADD busy | `EBUSY`, the page pre-mapped and prepared: unrecoverable | retried inside the kernel (`kvm_tdp_mmu_map_private_pfn`, `RET_PF_RETRY`) |
//! | PAGE.ADD or MR.EXTEND failed | `EIO`, the VM alive, a page pre-mapped (finalize `EINVAL`) or partly measured | `EIO`, the VM marked dead (`TDX_BUG_ON`): every later ioctl `EIO` |
//! | a page populated again | `EEXIST` (`kvm_gmem_populate`: prepared) | `EIO` (`RET_PF_SPURIOUS`), the VM alive |
//! | a signal after a first fault attempt | `EINTR`, the folio left prepared: the retry gets `EEXIST` | `EINTR`, nothing left: the retry adds the page |
//! | finalize | `EINVAL` while `nr_premapped` | no `nr_premapped` |

use crate::Error;

/// A Linux release whose TDX code this crate follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Linux 6.18 (LTS), read at 6.18.2.
    V6_18,
    /// Linux 7.3, read at 7.3.4 (Debian trixie-backports).
    V7_3,
}

impl Kernel {
    /// Every release followed, oldest first.
    pub const KNOWN: [Kernel; 2] = [Kernel::V6_18, Kernel::V7_3];
    /// The newest release followed: what a newer, unknown release is taken as.
    pub const NEWEST: Kernel = Kernel::V7_3;

    /// The exact release read (`"6.18.2"`, `"7.3.4"`).
    pub fn read_at(self) -> &'static str {
        match self {
            Kernel::V6_18 => "6.18.2",
            Kernel::V7_3 => "7.3.4",
        }
    }

    fn major_minor(self) -> (u32, u32) {
        match self {
            Kernel::V6_18 => (6, 18),
            Kernel::V7_3 => (7, 3),
        }
    }

    /// Picks the release to follow from a kernel release string (`uname -r`, e.g.
    /// `"6.18.2-amd64"`, `"7.3.4+bpo-amd64"`): its `major.minor`.
    ///
    /// - a release followed: that one;
    /// - newer than [`Kernel::NEWEST`]: the newest, with [`KernelChoice::assumed`] saying so
    ///   (log it once);
    /// - older than 6.16: [`Error::KernelUnsupported`] (no TDX host support);
    /// - 6.16, 6.17, and releases between 6.18 and 7.3: [`Error::KernelUnsupported`] as well:
    ///   the populate rules changed between 6.18 and 7.3 and this crate has not read those
    ///   releases. A caller who knows better passes a [`Kernel`] itself.
    ///
    /// ```
    /// use tdx_backend::Kernel;
    /// assert_eq!(Kernel::from_release("6.18.2-amd64")?.kernel, Kernel::V6_18);
    /// let newer = Kernel::from_release("7.5.1")?;
    /// assert_eq!(newer.kernel, Kernel::V7_3);
    /// assert!(newer.assumed.is_some());
    /// assert!(Kernel::from_release("6.12.118").is_err());
    /// # Ok::<(), tdx_backend::Error>(())
    /// ```
    pub fn from_release(release: &str) -> Result<KernelChoice, Error> {
        let refuse = |reason: String| Error::KernelUnsupported {
            release: release.to_string(),
            reason,
        };
        let (major, minor) = parse_major_minor(release)
            .ok_or_else(|| refuse("not a Linux release string (major.minor...)".into()))?;
        if (major, minor) < (6, 16) {
            return Err(refuse(
                "TDX host support begins in Linux 6.16 (KVM_X86_TDX_VM); this kernel cannot create a TD".into(),
            ));
        }
        if let Some(k) = Kernel::KNOWN
            .iter()
            .find(|k| k.major_minor() == (major, minor))
        {
            return Ok(KernelChoice {
                kernel: *k,
                release: release.to_string(),
                assumed: None,
            });
        }
        if (major, minor) > Kernel::NEWEST.major_minor() {
            return Ok(KernelChoice {
                kernel: Kernel::NEWEST,
                release: release.to_string(),
                assumed: Some(Assumed {
                    release: release.to_string(),
                    following: Kernel::NEWEST,
                }),
            });
        }
        Err(refuse(format!(
            "this crate follows the TDX code of Linux {} only; {major}.{minor} was not read (the populate rules changed between 6.18 and 7.3), so pass a Kernel explicitly if you know which it behaves like",
            Kernel::KNOWN.map(Kernel::read_at).join(" and ")
        )))
    }

    /// [`from_release`](Self::from_release) of the running kernel (`uname(2)`'s release).
    ///
    /// ```no_run
    /// let choice = tdx_backend::Kernel::running()?;
    /// if let Some(note) = &choice.assumed {
    ///     eprintln!("{note}"); // once
    /// }
    /// # Ok::<(), tdx_backend::Error>(())
    /// ```
    pub fn running() -> Result<KernelChoice, Error> {
        Kernel::from_release(&running_release()?)
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Linux {}", self.read_at())
    }
}

/// The release [`Kernel::from_release`] chose for a release string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelChoice {
    /// The release whose rules are followed.
    pub kernel: Kernel,
    /// The release string given.
    pub release: String,
    /// Set when `release` is newer than any release followed and [`Kernel::NEWEST`] is taken
    /// for it: a note for the caller to log once.
    pub assumed: Option<Assumed>,
}

/// A newer, unknown release taken as the newest known one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assumed {
    /// The running release.
    pub release: String,
    /// What is followed instead.
    pub following: Kernel,
}

impl std::fmt::Display for Assumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Linux {} is newer than the newest release this crate has read; following {}'s TDX rules",
            self.release, self.following
        )
    }
}

fn parse_major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

fn running_release() -> Result<String, Error> {
    // SAFETY: `utsname` is plain C chars; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a live, exclusively borrowed `utsname` that uname(2) fills.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(Error::KernelUnsupported {
            release: String::new(),
            reason: format!("uname(2) failed: {}", std::io::Error::last_os_error()),
        });
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
