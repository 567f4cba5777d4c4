//! The TD launch sequence around populate, and the `cc-populate` [`Backend`] for TDX.

use std::borrow::Cow;
use std::collections::BTreeMap;

use cc_populate::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, InPlacePopulate, Populated, Role,
};

use crate::ioctl::{TdxIoctl, CAPS_HEADER, CPUID2_HEADER, CPUID_ENTRY, INIT_VM_HEADER};
use crate::measure::{page_op, TDX_CAPS};
use crate::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
    KVM_MAX_CPUID_ENTRIES, KVM_TDX_CAPABILITIES, KVM_TDX_FINALIZE_VM, KVM_TDX_INIT_MEM_REGION,
    KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM, KVM_TDX_MEASURE_MEMORY_REGION, TDX_MAX_CPUID_CONFIG,
};
use crate::{Error, Kernel, PAGE_SIZE};

/// Size of the page-aligned bounce buffer used for sources that are not page aligned (the
/// kernel requires `source_addr` to be), and of the zero source for zero content.
pub const BOUNCE_SIZE: usize = 2 << 20;

/// What `KVM_TDX_CAPABILITIES` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TdxCapabilities {
    /// TD attributes that may be set.
    pub supported_attrs: u64,
    /// XFAM bits that may be set.
    pub supported_xfam: u64,
    /// TDG.VP.VMCALL leaves handled in the kernel (R11 form).
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// TDG.VP.VMCALL leaves forwarded to userspace (R11 form).
    pub user_tdvmcallinfo_1_r11: u64,
    /// TDG.VP.VMCALL leaves handled in the kernel (R12 form).
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// TDG.VP.VMCALL leaves forwarded to userspace (R12 form).
    pub user_tdvmcallinfo_1_r12: u64,
    /// The configurable CPUID bits.
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

/// The parameters of `KVM_TDX_INIT_VM` (TD_PARAMS as KVM exposes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdParams {
    /// TD attributes (e.g. bit 28 `SEPT_VE_DISABLE`).
    pub attributes: u64,
    /// XFAM: the extended features the TD may use.
    pub xfam: u64,
    /// MRCONFIGID: 48 bytes of VMM-chosen configuration identity, reported in the TD quote.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// The CPUID configuration (the configurable bits from [`TdxCapabilities::cpuid`]).
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

impl Default for TdParams {
    fn default() -> Self {
        TdParams {
            attributes: 0,
            xfam: 0,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid: Vec::new(),
        }
    }
}

impl TdParams {
    /// The exact `struct kvm_tdx_init_vm` bytes (with its CPUID entries) the ioctl gets.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; INIT_VM_HEADER + CPUID2_HEADER + self.cpuid.len() * CPUID_ENTRY];
        b[0..8].copy_from_slice(&self.attributes.to_le_bytes());
        b[8..16].copy_from_slice(&self.xfam.to_le_bytes());
        b[16..64].copy_from_slice(&self.mrconfigid);
        b[64..112].copy_from_slice(&self.mrowner);
        b[112..160].copy_from_slice(&self.mrownerconfig);
        // 160..256 reserved, zero.
        b[256..260].copy_from_slice(&(self.cpuid.len() as u32).to_le_bytes());
        for (i, e) in self.cpuid.iter().enumerate() {
            put_entry(
                &mut b[INIT_VM_HEADER + CPUID2_HEADER + i * CPUID_ENTRY..],
                e,
            );
        }
        b
    }
}

fn put_entry(b: &mut [u8], e: &kvm_cpuid_entry2) {
    let words = [
        e.function,
        e.index,
        e.flags,
        e.eax,
        e.ebx,
        e.ecx,
        e.edx,
        e.padding[0],
        e.padding[1],
        e.padding[2],
    ];
    for (w, out) in words.iter().zip(b.chunks_exact_mut(4)) {
        out.copy_from_slice(&w.to_le_bytes());
    }
}

fn get_entry(b: &[u8]) -> Option<kvm_cpuid_entry2> {
    let w = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    Some(kvm_cpuid_entry2 {
        function: w(0)?,
        index: w(1)?,
        flags: w(2)?,
        eax: w(3)?,
        ebx: w(4)?,
        ecx: w(5)?,
        edx: w(6)?,
        padding: [w(7)?, w(8)?, w(9)?],
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Meaning of an errno from `KVM_TDX_INIT_MEM_REGION`, as Linux 6.18.2 produces it
/// (`arch/x86/kvm/vmx/tdx.c: tdx_vcpu_ioctl`, `tdx_vcpu_init_mem_region`,
/// `tdx_gmem_post_populate`; `virt/kvm/guest_memfd.c: kvm_gmem_populate`). There is no
/// `EAGAIN`: the one source of it on that path (`kvm_mmu_faultin_pfn` on a memslot being
/// moved, `arch/x86/kvm/mmu/mmu.c`) cannot be seen while the command holds `slots_lock`.
pub fn init_mem_region_errno_meaning(errno: i32) -> &'static str {
    init_mem_region_errno_meaning_on(Kernel::V6_18, errno)
}

/// Meaning of an errno from `KVM_TDX_INIT_MEM_REGION` on `kernel`; for
/// [`Kernel::V6_18`] as [`init_mem_region_errno_meaning`]. Linux 7.3.4 (`arch/x86/kvm/vmx/tdx.c:
/// tdx_vcpu_init_mem_region`, `tdx_gmem_post_populate`, `tdx_mem_page_add`;
/// `virt/kvm/guest_memfd.c: kvm_gmem_populate`, `__kvm_gmem_populate`;
/// `arch/x86/kvm/mmu/mmu.c: kvm_tdp_mmu_map_private_pfn`) has no `EBUSY` (a busy PAGE.ADD is
/// retried inside the kernel) and no `EEXIST` (no preparation tracking), and a failed PAGE.ADD
/// or MR.EXTEND kills the VM.
pub fn init_mem_region_errno_meaning_on(kernel: Kernel, errno: i32) -> &'static str {
    if kernel == Kernel::V7_3 {
        return errno_meaning_7_3(errno);
    }
    match errno {
        libc::EINTR => {
            "a signal was pending (tdx_vcpu_init_mem_region, kvm_gmem_populate); the region was written back: resume from it"
        }
        libc::EBUSY => {
            "TDH.MEM.PAGE.ADD found an operand busy (tdx_gmem_post_populate): the page is pre-mapped by KVM and prepared in guest_memfd but not added; Linux 6.18 can neither retry it (EEXIST) nor finalize the TD (EINVAL)"
        }
        libc::EIO => {
            "TDH.MEM.PAGE.ADD or TDH.MR.EXTEND failed (tdx_gmem_post_populate; 6.18 does not copy the module status out for vCPU commands): the page is prepared in guest_memfd and either pre-mapped but not added or added with a partial measurement; Linux 6.18 cannot recover it (or the VM was already dead after a KVM_BUG_ON: virt/kvm/kvm_main.c: kvm_vcpu_ioctl answers EIO to everything)"
        }
        libc::EEXIST => {
            "guest_memfd already has the page prepared (kvm_gmem_populate): it was added before, or left prepared by a failed add; a page is never added twice"
        }
        libc::EFAULT => {
            "the region or the source page could not be read (copy_from_user, get_user_pages_fast in tdx_gmem_post_populate), or the memslot's guest_memfd is gone; the page was not touched"
        }
        libc::EINVAL => {
            "refused before the page was touched: vCPU not initialized or TD finalized (tdx_vcpu_ioctl, tdx_vcpu_init_mem_region), bad flags, a misaligned, empty or wrapping range or a GPA with the shared bit (vt_is_tdx_private_gpa), a page in no guest_memfd memslot, or a non-private page (kvm_gmem_populate: KVM_MEMORY_ATTRIBUTE_PRIVATE not set)"
        }
        libc::ENOMEM => {
            "the source pin, the guest_memfd folio or KVM's page-table caches could not be allocated; the page was not touched, unless the fault had already run once (RET_PF_RETRY in arch/x86/kvm/mmu/mmu.c: kvm_tdp_map_page), which prepared its folio: then a retry gets EEXIST"
        }
        libc::EHWPOISON => "the guest_memfd page is poisoned (__kvm_gmem_get_pfn)",
        libc::ENOTTY => "this KVM has no vCPU KVM_MEMORY_ENCRYPT_OP (not an Intel host)",
        _ => "an errno Linux 6.18 does not return for this command",
    }
}

fn errno_meaning_7_3(errno: i32) -> &'static str {
    match errno {
        libc::EINTR => {
            "a signal was pending (tdx_vcpu_init_mem_region, kvm_gmem_populate, kvm_tdp_mmu_map_private_pfn); nothing of the page was kept: resume from the region written back"
        }
        libc::EIO => {
            "TDH.MEM.PAGE.ADD or TDH.MR.EXTEND failed (tdx_mem_page_add, tdx_gmem_post_populate: TDX_BUG_ON marks the VM dead, every later ioctl is EIO), or the page was already mapped in the TD (kvm_tdp_mmu_map_private_pfn: RET_PF_SPURIOUS, the VM alive); Linux 7.3 cannot recover the plan"
        }
        libc::EFAULT => {
            "the region or the source page could not be read (copy_from_user; get_user_pages_fast in kvm_gmem_populate, before the page is looked at), or the memslot's guest_memfd is gone; the page was not touched"
        }
        libc::EINVAL => {
            "refused before the page was touched: vCPU not initialized or TD finalized (tdx_vcpu_unlocked_ioctl, tdx_vcpu_init_mem_region), bad flags, a source_addr of 0 or not page aligned, a misaligned, empty or wrapping range or a GPA with the shared bit (vt_is_tdx_private_gpa), a page in no guest_memfd memslot, or a non-private page (__kvm_gmem_populate: KVM_MEMORY_ATTRIBUTE_PRIVATE not set)"
        }
        libc::ENOMEM => {
            "the source pin or KVM's page-table caches could not be allocated (kvm_gmem_populate, kvm_tdp_mmu_map_private_pfn); the page was not touched"
        }
        libc::EHWPOISON => "the guest_memfd page is poisoned (__kvm_gmem_get_pfn)",
        libc::EPERM => "the GFN is write-tracked (kvm_tdp_mmu_map_private_pfn)",
        libc::ENOTTY => "this KVM has no vCPU KVM_MEMORY_ENCRYPT_OP (not an Intel host)",
        _ => "an errno Linux 7.3 does not return for this command",
    }
}

