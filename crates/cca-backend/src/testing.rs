//! An in-process model of the CCA series' kernel side, for tests without CCA hardware.
//!
//! [`KernelModel`] implements [`CcaIoctl`] as the series' patches implement it, per version.
//! Every behaviour cites the patch (as posted to the kvm list) and the function; where v12, v13
//! and v14 agree the citation names the v14 patch and the others' numbers. Mainline code the
//! series calls is cited from Linux 6.18.2 (the series' v12 is based on v6.19-rc1, v13 on v7.0,
//! v14 on v7.1-rc1; `kvm_gmem_populate` there takes a pinned source page instead of a user
//! pointer, and its checks as read in 6.18 are assumed unchanged).
//!
//! `KVM_ARM_RMI_POPULATE` (v12 20/46, v13 24/48, v14 26/44, `kvm_arch_vm_ioctl` and
//! `kvm_arm_rmi_populate`):
//! - another request number (v12's `_IOW` on v13/v14, v13's `_IOWR` on v12, anything on v9):
//!   `-EINVAL` (arm64 `kvm_arch_vm_ioctl`, `default:`);
//! - a VM that is not a realm: `-EPERM` on v12, `-ENXIO` on v13/v14;
//! - non-zero `reserved`, unknown flags, `base` or `base + size` not page aligned, and from v13
//!   on `source_uaddr` not page aligned: `-EINVAL`;
//! - `realm_ensure_created` (v12 22/46, v13 26/48, v14 28/44): creates the realm at the first
//!   call (`realm_create_rd`, whose `realm_init_sve_param`, v14 41/44 and v12 42/46, fails with
//!   `-EINVAL` unless every SVE vCPU is finalized with one vector length, and which reads the
//!   breakpoint and watchpoint counts from `ID_AA64DFR0_EL1`, v14 39/44, v12 39/46); a dead
//!   realm is `-ENXIO`, an active one `-EBUSY`, for good;
//! - then `kvm_gmem_populate` (6.18 `virt/kvm/guest_memfd.c`): `size` of no page is `-EINVAL`;
//!   the base must be in a guest_memfd memslot (`-EINVAL`); the range is cut at the memslot's
//!   end; page by page: a pending signal is `-EINTR`, a page not `KVM_MEMORY_ATTRIBUTE_PRIVATE`
//!   `-EINVAL`, a granule the RMM refuses to delegate `-ENXIO` (`realm_create_protected_data_page`
//!   v12 20/46, `realm_data_map_init` v14 26/44); a page already populated is `-EEXIST` on v12
//!   (6.18's "already prepared" check) and `-ENXIO` on v13/v14 (their 7.0/7.1 base has no such
//!   check: `realm_data_map_init` calls `rmi_delegate_page` on the granule again, which fails,
//!   and returns `-ENXIO`); it returns the pages done if any, the error only when none were;
//! - v13/v14 advance `base`, `size`, `source_uaddr` by the pages done and return 0; v12 returns
//!   the bytes done as an `int`.
//!
//! `KVM_SET_MEMORY_ATTRIBUTES` (6.18 `kvm_vm_ioctl_set_mem_attributes`; arm64 offers
//! `PRIVATE` for realms from v12 19/46, v13 23/48, v14 25/44): `-EINVAL` on a VM without private
//! memory (v9 or not a realm), for an empty, wrapping or unaligned range.
//!
//! vCPU registers: `ID_AA64DFR0_EL1` (mainline `arch/arm64/kvm/sys_regs.c`, 6.12 through 7.3:
//! `set_id_aa64dfr0_el1` -> `set_id_reg` -> `arm64_check_features`; only `DoubleLock`, `WRPs`,
//! `PMUVer` and `DebugVer` are in the register's writable mask, "just prevent changes to BRPs and
//! CTX_CMPs altogether"; no series version changes that): any change of `BRPs` or `CTX_CMPs`,
//! `WRPs` above the host's, or any other field changed: `-EINVAL`; v14 39/44 adds `WRPs` 0:
//! `-EINVAL`; once the realm exists a different value is `-EBUSY`. `KVM_REG_ARM64_SVE_VLS` (6.18 `get_sve_vls` /
//! `set_sve_vls`, v14 41/44): no SVE `-ENOENT`, finalized or realm created `-EPERM`, a set that
//! is not the host's lengths up to its maximum `-EINVAL`. `KVM_ARM_VCPU_FINALIZE` (6.18
//! `kvm_arm_vcpu_finalize`): no SVE or another feature `-EINVAL`, twice `-EPERM`.
//!
//! First `KVM_RUN` ([`KernelModel::first_run`], v14 18/44 and 19/44 `kvm_activate_realm`,
//! 27/44 `set_ripas_of_protected_regions`; v12 11/46, 12/46, 21/46; v13 25/48): without an
//! in-kernel vGIC ([`KernelModel::vgic`]) `-EOPNOTSUPP` ("Userspace irqchip not yet supported
//! with realms"), which v12 11/46 returns after `realm_ensure_created` and after marking the
//! realm dead (for good), and the later form of `kvm_activate_realm` checks before either (see
//! the README's limits for which versions were read); then creates the realm if needed, marks
//! it dead in case of failure, creates a REC per vCPU in creation order (`kvm_for_each_vcpu`;
//! `-EINVAL` for a vCPU without PSCI 0.2; runnable only the vCPU whose **id** is 0,
//! `kvm_create_rec`: `if (vcpu->vcpu_id == 0) params->flags |= REC_PARAMS_FLAG_RUNNABLE`),
//! initialises RIPAS RAM over every guest_memfd memslot in `kvm_for_each_memslot` order (the
//! slot-id hash table, [`memslot_walk_order`]), then activates.
//!
//! What the model cannot follow (firmware internals): the RMM is reduced to "this granule's
//! delegation fails" ([`KernelModel::failing`]); v13/v14 `realm_data_map_init` returns the
//! status of a failing `RMI_RTT_DATA_MAP_INIT` as a positive value that `kvm_gmem_populate`
//! passes up as a page count, which is not modelled; how the RMM's `RTT_INIT_RIPAS` treats
//! populated entries is taken as "skip them" (the model initialises, and for RMM 1.0 measures,
//! the unpopulated parts of each memslot). RIM: REALM_CREATE, DATA in populate order, then at
//! the first run the runnable REC and, under RMM 1.0 rules, the RIPAS ranges. Whether the RMM
//! measures `RMI_RTT_INIT_RIPAS` is a property of the firmware build (TF-RMM stopped at commit
//! `bdb07f46`, 2026-04-28), not of the series: [`KernelModel::rmm`] chooses it, by default the
//! first of [`UapiVersion::rmm_rules`]. The RIM is the model's own (the private `rmm`
//! submodule, `src/testing/rmm.rs`): TF-RMM's measurement structures and RTT walk read in
//! TF-RMM's sources and written out as bytes here, hashed with `sha2` directly, sharing no
//! code with [`crate::measure`]; RTT_INIT_RIPAS is issued as v12's `ripas_change` issues it
//! (`find_map_level`, `realm_create_rtt_levels`, a page at a time over populated granules), so
//! the RIPAS entries measured are those the RTTs give, not [`crate::ripas_split`]'s.
//! `tests/mutants.sh` applies mutants to `measure.rs` and `params.rs` and checks that the
//! comparison below fails for each. After a whole launch it equals
//! [`measure_with_options`](crate::measure_with_options) of the same plan with
//! [`MeasureOptions::for_series`](crate::MeasureOptions::for_series) (tested per version and
//! rule set).

