//! Every raw KVM number and struct of the Arm CCA host series this crate uses, in one place.
//!
//! The Arm CCA KVM support is an out-of-tree kernel series (Steven Price, "arm64: Support for
//! Arm CCA in KVM") whose user ABI changed between versions; none of it is in kvm-bindings.
//! When the series changes again, this file (and [`UapiVersion`]) is what changes. Where each
//! value was read (the patches as posted to the kvm list):
//!
//! - v14 (2026-05-13), patch 13/44 "arm64: RMI: Define the user ABI" (`include/uapi/linux/kvm.h`):
//!   `KVM_CAP_ARM_RMI 249`, `KVM_ARM_RMI_POPULATE _IOWR(KVMIO, 0xd7, struct
//!   kvm_arm_rmi_populate)`, `KVM_ARM_RMI_POPULATE_FLAGS_MEASURE (1 << 0)`, the struct `{ __u64
//!   base; __u64 size; __u64 source_uaddr; __u32 flags; __u32 reserved; }` (in/out). Patch 16/44
//!   "KVM: arm64: Allow passing machine type in KVM creation": `KVM_VM_TYPE_ARM_REALM (1UL << 30)`
//!   beside pKVM's `KVM_VM_TYPE_ARM_PROTECTED (1UL << 31)`, both in `KVM_VM_TYPE_ARM_MASK`.
//! - v13 (2026-03-18), patch 11/48 "arm64: RMI: Define the user ABI": the same struct and `_IOWR`
//!   number, `KVM_CAP_ARM_RMI 248`. Patch 14/48: `KVM_VM_TYPE_ARM_SHIFT 8`, `KVM_VM_TYPE_ARM_MASK
//!   (0xf << 8)`, `KVM_VM_TYPE_ARM_REALM KVM_VM_TYPE_ARM(1)` = `1 << 8`.
//! - v12 (2025-12-17), patch 06/46 "arm64: RMI: Define the user ABI": the same struct,
//!   `_IOW(KVMIO, 0xd7, ...)`, `KVM_CAP_ARM_RMI 247`, the ioctl returns the bytes populated.
//!   Patch 09/46: machine type bits 11:8, realm = type 1 (`1 << 8`).
//! - v9 (2025-06-11), the `KVM_ENABLE_CAP(KVM_CAP_ARM_RME = 243)` form, is no longer offered
//!   (see [`UapiVersion::from_series`]); none of its numbers or structs are kept.
//! - v10 moved `KVM_CAP_ARM_RME` again (v14 13/44's changelog: "Changes since v9: Bump the
//!   magic number ... to avoid conflicts", as v7 and v8 did before) and v11 renamed it
//!   `KVM_CAP_ARM_RMI`; those numbers were not read here, so v5 to v8, v10 and v11 are refused
//!   ([`UapiVersion::from_series`]).
//!
//! `kvm_cap_arm_rmi`: some vendor trees carrying the series (a 6.18-based one adds "KVM: arm64:
//! Expose KVM_CAP_ARM_RMI via module parameter") export the number as
//! `/sys/module/kvm/parameters/kvm_cap_arm_rmi`, and VMM forks read it there. It is not part of
//! any posted version of the series, so this crate does not read it: a VMM on such a kernel
//! passes the number it trusts to [`probe_with`](crate::probe_with).
//!
//! Mainline numbers used with the series: `KVM_SET_MEMORY_ATTRIBUTES` (arm64 selects
//! `KVM_GENERIC_MEMORY_ATTRIBUTES` from v12 patch 19/46, v13 23/48, v14 25/44 "KVM: arm64: Expose
//! support for private memory"), `KVM_SET_ONE_REG` / `KVM_GET_ONE_REG` of `ID_AA64DFR0_EL1` and
//! `KVM_REG_ARM64_SVE_VLS`, and `KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE)`.

use crate::UapiVersion;

