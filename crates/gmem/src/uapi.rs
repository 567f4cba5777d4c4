//! Kernel UAPI items this crate needs that `kvm-bindings` 0.14 (generated from Linux 6.15) lacks,
//! plus the ioctl request numbers this crate issues itself.
//!
//! Values are taken from the kernel's `include/uapi/linux/kvm.h` (Linux 6.18). The structs used
//! with these ioctls come from `kvm-bindings`; their sizes and field offsets are pinned by the
//! tests at the bottom of this file against the kernel header, so a `kvm-bindings` update that
//! changes them fails the build's tests instead of corrupting an ioctl argument.

use kvm_bindings::{
    kvm_create_guest_memfd, kvm_memory_attributes, kvm_pre_fault_memory,
    kvm_userspace_memory_region2,
};
use std::mem::size_of;
use std::os::raw::c_ulong;

use vmm_sys_util::ioctl::{ioctl_expr, _IOC_READ, _IOC_WRITE};

/// `KVMIO`, the ioctl type byte of every KVM ioctl.
pub const KVMIO: u32 = 0xAE;

/// `GUEST_MEMFD_FLAG_MMAP` (`1ULL << 0`): the guest_memfd supports `mmap()` by the host.
pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;

/// `GUEST_MEMFD_FLAG_INIT_SHARED` (`1ULL << 1`): the guest_memfd's memory starts out shared with
/// the host (faultable through an `mmap()`), rather than private.
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;

/// `KVM_CAP_GUEST_MEMFD_FLAGS` (244): `KVM_CHECK_EXTENSION` answers with the mask of
/// `GUEST_MEMFD_FLAG_*` bits that `KVM_CREATE_GUEST_MEMFD` accepts.
pub const KVM_CAP_GUEST_MEMFD_FLAGS: u32 = 244;

/// `KVM_CAP_USER_MEMORY2` (231): `KVM_SET_USER_MEMORY_REGION2` exists.
pub const KVM_CAP_USER_MEMORY2: u32 = kvm_bindings::KVM_CAP_USER_MEMORY2;
/// `KVM_CAP_MEMORY_ATTRIBUTES` (233): answers with the attributes `KVM_SET_MEMORY_ATTRIBUTES`
/// accepts on this VM (0: the ioctl is not available).
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = kvm_bindings::KVM_CAP_MEMORY_ATTRIBUTES;
/// `KVM_CAP_GUEST_MEMFD` (234): `KVM_CREATE_GUEST_MEMFD` exists.
pub const KVM_CAP_GUEST_MEMFD: u32 = kvm_bindings::KVM_CAP_GUEST_MEMFD;
/// `KVM_CAP_VM_TYPES` (235): answers with a bit mask of the VM types `KVM_CREATE_VM` accepts.
pub const KVM_CAP_VM_TYPES: u32 = kvm_bindings::KVM_CAP_VM_TYPES;
/// `KVM_CAP_PRE_FAULT_MEMORY` (236): `KVM_PRE_FAULT_MEMORY` exists.
pub const KVM_CAP_PRE_FAULT_MEMORY: u32 = kvm_bindings::KVM_CAP_PRE_FAULT_MEMORY;
/// `KVM_CAP_NR_MEMSLOTS` (10): the number of memslots per address space.
pub const KVM_CAP_NR_MEMSLOTS: u32 = kvm_bindings::KVM_CAP_NR_MEMSLOTS;

