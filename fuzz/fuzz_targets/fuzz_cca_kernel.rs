//! The Arm CCA backend against a fake kernel for each series version ([`UapiVersion`]). For
//! v12-v14 it fails only as the series' `kvm_arm_rmi_populate` over `kvm_gmem_populate` can
//! (cca-backend's Kernel conformance table): the fuzzer picks the granule and the cause (a
//! memslot's end, a signal, the RMM refusing a granule, a realm activated by a first
//! `KVM_RUN`), and the kernel succeeds with the granules before it (v13/v14: the in/out struct
//! advanced, 0 returned; v12: the bytes done returned) or, at the first granule, answers
//! `EINVAL`, `EINTR`, `ENXIO`, or `EBUSY` for an active realm, then for every populate after
//! it; `KVM_SET_MEMORY_ATTRIBUTES` fails only with `ENOMEM`. Sometimes it replies as no
//! kernel does (any values, over-claimed, one value skewed). (v9 was dropped from
//! cca-backend.)
//!
//! Driven by `cc_populate::Driver` over a plan of measured and unmeasured regions, some inside
//! `ripas` regions, resumed after every stop and finally against a kernel that fails nowhere:
//! never panics; every call names a range inside one region of the right kind, with the right
//! measure flag, `reserved` zero, a page-aligned source (when the source is the caller's buffer,
//! at the region's offset in it), private pages; no granule populated twice; each region's
//! reported bytes equal what the kernel did for it (a prefix); an impossible answer stops the
//! run with a hard error and counts nothing. `EBUSY` from an active realm stops the run as
//! unrecoverable: no ioctl follows and a resume is refused; otherwise the plan completes.
#![no_main]

#[path = "common/kernel.rs"]
mod kernel;

use std::collections::{BTreeSet, VecDeque};

use arbitrary::Arbitrary;
use cc_populate::{MemoryLayout, PlanBuilder, Role, SourceBuf, StopCause};
use cc_populate_fuzz::{copy_to_user, field, intersects, user_bytes};
use cca_backend::uapi::KvmArmRmiPopulate;
use cca_backend::{
    cca_caps, CcaBackend, CcaIoctl, HashAlgo, PopulateRequest, RealmParams, UapiVersion,
};
use libfuzzer_sys::fuzz_target;

const PAGE: u64 = 4096;
const CAP: u32 = 0x1234;
/// Populate flags by hand: bit 0 = measure (the series' `*_POPULATE_FLAGS_MEASURE`).
const MEASURE: u32 = 1;

// The kernel's numbers and layouts, written out here from the series' uAPI headers rather
// than taken from cca_backend::uapi, so that the fake kernel is a second reading of them.
//
// `KVM_ARM_RMI_POPULATE` is `_IOW(KVMIO, 0xd7, struct kvm_arm_rmi_populate)` in v12 and
// `_IOWR(...)` from v13 on (arch/arm64/include/uapi/asm/kvm.h of the series), with
// include/uapi/asm-generic/ioctl.h's layout: dir in bits 31:30 (write 1, read 2), size in
// 29:16, type in 15:8 (`KVMIO` 0xAE), nr in 7:0; the struct is 32 bytes.
/// v12: `1 << 30 | 32 << 16 | 0xAE << 8 | 0xd7`.
const RMI_POPULATE_V12: u64 = 0x4020_aed7;
/// v13, v14: `3 << 30 | 32 << 16 | 0xAE << 8 | 0xd7`.
const RMI_POPULATE_V13: u64 = 0xc020_aed7;
/// `struct kvm_arm_rmi_populate { __u64 base; __u64 size; __u64 source_uaddr; __u32 flags;
/// __u32 reserved; }`: its size and field offsets.
const RMI_SIZE: usize = 32;
const RMI_BASE: usize = 0;
const RMI_LEN: usize = 8;
const RMI_SOURCE: usize = 16;
const RMI_FLAGS: usize = 24;
const RMI_RESERVED: usize = 28;
/// `ARM64_SYS_REG(3, 0, 0, 5, 0)`, `ID_AA64DFR0_EL1`: `KVM_REG_ARM64 (0x6000 << 48) |
/// KVM_REG_SIZE_U64 (3 << 52) | KVM_REG_ARM64_SYSREG (0x13 << 16) | op0 3 << 14 | op1 0 << 11
/// | CRn 0 << 7 | CRm 5 << 3 | op2 0` (arch/arm64/include/uapi/asm/kvm.h).
const REG_ID_AA64DFR0_EL1: u64 = 0x6030_0000_0013_c028;

