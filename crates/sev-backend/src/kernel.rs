//! The host kernels whose SNP launch this crate follows, as data: which one a running kernel is
//! taken for, and what differs between them.
//!
//! Read function by function in Linux 6.12.118 (Debian 13's `linux-source-6.12`), 6.18.2 and
//! 7.3.4 (`linux-source-7.3`): `arch/x86/kvm/svm/sev.c` (sev.c) and `virt/kvm/guest_memfd.c`
//! (guest_memfd.c). Each accessor cites where its answer comes from.

use std::fmt;

use gmem::{ConversionPath, GmemSeries};

use crate::Error;

/// A Linux release this crate follows for SEV-SNP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelVersion {
    /// Linux 6.12 LTS (Debian 13, RHEL 10), read in 6.12.118.
    V6_12,
    /// Linux 6.18 LTS, read in 6.18.2.
    V6_18,
    /// Linux 7.3, read in 7.3.4 (Debian trixie-backports). The newest known: the default.
    #[default]
    V7_3,
}

/// `SNP_POLICY_MASK_VALID` of 6.12 and 6.18 (sev.c): bits 0-17, 19, 20.
const SNP_POLICY_MASK_VALID_6: u64 = 0xffff | 1 << 16 | 1 << 17 | 1 << 19 | 1 << 20;
/// `KVM_SNP_POLICY_MASK_VALID` of 7.3 (sev.c): 6.18's bits and bits 21-25.
const KVM_SNP_POLICY_MASK_VALID_7_3: u64 = SNP_POLICY_MASK_VALID_6 | 0x1f << 21;

/// Every known version, oldest first.
pub const KNOWN_KERNELS: [KernelVersion; 3] = [
    KernelVersion::V6_12,
    KernelVersion::V6_18,
    KernelVersion::V7_3,
];

/// A kernel release number (`uname -r`'s leading `major.minor[.patch]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch level (0 when absent).
    pub patch: u32,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Release {
    /// Parses the leading `major.minor[.patch]` of a release string such as `6.12.118-amd64`
    /// or `7.3.4+deb13-amd64`; anything after the numbers is ignored.
    pub fn parse(release: &str) -> Result<Release, Error> {
        let bad = |reason: &str| Error::UnsupportedKernel {
            release: release.to_string(),
            reason: reason.to_string(),
        };
        let mut nums = [0u32; 3];
        let mut parts = 0;
        let mut rest = release;
        while parts < 3 {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            nums[parts] = rest[..end]
                .parse()
                .map_err(|_| bad("a release number does not fit in 32 bits"))?;
            parts += 1;
            rest = &rest[end..];
            match rest.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
                _ => break,
            }
        }
        if parts < 2 {
            return Err(bad("not a `major.minor` release"));
        }
        Ok(Release {
            major: nums[0],
            minor: nums[1],
            patch: nums[2],
        })
    }
}

/// What the choice of a version says about the release it was made for, once (a value to log,
/// not a log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelNote {
    /// The release is one of the known versions' series.
    Known,
    /// Newer than every known version: taken for the newest known, whose rules may have changed
    /// since.
    NewerThanKnown {
        /// The running release.
        release: Release,
        /// The version followed.
        assumed: KernelVersion,
    },
    /// Between two known versions: taken for the older one.
    BetweenKnown {
        /// The running release.
        release: Release,
        /// The version followed.
        assumed: KernelVersion,
    },
}

impl fmt::Display for KernelNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelNote::Known => write!(f, "a known kernel"),
            KernelNote::NewerThanKnown { release, assumed } => write!(
                f,
                "Linux {release} is newer than every kernel this crate was checked against; following {assumed}, the newest known"
            ),
            KernelNote::BetweenKnown { release, assumed } => write!(
                f,
                "Linux {release} was not checked; following {assumed}, the newest known before it"
            ),
        }
    }
}

