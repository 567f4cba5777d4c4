//! An in-process model of the kernel's documented SEV-SNP launch behaviour, for tests of code
//! built on [`SnpBackend`](crate::SnpBackend) without SNP hardware.
//!
//! [`KernelModel`] implements [`SevIoctl`] as `arch/x86/kvm/svm/sev.c` and
//! `virt/kvm/guest_memfd.c` behave (Linux 6.11-6.18):
//! - `KVM_SEV_SNP_LAUNCH_UPDATE` refuses a source (`uaddr`) that is not page-aligned (`-EINVAL`,
//!   as newer kernels do), then populates page by page; a page must be private (else the
//!   populate stops with `-EINVAL`) and not populated before (`-EEXIST`). When the populate
//!   stops after some pages, the call succeeds and `gfn_start`, `len` and (for non-`ZERO` types)
//!   `uaddr` are advanced past the pages done; when it stops before the first page the call
//!   fails with `-EIO` and `error` = the firmware status, which is 0 when the firmware was not
//!   reached (a pending signal, `-EEXIST`, `-EINVAL`): the kernel's trap.
//! - A CPUID page the firmware rejects: the corrected table is written back into the source
//!   page, and the call fails with `SEV_RET_INVALID_PARAM` (if it was the first page).
//! - `-EAGAIN` and other errnos leave everything unchanged.
//!
//! The model keeps its own ledger (pages in populate order with their type), records every
//! command's parameter bytes, and computes the launch digest the firmware would, with its own
//! `PAGE_INFO` code and a second SHA-384 implementation (`ring`; the crate measures with `sha2`), so tests can compare it with
//! the crate's offline [`measure`](crate::measure).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::SEV_RET_INVALID_PARAM;
use crate::ioctl::{SevCmd, SevIoctl, SevIoctlError, UpdateSource};

const PAGE: u64 = 4096;

/// What the model does on one `LAUNCH_UPDATE` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Populate every page asked.
    All,
    /// Populate this many pages, then return success with the fields advanced.
    Partial(u64),
    /// A signal arrives after this many pages.
    Signal(u64),
    /// `-EAGAIN` at once.
    Again,
    /// The firmware fails the page after this many pages with this status.
    Firmware {
        /// Pages done first.
        after: u64,
        /// The firmware status.
        code: u32,
    },
    /// Fail at once with this errno (no firmware status).
    Errno(i32),
}

/// One command as the model received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Command id.
    pub id: u32,
    /// The parameter struct's bytes on entry.
    pub params: Vec<u8>,
}

/// Decides whether the firmware accepts a CPUID page: returns `Some(corrected page)` to reject.
pub type CpuidCheck = Box<dyn Fn(&[u8]) -> Option<Vec<u8>>>;

/// The model. See the module docs.
pub struct KernelModel {
    /// Answers for the next `LAUNCH_UPDATE` calls (empty: [`Step::All`]).
    pub script: VecDeque<Step>,
    /// Whether the model accepts `uaddr = 0` for content pages as in-place population (reading
    /// the content from [`memory`](Self::memory)).
    pub in_place: bool,
    /// Guest memory as written through the shared view (for in-place population), by page.
    pub memory: BTreeMap<u64, Vec<u8>>,
    /// The firmware's CPUID check (`None`: every table accepted).
    pub cpuid_check: Option<CpuidCheck>,
    /// VMSA pages KVM measures at `LAUNCH_FINISH` (at `SNP_VMSA_GPA`).
    pub vmsas: Vec<Vec<u8>>,
    /// Every command received.
    pub calls: Vec<Call>,
    /// Private pages (by page address).
    pub private: BTreeSet<u64>,
    /// Populated pages in populate order: (address, page type, content as the firmware saw it).
    pub ledger: Vec<(u64, u8, Vec<u8>)>,
    /// Addresses of pages a call tried to populate a second time (must stay empty).
    pub twice: Vec<u64>,
    /// Addresses of pages a call tried to populate while shared (must stay empty).
    pub not_private: Vec<u64>,
    /// CPUID corrections written into a buffer the backend marked read-only (must stay empty).
    pub wrote_shared: Vec<u64>,
    populated: BTreeSet<u64>,
    digest: [u8; 48],
    state: u32,
}

