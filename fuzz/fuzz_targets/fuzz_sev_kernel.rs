//! The SEV-SNP backend against a kernel whose every `KVM_SEV_SNP_LAUNCH_UPDATE` answer comes
//! from the fuzzer: pages accepted, the `struct kvm_sev_snp_launch_update` it writes back
//! (advanced honestly, over-claimed, or any values), the errno (`EINTR`, `EAGAIN`, `EIO` with
//! firmware status 0 or not, ...), and the CPUID rejection that writes a corrected table back
//! into the source page; and the `set_private` errnos.
//!
//! The backend must read the written-back struct as untrusted: never panic, count exactly the
//! pages a consistent write-back shows (the fake kernel accepts exactly those), and stop with a
//! hard error on an impossible one. Driven by `cc_populate::Driver` over a plan of every SNP
//! role built from the input, resumed after every stop and finally against an honest kernel:
//! every page asked is private, of its region's page type, not accepted before, and (for
//! content types) handed over page-aligned with the region's bytes; each region's reported
//! bytes equal the pages the kernel accepted for it (a prefix), none twice; every CPUID
//! rejection is recorded once with its address, applied exactly when the next call retried the
//! page with the firmware's table; the plan completes.
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
const ERRNOS: [i32; 8] = [
    libc::EINTR,
    libc::EAGAIN,
    libc::EIO,
    libc::EINVAL,
    libc::EFAULT,
    libc::EEXIST,
    libc::ENOMEM,
    libc::EBUSY,
];
/// `KVM_SEV_SNP_PAGE_TYPE_*` by hand (SNP firmware ABI): normal 1, zero 3, unmeasured 4,
/// secrets 5, CPUID 6.
const TYPE_ZERO: u8 = 3;
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
    Zero,
    InvalidParam,
    Other(u32),
}

#[derive(Arbitrary, Debug, Clone)]
enum Outcome {
    Ok(WriteBack),
    /// Fails with an errno from [`ERRNOS`] and a firmware status, accepting nothing (the kernel
    /// copies nothing back on failure; a scribble here must be ignored).
    Fail {
        errno: u8,
        fw: FwStatus,
        scribble: Option<(u64, u64, u64)>,
    },
    /// The firmware rejects the CPUID page: the corrected table (count, entries) is written
    /// into the source page, `EIO` with `SEV_RET_INVALID_PARAM`.
    CpuidReject {
        count: u8,
        entries: Vec<(u32, u32, u32)>,
    },
}

#[derive(Arbitrary, Debug, Clone)]
struct Answer {
    /// Pages accepted (clamped to the request; 255: all).
    pages: u8,
    outcome: Outcome,
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
    /// `set_private` errnos, per call (`None`: success).
    private: Vec<Option<u8>>,
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
    private: VecDeque<Option<u8>>,
    private_pages: BTreeSet<u64>,
    accepted_pages: BTreeSet<u64>,
    /// Pages accepted: (gpa, bytes).
    accepted: Vec<(u64, u64)>,
    impossible: u64,
    rejections: Vec<Rejection>,
    /// The last call was a rejection (index into `rejections`).
    pending: Option<usize>,
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
        let a = self.answers.pop_front().unwrap_or(Answer {
            pages: u8::MAX,
            outcome: Outcome::Ok(WriteBack::Honest),
        });
        let nr0 = len0 / PAGE;
        let k = if a.pages == u8::MAX {
            nr0
        } else {
            (a.pages as u64).min(nr0)
        };
        match a.outcome {
            Outcome::Ok(wb) => {
                let step = |n: u64| if ty == TYPE_ZERO { 0 } else { n * PAGE };
                match wb {
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
                    Some(n) if consistent => {
                        if n > 0 {
                            self.accepted.push((gpa0, n * PAGE));
                            for i in 0..n {
                                self.accepted_pages.insert(gpa0 + i * PAGE);
                            }
                        }
                    }
                    _ => self.impossible += 1,
                }
                Ok(())
            }
            Outcome::Fail {
                errno,
                fw,
                scribble,
            } => {
                if let Some((g, u, l)) = scribble {
                    p.gfn_start = g;
                    p.uaddr = u;
                    p.len = l;
                }
                let e = SevIoctlError {
                    errno: ERRNOS[errno as usize % ERRNOS.len()],
                    fw_error: match fw {
                        FwStatus::Zero => 0,
                        FwStatus::InvalidParam => SEV_RET_INVALID_PARAM,
                        FwStatus::Other(c) => c,
                    },
                };
                if ty == TYPE_CPUID && e.errno == libc::EIO && e.fw_error == SEV_RET_INVALID_PARAM {
                    // On the wire a CPUID rejection whose corrected table equals ours.
                    let b = source.as_ref().map(|s| s.bytes()).unwrap_or(&[]);
                    self.rejections.push(Rejection {
                        gfn: gfn0,
                        page: b[src_off..src_off + PAGE as usize].to_vec(),
                        retried: false,
                        changed: false,
                    });
                    self.pending = Some(self.rejections.len() - 1);
                }
                Err(e)
            }
            Outcome::CpuidReject { count, entries } => {
                if ty == TYPE_CPUID {
                    let Some(UpdateSource::Bounce(b)) = source else {
                        unreachable!("checked above")
                    };
                    let page = &mut b[src_off..src_off + PAGE as usize];
                    let original = page.to_vec();
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
                    self.rejections.push(Rejection {
                        gfn: gfn0,
                        page: page.to_vec(),
                        retried: false,
                        changed: true,
                    });
                    self.pending = Some(self.rejections.len() - 1);
                }
                Err(SevIoctlError {
                    errno: libc::EIO,
                    fw_error: SEV_RET_INVALID_PARAM,
                })
            }
        }
    }
}

impl SevIoctl for Kernel {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        match cmd {
            SevCmd::LaunchUpdate { params, source } => self.update(params, source),
            _ => Ok(()),
        }
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        assert!(gpa.is_multiple_of(PAGE) && len.is_multiple_of(PAGE) && len > 0);
        match self.private.pop_front().flatten() {
            None => {
                for i in 0..len / PAGE {
                    self.private_pages.insert(gpa + i * PAGE);
                }
                Ok(())
            }
            Some(e) => Err(ERRNOS[e as usize % ERRNOS.len()]),
        }
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
        },
        |b| b.ioctl().impossible,
        // No answer of this fake kernel is one the backend must treat as unrecoverable.
        |_| false,
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