/// The version chosen for a release, and what to say about the choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelChoice {
    /// The version whose rules are followed.
    pub version: KernelVersion,
    /// What to say about it (once).
    pub note: KernelNote,
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl KernelVersion {
    /// `"Linux 6.12"`, `"Linux 6.18"`, `"Linux 7.3"`.
    pub fn name(self) -> &'static str {
        match self {
            KernelVersion::V6_12 => "Linux 6.12",
            KernelVersion::V6_18 => "Linux 6.18",
            KernelVersion::V7_3 => "Linux 7.3",
        }
    }

    /// The release each version was read in.
    pub fn read_in(self) -> &'static str {
        match self {
            KernelVersion::V6_12 => "6.12.118",
            KernelVersion::V6_18 => "6.18.2",
            KernelVersion::V7_3 => "7.3.4",
        }
    }

    fn series(self) -> (u32, u32) {
        match self {
            KernelVersion::V6_12 => (6, 12),
            KernelVersion::V6_18 => (6, 18),
            KernelVersion::V7_3 => (7, 3),
        }
    }

    /// The version a release is taken for: its own series when known; the newest known
    /// before it otherwise ([`KernelNote::BetweenKnown`], [`KernelNote::NewerThanKnown`]).
    /// Older than 6.12 is [`Error::UnsupportedKernel`] (6.11 is the first with SNP host
    /// support, and no kernel before 6.12 was read).
    ///
    /// ```
    /// use sev_backend::{Error, KernelNote, KernelVersion};
    /// let c = KernelVersion::from_release("6.12.118-amd64")?;
    /// assert_eq!((c.version, c.note), (KernelVersion::V6_12, KernelNote::Known));
    /// let c = KernelVersion::from_release("7.9.1")?;
    /// assert_eq!(c.version, KernelVersion::V7_3);
    /// assert!(matches!(c.note, KernelNote::NewerThanKnown { .. }));
    /// assert!(matches!(KernelVersion::from_release("6.6.30"), Err(Error::UnsupportedKernel { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_release(release: &str) -> Result<KernelChoice, Error> {
        let r = Release::parse(release)?;
        let series = (r.major, r.minor);
        let mut chosen = None;
        for v in KNOWN_KERNELS {
            if v.series() <= series {
                chosen = Some(v);
            }
        }
        let Some(version) = chosen else {
            return Err(Error::UnsupportedKernel {
                release: release.to_string(),
                reason: format!(
                    "Linux {}.{} is older than 6.12, the oldest kernel this crate follows (SNP host support began in 6.11; the LTS users run is 6.12)",
                    r.major, r.minor
                ),
            });
        };
        let note = if version.series() == series {
            KernelNote::Known
        } else if version == KernelVersion::V7_3 {
            KernelNote::NewerThanKnown {
                release: r,
                assumed: version,
            }
        } else {
            KernelNote::BetweenKnown {
                release: r,
                assumed: version,
            }
        };
        Ok(KernelChoice { version, note })
    }

    /// The running kernel's choice ([`from_release`](Self::from_release) of `uname -r`).
    pub fn running() -> Result<KernelChoice, Error> {
        KernelVersion::from_release(&running_release()?)
    }

    /// `KVM_SEV_INIT2`: whether an SNP guest's `ghcb_version` may be 1. 6.12 takes any version
    /// up to `GHCB_VERSION_MAX` (sev.c: `__sev_guest_init`, 6.12.118); 6.18 and 7.3 refuse an
    /// SNP guest below 2 (`snp_active && data->ghcb_version < 2`).
    pub fn snp_ghcb_v1_allowed(self) -> bool {
        self == KernelVersion::V6_12
    }

    /// `KVM_SEV_INIT2`: the VMSA features this version can offer at most
    /// (`sev_supported_vmsa_features`, sev.c: `sev_hardware_setup`): 6.12 `DEBUG_SWAP` (bit
    /// 5); 6.18 and 7.3 also `SECURE_TSC` (bit 9). The host decides which it has.
    pub fn vmsa_features_known(self) -> u64 {
        match self {
            KernelVersion::V6_12 => 1 << 5,
            _ => 1 << 5 | 1 << 9,
        }
    }

    /// `KVM_SEV_SNP_LAUNCH_START`: the most policy bits a host of this version accepts (sev.c:
    /// `snp_launch_start`). 6.12 and 6.18: `SNP_POLICY_MASK_VALID` (ABI minor and major, SMT,
    /// bit 17, DEBUG, SINGLE_SOCKET), for every host. 7.3: `snp_supported_policy_bits`, the
    /// firmware's bits masked by `KVM_SNP_POLICY_MASK_VALID`, which adds CXL_ALLOW (21),
    /// MEM_AES_256_XTS (22), RAPL_DIS (23), CIPHERTEXT_HIDING_DRAM (24) and PAGE_SWAP_DISABLE
    /// (25) (`include/linux/psp-sev.h`, read in 7.1.5; 7.3.4's sev.c names the same bits): a
    /// host may accept fewer (`KVM_GET_DEVICE_ATTR(KVM_X86_GRP_SEV, KVM_X86_SNP_POLICY_BITS)`,
    /// `sev_dev_get_attr`), which only the kernel knows.
    pub fn policy_mask(self) -> u64 {
        match self {
            KernelVersion::V7_3 => KVM_SNP_POLICY_MASK_VALID_7_3,
            _ => SNP_POLICY_MASK_VALID_6,
        }
    }

    /// `KVM_SEV_SNP_LAUNCH_START`: 6.12 requires the SMT bit and refuses SINGLE_SOCKET
    /// (sev.c: `snp_launch_start`, 6.12.118); 6.18 and 7.3 do not.
    pub fn policy_needs_smt_no_single_socket(self) -> bool {
        self == KernelVersion::V6_12
    }

    /// `KVM_SEV_SNP_LAUNCH_UPDATE`: whether a content page's `uaddr` must be non-zero and
    /// page-aligned (`EINVAL` at the ioctl, before any page: sev.c: `snp_launch_update`, 7.3.4;
    /// guest_memfd.c: `kvm_gmem_populate` warns too). 6.12 and 6.18 copy from any address and
    /// fail `uaddr` 0 per page (`sev_gmem_post_populate`: `WARN_ON_ONCE`, `EIO`/0).
    pub fn aligned_source_required(self) -> bool {
        self == KernelVersion::V7_3
    }

    /// `KVM_SEV_SNP_LAUNCH_UPDATE` of a CPUID page pins its source writable
    /// (`get_user_pages_fast(.., FOLL_WRITE)` with `may_writeback_src`: guest_memfd.c:
    /// `kvm_gmem_populate`, sev.c: `snp_launch_update`, 7.3.4), so a read-only mapping fails
    /// (`EFAULT`, reported as `EIO`/0 before any page). 6.12 and 6.18 `copy_to_user` the
    /// firmware's table only after a rejection.
    pub fn cpuid_source_pinned_writable(self) -> bool {
        self == KernelVersion::V7_3
    }

    /// `KVM_SEV_SNP_LAUNCH_UPDATE` with `len` 0: 6.12 accepts it and succeeds without progress
    /// (only `!PAGE_ALIGNED(len)` is checked, and `kvm_gmem_populate` of 0 pages returns 0);
    /// 6.18 and 7.3 refuse it (`!params.len`, `EINVAL`).
    pub fn zero_len_update_refused(self) -> bool {
        self != KernelVersion::V6_12
    }

    /// A second `KVM_SEV_SNP_LAUNCH_FINISH` after the VMSAs were measured: 6.12 and 7.3 refuse
    /// it with `EINVAL` before anything reaches the firmware (sev.c: `sev_es_sync_vmsa`,
    /// `guest_state_protected`); 6.18.2 lacks that check and hands the VMSAs over again
    /// (what the firmware answers is not known here).
    pub fn second_finish_einval(self) -> bool {
        self != KernelVersion::V6_18
    }

    /// Binding a guest_memfd range already bound to another memslot: `EEXIST` in 6.12.118
    /// and 7.3.4 (guest_memfd.c: `kvm_gmem_commit_memory_region`), `EINVAL` in 6.18.2
    /// (`kvm_gmem_bind`).
    pub fn gmem_rebind_errno(self) -> i32 {
        match self {
            KernelVersion::V6_18 => libc::EINVAL,
            _ => libc::EEXIST,
        }
    }
}

