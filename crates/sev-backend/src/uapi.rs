//! The kernel ABI this crate speaks: the SEV structs of `kvm-bindings` re-exported under one
//! name, plus what `kvm-bindings` 0.14.2 lacks (the firmware-only `VMSA` page type, the SNP
//! CPUID table of the firmware ABI). Every layout is pinned by the tests below against the
//! kernel UAPI.
//!
//! Sources (read with the search tool, 2026-11-25; the SEV structs, command ids and page types
//! checked again against Linux 6.18.2's `arch/x86/include/uapi/asm/kvm.h`):
//! - `arch/x86/include/uapi/asm/kvm.h` (Linux 6.11+): `struct kvm_sev_cmd`, `struct
//!   kvm_sev_init`, `struct kvm_sev_snp_launch_start`, `struct kvm_sev_snp_launch_update`,
//!   `struct kvm_sev_snp_launch_finish` (88 bytes, with `vcek_disabled`), `enum sev_cmd_id`
//!   (`KVM_SEV_INIT2 = 22`, `KVM_SEV_SNP_LAUNCH_START = 100`, `_UPDATE = 101`, `_FINISH = 102`),
//!   `KVM_SEV_SNP_PAGE_TYPE_*`.
//! - `arch/x86/coco/sev/*` / `arch/x86/include/asm/sev.h`: `struct snp_cpuid_fn` (48 bytes,
//!   packed) and `struct snp_cpuid_table` (`count`, two reserved words, 64 entries), "as defined
//!   by the SNP Firmware ABI".
//! - `include/uapi/linux/psp-sev.h`: firmware status codes (see [`crate::fw_error_name`]).

#[cfg(feature = "kvm")]
pub use kvm_bindings::{
    kvm_memory_attributes, kvm_sev_cmd, kvm_sev_init, kvm_sev_snp_launch_finish,
    kvm_sev_snp_launch_start, kvm_sev_snp_launch_update, KVM_CAP_VM_TYPES,
    KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_SEV_SNP_FINISH_DATA_SIZE, KVM_SEV_SNP_ID_AUTH_SIZE,
    KVM_SEV_SNP_ID_BLOCK_SIZE, KVM_SEV_SNP_PAGE_TYPE_CPUID, KVM_SEV_SNP_PAGE_TYPE_NORMAL,
    KVM_SEV_SNP_PAGE_TYPE_SECRETS, KVM_SEV_SNP_PAGE_TYPE_UNMEASURED, KVM_SEV_SNP_PAGE_TYPE_ZERO,
    KVM_X86_SNP_VM,
};

/// `KVM_SEV_INIT2` (`enum sev_cmd_id`).
#[cfg(feature = "kvm")]
pub const KVM_SEV_INIT2: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_INIT2;
/// `KVM_SEV_SNP_LAUNCH_START`.
#[cfg(feature = "kvm")]
pub const KVM_SEV_SNP_LAUNCH_START: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START;
/// `KVM_SEV_SNP_LAUNCH_UPDATE`.
#[cfg(feature = "kvm")]
pub const KVM_SEV_SNP_LAUNCH_UPDATE: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE;
/// `KVM_SEV_SNP_LAUNCH_FINISH`.
#[cfg(feature = "kvm")]
pub const KVM_SEV_SNP_LAUNCH_FINISH: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH;

/// The firmware's VMSA page type (SNP firmware ABI, `SNP_LAUNCH_UPDATE` PAGE_TYPE 2). Not in the
/// kernel UAPI: KVM measures VMSAs itself during `KVM_SEV_SNP_LAUNCH_FINISH`.
pub const SNP_PAGE_TYPE_VMSA: u32 = 2;

/// The guest-physical address the firmware records for VMSA pages launched by KVM
/// (`INITIAL_VMSA_GPA` in the kernel's `sev.c`: `(u64)-1` page-aligned, bits above 51 clear).
pub const SNP_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// Entries in an SNP CPUID table (`SNP_CPUID_COUNT_MAX`).
pub const SNP_CPUID_COUNT_MAX: usize = 64;