/// `arch/x86/kvm/cpuid.c: kvm_find_cpuid_entry2` (Linux 6.18.2 and 7.3.4): the first entry of
/// `function` whose index matches or is not significant.
fn find_cpuid_entry2(
    entries: &[kvm_cpuid_entry2],
    function: u32,
    index: u32,
) -> Option<&kvm_cpuid_entry2> {
    entries.iter().find(|e| {
        e.function == function
            && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == index)
    })
}

/// The CPUID checks of `arch/x86/kvm/vmx/tdx.c: setup_tdparams_eptp_controls` and
/// `tdx_unsupported_cpuid` (Linux 6.18.2 and 7.3.4) that hold on every host.
fn check_init_cpuid(cpuid: &[kvm_cpuid_entry2]) -> Result<(), Error> {
    let gpaw = find_cpuid_entry2(cpuid, 0x8000_0008, 0).map(|e| (e.eax >> 16) & 0xff);
    match gpaw {
        Some(48 | 52) => {}
        _ => {
            return Err(Error::InvalidParam {
                field: "0x80000008.EAX[23:16] (GPAW)",
                value: gpaw.map_or(u64::MAX, u64::from),
                reason: format!(
                    "{}; arch/x86/kvm/vmx/tdx.c: setup_tdparams_eptp_controls takes only 48 or 52 (KVM_TDX_CAPABILITIES reports 0xff there: the field is to be set), else EINVAL",
                    if gpaw.is_none() { "no such entry (shown as u64::MAX)" } else { "not 48 or 52" }
                ),
            });
        }
    }
    if let Some(e) = find_cpuid_entry2(cpuid, 7, 0).filter(|e| e.index == 0) {
        let tsx = e.ebx & (1 << 4 | 1 << 11);
        if tsx != 0 {
            return Err(Error::InvalidParam {
                field: "0x7.0.EBX (HLE, RTM)",
                value: u64::from(e.ebx),
                reason: "TSX cannot be given to a TD: arch/x86/kvm/vmx/tdx.c: tdx_unsupported_cpuid, EINVAL".into(),
            });
        }
        if e.ecx & (1 << 5) != 0 {
            return Err(Error::InvalidParam {
                field: "0x7.0.ECX (WAITPKG)",
                value: u64::from(e.ecx),
                reason: "WAITPKG cannot be given to a TD: arch/x86/kvm/vmx/tdx.c: tdx_unsupported_cpuid, EINVAL".into(),
            });
        }
    }
    Ok(())
}

/// Attempts of `KVM_TDX_INIT_VM` while it fails with `EAGAIN` (`TDX_RND_NO_ENTROPY` from
/// TDH.MNG.CREATE or TDH.MNG.ADDCX, `arch/x86/kvm/vmx/tdx.c: __tdx_td_init`): QEMU's bound
/// (`target/i386/kvm/tdx.c: tdx_pre_create_vcpu`, `retry = 10000`, no delay between).
pub const INIT_VM_ATTEMPTS: u32 = 10_000;

/// A step of the TD launch, as the guards of [`TdxBackend`] name it when they refuse a step
/// out of order ([`Error::StepMissing`], [`Error::TooLate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaunchStep {
    /// `KVM_TDX_CAPABILITIES` ([`TdxBackend::capabilities`]): its configurable CPUID bits are
    /// what `INIT_VM`'s CPUID is built from ([`init_vm_cpuid`]).
    Capabilities,
    /// `KVM_TDX_INIT_VM` ([`TdxBackend::init_vm`]).
    InitVm,
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` ([`TdxBackend::enable_split_irqchip`]).
    SplitIrqchip,
    /// `KVM_CREATE_VCPU` of this vCPU ([`TdxBackend::create_vcpu`]).
    CreateVcpu(u64),
    /// `KVM_SET_CPUID2` on this vCPU with CPUID.1:ECX.x2APIC ([`TdxBackend::set_cpuid`]).
    SetCpuid(u64),
    /// `KVM_TDX_INIT_VCPU` of this vCPU ([`TdxBackend::init_vcpu`]).
    InitVcpu(u64),
    /// `KVM_CREATE_VCPU` and `KVM_TDX_INIT_VCPU` of at least one vCPU.
    AnyVcpu,
    /// `KVM_TDX_INIT_MEM_REGION` (populate, through the driver).
    Populate,
    /// `KVM_TDX_FINALIZE_VM` ([`TdxBackend::finalize`]).
    Finalize,
    /// `KVM_RUN` on the TD's vCPUs ([`TdxBackend::ready_to_run`]).
    Run,
}

impl std::fmt::Display for LaunchStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchStep::Capabilities => f.write_str("KVM_TDX_CAPABILITIES"),
            LaunchStep::InitVm => f.write_str("KVM_TDX_INIT_VM"),
            LaunchStep::SplitIrqchip => f.write_str("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"),
            LaunchStep::CreateVcpu(id) => write!(f, "KVM_CREATE_VCPU({id})"),
            LaunchStep::SetCpuid(id) => {
                write!(
                    f,
                    "KVM_SET_CPUID2 on vCPU {id} with CPUID.1:ECX.x2APIC (bit 21)"
                )
            }
            LaunchStep::InitVcpu(id) => write!(f, "KVM_TDX_INIT_VCPU on vCPU {id}"),
            LaunchStep::AnyVcpu => {
                f.write_str("KVM_CREATE_VCPU and KVM_TDX_INIT_VCPU of at least one vCPU")
            }
            LaunchStep::Populate => f.write_str("KVM_TDX_INIT_MEM_REGION"),
            LaunchStep::Finalize => f.write_str("KVM_TDX_FINALIZE_VM"),
            LaunchStep::Run => f.write_str("KVM_RUN"),
        }
    }
}

/// GPAW leaf: CPUID 0x80000008 EAX bits 23:16 carry the TD's guest physical address width.
const GPAW_LEAF: u32 = 0x8000_0008;

/// Builds the CPUID for [`TdParams::cpuid`] (`KVM_TDX_INIT_VM`) as QEMU does: for each
/// configurable leaf of [`TdxCapabilities::cpuid`], the host's entry (`supported`: the
/// `KVM_GET_SUPPORTED_CPUID` entries, or the VMM's CPU model) masked by the configurable bits,
/// with its own sub-leaf and `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`; CPUID 0x80000008 EAX bits 23:16
/// set to `gpaw` (48, or 52 with 5-level EPT); TSX and WAITPKG cleared from leaf 7.0. Leaves
/// the host does not report are left out (the TD gets the module's value).
///
/// Why not pass the capabilities straight: their entries are masks of configurable bits, not
/// values, and carry no `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`, so Linux 6.18.2 fills every
/// sub-leaf of a leaf from its first entry (`arch/x86/kvm/vmx/tdx.c: setup_tdparams_cpuids`,
/// `td_init_cpuid_entry2`; `arch/x86/kvm/cpuid.c: kvm_find_cpuid_entry2`) with every
/// configurable bit set.
///
/// Refused ([`Error::InvalidParam`]): a `gpaw` other than 48 or 52, capabilities without the
/// GPAW leaf (`setup_tdparams_eptp_controls` needs it, and an entry that is not a
/// configurable leaf is `EINVAL` in `setup_tdparams_cpuids`).
///
/// ```
/// use tdx_backend::uapi::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
/// use tdx_backend::init_vm_cpuid;
///
/// let sig = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
/// let e = |function, index, flags, eax| kvm_cpuid_entry2 { function, index, flags, eax, ..Default::default() };
/// // KVM_TDX_CAPABILITIES: masks, no significant-index flag.
/// let configurable = [e(0x8000_0008, 0, 0, 0x00ff_ffff), e(7, 0, 0, 0xffff_ffff), e(7, 1, 0, 0x10)];
/// // KVM_GET_SUPPORTED_CPUID: values.
/// let supported = [e(7, 0, sig, 2), e(7, 1, sig, 0x30), e(0x8000_0008, 0, 0, 0x3030)];
/// let cpuid = init_vm_cpuid(&supported, &configurable, 48)?;
/// assert_eq!(cpuid[0].eax, 48 << 16 | 0x3030);
/// assert_eq!((cpuid[2].index, cpuid[2].flags, cpuid[2].eax), (1, sig, 0x10));
/// # Ok::<(), tdx_backend::Error>(())
/// ```
pub fn init_vm_cpuid(
    supported: &[kvm_cpuid_entry2],
    configurable: &[kvm_cpuid_entry2],
    gpaw: u8,
) -> Result<Vec<kvm_cpuid_entry2>, Error> {
    if !matches!(gpaw, 48 | 52) {
        return Err(Error::InvalidParam {
            field: "0x80000008.EAX[23:16] (GPAW)",
            value: u64::from(gpaw),
            reason: "not 48 or 52; arch/x86/kvm/vmx/tdx.c: setup_tdparams_eptp_controls (Linux 6.18.2 and 7.3.4) takes only those, else EINVAL".into(),
        });
    }
    if !configurable.iter().any(|c| c.function == GPAW_LEAF) {
        return Err(Error::InvalidParam {
            field: "0x80000008 (GPAW leaf)",
            value: u64::MAX,
            reason: "not a configurable leaf of this TDX module (shown as u64::MAX): arch/x86/kvm/vmx/tdx.c: setup_tdparams_eptp_controls needs it and setup_tdparams_cpuids refuses an entry the module cannot take, so KVM_TDX_INIT_VM cannot succeed".into(),
        });
    }
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(configurable.len());
    for c in configurable {
        if out
            .iter()
            .any(|o| o.function == c.function && o.index == c.index)
        {
            continue;
        }
        let host = find_cpuid_entry2(supported, c.function, c.index);
        let Some(h) = host.or(if c.function == GPAW_LEAF {
            Some(&ZERO_ENTRY)
        } else {
            None
        }) else {
            continue;
        };
        let mut e = kvm_cpuid_entry2 {
            function: c.function,
            index: c.index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            eax: h.eax & c.eax,
            ebx: h.ebx & c.ebx,
            ecx: h.ecx & c.ecx,
            edx: h.edx & c.edx,
            padding: [0; 3],
        };
        if e.function == GPAW_LEAF {
            e.eax = (h.eax & c.eax & !0x00ff_0000) | u32::from(gpaw) << 16;
        }
        if e.function == 7 && e.index == 0 {
            // tdx_unsupported_cpuid: TSX (HLE, RTM) and WAITPKG are EINVAL.
            e.ebx &= !(1 << 4 | 1 << 11);
            e.ecx &= !(1 << 5);
        }
        out.push(e);
    }
    Ok(out)
}