/// A host kernel carrying Ackerley Tng's in-place conversion series ("guest_memfd: In-place
/// conversion support"), as the posted patches of one version define it, and whether its
/// module parameter `kvm.gmem_in_place_conversion` is on: what decides whether
/// `KVM_SEV_SNP_LAUNCH_UPDATE` populates content where it lies.
///
/// No released kernel carries the series (Linux 7.3.4 has none of it); this follows the patch
/// text of the versions [`GmemSeries`] names and has not run on a kernel or on SNP hardware.
///
/// What v8 (posted 2026-06-18, base kvm-x86/next `b7fbe9a1bf9e`) does, patch 22/46 ("KVM: SEV:
/// Make 'uaddr' parameter optional for KVM_SEV_SNP_LAUNCH_UPDATE", `arch/x86/kvm/svm/sev.c`):
/// - `snp_launch_update` of v8's base checks only that the source is page-aligned (`src =
///   type == ZERO ? NULL : uaddr; if (!PAGE_ALIGNED(src)) return -EINVAL;`), so `uaddr` 0
///   reaches `kvm_gmem_populate`, which pins no source (`src_page` NULL). The `!params.uaddr`
///   refusal of 7.3.4 came after v8 (2026-06-23, "KVM: SEV: Fix user-space triggerable WARN_ON
///   on snp_launch_update path"; Sean Christopherson's reply quotes the same base blob
///   `74fb15551e83` patch 22/46 applies to);
/// - `sev_gmem_post_populate`: a content page without a source is `-EINVAL` only when
///   `gmem_in_place_conversion` is off (the base's `WARN_ON_ONCE` is gone); with it on, the
///   page is not copied into and `SNP_LAUNCH_UPDATE` encrypts and measures what the page
///   holds: what was written through the guest_memfd's shared mapping before the conversion
///   (a conversion never touches contents). `snp_launch_update` turns an error before the
///   first page into `EIO` with the firmware status (0 here), as before;
/// - partial progress is written back as before, but `uaddr` is advanced only when given
///   (`if (src && params.type != KVM_SEV_SNP_PAGE_TYPE_ZERO)`): it stays 0;
/// - a CPUID page the firmware rejects is copied back only into a source page (`&& src_page`):
///   in place, the firmware's table is lost to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKernel {
    /// The posted version whose patches the kernel carries.
    pub series: GmemSeries,
    /// `kvm.gmem_in_place_conversion` (v8 patch 24/46: read-only, on unless the kernel was
    /// built with `CONFIG_KVM_VM_MEMORY_ATTRIBUTES`). gmem's per-guest_memfd conversion path
    /// ([`gmem::ConversionPath::GuestMemfdAttributes`]) is chosen only where it is on
    /// (`KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` answers PRIVATE, v8 patch 17/46).
    pub in_place_conversion: bool,
}

