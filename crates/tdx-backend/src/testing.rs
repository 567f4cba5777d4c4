//! An in-process model of Linux 6.18.2's and 7.3.4's TDX ioctls, for testing VMM code without
//! TDX hardware.
//!
//! The rules below are 6.18.2's; [`TdxModel::on`]`(`[`Kernel::V7_3`]`)` follows 7.3.4 where it
//! differs (see [`Kernel`]): `KVM_TDX_INIT_MEM_REGION` refuses a `source_addr` of 0 (`EINVAL`),
//! pins the source before looking at the page (`virt/kvm/guest_memfd.c: kvm_gmem_populate`),
//! has no preparation check (a page mapped already is `EIO`, `arch/x86/kvm/mmu/mmu.c:
//! kvm_tdp_mmu_map_private_pfn`), retries a busy PAGE.ADD inside the kernel, kills the VM on a
//! failed PAGE.ADD or MR.EXTEND (`tdx_mem_page_add`, `tdx_gmem_post_populate`: `TDX_BUG_ON`),
//! keeps nothing after a signal, never pre-maps; `KVM_CREATE_VCPU` checks an id taken first
//! (`virt/kvm/kvm_main.c: kvm_vm_ioctl_create_vcpu`).
//!
//! [`TdxModel`] implements [`TdxIoctl`] by following the kernel's code, function by function;
//! each rule below names the function it comes from (`arch/x86/kvm/vmx/tdx.c` unless another
//! file is named). It returns no errno the kernel cannot return for a command, and it keeps the
//! kernel's unrecoverable states:
//!
//! - VM commands (`tdx_vm_ioctl`): `hw_error` set on input is `EINVAL`; an unknown id is
//!   `EINVAL`; `KVM_TDX_CAPABILITIES` (`tdx_get_capabilities`) answers `E2BIG` without writing
//!   the needed count back; `KVM_TDX_INIT_VM` (`tdx_td_init`, `setup_tdparams`) is `EINVAL`
//!   for a second init, `flags`, reserved bytes or `cpuid.padding`, `E2BIG` for more than 256
//!   CPUID entries, `EBUSY` once vCPUs exist ([`TdxModel::vcpus_created`]), `EINVAL` for
//!   attributes or XFAM outside the supported ones, a CPUID without leaf 0x80000008 whose
//!   EAX bits 23:16 (GPAW) is 48, or 52 on a host with 5-level EPT
//!   (`setup_tdparams_eptp_controls`), an entry that is no configurable leaf of the module or
//!   leaf 7.0 with TSX or WAITPKG (`setup_tdparams_cpuids`); then (`__tdx_td_init`) `EAGAIN`
//!   (no entropy: the TD stays uninitialized) or `EINVAL` with the module status in
//!   `hw_error`. The GPAW picks the shared bit (47 or 51) `INIT_MEM_REGION` checks.
//!   `KVM_TDX_FINALIZE_VM` (`tdx_td_finalize`) is `EINVAL` while a page is pre-mapped but not
//!   added, `EBUSY` with the status when TDH.MR.FINALIZE is busy, and `EIO` with the status
//!   when it fails otherwise (`KVM_BUG_ON`: the VM is dead, and `virt/kvm/kvm_main.c:
//!   kvm_vm_ioctl` / `kvm_vcpu_ioctl` answer `EIO` to everything after).
//!   `KVM_TDX_CAPABILITIES` is `EIO` when the module reports no attributes or XFAM
//!   (`init_kvm_tdx_caps`).
//! - vCPUs and what their launch needs: `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`
//!   (`arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap`) is `EINVAL` for more than
//!   `MAX_NR_RESERVED_IOAPIC_PINS` pins and `EEXIST` once an irqchip is in the kernel or vCPUs
//!   exist; `KVM_CREATE_VCPU` (`virt/kvm/kvm_main.c: kvm_vm_ioctl_create_vcpu`) is `EINVAL`
//!   past [`TdxModel::max_vcpus`] and `EEXIST` for an id taken, and on a TD (`tdx_vcpu_create`)
//!   `EIO` unless the TD is initialized and not yet finalized, `EINVAL` without a split
//!   irqchip; `KVM_SET_CPUID2` keeps the vCPU's CPUID (`E2BIG` past 256 entries:
//!   `arch/x86/kvm/cpuid.c: kvm_vcpu_ioctl_set_cpuid2`); `KVM_TDX_INIT_VCPU` (`tdx_vcpu_init`)
//!   is `EINVAL` with flags, for a vCPU already initialized, and when
//!   `arch/x86/kvm/lapic.c: kvm_apic_set_base` refuses x2APIC mode because the vCPU's CPUID
//!   lacks CPUID.1:ECX.x2APIC; after finalization every vCPU command is `EINVAL`
//!   (`tdx_vcpu_ioctl`). A vCPU command that names no vCPU goes to the lowest id.
//! - vCPU commands (`tdx_vcpu_ioctl`) never write `hw_error` back.
//! - `KVM_TDX_INIT_MEM_REGION` (`tdx_vcpu_init_mem_region`) checks the vCPU (initialized), the TD state, the
//!   flags and the range (aligned, non-empty, not wrapping, no shared bit:
//!   `vt_is_tdx_private_gpa`), then goes page by page, writing the advanced region back
//!   whatever the outcome: a pending signal is `EINTR`; `kvm_gmem_populate`
//!   (`virt/kvm/guest_memfd.c`) refuses a page in no guest_memfd memslot (`EINVAL`: a memslot's
//!   end stops the call there), a page already prepared (`EEXIST`) and a page not private
//!   (`EINVAL`); `tdx_gmem_post_populate` pins the source (`EFAULT`), maps the page
//!   (`kvm_tdp_map_page`, which prepares the guest_memfd folio and counts the page pre-mapped),
//!   then TDH.MEM.PAGE.ADD (`EBUSY`/`EIO`: the page stays prepared and pre-mapped) and, with
//!   `KVM_TDX_MEASURE_MEMORY_REGION`, 16 TDH.MR.EXTEND (`EIO`: the page is added, partly
//!   measured). A prepared page is never populated again (`EEXIST`), and a pre-mapped one
//!   blocks finalization: as in the kernel, neither state is left.
//! - On a VM that is not a TD ([`TdxModel::ordinary_vm`]): on an Intel host
//!   `vt_mem_enc_ioctl` answers `ENOTTY` and `vt_vcpu_mem_enc_ioctl` `EINVAL`
//!   (`arch/x86/kvm/vmx/main.c`); on an AMD host with SEV, `KVM_MEMORY_ENCRYPT_OP` is
//!   `sev_mem_enc_ioctl` (`arch/x86/kvm/svm/sev.c`): command 0 is `KVM_SEV_INIT`, which
//!   succeeds and makes the VM an SEV VM ([`TdxModel::sev_initialized`]), and the vCPU form does
//!   not exist (`ENOTTY`, `arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl`).
//!
//! Where it cannot follow the kernel: the TDX module is a ledger ([`TdxModel::added`]) and an
//! MRTD ([`Mrtd`]), not the module's metadata; the configurable CPUID leaves are a count; the
//! CPUID `KVM_TDX_GET_CPUID` reads back is the one given to `KVM_TDX_INIT_VM` (what
//! `setup_tdparams_cpuids` copied into TD_PARAMS is [`TdxModel::td_cpuid`]); the APIC is one
//! flag (x2APIC in the vCPU's CPUID), not `kvm_apic_set_base`'s reserved-bit arithmetic; failures that
//! need other threads or the host (a busy operand, a dry RNG, a poisoned page) are injected
//! through [`TdxModel::script`] and [`TdxModel::vm_faults`]; the zap path that undoes a
//! pre-mapped page when it is converted back to shared (`tdx_sept_zap_private_spte`) is not
//! modelled (nothing converts back to shared here).
//!
//! Every call is recorded with its exact arguments in [`TdxModel::calls`].
//!
//! The model shares no number or layout with the code it checks: the command ids, flags,
//! capability numbers, limits and payload layouts are written out again below (module
//! `linux`) from the Linux 6.18.2 headers rather than taken from [`crate::uapi`] and
//! `crate::ioctl`, and `struct kvm_tdx_cmd` / `struct kvm_tdx_init_mem_region` are read (and
//! written back) as the bytes the kernel copies, at the header's offsets. A wrong number or a
//! misordered field in the crate is then a refusal here, as it would be from the kernel.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;

use gmem::{GuestMemfd, MemoryState};

use crate::backend::TdParams;
use crate::ioctl::{SeriesKernel, TdxIoctl};
use crate::mrtd::EXTEND_CHUNK;
use crate::uapi::{kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region};
use crate::{Kernel, Mrtd, CHUNKS_PER_PAGE, PAGE_SIZE};
use linux::*;