const ZERO_ENTRY: kvm_cpuid_entry2 = kvm_cpuid_entry2 {
    function: GPAW_LEAF,
    index: 0,
    flags: 0,
    eax: 0,
    ebx: 0,
    ecx: 0,
    edx: 0,
    padding: [0; 3],
};

/// The state of a TD whose `KVM_TDX_INIT_VM` the VMM issued itself, for
/// [`TdxBackend::attach`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdState<'a> {
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` was done.
    pub split_irqchip: bool,
    /// The vCPUs created, each with how far its launch went.
    pub vcpus: &'a [VcpuState],
    /// `KVM_TDX_FINALIZE_VM` succeeded.
    pub finalized: bool,
}

/// One vCPU of a [`TdState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuState {
    /// Its id (`KVM_CREATE_VCPU`).
    pub id: u64,
    /// `KVM_SET_CPUID2` with CPUID.1:ECX.x2APIC was done.
    pub x2apic_cpuid: bool,
    /// `KVM_TDX_INIT_VCPU` succeeded.
    pub initialized: bool,
}

/// What the backend knows of one vCPU's launch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VcpuLaunch {
    /// `KVM_SET_CPUID2` with CPUID.1:ECX.x2APIC went through this backend.
    x2apic_cpuid: bool,
    /// `KVM_TDX_INIT_VCPU` succeeded.
    initialized: bool,
}

/// Pages this backend added to the TD with one flag setting, contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddedRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes (whole pages).
    pub len: u64,
    /// Whether each page was also extended into MRTD (TDH.MR.EXTEND x 16).
    pub measured: bool,
}

/// What is known of the page an unrecoverable `KVM_TDX_INIT_MEM_REGION` stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// `EBUSY`, or `EIO` without `KVM_TDX_MEASURE_MEMORY_REGION`: TDH.MEM.PAGE.ADD failed
    /// after `kvm_tdp_map_page` had mapped the page (`tdx_gmem_post_populate`). It is not in
    /// the TD, but KVM counts it in `nr_premapped` (`tdx_mem_page_record_premap_cnt`), so
    /// `KVM_TDX_FINALIZE_VM` fails with `EINVAL` (`tdx_td_finalize`), and the fault marked its
    /// guest_memfd folio prepared (`kvm_gmem_get_pfn` -> `kvm_gmem_prepare_folio`), so another
    /// add gets `EEXIST` (`kvm_gmem_populate`).
    PreMappedNotAdded,
    /// `EIO` with `KVM_TDX_MEASURE_MEMORY_REGION`: either as [`PreMappedNotAdded`]
    /// (PAGE.ADD failed) or added with only some of its 16 MR.EXTENDs (then finalize succeeds,
    /// but MRTD matches no plan). Linux 6.18 does not say which: `hw_error` is not copied out
    /// for vCPU commands (`tdx_vcpu_ioctl`).
    ///
    /// [`PreMappedNotAdded`]: PageState::PreMappedNotAdded
    NotAddedOrPartlyMeasured,
    /// `EEXIST`: guest_memfd already had the page prepared (`kvm_gmem_populate`). This backend
    /// never added it; someone else did, or an earlier failed call left it prepared (e.g. a
    /// signal in `kvm_tdp_map_page` after the fault had prepared the folio). Whether it is in
    /// the TD is unknown here.
    AlreadyPrepared,
    /// `EIO`, and the VM is dead (`kvm->vm_dead`, asked through
    /// [`TdxIoctl::vm_dead`](crate::TdxIoctl::vm_dead)): a `KVM_BUG_ON` fired (6.18: in this
    /// call or before it, e.g. a failed TDH.MR.FINALIZE; 7.3.4 also on a failed PAGE.ADD or
    /// MR.EXTEND: `arch/x86/kvm/vmx/tdx.c: tdx_mem_page_add`, `tdx_gmem_post_populate`,
    /// `TDX_BUG_ON`). Every ioctl on the VM is now `EIO`; what the page holds no longer
    /// matters.
    VmDead,
    /// Linux 7.3, `EIO` with the VM alive: the page was already mapped in the TD, not by this
    /// backend (`arch/x86/kvm/mmu/mmu.c: kvm_tdp_mmu_map_private_pfn`: `RET_PF_SPURIOUS`).
    AlreadyInTd,
}

impl std::fmt::Display for PageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PageState::PreMappedNotAdded => {
                "not in the TD, but pre-mapped by KVM (KVM_TDX_FINALIZE_VM now fails with EINVAL) and prepared in guest_memfd (adding it again gets EEXIST)"
            }
            PageState::NotAddedOrPartlyMeasured => {
                "either not in the TD but pre-mapped (finalize fails with EINVAL), or in the TD with a partial MR.EXTEND (MRTD matches no plan); the kernel does not say which; prepared in guest_memfd (adding it again gets EEXIST)"
            }
            PageState::AlreadyPrepared => {
                "already prepared in guest_memfd before this backend added it (by another caller, or left by an earlier failed call); whether it is in the TD is unknown"
            }
            PageState::VmDead => {
                "moot: the VM is dead (a KVM_BUG_ON fired; every ioctl on it is now EIO)"
            }
            PageState::AlreadyInTd => {
                "already in the TD, added by someone else (the VM is alive)"
            }
        })
    }
}

/// The state a TD is left in by a populate failure the kernel cannot recover from: the pages
/// this backend added (all of them, across every call), and the page it stopped at.
///
/// The TD cannot be finalized to the plan's MRTD: tear the VM down and start again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrecoverable {
    /// The kernel whose rules judged it.
    pub kernel: Kernel,
    /// The errno of the failing `KVM_TDX_INIT_MEM_REGION`.
    pub errno: i32,
    /// The page it stopped at.
    pub page: u64,
    /// What is known of that page.
    pub page_state: PageState,
    /// The pages this backend added to the TD, in the order added, contiguous runs merged.
    pub in_td: Vec<AddedRange>,
}

