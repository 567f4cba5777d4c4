//! The SEV-SNP backend against a fake Linux 6.18.2 kernel whose `KVM_SEV_SNP_LAUNCH_UPDATE`
//! stops where the fuzzer says, and only as that kernel can (sev-backend's Kernel conformance
//! table): the fuzzer picks the page and the cause (a memslot's end, a signal, an unreadable
//! source, a firmware status with the page reclaimed or not, the CPUID rejection that writes the
//! firmware's table back into the source page, a PSP time-out), and the kernel answers as
//! `snp_launch_update` -> `kvm_gmem_populate` -> `sev_gmem_post_populate` do: success with the
//! pages before the stop, or, at the first page, `EIO` with the firmware status or 0 (`EINVAL`
//! for a start page outside a guest_memfd memslot). A failed reclaim is a `KVM_BUG`: the VM is
//! dead and every later ioctl is `EIO` with status 0. `set_private` fails only with `ENOMEM`.
//! Sometimes it succeeds with a write-back no kernel makes (any values, over-claimed, one field
//! skewed), or scribbles over the struct on a failure (never copied back by the kernel).
//!
//! The backend must read the written-back struct as untrusted: never panic, count exactly the
//! pages a consistent write-back shows (the fake kernel accepts exactly those), and stop with a
//! hard error on an impossible one. Driven by `cc_populate::Driver` over a plan of every SNP
//! role built from the input, resumed after every stop and finally against a kernel that stops
//! nowhere: every page asked is private, of its region's page type, not accepted before, and (for
//! content types) handed over page-aligned with the region's bytes; each region's reported
//! bytes equal the pages the kernel accepted for it (a prefix), none twice; `EIO` with status 0
//! is sent again at most `max_eio_zero_retries` times in a row at one page within a run; every
//! CPUID rejection the backend can see (by its status at a call's first page, or by a changed
//! source page) is recorded once with its address, applied exactly when the next call retried
//! the page with the firmware's table; the plan completes unless the VM died.
#![no_main]

#[path = "common/kernel.rs"]
mod kernel;

use std::collections::{BTreeSet, VecDeque};

use arbitrary::Arbitrary;
use cc_populate::{MemoryLayout, PlanBuilder, Role, SourceBuf, HUGE_2M};
use libfuzzer_sys::fuzz_target;
use sev_backend::{
    snp_caps, CpuidPolicy, InitParams, LaunchConfig, SevCmd, SevIoctl, SevIoctlError, SnpBackend,
    StartParams, UpdateSource, SEV_RET_INVALID_PARAM,
};

const PAGE: u64 = 4096;
/// `KVM_SEV_SNP_PAGE_TYPE_*` by hand (SNP firmware ABI): normal 1, zero 3, unmeasured 4,
/// secrets 5, CPUID 6.
const TYPE_ZERO: u8 = 3;
/// `LaunchConfig::max_eio_zero_retries` as this target sets it.
const MAX_EIO_ZERO_RETRIES: u32 = 2;
const TYPE_CPUID: u8 = 6;

fn page_type(role: Role) -> u8 {
    match role {
        Role::Measured => 1,
        Role::Zero => 3,
        Role::Unmeasured => 4,
        Role::Secrets => 5,
        Role::Cpuid => 6,
        _ => 0,
    }
}

/// What the kernel writes back on success.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum WriteBack {
    /// Advanced by the pages accepted (what Linux does).
    Honest,
    /// Any values; pages count as accepted only if they happen to be consistent.
    Raw {
        gfn_start: u64,
        uaddr: u64,
        len: u64,
    },
    /// Advanced by `k` more pages than accepted.
    Overclaim(u8),
    /// Advanced honestly, then one field (`field % 3`: gfn_start, uaddr, len) moved by
    /// `delta` (pages when `pages`, else bytes or gfns).
    Skewed { field: u8, delta: i16, pages: bool },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FwStatus {
    InvalidParam,
    /// Any other non-zero status.
    Other(u32),
}

