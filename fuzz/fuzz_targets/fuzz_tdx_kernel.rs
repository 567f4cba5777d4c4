//! The TDX backend against a fake Linux 6.18.2 kernel whose `KVM_TDX_INIT_MEM_REGION` fails
//! where the fuzzer says, and only as that kernel can.
//!
//! The fake kernel follows `arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init_mem_region` ->
//! `virt/kvm/guest_memfd.c: kvm_gmem_populate` -> `tdx.c: tdx_gmem_post_populate` page by page
//! (crates/tdx-backend/README.md, "Kernel conformance"): per call the fuzzer picks one page and
//! the step that fails there, and the kernel answers the errno that step returns, with the
//! state it leaves (a folio prepared, a page pre-mapped but not added, a page added with a
//! partial measurement). A page already prepared gets `EEXIST` from the kernel's own state, so
//! a failed add really cannot be retried. Sometimes it writes back a `struct
//! kvm_tdx_init_mem_region` no kernel writes (any values, an advance past the request, one
//! field skewed) and does nothing else.
//!
//! Driven by `cc_populate::Driver`, resumed after every stop, finally against a kernel that
//! fails nowhere: never panics; every call asks whole, private pages inside one region, with
//! the role's measure flag, `hw_error` 0 and a page-aligned source holding the region's bytes
//! at that offset; no page this backend was told it added is asked again; each region's
//! reported bytes are the pages the kernel added for it (a prefix) and `TdxBackend::added` is
//! the kernel's list of them; an impossible write-back stops the run hard and counts nothing.
//! `EBUSY`, `EIO` and `EEXIST` stop the run as unrecoverable, naming the page and what is known
//! of it, and after them no ioctl is made: a resume, a direct populate and finalize are all
//! refused. Without such an answer the plan completes and the TD finalizes.
//!
//! The fake kernel shares no numbers or layouts with tdx-backend: the command ids and the
//! measure flag are written out here from Linux 6.18.2's uAPI, and it reads `struct
//! kvm_tdx_cmd` and `struct kvm_tdx_init_mem_region` as the bytes `copy_from_user` sees, at
//! the offsets of the header (and writes the region back the same way), never through the
//! crate's field names.
#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use cc_populate::{Backend, ChunkRequest, ChunkSource, MemoryLayout, PlanBuilder, Role, StopCause};
use cc_populate_fuzz::{copy_to_user, field, user_bytes};
use libfuzzer_sys::fuzz_target;
use tdx_backend::uapi::{kvm_tdx_cmd, kvm_tdx_init_mem_region};
use tdx_backend::{PageState, TdxBackend, TdxIoctl, TDX_CAPS};

#[path = "common/kernel.rs"]
mod kernel;

const PAGE: u64 = 4096;

// Linux 6.18.2, arch/x86/include/uapi/asm/kvm.h, written out here rather than taken from
// tdx_backend::uapi: `enum kvm_tdx_cmd_id { KVM_TDX_CAPABILITIES = 0, KVM_TDX_INIT_VM,
// KVM_TDX_INIT_VCPU, KVM_TDX_INIT_MEM_REGION, KVM_TDX_FINALIZE_VM, KVM_TDX_GET_CPUID,
// KVM_TDX_CMD_NR_MAX }` and `#define KVM_TDX_MEASURE_MEMORY_REGION _BITULL(0)`.
/// `KVM_TDX_INIT_MEM_REGION`, the fourth command id.
const CMD_INIT_MEM_REGION: u32 = 3;
/// `KVM_TDX_FINALIZE_VM`, the fifth.
const CMD_FINALIZE_VM: u32 = 4;
/// `KVM_TDX_MEASURE_MEMORY_REGION`.
const FLAG_MEASURE: u32 = 1;