impl Unrecoverable {
    /// Bytes this backend added to the TD.
    pub fn bytes_in_td(&self) -> u64 {
        self.in_td.iter().map(|r| r.len).sum()
    }
}

impl std::fmt::Display for Unrecoverable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unrecoverable on {}: KVM_TDX_INIT_MEM_REGION failed with errno {} ({}) at page {:#x}, which is {}; in the TD ({} bytes added by this backend):",
            self.kernel,
            self.errno,
            std::io::Error::from_raw_os_error(self.errno),
            self.page,
            self.page_state,
            self.bytes_in_td()
        )?;
        if self.in_td.is_empty() {
            f.write_str(" nothing")?;
        }
        for (i, r) in self.in_td.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let how = if r.measured { "measured" } else { "unmeasured" };
            write!(f, "{sep}[{:#x}..{:#x}) {how}", r.gpa, r.gpa + r.len)?;
        }
        f.write_str("; tear the VM down")
    }
}

struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + PAGE_SIZE as usize];
        let off = buf.as_ptr().align_offset(PAGE_SIZE as usize);
        Aligned { buf, off, len }
    }
    fn get(&self, n: usize) -> &[u8] {
        &self.buf[self.off..self.off + n.min(self.len)]
    }
    fn fill(&mut self, src: &[u8]) -> &[u8] {
        let n = src.len().min(self.len);
        self.buf[self.off..self.off + n].copy_from_slice(&src[..n]);
        &self.buf[self.off..self.off + n]
    }
}

/// A TD being launched: the typed launch steps and the `cc-populate` [`Backend`] that populates
/// through `KVM_TDX_INIT_MEM_REGION`.
///
/// The order Linux 6.18.2 enforces, and this backend's guards with it (each step out of order
/// is refused before any ioctl with [`Error::StepMissing`] or [`Error::TooLate`], naming the
/// step; every rule is cited, `tdx.c` being `arch/x86/kvm/vmx/tdx.c`):
///
/// 1. `KVM_CREATE_VM(KVM_X86_TDX_VM)` ([`create_td_vm`](crate::create_td_vm));
/// 2. [`capabilities`](Self::capabilities), then [`init_vm`](Self::init_vm) with a CPUID from
///    [`init_vm_cpuid`](crate::init_vm_cpuid) (`tdx.c: tdx_td_init`; once, before any vCPU);
/// 3. [`enable_split_irqchip`](Self::enable_split_irqchip) (before any vCPU:
///    `arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap`; a TD vCPU needs it: `tdx.c:
///    tdx_vcpu_create`, `EINVAL`);
/// 4. for every vCPU: [`create_vcpu`](Self::create_vcpu) (after `INIT_VM` and before
///    finalize, else `EIO`: `tdx_vcpu_create`), [`set_cpuid`](Self::set_cpuid) with x2APIC,
///    then [`init_vcpu`](Self::init_vcpu) (`tdx.c: tdx_vcpu_init` -> `arch/x86/kvm/lapic.c:
///    kvm_apic_set_base`, `EINVAL` without x2APIC in the vCPU's CPUID; the kernel's
///    `intel-tdx.rst` lists `INIT_VCPU` before `KVM_SET_CPUID2`, its code wants CPUID first);
/// 5. populate (the driver: make private, then `KVM_TDX_INIT_MEM_REGION`), once every vCPU
///    the backend created is initialized;
/// 6. [`finalize`](Self::finalize), once every vCPU is initialized: afterwards no vCPU can be
///    created (`EIO`, `tdx_vcpu_create`) or initialized (`EINVAL`, `tdx_vcpu_ioctl`).
///
/// A VMM that issued steps 2-4 itself builds the backend with
/// [`initialized`](Self::initialized) instead of [`new`](Self::new).
pub struct TdxBackend<I> {
    ioctl: I,
    kernel: Kernel,
    bounce: Option<Aligned>,
    zero: Option<Aligned>,
    finalized: bool,
    td_checked: bool,
    vm_initialized: bool,
    split_irqchip: bool,
    vcpus: BTreeMap<u64, VcpuLaunch>,
    added: Vec<AddedRange>,
    unrecoverable: Option<Box<Unrecoverable>>,
    in_place: bool,
}

impl<I: TdxIoctl> TdxBackend<I> {
    /// A backend for a fresh TD, issuing its ioctls through `ioctl` (a
    /// [`KvmTdx`](crate::KvmTdx) on a real TD). Every launch step goes through it, in order.
    pub fn new(ioctl: I) -> Self {
        TdxBackend {
            ioctl,
            kernel: Kernel::V6_18,
            bounce: None,
            zero: None,
            finalized: false,
            td_checked: false,
            vm_initialized: false,
            split_irqchip: false,
            vcpus: BTreeMap::new(),
            added: Vec::new(),
            unrecoverable: None,
            in_place: false,
        }
    }

    /// Offers in-place content ([`cc_populate::Content::InPlace`]: written through the
    /// guest_memfd's shared mapping before the run): the backend's caps then say `in_place`
    /// ([`TDX_CAPS`] otherwise), and whether the kernel adds such pages from their own
    /// contents is decided per run ([`Backend::in_place_populate`]): with the in-place
    /// conversion series and its module parameter on ([`TdxIoctl::in_place_populate`], v8
    /// patch 23/46) the driver converts the region and the backend sends `source_addr` 0;
    /// elsewhere the driver stops before converting, or copies the content to a separate
    /// source first where the caller allowed it (`cc_populate::DriverOptions::in_place_fallback`).
    /// Follows the posted series; it has not run on a kernel or on TDX hardware.
    pub fn with_in_place(mut self, on: bool) -> Self {
        self.in_place = on;
        self
    }

    /// A backend for a TD whose `KVM_TDX_INIT_VM`, split irqchip, and vCPU creation,
    /// `KVM_SET_CPUID2` and `KVM_TDX_INIT_VCPU` of every vCPU in `vcpus` the caller did
    /// itself: the guards take those steps as done, and check populate and finalize against
    /// them. Listing a vCPU not initialized makes the kernel, not the guard, refuse.
    pub fn initialized(ioctl: I, vcpus: &[u64]) -> Self {
        let vcpus: Vec<VcpuState> = vcpus
            .iter()
            .map(|id| VcpuState {
                id: *id,
                x2apic_cpuid: true,
                initialized: true,
            })
            .collect();
        Self::attach(
            ioctl,
            &TdState {
                split_irqchip: true,
                vcpus: &vcpus,
                finalized: false,
            },
        )
    }

    /// A backend for a TD whose `KVM_TDX_INIT_VM` the VMM issued itself, in the state `state`
    /// says (given, not replayed: no ioctl is sent). The guards then refuse what that state
    /// rules out, as for a TD launched through this backend: `init_vm` again, the split
    /// irqchip after a vCPU or twice, `init_vcpu` of a vCPU without x2APIC in its CPUID,
    /// finalize while a vCPU is not initialized, and after `finalized` every launch step and
    /// populate ([`Error::TooLate`]).
    pub fn attach(ioctl: I, state: &TdState<'_>) -> Self {
        let mut b = Self::new(ioctl);
        b.vm_initialized = true;
        b.split_irqchip = state.split_irqchip;
        b.finalized = state.finalized;
        for v in state.vcpus {
            b.vcpus.insert(
                v.id,
                VcpuLaunch {
                    x2apic_cpuid: v.x2apic_cpuid,
                    initialized: v.initialized,
                },
            );
        }
        b
    }

    /// Follows `kernel`'s rules (where 6.18 and 7.3 differ: how a failed populate is judged,
    /// what errnos mean); [`new`](Self::new) follows [`Kernel::V6_18`]. Pick it from the
    /// running kernel with [`Kernel::running`].
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// The release whose rules this backend follows.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The vCPUs this backend knows (created through it, or given to
    /// [`initialized`](Self::initialized)), each with whether `KVM_TDX_INIT_VCPU` was done.
    pub fn vcpus(&self) -> Vec<(u64, bool)> {
        self.vcpus
            .iter()
            .map(|(id, v)| (*id, v.initialized))
            .collect()
    }