/// Why a `KVM_SEV_SNP_LAUNCH_UPDATE` stops at a page, as Linux 6.18.2 stops
/// (`arch/x86/kvm/svm/sev.c: snp_launch_update` -> `virt/kvm/guest_memfd.c:
/// kvm_gmem_populate` -> `sev.c: sev_gmem_post_populate`; sev-backend's Kernel conformance
/// table). At the call's first page the kernel answers `EIO` with `error` = the firmware
/// status (0 when there is none), or `EINVAL` for a start page outside a guest_memfd memslot;
/// after pages were done it drops the error and succeeds with those pages.
#[derive(Arbitrary, Debug, Clone)]
enum Stop {
    /// The memslot ends before this page (`kvm_gmem_populate` caps `npages`); at the first
    /// page, the start page is in no guest_memfd memslot (`snp_launch_update`:
    /// `kvm_slot_has_gmem`, `EINVAL`).
    Memslot,
    /// A pending signal (`kvm_gmem_populate`: `-EINTR`).
    Signal,
    /// The source cannot be read (`sev_gmem_post_populate`: `copy_from_user`, `-EFAULT`).
    SourceFault,
    /// The firmware fails the page with a status; `snp_page_reclaim` gives it back to the host,
    /// or fails, which is a `KVM_BUG`: the VM is dead. A CPUID page failed with
    /// `SEV_RET_INVALID_PARAM` is copied back into the source (the firmware's table, here
    /// equal to ours) when reclaimed.
    Firmware { status: FwStatus, reclaimed: bool },
    /// The firmware rejects the CPUID page with `SEV_RET_INVALID_PARAM` and writes its table
    /// (count, entries); copied back into the source page when reclaimed, else the VM is
    /// dead. On another page type, a `Firmware` failure with that status.
    CpuidReject {
        count: u8,
        entries: Vec<(u32, u32, u32)>,
        reclaimed: bool,
    },
    /// A PSP time-out (`drivers/crypto/ccp/sev-dev.c: __sev_do_cmd_locked`: `-ETIMEDOUT`, no
    /// status, the PSP marked dead): the reclaim fails, a `KVM_BUG`: the VM is dead.
    PspTimeout,
}

#[derive(Arbitrary, Debug, Clone)]
struct Answer {
    /// The page of the call (0: the first asked) where `stop` happens; past the end, or
    /// without `stop`, every page is accepted.
    at: u8,
    stop: Option<Stop>,
    /// On a failure, values written into the struct, which the kernel does not copy back on
    /// failure and the backend must ignore.
    scribble: Option<(u64, u64, u64)>,
    /// When below 16 (about one call in 16) the kernel succeeds with this write-back instead
    /// (`Honest`: the pages before `at`).
    lie_gate: u8,
    lie: WriteBack,
}

#[derive(Arbitrary, Debug)]
struct RegionIn {
    gap: u8,
    pages: u8,
    role: u8,
    /// A source of random bytes (else zeros), and whether it is not page-aligned.
    source: bool,
    misaligned: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    regions: Vec<RegionIn>,
    policy: u8,
    max_chunk: u8,
    data: Vec<u8>,
    rounds: Vec<Vec<Answer>>,
    /// Per `KVM_SET_MEMORY_ATTRIBUTES` call that has something to do: `ENOMEM` when true.
    private: Vec<bool>,
}

/// A region as the fake kernel knows it: GPA, length, page type, content (None: zeros).
struct Spec {
    gpa: u64,
    len: u64,
    ty: u8,
    content: Option<(usize, usize)>,
}

struct Rejection {
    gfn: u64,
    page: Vec<u8>,
    /// Whether the next call (in the same run) retried this page with `page`.
    retried: bool,
    /// Whether `page` differs from what the backend sent (else a retry is indistinguishable
    /// from a fresh call by the driver).
    changed: bool,
}

#[derive(Default)]
struct Kernel {
    specs: Vec<Spec>,
    bytes: Vec<u8>,
    answers: VecDeque<Answer>,
    private: VecDeque<bool>,
    private_pages: BTreeSet<u64>,
    accepted_pages: BTreeSet<u64>,
    /// Pages accepted: (gpa, bytes).
    accepted: Vec<(u64, u64)>,
    impossible: u64,
    rejections: Vec<Rejection>,
    /// The last call was a rejection (index into `rejections`).
    pending: Option<usize>,
    /// The VM was killed by `KVM_BUG` (`virt/kvm/kvm_main.c: kvm_vm_ioctl` answers every
    /// ioctl with `EIO` before looking at it, so `error` stays 0).
    dead: bool,
    /// `EIO` with status 0 answers in a row at one GFN in this run.
    eio_zero: (u64, u32),
}