/// `struct kvm_arm_rmi_populate` as the kernel writes it back (`flags`, `reserved` as read).
fn rmi_bytes(read: &[u8], base: u64, size: u64, source_uaddr: u64) -> Vec<u8> {
    let mut b = read.to_vec();
    b[RMI_BASE..RMI_BASE + 8].copy_from_slice(&base.to_le_bytes());
    b[RMI_LEN..RMI_LEN + 8].copy_from_slice(&size.to_le_bytes());
    b[RMI_SOURCE..RMI_SOURCE + 8].copy_from_slice(&source_uaddr.to_le_bytes());
    b
}

/// Why a v12-v14 populate stops at a granule, as the series' `kvm_arm_rmi_populate` over 6.18's
/// `kvm_gmem_populate` stops (cca-backend's Kernel conformance table): with granules done the
/// error is dropped and the call succeeds with them (v13/v14: the struct advanced, 0 returned;
/// v12: the bytes done returned); at the call's first granule the errno below.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Stop {
    /// The memslot ends (`kvm_gmem_populate` clamps `npages`); at the first granule, the range
    /// is in no guest_memfd memslot: `EINVAL`.
    Memslot,
    /// A pending signal (`kvm_gmem_populate`): `EINTR`.
    Signal,
    /// The RMM refuses the granule's delegation (v12 20/46
    /// `realm_create_protected_data_page`, v14 26/44 `realm_data_map_init`): `ENXIO`.
    RmmRefuses,
    /// A first `KVM_RUN` activated the realm before this call (`realm_ensure_created`): `EBUSY`
    /// with nothing done, and for every populate from now on.
    Activated,
}

/// A reply no kernel of the series makes (v12/v13/v14).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Lie {
    /// Any struct and any return value; counted only if consistent.
    Raw {
        base: u64,
        size: u64,
        source_uaddr: u64,
        ret: i32,
    },
    /// `k` granules more than done claimed.
    Overclaim(u8),
    /// Honest, then one value (`field % 4`: base, size, source_uaddr, return value) moved by
    /// `delta` (granules when `pages`, else bytes).
    Skewed { field: u8, delta: i16, pages: bool },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Answer {
    /// The granule of the call (0: the first asked) where `stop` happens; past the end, or
    /// without `stop`, every granule is populated.
    granules: u8,
    stop: Option<Stop>,
    /// v12+: the kernel replies with `lie` when this is below 16 (about one call in 16).
    lie_gate: u8,
    lie: Lie,
}

#[derive(Arbitrary, Debug)]
struct DataIn {
    gap: u8,
    pages: u8,
    measured: bool,
    source: bool,
    misaligned: bool,
}

#[derive(Arbitrary, Debug)]
struct GroupIn {
    gap: u8,
    ripas: bool,
    tail: u8,
    data: Vec<DataIn>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    version: u8,
    groups: Vec<GroupIn>,
    data: Vec<u8>,
    rounds: Vec<Vec<Answer>>,
    /// v12+: per `KVM_SET_MEMORY_ATTRIBUTES` call that has something to do, `ENOMEM` when
    /// true.
    private: Vec<bool>,
}

#[derive(Clone, Copy)]
struct Spec {
    gpa: u64,
    len: u64,
    role: Role,
    /// Offset of the content in the source buffer (None: zeros).
    content: Option<usize>,
}

#[derive(Default)]
struct Kernel {
    version: Option<UapiVersion>,
    specs: Vec<Spec>,
    /// Address of the caller's source buffer, and its length.
    src_base: u64,
    src_len: u64,
    answers: VecDeque<Answer>,
    /// Granules populated: (gpa, bytes).
    populated: Vec<(u64, u64)>,
    impossible: u64,
    private_errs: VecDeque<bool>,
    /// Private pages (GPA), v12+.
    private: BTreeSet<u64>,
    /// v12+: the realm is active; every populate is `EBUSY` from now on.
    active: bool,
    /// An answer the backend cannot recover from: `EBUSY` from an active realm. No ioctl may
    /// follow.
    fatal: bool,
}