use std::collections::{BTreeMap, VecDeque};

use crate::ioctl::CcaIoctl;
use crate::params::{HashAlgo, RealmParams, RecParams, RmmVersion};
use crate::uapi::{self, KvmArmRmiPopulate};
use crate::version::{PopulateRequest, UapiVersion};
use series::*;

mod rmm;
use rmm::{RealmCreate, Rmm};

/// The series' numbers and layouts, written out again here from its uAPI headers
/// (arch/arm64/include/uapi/asm/kvm.h of v12-v14, include/uapi/linux/kvm.h,
/// include/uapi/asm-generic/ioctl.h) rather than taken from [`crate::uapi`]: the model
/// decodes requests with them and reads the argument structs as bytes at these offsets, so a
/// wrong number or a misordered struct in the crate is refused here as the kernel would refuse
/// it. (The request numbers the model records in [`KernelModel::calls`] are only records.)
mod series {
    /// `KVM_ARM_RMI_POPULATE` in v12, `_IOW(KVMIO, 0xd7, struct kvm_arm_rmi_populate)`: dir
    /// write (1) << 30 | size 32 << 16 | `KVMIO` 0xAE << 8 | 0xd7.
    pub const RMI_POPULATE_V12: u64 = 0x4020_aed7;
    /// From v13 on, `_IOWR(...)`: dir read | write (3) << 30, the rest as in v12.
    pub const RMI_POPULATE_V13: u64 = 0xc020_aed7;
    /// `struct kvm_arm_rmi_populate { __u64 base; __u64 size; __u64 source_uaddr; __u32
    /// flags; __u32 reserved; }`: size, then the offsets of `base`, `size`, `source_uaddr`,
    /// `flags`, `reserved`.
    pub const RMI: (usize, [usize; 5]) = (32, [0, 8, 16, 24, 28]);
    /// `KVM_ARM_RMI_POPULATE_FLAGS_MEASURE (1 << 0)`.
    pub const FLAGS_MEASURE: u32 = 1;
    /// `ARM64_SYS_REG(3, 0, 0, 5, 0)` (`ID_AA64DFR0_EL1`): `KVM_REG_ARM64` (0x6000 << 48) |
    /// `KVM_REG_SIZE_U64` (3 << 52) | `KVM_REG_ARM64_SYSREG` (0x13 << 16) | op0 3 << 14 |
    /// CRm 5 << 3.
    pub const REG_ID_AA64DFR0_EL1: u64 = 0x6030_0000_0013_c028;
    /// `KVM_REG_ARM64_SVE_VLS`: `KVM_REG_ARM64` | `KVM_REG_ARM64_SVE` (0x15 << 16) |
    /// `KVM_REG_SIZE_U512` (6 << 52) | 0xffff.
    pub const REG_SVE_VLS: u64 = 0x6060_0000_0015_ffff;
    /// `ID_AA64DFR0_EL1` fields (Arm ARM): BRPs bits 15:12, WRPs 23:20 (CTX_CMPs 31:28 is outside the writable mask).
    pub const DFR0_BRPS: u32 = 12;
    /// WRPs.
    pub const DFR0_WRPS: u32 = 20;
    /// `KVM_ARM_VCPU_SVE 4`.
    pub const VCPU_SVE: i32 = 4;
}

/// An argument struct's fields as the model read them from its bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Args {
    base: u64,
    size: u64,
    source_uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// The bytes of `v` as the kernel's `copy_from_user` reads them; `n` must be its size.
///
/// # Safety
///
/// `T` must have no padding (the argument structs of the series are integers and byte arrays
/// laid out without any).
unsafe fn bytes_of<T: Copy>(v: &T, n: usize) -> Vec<u8> {
    assert_eq!(
        std::mem::size_of::<T>(),
        n,
        "not the size the series gives it"
    );
    // SAFETY: `v` is a live `T` of `n` bytes (asserted), all initialised: no padding (the
    // caller's promise).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), n) }.to_vec()
}

/// `u64` at `at` of `b`, little-endian.
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `u32` at `at` of `b`, little-endian.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

const PAGE: u64 = 4096;