impl Kernel {
    /// The page type and the content's range in `bytes` (None: zeros) at `gpa..+len`.
    fn expected(&self, gpa: u64, len: u64) -> (u8, Option<std::ops::Range<usize>>) {
        let s = self
            .specs
            .iter()
            .find(|s| gpa >= s.gpa && gpa + len <= s.gpa + s.len)
            .unwrap_or_else(|| panic!("LAUNCH_UPDATE [{gpa:#x}..+{len:#x}) is in no region"));
        let content = s.content.map(|(off, _)| {
            let o = off + (gpa - s.gpa) as usize;
            o..o + len as usize
        });
        (s.ty, content)
    }

    fn update(
        &mut self,
        p: &mut sev_backend::uapi::kvm_sev_snp_launch_update,
        source: Option<UpdateSource<'_>>,
    ) -> Result<(), SevIoctlError> {
        let (gfn0, uaddr0, len0, ty) = (p.gfn_start, p.uaddr, p.len, p.type_);
        assert!(len0 > 0 && len0.is_multiple_of(PAGE), "len {len0:#x}");
        let gpa0 = gfn0 * PAGE;
        let (want_ty, content) = self.expected(gpa0, len0);
        assert_eq!(ty, want_ty, "page type at {gpa0:#x}");
        for i in 0..len0 / PAGE {
            let g = gpa0 + i * PAGE;
            assert!(self.private_pages.contains(&g), "{g:#x} asked while shared");
            assert!(!self.accepted_pages.contains(&g), "{g:#x} asked twice");
        }
        let retry_of = self.pending.take();
        // The source: page-aligned, the region's bytes (or zeros), a bounce page for CPUID.
        let mut src_off = 0usize;
        if ty != TYPE_ZERO {
            let src = source.as_ref().expect("content page type without a source");
            assert!(
                ty != TYPE_CPUID || matches!(src, UpdateSource::Bounce(_)),
                "the CPUID page must go through a bounce page"
            );
            let b = src.bytes();
            assert_eq!(uaddr0 % PAGE, 0, "uaddr {uaddr0:#x} not page-aligned");
            let base = b.as_ptr() as u64;
            assert!(uaddr0 >= base, "uaddr before the source");
            src_off = (uaddr0 - base) as usize;
            assert!(
                src_off + len0 as usize <= b.len(),
                "source shorter than len"
            );
            let got = &b[src_off..src_off + len0 as usize];
            let retried = retry_of
                .map(|i| &self.rejections[i])
                .is_some_and(|r| r.gfn == gfn0 && got[..PAGE as usize] == r.page[..]);
            if let Some(i) = retry_of {
                self.rejections[i].retried = retried;
            }
            if !retried {
                match content {
                    Some(c) => assert!(
                        got == &self.bytes[c],
                        "source bytes at {gpa0:#x} are not the region's"
                    ),
                    None => assert!(got.iter().all(|&x| x == 0), "zeros expected at {gpa0:#x}"),
                }
            }
        }
        if self.dead {
            return self.eio(gfn0, 0);
        }
        let a = self.answers.pop_front().unwrap_or(Answer {
            at: 0,
            stop: None,
            scribble: None,
            lie_gate: u8::MAX,
            lie: WriteBack::Honest,
        });
        let nr0 = len0 / PAGE;
        // The pages before the stop (all without one).
        let k = match a.stop {
            Some(_) => u64::from(a.at).min(nr0),
            None => nr0,
        };
        let step = |n: u64| if ty == TYPE_ZERO { 0 } else { n * PAGE };
        if a.lie_gate < 16 {
            match a.lie {
                WriteBack::Honest => {
                    p.gfn_start = gfn0 + k;
                    p.uaddr = uaddr0 + step(k);
                    p.len = len0 - k * PAGE;
                }
                WriteBack::Raw {
                    gfn_start,
                    uaddr,
                    len,
                } => {
                    p.gfn_start = gfn_start;
                    p.uaddr = uaddr;
                    p.len = len;
                }
                WriteBack::Overclaim(extra) => {
                    let c = k + extra as u64 + 1;
                    p.gfn_start = gfn0.wrapping_add(c);
                    p.uaddr = uaddr0.wrapping_add(step(c));
                    p.len = len0.wrapping_sub(c * PAGE);
                }
                WriteBack::Skewed {
                    field,
                    delta,
                    pages,
                } => {
                    p.gfn_start = gfn0 + k;
                    p.uaddr = uaddr0 + step(k);
                    p.len = len0 - k * PAGE;
                    let d = delta as i64 as u64;
                    let d = if pages { d.wrapping_mul(PAGE) } else { d };
                    match field % 3 {
                        0 => p.gfn_start = p.gfn_start.wrapping_add(delta as i64 as u64),
                        1 => p.uaddr = p.uaddr.wrapping_add(d),
                        _ => p.len = p.len.wrapping_add(d),
                    }
                }
            }
            // Judged independently: n pages, gfn and (for content types) uaddr in step.
            // For ZERO pages the kernel does not use or advance uaddr, so it is not judged.
            let n = len0
                .checked_sub(p.len)
                .filter(|d| d.is_multiple_of(PAGE))
                .map(|d| d / PAGE);
            let consistent = n.is_some_and(|n| {
                p.gfn_start == gfn0.wrapping_add(n)
                    && (ty == TYPE_ZERO || p.uaddr == uaddr0.wrapping_add(n * PAGE))
            });
            match n {
                Some(n) if consistent => self.accept(gpa0, n),
                _ => self.impossible += 1,
            }
            return Ok(());
        }
        // kvm_gmem_populate: the pages before the stop are accepted.
        let stop = a.stop.filter(|_| k < nr0);
        let status = match &stop {
            None | Some(Stop::Memslot | Stop::Signal | Stop::SourceFault) => 0,
            Some(Stop::PspTimeout) => {
                self.dead = true;
                0
            }
            Some(Stop::Firmware { status, reclaimed }) => {
                self.dead |= !reclaimed;
                match status {
                    FwStatus::InvalidParam => SEV_RET_INVALID_PARAM,
                    FwStatus::Other(c) => (*c).max(1),
                }
            }
            Some(Stop::CpuidReject { reclaimed, .. }) => {
                self.dead |= !reclaimed;
                SEV_RET_INVALID_PARAM
            }
        };
        // sev_gmem_post_populate: a CPUID page the firmware refused with INVALID_PARAM is
        // copied back into the source page when the reclaim succeeded.
        let copied_back = ty == TYPE_CPUID && status == SEV_RET_INVALID_PARAM && !self.dead;
        if copied_back {
            let Some(UpdateSource::Bounce(b)) = source else {
                unreachable!("checked above")
            };
            let at = src_off + (k * PAGE) as usize;
            let page = &mut b[at..at + PAGE as usize];
            let original = page.to_vec();
            if let Some(Stop::CpuidReject { count, entries, .. }) = &stop {
                // struct snp_cpuid_table: count u32, reserved u32, reserved u64, then
                // 48-byte entries (eax_in, ecx_in, xcr0, xss, eax, ebx, ecx, edx, rsvd).
                page[0..4].copy_from_slice(&u32::from(count % 70).to_le_bytes());
                for (i, (leaf, sub, eax)) in entries.iter().take(64).enumerate() {
                    let e = 16 + i * 48;
                    page[e..e + 4].copy_from_slice(&leaf.to_le_bytes());
                    page[e + 4..e + 8].copy_from_slice(&sub.to_le_bytes());
                    page[e + 24..e + 28].copy_from_slice(&eax.to_le_bytes());
                }
                if page[..] == original[..] {
                    page[PAGE as usize - 1] ^= 0xff;
                }
            }
            let changed = page[..] != original[..];
            // The backend sees a rejection by its status at the first page, else only by a
            // changed source page.
            if k == 0 || changed {
                self.rejections.push(Rejection {
                    gfn: gfn0 + k,
                    page: page.to_vec(),
                    retried: false,
                    changed,
                });
                self.pending = Some(self.rejections.len() - 1);
            }
        } else if k == 0 && ty == TYPE_CPUID && status == SEV_RET_INVALID_PARAM {
            // Not reclaimed: nothing copied back, but the status is seen.
            let Some(src) = source.as_ref() else {
                unreachable!("checked above")
            };
            self.rejections.push(Rejection {
                gfn: gfn0,
                page: src.bytes()[src_off..src_off + PAGE as usize].to_vec(),
                retried: false,
                changed: false,
            });
            self.pending = Some(self.rejections.len() - 1);
        }
        self.accept(gpa0, k);
        if stop.is_none() || k > 0 {
            // kvm_gmem_populate returns the pages done; snp_launch_update advances the struct.
            p.gfn_start = gfn0 + k;
            p.uaddr = uaddr0 + step(k);
            p.len = len0 - k * PAGE;
            return Ok(());
        }
        // No page done: snp_launch_update answers -EIO with the status (EINVAL for a start page
        // outside a guest_memfd memslot) and copies nothing back.
        if let Some((g, u, l)) = a.scribble {
            p.gfn_start = g;
            p.uaddr = u;
            p.len = l;
        }
        if let Some(Stop::Memslot) = stop {
            return Err(SevIoctlError {
                errno: libc::EINVAL,
                fw_error: 0,
            });
        }
        self.eio(gfn0, status)
    }