    /// The first step still missing before populate or finalize: `INIT_VM`, a vCPU, or the
    /// `INIT_VCPU` of a vCPU the backend knows.
    fn missing_before(&self, step: LaunchStep) -> Result<(), Error> {
        let missing = |missing, why| Err(Error::StepMissing { step, missing, why });
        if !self.vm_initialized {
            return missing(
                LaunchStep::InitVm,
                "arch/x86/kvm/vmx/tdx.c (Linux 6.18.2 and 7.3.4): tdx_vm_ioctl, tdx_vcpu_ioctl refuse a TD without an HKID with EINVAL",
            );
        }
        if let Some((id, _)) = self.vcpus.iter().find(|(_, v)| !v.initialized) {
            return missing(
                LaunchStep::InitVcpu(*id),
                "every vCPU must be initialized before KVM_TDX_FINALIZE_VM, after which KVM_TDX_INIT_VCPU is EINVAL (arch/x86/kvm/vmx/tdx.c: tdx_vcpu_ioctl, Linux 6.18.2; tdx_vcpu_unlocked_ioctl in 7.3.4); KVM_TDX_INIT_MEM_REGION needs an initialized vCPU (tdx_vcpu_init_mem_region)",
            );
        }
        if self.vcpus.is_empty() {
            return missing(
                LaunchStep::AnyVcpu,
                "KVM_TDX_INIT_MEM_REGION runs on an initialized vCPU (arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init_mem_region), and after KVM_TDX_FINALIZE_VM no vCPU can be created (tdx_vcpu_create: EIO), Linux 6.18.2 and 7.3.4",
            );
        }
        Ok(())
    }

    /// [`Error::NoVcpu`] when the ioctl layer has no vCPU fd for the command.
    fn vcpu_fd(&self, step: LaunchStep, vcpu: Option<u64>) -> Result<(), Error> {
        if self.ioctl.has_vcpu(vcpu) {
            return Ok(());
        }
        Err(Error::NoVcpu {
            step,
            reason: match vcpu {
                Some(id) => format!("the ioctl layer holds no fd for vCPU {id}"),
                None => "the ioctl layer has no vCPU: create one through it, or lend one (KvmTdx::with_vcpu)".into(),
            },
        })
    }

    fn not_finalized(&self, step: LaunchStep, why: &'static str) -> Result<(), Error> {
        if self.finalized {
            return Err(Error::TooLate {
                step,
                done: LaunchStep::Finalize,
                why,
            });
        }
        Ok(())
    }

    /// The pages this backend added to the TD so far, in the order added (contiguous runs with
    /// the same measure flag merged).
    pub fn added(&self) -> &[AddedRange] {
        &self.added
    }

    /// The unrecoverable state a populate failure left the TD in, if one did. After it,
    /// populate and [`finalize`](Self::finalize) are refused without an ioctl.
    pub fn unrecoverable(&self) -> Option<&Unrecoverable> {
        self.unrecoverable.as_deref()
    }

    /// [`check_td`](crate::check_td), once: every TDX command waits for it.
    fn ensure_td(&mut self) -> Result<(), Error> {
        if !self.td_checked {
            crate::check_td(&mut self.ioctl)?;
            self.td_checked = true;
        }
        Ok(())
    }