/// One CPUID function of the SNP CPUID page (`struct snp_cpuid_fn`, packed, 48 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct snp_cpuid_fn {
    /// EAX input (leaf).
    pub eax_in: u32,
    /// ECX input (sub-leaf).
    pub ecx_in: u32,
    /// XCR0 at the time of the CPUID.
    pub xcr0_in: u64,
    /// XSS at the time of the CPUID.
    pub xss_in: u64,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
    /// Reserved, must be zero.
    pub reserved: u64,
}

/// The SNP CPUID page's table (`struct snp_cpuid_table`, packed, 3088 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct snp_cpuid_table {
    /// Number of valid entries in `fns`.
    pub count: u32,
    /// Reserved.
    pub reserved1: u32,
    /// Reserved.
    pub reserved2: u64,
    /// The entries.
    pub fns: [snp_cpuid_fn; SNP_CPUID_COUNT_MAX],
}

/// Size of [`snp_cpuid_fn`].
pub const SNP_CPUID_FN_SIZE: usize = 48;
/// Size of [`snp_cpuid_table`].
pub const SNP_CPUID_TABLE_SIZE: usize = 16 + SNP_CPUID_COUNT_MAX * SNP_CPUID_FN_SIZE;

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    // Values from arch/x86/include/uapi/asm/kvm.h (see the module docs).
    #[cfg(feature = "kvm")]
    #[test]
    fn command_ids_and_constants() {
        assert_eq!(KVM_SEV_INIT2, 22);
        assert_eq!(KVM_SEV_SNP_LAUNCH_START, 100);
        assert_eq!(KVM_SEV_SNP_LAUNCH_UPDATE, 101);
        assert_eq!(KVM_SEV_SNP_LAUNCH_FINISH, 102);
        assert_eq!(KVM_SEV_SNP_PAGE_TYPE_NORMAL, 1);
        assert_eq!(SNP_PAGE_TYPE_VMSA, 2);
        assert_eq!(KVM_SEV_SNP_PAGE_TYPE_ZERO, 3);
        assert_eq!(KVM_SEV_SNP_PAGE_TYPE_UNMEASURED, 4);
        assert_eq!(KVM_SEV_SNP_PAGE_TYPE_SECRETS, 5);
        assert_eq!(KVM_SEV_SNP_PAGE_TYPE_CPUID, 6);
        assert_eq!(KVM_SEV_SNP_ID_BLOCK_SIZE, 96);
        assert_eq!(KVM_SEV_SNP_ID_AUTH_SIZE, 4096);
        assert_eq!(KVM_SEV_SNP_FINISH_DATA_SIZE, 32);
        assert_eq!(KVM_X86_SNP_VM, 4);
        assert_eq!(KVM_CAP_VM_TYPES, 235);
        assert_eq!(KVM_MEMORY_ATTRIBUTE_PRIVATE, 1 << 3);
    }

    #[cfg(feature = "kvm")]
    #[test]
    fn kvm_sev_cmd_layout() {
        assert_eq!(size_of::<kvm_sev_cmd>(), 24);
        assert_eq!(offset_of!(kvm_sev_cmd, id), 0);
        assert_eq!(offset_of!(kvm_sev_cmd, data), 8);
        assert_eq!(offset_of!(kvm_sev_cmd, error), 16);
        assert_eq!(offset_of!(kvm_sev_cmd, sev_fd), 20);
    }

    #[cfg(feature = "kvm")]
    #[test]
    fn kvm_sev_init_layout() {
        assert_eq!(size_of::<kvm_sev_init>(), 48);
        assert_eq!(offset_of!(kvm_sev_init, vmsa_features), 0);
        assert_eq!(offset_of!(kvm_sev_init, flags), 8);
        assert_eq!(offset_of!(kvm_sev_init, ghcb_version), 12);
        assert_eq!(offset_of!(kvm_sev_init, pad1), 14);
        assert_eq!(offset_of!(kvm_sev_init, pad2), 16);
    }

    #[cfg(feature = "kvm")]
    #[test]
    fn launch_start_layout() {
        assert_eq!(size_of::<kvm_sev_snp_launch_start>(), 64);
        assert_eq!(offset_of!(kvm_sev_snp_launch_start, policy), 0);
        assert_eq!(offset_of!(kvm_sev_snp_launch_start, gosvw), 8);
        assert_eq!(offset_of!(kvm_sev_snp_launch_start, flags), 24);
        assert_eq!(offset_of!(kvm_sev_snp_launch_start, pad0), 26);
        assert_eq!(offset_of!(kvm_sev_snp_launch_start, pad1), 32);
    }

    #[cfg(feature = "kvm")]
    #[test]
    fn launch_update_layout() {
        assert_eq!(size_of::<kvm_sev_snp_launch_update>(), 64);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, gfn_start), 0);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, uaddr), 8);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, len), 16);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, type_), 24);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, pad0), 25);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, flags), 26);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, pad1), 28);
        assert_eq!(offset_of!(kvm_sev_snp_launch_update, pad2), 32);
    }

    #[cfg(feature = "kvm")]
    #[test]
    fn launch_finish_layout() {
        // 88 bytes with `vcek_disabled` at 18 and `host_data` at 19 (the `sev` crate's 56-byte
        // struct lacks `vcek_disabled`).
        assert_eq!(size_of::<kvm_sev_snp_launch_finish>(), 88);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_block_uaddr), 0);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr), 8);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_block_en), 16);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, auth_key_en), 17);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, vcek_disabled), 18);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, host_data), 19);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, pad0), 51);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, flags), 54);
        assert_eq!(offset_of!(kvm_sev_snp_launch_finish, pad1), 56);
    }

    #[cfg(feature = "kvm")]
    #[test]
    fn memory_attributes_layout() {
        assert_eq!(size_of::<kvm_memory_attributes>(), 32);
        assert_eq!(offset_of!(kvm_memory_attributes, address), 0);
        assert_eq!(offset_of!(kvm_memory_attributes, size), 8);
        assert_eq!(offset_of!(kvm_memory_attributes, attributes), 16);
        assert_eq!(offset_of!(kvm_memory_attributes, flags), 24);
    }

    #[test]
    fn cpuid_layouts() {
        assert_eq!(size_of::<snp_cpuid_fn>(), SNP_CPUID_FN_SIZE);
        assert_eq!(offset_of!(snp_cpuid_fn, eax_in), 0);
        assert_eq!(offset_of!(snp_cpuid_fn, ecx_in), 4);
        assert_eq!(offset_of!(snp_cpuid_fn, xcr0_in), 8);
        assert_eq!(offset_of!(snp_cpuid_fn, xss_in), 16);
        assert_eq!(offset_of!(snp_cpuid_fn, eax), 24);
        assert_eq!(offset_of!(snp_cpuid_fn, ebx), 28);
        assert_eq!(offset_of!(snp_cpuid_fn, ecx), 32);
        assert_eq!(offset_of!(snp_cpuid_fn, edx), 36);
        assert_eq!(offset_of!(snp_cpuid_fn, reserved), 40);
        assert_eq!(size_of::<snp_cpuid_table>(), SNP_CPUID_TABLE_SIZE);
        assert_eq!(SNP_CPUID_TABLE_SIZE, 3088);
        assert_eq!(offset_of!(snp_cpuid_table, count), 0);
        assert_eq!(offset_of!(snp_cpuid_table, reserved1), 4);
        assert_eq!(offset_of!(snp_cpuid_table, reserved2), 8);
        assert_eq!(offset_of!(snp_cpuid_table, fns), 16);
    }
}