impl Default for KernelModel {
    fn default() -> Self {
        KernelModel::new()
    }
}

impl std::fmt::Debug for KernelModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelModel")
            .field("calls", &self.calls.len())
            .field("populated", &self.populated.len())
            .field("twice", &self.twice)
            .finish()
    }
}

fn ring_sha384(data: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, data).as_ref());
    out
}

/// The firmware's record for one page, written out here independently of
/// [`crate::page_info`]: DIGEST_CUR, CONTENTS, LENGTH = 0x70, PAGE_TYPE, zeros, GPA.
fn fw_extend(cur: &[u8; 48], page_type: u8, gpa: u64, content: Option<&[u8]>) -> [u8; 48] {
    let contents: [u8; 48] = match content {
        Some(c) if page_type == 1 || page_type == 2 => ring_sha384(c),
        _ => [0; 48],
    };
    let mut h = ring::digest::Context::new(&ring::digest::SHA384);
    h.update(cur);
    h.update(&contents);
    h.update(&[0x70, 0x00, page_type, 0, 0, 0, 0, 0]);
    h.update(&gpa.to_le_bytes());
    let mut out = [0u8; 48];
    out.copy_from_slice(h.finish().as_ref());
    out
}

impl KernelModel {
    /// A fresh VM: nothing private, nothing populated.
    pub fn new() -> Self {
        KernelModel {
            script: VecDeque::new(),
            in_place: false,
            memory: BTreeMap::new(),
            cpuid_check: None,
            vmsas: Vec::new(),
            calls: Vec::new(),
            private: BTreeSet::new(),
            ledger: Vec::new(),
            twice: Vec::new(),
            not_private: Vec::new(),
            wrote_shared: Vec::new(),
            populated: BTreeSet::new(),
            digest: [0; 48],
            state: 0,
        }
    }

    /// The launch digest the firmware computed from what it was given.
    pub fn launch_digest(&self) -> [u8; 48] {
        self.digest
    }

    /// Whether the page at `gpa` was populated.
    pub fn is_populated(&self, gpa: u64) -> bool {
        self.populated.contains(&(gpa & !(PAGE - 1)))
    }