/// Linux 6.18.2's numbers, written out here (see the module documentation).
mod linux {
    // arch/x86/include/uapi/asm/kvm.h: `enum kvm_tdx_cmd_id`.
    /// `KVM_TDX_CAPABILITIES`.
    pub const KVM_TDX_CAPABILITIES: u32 = 0;
    /// `KVM_TDX_INIT_VM`.
    pub const KVM_TDX_INIT_VM: u32 = 1;
    /// `KVM_TDX_INIT_VCPU`.
    pub const KVM_TDX_INIT_VCPU: u32 = 2;
    /// `KVM_TDX_INIT_MEM_REGION`.
    pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
    /// `KVM_TDX_FINALIZE_VM`.
    pub const KVM_TDX_FINALIZE_VM: u32 = 4;
    /// `KVM_TDX_GET_CPUID`.
    pub const KVM_TDX_GET_CPUID: u32 = 5;
    /// `#define KVM_TDX_MEASURE_MEMORY_REGION _BITULL(0)`.
    pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1;
    /// `KVM_X86_DEFAULT_VM 0`.
    pub const KVM_X86_DEFAULT_VM: u32 = 0;
    /// `KVM_X86_TDX_VM 5`.
    pub const KVM_X86_TDX_VM: u32 = 5;
    /// `KVM_SYNC_X86_REGS (1 << 0) | KVM_SYNC_X86_SREGS (1 << 1) | KVM_SYNC_X86_EVENTS (1 << 2)`.
    pub const KVM_SYNC_X86_VALID_FIELDS: u32 = 7;
    /// `X86_FEATURE_X2APIC`: CPUID.1:ECX bit 21 (arch/x86/include/asm/cpufeatures.h).
    pub const CPUID_1_ECX_X2APIC: u32 = 1 << 21;
    /// `MAX_NR_RESERVED_IOAPIC_PINS` is `KVM_MAX_IRQ_ROUTES`, 4096 (arch/x86/kvm/ioapic.h).
    pub const MAX_NR_RESERVED_IOAPIC_PINS: u64 = 4096;
    // include/uapi/linux/kvm.h.
    /// `KVM_CAP_SYNC_REGS 74`.
    pub const KVM_CAP_SYNC_REGS: u32 = 74;
    /// `KVM_CAP_VM_TYPES 235`.
    pub const KVM_CAP_VM_TYPES: u32 = 235;
    // Kernel-internal limits.
    /// `KVM_MAX_CPUID_ENTRIES 256` (arch/x86/include/asm/kvm_host.h).
    pub const KVM_MAX_CPUID_ENTRIES: u32 = 256;
    /// `cpuid_config_leaves[128]` (arch/x86/include/asm/tdx_global_metadata.h).
    pub const TDX_MAX_CPUID_CONFIG: u32 = 128;
    // Layouts (arch/x86/include/uapi/asm/kvm.h), little-endian.
    /// `struct kvm_tdx_capabilities`: six `__u64` then `__u64 reserved[250]` before its
    /// `struct kvm_cpuid2 cpuid`: 48 + 2000 bytes.
    pub const CAPS_HEADER: usize = 2048;
    /// `struct kvm_tdx_init_vm`: `attributes`, `xfam`, `mrconfigid[6]`, `mrowner[6]`,
    /// `mrownerconfig[6]`, `reserved[12]` (all `__u64`) before its `struct kvm_cpuid2`:
    /// 8 * (2 + 18 + 12) bytes.
    pub const INIT_VM_HEADER: usize = 256;
    /// `struct kvm_cpuid2`: `__u32 nent; __u32 padding;` before the entries.
    pub const CPUID2_HEADER: usize = 8;
    /// `struct kvm_cpuid_entry2`: `function, index, flags, eax, ebx, ecx, edx, padding[3]`,
    /// all `__u32`.
    pub const CPUID_ENTRY: usize = 40;
    /// `struct kvm_tdx_cmd { __u32 id; __u32 flags; __u64 data; __u64 hw_error; }`: 24
    /// bytes; offsets of `id`, `flags`, `data`, `hw_error`.
    pub const CMD: (usize, [usize; 4]) = (24, [0, 4, 8, 16]);
    /// `struct kvm_tdx_init_mem_region { __u64 source_addr; __u64 gpa; __u64 nr_pages; }`: 24
    /// bytes; offsets of `source_addr`, `gpa`, `nr_pages`.
    pub const REGION: (usize, [usize; 3]) = (24, [0, 8, 16]);
}

/// The bytes of `v` as the kernel's `copy_from_user` reads them.
fn bytes_of<T: UapiStruct>(v: &T) -> Vec<u8> {
    assert_eq!(std::mem::size_of::<T>(), T::SIZE);
    // SAFETY: `T` is one of the two uAPI structs below, all integers with no padding (4 + 4 + 8
    // + 8 and 3 x 8 bytes; `UapiStruct::SIZE` equals `size_of::<T>()`, asserted), so its
    // `SIZE` bytes are initialised and readable for the borrow's lifetime.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), T::SIZE) }.to_vec()
}

/// Writes `b` over `v` as the kernel's `copy_to_user` does.
fn write_bytes<T: UapiStruct>(v: &mut T, b: &[u8]) {
    assert_eq!((std::mem::size_of::<T>(), b.len()), (T::SIZE, T::SIZE));
    // SAFETY: `v` is an exclusively borrowed `T` of `SIZE` bytes (asserted), and any bytes are
    // a valid `T` (plain integers).
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (v as *mut T).cast::<u8>(), T::SIZE) }
}

/// The two structs the model reads as bytes.
trait UapiStruct: Copy {
    /// The size the kernel's header gives it.
    const SIZE: usize;
}
impl UapiStruct for kvm_tdx_cmd {
    const SIZE: usize = CMD.0;
}
impl UapiStruct for kvm_tdx_init_mem_region {
    const SIZE: usize = REGION.0;
}

/// `cmd` as the kernel reads it: each field from the header's offset.
fn read_cmd(cmd: &kvm_tdx_cmd) -> kvm_tdx_cmd {
    let b = bytes_of(cmd);
    let [id, flags, data, hw_error] = CMD.1;
    kvm_tdx_cmd {
        id: read_u32(&b, id).unwrap_or(0),
        flags: read_u32(&b, flags).unwrap_or(0),
        data: read_u64(&b, data).unwrap_or(0),
        hw_error: read_u64(&b, hw_error).unwrap_or(0),
    }
}

/// Writes the kernel's view `k` of the command back into `cmd`, at the header's offsets.
fn write_cmd(cmd: &mut kvm_tdx_cmd, k: &kvm_tdx_cmd) {
    let mut b = vec![0u8; CMD.0];
    let [id, flags, data, hw_error] = CMD.1;
    write_u32(&mut b, id, k.id);
    write_u32(&mut b, flags, k.flags);
    write_u64(&mut b, data, k.data);
    write_u64(&mut b, hw_error, k.hw_error);
    write_bytes(cmd, &b);
}

/// `region` as the kernel reads it.
fn read_region(region: &kvm_tdx_init_mem_region) -> kvm_tdx_init_mem_region {
    let b = bytes_of(region);
    let [source_addr, gpa, nr_pages] = REGION.1;
    kvm_tdx_init_mem_region {
        source_addr: read_u64(&b, source_addr).unwrap_or(0),
        gpa: read_u64(&b, gpa).unwrap_or(0),
        nr_pages: read_u64(&b, nr_pages).unwrap_or(0),
    }
}

/// Writes the kernel's view `k` of the region back into `region`.
fn write_region(region: &mut kvm_tdx_init_mem_region, k: &kvm_tdx_init_mem_region) {
    let mut b = vec![0u8; REGION.0];
    let [source_addr, gpa, nr_pages] = REGION.1;
    write_u64(&mut b, source_addr, k.source_addr);
    write_u64(&mut b, gpa, k.gpa);
    write_u64(&mut b, nr_pages, k.nr_pages);
    write_bytes(region, &b);
}

/// The shared bit of a TD's GPAs with 4-level EPT (`TDX_SHARED_BIT_PWL_4`, bit 47): a GPA with
/// it set is not private (`vt_is_tdx_private_gpa`).
pub const SHARED_BIT: u64 = 1 << 47;

/// What happens during one `KVM_TDX_INIT_MEM_REGION` call, at page `after_pages` of it (the
/// pages before are added). Every variant is a path of Linux 6.18's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Every page is added.
    Complete,
    /// A signal is pending at the top of the loop (`tdx_vcpu_init_mem_region`): `EINTR`,
    /// the page untouched.
    Signal {
        /// Pages added before.
        after_pages: u64,
    },
    /// `get_user_pages_fast` cannot pin the source page (`tdx_gmem_post_populate`): `EFAULT`,
    /// the page untouched.
    SourceFault {
        /// Pages added before.
        after_pages: u64,
    },
    /// A signal in `kvm_tdp_map_page` after a first fault attempt (`RET_PF_RETRY`) had already
    /// prepared the guest_memfd folio (`kvm_gmem_get_pfn`): `EINTR`, the page not mapped but
    /// prepared, so a retry of it gets `EEXIST`.
    SignalAfterFault {
        /// Pages added before.
        after_pages: u64,
    },
    /// TDH.MEM.PAGE.ADD returns `TDX_OPERAND_BUSY` (`tdx_gmem_post_populate`): `EBUSY`, the
    /// page prepared and pre-mapped, not added.
    PageAddBusy {
        /// Pages added before.
        after_pages: u64,
    },
    /// TDH.MEM.PAGE.ADD fails otherwise: `EIO`, the page prepared and pre-mapped, not added.
    PageAddFailed {
        /// Pages added before.
        after_pages: u64,
    },
    /// TDH.MR.EXTEND fails on 256-byte chunk `chunk` (0..16) of the page: `EIO`, the page
    /// added with the chunks before it measured. Only with `KVM_TDX_MEASURE_MEMORY_REGION`
    /// (without it there is no MR.EXTEND and the event does not fire).
    ExtendFailed {
        /// Pages added before.
        after_pages: u64,
        /// The chunk that fails.
        chunk: u8,
    },
}