const WINDOW: u64 = 0x10_0000;

impl Kernel {
    fn region(&self, gpa: u64, len: u64, ripas: bool) -> Spec {
        *self
            .specs
            .iter()
            .find(|s| {
                (s.role == Role::Ripas) == ripas && gpa >= s.gpa && gpa + len <= s.gpa + s.len
            })
            .unwrap_or_else(|| panic!("[{gpa:#x}..+{len:#x}) is in no region (ripas {ripas})"))
    }

    fn check_data(&self, gpa: u64, len: u64, flags: u32) -> Spec {
        assert!(
            len > 0 && len.is_multiple_of(PAGE) && gpa.is_multiple_of(PAGE),
            "[{gpa:#x}..+{len:#x})"
        );
        let s = self.region(gpa, len, false);
        let want = if s.role == Role::Measured { MEASURE } else { 0 };
        assert_eq!(flags, want, "flags at {gpa:#x}");
        for p in &self.populated {
            assert!(
                !intersects(p.0, p.1, gpa, len),
                "[{gpa:#x}..+{len:#x}) asked again, {p:?} populated"
            );
        }
        s
    }

    fn no_call_after_fatal(&self, what: &str) {
        assert!(!self.fatal, "{what} after an unrecoverable answer");
    }

    fn next(&mut self) -> Answer {
        self.answers.pop_front().unwrap_or(Answer {
            granules: 0,
            stop: None,
            lie_gate: u8::MAX,
            lie: Lie::Overclaim(0),
        })
    }
}

