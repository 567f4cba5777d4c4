//! Helpers shared by the integration tests (real /dev/kvm).
#![allow(dead_code)]

use std::os::fd::AsRawFd;

use gmem::{Capabilities, GmemFlags, GuestMemfd, SharedView};
use kvm_ioctls::{Kvm, VmFd};

pub const PAGE: u64 = 4096;

/// A default VM (the harness checked the test's needs before running it).
pub fn vm() -> (Kvm, VmFd) {
    gmem::testing::default_vm()
}

/// MMAP | INIT_SHARED, which the tests need offered.
pub fn shared_flags(vm: &VmFd) -> GmemFlags {
    let flags = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
    let caps = Capabilities::probe(vm);
    assert!(
        caps.guest_memfd_flags.contains(flags),
        "this KVM does not offer {flags}: {caps}"
    );
    flags
}

pub fn shared_gmem(vm: &VmFd, size: u64) -> GuestMemfd {
    GuestMemfd::create(vm, size, shared_flags(vm)).expect("create")
}

/// mincore() over a view: which of its pages are resident in the file's page cache.
pub fn resident(view: &SharedView<'_>) -> Vec<bool> {
    let pages = (view.len() / PAGE) as usize;
    let mut vec = vec![0u8; pages];
    let addr = view.as_volatile_slice().ptr_guard().as_ptr();
    // SAFETY: addr/len describe the view's own live mapping; vec has one byte per page.
    let ret = unsafe {
        libc::mincore(
            addr as *mut libc::c_void,
            view.len() as usize,
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(ret, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().map(|b| b & 1 == 1).collect()
}

/// (st_dev, st_ino, st_size, st_blocks) of an fd, or None if it is not open.
pub fn fstat(fd: std::os::fd::RawFd) -> Option<(u64, u64, i64, i64)> {
    // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    let ret = unsafe { libc::fstat(fd, &mut st) };
    (ret == 0).then_some((st.st_dev, st.st_ino, st.st_size, st.st_blocks))
}

pub fn fd_of(g: &GuestMemfd) -> std::os::fd::RawFd {
    g.as_raw_fd()
}
