//! Raw TDX uAPI that kvm-bindings 0.14 (generated from Linux 6.15) lacks.
//!
//! Every item was read from the Linux 6.18.2 uAPI: `arch/x86/include/uapi/asm/kvm.h` (the TDX
//! section: `enum kvm_tdx_cmd_id`, `struct kvm_tdx_cmd`, ...) and `include/uapi/linux/kvm.h`
//! (`KVM_MEMORY_ENCRYPT_OP = _IOWR(KVMIO, 0xba, unsigned long)`, the capability numbers).
//! The tests below pin sizes and field offsets.

#![allow(non_camel_case_types)]

/// `KVM_MEMORY_ENCRYPT_OP = _IOWR(KVMIO, 0xba, unsigned long)`: the VM and vCPU ioctl carrying a
/// [`kvm_tdx_cmd`]. kvm-ioctls only issues it on a VM fd; TDX needs the vCPU form too.
pub const KVM_MEMORY_ENCRYPT_OP: u64 = 0xc008_aeba;

/// `KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)` (include/uapi/linux/kvm.h): on a VM fd it is one of
/// the ioctls `kvm_vm_ioctl` answers `EIO` for a dead VM (`virt/kvm/kvm_main.c`, 6.18.2 and
/// 7.3.4), which is how the backend asks whether the VM is dead.
pub const KVM_CHECK_EXTENSION: u64 = 0xae03;

/// `KVM_X86_TDX_VM`, the VM type of a TD (also in kvm-bindings; repeated to keep the probe's
/// facts in one place).
pub const KVM_X86_TDX_VM: u32 = 5;

/// `KVM_CAP_VM_TYPES` (235): a bitmap of the VM types `KVM_CREATE_VM` accepts.
pub const KVM_CAP_VM_TYPES: u32 = 235;

/// `KVM_CAP_MEMORY_ATTRIBUTES` (233): the attributes `KVM_SET_MEMORY_ATTRIBUTES` accepts.
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;

/// `KVM_CAP_SYNC_REGS` (74). On a VM fd, Linux 6.18 answers 0 when the VM has protected state
/// (`arch/x86/kvm/x86.c: kvm_sync_valid_fields`), which among the VM types of an Intel host
/// only a TD has (`arch/x86/kvm/vmx/tdx.c: tdx_vm_init` sets `has_protected_state`).
pub const KVM_CAP_SYNC_REGS: u32 = 74;

/// `KVM_SYNC_X86_VALID_FIELDS` (`KVM_SYNC_X86_REGS | SREGS | EVENTS`): what `KVM_CAP_SYNC_REGS`
/// answers on a VM without protected state.
pub const KVM_SYNC_X86_VALID_FIELDS: u32 = 0x7;

/// `KVM_X86_DEFAULT_VM` (0): an ordinary VM.
pub const KVM_X86_DEFAULT_VM: u32 = 0;

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (`arch/x86/include/uapi/asm/kvm.h`, spelled as there): the
/// entry's `index` is significant.
pub const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1 << 0;

/// `KVM_CAP_SPLIT_IRQCHIP` (121, `include/uapi/linux/kvm.h`): enabled on the VM fd
/// (`KVM_ENABLE_CAP`, `args[0]` = the I/O APIC pins reserved for userspace), it puts the local
/// APICs in the kernel and the I/O APIC in userspace. A TD needs it before `KVM_CREATE_VCPU`
/// (`arch/x86/kvm/vmx/tdx.c: tdx_vcpu_create`, Linux 6.18.2: `EINVAL` without it).
pub const KVM_CAP_SPLIT_IRQCHIP: u32 = 121;

/// `MAX_NR_RESERVED_IOAPIC_PINS` (`arch/x86/kvm/ioapic.h`, Linux 6.18.2: `KVM_MAX_IRQ_ROUTES`,
/// 4096 in `include/linux/kvm_host.h`): the most pins `KVM_CAP_SPLIT_IRQCHIP` takes
/// (`arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap`: more is `EINVAL`).
pub const MAX_NR_RESERVED_IOAPIC_PINS: u64 = 4096;