// The same header's layouts: `struct kvm_tdx_cmd { __u32 id; __u32 flags; __u64 data; __u64
// hw_error; }` (24 bytes) and `struct kvm_tdx_init_mem_region { __u64 source_addr; __u64 gpa;
// __u64 nr_pages; }` (24 bytes), little-endian on x86.
/// Size of `struct kvm_tdx_cmd`.
const CMD_SIZE: usize = 24;
/// Offsets of `id`, `flags`, `hw_error` in it.
const CMD_ID: usize = 0;
const CMD_FLAGS: usize = 4;
const CMD_HW_ERROR: usize = 16;
/// Size of `struct kvm_tdx_init_mem_region`.
const REGION_SIZE: usize = 24;
/// Offsets of `source_addr`, `gpa`, `nr_pages` in it.
const REGION_SOURCE: usize = 0;
const REGION_GPA: usize = 8;
const REGION_NR_PAGES: usize = 16;

/// What the kernel writes back into `struct kvm_tdx_init_mem_region`.
fn region_bytes(source_addr: u64, gpa: u64, nr_pages: u64) -> [u8; REGION_SIZE] {
    let mut b = [0u8; REGION_SIZE];
    b[REGION_SOURCE..REGION_SOURCE + 8].copy_from_slice(&source_addr.to_le_bytes());
    b[REGION_GPA..REGION_GPA + 8].copy_from_slice(&gpa.to_le_bytes());
    b[REGION_NR_PAGES..REGION_NR_PAGES + 8].copy_from_slice(&nr_pages.to_le_bytes());
    b
}
/// Longest region, in pages: more than the backend's 2 MiB bounce buffer (512 pages).
const MAX_PAGES: u64 = 700;
/// Bytes of the source pattern: the longest region at the largest offset, plus alignment.
const PATTERN_LEN: usize = ((MAX_PAGES + 4) * PAGE) as usize;

/// The step of one page of `KVM_TDX_INIT_MEM_REGION` that fails, in Linux 6.18.2's order, with
/// the errno it returns (the rows of the Kernel conformance table).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Failure {
    /// Refused before any page, the region not written back (`tdx_vcpu_ioctl`,
    /// `tdx_vcpu_init_mem_region`: vCPU not initialized, TD finalized, ...): `EINVAL`.
    Refused,
    /// A pending signal (`tdx_vcpu_init_mem_region`, `kvm_gmem_populate`, or
    /// `kvm_tdp_map_page` before its first fault): `EINTR`, the page untouched.
    Signal,
    /// The page is in no guest_memfd memslot (`kvm_gmem_populate`: `kvm_slot_has_gmem`):
    /// `EINVAL`, the page untouched.
    NoMemslot,
    /// The folio or the source pin could not be had (`kvm_gmem_get_folio`,
    /// `tdx_gmem_post_populate`: `get_user_pages_fast` pinning nothing): `ENOMEM`, untouched.
    NoMemory,
    /// The folio is poisoned (`__kvm_gmem_get_pfn`): `EHWPOISON`, untouched.
    Poisoned,
    /// Another caller added the page first, so guest_memfd has it prepared
    /// (`kvm_gmem_populate`: `is_prepared`): `EEXIST`.
    PreparedElsewhere,
    /// The source page cannot be pinned (`tdx_gmem_post_populate`: `get_user_pages_fast`):
    /// `EFAULT`, untouched.
    SourceFault,
    /// A signal in `kvm_tdp_map_page` after a first fault attempt (`RET_PF_RETRY`): the fault
    /// prepared the folio (`kvm_gmem_get_pfn` -> `kvm_gmem_prepare_folio`), nothing is mapped:
    /// `EINTR`, and the retry gets `EEXIST`.
    SignalAfterFault,
    /// The same after a first fault attempt, but the page-table caches cannot be topped up
    /// (`kvm_tdp_map_page` -> `kvm_mmu_do_page_fault`): `ENOMEM`, the folio prepared, and the
    /// retry gets `EEXIST`.
    NoMemoryAfterFault,
    /// TDH.MEM.PAGE.ADD finds an operand busy (`tdx_gmem_post_populate`): `EBUSY`; the page is
    /// prepared and pre-mapped (`nr_premapped`), not added.
    AddBusy,
    /// TDH.MEM.PAGE.ADD fails otherwise: `EIO`, the same state.
    AddFailed,
    /// TDH.MR.EXTEND fails at one of the 16 chunks (measured calls only): `EIO`; the page is
    /// added with a partial measurement, the region not advanced past it.
    ExtendFailed,
}