/// A fault injected into the next populate call (popped one per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A signal becomes pending after this many granules of the call (`kvm_gmem_populate`'s
    /// `signal_pending` check, `-EINTR`).
    Signal {
        /// Granules done before it.
        after: u64,
    },
}

/// The model's state of the realm (`enum realm_state`, v14 14/44).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelRealm {
    /// `REALM_STATE_NONE`: not created.
    None,
    /// `REALM_STATE_NEW`: created, may be populated.
    New,
    /// `REALM_STATE_ACTIVE`.
    Active,
    /// `REALM_STATE_DEAD`: activation failed part-way.
    Dead,
}

/// One populated granule in the model's ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granule {
    /// Whether DATA_CREATE measured it.
    pub measured: bool,
    /// The hash of its content (with the realm's algorithm), when the model read it.
    pub content: Option<[u8; 64]>,
}

/// One memslot of the model VM (`KVM_SET_USER_MEMORY_REGION2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelMemslot {
    /// Slot id.
    pub slot: u16,
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// Whether it is backed by guest_memfd (`KVM_MEM_GUEST_MEMFD`).
    pub gmem: bool,
}

/// SVE state of a model vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSve {
    /// `sve_max_vl` in quadwords (starts at the host's maximum).
    pub max_vq: u16,
    /// `KVM_ARM_VCPU_FINALIZE(SVE)` done.
    pub finalized: bool,
}

/// A model vCPU (created and `KVM_ARM_VCPU_INIT`ed by the VMM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelVcpu {
    /// The id given to `KVM_CREATE_VCPU` (`vcpu->vcpu_id`): id 0's REC is the runnable one.
    pub id: u32,
    /// Initialised with `KVM_ARM_VCPU_PSCI_0_2` (`kvm_create_rec` requires it).
    pub psci_0_2: bool,
    /// Initialised with `KVM_ARM_VCPU_SVE`.
    pub sve: Option<ModelSve>,
    /// The PC the VMM set (REC parameter).
    pub pc: u64,
    /// x0-x7 as the VMM set them (REC parameters).
    pub gprs: [u64; 8],
}

impl ModelVcpu {
    /// A vCPU with id `id` initialised with PSCI 0.2, with SVE at `host_max_vq` when `sve`.
    pub fn new(id: u32, sve: bool, host_max_vq: u16) -> Self {
        ModelVcpu {
            id,
            psci_0_2: true,
            sve: sve.then_some(ModelSve {
                max_vq: host_max_vq,
                finalized: false,
            }),
            pc: 0,
            gprs: [0; 8],
        }
    }
}

/// One ioctl the model received, with the exact bytes of its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The ioctl request number (`KVM_ARM_RMI_POPULATE_*`, `KVM_SET_MEMORY_ATTRIBUTES`,
    /// `KVM_{GET,SET}_ONE_REG`, `KVM_ARM_VCPU_FINALIZE`).
    pub request: u64,
    /// The vCPU of a vCPU ioctl.
    pub vcpu: Option<usize>,
    /// The argument's bytes as sent (for `KVM_*_ONE_REG`: the register id, then the value
    /// written, in place of the `addr` pointer).
    pub bytes: Vec<u8>,
    /// The errno returned, or `None` on success.
    pub errno: Option<i32>,
}

/// The order `kvm_for_each_memslot` walks memslots (6.18 `include/linux/kvm_host.h`:
/// `hash_for_each` over `DECLARE_HASHTABLE(id_hash, 7)` keyed by slot id, each bucket a list
/// with the latest `hash_add` first): bucket `hash_32(id, 7)` ascending, then the reverse of
/// insertion. Returns indices into `slots` (given in insertion order).
pub fn memslot_walk_order(slots: &[ModelMemslot]) -> Vec<usize> {
    let bucket = |id: u16| (u32::from(id).wrapping_mul(0x61C8_8647)) >> (32 - 7);
    let mut idx: Vec<usize> = (0..slots.len()).collect();
    idx.sort_by_key(|&i| (bucket(slots[i].slot), std::cmp::Reverse(i)));
    idx
}

/// The kernel model. Construct it with the realm parameters the VM type and (v9) the
/// configuration give; the rest of what the kernel would find (memslots, vCPUs, host
/// registers) is in public fields.
#[derive(Debug)]
pub struct KernelModel {
    /// The version it speaks.
    pub version: UapiVersion,
    /// The capability number it answers to.
    pub cap: u32,
    /// The RIM rules of the RMM behind it (the firmware build's, not the series'):
    /// [`RmmVersion::V1_0`] measures `RMI_RTT_INIT_RIPAS`, [`RmmVersion::V2_0`] does not.
    /// Starts at the first of [`UapiVersion::rmm_rules`]; set it before the realm is created.
    pub rmm: RmmVersion,
    /// The VM has an in-kernel vGIC, created and initialised (`irqchip_in_kernel`,
    /// `vgic_initialized`). Starts `true`; `kvm_activate_realm` refuses the first run without.
    pub vgic: bool,
    /// The VM was created with the realm machine type.
    pub is_realm: bool,
    /// The realm's parameters: only `ipa_bits` (the VM type) is taken from here, the rest from
    /// the vCPUs when the realm is created.
    pub realm: RealmParams,
    /// The realm's state.
    pub state: ModelRealm,
    /// Memslots, in the order they were added.
    pub memslots: Vec<ModelMemslot>,
    /// Ranges with `KVM_MEMORY_ATTRIBUTE_PRIVATE`, `start -> end`, merged.
    pub private: BTreeMap<u64, u64>,
    /// vCPUs in creation order.
    pub vcpus: Vec<ModelVcpu>,
    /// The host's `ID_AA64DFR0_EL1` as the RMM limits it (the most a realm may have).
    pub host_dfr0: u64,
    /// The VM's `ID_AA64DFR0_EL1` (starts at `host_dfr0`).
    pub dfr0: u64,
    /// The longest SVE vector the host (and RMM) offers, in quadwords; every shorter one too.
    pub host_max_vq: u16,
    /// `kvm_lpa2_is_enabled()` on the host.
    pub host_lpa2: bool,
    /// Faults for the next populate calls.
    pub faults: VecDeque<Fault>,
    /// Granules whose delegation the RMM refuses, with the RMI status it returns.
    pub failing: BTreeMap<u64, u64>,
    /// Every populated granule by address.
    pub ledger: BTreeMap<u64, Granule>,
    /// DATA_CREATE order: every granule address in the order it was populated.
    pub order: Vec<u64>,
    /// RIPAS RAM initialised at the first run, `start -> end`.
    pub ripas: BTreeMap<u64, u64>,
    /// The RECs created at the first run, in vCPU creation order.
    pub recs: Vec<RecParams>,
    /// The parameters REALM_CREATE received.
    pub created: Option<RealmParams>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// RMM failures seen: `(granule address, RMI status)`.
    pub rmm_errors: Vec<(u64, u64)>,
    /// The realm's hash algorithm: the kernel never sets one, so SHA-256.
    pub hash: HashAlgo,
    rmm_state: Option<Rmm>,
    read_sources: bool,
}