/// The I/O APIC pins QEMU reserves with `KVM_CAP_SPLIT_IRQCHIP` (its I/O APIC's 24 pins).
pub const SPLIT_IRQCHIP_IOAPIC_PINS: u64 = 24;

/// CPUID.1:ECX bit 21, x2APIC. `KVM_TDX_INIT_VCPU` puts the vCPU's APIC in x2APIC mode
/// (`arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init` -> `arch/x86/kvm/lapic.c: kvm_apic_set_base`),
/// which is `EINVAL` unless the vCPU's CPUID (`KVM_SET_CPUID2`) has this bit.
pub const CPUID_1_ECX_X2APIC: u32 = 1 << 21;

/// `KVM_MAX_CPUID_ENTRIES` (`arch/x86/include/asm/kvm_host.h`): the most CPUID entries KVM takes
/// in `KVM_TDX_INIT_VM` (more is `E2BIG` in `tdx_td_init`) and gives in `KVM_TDX_GET_CPUID`.
pub const KVM_MAX_CPUID_ENTRIES: u32 = 256;

/// The most configurable CPUID leaves a TDX module can report to Linux 6.18
/// (`cpuid_config_leaves[128]` in `arch/x86/include/asm/tdx_global_metadata.h`; a larger
/// `num_cpuid_config` is refused by `arch/x86/virt/vmx/tdx/tdx_global_metadata.c:
/// get_tdx_sys_info_td_conf`, and TDX stays off).
pub const TDX_MAX_CPUID_CONFIG: u32 = 128;

/// `enum kvm_tdx_cmd_id`: `KVM_TDX_CAPABILITIES` (VM ioctl).
pub const KVM_TDX_CAPABILITIES: u32 = 0;
/// `KVM_TDX_INIT_VM` (VM ioctl).
pub const KVM_TDX_INIT_VM: u32 = 1;
/// `KVM_TDX_INIT_VCPU` (vCPU ioctl).
pub const KVM_TDX_INIT_VCPU: u32 = 2;
/// `KVM_TDX_INIT_MEM_REGION` (vCPU ioctl).
pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
/// `KVM_TDX_FINALIZE_VM` (VM ioctl).
pub const KVM_TDX_FINALIZE_VM: u32 = 4;
/// `KVM_TDX_GET_CPUID` (vCPU ioctl).
pub const KVM_TDX_GET_CPUID: u32 = 5;
/// `KVM_TDX_CMD_NR_MAX`: one past the last command of Linux 6.18 (there is no command 6;
/// `tdx_vm_ioctl` and `tdx_vcpu_ioctl` answer `EINVAL` to it).
pub const KVM_TDX_CMD_NR_MAX: u32 = 6;

/// `KVM_TDX_MEASURE_MEMORY_REGION`: the `flags` bit of `KVM_TDX_INIT_MEM_REGION` that also
/// extends MRTD (TDH.MR.EXTEND per 256-byte chunk).
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1 << 0;

/// `struct kvm_tdx_cmd`: the argument of `KVM_MEMORY_ENCRYPT_OP` on a TD.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_tdx_cmd {
    /// `enum kvm_tdx_cmd_id`.
    pub id: u32,
    /// Sub-command flags.
    pub flags: u32,
    /// An immediate or a pointer to the sub-command's data.
    pub data: u64,
    /// Out: the TDX module's SEAMCALL status, when the sub-command returns one.
    pub hw_error: u64,
}

/// `struct kvm_cpuid2` header (the flexible `entries` array follows it in memory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_cpuid2_header {
    /// Number of entries that follow.
    pub nent: u32,
    /// Padding.
    pub padding: u32,
}

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_cpuid_entry2 {
    /// Leaf.
    pub function: u32,
    /// Sub-leaf.
    pub index: u32,
    /// `KVM_CPUID_FLAG_*`.
    pub flags: u32,
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// Padding.
    pub padding: [u32; 3],
}

#[cfg(feature = "kvm")]
impl From<kvm_bindings::kvm_cpuid_entry2> for kvm_cpuid_entry2 {
    fn from(e: kvm_bindings::kvm_cpuid_entry2) -> Self {
        kvm_cpuid_entry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            padding: e.padding,
        }
    }
}