    fn record_added(&mut self, gpa: u64, len: u64, measured: bool) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.added.last_mut() {
            if last.measured == measured && last.gpa + last.len == gpa {
                last.len += len;
                return;
            }
        }
        self.added.push(AddedRange { gpa, len, measured });
    }

    /// The ioctl layer.
    pub fn ioctl(&self) -> &I {
        &self.ioctl
    }

    /// The ioctl layer, mutably.
    pub fn ioctl_mut(&mut self) -> &mut I {
        &mut self.ioctl
    }

    /// Gives the ioctl layer back.
    pub fn into_ioctl(self) -> I {
        self.ioctl
    }

    fn vm_cmd(
        &mut self,
        op: &'static str,
        id: u32,
        data: u64,
        payload: Option<&mut [u8]>,
    ) -> Result<kvm_tdx_cmd, Error> {
        self.ensure_td()?;
        let mut cmd = kvm_tdx_cmd {
            id,
            flags: 0,
            data,
            hw_error: 0,
        };
        self.ioctl
            .vm_op(&mut cmd, payload)
            .map_err(|errno| Error::ioctl(op, errno, cmd.hw_error, ""))?;
        Ok(cmd)
    }

    /// `KVM_TDX_CAPABILITIES`, after [`check_td`](crate::check_td). On a host without TDX
    /// this is [`Error::NotSupported`], on a VM that is not a TD [`Error::NotATd`], both
    /// without sending the command.
    ///
    /// Room is made for `KVM_MAX_CPUID_ENTRIES` (256) CPUID entries, twice the most a TDX
    /// module can report to Linux 6.18 (128). `E2BIG` is a hard error: the kernel does not write
    /// the needed count back (`arch/x86/kvm/vmx/tdx.c: tdx_get_capabilities` returns before
    /// any copy).
    pub fn capabilities(&mut self) -> Result<TdxCapabilities, Error> {
        let room = KVM_MAX_CPUID_ENTRIES as usize;
        let mut b = vec![0u8; CAPS_HEADER + CPUID2_HEADER + room * CPUID_ENTRY];
        b[CAPS_HEADER..CAPS_HEADER + 4].copy_from_slice(&(room as u32).to_le_bytes());
        match self.vm_cmd(
            "KVM_TDX_CAPABILITIES",
            KVM_TDX_CAPABILITIES,
            0,
            Some(&mut b),
        ) {
            Ok(_) => {}
            Err(Error::Ioctl { errno, .. }) if errno == libc::E2BIG => {
                return Err(Error::ioctl(
                    "KVM_TDX_CAPABILITIES",
                    errno,
                    0,
                    &format!("the TDX module reports more than {room} configurable CPUID leaves (no 6.18 kernel takes a module with more than {TDX_MAX_CPUID_CONFIG}); the kernel does not say how many (tdx_get_capabilities)"),
                ))
            }
            Err(Error::Ioctl { errno, .. }) if errno == libc::ENOTTY => {
                return Err(Error::NotSupported {
                    reason: format!(
                        "KVM_MEMORY_ENCRYPT_OP(KVM_TDX_CAPABILITIES) refused with errno {errno} ({}): not a TD (vt_mem_enc_ioctl)",
                        std::io::Error::from_raw_os_error(errno)
                    ),
                })
            }
            Err(e) => return Err(e),
        }
        let nent = u32_at(&b, CAPS_HEADER) as usize;
        let entries = &b[CAPS_HEADER + CPUID2_HEADER..];
        let cpuid = (0..nent.min(room))
            .filter_map(|i| get_entry(&entries[i * CPUID_ENTRY..]))
            .collect();
        Ok(TdxCapabilities {
            supported_attrs: u64_at(&b, 0),
            supported_xfam: u64_at(&b, 8),
            kernel_tdvmcallinfo_1_r11: u64_at(&b, 16),
            user_tdvmcallinfo_1_r11: u64_at(&b, 24),
            kernel_tdvmcallinfo_1_r12: u64_at(&b, 32),
            user_tdvmcallinfo_1_r12: u64_at(&b, 40),
            cpuid,
        })
    }

    /// `KVM_TDX_INIT_VM` with `params` (before any vCPU is created).
    ///
    /// Refused before the ioctl ([`Error::InvalidParam`]), as Linux 6.18.2's `setup_tdparams`
    /// refuses them with `EINVAL` on every host: a CPUID without leaf 0x80000008 whose EAX bits
    /// 23:16 (the guest physical address width) are 48 or 52 (`KVM_TDX_CAPABILITIES` reports
    /// that field as 0xff, configurable: set it), and leaf 7.0 with TSX (EBX bits 4, 11) or
    /// WAITPKG (ECX bit 5). Entries that are not configurable leaves of the module, and a GPAW
    /// of 52 without 5-level EPT, are the kernel's `EINVAL`.
    ///
    /// `EAGAIN` means the CPU's random number generator ran dry in TDH.MNG.CREATE or
    /// TDH.MNG.ADDCX (`__tdx_td_init`; the TD stays uninitialized): the command is sent again,
    /// up to [`INIT_VM_ATTEMPTS`] times in all, as QEMU does. `EINVAL` with `hw_error`
    /// `TDX_OPERAND_INVALID` names the operand TDH.MNG.INIT refused.
    pub fn init_vm(&mut self, params: &TdParams) -> Result<(), Error> {
        let step = LaunchStep::InitVm;
        if self.vm_initialized {
            return Err(Error::TooLate {
                step,
                done: LaunchStep::InitVm,
                why: "a TD is initialized once: arch/x86/kvm/vmx/tdx.c: tdx_td_init (Linux 6.18.2 and 7.3.4) answers EINVAL when the TD is not uninitialized",
            });
        }
        if let Some(id) = self.vcpus.keys().next() {
            return Err(Error::TooLate {
                step,
                done: LaunchStep::CreateVcpu(*id),
                why: "arch/x86/kvm/vmx/tdx.c: setup_tdparams (Linux 6.18.2 and 7.3.4) answers EBUSY once vCPUs exist",
            });
        }
        self.ensure_td()?;
        check_init_cpuid(&params.cpuid)?;
        let mut b = params.to_bytes();
        for _ in 0..INIT_VM_ATTEMPTS {
            match self.vm_cmd("KVM_TDX_INIT_VM", KVM_TDX_INIT_VM, 0, Some(&mut b)) {
                Err(Error::Ioctl { errno, .. }) if errno == libc::EAGAIN => continue,
                r => {
                    r?;
                    self.vm_initialized = true;
                    return Ok(());
                }
            }
        }
        Err(Error::ioctl(
            "KVM_TDX_INIT_VM",
            libc::EAGAIN,
            0,
            &format!("TDX_RND_NO_ENTROPY: the CPU's random number generator stayed dry for {INIT_VM_ATTEMPTS} attempts (QEMU's bound); something is draining RDRAND/RDSEED"),
        ))
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` with `nr_ioapic_pins` pins reserved for the
    /// VMM's I/O APIC (QEMU: [`SPLIT_IRQCHIP_IOAPIC_PINS`](crate::uapi::SPLIT_IRQCHIP_IOAPIC_PINS),
    /// 24). A TD's vCPUs need it: `arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create` (Linux 6.18.2 and 7.3.4)
    /// refuses a vCPU with `EINVAL` without it (the TDX module mandates APICv, and an in-kernel
    /// I/O APIC cannot be emulated for a TD).
    ///
    /// Refused after a vCPU was created ([`Error::TooLate`]; the kernel: `EEXIST`,
    /// `arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap`), and when done already. More than
    /// [`MAX_NR_RESERVED_IOAPIC_PINS`](crate::uapi::MAX_NR_RESERVED_IOAPIC_PINS) pins is the
    /// kernel's `EINVAL`.
    pub fn enable_split_irqchip(&mut self, nr_ioapic_pins: u64) -> Result<(), Error> {
        let step = LaunchStep::SplitIrqchip;
        let too_late = |done, why| Err(Error::TooLate { step, done, why });
        if self.split_irqchip {
            return too_late(
                LaunchStep::SplitIrqchip,
                "arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap (Linux 6.18.2 and 7.3.4): EEXIST once an irqchip is in the kernel",
            );
        }
        if let Some(id) = self.vcpus.keys().next() {
            return too_late(
                LaunchStep::CreateVcpu(*id),
                "arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap (Linux 6.18.2 and 7.3.4): EEXIST once vCPUs exist",
            );
        }
        self.ioctl
            .enable_split_irqchip(nr_ioapic_pins)
            .map_err(|errno| Error::ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", errno, 0, ""))?;
        self.split_irqchip = true;
        Ok(())
    }

    /// `KVM_CREATE_VCPU(id)` through the ioctl layer (which keeps the vCPU fd: with
    /// [`KvmTdx`](crate::KvmTdx), take it back with `KvmTdx::vcpu` or `KvmTdx::into_vcpus`).
    ///
    /// Refused ([`Error::StepMissing`]) before [`init_vm`](Self::init_vm) (the kernel: `EIO`,
    /// `arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create`, Linux 6.18.2) and before
    /// [`enable_split_irqchip`](Self::enable_split_irqchip) (`EINVAL`, same function);
    /// after [`finalize`](Self::finalize) ([`Error::TooLate`]; the kernel: `EIO`). An id
    /// already created is the kernel's `EEXIST` (`virt/kvm/kvm_main.c:
    /// kvm_vm_ioctl_create_vcpu`).
    pub fn create_vcpu(&mut self, id: u64) -> Result<(), Error> {
        let step = LaunchStep::CreateVcpu(id);
        self.not_finalized(
            step,
            "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create (Linux 6.18.2 and 7.3.4) answers EIO once the TD is runnable",
        )?;
        if !self.vm_initialized {
            return Err(Error::StepMissing {
                step,
                missing: LaunchStep::InitVm,
                why: "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create (Linux 6.18.2 and 7.3.4) answers EIO before the TD is initialized",
            });
        }
        if !self.split_irqchip {
            return Err(Error::StepMissing {
                step,
                missing: LaunchStep::SplitIrqchip,
                why: "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create (Linux 6.18.2 and 7.3.4) answers EINVAL without a split irqchip",
            });
        }
        self.ensure_td()?;
        self.ioctl
            .create_vcpu(id)
            .map_err(|errno| Error::ioctl("KVM_CREATE_VCPU", errno, 0, &format!("vCPU {id}")))?;
        self.vcpus.insert(id, VcpuLaunch::default());
        Ok(())
    }

    /// `KVM_SET_CPUID2` on vCPU `id` (created with [`create_vcpu`](Self::create_vcpu)). For
    /// [`init_vcpu`](Self::init_vcpu) the entries must have CPUID.1:ECX.x2APIC (bit 21,
    /// [`CPUID_1_ECX_X2APIC`](crate::uapi::CPUID_1_ECX_X2APIC)): `KVM_TDX_INIT_VCPU` sets the
    /// APIC to x2APIC mode, which `arch/x86/kvm/lapic.c: kvm_apic_set_base` refuses without
    /// it (`tdx_vcpu_init`: `EINVAL`, Linux 6.18.2). The host's `KVM_GET_SUPPORTED_CPUID` has
    /// it (KVM emulates x2APIC).
    pub fn set_cpuid(&mut self, id: u64, entries: &[kvm_cpuid_entry2]) -> Result<(), Error> {
        let step = LaunchStep::SetCpuid(id);
        let Some(v) = self.vcpus.get(&id).copied() else {
            return Err(Error::StepMissing {
                step,
                missing: LaunchStep::CreateVcpu(id),
                why: "the ioctl needs the vCPU's fd",
            });
        };
        self.vcpu_fd(step, Some(id))?;
        self.ioctl
            .set_cpuid(id, entries)
            .map_err(|errno| Error::ioctl("KVM_SET_CPUID2", errno, 0, &format!("vCPU {id}")))?;
        let x2apic = find_cpuid_entry2(entries, 1, 0)
            .is_some_and(|e| e.ecx & crate::uapi::CPUID_1_ECX_X2APIC != 0);
        self.vcpus.insert(
            id,
            VcpuLaunch {
                x2apic_cpuid: x2apic,
                ..v
            },
        );
        Ok(())
    }

    /// `KVM_TDX_INIT_VCPU` on vCPU `id`; `rcx` is its initial RCX (TDVF expects the TD HOB's
    /// address there).
    ///
    /// Refused ([`Error::StepMissing`]) before [`init_vm`](Self::init_vm), for a vCPU not
    /// created through this backend, and before [`set_cpuid`](Self::set_cpuid) with x2APIC
    /// (the kernel: `EINVAL`, `arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init` ->
    /// `arch/x86/kvm/lapic.c: kvm_apic_set_base`, Linux 6.18.2); [`Error::TooLate`] a second
    /// time (`tdx_vcpu_init`: `EINVAL`) and after [`finalize`](Self::finalize)
    /// (`tdx_vcpu_ioctl`: `EINVAL`).
    ///
    /// Linux 6.18 never copies a vCPU command back (`tdx_vcpu_ioctl`): there is no module
    /// status to read, only the errno.
    pub fn init_vcpu(&mut self, id: u64, rcx: u64) -> Result<(), Error> {
        let step = LaunchStep::InitVcpu(id);
        self.not_finalized(
            step,
            "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_ioctl (Linux 6.18.2; tdx_vcpu_unlocked_ioctl in 7.3.4) answers EINVAL once the TD is runnable",
        )?;
        let missing = |missing, why| Err(Error::StepMissing { step, missing, why });
        if !self.vm_initialized {
            return missing(
                LaunchStep::InitVm,
                "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_ioctl (Linux 6.18.2; tdx_vcpu_unlocked_ioctl in 7.3.4) answers EINVAL without an HKID",
            );
        }
        let Some(v) = self.vcpus.get(&id).copied() else {
            return missing(LaunchStep::CreateVcpu(id), "the ioctl needs the vCPU's fd");
        };
        if v.initialized {
            return Err(Error::TooLate {
                step,
                done: step,
                why: "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init (Linux 6.18.2 and 7.3.4) answers EINVAL for a vCPU not uninitialized",
            });
        }
        if !v.x2apic_cpuid {
            return missing(
                LaunchStep::SetCpuid(id),
                "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init -> arch/x86/kvm/lapic.c: kvm_apic_set_base (Linux 6.18.2 and 7.3.4) refuses x2APIC mode with EINVAL unless the vCPU's CPUID has it",
            );
        }
        self.ensure_td()?;
        self.vcpu_fd(step, Some(id))?;
        let mut cmd = kvm_tdx_cmd {
            id: KVM_TDX_INIT_VCPU,
            flags: 0,
            data: rcx,
            hw_error: 0,
        };
        self.ioctl
            .vcpu_op_on(id, &mut cmd, None)
            .map_err(|errno| Error::ioctl("KVM_TDX_INIT_VCPU", errno, 0, &format!("vCPU {id}")))?;
        self.vcpus.insert(
            id,
            VcpuLaunch {
                initialized: true,
                ..v
            },
        );
        Ok(())
    }

    /// `KVM_TDX_FINALIZE_VM` (TDH.MR.FINALIZE): MRTD is fixed, no page can be added after,
    /// and no vCPU created or initialized.
    ///
    /// Refused before any ioctl ([`Error::StepMissing`], naming the step) before
    /// [`init_vm`](Self::init_vm), while a vCPU this backend knows is not initialized, and
    /// with no vCPU at all: Linux 6.18.2 would finalize, but then refuse every vCPU
    /// (`arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create`: `EIO`; `tdx_vcpu_ioctl`: `EINVAL`).
    ///
    /// Refused without an ioctl after an [`Unrecoverable`] populate failure: Linux 6.18 would
    /// fail with `EINVAL` (a page pre-mapped but not added, `tdx_td_finalize`) or fix an MRTD
    /// no plan has. `EBUSY` (`TDX_OPERAND_BUSY` in `hw_error`) may be retried by the caller;
    /// `EIO` (another status in `hw_error`) means the kernel marked the VM dead.
    pub fn finalize(&mut self) -> Result<(), Error> {
        if let Some(u) = &self.unrecoverable {
            return Err(Error::Unrecoverable(u.clone()));
        }
        self.not_finalized(
            LaunchStep::Finalize,
            "arch/x86/kvm/vmx/tdx.c: tdx_td_finalize (Linux 6.18.2 and 7.3.4) answers EINVAL for a runnable TD",
        )?;
        self.missing_before(LaunchStep::Finalize)?;
        self.vm_cmd("KVM_TDX_FINALIZE_VM", KVM_TDX_FINALIZE_VM, 0, None)
            .map_err(|e| match e {
                Error::Ioctl {
                    op,
                    errno: libc::EIO,
                    hw_error,
                    ..
                } => Error::ioctl(
                    op,
                    libc::EIO,
                    hw_error,
                    "TDH.MR.FINALIZE failed other than busy: arch/x86/kvm/vmx/tdx.c: tdx_td_finalize (Linux 6.18.2 and 7.3.4) marks the VM dead (KVM_BUG_ON), so every later ioctl on it is EIO; tear it down",
                ),
                e => e,
            })?;
        self.finalized = true;
        self.release_buffers();
        Ok(())
    }

    /// Whether populate can start: `Ok` once `INIT_VM` is done and every vCPU this backend
    /// knows is initialized, with a vCPU fd to send `KVM_TDX_INIT_MEM_REGION` on; else the
    /// error populate would stop with, typed ([`Error::StepMissing`], [`Error::NoVcpu`],
    /// [`Error::TooLate`] after finalize). Call it before running the driver to get the
    /// missing step as a value rather than in the driver's report.
    pub fn ready_to_populate(&self) -> Result<(), Error> {
        self.not_finalized(
            LaunchStep::Populate,
            "arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init_mem_region (Linux 6.18.2 and 7.3.4) answers EINVAL once the TD is runnable",
        )?;
        self.missing_before(LaunchStep::Populate)?;
        self.vcpu_fd(LaunchStep::Populate, None)
    }

    /// Whether the TD's vCPUs can run: `Ok` once [`finalize`](Self::finalize) succeeded (which
    /// needs every vCPU this backend knows initialized); else [`Error::StepMissing`] naming
    /// `KVM_TDX_FINALIZE_VM` (`KVM_RUN` is `EINVAL` until the TD is runnable and the vCPU
    /// initialized: `arch/x86/kvm/vmx/tdx.c: tdx_vcpu_pre_run`, 6.18.2;
    /// `tdx_vcpu_needs_initialization` from `arch/x86/kvm/x86.c: kvm_x86_vcpu_pre_run`, 7.3.4).
    pub fn ready_to_run(&self) -> Result<(), Error> {
        if self.finalized {
            return Ok(());
        }
        self.missing_before(LaunchStep::Run)?;
        Err(Error::StepMissing {
            step: LaunchStep::Run,
            missing: LaunchStep::Finalize,
            why: "KVM_RUN is EINVAL until the TD is runnable: arch/x86/kvm/vmx/tdx.c: tdx_vcpu_pre_run (Linux 6.18.2), tdx_vcpu_needs_initialization (7.3.4)",
        })
    }

    /// Frees the bounce buffer and the zero source (2 MiB each, allocated on first use), e.g.
    /// once populate is done; they are allocated again if needed.
    pub fn release_buffers(&mut self) {
        self.bounce = None;
        self.zero = None;
    }

    /// Whether [`finalize`](Self::finalize) succeeded.
    pub fn is_finalized(&self) -> bool {
        self.finalized
    }
}

