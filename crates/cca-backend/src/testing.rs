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
//!   end; page by page: a pending signal is `-EINTR`, a page already populated `-EEXIST`, a page
//!   not `KVM_MEMORY_ATTRIBUTE_PRIVATE` `-EINVAL`, a granule the RMM refuses to delegate
//!   `-ENXIO` (`realm_create_protected_data_page` v12, `realm_data_map_init` v14); it returns
//!   the pages done if any, the error only when none were;
//! - v13/v14 advance `base`, `size`, `source_uaddr` by the pages done and return 0; v12 returns
//!   the bytes done as an `int`.
//!
//! `KVM_SET_MEMORY_ATTRIBUTES` (6.18 `kvm_vm_ioctl_set_mem_attributes`; arm64 offers
//! `PRIVATE` for realms from v12 19/46, v13 23/48, v14 25/44): `-EINVAL` on a VM without private
//! memory (v9 or not a realm), for an empty, wrapping or unaligned range.
//!
//! vCPU registers: `ID_AA64DFR0_EL1` (v14 39/44 `set_id_aa64dfr0_el1`, `set_id_reg`): BRPs or
//! WRPs 0, or CTX_CMPs above BRPs, or any field above the host's: `-EINVAL`; once the realm
//! exists a different value is `-EBUSY`. `KVM_REG_ARM64_SVE_VLS` (6.18 `get_sve_vls` /
//! `set_sve_vls`, v14 41/44): no SVE `-ENOENT`, finalized or realm created `-EPERM`, a set that
//! is not the host's lengths up to its maximum `-EINVAL`. `KVM_ARM_VCPU_FINALIZE` (6.18
//! `kvm_arm_vcpu_finalize`): no SVE or another feature `-EINVAL`, twice `-EPERM`.
//!
//! First `KVM_RUN` ([`KernelModel::first_run`], v14 18/44 and 19/44 `kvm_activate_realm`,
//! 27/44 `set_ripas_of_protected_regions`; v12 21/46, v13 25/48): creates the realm if needed,
//! marks it dead in case of failure, creates a REC per vCPU in creation order (`-EINVAL` for a
//! vCPU without PSCI 0.2; only vCPU 0 runnable), initialises RIPAS RAM over every guest_memfd
//! memslot in `kvm_for_each_memslot` order (the slot-id hash table, [`memslot_walk_order`]),
//! then activates.
//!
//! v9 (`KVM_ENABLE_CAP` sub-commands): CONFIG_REALM / CREATE_REALM / INIT_RIPAS_REALM /
//! POPULATE_REALM (from the shared alias; on a failure the granules before it stay populated
//! and nothing says so) / ACTIVATE_REALM. Its errnos were not re-read in the v9 patches and are
//! the previous model's.
//!
//! What the model cannot follow (firmware internals): the RMM is reduced to "this granule's
//! delegation fails" ([`KernelModel::failing`]); v13/v14 `realm_data_map_init` returns the
//! status of a failing `RMI_RTT_DATA_MAP_INIT` as a positive value that `kvm_gmem_populate`
//! passes up as a page count, which is not modelled; how the RMM's `RTT_INIT_RIPAS` treats
//! populated entries is taken as "skip them" (the model initialises, and for RMM 1.0 measures,
//! the unpopulated parts of each memslot). RIM: REALM_CREATE, DATA in populate order, then at
//! the first run the runnable REC and (v12, RMM 1.0) the RIPAS ranges; v13/v14 target RMM 2.0,
//! whose `RMI_RTT_INIT_RIPAS` is not measured (the digest follows [`UapiVersion::rmm`]). After a
//! whole launch it equals [`measure_with_options`](crate::measure_with_options) of the same plan
//! with [`MeasureOptions::for_series`](crate::MeasureOptions::for_series) (tested per version).

use std::collections::{BTreeMap, VecDeque};

use crate::ioctl::{CcaIoctl, RmeArg, UapiVersion};
use crate::measure::{hash, Measurement, Rim, RimDigest};
use crate::params::{HashAlgo, RealmParams, RecParams};
use crate::uapi::{self, KvmArmRmiPopulate};
use series::*;