#[cfg(feature = "kvm")]
impl From<kvm_cpuid_entry2> for kvm_bindings::kvm_cpuid_entry2 {
    fn from(e: kvm_cpuid_entry2) -> Self {
        kvm_bindings::kvm_cpuid_entry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            padding: e.padding,
        }
    }
}

/// `struct kvm_tdx_capabilities` without its trailing `kvm_cpuid2` entries (the header is
/// included: `nent` tells the kernel how many entries the caller made room for).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_tdx_capabilities {
    /// TD attributes KVM and the module allow.
    pub supported_attrs: u64,
    /// XFAM bits KVM and the module allow.
    pub supported_xfam: u64,
    /// TDG.VP.VMCALL leaves handled in the kernel (R11 form).
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// TDG.VP.VMCALL leaves forwarded to userspace (R11 form).
    pub user_tdvmcallinfo_1_r11: u64,
    /// TDG.VP.VMCALL leaves handled in the kernel (R12 form).
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// TDG.VP.VMCALL leaves forwarded to userspace (R12 form).
    pub user_tdvmcallinfo_1_r12: u64,
    /// Reserved, zero.
    pub reserved: [u64; 250],
    /// The configurable CPUID bits (entries follow).
    pub cpuid: kvm_cpuid2_header,
}

impl Default for kvm_tdx_capabilities {
    fn default() -> Self {
        kvm_tdx_capabilities {
            supported_attrs: 0,
            supported_xfam: 0,
            kernel_tdvmcallinfo_1_r11: 0,
            user_tdvmcallinfo_1_r11: 0,
            kernel_tdvmcallinfo_1_r12: 0,
            user_tdvmcallinfo_1_r12: 0,
            reserved: [0; 250],
            cpuid: kvm_cpuid2_header::default(),
        }
    }
}

/// `struct kvm_tdx_init_vm` without its trailing `kvm_cpuid2` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_tdx_init_vm {
    /// TD attributes.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRCONFIGID (SHA-384 digest, 48 bytes as six u64).
    pub mrconfigid: [u64; 6],
    /// MROWNER.
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u64; 6],
    /// Reserved, zero ("the total space for TD_PARAMS before the CPUIDs is 256 bytes").
    pub reserved: [u64; 12],
    /// The CPUID configuration (entries follow).
    pub cpuid: kvm_cpuid2_header,
}

/// `struct kvm_tdx_init_mem_region`: in/out; the kernel writes back how far it got.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_tdx_init_mem_region {
    /// Page-aligned userspace address of the source.
    pub source_addr: u64,
    /// Page-aligned guest-physical address.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}