/// `ID_AA64DFR0_EL1` of the model host: DebugVer 6 (v8.0), 6 breakpoints, 4 watchpoints, 2
/// context-aware breakpoints (fields hold count - 1).
pub const MODEL_HOST_DFR0: u64 = 0x6 | (5 << 12) | (3 << 20) | (1 << 28);

/// The other writable fields of `ID_AA64DFR0_EL1` (mainline sys_regs.c, 6.12-7.3): `DebugVer`
/// (3:0), `PMUVer` (11:8), `DoubleLock` (39:36). The model leaves their values to the VMM.
const DFR0_OTHER_WRITABLE: u64 = 0xf | (0xf << 8) | (0xf << 36);

/// Adds `[start, end)` to `ranges` (`start -> end`, merged: touching ranges are joined).
fn merge_range(ranges: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let (mut s, mut e) = (start, end);
    let touching: Vec<(u64, u64)> = ranges
        .range(..=end)
        .filter(|(a, b)| **b >= start && **a <= end)
        .map(|(a, b)| (*a, *b))
        .collect();
    for (a, b) in touching {
        ranges.remove(&a);
        s = s.min(a);
        e = e.max(b);
    }
    ranges.insert(s, e);
}

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

/// The kernel's `get_start_level` (v12 `arch/arm64/kvm/rmi.c`): `4 - ((ia_bits - 8) / 9)`,
/// the stage-2 starting level with up to 16 concatenated tables.
fn start_level(ipa_bits: u8) -> i8 {
    4 - ((i32::from(ipa_bits).max(8) - 8) / 9) as i8
}

/// The kernel's `find_map_level` (v12 `rmi.c`): from level 3 up while `start` is aligned to
/// the next level's entry and that entry ends at or below `end`, not above the start level.
fn find_map_level(start_level: i8, start: u64, end: u64) -> i8 {
    let mut level = 3;
    while level > start_level {
        let size = rmm::map_size(level - 1);
        if !start.is_multiple_of(size) || start.saturating_add(size) > end {
            break;
        }
        level -= 1;
    }
    level
}

/// The kernel's `realm_create_rtt_levels` (v12 `rmi.c`): `RMI_RTT_CREATE` at each level below
/// `level` down to `max_level`; an RTT that exists (`RMI_ERROR_RTT` at `level - 1`) is fine.
fn create_rtt_levels(r: &mut Rmm, ipa: u64, level: i8, max_level: i8) -> Result<(), i32> {
    for l in level + 1..=max_level {
        match r.rtt_create(ipa, l) {
            Ok(()) => {}
            Err(e) if e == l - 1 => {}
            Err(_) => return Err(libc::ENXIO),
        }
    }
    Ok(())
}

impl KernelModel {
    /// A model of `version` for a realm VM with `realm`'s parameters, no memslots, no vCPUs,
    /// nothing private.
    pub fn new(version: UapiVersion, realm: RealmParams) -> Self {
        KernelModel {
            version,
            cap: version.series_cap(),
            rmm: version.rmm_rules()[0],
            vgic: true,
            is_realm: true,
            hash: HashAlgo::Sha256,
            realm,
            state: ModelRealm::None,
            memslots: Vec::new(),
            private: BTreeMap::new(),
            vcpus: Vec::new(),
            host_dfr0: MODEL_HOST_DFR0,
            dfr0: MODEL_HOST_DFR0,
            host_max_vq: 4,
            host_lpa2: false,
            faults: VecDeque::new(),
            failing: BTreeMap::new(),
            ledger: BTreeMap::new(),
            order: Vec::new(),
            ripas: BTreeMap::new(),
            recs: Vec::new(),
            created: None,
            calls: Vec::new(),
            rmm_errors: Vec::new(),
            rmm_state: None,
            read_sources: false,
        }
    }

    /// Adds a memslot (`gmem`: backed by guest_memfd).
    pub fn add_memslot(&mut self, slot: u16, gpa: u64, size: u64, gmem: bool) {
        self.memslots.push(ModelMemslot {
            slot,
            gpa,
            size,
            gmem,
        });
    }

    /// Adds `n` vCPUs, with SVE when `sve`, numbered on from the vCPUs there are (the first
    /// call's first vCPU has id 0).
    pub fn add_vcpus(&mut self, n: usize, sve: bool) {
        for _ in 0..n {
            let id = self.vcpus.len() as u32;
            self.vcpus.push(ModelVcpu::new(id, sve, self.host_max_vq));
        }
    }

    /// Adds one vCPU created with id `id` (`KVM_CREATE_VCPU` takes any id below the limit, in
    /// any order), with SVE when `sve`.
    pub fn add_vcpu_with_id(&mut self, id: u32, sve: bool) {
        self.vcpus.push(ModelVcpu::new(id, sve, self.host_max_vq));
    }