/// `KVMIO`, the KVM ioctl type byte.
pub const KVMIO: u32 = 0xAE;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` as the generic (arm64 and x86) Linux encoding defines it.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u64 {
    ((dir << 30) | (size << 16) | (ty << 8) | nr) as u64
}

/// `struct kvm_arm_rmi_populate` (v12 and later).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmArmRmiPopulate {
    /// First IPA to populate (4 KiB aligned). Advanced by the kernel from v13 on.
    pub base: u64,
    /// Bytes to populate (4 KiB multiple). Decreased by the kernel from v13 on.
    pub size: u64,
    /// Userspace address of the source (page aligned from v13 on). Advanced from v13 on.
    pub source_uaddr: u64,
    /// `KVM_ARM_RMI_POPULATE_FLAGS_*`.
    pub flags: u32,
    /// Must be zero.
    pub reserved: u32,
}

impl KvmArmRmiPopulate {
    /// The struct's bytes as the kernel reads them (little-endian, no padding).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.base.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&self.source_uaddr.to_le_bytes());
        b[24..28].copy_from_slice(&self.flags.to_le_bytes());
        b[28..32].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }
}

/// `KVM_ARM_RMI_POPULATE_FLAGS_MEASURE`: add the populated data to the RIM.
pub const KVM_ARM_RMI_POPULATE_FLAGS_MEASURE: u32 = 1 << 0;

/// `KVM_ARM_RMI_POPULATE` in v12: `_IOW(KVMIO, 0xd7, struct kvm_arm_rmi_populate)`.
pub const KVM_ARM_RMI_POPULATE_V12: u64 = ioc(IOC_WRITE, KVMIO, 0xd7, 32);
/// `KVM_ARM_RMI_POPULATE` from v13 on: `_IOWR(KVMIO, 0xd7, struct kvm_arm_rmi_populate)`.
pub const KVM_ARM_RMI_POPULATE_V13: u64 = ioc(IOC_READ | IOC_WRITE, KVMIO, 0xd7, 32);

/// `KVM_CAP_ARM_RMI` as v12 numbered it (patch 06/46).
pub const KVM_CAP_ARM_RMI_V12: u32 = 247;
/// `KVM_CAP_ARM_RMI` as v13 numbered it (patch 11/48).
pub const KVM_CAP_ARM_RMI_V13: u32 = 248;
/// `KVM_CAP_ARM_RMI` as v14 numbered it (patch 13/44).
pub const KVM_CAP_ARM_RMI_V14: u32 = 249;

/// `KVM_VM_TYPE_ARM_SHIFT` (v12, v13).
pub const KVM_VM_TYPE_ARM_SHIFT: u64 = 8;
/// `KVM_VM_TYPE_ARM_REALM` up to v13: `KVM_VM_TYPE_ARM(1)` = `1 << 8` (v12 09/46, v13 14/48).
pub const KVM_VM_TYPE_ARM_REALM_V13: u64 = 1 << KVM_VM_TYPE_ARM_SHIFT;
/// `KVM_VM_TYPE_ARM_REALM` from v14 on: `1UL << 30` (v14 16/44), so that it coexists with
/// mainline pKVM's `KVM_VM_TYPE_ARM_PROTECTED`. A v14 kernel refuses `1 << 8` with `EINVAL`.
pub const KVM_VM_TYPE_ARM_REALM_V14: u64 = 1 << 30;
/// `KVM_VM_TYPE_ARM_PROTECTED` (mainline pKVM, `1UL << 31`); v14 refuses it together with the
/// realm bit (`EINVAL`).
pub const KVM_VM_TYPE_ARM_PROTECTED: u64 = 1 << 31;
/// `KVM_VM_TYPE_ARM_IPA_SIZE_MASK`: the low byte of the machine type is the IPA width.
pub const KVM_VM_TYPE_ARM_IPA_SIZE_MASK: u64 = 0xff;

/// The `KVM_CREATE_VM` machine type of a realm with `ipa_bits` of IPA space for `version`:
/// bit 30 from v14 on, bit 8 before.
pub const fn realm_vm_type(version: UapiVersion, ipa_bits: u8) -> u64 {
    let realm = match version {
        UapiVersion::V14 => KVM_VM_TYPE_ARM_REALM_V14,
        UapiVersion::V12 | UapiVersion::V13 => KVM_VM_TYPE_ARM_REALM_V13,
    };
    realm | (ipa_bits as u64 & KVM_VM_TYPE_ARM_IPA_SIZE_MASK)
}

/// `KVM_MEMORY_ATTRIBUTE_PRIVATE` (mainline).
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;

/// `KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG`, the prefix of a 64-bit system
/// register id (mainline `arch/arm64/include/uapi/asm/kvm.h`).
const ARM64_SYSREG_U64: u64 = 0x6000_0000_0000_0000 | 0x0030_0000_0000_0000 | (0x0013 << 16);

/// `ARM64_SYS_REG(op0, op1, crn, crm, op2)`.
pub const fn arm64_sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    ARM64_SYSREG_U64 | (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2
}

/// The `KVM_{GET,SET}_ONE_REG` id of `ID_AA64DFR0_EL1` (`ARM64_SYS_REG(3, 0, 0, 5, 0)`), through
/// which a realm's breakpoint and watchpoint counts are set (v14 39/44 "arm64: RMI: Set
/// breakpoint parameters through SET_ONE_REG").
pub const KVM_REG_ID_AA64DFR0_EL1: u64 = arm64_sys_reg(3, 0, 0, 5, 0);
/// `ID_AA64DFR0_EL1.BRPs` (bits 15:12): breakpoints - 1.
pub const DFR0_BRPS_SHIFT: u32 = 12;
/// `ID_AA64DFR0_EL1.WRPs` (bits 23:20): watchpoints - 1.
pub const DFR0_WRPS_SHIFT: u32 = 20;
/// `ID_AA64DFR0_EL1.CTX_CMPs` (bits 31:28): context-aware breakpoints - 1 (at most BRPs).
pub const DFR0_CTX_CMPS_SHIFT: u32 = 28;

/// `KVM_REG_ARM64_SVE_VLS`: `KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U512 | 0xffff`, a
/// 512-bit bitmap of the vector lengths (bit `vq - 1` for `vq` 128-bit quadwords).
pub const KVM_REG_ARM64_SVE_VLS: u64 =
    0x6000_0000_0000_0000 | 0x0060_0000_0000_0000 | (0x0015 << 16) | 0xffff;
/// `KVM_ARM_VCPU_SVE`, the vCPU feature (and `KVM_ARM_VCPU_FINALIZE` argument) for SVE.
pub const KVM_ARM_VCPU_SVE: i32 = 4;

/// `KVM_SET_MEMORY_ATTRIBUTES`: `_IOW(KVMIO, 0xd2, struct kvm_memory_attributes)` (32 bytes),
/// mainline.
pub const KVM_SET_MEMORY_ATTRIBUTES: u64 = ioc(IOC_WRITE, KVMIO, 0xd2, 32);
/// `KVM_GET_ONE_REG`: `_IOW(KVMIO, 0xab, struct kvm_one_reg)` (16 bytes), mainline.
pub const KVM_GET_ONE_REG: u64 = ioc(IOC_WRITE, KVMIO, 0xab, 16);
/// `KVM_SET_ONE_REG`: `_IOW(KVMIO, 0xac, struct kvm_one_reg)` (16 bytes), mainline.
pub const KVM_SET_ONE_REG: u64 = ioc(IOC_WRITE, KVMIO, 0xac, 16);
/// `KVM_ARM_VCPU_FINALIZE`: `_IOW(KVMIO, 0xc2, int)`, mainline.
pub const KVM_ARM_VCPU_FINALIZE: u64 = ioc(IOC_WRITE, KVMIO, 0xc2, 4);

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn populate_struct_layout() {
        assert_eq!(size_of::<KvmArmRmiPopulate>(), 32);
        assert_eq!(offset_of!(KvmArmRmiPopulate, base), 0);
        assert_eq!(offset_of!(KvmArmRmiPopulate, size), 8);
        assert_eq!(offset_of!(KvmArmRmiPopulate, source_uaddr), 16);
        assert_eq!(offset_of!(KvmArmRmiPopulate, flags), 24);
        assert_eq!(offset_of!(KvmArmRmiPopulate, reserved), 28);
        let p = KvmArmRmiPopulate {
            base: 0x0102_0304_0506_0708,
            size: 0x2000,
            source_uaddr: 0xdead_b000,
            flags: 1,
            reserved: 0,
        };
        let b = p.to_bytes();
        assert_eq!(b[0], 0x08);
        assert_eq!(b[7], 0x01);
        assert_eq!(&b[8..16], &[0, 0x20, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[0x00, 0xb0, 0xad, 0xde]);
        assert_eq!(&b[24..28], &[1, 0, 0, 0]);
    }

    #[test]
    fn ioctl_numbers() {
        // _IOW: dir 1 << 30, size 32 << 16, 'KVMIO' 0xAE << 8, nr 0xd7.
        assert_eq!(KVM_ARM_RMI_POPULATE_V12, 0x4020_AED7);
        // _IOWR: dir 3 << 30.
        assert_eq!(KVM_ARM_RMI_POPULATE_V13, 0xC020_AED7);
        assert_eq!(KVM_SET_MEMORY_ATTRIBUTES, 0x4020_AED2);
        assert_eq!(size_of::<kvm_bindings::kvm_memory_attributes>(), 32);
        assert_eq!(KVM_GET_ONE_REG, 0x4010_AEAB);
        assert_eq!(KVM_SET_ONE_REG, 0x4010_AEAC);
        assert_eq!(size_of::<kvm_bindings::kvm_one_reg>(), 16);
        assert_eq!(KVM_ARM_VCPU_FINALIZE, 0x4004_AEC2);
    }

    #[test]
    fn vm_type() {
        // v14 16/44: bit 30; v12 09/46, v13 14/48: KVM_VM_TYPE_ARM(1) = bit 8.
        assert_eq!(KVM_VM_TYPE_ARM_REALM_V14, 0x4000_0000);
        assert_eq!(KVM_VM_TYPE_ARM_REALM_V13, 0x100);
        assert_eq!(realm_vm_type(UapiVersion::V14, 40), 0x4000_0028);
        assert_eq!(realm_vm_type(UapiVersion::V13, 40), 0x128);
        assert_eq!(realm_vm_type(UapiVersion::V12, 52), 0x134);
        assert_eq!(realm_vm_type(UapiVersion::V13, 33), 0x121);
        // The realm bit never collides with pKVM's protected bit or the IPA byte.
        assert_eq!(KVM_VM_TYPE_ARM_REALM_V14 & KVM_VM_TYPE_ARM_PROTECTED, 0);
        assert_eq!(KVM_VM_TYPE_ARM_PROTECTED, 0x8000_0000);
    }

    #[test]
    fn register_ids() {
        // ARM64_SYS_REG(3, 0, 0, 5, 0): 0x6030_0000_0013_0000 | 3 << 14 | 5 << 3.
        assert_eq!(KVM_REG_ID_AA64DFR0_EL1, 0x6030_0000_0013_C028);
        // KVM_REG_ARM64 | KVM_REG_SIZE_U512 (6 << 52) | KVM_REG_ARM64_SVE (0x15 << 16) | 0xffff.
        assert_eq!(KVM_REG_ARM64_SVE_VLS, 0x6060_0000_0015_FFFF);
        assert_eq!(
            KVM_MEMORY_ATTRIBUTE_PRIVATE,
            u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE)
        );
        assert_eq!(KVM_ARM_VCPU_SVE, 4);
    }
}