/// A failure of a VM command that needs the TDX module's cooperation, for the next call of
/// the command it names ([`TdxModel::vm_faults`], first in first out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFault {
    /// `KVM_TDX_INIT_VM`: TDH.MNG.CREATE (or ADDCX) found no entropy (`TDX_RND_NO_ENTROPY`):
    /// `EAGAIN`, `hw_error` 0, the TD still uninitialized (`__tdx_td_init`).
    InitVmNoEntropy,
    /// `KVM_TDX_INIT_VM`: TDH.MNG.INIT refused an operand: `EINVAL` with this status
    /// (`TDX_OPERAND_INVALID` and the operand) in `hw_error` (`__tdx_td_init`).
    InitVmOperandInvalid(u64),
    /// `KVM_TDX_FINALIZE_VM`: TDH.MR.FINALIZE busy: `EBUSY` with this status in `hw_error`
    /// (`tdx_td_finalize`).
    FinalizeBusy(u64),
    /// `KVM_TDX_FINALIZE_VM`: TDH.MR.FINALIZE fails otherwise: `KVM_BUG_ON` marks the VM dead
    /// and the command is `EIO` with this status in `hw_error` (`tdx_td_finalize`); from then
    /// on every VM and vCPU ioctl is `EIO` (`virt/kvm/kvm_main.c: kvm_vm_ioctl`,
    /// `kvm_vcpu_ioctl`: `kvm->vm_dead`).
    FinalizeFailed(u64),
}

impl VmFault {
    fn command(self) -> u32 {
        match self {
            VmFault::InitVmNoEntropy | VmFault::InitVmOperandInvalid(_) => KVM_TDX_INIT_VM,
            VmFault::FinalizeBusy(_) | VmFault::FinalizeFailed(_) => KVM_TDX_FINALIZE_VM,
        }
    }
}

/// The host the VM runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// An Intel host with TDX enabled (`KVM_CAP_VM_TYPES`: default and TDX VMs).
    Tdx,
    /// An AMD host with SEV, SEV-ES and SNP (`KVM_CAP_VM_TYPES`: default, SEV, SEV-ES, SNP).
    AmdSev,
}

/// A memslot of the modelled VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memslot {
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
    /// Whether it is bound to a guest_memfd (`KVM_MEM_GUEST_MEMFD`).
    pub guest_memfd: bool,
}

/// Which fd a call was issued on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The VM fd.
    Vm,
    /// The vCPU fd.
    Vcpu,
}

/// One recorded call, with its arguments as passed (before the model wrote anything back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// VM or vCPU.
    pub scope: Scope,
    /// The command as passed. `data` is zeroed when it pointed at a payload or region
    /// (an address, different on every run).
    pub cmd: kvm_tdx_cmd,
    /// The payload bytes as passed.
    pub payload: Option<Vec<u8>>,
    /// The `kvm_tdx_init_mem_region` as passed, with `source_addr` made relative to the
    /// source slice (0 = its start).
    pub region: Option<kvm_tdx_init_mem_region>,
    /// The result.
    pub result: Result<(), i32>,
}

/// A page the model's TDX module added (TDH.MEM.PAGE.ADD succeeded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddedPage {
    /// Whether it was added with `KVM_TDX_MEASURE_MEMORY_REGION`.
    pub measured: bool,
    /// 256-byte chunks extended into MRTD (16 for a measured page, fewer after an
    /// [`Event::ExtendFailed`], 0 unmeasured).
    pub chunks_extended: u8,
    /// Index of the call (in [`TdxModel::calls`]) that added it.
    pub call: usize,
}

/// TD_PARAMS' `cpuid_values`, per configurable leaf: EAX..EDX, or `None` when no entry was
/// copied there.
type TdCpuidValues = Vec<Option<[u32; 4]>>;

/// A vCPU of the modelled TD (`struct vcpu_tdx`, as far as the launch goes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelVcpu {
    /// The CPUID given with `KVM_SET_CPUID2`, if any.
    pub cpuid: Option<Vec<kvm_cpuid_entry2>>,
    /// The initial RCX given to `KVM_TDX_INIT_VCPU` (`Some` once `VCPU_TD_STATE_INITIALIZED`).
    pub rcx: Option<u64>,
}