impl Failure {
    fn errno(self) -> i32 {
        match self {
            Failure::Refused | Failure::NoMemslot => libc::EINVAL,
            Failure::Signal | Failure::SignalAfterFault => libc::EINTR,
            Failure::NoMemory | Failure::NoMemoryAfterFault => libc::ENOMEM,
            Failure::Poisoned => libc::EHWPOISON,
            Failure::PreparedElsewhere => libc::EEXIST,
            Failure::SourceFault => libc::EFAULT,
            Failure::AddBusy => libc::EBUSY,
            Failure::AddFailed | Failure::ExtendFailed => libc::EIO,
        }
    }
}

/// A write-back no Linux kernel makes (`tdx_vcpu_init_mem_region` advances all three fields
/// together, by the pages done).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Lie {
    /// Any values (taken only when inconsistent).
    Raw {
        gpa: u64,
        nr_pages: u64,
        source_addr: u64,
    },
    /// Advanced past the request by `k + 1` pages.
    Overclaim(u8),
    /// An honest advance by the pages before the fault, with one field (`field % 3`) off by
    /// `delta` (at least 1).
    Skewed { field: u8, delta: u64 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Answer {
    /// The page of the call (0 = the first asked) where `fault` happens; past the end, the
    /// call completes.
    at: u8,
    /// `None`: every page is added.
    fault: Option<Failure>,
    /// The write-back lies when this is below 16 (about one call in 16).
    lie_gate: u8,
    lie: Lie,
}

#[derive(Arbitrary, Debug)]
struct RegionIn {
    gap: u8,
    /// Pages: `pages % 64 + 1`, or from 0xf000 on `pages % MAX_PAGES + 1`.
    pages: u16,
    role: Role,
    /// A source at this offset in the pattern (`(aligned, n)`: `n % 4` pages, or `n % 8192`
    /// bytes); `None` (or a zero role): zero content.
    source: Option<(bool, u16)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    regions: Vec<RegionIn>,
    rounds: Vec<Vec<Answer>>,
    /// Per `KVM_SET_MEMORY_ATTRIBUTES` call that has something to do: `ENOMEM` when true.
    private: Vec<bool>,
}

/// A region as the target planned it.
#[derive(Clone, Copy, Debug)]
struct Spec {
    gpa: u64,
    len: u64,
    role: Role,
    /// Offset of its bytes in the pattern; `None`: zeros.
    content: Option<usize>,
}

/// The kernel's state after an answer it cannot recover from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FatalState {
    /// Prepared in guest_memfd and pre-mapped by KVM, not added (PAGE.ADD failed).
    PreMapped,
    /// Added, with fewer than 16 MR.EXTENDs.
    PartlyMeasured,
    /// Prepared before this call reached it.
    Prepared,
}

#[derive(Clone, Copy, Debug)]
struct Fatal {
    errno: i32,
    page: u64,
    measured: bool,
    state: FatalState,
}

#[derive(Default)]
struct Kernel {
    specs: Vec<Spec>,
    answers: VecDeque<Answer>,
    private_errs: VecDeque<bool>,
    /// `KVM_MEMORY_ATTRIBUTE_PRIVATE` pages (GPA).
    private: BTreeSet<u64>,
    /// Folios marked prepared (uptodate) in guest_memfd (gfn).
    prepared: BTreeSet<u64>,
    /// Pages counted in `nr_premapped`: mapped, not added (gfn).
    premapped: BTreeSet<u64>,
    /// Pages this backend's calls added and the write-back counted, per call: (gpa, bytes).
    added: Vec<(u64, u64)>,
    /// The same, page by page in order, with the measure flag.
    added_pages: Vec<(u64, bool)>,
    /// Gfns in `added_pages`.
    added_set: BTreeSet<u64>,
    /// An answer Linux 6.18 cannot recover from.
    fatal: Option<Fatal>,
    /// Write-backs that were impossible.
    impossible: u64,
    finalized: bool,
}