#[cfg(all(test, feature = "kvm"))]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn ioctl_number_is_iowr_kvmio_0xba_ulong() {
        // _IOWR(type, nr, size) = (3 << 30) | (size << 16) | (type << 8) | nr, on x86.
        let expect =
            (3u64 << 30) | ((size_of::<libc::c_ulong>() as u64) << 16) | (0xae << 8) | 0xba;
        assert_eq!(KVM_MEMORY_ENCRYPT_OP, expect);
        // _IO(type, nr) = (type << 8) | nr.
        assert_eq!(KVM_CHECK_EXTENSION, (0xae << 8) | 0x03);
    }

    #[test]
    fn cmd_ids_follow_the_enum() {
        assert_eq!(
            [
                KVM_TDX_CAPABILITIES,
                KVM_TDX_INIT_VM,
                KVM_TDX_INIT_VCPU,
                KVM_TDX_INIT_MEM_REGION,
                KVM_TDX_FINALIZE_VM,
                KVM_TDX_GET_CPUID,
                KVM_TDX_CMD_NR_MAX
            ],
            [0, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(KVM_TDX_MEASURE_MEMORY_REGION, 1);
        assert_eq!(KVM_X86_TDX_VM, kvm_bindings::KVM_X86_TDX_VM);
        assert_eq!(KVM_X86_DEFAULT_VM, kvm_bindings::KVM_X86_DEFAULT_VM);
        assert_eq!(KVM_CAP_SYNC_REGS, kvm_bindings::KVM_CAP_SYNC_REGS);
        assert_eq!(KVM_CAP_VM_TYPES, kvm_bindings::KVM_CAP_VM_TYPES);
        assert_eq!(KVM_CAP_SPLIT_IRQCHIP, kvm_bindings::KVM_CAP_SPLIT_IRQCHIP);
        // arch/x86/kvm/ioapic.h: MAX_NR_RESERVED_IOAPIC_PINS is KVM_MAX_IRQ_ROUTES, 4096
        // (include/linux/kvm_host.h, Linux 6.18.2).
        assert_eq!(MAX_NR_RESERVED_IOAPIC_PINS, 4096);
        assert_eq!(
            KVM_SYNC_X86_VALID_FIELDS,
            kvm_bindings::KVM_SYNC_X86_REGS
                | kvm_bindings::KVM_SYNC_X86_SREGS
                | kvm_bindings::KVM_SYNC_X86_EVENTS
        );
    }

    #[test]
    fn cpuid_flag_is_the_header_value() {
        // arch/x86/include/uapi/asm/kvm.h (Linux 6.18.2): #define KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1 << 0)
        assert_eq!(KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 1);
    }

    #[test]
    fn kvm_tdx_cmd_layout() {
        assert_eq!(size_of::<kvm_tdx_cmd>(), 24);
        assert_eq!(align_of::<kvm_tdx_cmd>(), 8);
        assert_eq!(offset_of!(kvm_tdx_cmd, id), 0);
        assert_eq!(offset_of!(kvm_tdx_cmd, flags), 4);
        assert_eq!(offset_of!(kvm_tdx_cmd, data), 8);
        assert_eq!(offset_of!(kvm_tdx_cmd, hw_error), 16);
    }

    #[test]
    fn capabilities_layout() {
        // 6 u64 + reserved[250] = 256 u64 = 2048 bytes, then the 8-byte kvm_cpuid2 header.
        assert_eq!(offset_of!(kvm_tdx_capabilities, supported_xfam), 8);
        assert_eq!(
            offset_of!(kvm_tdx_capabilities, user_tdvmcallinfo_1_r12),
            40
        );
        assert_eq!(offset_of!(kvm_tdx_capabilities, reserved), 48);
        assert_eq!(offset_of!(kvm_tdx_capabilities, cpuid), 2048);
        assert_eq!(size_of::<kvm_tdx_capabilities>(), 2056);
        assert_eq!(
            size_of::<kvm_cpuid2_header>(),
            size_of::<kvm_bindings::kvm_cpuid2>()
        );
        assert_eq!(
            size_of::<kvm_cpuid_entry2>(),
            size_of::<kvm_bindings::kvm_cpuid_entry2>()
        );
        assert_eq!(size_of::<kvm_cpuid_entry2>(), 40);
    }

    #[test]
    fn init_vm_layout() {
        assert_eq!(offset_of!(kvm_tdx_init_vm, attributes), 0);
        assert_eq!(offset_of!(kvm_tdx_init_vm, xfam), 8);
        assert_eq!(offset_of!(kvm_tdx_init_vm, mrconfigid), 16);
        assert_eq!(offset_of!(kvm_tdx_init_vm, mrowner), 64);
        assert_eq!(offset_of!(kvm_tdx_init_vm, mrownerconfig), 112);
        assert_eq!(offset_of!(kvm_tdx_init_vm, reserved), 160);
        // "The total space for TD_PARAMS before the CPUIDs is 256 bytes".
        assert_eq!(offset_of!(kvm_tdx_init_vm, cpuid), 256);
        assert_eq!(size_of::<kvm_tdx_init_vm>(), 264);
    }

    #[test]
    fn init_mem_region_layout() {
        assert_eq!(size_of::<kvm_tdx_init_mem_region>(), 24);
        assert_eq!(offset_of!(kvm_tdx_init_mem_region, source_addr), 0);
        assert_eq!(offset_of!(kvm_tdx_init_mem_region, gpa), 8);
        assert_eq!(offset_of!(kvm_tdx_init_mem_region, nr_pages), 16);
    }
}