/// A launch ioctl other than `KVM_MEMORY_ENCRYPT_OP`, with its result
/// ([`TdxModel::x86_calls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum X86Call {
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` with this many pins.
    EnableSplitIrqchip(u64, Result<(), i32>),
    /// `KVM_CREATE_VCPU` with this id.
    CreateVcpu(u64, Result<(), i32>),
    /// `KVM_SET_CPUID2` on this vCPU with this many entries.
    SetCpuid(u64, usize, Result<(), i32>),
}

/// A guest_memfd given to the model ([`TdxModel::add_guest_memfd`]), bound at `gpa`.
#[derive(Debug)]
struct ModelGmem {
    gmem: GuestMemfd,
    /// The same file, for reading page contents as the TDX module does in place.
    file: File,
    gpa: u64,
    offset: u64,
    len: u64,
}

/// The kernel model. See the [module docs](self).
#[derive(Debug)]
pub struct TdxModel {
    /// The kernel release whose code the model follows where 6.18 and 7.3 differ
    /// ([`TdxModel::on`]); [`Kernel::V6_18`] by default.
    pub kernel: Kernel,
    /// The in-place conversion series the kernel carries ([`TdxModel::series_v8`]), if any.
    pub series: Option<SeriesKernel>,
    /// Pages a call added in place whose guest_memfd was written after their conversion (a
    /// real guest_memfd refuses host access to private pages), or whose content the model
    /// cannot know (no guest_memfd given covers them). Must stay empty.
    pub violations: Vec<String>,
    /// The host.
    pub host: Host,
    /// The type the VM was created with (`KVM_X86_TDX_VM` for a TD).
    pub vm_type: u32,
    /// What `KVM_TDX_CAPABILITIES` reports (attributes, XFAM) and how many CPUID entries.
    pub supported_attrs: u64,
    /// Supported XFAM.
    pub supported_xfam: u64,
    /// Number of configurable CPUID entries the module reports (at most
    /// `TDX_MAX_CPUID_CONFIG`: a 6.18 kernel does not load a module with more; larger values
    /// are taken as that).
    pub cpuid_entries: u32,
    /// Events for the next `KVM_TDX_INIT_MEM_REGION` calls (empty = [`Event::Complete`]).
    pub script: VecDeque<Event>,
    /// Failures for the next VM commands they name.
    pub vm_faults: VecDeque<VmFault>,
    /// The VM's memslots (by default one guest_memfd memslot over the first 4 GiB).
    pub memslots: Vec<Memslot>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// The pages the TDX module added, by GPA.
    pub added: BTreeMap<u64, AddedPage>,
    /// GPAs a call tried to populate again: guest_memfd had them prepared (6.18: `EEXIST`),
    /// or the TD had them mapped (7.3: `EIO`).
    pub twice: Vec<u64>,
    /// The `TdParams` the TD was initialized with.
    pub params: Option<TdParams>,
    /// The vCPUs created, by id.
    pub vcpus: BTreeMap<u64, ModelVcpu>,
    /// The most vCPUs the VM takes (`kvm->max_vcpus`; a TD's is capped at the host's present
    /// CPUs, `tdx_vm_init`): `KVM_CREATE_VCPU` past it is `EINVAL`. 8 by default.
    pub max_vcpus: u32,
    /// Whether `KVM_CAP_SPLIT_IRQCHIP` was enabled (`irqchip_split`).
    pub split_irqchip: bool,
    /// Every `KVM_ENABLE_CAP`, `KVM_CREATE_VCPU` and `KVM_SET_CPUID2`, in order.
    pub x86_calls: Vec<X86Call>,
    /// On an [`Host::AmdSev`] ordinary VM: a command 0 or 1 reached `sev_guest_init`.
    pub sev_initialized: bool,
    /// Whether vCPUs were created (`kvm->created_vcpus`): `KVM_TDX_INIT_VM` is then `EBUSY`
    /// (`setup_tdparams`). [`TdxIoctl::create_vcpu`] sets it; on a real TD a vCPU exists only
    /// after `KVM_TDX_INIT_VM` (`tdx_vcpu_create`), so a test sets it by hand to stand for a
    /// vCPU being created concurrently.
    pub vcpus_created: bool,
    /// Whether the host has 5-level EPT (`cpu_has_vmx_ept_5levels`): without it a GPAW of 52
    /// is `EINVAL` (`setup_tdparams_eptp_controls`). Off by default.
    pub ept_5_levels: bool,
    private: BTreeSet<u64>,
    shared_bit: u64,
    vm_dead: bool,
    prepared: BTreeSet<u64>,
    premapped: u64,
    cpuid_values: TdCpuidValues,
    mrtd: Mrtd,
    finalized: Option<[u8; 48]>,
    gmems: Vec<ModelGmem>,
    /// What each page converted through a guest_memfd held at its conversion (GPA -> page).
    at_conversion: BTreeMap<u64, Vec<u8>>,
}

impl Default for TdxModel {
    fn default() -> Self {
        Self::new()
    }
}

impl TdxModel {
    /// A fresh TD (`KVM_X86_TDX_VM` on a TDX host): nothing initialized, nothing private, one
    /// guest_memfd memslot over `[0, 4 GiB)`.
    pub fn new() -> Self {
        TdxModel {
            kernel: Kernel::V6_18,
            series: None,
            violations: Vec::new(),
            host: Host::Tdx,
            vm_type: KVM_X86_TDX_VM,
            supported_attrs: 1 << 28,
            supported_xfam: 0x6_02e7,
            cpuid_entries: 3,
            script: VecDeque::new(),
            vm_faults: VecDeque::new(),
            memslots: vec![Memslot {
                gpa: 0,
                len: 1 << 32,
                guest_memfd: true,
            }],
            calls: Vec::new(),
            added: BTreeMap::new(),
            twice: Vec::new(),
            params: None,
            vcpus: BTreeMap::new(),
            max_vcpus: 8,
            split_irqchip: false,
            x86_calls: Vec::new(),
            sev_initialized: false,
            vcpus_created: false,
            ept_5_levels: false,
            private: BTreeSet::new(),
            shared_bit: SHARED_BIT,
            vm_dead: false,
            prepared: BTreeSet::new(),
            premapped: 0,
            cpuid_values: Vec::new(),
            mrtd: Mrtd::new(),
            finalized: None,
            gmems: Vec::new(),
            at_conversion: BTreeMap::new(),
        }
    }

    /// A fresh TD on a kernel with the in-place conversion series v8, its module parameter
    /// `kvm.gmem_in_place_conversion` as given: v8 patch 23/46 on v8's base (kvm-x86/next
    /// `b7fbe9a1bf9e`), taken for 7.3's rules except where the patch text shows the base
    /// differs (an assumption: the rest of the base was not compared with 7.3.4):
    /// `tdx_vcpu_init_mem_region` of the base checks only that `source_addr` is page-aligned
    /// (7.3.4's `!region.source_addr` refusal came after v8), `kvm_gmem_populate` pins no
    /// source for 0, `tdx_gmem_post_populate` answers `-EOPNOTSUPP` with the parameter off and
    /// takes the page itself as the source with it on (the content it held at conversion,
    /// read from the guest_memfds given to [`add_guest_memfd`](Self::add_guest_memfd)), and
    /// `source_addr` 0 is never advanced. With the parameter on, "private" is the
    /// guest_memfd's own attributes (`kvm_gmem_range_is_private`).
    pub fn series_v8(in_place_conversion: bool) -> Self {
        TdxModel {
            series: Some(SeriesKernel::v8(in_place_conversion)),
            ..TdxModel::on(Kernel::V7_3)
        }
    }

    /// Gives the model a guest_memfd bound at `gpa..gpa+len` from file offset `offset`
    /// (recorded on the handle with [`GuestMemfd::record_memslot`], slot = its index):
    /// conversions of ranges it covers go through it (so through its conversion path, e.g.
    /// gmem's `SeriesModel`), and in-place adds read its pages. Refused as `record_memslot`
    /// refuses the range, or when the file cannot be duplicated.
    pub fn add_guest_memfd(
        &mut self,
        gmem: GuestMemfd,
        gpa: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), gmem::Error> {
        let slot = u32::try_from(self.gmems.len()).unwrap_or(u32::MAX);
        gmem.record_memslot(slot, gpa, offset, len)?;
        let fd = std::os::fd::AsFd::as_fd(&gmem)
            .try_clone_to_owned()
            .map_err(|source| gmem::Error::Io {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                offset,
                len,
                source,
            })?;
        self.gmems.push(ModelGmem {
            gmem,
            file: File::from(fd),
            gpa,
            offset,
            len,
        });
        Ok(())
    }

    /// The `i`-th guest_memfd given to [`add_guest_memfd`](Self::add_guest_memfd).
    pub fn guest_memfd(&self, i: usize) -> Option<&GuestMemfd> {
        self.gmems.get(i).map(|g| &g.gmem)
    }

    fn gmem_of(&self, gpa: u64) -> Option<(&ModelGmem, u64)> {
        self.gmems
            .iter()
            .find(|g| gpa >= g.gpa && gpa - g.gpa < g.len)
            .map(|g| (g, g.offset + (gpa - g.gpa)))
    }

    fn file_page(&self, gpa: u64) -> Option<Vec<u8>> {
        let (g, offset) = self.gmem_of(gpa)?;
        let mut page = vec![0u8; PAGE_SIZE as usize];
        g.file.read_exact_at(&mut page, offset).ok()?;
        Some(page)
    }

    /// Private where the kernel looks: with the series' parameter on, the guest_memfd's own
    /// attributes as the handle records them; otherwise the VM's attributes.
    fn page_private(&self, gpa: u64) -> bool {
        let per_file = self.series.is_some_and(|s| s.in_place_conversion);
        match self.gmem_of(gpa) {
            Some((g, offset)) if per_file => g
                .gmem
                .private_ranges()
                .iter()
                .any(|&(a, b)| offset >= a && offset < b),
            _ => self.private.contains(&(gpa / PAGE_SIZE)),
        }
    }

    /// The page an in-place add of `gpa` reads: what it held at conversion (or what the file
    /// holds, for a page private since creation); `None` with a violation when no guest_memfd
    /// covers it.
    fn in_place_page(&mut self, gpa: u64) -> Option<Vec<u8>> {
        let Some(now) = self.file_page(gpa) else {
            self.violations.push(format!(
                "in-place add of GPA {gpa:#x}: no guest_memfd given to the model covers it, so its content is unknown"
            ));
            return None;
        };
        match self.at_conversion.get(&gpa) {
            Some(then) if *then != now => {
                self.violations.push(format!(
                    "GPA {gpa:#x} was written after its conversion to private; adding what it held at conversion"
                ));
                Some(then.clone())
            }
            Some(then) => Some(then.clone()),
            None => Some(now),
        }
    }

    /// A fresh TD on `kernel`: as [`new`](Self::new), following that release where 6.18.2
    /// and 7.3.4 differ (see [`Kernel`]).
    pub fn on(kernel: Kernel) -> Self {
        TdxModel {
            kernel,
            ..TdxModel::new()
        }
    }

    /// An ordinary VM (`KVM_X86_DEFAULT_VM`) on `host`.
    pub fn ordinary_vm(host: Host) -> Self {
        TdxModel {
            host,
            vm_type: KVM_X86_DEFAULT_VM,
            ..TdxModel::new()
        }
    }

    /// MRTD after `KVM_TDX_FINALIZE_VM`, or `None` before.
    pub fn mrtd(&self) -> Option<[u8; 48]> {
        self.finalized
    }

    /// Bytes the TDX module added inside `gpa..gpa+len`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        self.added.range(gpa..gpa.saturating_add(len)).count() as u64 * PAGE_SIZE
    }

    /// Whether the page at `gpa` is private.
    pub fn is_private(&self, gpa: u64) -> bool {
        self.private.contains(&(gpa / PAGE_SIZE))
    }

    /// Whether guest_memfd has the page at `gpa` prepared (its folio up to date).
    pub fn is_prepared(&self, gpa: u64) -> bool {
        self.prepared.contains(&(gpa / PAGE_SIZE))
    }

    /// The initial RCX `KVM_TDX_INIT_VCPU` gave vCPU `id`, if it is initialized.
    pub fn vcpu_rcx(&self, id: u64) -> Option<u64> {
        self.vcpus.get(&id).and_then(|v| v.rcx)
    }

    /// What `setup_tdparams_cpuids` copied into TD_PARAMS for the configurable leaf
    /// `function`.`index` (EAX, EBX, ECX, EDX; the GPAW bits of 0x80000008 cleared), or `None`
    /// when no entry of the `KVM_TDX_INIT_VM` CPUID matched it (`kvm_find_cpuid_entry2`) or
    /// the TD is not initialized.
    pub fn td_cpuid(&self, function: u32, index: u32) -> Option<[u32; 4]> {
        (0..self.cpuid_entries.min(TDX_MAX_CPUID_CONFIG))
            .position(|i| config_leaf(i) == (function, index))
            .and_then(|i| self.cpuid_values.get(i).copied().flatten())
    }

    /// `nr_premapped`: pages mapped by `kvm_tdp_map_page` but not (yet) added.
    pub fn premapped(&self) -> u64 {
        self.premapped
    }

    fn is_td(&self) -> bool {
        self.vm_type == KVM_X86_TDX_VM
    }

    fn record(&mut self, call: Call) -> Result<(), i32> {
        let r = call.result;
        self.calls.push(call);
        r
    }

    fn take_fault(&mut self, id: u32) -> Option<VmFault> {
        if self.vm_faults.front().is_some_and(|f| f.command() == id) {
            self.vm_faults.pop_front()
        } else {
            None
        }
    }

    fn slot_of(&self, gpa: u64) -> Option<&Memslot> {
        self.memslots
            .iter()
            .find(|s| gpa >= s.gpa && gpa - s.gpa < s.len)
    }

    /// `sev_mem_enc_ioctl` (`arch/x86/kvm/svm/sev.c`) on an ordinary VM of an AMD host, for
    /// a VM not yet made an SEV guest: `KVM_SEV_INIT` (0) and `KVM_SEV_ES_INIT` (1) succeed and
    /// make it one (`sev_guest_init`; again after that: `EINVAL`, `sev->active`); ids the
    /// switch does not have (10, 14, 19, 23-99, above 102) are `EINVAL`, and so are
    /// `KVM_SEV_INIT2` (22: not an SEV VM type), `KVM_SEV_RECEIVE_UPDATE_DATA` (13) and
    /// `KVM_SEV_SNP_LAUNCH_UPDATE` (101); every other command refuses a VM that is not an SEV
    /// guest with `ENOTTY`. What those commands do once the VM *is* an SEV guest (real SEV
    /// launch work) is not followed: nothing here sends them.
    fn sev_op(&mut self, cmd: &kvm_tdx_cmd) -> Result<(), i32> {
        match cmd.id {
            0 | 1 if self.sev_initialized => Err(libc::EINVAL),
            0 | 1 => {
                self.sev_initialized = true;
                Ok(())
            }
            10 | 13 | 14 | 19 | 22..=99 | 101 | 103.. => Err(libc::EINVAL),
            _ => Err(libc::ENOTTY),
        }
    }

    fn vm_op_inner(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        // kvm_vm_ioctl: a dead VM answers EIO before looking at the command.
        if self.vm_dead {
            return Err(libc::EIO);
        }
        if !self.is_td() {
            return match self.host {
                Host::Tdx => Err(libc::ENOTTY),
                Host::AmdSev => self.sev_op(cmd),
            };
        }
        // tdx_vm_ioctl: userspace never sets hw_error.
        if cmd.hw_error != 0 {
            return Err(libc::EINVAL);
        }
        match cmd.id {
            KVM_TDX_CAPABILITIES => self.capabilities(cmd, payload),
            KVM_TDX_INIT_VM => self.init_vm(cmd, payload),
            KVM_TDX_FINALIZE_VM => self.finalize(cmd),
            _ => Err(libc::EINVAL),
        }
    }

    /// `tdx_get_capabilities`.
    fn capabilities(&mut self, cmd: &kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        if cmd.flags != 0 {
            return Err(libc::EINVAL);
        }
        let b = payload.ok_or(libc::EFAULT)?;
        let room = read_u32(b, CAPS_HEADER).ok_or(libc::EFAULT)?;
        let n = self.cpuid_entries.min(TDX_MAX_CPUID_CONFIG);
        if room < n {
            // Returned before any copy_to_user: the needed count is not written back.
            return Err(libc::E2BIG);
        }
        // init_kvm_tdx_caps: no supported attributes or XFAM is EIO.
        if self.supported_attrs == 0 || self.supported_xfam == 0 {
            return Err(libc::EIO);
        }
        if b.len() < CAPS_HEADER + CPUID2_HEADER + n as usize * CPUID_ENTRY {
            return Err(libc::EFAULT);
        }
        b[..CAPS_HEADER + CPUID2_HEADER].fill(0);
        b[0..8].copy_from_slice(&self.supported_attrs.to_le_bytes());
        b[8..16].copy_from_slice(&self.supported_xfam.to_le_bytes());
        write_u32(b, CAPS_HEADER, n);
        for i in 0..n as usize {
            let at = CAPS_HEADER + CPUID2_HEADER + i * CPUID_ENTRY;
            b[at..at + CPUID_ENTRY].fill(0);
            let (function, index) = config_leaf(i as u32);
            write_u32(b, at, function);
            write_u32(b, at + 4, index);
            if function == GPAW_LEAF {
                // td_init_cpuid_entry2: EAX[23:16] (GPAW) reported as configurable (0xff).
                write_u32(b, at + 12, 0xff << 16);
            } else {
                // Every bit configurable, but what tdx_clear_unsupported_cpuid clears from
                // leaf 7.0 (td_init_cpuid_entry2): TSX (EBX 4, 11) and WAITPKG (ECX 5).
                let (ebx, ecx) = if (function, index) == (7, 0) {
                    (!(1u32 << 4 | 1 << 11), !(1u32 << 5))
                } else {
                    (u32::MAX, u32::MAX)
                };
                for (k, v) in [u32::MAX, ebx, ecx, u32::MAX].into_iter().enumerate() {
                    write_u32(b, at + 12 + 4 * k, v);
                }
            }
        }
        Ok(())
    }

    /// `setup_tdparams` from its vCPU check on (the attribute and XFAM checks, then
    /// `setup_tdparams_eptp_controls` and `setup_tdparams_cpuids`); returns the shared bit the
    /// TD gets (`tdx_td_init`: `TDX_SHARED_BIT_PWL_5` with a GPAW of 52, else `_PWL_4`).
    fn setup_tdparams(&self, p: &TdParams) -> Result<(u64, TdCpuidValues), i32> {
        if self.vcpus_created {
            return Err(libc::EBUSY);
        }
        if p.attributes & !self.supported_attrs != 0 || p.xfam & !self.supported_xfam != 0 {
            return Err(libc::EINVAL);
        }
        // setup_tdparams_eptp_controls: the GPAW is CPUID 0x80000008 EAX[23:16], 48 or 52.
        let gpaw = find_cpuid_entry2(&p.cpuid, GPAW_LEAF, 0)
            .map(|e| (e.eax >> 16) & 0xff)
            .ok_or(libc::EINVAL)?;
        let shared_bit = match gpaw {
            48 => SHARED_BIT,
            52 if self.ept_5_levels => 1 << 51,
            _ => return Err(libc::EINVAL),
        };
        // setup_tdparams_cpuids: each configurable leaf takes the first matching entry (TSX or
        // WAITPKG in leaf 7.0 is EINVAL); every entry must have been taken.
        let mut copied = 0usize;
        let mut values = Vec::new();
        for i in 0..self.cpuid_entries.min(TDX_MAX_CPUID_CONFIG) {
            let (function, index) = config_leaf(i);
            let mut value = None;
            if let Some(e) = find_cpuid_entry2(&p.cpuid, function, index) {
                if tdx_unsupported_cpuid(e) {
                    return Err(libc::EINVAL);
                }
                copied += 1;
                let eax = if function == GPAW_LEAF {
                    e.eax & !0x00ff_0000
                } else {
                    e.eax
                };
                value = Some([eax, e.ebx, e.ecx, e.edx]);
            }
            values.push(value);
        }
        if copied != p.cpuid.len() {
            return Err(libc::EINVAL);
        }
        Ok((shared_bit, values))
    }

    /// The smallest `TdParams` Linux 6.18.2's `setup_tdparams` accepts from this model's
    /// default module: no attributes or XFAM, and only the GPAW leaf (CPUID 0x80000008
    /// EAX bits 23:16 = 48; `setup_tdparams_eptp_controls` refuses a CPUID without it).
    pub fn minimal_params() -> TdParams {
        TdParams {
            cpuid: vec![kvm_cpuid_entry2 {
                function: GPAW_LEAF,
                eax: 48 << 16,
                ..Default::default()
            }],
            ..TdParams::default()
        }
    }

    /// The smallest vCPU CPUID `KVM_TDX_INIT_VCPU` accepts: leaf 1 with CPUID.1:ECX.x2APIC
    /// (`tdx_vcpu_init` -> `kvm_apic_set_base`).
    pub fn minimal_vcpu_cpuid() -> Vec<kvm_cpuid_entry2> {
        vec![kvm_cpuid_entry2 {
            function: 1,
            ecx: CPUID_1_ECX_X2APIC,
            ..Default::default()
        }]
    }

    /// A host's `KVM_GET_SUPPORTED_CPUID`, as far as the model's module configures it: leaf 1
    /// with x2APIC (KVM emulates it: `arch/x86/kvm/cpuid.c: kvm_set_cpu_caps`,
    /// `EMULATED_F(X2APIC)`), leaf 7 sub-leaves 0 and 1 with different values and
    /// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`, and 0x80000008 (52 physical address bits).
    pub fn host_cpuid() -> Vec<kvm_cpuid_entry2> {
        let e = |function, index, flags, eax, ebx, ecx| kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            ..Default::default()
        };
        vec![
            e(0, 0, 0, 0x23, 0, 0),
            e(1, 0, 0, 0x806f8, 0, CPUID_1_ECX_X2APIC | 1),
            // Leaf 7.0: EAX = max sub-leaf 1; EBX with HLE and RTM, ECX with WAITPKG, which
            // a TD cannot have.
            e(7, 0, 1, 1, 0x0000_0229 | 1 << 4 | 1 << 11, 1 << 5 | 0x4),
            e(7, 1, 1, 0x0000_0010, 0, 0),
            e(GPAW_LEAF, 0, 0, 0x3034, 0, 0),
        ]
    }

    /// `tdx_td_init` and `__tdx_td_init`.
    fn init_vm(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        if self.params.is_some() || cmd.flags != 0 {
            return Err(libc::EINVAL);
        }
        let b = payload.ok_or(libc::EFAULT)?;
        let nent = read_u32(b, INIT_VM_HEADER).ok_or(libc::EFAULT)?;
        if nent > KVM_MAX_CPUID_ENTRIES {
            return Err(libc::E2BIG);
        }
        let need = INIT_VM_HEADER + CPUID2_HEADER + nent as usize * CPUID_ENTRY;
        if b.len() < need {
            return Err(libc::EFAULT);
        }
        if b[160..256].iter().any(|x| *x != 0) || read_u32(b, INIT_VM_HEADER + 4) != Some(0) {
            // Reserved bytes or cpuid.padding.
            return Err(libc::EINVAL);
        }
        let mut p = TdParams {
            attributes: read_u64(b, 0).unwrap_or(0),
            xfam: read_u64(b, 8).unwrap_or(0),
            ..TdParams::default()
        };
        p.mrconfigid.copy_from_slice(&b[16..64]);
        p.mrowner.copy_from_slice(&b[64..112]);
        p.mrownerconfig.copy_from_slice(&b[112..160]);
        for i in 0..nent as usize {
            let at = INIT_VM_HEADER + CPUID2_HEADER + i * CPUID_ENTRY;
            let w = |k: usize| read_u32(b, at + 4 * k).unwrap_or(0);
            p.cpuid.push(kvm_cpuid_entry2 {
                function: w(0),
                index: w(1),
                flags: w(2),
                eax: w(3),
                ebx: w(4),
                ecx: w(5),
                edx: w(6),
                padding: [w(7), w(8), w(9)],
            });
        }
        let (shared_bit, values) = self.setup_tdparams(&p)?;
        match self.take_fault(KVM_TDX_INIT_VM) {
            Some(VmFault::InitVmNoEntropy) => return Err(libc::EAGAIN),
            Some(VmFault::InitVmOperandInvalid(status)) => {
                cmd.hw_error = status;
                return Err(libc::EINVAL);
            }
            _ => {}
        }
        self.params = Some(p);
        self.shared_bit = shared_bit;
        self.cpuid_values = values;
        Ok(())
    }

    /// `tdx_td_finalize` (it reads neither `flags` nor `data`).
    fn finalize(&mut self, cmd: &mut kvm_tdx_cmd) -> Result<(), i32> {
        if self.params.is_none() || self.finalized.is_some() || self.premapped != 0 {
            return Err(libc::EINVAL);
        }
        match self.take_fault(KVM_TDX_FINALIZE_VM) {
            Some(VmFault::FinalizeBusy(status)) => {
                cmd.hw_error = status;
                return Err(libc::EBUSY);
            }
            Some(VmFault::FinalizeFailed(status)) => {
                cmd.hw_error = status;
                self.vm_dead = true;
                return Err(libc::EIO);
            }
            _ => {}
        }
        cmd.hw_error = 0;
        self.finalized = Some(self.mrtd.current());
        Ok(())
    }

    /// The vCPU `KVM_MEMORY_ENCRYPT_OP` up to the command switch: on a non-TD
    /// `vt_vcpu_mem_enc_ioctl` (Intel: `EINVAL`) or no vCPU form at all (AMD: `ENOTTY`); on a
    /// TD `tdx_vcpu_ioctl`: `EINVAL` before `KVM_TDX_INIT_VM` (no HKID), after finalization,
    /// or with `hw_error` set.
    fn vcpu_entry(&self, cmd: &kvm_tdx_cmd) -> Result<(), i32> {
        // kvm_vcpu_ioctl: a dead VM answers EIO before looking at the command.
        if self.vm_dead {
            return Err(libc::EIO);
        }
        if !self.is_td() {
            return match self.host {
                Host::Tdx => Err(libc::EINVAL),
                Host::AmdSev => Err(libc::ENOTTY),
            };
        }
        if self.params.is_none() || self.finalized.is_some() || cmd.hw_error != 0 {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    /// The vCPU a command that names none goes to: the lowest id (no fd: `EBADF`).
    fn default_vcpu(&self) -> Result<u64, i32> {
        self.vcpus.keys().next().copied().ok_or(libc::EBADF)
    }

    /// `tdx_vcpu_ioctl` on vCPU `id` (the command is not copied back).
    fn vcpu_op_inner(
        &mut self,
        id: u64,
        cmd: &kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        if !self.vcpus.contains_key(&id) && self.is_td() {
            // No such vCPU fd.
            return Err(libc::EBADF);
        }
        self.vcpu_entry(cmd)?;
        let initialized = self.vcpu_rcx(id).is_some();
        match cmd.id {
            // tdx_vcpu_init
            KVM_TDX_INIT_VCPU => {
                if cmd.flags != 0 || initialized {
                    return Err(libc::EINVAL);
                }
                // kvm_apic_set_base(x2APIC mode): X2APIC_ENABLE is a reserved bit unless
                // guest_cpu_cap_has(X86_FEATURE_X2APIC), i.e. CPUID.1:ECX bit 21 of the
                // vCPU's CPUID (none set: no feature at all).
                let x2apic = self
                    .vcpus
                    .get(&id)
                    .and_then(|v| v.cpuid.as_deref())
                    .and_then(|c| find_cpuid_entry2(c, 1, 0))
                    .is_some_and(|e| e.ecx & CPUID_1_ECX_X2APIC != 0);
                if !x2apic {
                    return Err(libc::EINVAL);
                }
                if let Some(v) = self.vcpus.get_mut(&id) {
                    v.rcx = Some(cmd.data);
                }
                Ok(())
            }
            // tdx_vcpu_init_mem_region without a region the model can read.
            KVM_TDX_INIT_MEM_REGION => {
                if !initialized || cmd.flags & !KVM_TDX_MEASURE_MEMORY_REGION != 0 {
                    return Err(libc::EINVAL);
                }
                Err(libc::EFAULT)
            }
            // tdx_vcpu_get_cpuid: the header (with the count) is written back also on E2BIG.
            KVM_TDX_GET_CPUID => {
                let b = payload.ok_or(libc::EFAULT)?;
                let room = read_u32(b, 0).ok_or(libc::EFAULT)?;
                let entries = self
                    .params
                    .as_ref()
                    .map(|p| p.cpuid.clone())
                    .unwrap_or_default();
                let n = entries.len() as u32;
                write_u32(b, 0, n);
                if room < n {
                    return Err(libc::E2BIG);
                }
                for (i, e) in entries.iter().enumerate() {
                    let at = CPUID2_HEADER + i * CPUID_ENTRY;
                    let words = [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx];
                    if b.len() < at + CPUID_ENTRY {
                        return Err(libc::EFAULT);
                    }
                    b[at..at + CPUID_ENTRY].fill(0);
                    for (k, w) in words.iter().enumerate() {
                        write_u32(b, at + 4 * k, *w);
                    }
                }
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }
}

/// CPUID leaf 0x80000008, whose EAX bits 23:16 carries the TD's GPAW (`tdx.c`).
const GPAW_LEAF: u32 = 0x8000_0008;

/// The model module's configurable CPUID leaf `i` (`td_conf->cpuid_config_leaves`): the GPAW
/// leaf 0x80000008 first (real modules list it; `setup_tdparams_eptp_controls` needs it), then
/// leaf 7 sub-leaves 0, 1, ...
fn config_leaf(i: u32) -> (u32, u32) {
    match i {
        0 => (GPAW_LEAF, 0),
        _ => (7, i - 1),
    }
}

/// `arch/x86/kvm/cpuid.c: kvm_find_cpuid_entry2`: the first entry of `function` whose index
/// matches or is not significant (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX` clear).
fn find_cpuid_entry2(
    entries: &[kvm_cpuid_entry2],
    function: u32,
    index: u32,
) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == function && (e.flags & 1 == 0 || e.index == index))
}

/// `tdx_unsupported_cpuid`: leaf 7.0 with TSX (EBX HLE bit 4, RTM bit 11) or WAITPKG (ECX
/// bit 5).
fn tdx_unsupported_cpuid(e: &kvm_cpuid_entry2) -> bool {
    e.function == 7 && e.index == 0 && (e.ebx & (1 << 4 | 1 << 11) != 0 || e.ecx & (1 << 5) != 0)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn write_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
fn write_u64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

impl TdxIoctl for TdxModel {
    fn vm_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        let mut as_passed = *cmd;
        let copy = payload.as_ref().map(|p| p.to_vec());
        if copy.is_some() {
            as_passed.data = 0;
        }
        let mut k = read_cmd(cmd);
        let result = self.vm_op_inner(&mut k, payload);
        write_cmd(cmd, &k);
        self.record(Call {
            scope: Scope::Vm,
            cmd: as_passed,
            payload: copy,
            region: None,
            result,
        })
    }

    fn vcpu_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        // On an ordinary VM the model has no vCPU list: its one vCPU stands in.
        let id = if self.is_td() {
            self.default_vcpu()
        } else {
            Ok(0)
        };
        match id {
            Ok(id) => self.vcpu_op_on(id, cmd, payload),
            Err(errno) => {
                let as_passed = *cmd;
                let copy = payload.as_ref().map(|p| p.to_vec());
                self.record(Call {
                    scope: Scope::Vcpu,
                    cmd: as_passed,
                    payload: copy,
                    region: None,
                    result: Err(errno),
                })
            }
        }
    }

    fn vcpu_op_on(
        &mut self,
        vcpu: u64,
        cmd: &mut kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        let as_passed = *cmd;
        let copy = payload.as_ref().map(|p| p.to_vec());
        let result = self.vcpu_op_inner(vcpu, &read_cmd(cmd), payload);
        self.record(Call {
            scope: Scope::Vcpu,
            cmd: as_passed,
            payload: copy,
            region: None,
            result,
        })
    }

    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        let base = source.as_ptr() as u64;
        let mut as_passed = *cmd;
        as_passed.data = 0;
        let mut region_passed = *region;
        if region.source_addr != 0 {
            region_passed.source_addr = region.source_addr.wrapping_sub(base);
        }
        let call = self.calls.len();
        let event = self.script.pop_front().unwrap_or(Event::Complete);
        let mut k = read_cmd(cmd);
        let mut r = read_region(region);
        let result = self.init_mem_region_inner(&mut k, &mut r, source, base, call, event);
        write_cmd(cmd, &k);
        write_region(region, &r);
        self.record(Call {
            scope: Scope::Vcpu,
            cmd: as_passed,
            payload: None,
            region: Some(region_passed),
            result,
        })
    }

    /// `arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(KVM_CAP_SPLIT_IRQCHIP)`.
    fn enable_split_irqchip(&mut self, nr_ioapic_pins: u64) -> Result<(), i32> {
        let r = if self.vm_dead {
            Err(libc::EIO)
        } else if nr_ioapic_pins > MAX_NR_RESERVED_IOAPIC_PINS {
            Err(libc::EINVAL)
        } else if self.split_irqchip || self.vcpus_created {
            Err(libc::EEXIST)
        } else {
            self.split_irqchip = true;
            Ok(())
        };
        self.x86_calls
            .push(X86Call::EnableSplitIrqchip(nr_ioapic_pins, r));
        r
    }

    /// `virt/kvm/kvm_main.c: kvm_vm_ioctl_create_vcpu` -> `tdx_vcpu_create`.
    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        let r = if self.vm_dead {
            Err(libc::EIO)
        } else if self.vcpus.len() >= self.max_vcpus as usize {
            Err(libc::EINVAL)
        } else if self.kernel == Kernel::V7_3 && self.vcpus.contains_key(&id) {
            // 7.3.4 kvm_vm_ioctl_create_vcpu: kvm_get_vcpu_by_id before the arch create.
            Err(libc::EEXIST)
        } else if !self.is_td() {
            // An ordinary VM's vCPU: nothing TDX about it.
            Ok(())
        } else if self.params.is_none() || self.finalized.is_some() {
            // tdx_vcpu_create: kvm_tdx->state != TD_STATE_INITIALIZED.
            Err(libc::EIO)
        } else if !self.split_irqchip {
            Err(libc::EINVAL)
        } else if self.vcpus.contains_key(&id) {
            // kvm_vm_ioctl_create_vcpu: kvm_get_vcpu_by_id after the arch create.
            Err(libc::EEXIST)
        } else {
            Ok(())
        };
        if r.is_ok() {
            self.vcpus.insert(id, ModelVcpu::default());
            self.vcpus_created = true;
        }
        self.x86_calls.push(X86Call::CreateVcpu(id, r));
        r
    }

    /// `arch/x86/kvm/cpuid.c: kvm_vcpu_ioctl_set_cpuid2` (the checks `kvm_set_cpuid` makes of
    /// a vCPU that has run do not apply: nothing runs here).
    fn set_cpuid(&mut self, vcpu: u64, entries: &[kvm_cpuid_entry2]) -> Result<(), i32> {
        let r = if self.vm_dead {
            Err(libc::EIO)
        } else if entries.len() > KVM_MAX_CPUID_ENTRIES as usize {
            Err(libc::E2BIG)
        } else if let Some(v) = self.vcpus.get_mut(&vcpu) {
            v.cpuid = Some(entries.to_vec());
            Ok(())
        } else {
            Err(libc::EBADF)
        };
        self.x86_calls
            .push(X86Call::SetCpuid(vcpu, entries.len(), r));
        r
    }

    /// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` (`virt/kvm/kvm_main.c:
    /// kvm_vm_ioctl_set_mem_attributes`): `EINVAL` when misaligned or wrapping, or on a VM
    /// without private memory (`kvm_supported_mem_attributes` is 0 for an ordinary VM).
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        if self.vm_dead {
            return Err(libc::EIO);
        }
        if !self.is_td()
            || !gpa.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || len == 0
            || gpa.checked_add(len).is_none()
        {
            return Err(libc::EINVAL);
        }
        if self.gmem_of(gpa).is_some() {
            // Through the guest_memfd; a conversion never touches contents, and what each page
            // holds now is what an in-place add reads.
            let mut refs: Vec<&mut GuestMemfd> =
                self.gmems.iter_mut().map(|g| &mut g.gmem).collect();
            gmem::convert_gpa_range(&mut refs, gpa, len, MemoryState::Private)
                .map_err(|e| e.errno())?;
            for p in 0..len / PAGE_SIZE {
                let a = gpa + p * PAGE_SIZE;
                if let Some(page) = self.file_page(a) {
                    self.at_conversion.entry(a).or_insert(page);
                }
            }
        }
        for p in 0..len / PAGE_SIZE {
            self.private.insert(gpa / PAGE_SIZE + p);
        }
        Ok(())
    }

    /// `kvm->vm_dead`, as `kvm_vm_ioctl` would show it.
    fn vm_dead(&mut self) -> bool {
        self.vm_dead
    }

    fn series(&self) -> Option<SeriesKernel> {
        self.series
    }

    /// A vCPU fd exists for `vcpu` (`None`: any, the lowest id taking the commands that name
    /// none); on an ordinary VM its one vCPU stands in.
    fn has_vcpu(&self, vcpu: Option<u64>) -> bool {
        !self.is_td()
            || match vcpu {
                Some(id) => self.vcpus.contains_key(&id),
                None => !self.vcpus.is_empty(),
            }
    }

    /// `kvm_vm_ioctl_check_extension` (`arch/x86/kvm/x86.c`) for the two capabilities
    /// [`check_td`](crate::check_td) asks; 0 for the others.
    fn vm_check_extension(&mut self, cap: u32) -> i32 {
        match cap {
            KVM_CAP_VM_TYPES => match self.host {
                Host::Tdx => (1 << KVM_X86_DEFAULT_VM) | (1 << KVM_X86_TDX_VM),
                // KVM_X86_SEV_VM (2), KVM_X86_SEV_ES_VM (3), KVM_X86_SNP_VM (4).
                Host::AmdSev => (1 << KVM_X86_DEFAULT_VM) | (0b111 << 2),
            },
            // kvm_sync_valid_fields: 0 for a VM with protected state (a TD).
            KVM_CAP_SYNC_REGS if self.is_td() => 0,
            KVM_CAP_SYNC_REGS => KVM_SYNC_X86_VALID_FIELDS as i32,
            _ => 0,
        }
    }
}