impl CcaIoctl for Kernel {
    fn rmi_populate(
        &mut self,
        request: PopulateRequest,
        args: &mut KvmArmRmiPopulate,
    ) -> Result<i32, i32> {
        let version = self.version.expect("version");
        let want = match version {
            UapiVersion::V12 => RMI_POPULATE_V12,
            UapiVersion::V13 | UapiVersion::V14 => RMI_POPULATE_V13,
        };
        assert_eq!(request.number(), want, "request number");
        // SAFETY: `KvmArmRmiPopulate` is integers without padding (8 + 8 + 8 + 4 + 4 bytes).
        let read = unsafe { user_bytes(args, RMI_SIZE) };
        assert_eq!(field(&read, RMI_RESERVED, 4), 0, "reserved");
        let (base0, size0, src0) = (
            field(&read, RMI_BASE, 8),
            field(&read, RMI_LEN, 8),
            field(&read, RMI_SOURCE, 8),
        );
        let s = self.check_data(base0, size0, field(&read, RMI_FLAGS, 4) as u32);
        // What the kernel leaves in the struct (v12: nothing is written back).
        let (mut base, mut size, mut source_uaddr) = (base0, size0, src0);
        assert_eq!(src0 % PAGE, 0, "source {src0:#x} not page-aligned");
        if src0 >= self.src_base && src0 < self.src_base + self.src_len {
            // The caller's own buffer: it must be this range's bytes.
            let off = s.content.map(|o| o as u64 + (base0 - s.gpa));
            assert_eq!(
                Some(src0 - self.src_base),
                off,
                "source of [{base0:#x}..+{size0:#x}) at the wrong place in the caller's buffer"
            );
            assert!(src0 - self.src_base + size0 <= self.src_len);
        }
        assert!(
            !self.active,
            "populate after the kernel answered EBUSY (realm active)"
        );
        for i in 0..size0 / PAGE {
            let g = base0 + i * PAGE;
            assert!(self.private.contains(&g), "{g:#x} populated while shared");
        }
        let a = self.next();
        let nr = size0 / PAGE;
        let in_out = matches!(version, UapiVersion::V13 | UapiVersion::V14);
        let ret = if a.lie_gate < 16 {
            let k = u64::from(a.granules).min(nr);
            match a.lie {
                Lie::Skewed {
                    field,
                    delta,
                    pages,
                } => {
                    let d = delta as i64 as u64;
                    let d = if pages { d.wrapping_mul(PAGE) } else { d };
                    let mut ret = 0i32;
                    if in_out {
                        base = base0 + k * PAGE;
                        size = size0 - k * PAGE;
                        source_uaddr = src0 + k * PAGE;
                    } else {
                        ret = (k * PAGE) as i32;
                    }
                    match field % 4 {
                        0 => base = base.wrapping_add(d),
                        1 => size = size.wrapping_add(d),
                        2 => source_uaddr = source_uaddr.wrapping_add(d),
                        _ => ret = ret.wrapping_add(d as i32),
                    }
                    ret
                }
                Lie::Overclaim(x) => {
                    let c = k + x as u64 + 1;
                    if in_out {
                        base = base0.wrapping_add(c * PAGE);
                        size = size0.wrapping_sub(c * PAGE);
                        source_uaddr = src0.wrapping_add(c * PAGE);
                        0
                    } else {
                        (c * PAGE) as i32
                    }
                }
                Lie::Raw {
                    base: b,
                    size: z,
                    source_uaddr: u,
                    ret,
                } => {
                    (base, size, source_uaddr) = (b, z, u);
                    ret
                }
            }
        } else {
            // realm_ensure_created: an active realm refuses before any granule.
            if let Some(Stop::Activated) = a.stop {
                self.active = true;
                self.fatal = true;
                return Err(libc::EBUSY);
            }
            let k = match a.stop {
                Some(_) => u64::from(a.granules).min(nr),
                None => nr,
            };
            if k == 0 {
                // kvm_gmem_populate: no granule done, the error.
                return Err(match a.stop {
                    Some(Stop::Memslot) => libc::EINVAL,
                    Some(Stop::Signal) => libc::EINTR,
                    _ => libc::ENXIO,
                });
            }
            if in_out {
                base = base0 + k * PAGE;
                size = size0 - k * PAGE;
                source_uaddr = src0 + k * PAGE;
                0
            } else {
                (k * PAGE) as i32
            }
        };
        let back = rmi_bytes(&read, base, size, source_uaddr);
        // SAFETY: any bytes are a valid `KvmArmRmiPopulate` (plain integers).
        unsafe { copy_to_user(args, &back) };
        // Judged independently.
        let done = if in_out {
            let d = size0.checked_sub(size);
            d.filter(|d| {
                ret == 0
                    && d.is_multiple_of(PAGE)
                    && base == base0.wrapping_add(*d)
                    && source_uaddr == src0.wrapping_add(*d)
            })
        } else {
            u64::try_from(ret)
                .ok()
                .filter(|d| *d <= size0 && d.is_multiple_of(PAGE))
        };
        match done {
            Some(0) => {}
            Some(d) => self.populated.push((base0, d)),
            None => self.impossible += 1,
        }
        Ok(ret)
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        // Each region is converted (KVM_SET_MEMORY_ATTRIBUTES) before it is populated.
        self.no_call_after_fatal("KVM_SET_MEMORY_ATTRIBUTES");
        let errs = &mut self.private_errs;
        kernel::set_private(&mut self.private, gpa, len, || {
            errs.pop_front() == Some(true)
        })
    }

    fn vcpu_count(&self) -> usize {
        1
    }

    fn vcpu_get_one_reg(&mut self, _vcpu: usize, id: u64, value: &mut [u8]) -> Result<(), i32> {
        // One vCPU without SVE; ID_AA64DFR0_EL1 with 2 breakpoints and 2 watchpoints.
        if id == REG_ID_AA64DFR0_EL1 && value.len() == 8 {
            value.copy_from_slice(&(0x6u64 | (1 << 12) | (1 << 20)).to_le_bytes());
            Ok(())
        } else {
            Err(libc::ENOENT)
        }
    }

    fn vcpu_set_one_reg(&mut self, _vcpu: usize, _id: u64, _value: &[u8]) -> Result<(), i32> {
        Ok(())
    }
}