/// Where the pages of one `KVM_TDX_INIT_MEM_REGION` come from.
#[derive(Clone, Copy)]
enum PageSource<'s> {
    /// A page-aligned buffer of whole pages.
    Buffer(&'s [u8]),
    /// This many bytes of pages added from their own contents: `source_addr` 0 (in-place
    /// conversion series v8 patch 23/46).
    InPlace(u64),
}

/// One `KVM_TDX_INIT_MEM_REGION` of `source` at `gpa`.
/// Returns the bytes done, as the kernel wrote them back, and the errno with its message.
fn add_pages<I: TdxIoctl>(
    kernel: Kernel,
    ioctl: &mut I,
    gpa: u64,
    source: PageSource<'_>,
    flags: u32,
) -> (u64, Result<(), (i32, BackendError)>) {
    let (source, nr, start) = match source {
        PageSource::Buffer(b) => (b, b.len() as u64 / PAGE_SIZE, b.as_ptr() as u64),
        PageSource::InPlace(len) => (&[][..], len / PAGE_SIZE, 0),
    };
    let mut region = kvm_tdx_init_mem_region {
        source_addr: start,
        gpa,
        nr_pages: nr,
    };
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_MEM_REGION,
        flags,
        data: 0,
        hw_error: 0,
    };
    let r = ioctl.init_mem_region(&mut cmd, &mut region, source);
    let what = if flags & KVM_TDX_MEASURE_MEMORY_REGION != 0 {
        "PAGE.ADD+MR.EXTEND"
    } else {
        "PAGE.ADD"
    };
    // tdx_vcpu_init_mem_region advances all three fields together, one page at a time, and
    // writes the region back whatever the outcome; a source_addr of 0 stays 0 (series v8
    // patch 23/46: `if (region.source_addr)`).
    let pages = nr.checked_sub(region.nr_pages);
    let consistent = pages.is_some_and(|p| {
        let source_addr = if start == 0 {
            0
        } else {
            start.wrapping_add(p * PAGE_SIZE)
        };
        region.gpa == gpa.wrapping_add(p * PAGE_SIZE) && region.source_addr == source_addr
    });
    let Some(pages) = pages.filter(|_| consistent) else {
        let e = BackendError::new(
            cc_populate::ErrorKind::Failed,
            format!(
                "KVM_TDX_INIT_MEM_REGION [{gpa:#x}..+{:#x}) {what}: the kernel wrote back an impossible region (gpa {:#x}, nr_pages {}, source {:#x} from {start:#x}); nothing counted",
                nr * PAGE_SIZE,
                region.gpa,
                region.nr_pages,
                region.source_addr
            ),
        );
        // Where it stopped is unknown: no errno is judged for an impossible write-back.
        return (0, Err((0, e)));
    };
    let done = pages * PAGE_SIZE;
    match r {
        Ok(()) => (done, Ok(())),
        Err(errno) => {
            // No hw_error to read: tdx_vcpu_ioctl (6.18.2) and tdx_vcpu_unlocked_ioctl (7.3.4)
            // never copy the command back.
            let e = BackendError::from_errno(
                errno,
                format!(
                    "KVM_TDX_INIT_MEM_REGION [{gpa:#x}..+{:#x}) {what}: stopped at GPA {:#x} after {pages} page(s): {}",
                    nr * PAGE_SIZE,
                    gpa + done,
                    init_mem_region_errno_meaning_on(kernel, errno)
                ),
            );
            (done, Err((errno, e)))
        }
    }
}

impl<I: TdxIoctl> TdxBackend<I> {
    /// Marks the errors the kernel followed cannot recover from (6.18: a page prepared in
    /// guest_memfd that this backend did not add, or one pre-mapped or half-measured by a
    /// failed add; 7.3: a page already in the TD; both: a dead VM, asked of the VM fd after an
    /// `EIO`) and keeps the TD's state for [`unrecoverable`](Self::unrecoverable).
    fn judge(&mut self, errno: i32, page: u64, measured: bool, e: BackendError) -> BackendError {
        let dead = errno == libc::EIO && self.ioctl.vm_dead();
        let page_state = match (self.kernel, errno) {
            (_, libc::EIO) if dead => PageState::VmDead,
            (Kernel::V6_18, libc::EBUSY) => PageState::PreMappedNotAdded,
            (Kernel::V6_18, libc::EIO) if measured => PageState::NotAddedOrPartlyMeasured,
            (Kernel::V6_18, libc::EIO) => PageState::PreMappedNotAdded,
            (Kernel::V6_18, libc::EEXIST) => PageState::AlreadyPrepared,
            (Kernel::V7_3, libc::EIO) => PageState::AlreadyInTd,
            _ => return e,
        };
        let u = Box::new(Unrecoverable {
            kernel: self.kernel,
            errno,
            page,
            page_state,
            in_td: self.added.clone(),
        });
        let mut e = e.unrecoverable();
        e.detail.push_str(&format!("; {u}"));
        self.unrecoverable = Some(u);
        e
    }
}