impl TdxModel {
    /// Linux 7.3.4's page loop: `tdx_vcpu_init_mem_region` -> per page `kvm_gmem_populate`
    /// (`virt/kvm/guest_memfd.c`: the memslot, then the source pinned before the mapping lock)
    /// -> `__kvm_gmem_populate` (private, no preparation check) -> `tdx_gmem_post_populate` ->
    /// `kvm_tdp_mmu_map_private_pfn` (`arch/x86/kvm/mmu/mmu.c`: `EIO` for a page already
    /// mapped, `RET_PF_SPURIOUS`; a busy PAGE.ADD retried, `RET_PF_RETRY`; a signal between
    /// attempts `EINTR` with nothing kept) -> `tdx_mem_page_add` (a failure other than busy:
    /// `TDX_BUG_ON`, the VM dead, `EIO`) -> 16 TDH.MR.EXTEND (a failure: the VM dead, `EIO`).
    fn pages_7_3(
        &mut self,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
        base: u64,
        call: usize,
        event: Event,
        measure: bool,
    ) -> Result<(), i32> {
        let mut i = 0u64;
        while region.nr_pages > 0 {
            let at = |p: u64| p == i;
            if matches!(event, Event::Signal { after_pages } if at(after_pages)) {
                return Err(libc::EINTR);
            }
            let gpa = region.gpa;
            let gfn = gpa / PAGE_SIZE;
            if !self.slot_of(gpa).is_some_and(|s| s.guest_memfd) {
                return Err(libc::EINVAL);
            }
            // kvm_gmem_populate: get_user_pages_fast before anything else (only for a source:
            // series v8's base pins none for 0).
            let in_place = region.source_addr == 0 && self.series.is_some();
            let mut page: Vec<u8> = Vec::new();
            if !in_place {
                let off = region.source_addr.wrapping_sub(base) as usize;
                let src = source
                    .get(off..off.saturating_add(PAGE_SIZE as usize))
                    .ok_or(libc::EFAULT)?;
                page.extend_from_slice(src);
                if matches!(event, Event::SourceFault { after_pages } if at(after_pages)) {
                    return Err(libc::EFAULT);
                }
            }
            // kvm_gmem_populate: the range must be private (series v8 with the parameter on:
            // the guest_memfd's attributes, kvm_gmem_range_is_private).
            if !self.page_private(gpa) {
                return Err(libc::EINVAL);
            }
            if self.added.contains_key(&gpa) {
                // kvm_tdp_mmu_map_private_pfn: the S-EPT entry is there already.
                self.twice.push(gpa);
                return Err(libc::EIO);
            }
            if in_place {
                // v8 patch 23/46 tdx_gmem_post_populate: no source page is -EOPNOTSUPP unless
                // in-place conversion is on; then the page itself is the source.
                if !self.series.is_some_and(SeriesKernel::populates_in_place) {
                    return Err(libc::EOPNOTSUPP);
                }
                page = self.in_place_page(gpa).ok_or(libc::EFAULT)?;
            }
            if matches!(event, Event::SignalAfterFault { after_pages } if at(after_pages)) {
                return Err(libc::EINTR);
            }
            // Event::PageAddBusy: retried inside kvm_tdp_mmu_map_private_pfn until it goes
            // through.
            if matches!(event, Event::PageAddFailed { after_pages } if at(after_pages)) {
                self.vm_dead = true;
                return Err(libc::EIO);
            }
            self.mrtd.page_add(gpa);
            let mut added = AddedPage {
                measured: measure,
                chunks_extended: 0,
                call,
            };
            if measure {
                for (c, data) in page.chunks_exact(EXTEND_CHUNK).enumerate() {
                    if matches!(event, Event::ExtendFailed { after_pages, chunk } if at(after_pages) && usize::from(chunk) == c)
                    {
                        self.added.insert(gpa, added);
                        self.vm_dead = true;
                        return Err(libc::EIO);
                    }
                    let chunk: &[u8; EXTEND_CHUNK] = data.try_into().map_err(|_| libc::EIO)?;
                    self.mrtd.extend(gpa + (c * EXTEND_CHUNK) as u64, chunk);
                    added.chunks_extended += 1;
                }
            }
            // __kvm_gmem_populate: folio_mark_uptodate on success.
            self.prepared.insert(gfn);
            self.added.insert(gpa, added);
            // v8 patch 23/46: `if (region.source_addr)`.
            if region.source_addr != 0 {
                region.source_addr += PAGE_SIZE;
            }
            region.gpa += PAGE_SIZE;
            region.nr_pages -= 1;
            i += 1;
        }
        Ok(())
    }