impl SeriesKernel {
    /// A kernel with series v8 and the module parameter as given.
    pub fn v8(in_place_conversion: bool) -> SeriesKernel {
        SeriesKernel {
            series: GmemSeries::V8,
            in_place_conversion,
        }
    }

    /// The series kernel whose per-guest_memfd conversion path gmem chose (`path` from
    /// [`gmem::GuestMemfd::conversion_path`]): that path exists only with the module parameter
    /// on. `None` for the VM-attributes path or none.
    pub fn from_conversion_path(path: Option<ConversionPath>) -> Option<SeriesKernel> {
        match path {
            Some(ConversionPath::GuestMemfdAttributes(series)) => Some(SeriesKernel {
                series,
                in_place_conversion: true,
            }),
            _ => None,
        }
    }

    /// Whether `KVM_SEV_SNP_LAUNCH_UPDATE` with `uaddr` 0 populates a content page where it
    /// lies (v8 patch 22/46, `sev_gmem_post_populate`): only with the module parameter on.
    ///
    /// ```
    /// use sev_backend::SeriesKernel;
    /// assert!(SeriesKernel::v8(true).populates_in_place());
    /// // Module parameter off: sev_gmem_post_populate answers -EINVAL, the ioctl EIO.
    /// assert!(!SeriesKernel::v8(false).populates_in_place());
    /// ```
    pub fn populates_in_place(self) -> bool {
        match self.series {
            GmemSeries::V8 => self.in_place_conversion,
            // A version this crate has not read (gmem refuses to build one by name).
            _ => false,
        }
    }
}