    /// Pages `gpa..+n` accepted.
    fn accept(&mut self, gpa: u64, n: u64) {
        if n > 0 {
            self.accepted.push((gpa, n * PAGE));
            for i in 0..n {
                self.accepted_pages.insert(gpa + i * PAGE);
            }
            self.eio_zero = (u64::MAX, 0);
        }
    }

    /// `EIO` with `status`; with status 0, at most 1 + `MAX_EIO_ZERO_RETRIES` in a row at one
    /// GFN in a run.
    fn eio(&mut self, gfn: u64, status: u32) -> Result<(), SevIoctlError> {
        if status == 0 {
            let n = if self.eio_zero.0 == gfn {
                self.eio_zero.1 + 1
            } else {
                1
            };
            assert!(
                n <= 1 + MAX_EIO_ZERO_RETRIES,
                "EIO with status 0 sent {n} times in a row at {:#x}",
                gfn * PAGE
            );
            self.eio_zero = (gfn, n);
        }
        Err(SevIoctlError {
            errno: libc::EIO,
            fw_error: status,
        })
    }
}

impl SevIoctl for Kernel {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        match cmd {
            SevCmd::LaunchUpdate { params, source } => self.update(params, source),
            _ => Ok(()),
        }
    }

    /// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` (`virt/kvm/kvm_main.c`:
    /// `kvm_vm_ioctl_set_mem_attributes`, `kvm_vm_set_mem_attributes`): `EIO` on a dead VM
    /// (`kvm_vm_ioctl`); nothing to do when the range is already private; else `ENOMEM` from
    /// `xa_reserve` before any page changes. Its `EINVAL`s the driver must never cause.
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        if self.dead {
            return Err(libc::EIO);
        }
        let errs = &mut self.private;
        kernel::set_private(&mut self.private_pages, gpa, len, || {
            errs.pop_front() == Some(true)
        })
    }
}