    /// `tdx_vcpu_ioctl` -> `tdx_vcpu_init_mem_region` -> per page `kvm_gmem_populate` ->
    /// `tdx_gmem_post_populate`. The region is advanced in place (the kernel's write-back).
    fn init_mem_region_inner(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
        base: u64,
        call: usize,
        event: Event,
    ) -> Result<(), i32> {
        let vcpu = if self.is_td() {
            self.default_vcpu()?
        } else {
            0
        };
        self.vcpu_entry(cmd)?;
        // tdx_vcpu_init_mem_region: the vCPU must be VCPU_TD_STATE_INITIALIZED.
        if cmd.id != KVM_TDX_INIT_MEM_REGION || self.vcpu_rcx(vcpu).is_none() {
            return Err(libc::EINVAL);
        }
        if cmd.flags & !KVM_TDX_MEASURE_MEMORY_REGION != 0 {
            return Err(libc::EINVAL);
        }
        // `region.gpa + (region.nr_pages << PAGE_SHIFT) <= region.gpa`, in the kernel's u64
        // arithmetic: the shift drops high bits of nr_pages, and only a sum that wraps or stays
        // put is refused.
        let end = region.gpa.wrapping_add(region.nr_pages << 12);
        if !region.source_addr.is_multiple_of(PAGE_SIZE)
            || !region.gpa.is_multiple_of(PAGE_SIZE)
            || region.nr_pages == 0
            || end <= region.gpa
            || region.gpa & self.shared_bit != 0
            || (end - 1) & self.shared_bit != 0
            // 7.3.4 also refuses a source_addr of 0 here; 6.18.2 lets it through to the pin,
            // and so does series v8's base.
            || (self.kernel == Kernel::V7_3 && region.source_addr == 0 && self.series.is_none())
        {
            return Err(libc::EINVAL);
        }
        let measure = cmd.flags & KVM_TDX_MEASURE_MEMORY_REGION != 0;
        if self.kernel == Kernel::V7_3 {
            return self.pages_7_3(region, source, base, call, event, measure);
        }
        let mut i = 0u64;
        while region.nr_pages > 0 {
            let at = |p: u64| p == i;
            if matches!(event, Event::Signal { after_pages } if at(after_pages)) {
                return Err(libc::EINTR);
            }
            let gpa = region.gpa;
            let gfn = gpa / PAGE_SIZE;
            // kvm_gmem_populate: the memslot of this page (a slot's end is where npages stops).
            if !self.slot_of(gpa).is_some_and(|s| s.guest_memfd) {
                return Err(libc::EINVAL);
            }
            if self.prepared.contains(&gfn) {
                self.twice.push(gpa);
                return Err(libc::EEXIST);
            }
            if !self.private.contains(&gfn) {
                return Err(libc::EINVAL);
            }
            // tdx_gmem_post_populate: pin the source.
            let off = region.source_addr.wrapping_sub(base) as usize;
            let page = source
                .get(off..off.saturating_add(PAGE_SIZE as usize))
                .and_then(|s| <&[u8; PAGE_SIZE as usize]>::try_from(s).ok())
                .ok_or(libc::EFAULT)?;
            if matches!(event, Event::SourceFault { after_pages } if at(after_pages)) {
                return Err(libc::EFAULT);
            }
            // kvm_tdp_map_page: the fault prepares the folio (kvm_gmem_get_pfn ->
            // kvm_gmem_prepare_folio), then maps it: tdx_mem_page_record_premap_cnt.
            self.prepared.insert(gfn);
            if matches!(event, Event::SignalAfterFault { after_pages } if at(after_pages)) {
                return Err(libc::EINTR);
            }
            self.premapped += 1;
            // TDH.MEM.PAGE.ADD
            match event {
                Event::PageAddBusy { after_pages } if at(after_pages) => return Err(libc::EBUSY),
                Event::PageAddFailed { after_pages } if at(after_pages) => return Err(libc::EIO),
                _ => {}
            }
            self.mrtd.page_add(gpa);
            self.premapped -= 1;
            let mut added = AddedPage {
                measured: measure,
                chunks_extended: 0,
                call,
            };
            if measure {
                for (c, data) in page.chunks_exact(EXTEND_CHUNK).enumerate() {
                    if matches!(event, Event::ExtendFailed { after_pages, chunk } if at(after_pages) && usize::from(chunk) == c)
                    {
                        self.added.insert(gpa, added);
                        return Err(libc::EIO);
                    }
                    let chunk: &[u8; EXTEND_CHUNK] = data.try_into().map_err(|_| libc::EIO)?;
                    self.mrtd.extend(gpa + (c * EXTEND_CHUNK) as u64, chunk);
                    added.chunks_extended += 1;
                }
                debug_assert_eq!(usize::from(added.chunks_extended), CHUNKS_PER_PAGE);
            }
            self.added.insert(gpa, added);
            region.source_addr += PAGE_SIZE;
            region.gpa += PAGE_SIZE;
            region.nr_pages -= 1;
            i += 1;
        }
        Ok(())
    }
}