impl<I: TdxIoctl> Backend for TdxBackend<I> {
    fn caps(&self) -> BackendCaps {
        BackendCaps {
            in_place: self.in_place,
            ..TDX_CAPS
        }
    }

    /// With [`with_in_place`](TdxBackend::with_in_place): [`InPlacePopulate::ZeroSource`] where
    /// the kernel adds pages from their own contents ([`TdxIoctl::in_place_populate`]), else
    /// [`InPlacePopulate::Unavailable`].
    fn in_place_populate(&self) -> InPlacePopulate {
        match self.in_place {
            true if self.ioctl.in_place_populate() => InPlacePopulate::ZeroSource,
            true => InPlacePopulate::Unavailable,
            false => InPlacePopulate::Backend,
        }
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Borrowed(match (role, page_op(role)) {
            (Role::Zero, Some(_)) => "PAGE.ADD (zero source)",
            (_, Some(op)) if op.measure => "PAGE.ADD+MR.EXTEND",
            (_, Some(_)) => "PAGE.ADD",
            (_, None) => "none (not a TDX role)",
        })
    }

    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        match self.ioctl.set_private(gpa, len) {
            Ok(()) => Populated::all(len),
            Err(errno) => Populated::failed(
                0,
                BackendError::from_errno(
                    errno,
                    format!("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [{gpa:#x}..+{len:#x})"),
                ),
            ),
        }
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let fail =
            |done: u64, kind, msg: String| Populated::failed(done, BackendError::new(kind, msg));
        use cc_populate::ErrorKind;
        let Some(op) = page_op(chunk.role) else {
            return fail(
                0,
                ErrorKind::Failed,
                format!(
                    "[{:#x}..+{:#x}): role {} has no TDX page operation",
                    chunk.gpa, chunk.len, chunk.role
                ),
            );
        };
        if let Some(u) = &self.unrecoverable {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Failed,
                    format!("[{:#x}..+{:#x}): not sent: {u}", chunk.gpa, chunk.len),
                )
                .unrecoverable(),
            );
        }
        if let Err(e) = self.ensure_td() {
            return fail(
                0,
                ErrorKind::Unsupported,
                format!("[{:#x}..+{:#x}): {e}", chunk.gpa, chunk.len),
            );
        }
        if self.finalized {
            return fail(
                0,
                ErrorKind::Failed,
                format!(
                    "[{:#x}..+{:#x}): the TD is finalized, no page can be added",
                    chunk.gpa, chunk.len
                ),
            );
        }
        if let Err(e) = self
            .missing_before(LaunchStep::Populate)
            .and_then(|()| self.vcpu_fd(LaunchStep::Populate, None))
        {
            return fail(
                0,
                ErrorKind::Failed,
                format!("[{:#x}..+{:#x}): {e}", chunk.gpa, chunk.len),
            );
        }
        let flags = if op.measure {
            KVM_TDX_MEASURE_MEMORY_REGION
        } else {
            0
        };
        let mut done = 0u64;
        while done < chunk.len {
            let gpa = chunk.gpa + done;
            let rest = chunk.len - done;
            let (asked, (n, r)) = match chunk.source {
                ChunkSource::Bytes(b) => {
                    let Some(src) = b.get(done as usize..chunk.len as usize) else {
                        return fail(
                            done,
                            ErrorKind::Failed,
                            format!(
                                "[{gpa:#x}..+{rest:#x}): the source has {:#x} bytes, fewer than the chunk",
                                b.len()
                            ),
                        );
                    };
                    if (src.as_ptr() as u64).is_multiple_of(PAGE_SIZE) {
                        let src = PageSource::Buffer(src);
                        (rest, add_pages(self.kernel, &mut self.ioctl, gpa, src, flags))
                    } else {
                        // The kernel wants a page-aligned source: bounce it.
                        let bounce = self.bounce.get_or_insert_with(|| Aligned::new(BOUNCE_SIZE));
                        let src = bounce.fill(src);
                        let n = src.len() as u64;
                        let src = PageSource::Buffer(src);
                        (n, add_pages(self.kernel, &mut self.ioctl, gpa, src, flags))
                    }
                }
                ChunkSource::Zero => {
                    let zero = self.zero.get_or_insert_with(|| Aligned::new(BOUNCE_SIZE));
                    let src = zero.get(rest.min(BOUNCE_SIZE as u64) as usize);
                    let n = src.len() as u64;
                    let src = PageSource::Buffer(src);
                    (n, add_pages(self.kernel, &mut self.ioctl, gpa, src, flags))
                }
                ChunkSource::InPlace if self.in_place && self.ioctl.in_place_populate() => {
                    let src = PageSource::InPlace(rest);
                    (rest, add_pages(self.kernel, &mut self.ioctl, gpa, src, flags))
                }
                ChunkSource::InPlace => {
                    return fail(
                        done,
                        ErrorKind::Unsupported,
                        format!(
                            "[{gpa:#x}..+{rest:#x}): TDX cannot populate in place here (the module copies from a separate source page; only a kernel with the in-place conversion series and its parameter on adds a page from itself, with TdxBackend::with_in_place)"
                        ),
                    )
                }
            };
            self.record_added(gpa, n, op.measure);
            done += n;
            if let Err((errno, e)) = r {
                return Populated::failed(done, self.judge(errno, chunk.gpa + done, op.measure, e));
            }
            if n < asked {
                // Success with less than asked: report the progress; the driver calls again.
                return Populated {
                    done,
                    result: Ok(()),
                };
            }
        }
        Populated::all(chunk.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_meanings_follow_6_18() {
        // KVM_TDX_INIT_MEM_REGION cannot return EAGAIN in 6.18 (see the function's docs).
        let unknown = init_mem_region_errno_meaning(libc::EAGAIN);
        assert_eq!(
            unknown,
            "an errno Linux 6.18 does not return for this command"
        );
        assert!(init_mem_region_errno_meaning(libc::EINVAL).contains("a non-private page"));
        assert!(init_mem_region_errno_meaning(libc::EINVAL).contains("no guest_memfd memslot"));
        assert!(init_mem_region_errno_meaning(libc::EBUSY).contains("EEXIST"));
        assert!(init_mem_region_errno_meaning(libc::EIO).contains("cannot recover"));
        // A dead VM (kvm_vcpu_ioctl) and an ENOMEM after a retried fault (kvm_tdp_map_page).
        assert!(init_mem_region_errno_meaning(libc::EIO).contains("KVM_BUG_ON"));
        assert!(init_mem_region_errno_meaning(libc::ENOMEM).contains("EEXIST"));
        for errno in [
            libc::EINTR,
            libc::EBUSY,
            libc::EIO,
            libc::EEXIST,
            libc::EFAULT,
            libc::EINVAL,
            libc::ENOMEM,
            libc::EHWPOISON,
            libc::ENOTTY,
        ] {
            assert_ne!(init_mem_region_errno_meaning(errno), unknown, "{errno}");
        }
    }

    #[test]
    fn unrecoverable_lists_every_range_in_the_td() {
        let u = Unrecoverable {
            kernel: Kernel::V6_18,
            errno: libc::EBUSY,
            page: 0x3000,
            page_state: PageState::PreMappedNotAdded,
            in_td: vec![
                AddedRange {
                    gpa: 0x1000,
                    len: 0x2000,
                    measured: true,
                },
                AddedRange {
                    gpa: 0x8000,
                    len: 0x1000,
                    measured: false,
                },
            ],
        };
        assert_eq!(u.bytes_in_td(), 0x3000);
        let s = u.to_string();
        assert!(
            s.ends_with("in the TD (12288 bytes added by this backend): [0x1000..0x3000) measured, [0x8000..0x9000) unmeasured; tear the VM down"),
            "{s}"
        );
        assert!(s.contains("at page 0x3000, which is not in the TD"), "{s}");
        assert!(PageState::AlreadyPrepared.to_string().contains("unknown"));
    }

    #[test]
    fn added_ranges_merge_only_when_contiguous_and_alike() {
        let mut td = TdxBackend::new(crate::testing::TdxModel::new());
        td.record_added(0x1000, 0x1000, true);
        td.record_added(0x2000, 0x1000, true);
        td.record_added(0x3000, 0x1000, false);
        td.record_added(0x5000, 0x1000, false);
        td.record_added(0x6000, 0, true);
        let r: Vec<_> = td
            .added()
            .iter()
            .map(|r| (r.gpa, r.len, r.measured))
            .collect();
        assert_eq!(
            r,
            vec![
                (0x1000, 0x2000, true),
                (0x3000, 0x1000, false),
                (0x5000, 0x1000, false)
            ]
        );
    }
}