fuzz_target!(|input: Input| {
    let policy = match input.policy % 3 {
        0 => CpuidPolicy::Fail,
        1 => CpuidPolicy::UseFirmwareValues,
        _ => CpuidPolicy::ReportOnly,
    };
    let max_chunk = match input.max_chunk % 4 {
        0 => PAGE,
        1 => 2 * PAGE,
        2 => 8 * PAGE,
        _ => HUGE_2M,
    };
    // Region layout, then the sources in one page-aligned buffer (a misaligned source starts
    // 8 bytes into its slot).
    let mut layout = Vec::new();
    let mut cursor = 0x10_0000u64;
    let mut slot = 0usize;
    for r in input.regions.iter().take(6) {
        let role = [
            Role::Measured,
            Role::Unmeasured,
            Role::Zero,
            Role::Secrets,
            Role::Cpuid,
        ][r.role as usize % 5];
        let pages = if role == Role::Cpuid {
            r.pages % 2 + 1
        } else {
            r.pages % 16 + 1
        };
        let len = pages as u64 * PAGE;
        let gpa = cursor + (r.gap % 8) as u64 * PAGE;
        cursor = gpa + len;
        let content = (r.source && matches!(role, Role::Measured | Role::Unmeasured | Role::Cpuid))
            .then(|| {
                let off = slot + if r.misaligned { 8 } else { 0 };
                slot += len as usize + PAGE as usize;
                (off, len as usize)
            });
        layout.push((gpa, len, role, content));
    }
    let mut buf = SourceBuf::new(slot.max(PAGE as usize)).expect("source buffer");
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = if input.data.is_empty() {
            (i / 4096) as u8 ^ 0x5a
        } else {
            input.data[i % input.data.len()]
        };
    }
    let bytes = buf.as_slice().to_vec();
    let mut builder = PlanBuilder::new();
    for &(gpa, len, role, content) in &layout {
        builder = match content {
            Some((off, n)) => builder.source(gpa, role, &buf.as_slice()[off..off + n]),
            None => builder.zeros(gpa, len, role),
        };
    }
    let plan = builder
        .build(&snp_caps(false, max_chunk), &MemoryLayout::unbounded())
        .expect("valid by construction");
    let kernel = Kernel {
        specs: layout
            .iter()
            .map(|&(gpa, len, role, content)| Spec {
                gpa,
                len,
                ty: page_type(role),
                content,
            })
            .collect(),
        bytes,
        private: input.private.iter().take(16).copied().collect(),
        ..Kernel::default()
    };
    let config = LaunchConfig {
        cpuid: policy,
        max_chunk,
        max_eio_zero_retries: MAX_EIO_ZERO_RETRIES,
        ..LaunchConfig::default()
    };
    let mut backend = SnpBackend::with_ioctl(kernel, config);
    backend.init(&InitParams::default()).expect("init");
    backend.start(&StartParams::default()).expect("start");

    let rounds: Vec<&Vec<Answer>> = input.rounds.iter().take(6).collect();
    kernel::drive(
        &plan,
        &mut backend,
        &rounds,
        |b, round| {
            let k = b.ioctl_mut();
            match round {
                Some(r) => k.answers.extend(r.iter().take(32).cloned()),
                None => {
                    k.answers.clear();
                    k.private.clear();
                }
            }
            // A retry of a rejected page happens within the run that saw the rejection.
            k.pending = None;
            k.eio_zero = (u64::MAX, 0);
        },
        |b| b.ioctl().impossible,
        // Linux 6.18 can resend a page whose populate failed (it is reclaimed, not prepared):
        // nothing is unrecoverable for the backend to know of.
        |_| false,
        // A failed reclaim (KVM_BUG) kills the VM; the backend only sees EIO with status 0.
        |b| b.ioctl().dead,
        |b, r| {
            // Per region, the report equals what the kernel really accepted (as a prefix).
            let k = b.ioctl();
            for (i, (rr, &(gpa, len, role, _))) in r.regions.iter().zip(&layout).enumerate() {
                let what = format!("region {i} [{gpa:#x}..+{len:#x}) {role}");
                let done = kernel::prefix(&k.accepted, gpa, len, &what);
                assert_eq!(
                    done, rr.populated,
                    "{what}: kernel accepted {done:#x}, report says {:#x}",
                    rr.populated
                );
            }
            kernel::assert_disjoint(&k.accepted, "accepted");
        },
    );
    // Every CPUID rejection recorded once, at its address; applied exactly when retried with
    // the firmware's table; the whole page kept for ReportOnly.
    let k = backend.ioctl();
    let corrections = backend.cpuid_corrections();
    assert_eq!(
        corrections.len(),
        k.rejections.len(),
        "CPUID rejections recorded"
    );
    for (c, rej) in corrections.iter().zip(&k.rejections) {
        assert_eq!(c.gpa, rej.gfn * PAGE);
        assert!(
            c.applied == rej.retried || (!rej.changed && !c.applied && rej.retried),
            "correction at {:#x}: applied {} but retried {}",
            c.gpa,
            c.applied,
            rej.retried
        );
        assert!(!c.applied || policy == CpuidPolicy::UseFirmwareValues);
        match policy {
            CpuidPolicy::ReportOnly => {
                assert_eq!(c.firmware_page.as_deref(), Some(&rej.page[..]))
            }
            _ => assert!(c.firmware_page.is_none()),
        }
    }
});
