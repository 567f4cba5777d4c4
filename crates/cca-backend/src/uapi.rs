//! Every raw KVM number and struct of the Arm CCA host series this crate uses, in one place.
//!
//! The Arm CCA KVM support is an out-of-tree kernel series (Steven Price, "arm64: Support for
//! Arm CCA in KVM") whose user ABI changed between versions; none of it is in kvm-bindings.
//! When the series changes again, this file (and [`UapiVersion`](crate::UapiVersion)) is what
//! changes. Where each value was read:
//!
//! - v14 (2026-05-13, patch 13/44 "arm64: RMI: Define the user ABI", `include/uapi/linux/kvm.h`):
//!   `KVM_CAP_ARM_RMI 249`, `KVM_ARM_RMI_POPULATE _IOWR(KVMIO, 0xd7, struct kvm_arm_rmi_populate)`,
//!   `KVM_ARM_RMI_POPULATE_FLAGS_MEASURE (1 << 0)`, the struct `{ __u64 base; __u64 size;
//!   __u64 source_uaddr; __u32 flags; __u32 reserved; }` (in/out: the kernel advances `base`,
//!   `size` and `source_uaddr`, returns 0).
//! - v13 (2026-03-18, patch 12/48): the same struct and `_IOWR` number, `KVM_CAP_ARM_RMI 248`.
//! - v12 (2025-12-17): the same struct, `_IOW(KVMIO, 0xd7, ...)`, `KVM_CAP_ARM_RMI 247`; the
//!   ioctl returns the number of bytes populated.
//! - v9 (2025-06-11, `arch/arm64/include/uapi/asm/kvm.h` and `include/uapi/linux/kvm.h`), the
//!   form kept up to v11: `KVM_CAP_ARM_RME 243` used through `KVM_ENABLE_CAP` with
//!   `args[0]` = sub-command (`CONFIG_REALM 0`, `CREATE_REALM 1`, `INIT_RIPAS_REALM 2`,
//!   `POPULATE_REALM 3`, `ACTIVATE_REALM 4`) and `args[1]` = a pointer to `struct
//!   arm_rme_config`, `struct arm_rme_init_ripas` or `struct arm_rme_populate_realm`.
//! - `KVM_VM_TYPE_ARM_REALM = KVM_VM_TYPE_ARM(1)` = `1 << 8` (`KVM_VM_TYPE_ARM_SHIFT 8`), as in
//!   every version read (v5 to v13).
//!
//! The capability number moves with every rebase; [`probe`](crate::probe) reads it from the
//! `kvm_cap_arm_rmi` module parameter ([`KVM_CAP_ARM_RMI_SYSFS`]) where the kernel exports it and
//! only falls back to the per-version numbers here.

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

/// `KVM_CAP_ARM_RMI` as v12 numbered it.
pub const KVM_CAP_ARM_RMI_V12: u32 = 247;
/// `KVM_CAP_ARM_RMI` as v13 numbered it.
pub const KVM_CAP_ARM_RMI_V13: u32 = 248;
/// `KVM_CAP_ARM_RMI` as v14 numbered it.
pub const KVM_CAP_ARM_RMI_V14: u32 = 249;
/// `KVM_CAP_ARM_RME` as v9 numbered it (the `KVM_ENABLE_CAP` form of v11 and earlier; other
/// versions bumped it: discover it or pass it explicitly).
pub const KVM_CAP_ARM_RME_V9: u32 = 243;

/// Where kernels that export it put the live capability number (a module parameter).
pub const KVM_CAP_ARM_RMI_SYSFS: &str = "/sys/module/kvm/parameters/kvm_cap_arm_rmi";

/// `KVM_VM_TYPE_ARM_SHIFT`.
pub const KVM_VM_TYPE_ARM_SHIFT: u64 = 8;
/// `KVM_VM_TYPE_ARM_REALM` = `KVM_VM_TYPE_ARM(1)`: the machine type bit of a realm VM.
pub const KVM_VM_TYPE_ARM_REALM: u64 = 1 << KVM_VM_TYPE_ARM_SHIFT;
/// `KVM_VM_TYPE_ARM_IPA_SIZE_MASK`: the low byte of the machine type is the IPA width.
pub const KVM_VM_TYPE_ARM_IPA_SIZE_MASK: u64 = 0xff;

/// The `KVM_CREATE_VM` machine type of a realm with `ipa_bits` of IPA space.
pub const fn realm_vm_type(ipa_bits: u8) -> u64 {
    KVM_VM_TYPE_ARM_REALM | (ipa_bits as u64 & KVM_VM_TYPE_ARM_IPA_SIZE_MASK)
}

/// `KVM_ENABLE_CAP`: `_IOW(KVMIO, 0xa3, struct kvm_enable_cap)` (104 bytes), mainline.
pub const KVM_ENABLE_CAP: u64 = ioc(IOC_WRITE, KVMIO, 0xa3, 104);

/// `KVM_CAP_ARM_RME_CONFIG_REALM` (v11 and earlier).
pub const KVM_CAP_ARM_RME_CONFIG_REALM: u64 = 0;
/// `KVM_CAP_ARM_RME_CREATE_REALM` (`..._CREATE_RD` before v7).
pub const KVM_CAP_ARM_RME_CREATE_REALM: u64 = 1;
/// `KVM_CAP_ARM_RME_INIT_RIPAS_REALM` (`..._INIT_IPA_REALM` before v7).
pub const KVM_CAP_ARM_RME_INIT_RIPAS_REALM: u64 = 2;
/// `KVM_CAP_ARM_RME_POPULATE_REALM`.
pub const KVM_CAP_ARM_RME_POPULATE_REALM: u64 = 3;
/// `KVM_CAP_ARM_RME_ACTIVATE_REALM`.
pub const KVM_CAP_ARM_RME_ACTIVATE_REALM: u64 = 4;