    /// Lets the model read the source of `KVM_ARM_RMI_POPULATE` calls to hash their content.
    ///
    /// # Safety
    ///
    /// Every `source_uaddr` given to this model's [`CcaIoctl::rmi_populate`] from now on must
    /// point at `size` readable bytes that stay valid and unmodified for the call, as
    /// [`CcaBackend`](crate::CcaBackend) guarantees.
    pub unsafe fn read_sources(&mut self) {
        self.read_sources = true;
    }

    /// The RIM's bytes (32 for SHA-256) as the model's own RMM computed it so far (`rmm`
    /// module: TF-RMM's structures written out and hashed with `sha2`, no code shared with
    /// [`crate::measure`]), or `None` before the realm exists or once a measured granule's
    /// content was not read ([`KernelModel::read_sources`]).
    pub fn rim(&self) -> Option<Vec<u8>> {
        self.rmm_state.as_ref().and_then(Rmm::rim)
    }

    /// Bytes populated in all.
    pub fn populated_bytes(&self) -> u64 {
        self.ledger.len() as u64 * PAGE
    }

    /// Bytes populated inside `[gpa, gpa + len)`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        self.ledger.range(gpa..gpa.saturating_add(len)).count() as u64 * PAGE
    }

    /// Whether the page at `gpa` is private.
    pub fn is_private(&self, gpa: u64) -> bool {
        self.private
            .range(..=gpa)
            .next_back()
            .is_some_and(|(_, end)| gpa < *end)
    }

    fn mark_private(&mut self, start: u64, end: u64) {
        merge_range(&mut self.private, start, end);
    }

    fn memslot_of(&self, gpa: u64) -> Option<ModelMemslot> {
        self.memslots
            .iter()
            .copied()
            .find(|m| gpa >= m.gpa && gpa - m.gpa < m.size)
    }

    /// `realm_create_rd` (v14 28/44; 39/44 debug counts from `ID_AA64DFR0_EL1`; 41/44
    /// `realm_init_sve_param`). v12/v13 create the realm at the same point (v12 22/46, v13
    /// 26/48). `Err(errno)` leaves the realm uncreated.
    fn create(&mut self) -> Result<(), i32> {
        // realm_init_sve_param: with SVE, every vCPU finalized, all with one length.
        let mut vl = None;
        if self.vcpus.iter().any(|v| v.sve.is_some()) {
            for v in &self.vcpus {
                let Some(sve) = v.sve.filter(|s| s.finalized) else {
                    return Err(libc::EINVAL);
                };
                if vl.is_some_and(|l| l != sve.max_vq) {
                    return Err(libc::EINVAL);
                }
                vl = Some(sve.max_vq);
            }
        }
        let realm = {
            RealmParams {
                // params->hash_algo is never set: the zeroed page says SHA-256.
                hash: HashAlgo::Sha256,
                ipa_bits: self.realm.ipa_bits,
                // v13/v14 set RMI_REALM_PARAM_FLAG_LPA2 from kvm_lpa2_is_enabled(); v12's
                // realm_create_rd (22/46) has no LPA2 flag.
                lpa2: self.version != UapiVersion::V12 && self.host_lpa2,
                num_bps: (field(self.dfr0, DFR0_BRPS) + 1) as u8,
                num_wps: (field(self.dfr0, DFR0_WRPS) + 1) as u8,
                sve_vl: vl.map_or(0, |q| q * 128),
                pmu_counters: None,
                rpv: [0; 64],
            }
        };
        // REALM_CREATE as the kernel fills `struct realm_params` (v14 28/44, 39/44, 41/44;
        // v12 22/46, 39/46, 42/46): s2sz the VM's IPA size, num_bps/num_wps the raw BRPs/WRPs
        // fields of ID_AA64DFR0_EL1, sve_vl `sve_vq_from_vl(max_vl) - 1` with the SVE flag
        // (bit 1), LPA2 flag (bit 0) on v13/v14 from kvm_lpa2_is_enabled(), algorithm never
        // set (0, SHA-256), PMU none. The RTTs start at the kernel's `get_start_level`. The
        // RIM rules are the firmware build's (`self.rmm`).
        let mut flags0 = 0;
        if realm.lpa2 {
            flags0 |= 1;
        }
        if realm.sve_vl != 0 {
            flags0 |= 1 << 1;
        }
        let params = RealmCreate {
            flags0,
            s2sz: u32::from(self.realm.ipa_bits),
            sve_vl: vl.map_or(0, |q| u32::from(q) - 1),
            num_bps: field(self.dfr0, DFR0_BRPS) as u32,
            num_wps: field(self.dfr0, DFR0_WRPS) as u32,
            pmu_num_ctrs: 0,
            algorithm: rmm::HASH_SHA_256,
        };
        self.rmm_state = Some(Rmm::realm_create(
            &params,
            start_level(self.realm.ipa_bits),
            self.rmm == RmmVersion::V1_0,
        ));
        self.created = Some(realm);
        self.state = ModelRealm::New;
        Ok(())
    }

    /// `realm_ensure_created` (v12 22/46, v13 26/48, v14 28/44).
    fn ensure_created(&mut self) -> Result<(), i32> {
        match self.state {
            ModelRealm::None => self.create(),
            ModelRealm::New => Ok(()),
            ModelRealm::Dead => Err(libc::ENXIO),
            ModelRealm::Active => Err(libc::EBUSY),
        }
    }

    /// The first `KVM_RUN` of any vCPU: `kvm_arch_vcpu_run_pid_change` ->
    /// `kvm_activate_realm` (v14 18/44, 19/44, 27/44; v12 11/46, 12/46, 21/46; v13 25/48).
    pub fn first_run(&mut self) -> Result<(), i32> {
        if self.state >= ModelRealm::Active {
            return Ok(());
        }
        if !self.vgic && self.version != UapiVersion::V12 {
            // The later kvm_activate_realm: irqchip_in_kernel (-EOPNOTSUPP) before the realm is
            // created or marked dead.
            return Err(libc::EOPNOTSUPP);
        }
        self.ensure_created()?;
        // "Mark state as dead in case we fail".
        self.state = ModelRealm::Dead;
        if !self.vgic {
            // v12 11/46: checked after marking the realm dead, which stays dead for good.
            return Err(libc::EOPNOTSUPP);
        }
        // kvm_create_rec for each vCPU (kvm_for_each_vcpu: creation order): PSCI 0.2
        // required; runnable only the vCPU whose id is 0.
        for v in self.vcpus.clone().iter() {
            if !v.psci_0_2 {
                return Err(libc::EINVAL);
            }
            let rec = RecParams {
                pc: v.pc,
                gprs: v.gprs,
                runnable: v.id == 0,
            };
            if let Some(r) = self.rmm_state.as_mut() {
                // RMI_REC_CREATE: flags (runnable bit 0), pc, gprs from the vCPU.
                r.rec_create(u64::from(rec.runnable), rec.pc, &rec.gprs);
            }
            self.recs.push(rec);
        }
        // set_ripas_of_protected_regions: every guest_memfd memslot, walk order.
        for i in memslot_walk_order(&self.memslots) {
            let m = self.memslots[i];
            if !m.gmem {
                continue;
            }
            // realm_init_ipa_state -> ripas_change(RIPAS_INIT) over the whole memslot: the
            // RMM measures (under 1.0 rules) each RTT entry it initialises.
            self.ripas_change_init(m.gpa, m.gpa + m.size)?;
            let mut at = m.gpa;
            let end = m.gpa + m.size;
            while at < end {
                // The unpopulated run from `at`.
                let stop = self.ledger.range(at..end).next().map_or(end, |(g, _)| *g);
                if stop > at {
                    self.ripas.insert(at, stop);
                }
                // Skip the populated run.
                let mut next = stop;
                while next < end && self.ledger.contains_key(&next) {
                    next += PAGE;
                }
                at = next;
            }
        }
        self.state = ModelRealm::Active;
        Ok(())
    }

    /// `ripas_change(.., RIPAS_INIT)` (v12 21/46, `arch/arm64/kvm/rmi.c`) over `[ipa, end)`:
    /// `RMI_RTT_INIT_RIPAS` from `ipa`; on success on from where the RMM stopped; on
    /// `RMI_ERROR_RTT` at a level above `find_map_level` the missing RTTs are created and the
    /// call retried; at or below it ("FIXME: Ugly hack to skip regions which are already
    /// RIPAS_RAM", a populated granule) the kernel steps one page on.
    fn ripas_change_init(&mut self, mut ipa: u64, end: u64) -> Result<(), i32> {
        let Some(r) = self.rmm_state.as_mut() else {
            return Err(libc::ENXIO);
        };
        let start = start_level(self.realm.ipa_bits);
        while ipa < end {
            match r.rtt_init_ripas(ipa, end) {
                Ok(next) => ipa = next,
                Err(err_level) => {
                    let level = find_map_level(start, ipa, end);
                    if err_level >= level {
                        ipa += PAGE;
                    } else {
                        create_rtt_levels(r, ipa, err_level, level)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A realm vCPU's `RSI_IPA_STATE_SET` of `[base, top)` to RAM (`ram`) or EMPTY, as
    /// `KVM_RUN` hands it to the VMM (v12 16/46 `rec_exit_ripas_change`, `rmi-exit.c`): outside
    /// the protected half (`kvm_realm_is_private_address` of `base` and `top - 1`) `-EINVAL`
    /// (the REC is told to reject); otherwise `KVM_RUN` fails with `-EFAULT` and `kvm_run` holds
    /// `KVM_EXIT_MEMORY_FAULT` with `(flags, gpa, size)` = (`KVM_MEMORY_EXIT_FLAG_PRIVATE`
    /// (`1 << 3`) when `ram`, else 0; `base`; `top - base`), returned here. Only an active
    /// realm runs (`kvm_rec_pre_enter`: `-EINVAL` otherwise).
    pub fn ripas_change_exit(&self, base: u64, top: u64, ram: bool) -> Result<[u64; 3], i32> {
        if self.state != ModelRealm::Active {
            return Err(libc::EINVAL);
        }
        let protected = 1u64 << (self.realm.ipa_bits - 1);
        if top <= base || base >= protected || top > protected {
            return Err(libc::EINVAL);
        }
        Ok([if ram { 1 << 3 } else { 0 }, base, top - base])
    }

    /// DATA_CREATE of granules from `gpa` (`kvm_gmem_populate`'s loop over one memslot), with
    /// `content(i)` giving granule `i`'s bytes. Returns granules done and the error that
    /// stopped it (errno).
    fn data_create(
        &mut self,
        gpa: u64,
        granules: u64,
        measured: bool,
        gmem: bool,
        signal_after: Option<u64>,
        content: &dyn Fn(u64) -> Option<Vec<u8>>,
    ) -> (u64, Option<i32>) {
        for i in 0..granules {
            if signal_after == Some(i) {
                return (i, Some(libc::EINTR));
            }
            let at = gpa + i * PAGE;
            if self.ledger.contains_key(&at) {
                // v12 (6.19-rc1 base): kvm_gmem_populate's "already prepared" check, -EEXIST.
                // v13/v14 (7.0/7.1 base, no such check): realm_data_map_init (v14 26/44)
                // delegates the granule again, rmi_delegate_page fails, -ENXIO.
                let errno = if self.version.populate_in_out() {
                    libc::ENXIO
                } else {
                    libc::EEXIST
                };
                return (i, Some(errno));
            }
            if gmem && !self.is_private(at) {
                return (i, Some(libc::EINVAL));
            }
            if let Some(status) = self.failing.get(&at) {
                self.rmm_errors.push((at, *status));
                return (i, Some(libc::ENXIO));
            }
            let bytes = content(i);
            let mut h = None;
            if let Some(r) = self.rmm_state.as_mut() {
                h = bytes.as_deref().map(|b| {
                    let mut out = [0u8; 64];
                    let d = r.content_hash(b);
                    out[..d.len()].copy_from_slice(&d);
                    out
                });
                // RMI_DATA_CREATE; on RMI_ERROR_RTT the kernel creates the missing RTTs down
                // to level 3 and retries (v12 20/46 `realm_create_protected_data_granule`).
                if let Err(level) = r.data_create(at, measured, bytes.as_deref()) {
                    if create_rtt_levels(r, at, level, 3).is_err()
                        || r.data_create(at, measured, bytes.as_deref()).is_err()
                    {
                        return (i, Some(libc::ENXIO));
                    }
                }
            }
            self.ledger.insert(
                at,
                Granule {
                    measured,
                    content: h,
                },
            );
            self.order.push(at);
        }
        (granules, None)
    }

    fn rmi(&mut self, request: PopulateRequest, user: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        // arm64 kvm_arch_vm_ioctl: an unknown request is -EINVAL (the numbers written out here).
        let known = match self.version {
            UapiVersion::V12 => RMI_POPULATE_V12,
            UapiVersion::V13 | UapiVersion::V14 => RMI_POPULATE_V13,
        };
        if request.number() != known {
            return Err(libc::EINVAL);
        }
        // SAFETY: `KvmArmRmiPopulate` is 8 + 8 + 8 + 4 + 4 bytes of integers, no padding.
        let b = unsafe { bytes_of(&*user, RMI.0) };
        let [base, size, source_uaddr, flags, reserved] = RMI.1;
        let mut args = Args {
            base: u64_at(&b, base),
            size: u64_at(&b, size),
            source_uaddr: u64_at(&b, source_uaddr),
            flags: u32_at(&b, flags),
            reserved: u32_at(&b, reserved),
        };
        let r = self.rmi_args(&mut args);
        // The kernel copies the struct back (v13 on: advanced), at the same offsets.
        let mut back = b;
        back[base..base + 8].copy_from_slice(&args.base.to_le_bytes());
        back[size..size + 8].copy_from_slice(&args.size.to_le_bytes());
        back[source_uaddr..source_uaddr + 8].copy_from_slice(&args.source_uaddr.to_le_bytes());
        // SAFETY: `user` is an exclusively borrowed `KvmArmRmiPopulate` of `RMI.0` bytes
        // (`bytes_of` asserted the size), and any bytes are a valid one (plain integers).
        unsafe {
            std::ptr::copy_nonoverlapping(
                back.as_ptr(),
                (user as *mut KvmArmRmiPopulate).cast::<u8>(),
                RMI.0,
            )
        };
        r
    }

    /// `kvm_arm_rmi_populate` on the struct as the kernel read it.
    fn rmi_args(&mut self, args: &mut Args) -> Result<i32, i32> {
        if !self.is_realm {
            return Err(if self.version == UapiVersion::V12 {
                libc::EPERM
            } else {
                libc::ENXIO
            });
        }
        let in_out = self.version.populate_in_out();
        let end = args.base.wrapping_add(args.size);
        if args.reserved != 0
            || args.flags & !FLAGS_MEASURE != 0
            || !args.base.is_multiple_of(PAGE)
            || !end.is_multiple_of(PAGE)
            || (in_out && !args.source_uaddr.is_multiple_of(PAGE))
        {
            return Err(libc::EINVAL);
        }
        self.ensure_created()?;
        // kvm_gmem_populate: npages <= 0 (as a long) is -EINVAL.
        let npages = args.size / PAGE;
        if npages == 0 || npages > i64::MAX as u64 {
            return Err(libc::EINVAL);
        }
        let slot = match self.memslot_of(args.base) {
            Some(m) if m.gmem => m,
            _ => return Err(libc::EINVAL),
        };
        let npages = npages.min((slot.gpa + slot.size - args.base) / PAGE);
        let signal_after = self.faults.pop_front().map(|Fault::Signal { after }| after);
        let src = args.source_uaddr;
        let read = self.read_sources && src.is_multiple_of(PAGE);
        let content = move |i: u64| -> Option<Vec<u8>> {
            if !read {
                // v12 pins the page holding an unaligned source and copies all of it; the
                // model does not read outside the caller's buffer, so it hashes nothing then.
                return None;
            }
            // SAFETY: `read_sources` was enabled through its unsafe setter, whose caller
            // guaranteed that `source_uaddr` points at `size` readable bytes for this call;
            // `i < npages <= size / 4096`.
            let s =
                unsafe { std::slice::from_raw_parts((src + i * PAGE) as *const u8, PAGE as usize) };
            Some(s.to_vec())
        };
        let measured = args.flags & FLAGS_MEASURE != 0;
        let (done, error) =
            self.data_create(args.base, npages, measured, true, signal_after, &content);
        if done == 0 {
            if let Some(e) = error {
                return Err(e);
            }
        }
        let bytes = done * PAGE;
        if in_out {
            args.base += bytes;
            args.size -= bytes;
            args.source_uaddr += bytes;
            Ok(0)
        } else {
            // `return ret * PAGE_SIZE;` from an int function.
            Ok(bytes as i32)
        }
    }

    fn set_attributes(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        // kvm_supported_mem_attributes: PRIVATE only for VMs with private memory
        // (kvm_arch_has_private_mem = is_realm, v14 25/44).
        if !self.is_realm {
            return Err(libc::EINVAL);
        }
        let end = gpa.checked_add(len).ok_or(libc::EINVAL)?;
        if len == 0 || !gpa.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(libc::EINVAL);
        }
        self.mark_private(gpa, end);
        Ok(())
    }

    fn get_reg(&self, vcpu: usize, id: u64, value: &mut [u8]) -> Result<(), i32> {
        let v = self.vcpus.get(vcpu).ok_or(libc::ENODEV)?;
        match id {
            REG_ID_AA64DFR0_EL1 if value.len() == 8 => {
                value.copy_from_slice(&self.dfr0.to_le_bytes());
                Ok(())
            }
            REG_SVE_VLS if value.len() == 64 => {
                let sve = v.sve.ok_or(libc::ENOENT)?;
                value.fill(0);
                for q in 1..=usize::from(sve.max_vq) {
                    value[(q - 1) / 8] |= 1 << ((q - 1) % 8);
                }
                Ok(())
            }
            _ => Err(libc::ENOENT),
        }
    }

    fn set_reg(&mut self, vcpu: usize, id: u64, value: &[u8]) -> Result<(), i32> {
        let created = self.state != ModelRealm::None;
        let v = *self.vcpus.get(vcpu).ok_or(libc::ENODEV)?;
        match id {
            REG_ID_AA64DFR0_EL1 => {
                let b: [u8; 8] = value.try_into().map_err(|_| libc::EINVAL)?;
                let val = u64::from_le_bytes(b);
                if created {
                    // set_id_reg: immutable once the realm descriptor exists.
                    return if val == self.dfr0 {
                        Ok(())
                    } else {
                        Err(libc::EBUSY)
                    };
                }
                // Mainline sys_regs.c (6.12-7.3): BRPs and CTX_CMPs are outside the writable
                // mask, so arm64_check_features refuses any change of them (-E2BIG, reported
                // as -EINVAL), as it does any other field outside the mask; WRPs may be lowered.
                let writable = (0xf << DFR0_WRPS) | DFR0_OTHER_WRITABLE;
                if (val & !writable) != (self.host_dfr0 & !writable) {
                    return Err(libc::EINVAL);
                }
                let wps = field(val, DFR0_WRPS);
                // v14 39/44 set_id_aa64dfr0_el1: a WRPs field of 0 is -EINVAL; above the host's
                // is not a subset (arm64_check_features).
                if wps == 0 || wps > field(self.host_dfr0, DFR0_WRPS) {
                    return Err(libc::EINVAL);
                }
                self.dfr0 = val;
                Ok(())
            }
            REG_SVE_VLS => {
                let mut sve = v.sve.ok_or(libc::ENOENT)?;
                if sve.finalized || created {
                    return Err(libc::EPERM);
                }
                if value.len() != 64 {
                    return Err(libc::EINVAL);
                }
                let present = |q: usize| value[(q - 1) / 8] & (1 << ((q - 1) % 8)) != 0;
                let max = (1..=512).rev().find(|q| present(*q)).unwrap_or(0);
                if max == 0 || max > usize::from(self.host_max_vq) {
                    return Err(libc::EINVAL);
                }
                // The set must be exactly the host's lengths up to its maximum.
                if (1..=max).any(|q| !present(q)) {
                    return Err(libc::EINVAL);
                }
                sve.max_vq = max as u16;
                self.vcpus[vcpu].sve = Some(sve);
                Ok(())
            }
            // validate_realm_set_reg: other registers are refused for realms (core registers,
            // which it allows, are not modelled here).
            _ => Err(libc::EINVAL),
        }
    }

    fn finalize(&mut self, vcpu: usize, feature: i32) -> Result<(), i32> {
        let v = self.vcpus.get_mut(vcpu).ok_or(libc::ENODEV)?;
        if feature != VCPU_SVE {
            return Err(libc::EINVAL);
        }
        let sve = v.sve.as_mut().ok_or(libc::EINVAL)?;
        if sve.finalized {
            return Err(libc::EPERM);
        }
        sve.finalized = true;
        Ok(())
    }

    fn record(&mut self, request: u64, vcpu: Option<usize>, bytes: Vec<u8>, errno: Option<i32>) {
        self.calls.push(Call {
            request,
            vcpu,
            bytes,
            errno,
        });
    }
}

fn reg_bytes(id: u64, value: &[u8]) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    b.extend_from_slice(value);
    b
}

impl CcaIoctl for KernelModel {
    fn rmi_populate(
        &mut self,
        request: PopulateRequest,
        args: &mut KvmArmRmiPopulate,
    ) -> Result<i32, i32> {
        let bytes = args.to_bytes().to_vec();
        let r = self.rmi(request, args);
        self.record(request.number(), None, bytes, r.err());
        r
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        let mut bytes = Vec::with_capacity(32);
        for v in [gpa, len, uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let r = self.set_attributes(gpa, len);
        self.record(uapi::KVM_SET_MEMORY_ATTRIBUTES, None, bytes, r.err());
        r
    }

    fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    fn in_kernel_vgic(&self) -> Option<bool> {
        Some(self.vgic)
    }

    fn vcpu_get_one_reg(&mut self, vcpu: usize, id: u64, value: &mut [u8]) -> Result<(), i32> {
        let r = self.get_reg(vcpu, id, value);
        self.record(
            uapi::KVM_GET_ONE_REG,
            Some(vcpu),
            id.to_le_bytes().to_vec(),
            r.err(),
        );
        r
    }

    fn vcpu_set_one_reg(&mut self, vcpu: usize, id: u64, value: &[u8]) -> Result<(), i32> {
        let r = self.set_reg(vcpu, id, value);
        self.record(
            uapi::KVM_SET_ONE_REG,
            Some(vcpu),
            reg_bytes(id, value),
            r.err(),
        );
        r
    }

    fn vcpu_finalize(&mut self, vcpu: usize, feature: i32) -> Result<(), i32> {
        let r = self.finalize(vcpu, feature);
        self.record(
            uapi::KVM_ARM_VCPU_FINALIZE,
            Some(vcpu),
            feature.to_le_bytes().to_vec(),
            r.err(),
        );
        r
    }
}