/// The series' numbers and layouts, written out again here from its uAPI headers
/// (arch/arm64/include/uapi/asm/kvm.h of v9 and v12-v14, include/uapi/linux/kvm.h,
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
    /// `KVM_ARM_RMI_POPULATE_FLAGS_MEASURE (1 << 0)`, and v9's
    /// `KVM_ARM_RME_POPULATE_FLAGS_MEASURE (1 << 0)`.
    pub const FLAGS_MEASURE: u32 = 1;
    /// v9 `KVM_CAP_ARM_RME` sub-commands (`args[0]`).
    pub const CONFIG_REALM: u64 = 0;
    /// `KVM_CAP_ARM_RME_CREATE_REALM`.
    pub const CREATE_REALM: u64 = 1;
    /// `KVM_CAP_ARM_RME_INIT_RIPAS_REALM`.
    pub const INIT_RIPAS_REALM: u64 = 2;
    /// `KVM_CAP_ARM_RME_POPULATE_REALM`.
    pub const POPULATE_REALM: u64 = 3;
    /// `KVM_CAP_ARM_RME_ACTIVATE_REALM`.
    pub const ACTIVATE_REALM: u64 = 4;
    /// `struct arm_rme_config { __u32 cfg; union { __u8 rpv[64]; __u32 hash_algo; __u8
    /// reserved[256]; }; }`: 260 bytes, the union at 4.
    pub const CONFIG: (usize, usize) = (260, 4);
    /// `ARM_RME_CONFIG_RPV 0`, `ARM_RME_CONFIG_HASH_ALGO 1`.
    pub const CONFIG_RPV: u32 = 0;
    /// `ARM_RME_CONFIG_HASH_ALGO`.
    pub const CONFIG_HASH_ALGO: u32 = 1;
    /// `ARM_RME_CONFIG_HASH_ALGO_SHA256 0`.
    pub const HASH_ALGO_SHA256: u32 = 0;
    /// `ARM_RME_CONFIG_HASH_ALGO_SHA512 1`.
    pub const HASH_ALGO_SHA512: u32 = 1;
    /// `struct arm_rme_populate_realm { __u64 base; __u64 size; __u32 flags; __u32
    /// reserved[3]; }` and `struct arm_rme_init_ripas { __u64 base; __u64 size; __u64
    /// reserved[2]; }`: 32 bytes each, `base` at 0, `size` at 8, then `flags` at 16 and
    /// reserved from 20 (populate) or reserved from 16 (init ripas).
    pub const V9_ARG: usize = 32;
    /// `ARM64_SYS_REG(3, 0, 0, 5, 0)` (`ID_AA64DFR0_EL1`): `KVM_REG_ARM64` (0x6000 << 48) |
    /// `KVM_REG_SIZE_U64` (3 << 52) | `KVM_REG_ARM64_SYSREG` (0x13 << 16) | op0 3 << 14 |
    /// CRm 5 << 3.
    pub const REG_ID_AA64DFR0_EL1: u64 = 0x6030_0000_0013_c028;
    /// `KVM_REG_ARM64_SVE_VLS`: `KVM_REG_ARM64` | `KVM_REG_ARM64_SVE` (0x15 << 16) |
    /// `KVM_REG_SIZE_U512` (6 << 52) | 0xffff.
    pub const REG_SVE_VLS: u64 = 0x6060_0000_0015_ffff;
    /// `ID_AA64DFR0_EL1` fields (Arm ARM): BRPs bits 15:12, WRPs 23:20, CTX_CMPs 31:28.
    pub const DFR0_BRPS: u32 = 12;
    /// WRPs.
    pub const DFR0_WRPS: u32 = 20;
    /// CTX_CMPs.
    pub const DFR0_CTX_CMPS: u32 = 28;
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
    pub content: Option<Measurement>,
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
    /// A vCPU initialised with PSCI 0.2, with SVE at `host_max_vq` when `sve`.
    pub fn new(sve: bool, host_max_vq: u16) -> Self {
        ModelVcpu {
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
    /// The ioctl request number (`KVM_ARM_RMI_POPULATE_*`, `KVM_ENABLE_CAP`,
    /// `KVM_SET_MEMORY_ATTRIBUTES`, `KVM_{GET,SET}_ONE_REG`, `KVM_ARM_VCPU_FINALIZE`).
    pub request: u64,
    /// The vCPU of a vCPU ioctl.
    pub vcpu: Option<usize>,
    /// For `KVM_ENABLE_CAP`: `(cap, args[0])`.
    pub enable_cap: Option<(u32, u64)>,
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
    /// The capability number it answers to (v9 `KVM_ENABLE_CAP`).
    pub cap: u32,
    /// The VM was created with the realm machine type.
    pub is_realm: bool,
    /// The realm's parameters: for v9 what the RMM gets; from v12 on only `ipa_bits` (the VM
    /// type) is taken from here, the rest from the vCPUs when the realm is created.
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
    /// RIPAS RAM initialised, `start -> end` (v9 explicitly, v12+ at the first run).
    pub ripas: BTreeMap<u64, u64>,
    /// The RECs created at the first run (v12+), in order.
    pub recs: Vec<RecParams>,
    /// The parameters REALM_CREATE received.
    pub created: Option<RealmParams>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// RMM failures seen: `(granule address, RMI status)`.
    pub rmm_errors: Vec<(u64, u64)>,
    /// The shared alias of guest memory (v9 populates from it), by granule.
    pub shared: BTreeMap<u64, Vec<u8>>,
    /// The realm's hash algorithm as configured (v9) or given by the kernel (SHA-256).
    pub hash: HashAlgo,
    /// The realm personalization value as configured.
    pub rpv: [u8; 64],
    rim: Option<RimDigest>,
    read_sources: bool,
}

/// `ID_AA64DFR0_EL1` of the model host: DebugVer 6 (v8.0), 6 breakpoints, 4 watchpoints, 2
/// context-aware breakpoints (fields hold count - 1).
pub const MODEL_HOST_DFR0: u64 = 0x6 | (5 << 12) | (3 << 20) | (1 << 28);

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

impl KernelModel {
    /// A model of `version` for a realm VM with `realm`'s parameters, no memslots, no vCPUs,
    /// nothing private.
    pub fn new(version: UapiVersion, realm: RealmParams) -> Self {
        KernelModel {
            version,
            cap: version.series_cap(),
            is_realm: true,
            hash: if version == UapiVersion::EnableCap {
                realm.hash
            } else {
                HashAlgo::Sha256
            },
            rpv: [0; 64],
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
            shared: BTreeMap::new(),
            rim: None,
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

    /// Adds `n` vCPUs, with SVE when `sve`.
    pub fn add_vcpus(&mut self, n: usize, sve: bool) {
        for _ in 0..n {
            self.vcpus.push(ModelVcpu::new(sve, self.host_max_vq));
        }
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

    /// The RIM as the modelled RMM computed it so far, or `None` before the realm exists.
    pub fn rim(&self) -> Option<Rim> {
        self.rim.as_ref().map(RimDigest::current)
    }

    /// v9 only: models RMI_REC_CREATE of a REC (done through vCPU ioctls the model does not
    /// cover for v9). From v12 on the RECs come from [`KernelModel::first_run`].
    pub fn create_rec(&mut self, rec: &RecParams) {
        if let Some(r) = self.rim.as_mut() {
            r.rec(rec);
        }
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
        let (mut s, mut e) = (start, end);
        let touching: Vec<(u64, u64)> = self
            .private
            .range(..=end)
            .filter(|(a, b)| **b >= start && **a <= end)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in touching {
            self.private.remove(&a);
            s = s.min(a);
            e = e.max(b);
        }
        self.private.insert(s, e);
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
        let realm = if self.version == UapiVersion::EnableCap {
            let mut r = self.realm.clone();
            r.hash = self.hash;
            r
        } else {
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
        // The RIM under the rules of the RMM the series targets (v9/v12 RMM 1.0, v13/v14 RMM
        // 2.0: `UapiVersion::rmm`).
        self.rim = RimDigest::with_rmm(&realm, self.version.rmm()).ok();
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
    /// `kvm_activate_realm` (v14 18/44, 19/44, 27/44; v12 21/46; v13 25/48). v9 activates
    /// with ACTIVATE_REALM instead; this does nothing for it.
    pub fn first_run(&mut self) -> Result<(), i32> {
        if self.version == UapiVersion::EnableCap || self.state >= ModelRealm::Active {
            return Ok(());
        }
        self.ensure_created()?;
        // "Mark state as dead in case we fail".
        self.state = ModelRealm::Dead;
        // kvm_create_rec for each vCPU: PSCI 0.2 required; vCPU 0 runnable.
        for (i, v) in self.vcpus.clone().iter().enumerate() {
            if !v.psci_0_2 {
                return Err(libc::EINVAL);
            }
            let rec = RecParams {
                pc: v.pc,
                gprs: v.gprs,
                runnable: i == 0,
            };
            if let Some(r) = self.rim.as_mut() {
                r.rec(&rec);
            }
            self.recs.push(rec);
        }
        // set_ripas_of_protected_regions: every guest_memfd memslot, walk order.
        for i in memslot_walk_order(&self.memslots) {
            let m = self.memslots[i];
            if !m.gmem {
                continue;
            }
            let mut at = m.gpa;
            let end = m.gpa + m.size;
            while at < end {
                // The unpopulated run from `at`.
                let stop = self.ledger.range(at..end).next().map_or(end, |(g, _)| *g);
                if stop > at {
                    // RMI_RTT_INIT_RIPAS per RTT entry: measured under RMM 1.0 (v12), not under
                    // RMM 2.0 (v13/v14), which the digest's RMM version decides.
                    if let Some(r) = self.rim.as_mut() {
                        r.ripas_range(at, stop).map_err(|_| libc::ENXIO)?;
                    }
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
                return (i, Some(libc::EEXIST));
            }
            if gmem && !self.is_private(at) {
                return (i, Some(libc::EINVAL));
            }
            if let Some(status) = self.failing.get(&at) {
                self.rmm_errors.push((at, *status));
                return (i, Some(libc::ENXIO));
            }
            let bytes = content(i);
            let h = bytes.as_deref().map(|b| hash(self.hash, b));
            if let Some(r) = self.rim.as_mut() {
                match (measured, h.as_ref()) {
                    (true, Some(h)) => r.data_granule_hashed(at, Some(h)),
                    (true, None) => {}
                    (false, _) => r.data_granule_hashed(at, None),
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

    fn rmi(&mut self, request: u64, user: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        // arm64 kvm_arch_vm_ioctl: an unknown request is -EINVAL.
        let known = match self.version {
            UapiVersion::EnableCap => None,
            UapiVersion::V12 => Some(RMI_POPULATE_V12),
            UapiVersion::V13 | UapiVersion::V14 => Some(RMI_POPULATE_V13),
        };
        if known != Some(request) {
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

    fn legacy(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32> {
        if self.version != UapiVersion::EnableCap || cap != self.cap {
            return Err(libc::EINVAL);
        }
        match (sub, arg) {
            (CONFIG_REALM, RmeArg::Config(c)) => {
                if self.state != ModelRealm::None {
                    return Err(libc::EBUSY);
                }
                // SAFETY: `ArmRmeConfig` is a `u32` and 256 bytes, no padding.
                let b = unsafe { bytes_of(&*c, CONFIG.0) };
                let data = &b[CONFIG.1..];
                match u32_at(&b, 0) {
                    CONFIG_RPV => self.rpv.copy_from_slice(&data[..64]),
                    CONFIG_HASH_ALGO => {
                        self.hash = match u32_at(data, 0) {
                            HASH_ALGO_SHA256 => HashAlgo::Sha256,
                            HASH_ALGO_SHA512 => HashAlgo::Sha512,
                            _ => return Err(libc::EINVAL),
                        }
                    }
                    _ => return Err(libc::EINVAL),
                }
                Ok(())
            }
            (CREATE_REALM, RmeArg::None) => {
                if self.state != ModelRealm::None {
                    return Err(libc::EEXIST);
                }
                self.create()
            }
            (INIT_RIPAS_REALM, RmeArg::InitRipas(r)) => {
                if self.state != ModelRealm::New {
                    return Err(libc::EPERM);
                }
                // SAFETY: `ArmRmeInitRipas` is four `u64`s, no padding.
                let b = unsafe { bytes_of(&*r, V9_ARG) };
                let r = Args {
                    base: u64_at(&b, 0),
                    size: u64_at(&b, 8),
                    ..Args::default()
                };
                let end = r.base.checked_add(r.size).ok_or(libc::EINVAL)?;
                if !r.base.is_multiple_of(PAGE) || !r.size.is_multiple_of(PAGE) || r.size == 0 {
                    return Err(libc::EINVAL);
                }
                if end > self.realm.protected_limit() {
                    return Err(libc::EINVAL);
                }
                // RMI_RTT_INIT_RIPAS needs entries with no data yet.
                if self.ledger.range(r.base..end).next().is_some() {
                    return Err(libc::EPERM);
                }
                if let Some(rim) = self.rim.as_mut() {
                    rim.ripas_range(r.base, end).map_err(|_| libc::EINVAL)?;
                }
                self.ripas.insert(r.base, end);
                Ok(())
            }
            (POPULATE_REALM, RmeArg::Populate(p)) => {
                if self.state != ModelRealm::New {
                    return Err(libc::EPERM);
                }
                // SAFETY: `ArmRmePopulateRealm` is 8 + 8 + 4 + 3 x 4 bytes of integers, no
                // padding.
                let b = unsafe { bytes_of(&*p, V9_ARG) };
                let p = Args {
                    base: u64_at(&b, 0),
                    size: u64_at(&b, 8),
                    flags: u32_at(&b, 16),
                    ..Args::default()
                };
                let end = p.base.checked_add(p.size).ok_or(libc::EINVAL)?;
                if !p.base.is_multiple_of(PAGE)
                    || !p.size.is_multiple_of(PAGE)
                    || p.flags & !FLAGS_MEASURE != 0
                    || end > self.realm.protected_limit()
                {
                    return Err(libc::EINVAL);
                }
                let signal_after = self.faults.pop_front().map(|Fault::Signal { after }| after);
                let measured = p.flags & FLAGS_MEASURE != 0;
                let shared = self.shared.clone();
                let base = p.base;
                let content = move |i: u64| -> Option<Vec<u8>> {
                    Some(
                        shared
                            .get(&(base + i * PAGE))
                            .cloned()
                            .unwrap_or_else(|| vec![0; PAGE as usize]),
                    )
                };
                let (done, error) = self.data_create(
                    p.base,
                    p.size / PAGE,
                    measured,
                    false,
                    signal_after,
                    &content,
                );
                match error {
                    // The granules before the failure stay populated; the caller is not told.
                    Some(e) => Err(e),
                    None if done * PAGE == p.size => Ok(()),
                    None => Err(libc::EIO),
                }
            }
            (ACTIVATE_REALM, RmeArg::None) => {
                if self.state != ModelRealm::New {
                    return Err(libc::EPERM);
                }
                self.state = ModelRealm::Active;
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }

    fn set_attributes(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        // kvm_supported_mem_attributes: PRIVATE only for VMs with private memory
        // (kvm_arch_has_private_mem = is_realm, v14 25/44); none before v12.
        if !self.is_realm || !self.version.gmem_populate() {
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
                let bps = field(val, DFR0_BRPS);
                let wps = field(val, DFR0_WRPS);
                let ctx = field(val, DFR0_CTX_CMPS);
                if bps == 0 || wps == 0 || ctx > bps {
                    return Err(libc::EINVAL);
                }
                // arm64_check_features: no field above what the RMM/host offers.
                for shift in [DFR0_BRPS, DFR0_WRPS, DFR0_CTX_CMPS] {
                    if field(val, shift) > field(self.host_dfr0, shift) {
                        return Err(libc::EINVAL);
                    }
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
            enable_cap: None,
            bytes,
            errno,
        });
    }
}

fn arg_bytes(arg: &RmeArg<'_>) -> Vec<u8> {
    match arg {
        RmeArg::None => Vec::new(),
        RmeArg::Config(c) => {
            let mut v = c.cfg.to_le_bytes().to_vec();
            v.extend_from_slice(&c.data);
            v
        }
        RmeArg::InitRipas(r) => [r.base, r.size, r.reserved[0], r.reserved[1]]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        RmeArg::Populate(p) => {
            let mut v = Vec::with_capacity(32);
            v.extend_from_slice(&p.base.to_le_bytes());
            v.extend_from_slice(&p.size.to_le_bytes());
            v.extend_from_slice(&p.flags.to_le_bytes());
            for r in p.reserved {
                v.extend_from_slice(&r.to_le_bytes());
            }
            v
        }
    }
}

fn reg_bytes(id: u64, value: &[u8]) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    b.extend_from_slice(value);
    b
}

impl CcaIoctl for KernelModel {
    fn rmi_populate(&mut self, request: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        let bytes = args.to_bytes().to_vec();
        let r = self.rmi(request, args);
        self.record(request, None, bytes, r.err());
        r
    }

    fn rme_enable_cap(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32> {
        let bytes = arg_bytes(&arg);
        let r = self.legacy(cap, sub, arg);
        self.calls.push(Call {
            request: uapi::KVM_ENABLE_CAP,
            vcpu: None,
            enable_cap: Some((cap, sub)),
            bytes,
            errno: r.err(),
        });
        r
    }

    fn write_shared_alias(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), i32> {
        if !gpa.is_multiple_of(PAGE) || !(bytes.len() as u64).is_multiple_of(PAGE) {
            return Err(libc::EINVAL);
        }
        for (i, page) in bytes.chunks(PAGE as usize).enumerate() {
            self.shared.insert(gpa + i as u64 * PAGE, page.to_vec());
        }
        Ok(())
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