impl fmt::Display for SeriesKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let param = if self.in_place_conversion {
            "on"
        } else {
            "off"
        };
        write!(
            f,
            "in-place conversion series {} (kvm.gmem_in_place_conversion {param})",
            self.series
        )
    }
}

/// `uname -r` of the running kernel.
pub fn running_release() -> Result<String, Error> {
    // SAFETY: an all-zero `utsname` is a valid value (arrays of `c_char`).
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable `utsname`; uname only writes into it.
    let r = unsafe { libc::uname(&mut u) };
    if r != 0 {
        return Err(Error::Os {
            op: "uname".into(),
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_map_to_versions() {
        let v = |s: &str| KernelVersion::from_release(s).map(|c| (c.version, c.note));
        assert_eq!(
            v("6.12.118-amd64").ok(),
            Some((KernelVersion::V6_12, KernelNote::Known))
        );
        assert_eq!(
            v("6.18.2").ok(),
            Some((KernelVersion::V6_18, KernelNote::Known))
        );
        assert_eq!(
            v("7.3.4+deb13-amd64").ok(),
            Some((KernelVersion::V7_3, KernelNote::Known))
        );
        let r = |major, minor, patch| Release {
            major,
            minor,
            patch,
        };
        assert_eq!(
            v("6.15.0").ok(),
            Some((
                KernelVersion::V6_12,
                KernelNote::BetweenKnown {
                    release: r(6, 15, 0),
                    assumed: KernelVersion::V6_12
                }
            ))
        );
        assert_eq!(v("7.1.5").ok().map(|x| x.0), Some(KernelVersion::V6_18));
        assert_eq!(
            v("8.0").ok(),
            Some((
                KernelVersion::V7_3,
                KernelNote::NewerThanKnown {
                    release: r(8, 0, 0),
                    assumed: KernelVersion::V7_3
                }
            ))
        );
        for old in ["6.11.0", "6.6.30", "5.15.0", "4.19"] {
            let e = v(old).unwrap_err().to_string();
            assert!(e.contains(old) && e.contains("older than 6.12"), "{e}");
        }
        for bad in ["", "x", "6", "6.", "-6.12", "99999999999.1"] {
            assert!(
                matches!(v(bad), Err(Error::UnsupportedKernel { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_series_kernel_follows_gmems_conversion_path() {
        use gmem::{ConversionPath, GmemSeries};
        // Only the per-guest_memfd path (chosen with the module parameter on) is a series
        // kernel that populates in place.
        let on = SeriesKernel::from_conversion_path(Some(ConversionPath::GuestMemfdAttributes(
            GmemSeries::V8,
        )));
        assert_eq!(on, Some(SeriesKernel::v8(true)));
        assert!(on.is_some_and(SeriesKernel::populates_in_place));
        assert_eq!(
            SeriesKernel::from_conversion_path(Some(ConversionPath::VmAttributes)),
            None
        );
        assert_eq!(SeriesKernel::from_conversion_path(None), None);
        assert!(!SeriesKernel::v8(false).populates_in_place());
        assert_eq!(
            SeriesKernel::v8(false).to_string(),
            "in-place conversion series v8 (kvm.gmem_in_place_conversion off)"
        );
    }

    #[test]
    fn the_running_kernel_parses() {
        // Whatever this machine runs, its release parses (it may be refused as too old).
        let r = running_release().unwrap();
        assert!(Release::parse(&r).is_ok(), "{r}");
    }
}