/// `ARM_RME_CONFIG_RPV`: configure the Realm Personalization Value.
pub const ARM_RME_CONFIG_RPV: u32 = 0;
/// `ARM_RME_CONFIG_HASH_ALGO`: configure the measurement hash algorithm.
pub const ARM_RME_CONFIG_HASH_ALGO: u32 = 1;
/// `ARM_RME_CONFIG_HASH_ALGO_SHA256`.
pub const ARM_RME_CONFIG_HASH_ALGO_SHA256: u32 = 0;
/// `ARM_RME_CONFIG_HASH_ALGO_SHA512`.
pub const ARM_RME_CONFIG_HASH_ALGO_SHA512: u32 = 1;
/// `ARM_RME_CONFIG_RPV_SIZE`.
pub const ARM_RME_CONFIG_RPV_SIZE: usize = 64;
/// `KVM_ARM_RME_POPULATE_FLAGS_MEASURE` (v11 and earlier).
pub const KVM_ARM_RME_POPULATE_FLAGS_MEASURE: u32 = 1 << 0;

/// `struct arm_rme_config`: `{ __u32 cfg; union { __u8 rpv[64]; __u32 hash_algo;
/// __u8 reserved[256]; }; }`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmRmeConfig {
    /// `ARM_RME_CONFIG_*`.
    pub cfg: u32,
    /// The union, as bytes (`rpv` from offset 0, or `hash_algo` as a little-endian `u32`).
    pub data: [u8; 256],
}

impl ArmRmeConfig {
    /// A `ARM_RME_CONFIG_RPV` item.
    pub fn rpv(rpv: &[u8; ARM_RME_CONFIG_RPV_SIZE]) -> Self {
        let mut data = [0u8; 256];
        data[..ARM_RME_CONFIG_RPV_SIZE].copy_from_slice(rpv);
        ArmRmeConfig {
            cfg: ARM_RME_CONFIG_RPV,
            data,
        }
    }

    /// A `ARM_RME_CONFIG_HASH_ALGO` item.
    pub fn hash_algo(algo: u32) -> Self {
        let mut data = [0u8; 256];
        data[..4].copy_from_slice(&algo.to_le_bytes());
        ArmRmeConfig {
            cfg: ARM_RME_CONFIG_HASH_ALGO,
            data,
        }
    }
}

/// `struct arm_rme_populate_realm`: `{ __u64 base; __u64 size; __u32 flags; __u32 reserved[3]; }`.
/// The kernel copies from the memslot's shared (userspace) alias of the range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmRmePopulateRealm {
    /// First IPA.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// `KVM_ARM_RME_POPULATE_FLAGS_*`.
    pub flags: u32,
    /// Must be zero.
    pub reserved: [u32; 3],
}

/// `struct arm_rme_init_ripas`: `{ __u64 base; __u64 size; __u64 reserved[2]; }`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmRmeInitRipas {
    /// First IPA.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// Must be zero.
    pub reserved: [u64; 2],
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

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
    fn legacy_struct_layouts() {
        assert_eq!(size_of::<ArmRmeConfig>(), 260);
        assert_eq!(align_of::<ArmRmeConfig>(), 4);
        assert_eq!(offset_of!(ArmRmeConfig, cfg), 0);
        assert_eq!(offset_of!(ArmRmeConfig, data), 4);
        assert_eq!(size_of::<ArmRmePopulateRealm>(), 32);
        assert_eq!(offset_of!(ArmRmePopulateRealm, base), 0);
        assert_eq!(offset_of!(ArmRmePopulateRealm, size), 8);
        assert_eq!(offset_of!(ArmRmePopulateRealm, flags), 16);
        assert_eq!(offset_of!(ArmRmePopulateRealm, reserved), 20);
        assert_eq!(size_of::<ArmRmeInitRipas>(), 32);
        assert_eq!(offset_of!(ArmRmeInitRipas, base), 0);
        assert_eq!(offset_of!(ArmRmeInitRipas, size), 8);
        assert_eq!(offset_of!(ArmRmeInitRipas, reserved), 16);
        let c = ArmRmeConfig::hash_algo(ARM_RME_CONFIG_HASH_ALGO_SHA512);
        assert_eq!(c.cfg, 1);
        assert_eq!(&c.data[..4], &[1, 0, 0, 0]);
        let c = ArmRmeConfig::rpv(&[7u8; 64]);
        assert_eq!(c.cfg, 0);
        assert!(c.data[..64].iter().all(|b| *b == 7) && c.data[64..].iter().all(|b| *b == 0));
    }

    #[test]
    fn ioctl_numbers() {
        // _IOW: dir 1 << 30, size 32 << 16, 'KVMIO' 0xAE << 8, nr 0xd7.
        assert_eq!(KVM_ARM_RMI_POPULATE_V12, 0x4020_AED7);
        // _IOWR: dir 3 << 30.
        assert_eq!(KVM_ARM_RMI_POPULATE_V13, 0xC020_AED7);
        // Mainline KVM_ENABLE_CAP, struct kvm_enable_cap is 104 (0x68) bytes.
        assert_eq!(KVM_ENABLE_CAP, 0x4068_AEA3);
        assert_eq!(size_of::<kvm_bindings::kvm_enable_cap>(), 104);
    }

    #[test]
    fn vm_type() {
        assert_eq!(KVM_VM_TYPE_ARM_REALM, 0x100);
        assert_eq!(realm_vm_type(40), 0x128);
        assert_eq!(realm_vm_type(52), 0x134);
    }
}