/// The pattern the sources are cut from: every page different, every offset in it too.
fn pattern() -> &'static [u8] {
    static BUF: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    let (buf, off) = BUF.get_or_init(|| {
        let buf: Vec<u8> = (0..PATTERN_LEN as u64 + PAGE)
            .map(|j| (j.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        let off = buf.as_ptr().align_offset(PAGE as usize);
        (buf, off)
    });
    &buf[*off..*off + PATTERN_LEN]
}

impl Kernel {
    fn no_call_after_fatal(&self, what: &str) {
        if let Some(f) = &self.fatal {
            panic!("{what} after an unrecoverable answer: {f:?}");
        }
    }

    /// The region holding `[gpa, gpa+len)`, which must lie inside one.
    fn spec_of(&self, gpa: u64, len: u64) -> Spec {
        let s = self
            .specs
            .iter()
            .find(|s| gpa >= s.gpa && gpa < s.gpa + s.len)
            .unwrap_or_else(|| panic!("{gpa:#x} is in no region"));
        assert!(
            gpa + len <= s.gpa + s.len,
            "[{gpa:#x}..+{len:#x}) runs past its region {s:?}"
        );
        *s
    }

    /// `tdx_vcpu_init_mem_region`'s loop over `nr` pages from `gpa`, failing as `fault` at
    /// page `at`: the pages done (the write-back's advance) and the result.
    fn pages(
        &mut self,
        gpa: u64,
        nr: u64,
        measured: bool,
        at: u64,
        fault: Option<Failure>,
    ) -> (u64, Result<(), i32>) {
        if let Some(Failure::Refused) = fault {
            return (0, Err(libc::EINVAL));
        }
        for i in 0..nr {
            let page = gpa + i * PAGE;
            let gfn = page / PAGE;
            let fault = fault.filter(|_| i == at);
            let fail = |e| (i, Err(e));
            let fatal = |errno, state| {
                Some(Fatal {
                    errno,
                    page,
                    measured,
                    state,
                })
            };
            match fault {
                // tdx_vcpu_init_mem_region / kvm_gmem_populate: signal_pending.
                Some(Failure::Signal) => return fail(libc::EINTR),
                // kvm_gmem_populate: kvm_slot_has_gmem.
                Some(Failure::NoMemslot) => return fail(libc::EINVAL),
                // __kvm_gmem_get_pfn: kvm_gmem_get_folio, folio_test_hwpoison.
                Some(Failure::NoMemory) => return fail(libc::ENOMEM),
                Some(Failure::Poisoned) => return fail(libc::EHWPOISON),
                Some(Failure::PreparedElsewhere) => {
                    self.prepared.insert(gfn);
                }
                _ => {}
            }
            // kvm_gmem_populate: is_prepared.
            if self.prepared.contains(&gfn) {
                self.fatal = fatal(libc::EEXIST, FatalState::Prepared);
                return fail(libc::EEXIST);
            }
            // kvm_gmem_populate: kvm_range_has_memory_attributes(PRIVATE), else EINVAL. The
            // driver converts every range before populating it.
            assert!(
                self.private.contains(&page),
                "page {page:#x} asked before it was made private"
            );
            match fault {
                // tdx_gmem_post_populate: get_user_pages_fast.
                Some(Failure::SourceFault) => return fail(libc::EFAULT),
                // kvm_tdp_map_page: the fault prepared the folio, then a signal or ENOMEM.
                Some(f @ (Failure::SignalAfterFault | Failure::NoMemoryAfterFault)) => {
                    self.prepared.insert(gfn);
                    return fail(f.errno());
                }
                _ => {}
            }
            // kvm_tdp_map_page: prepared and mapped, counted in nr_premapped.
            self.prepared.insert(gfn);
            self.premapped.insert(gfn);
            // TDH.MEM.PAGE.ADD
            if let Some(f @ (Failure::AddBusy | Failure::AddFailed)) = fault {
                self.fatal = fatal(f.errno(), FatalState::PreMapped);
                return fail(f.errno());
            }
            self.premapped.remove(&gfn);
            // TDH.MR.EXTEND x 16
            if let (true, Some(Failure::ExtendFailed)) = (measured, fault) {
                self.fatal = fatal(libc::EIO, FatalState::PartlyMeasured);
                return fail(libc::EIO);
            }
            self.added_pages.push((page, measured));
            self.added_set.insert(gfn);
        }
        (nr, Ok(()))
    }
}

impl TdxIoctl for Kernel {
    fn vm_op(&mut self, cmd: &mut kvm_tdx_cmd, _: Option<&mut [u8]>) -> Result<(), i32> {
        self.no_call_after_fatal("a VM command");
        // SAFETY: `kvm_tdx_cmd` is integers without padding (4 + 4 + 8 + 8 bytes).
        let c = unsafe { user_bytes(cmd, CMD_SIZE) };
        assert_eq!(
            field(&c, CMD_ID, 4),
            u64::from(CMD_FINALIZE_VM),
            "the only VM command here is finalize"
        );
        assert_eq!(field(&c, CMD_HW_ERROR, 8), 0);
        // tdx_td_finalize: pages pre-mapped but not added.
        if !self.premapped.is_empty() {
            return Err(libc::EINVAL);
        }
        self.finalized = true;
        Ok(())
    }

    fn vcpu_op(&mut self, cmd: &mut kvm_tdx_cmd, _: Option<&mut [u8]>) -> Result<(), i32> {
        panic!("populate sent a vCPU command: {cmd:?}");
    }

    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        self.no_call_after_fatal("KVM_TDX_INIT_MEM_REGION");
        assert!(!self.finalized, "populate after finalize");
        // SAFETY: `kvm_tdx_cmd` is integers without padding (4 + 4 + 8 + 8 bytes).
        let c = unsafe { user_bytes(cmd, CMD_SIZE) };
        // SAFETY: `kvm_tdx_init_mem_region` is three `u64`s, no padding.
        let r = unsafe { user_bytes(region, REGION_SIZE) };
        let (gpa0, nr0, src0) = (
            field(&r, REGION_GPA, 8),
            field(&r, REGION_NR_PAGES, 8),
            field(&r, REGION_SOURCE, 8),
        );
        let flags = field(&c, CMD_FLAGS, 4) as u32;
        // What tdx_vcpu_ioctl / tdx_vcpu_init_mem_region would refuse with EINVAL: the backend
        // must never send it.
        assert_eq!(field(&c, CMD_ID, 4), u64::from(CMD_INIT_MEM_REGION));
        assert_eq!(field(&c, CMD_HW_ERROR, 8), 0, "hw_error set on input");
        assert_eq!(src0 % PAGE, 0, "source not page-aligned");
        assert_eq!(
            src0,
            source.as_ptr() as u64,
            "source_addr is not the source"
        );
        assert!(nr0 > 0 && gpa0 % PAGE == 0, "{gpa0:#x} x {nr0}");
        assert!(
            source.len() as u64 >= nr0 * PAGE,
            "source shorter than the pages asked"
        );
        let spec = self.spec_of(gpa0, nr0 * PAGE);
        let measured = spec.role == Role::Measured;
        assert_eq!(
            flags,
            if measured { FLAG_MEASURE } else { 0 },
            "flags for a {} region",
            spec.role
        );
        for i in 0..nr0 {
            let gpa = gpa0 + i * PAGE;
            assert!(
                !self.added_set.contains(&(gpa / PAGE)),
                "page {gpa:#x} asked again after the kernel said it was added"
            );
            let got = &source[(i * PAGE) as usize..((i + 1) * PAGE) as usize];
            let off = (gpa - spec.gpa) as usize;
            match spec.content {
                Some(c) => assert!(
                    got == &pattern()[c + off..c + off + PAGE as usize],
                    "page {gpa:#x}: source is not the region's bytes at {off:#x}"
                ),
                None => assert!(got == &[0u8; PAGE as usize][..], "page {gpa:#x}: not zero"),
            }
        }

        let a = self.answers.pop_front().unwrap_or(Answer {
            at: 0,
            fault: None,
            lie_gate: u8::MAX,
            lie: Lie::Overclaim(0),
        });
        let at = u64::from(a.at);
        if a.lie_gate < 16 {
            let (gpa, nr_pages, source_addr) = match a.lie {
                Lie::Raw {
                    gpa,
                    nr_pages,
                    source_addr,
                } => (gpa, nr_pages, source_addr),
                Lie::Overclaim(k) => {
                    let p = nr0 + 1 + u64::from(k);
                    (
                        gpa0.wrapping_add(p * PAGE),
                        nr0.wrapping_sub(p),
                        src0.wrapping_add(p * PAGE),
                    )
                }
                Lie::Skewed { field, delta } => {
                    let p = at.min(nr0);
                    let mut v = [gpa0 + p * PAGE, nr0 - p, src0 + p * PAGE];
                    let f = usize::from(field % 3);
                    v[f] = v[f].wrapping_add(delta.max(1));
                    (v[0], v[1], v[2])
                }
            };
            // Judged independently, in u128: p pages done, all three fields in step.
            let consistent = nr_pages <= nr0 && {
                let p = u128::from(nr0 - nr_pages) * u128::from(PAGE);
                u128::from(gpa) == u128::from(gpa0) + p
                    && u128::from(source_addr) == u128::from(src0) + p
            };
            if !consistent {
                // A kernel that writes this back did nothing this model can name.
                // SAFETY: any bytes are a valid `kvm_tdx_init_mem_region` (three `u64`s).
                unsafe { copy_to_user(region, &region_bytes(source_addr, gpa, nr_pages)) };
                self.impossible += 1;
                return a.fault.map_or(Ok(()), |f| Err(f.errno()));
            }
        }
        let (done, result) = self.pages(gpa0, nr0, measured, at, a.fault);
        // tdx_vcpu_init_mem_region writes the region back on every outcome but the up-front
        // refusals, advanced by the pages done.
        if done > 0 {
            let back = region_bytes(src0 + done * PAGE, gpa0 + done * PAGE, nr0 - done);
            // SAFETY: any bytes are a valid `kvm_tdx_init_mem_region` (three `u64`s).
            unsafe { copy_to_user(region, &back) };
            self.added.push((gpa0, done * PAGE));
        }
        result
    }

    /// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` (`virt/kvm/kvm_main.c`:
    /// `kvm_vm_ioctl_set_mem_attributes`, `kvm_vm_set_mem_attributes`): nothing to do when
    /// the range is already private; else `ENOMEM` from `xa_reserve` before any page changes.
    /// Its `EINVAL`s (misaligned, empty, wrapping) the backend must never cause.
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        self.no_call_after_fatal("KVM_SET_MEMORY_ATTRIBUTES");
        let errs = &mut self.private_errs;
        kernel::set_private(&mut self.private, gpa, len, || {
            errs.pop_front() == Some(true)
        })
    }
}