/// `KVM_MEM_GUEST_MEMFD` (`1 << 2`): memslot flag, the slot's private memory is a guest_memfd.
pub const KVM_MEM_GUEST_MEMFD: u32 = kvm_bindings::KVM_MEM_GUEST_MEMFD;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE` (`1ULL << 3`).
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64;

/// `KVM_CREATE_GUEST_MEMFD`: `_IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)` (VM fd).
pub const KVM_CREATE_GUEST_MEMFD: c_ulong = ioctl_expr(
    _IOC_READ | _IOC_WRITE,
    KVMIO,
    0xd4,
    size_of::<kvm_create_guest_memfd>() as u32,
);
/// `KVM_SET_USER_MEMORY_REGION2`: `_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)`
/// (VM fd).
pub const KVM_SET_USER_MEMORY_REGION2: c_ulong = ioctl_expr(
    _IOC_WRITE,
    KVMIO,
    0x49,
    size_of::<kvm_userspace_memory_region2>() as u32,
);
/// `KVM_SET_MEMORY_ATTRIBUTES`: `_IOW(KVMIO, 0xd2, struct kvm_memory_attributes)` (VM fd).
pub const KVM_SET_MEMORY_ATTRIBUTES: c_ulong = ioctl_expr(
    _IOC_WRITE,
    KVMIO,
    0xd2,
    size_of::<kvm_memory_attributes>() as u32,
);
/// `KVM_PRE_FAULT_MEMORY`: `_IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory)` (vCPU fd), which
/// kvm-ioctls 0.25 does not issue.
pub const KVM_PRE_FAULT_MEMORY: c_ulong = ioctl_expr(
    _IOC_READ | _IOC_WRITE,
    KVMIO,
    0xd5,
    size_of::<kvm_pre_fault_memory>() as u32,
);

/// `struct kvm_memory_attributes2` of the guest_memfd in-place conversion series (v8, patches
/// 13/46 and 14/46, `include/uapi/linux/kvm.h`): the argument of `KVM_SET_MEMORY_ATTRIBUTES2`
/// on a **guest_memfd** fd. Not in any released kernel (7.3.4 has none of it) nor in
/// `kvm-bindings`, so it is defined here, with its layout pinned by the tests below.
///
/// `offset` is the union `{ address; offset; }` of the patch (a file offset on the guest_memfd
/// ioctl). `error_offset` is written by the kernel when the call fails (v8 `kvm_gmem_set_attributes`
/// copies it back on every error of `__kvm_gmem_set_attributes`: `EAGAIN` with the first page
/// still in use, `ENOMEM` with the range's start).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct kvm_memory_attributes2 {
    /// In: file offset of the range (page-aligned).
    pub offset: u64,
    /// In: length of the range (page-aligned, non-zero).
    pub size: u64,
    /// In: `KVM_MEMORY_ATTRIBUTE_PRIVATE` or 0 (shared); any other bit is `EINVAL`.
    pub attributes: u64,
    /// In: must be 0 (`EINVAL` otherwise).
    pub flags: u64,
    /// Out: the offset the failure concerns.
    pub error_offset: u64,
    /// Must be 0 (`EINVAL` otherwise).
    pub reserved: [u64; 11],
}

/// `KVM_SET_MEMORY_ATTRIBUTES2`: `_IOWR(KVMIO, 0xd2, struct kvm_memory_attributes2)`, a
/// **guest_memfd** ioctl of the in-place conversion series (v8 patch 13/46). The same number
/// `0xd2` as the VM's `KVM_SET_MEMORY_ATTRIBUTES`; direction and size make the two distinct.
pub const KVM_SET_MEMORY_ATTRIBUTES2: c_ulong = ioctl_expr(
    _IOC_READ | _IOC_WRITE,
    KVMIO,
    0xd2,
    size_of::<kvm_memory_attributes2>() as u32,
);

/// `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` as series v8 numbers it (250, patch 17/46, on v8's
/// base). Mainline 7.3 gives 250 to `KVM_CAP_PPC_COMPAT_CAPS` (and 251 to
/// `KVM_CAP_ARM_PMU_V3_STRICT`), so the merged number will differ: use it only through
/// [`GmemSeries`](crate::GmemSeries), which pins numbers per series version.
pub const KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES_V8: u32 = 250;

/// `KVM_EXIT_MEMORY_FAULT` (39): `kvm_run.exit_reason` when `KVM_RUN` fails with `EFAULT` or
/// `EHWPOISON` and `kvm_run.memory_fault` is valid.
pub const KVM_EXIT_MEMORY_FAULT: u32 = kvm_bindings::KVM_EXIT_MEMORY_FAULT;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE` (`1ULL << 3`): `kvm_run.memory_fault.flags`, the guest accessed
/// the page as private.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE as u64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    // Expected values below were written by hand from include/uapi/linux/kvm.h (Linux 6.18) and
    // the _IOC encoding of include/uapi/asm-generic/ioctl.h:
    // dir << 30 | size << 16 | type << 8 | nr, with _IOC_WRITE = 1, _IOC_READ = 2.

    #[test]
    fn guest_memfd_flag_values_match_kernel() {
        assert_eq!(GUEST_MEMFD_FLAG_MMAP, 0x1);
        assert_eq!(GUEST_MEMFD_FLAG_INIT_SHARED, 0x2);
        assert_eq!(KVM_CAP_GUEST_MEMFD_FLAGS, 244);
    }

    #[test]
    fn capability_numbers_match_kernel() {
        assert_eq!(KVM_CAP_NR_MEMSLOTS, 10);
        assert_eq!(KVM_CAP_USER_MEMORY2, 231);
        assert_eq!(KVM_CAP_MEMORY_ATTRIBUTES, 233);
        assert_eq!(KVM_CAP_GUEST_MEMFD, 234);
        assert_eq!(KVM_CAP_VM_TYPES, 235);
        assert_eq!(KVM_CAP_PRE_FAULT_MEMORY, 236);
        assert_eq!(KVM_MEM_GUEST_MEMFD, 0x4);
        assert_eq!(KVM_MEMORY_ATTRIBUTE_PRIVATE, 0x8);
        assert_eq!(KVM_EXIT_MEMORY_FAULT, 39);
        assert_eq!(KVM_MEMORY_EXIT_FLAG_PRIVATE, 0x8);
    }

    #[test]
    fn ioctl_numbers_match_kernel_encoding() {
        // _IOWR(0xAE, 0xd4, 64-byte struct)
        assert_eq!(KVM_CREATE_GUEST_MEMFD, 0xC040_AED4);
        // _IOW(0xAE, 0x49, 160-byte struct)
        assert_eq!(KVM_SET_USER_MEMORY_REGION2, 0x40A0_AE49);
        // _IOW(0xAE, 0xd2, 32-byte struct)
        assert_eq!(KVM_SET_MEMORY_ATTRIBUTES, 0x4020_AED2);
        // _IOWR(0xAE, 0xd5, 64-byte struct)
        assert_eq!(KVM_PRE_FAULT_MEMORY, 0xC040_AED5);
    }

    #[test]
    fn kvm_memory_attributes2_layout_and_ioctl_match_series_v8() {
        // Written out from v8 patch 14/46 (include/uapi/linux/kvm.h): u64 offset (union with
        // address), size, attributes, flags, error_offset, reserved[11]: 16 u64 = 128 bytes.
        type A = kvm_memory_attributes2;
        assert_eq!(size_of::<A>(), 128);
        assert_eq!(offset_of!(A, offset), 0);
        assert_eq!(offset_of!(A, size), 8);
        assert_eq!(offset_of!(A, attributes), 16);
        assert_eq!(offset_of!(A, flags), 24);
        assert_eq!(offset_of!(A, error_offset), 32);
        assert_eq!(offset_of!(A, reserved), 40);
        // The fields shared with kvm_memory_attributes sit where it has them (v8 patch 13/46
        // asserts this with MEMORY_ATTRIBUTES_MATCH in kvm_main.c).
        assert_eq!(offset_of!(kvm_memory_attributes, address), 0);
        assert_eq!(offset_of!(kvm_memory_attributes, flags), 24);
        // _IOWR(0xAE, 0xd2, 128-byte struct): 3 << 30 | 0x80 << 16 | 0xAE << 8 | 0xd2.
        assert_eq!(KVM_SET_MEMORY_ATTRIBUTES2, 0xC080_AED2);
        assert_eq!(KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES_V8, 250);
    }

    #[test]
    fn kvm_pre_fault_memory_layout() {
        type P = kvm_pre_fault_memory;
        assert_eq!(size_of::<P>(), 64);
        assert_eq!(offset_of!(P, gpa), 0);
        assert_eq!(offset_of!(P, size), 8);
        assert_eq!(offset_of!(P, flags), 16);
        assert_eq!(offset_of!(P, padding), 24);
    }

    #[test]
    fn kvm_create_guest_memfd_layout() {
        assert_eq!(size_of::<kvm_create_guest_memfd>(), 64);
        assert_eq!(offset_of!(kvm_create_guest_memfd, size), 0);
        assert_eq!(offset_of!(kvm_create_guest_memfd, flags), 8);
        assert_eq!(offset_of!(kvm_create_guest_memfd, reserved), 16);
    }

    #[test]
    fn kvm_userspace_memory_region2_layout() {
        type R = kvm_userspace_memory_region2;
        assert_eq!(size_of::<R>(), 160);
        assert_eq!(offset_of!(R, slot), 0);
        assert_eq!(offset_of!(R, flags), 4);
        assert_eq!(offset_of!(R, guest_phys_addr), 8);
        assert_eq!(offset_of!(R, memory_size), 16);
        assert_eq!(offset_of!(R, userspace_addr), 24);
        assert_eq!(offset_of!(R, guest_memfd_offset), 32);
        assert_eq!(offset_of!(R, guest_memfd), 40);
        assert_eq!(offset_of!(R, pad1), 44);
        assert_eq!(offset_of!(R, pad2), 48);
    }

    #[test]
    fn kvm_memory_attributes_layout() {
        type A = kvm_memory_attributes;
        assert_eq!(size_of::<A>(), 32);
        assert_eq!(offset_of!(A, address), 0);
        assert_eq!(offset_of!(A, size), 8);
        assert_eq!(offset_of!(A, attributes), 16);
        assert_eq!(offset_of!(A, flags), 24);
    }
}