fuzz_target!(|input: Input| {
    let version =
        [UapiVersion::V14, UapiVersion::V13, UapiVersion::V12][input.version as usize % 3];
    // Layout: groups of data regions, each group optionally covered by a ripas region listed
    // before its data.
    let mut specs: Vec<Spec> = Vec::new();
    let mut cursor = WINDOW;
    let mut slot = 0usize;
    for g in input.groups.iter().take(4) {
        let start = cursor + (g.gap % 8) as u64 * PAGE;
        let mut at = start;
        let mut datas = Vec::new();
        for d in g.data.iter().take(3) {
            let gpa = at + (d.gap % 4) as u64 * PAGE;
            let len = (d.pages % 16 + 1) as u64 * PAGE;
            at = gpa + len;
            let content = d.source.then(|| {
                let off = slot + if d.misaligned { 8 } else { 0 };
                slot += len as usize + PAGE as usize;
                off
            });
            let role = if d.measured {
                Role::Measured
            } else {
                Role::Unmeasured
            };
            datas.push(Spec {
                gpa,
                len,
                role,
                content,
            });
        }
        let end = at + (g.tail % 4) as u64 * PAGE;
        if g.ripas && end > start {
            specs.push(Spec {
                gpa: start,
                len: end - start,
                role: Role::Ripas,
                content: None,
            });
        }
        specs.extend(datas);
        cursor = end;
    }
    let mut buf = SourceBuf::new(slot.max(PAGE as usize)).expect("source buffer");
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = if input.data.is_empty() {
            (i / 4096) as u8 ^ 0xa5
        } else {
            input.data[i % input.data.len()]
        };
    }
    let mut builder = PlanBuilder::new();
    for s in &specs {
        builder = match s.content {
            Some(off) => builder.source(s.gpa, s.role, &buf.as_slice()[off..off + s.len as usize]),
            None => builder.zeros(s.gpa, s.len, s.role),
        };
    }
    let plan = builder
        .build(&cca_caps(version), &MemoryLayout::unbounded())
        .expect("valid by construction");
    let kernel = Kernel {
        version: Some(version),
        specs: specs.clone(),
        src_base: buf.as_slice().as_ptr() as u64,
        src_len: buf.len() as u64,
        private_errs: input.private.iter().take(16).copied().collect(),
        ..Kernel::default()
    };
    let mut backend = CcaBackend::with_version(kernel, version, CAP);
    backend
        .configure(&RealmParams::new(HashAlgo::Sha256, 40))
        .expect("configure");

    let rounds: Vec<&Vec<Answer>> = input.rounds.iter().take(6).collect();
    kernel::drive(
        &plan,
        &mut backend,
        &rounds,
        |b, round| {
            let k = b.io_mut();
            match round {
                Some(r) => k.answers.extend(r.iter().take(32).copied()),
                None => {
                    k.answers.clear();
                    k.private_errs.clear();
                }
            }
        },
        |b| b.io().impossible,
        // EBUSY from an active realm: the backend stops for good, and a resume is refused without an ioctl (the fake kernel panics on one).
        |b| b.io().fatal,
        // The modelled failures never kill the VM.
        |_| false,
        |b, r| {
            if b.io().active {
                let stop = r.stop.as_ref().expect("stopped");
                assert!(
                    matches!(&stop.cause, StopCause::Backend(e) if e.errno == Some(libc::EBUSY)),
                    "the stop names EBUSY: {stop}"
                );
            }
            let k = b.io();
            for (i, (rr, s)) in r.regions.iter().zip(&specs).enumerate() {
                let what = format!(
                    "{version} region {i} [{:#x}..+{:#x}) {}",
                    s.gpa, s.len, s.role
                );
                let ledger = match s.role {
                    // The kernel sets RIPAS itself; nothing is issued.
                    Role::Ripas => {
                        assert!(
                            rr.populated <= s.len && rr.populated.is_multiple_of(PAGE),
                            "{what}"
                        );
                        continue;
                    }
                    _ => &k.populated,
                };
                let done = kernel::prefix(ledger, s.gpa, s.len, &what);
                assert_eq!(
                    done, rr.populated,
                    "{what}: kernel {done:#x}, report {:#x}",
                    rr.populated
                );
            }
            kernel::assert_disjoint(&k.populated, "populated");
        },
    );
});