fuzz_target!(|input: Input| {
    let mut specs = Vec::new();
    let mut cursor = 0x10_0000u64;
    for r in input.regions.iter().take(6) {
        let role = match r.role {
            Role::Measured | Role::Unmeasured | Role::Zero => r.role,
            _ => Role::Measured,
        };
        let pages = if r.pages >= 0xf000 {
            u64::from(r.pages) % MAX_PAGES + 1
        } else {
            u64::from(r.pages) % 64 + 1
        };
        let len = pages * PAGE;
        let gpa = cursor + u64::from(r.gap) * PAGE;
        cursor = gpa + len;
        let content = match r.source {
            Some((aligned, n)) if role != Role::Zero => Some(if aligned {
                (n as usize % 4) * PAGE as usize
            } else {
                n as usize % 8192
            }),
            _ => None,
        };
        specs.push(Spec {
            gpa,
            len,
            role,
            content,
        });
    }
    let mut builder = PlanBuilder::new();
    for s in &specs {
        builder = match s.content {
            Some(c) => builder.source(s.gpa, s.role, &pattern()[c..c + s.len as usize]),
            None => builder.zeros(s.gpa, s.len, s.role),
        };
    }
    let plan = builder
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .expect("valid by construction");
    let mut kernel = Kernel {
        specs: specs.clone(),
        private_errs: input.private.iter().take(16).copied().collect(),
        ..Kernel::default()
    };
    let mut backend = TdxBackend::initialized(&mut kernel, &[0]);

    let rounds: Vec<&Vec<Answer>> = input.rounds.iter().take(6).collect();
    let end = kernel::drive(
        &plan,
        &mut backend,
        &rounds,
        |b, round| {
            let k = b.ioctl_mut();
            match round {
                Some(r) => k.answers.extend(r.iter().take(32).copied()),
                None => {
                    k.answers.clear();
                    k.private_errs.clear();
                }
            }
        },
        |b| b.ioctl().impossible,
        |b| b.ioctl().fatal.is_some(),
        // The modelled failures never kill the VM.
        |_| false,
        |b, r| check(b, r, &specs),
    );
    if let kernel::End::Complete = end {
        let k = backend.ioctl();
        assert!(k.premapped.is_empty() && k.fatal.is_none());
        let all: u64 = specs.iter().map(|s| s.len / PAGE).sum();
        assert_eq!(k.added_pages.len() as u64, all, "every page added once");
        backend.finalize().expect("a completed plan finalizes");
        assert!(backend.ioctl().finalized);
    }
});