    /// Bytes populated inside `gpa..gpa+len`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        self.populated.range(gpa..gpa.saturating_add(len)).count() as u64 * PAGE
    }

    fn launch_update(
        &mut self,
        p: &mut crate::uapi::kvm_sev_snp_launch_update,
        mut source: Option<UpdateSource<'_>>,
    ) -> Result<(), SevIoctlError> {
        let einval = Err(SevIoctlError {
            errno: libc::EINVAL,
            fw_error: 0,
        });
        if self.state != 2 || p.len % PAGE != 0 || p.flags != 0 || !matches!(p.type_, 1 | 3..=6) {
            return einval;
        }
        // Newer kernels refuse a source that is not page-aligned.
        if p.type_ != 3 && p.uaddr % PAGE != 0 {
            return einval;
        }
        let step = self.script.pop_front().unwrap_or(Step::All);
        match step {
            Step::Again => {
                return Err(SevIoctlError {
                    errno: libc::EAGAIN,
                    fw_error: 0,
                })
            }
            Step::Errno(errno) => return Err(SevIoctlError { errno, fw_error: 0 }),
            _ => {}
        }
        let base = source.as_ref().map_or(0, |s| s.bytes().as_ptr() as u64);
        let npages = p.len / PAGE;
        // (errno-like stop reason, firmware status)
        let mut stop: Option<u32> = None;
        let mut done = 0;
        while done < npages {
            match step {
                Step::Partial(n) if done == n => break,
                Step::Signal(n) if done == n => {
                    stop = Some(0);
                    break;
                }
                Step::Firmware { after, code } if done == after => {
                    stop = Some(code);
                    break;
                }
                _ => {}
            }
            let gpa = p.gfn_start.wrapping_add(done).wrapping_mul(PAGE);
            if !self.private.contains(&gpa) {
                self.not_private.push(gpa);
                stop = Some(0);
                break;
            }
            if self.populated.contains(&gpa) {
                self.twice.push(gpa);
                stop = Some(0);
                break;
            }
            let content: Option<Vec<u8>> = if p.type_ == 3 {
                None
            } else if p.uaddr == 0 {
                if !self.in_place {
                    stop = Some(0);
                    break;
                }
                Some(
                    self.memory
                        .get(&gpa)
                        .cloned()
                        .unwrap_or_else(|| vec![0; PAGE as usize]),
                )
            } else {
                let Some(src) = source.as_mut() else {
                    return Err(SevIoctlError {
                        errno: libc::EFAULT,
                        fw_error: 0,
                    });
                };
                let off = p.uaddr.wrapping_sub(base) + done * PAGE;
                let Some(bytes) = src
                    .bytes()
                    .get(off as usize..(off + PAGE) as usize)
                    .map(<[u8]>::to_vec)
                else {
                    return Err(SevIoctlError {
                        errno: libc::EFAULT,
                        fw_error: 0,
                    });
                };
                if p.type_ == 6 {
                    if let Some(fixed) = self.cpuid_check.as_ref().and_then(|c| c(&bytes)) {
                        match src {
                            UpdateSource::Bounce(b) => {
                                if let Some(dst) = b.get_mut(off as usize..(off + PAGE) as usize) {
                                    let n = fixed.len().min(dst.len());
                                    dst[..n].copy_from_slice(&fixed[..n]);
                                }
                            }
                            UpdateSource::Shared(_) => self.wrote_shared.push(gpa),
                        }
                        stop = Some(SEV_RET_INVALID_PARAM);
                        break;
                    }
                }
                Some(bytes)
            };
            self.digest = fw_extend(&self.digest, p.type_, gpa, content.as_deref());
            self.populated.insert(gpa);
            self.ledger
                .push((gpa, p.type_, content.unwrap_or_default()));
            done += 1;
        }
        match stop {
            Some(fw_error) if done == 0 => Err(SevIoctlError {
                errno: libc::EIO,
                fw_error,
            }),
            _ => {
                p.gfn_start += done;
                p.len -= done * PAGE;
                if p.type_ != 3 {
                    p.uaddr += done * PAGE;
                }
                Ok(())
            }
        }
    }
}

impl SevIoctl for KernelModel {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        self.calls.push(Call {
            id: cmd.id(),
            params: cmd.params_bytes(),
        });
        let bad = Err(SevIoctlError {
            errno: libc::EINVAL,
            fw_error: 0,
        });
        match cmd {
            SevCmd::Init2(_) if self.state == 0 => self.state = 1,
            SevCmd::LaunchStart(_) if self.state == 1 => self.state = 2,
            SevCmd::LaunchUpdate { params, source } => return self.launch_update(params, source),
            SevCmd::LaunchFinish(_) if self.state == 2 => {
                for v in std::mem::take(&mut self.vmsas) {
                    self.digest = fw_extend(&self.digest, 2, crate::uapi::SNP_VMSA_GPA, Some(&v));
                }
                self.state = 3;
            }
            _ => return bad,
        }
        Ok(())
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        if gpa % PAGE != 0 || len % PAGE != 0 {
            return Err(libc::EINVAL);
        }
        let mut a = gpa;
        while a < gpa.saturating_add(len) {
            self.private.insert(a);
            a += PAGE;
        }
        Ok(())
    }
}