/// After every run: the report and the backend's list of added pages against the kernel's
/// ledger; after an unrecoverable stop, what the backend says of the TD and that it sends
/// nothing more.
fn check(b: &mut TdxBackend<&mut Kernel>, r: &cc_populate::Report, specs: &[Spec]) {
    let k = b.ioctl();
    for (i, (rr, s)) in r.regions.iter().zip(specs).enumerate() {
        let what = format!("region {i} [{:#x}..+{:#x}) {}", s.gpa, s.len, s.role);
        let added = kernel::prefix(&k.added, s.gpa, s.len, &what);
        assert_eq!(
            added, rr.populated,
            "{what}: kernel added {added:#x}, report says {:#x}",
            rr.populated
        );
    }
    kernel::assert_disjoint(&k.added, "added");
    let backend_pages: Vec<(u64, bool)> = b
        .added()
        .iter()
        .flat_map(|a| (0..a.len / PAGE).map(move |p| (a.gpa + p * PAGE, a.measured)))
        .collect();
    assert_eq!(
        backend_pages, k.added_pages,
        "TdxBackend::added is not the kernel's list of added pages"
    );
    let Some(fatal) = k.fatal else {
        assert!(b.unrecoverable().is_none());
        return;
    };
    let stop = r.stop.as_ref().expect("stopped");
    assert_eq!(stop.gpa, fatal.page, "the stop names the page: {stop}");
    assert!(
        matches!(&stop.cause, StopCause::Backend(e) if e.kind == cc_populate::ErrorKind::Failed)
    );
    let u = b
        .unrecoverable()
        .expect("the backend keeps the TD's state")
        .clone();
    assert_eq!((u.errno, u.page), (fatal.errno, fatal.page), "{u}");
    assert_eq!(u.in_td.as_slice(), b.added(), "{u}");
    // What 6.18 lets userspace know of the page (the errno and the measure flag only).
    let expected = match (fatal.state, fatal.errno, fatal.measured) {
        (FatalState::Prepared, _, _) => PageState::AlreadyPrepared,
        (FatalState::PreMapped, libc::EIO, true) | (FatalState::PartlyMeasured, _, _) => {
            PageState::NotAddedOrPartlyMeasured
        }
        (FatalState::PreMapped, _, _) => PageState::PreMappedNotAdded,
    };
    assert_eq!(u.page_state, expected, "{u}");
    // No ioctl from here on: the fake kernel panics on any.
    match b.finalize() {
        Err(tdx_backend::Error::Unrecoverable(v)) => assert_eq!(*v, u),
        other => panic!("finalize after an unrecoverable stop: {other:?}"),
    }
    let s = specs[stop.region];
    let p = b.populate(&ChunkRequest {
        region: stop.region,
        gpa: stop.gpa,
        len: PAGE,
        role: s.role,
        source: ChunkSource::Zero,
    });
    assert_eq!(p.done, 0);
    assert!(
        p.result.as_ref().is_err_and(|e| e.unrecoverable),
        "a direct populate after an unrecoverable stop: {:?}",
        p.result
    );
}
