//! Adopting a guest_memfd the VMM created, with memslots and mappings the VMM keeps, on real
//! KVM (the lab runs these on 7.3 and 6.12; a host without guest_memfd reports them skipped).

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use common::PAGE;
use gmem::testing::Need;
use gmem::{Adopted, AdoptedState, Capabilities, Error, GmemFlags, GuestMemfd, MemoryState};
use kvm_bindings::{kvm_create_guest_memfd, kvm_userspace_memory_region2};
use kvm_ioctls::VmFd;
use vm_memory::{FileOffset, MmapRegion};

const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2; // include/uapi/linux/kvm.h

/// The VMM's own guest_memfd.
fn vmm_gmem(vm: &VmFd, size: u64, flags: GmemFlags) -> OwnedFd {
    let raw = vm
        .create_guest_memfd(kvm_create_guest_memfd {
            size,
            flags: flags.bits(),
            ..Default::default()
        })
        .expect("KVM_CREATE_GUEST_MEMFD");
    // SAFETY: a new fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// The VMM's own memslot over `userspace_addr` (a mapping the VMM keeps alive longer).
fn vmm_slot(vm: &VmFd, slot: u32, gpa: u64, len: u64, addr: u64, gmem: i32) -> i32 {
    let region = kvm_userspace_memory_region2 {
        slot,
        flags: KVM_MEM_GUEST_MEMFD,
        guest_phys_addr: gpa,
        memory_size: len,
        userspace_addr: addr,
        guest_memfd_offset: 0,
        guest_memfd: gmem as u32,
        ..Default::default()
    };
    // SAFETY: `addr` is a live mapping of `len` bytes the test keeps until the VM is gone.
    match unsafe { vm.set_user_memory_region2(region) } {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

fn adopts_a_borrowed_guest_memfd_and_leaves_the_vmms_fd_slot_and_mapping_alone() {
    let (_kvm, vm) = common::vm();
    let size = 4 * PAGE;
    let flags = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
    let fd = vmm_gmem(&vm, size, flags);
    // The VMM's own mapping of the file, which its devices use, and its own memslot over it.
    let dup = fd.try_clone().unwrap();
    let vmm_map = MmapRegion::<()>::from_file(FileOffset::new(dup.into(), 0), size as usize)
        .expect("the VMM's mapping");
    assert_eq!(
        vmm_slot(
            &vm,
            3,
            0x10_0000,
            size,
            vmm_map.as_ptr() as u64,
            fd.as_raw_fd()
        ),
        0
    );

    let caps = Capabilities::probe(&vm);
    let g = GuestMemfd::adopt(
        &vm,
        &caps,
        Adopted::Borrowed(fd.as_fd()),
        flags,
        AdoptedState::AsCreated,
    )
    .unwrap();
    assert_eq!(g.size(), size);
    assert_ne!(
        g.as_raw_fd(),
        fd.as_raw_fd(),
        "a duplicate, not the VMM's fd"
    );
    g.record_memslot(3, 0x10_0000, 0, size).unwrap();
    // Written through gmem's view, read through the VMM's own mapping: the same file.
    g.map_shared(PAGE, PAGE)
        .unwrap()
        .write_at(8, b"adopted")
        .unwrap();
    let mut back = [0u8; 7];
    // SAFETY: the VMM's mapping is live and `PAGE + 8 + 7` lies inside it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            vmm_map.as_ptr().add(PAGE as usize + 8),
            back.as_mut_ptr(),
            7,
        )
    };
    assert_eq!(&back, b"adopted");
    // The recorded slot is known: bind refuses its slot id and its GPA before any ioctl.
    assert!(matches!(
        g.bind(3, 0x80_0000, 0, PAGE),
        Err(Error::SlotInUse { slot: 3, .. }) | Err(Error::AlreadyBound { slot: 3, .. })
    ));
    assert!(g.forget_memslot(3));
    assert!(!g.forget_memslot(3));
    drop(g);
    // The VMM's fd is still open and its slot still exists: the kernel refuses an overlap.
    // SAFETY: fcntl(F_GETFD) takes no pointers.
    assert!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } >= 0);
    assert_eq!(
        vmm_slot(
            &vm,
            4,
            0x10_0000,
            PAGE,
            vmm_map.as_ptr() as u64,
            fd.as_raw_fd()
        ),
        libc::EEXIST
    );
}

fn adopting_a_file_that_is_not_a_guest_memfd_is_refused() {
    let (_kvm, vm) = common::vm();
    let f = std::fs::File::open("/dev/null").unwrap();
    let e = GuestMemfd::adopt(
        &vm,
        &Capabilities::probe(&vm),
        Adopted::Borrowed(f.as_fd()),
        GmemFlags::empty(),
        AdoptedState::AsCreated,
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::NotGuestMemfd { found, .. } if found == "/dev/null"),
        "{e:?}"
    );
}

fn adopts_an_owned_guest_memfd_and_converts_through_the_vmms_memslot() {
    let (_kvm, vm) = gmem::testing::protected_vm();
    let size = 4 * PAGE;
    let fd = vmm_gmem(&vm, size, GmemFlags::empty());
    let raw = fd.as_raw_fd();
    // The VMM's shared backing for the slot (anonymous memory it keeps).
    let shared = MmapRegion::<()>::new(size as usize).unwrap();
    assert_eq!(
        vmm_slot(&vm, 7, 0x20_0000, size, shared.as_ptr() as u64, raw),
        0
    );
    let caps = Capabilities::probe(&vm);
    let mut g = GuestMemfd::adopt(
        &vm,
        &caps,
        Adopted::Owned(fd),
        GmemFlags::empty(),
        AdoptedState::AsCreated,
    )
    .unwrap();
    // The VM-attributes path starts shared (kvm_get_memory_attributes, 7.3 and 6.12).
    assert!(g.private_ranges().is_empty());
    g.record_memslot(7, 0x20_0000, 0, size).unwrap();
    // By GPA through the VMM's slot: the kernel accepts KVM_SET_MEMORY_ATTRIBUTES for it.
    gmem::convert_gpa_range(&mut [&mut g], 0x20_1000, 2 * PAGE, MemoryState::Private).unwrap();
    assert_eq!(g.private_ranges(), vec![(PAGE, 3 * PAGE)]);
    g.convert(PAGE, PAGE, MemoryState::Shared).unwrap();
    assert_eq!(g.private_ranges(), vec![(2 * PAGE, 3 * PAGE)]);
    // A stated record is taken as given.
    let fd2 = vmm_gmem(&vm, size, GmemFlags::empty());
    let g2 = GuestMemfd::adopt(
        &vm,
        &caps,
        Adopted::Owned(fd2),
        GmemFlags::empty(),
        AdoptedState::Private(vec![(0, PAGE)]),
    )
    .unwrap();
    assert_eq!(g2.private_ranges(), vec![(0, PAGE)]);
    drop(g);
    // gmem owned the fd and closed it; the slot (which holds the file) is still the VMM's.
    assert_eq!(
        vmm_slot(
            &vm,
            8,
            0x20_0000,
            PAGE,
            shared.as_ptr() as u64,
            g2.as_raw_fd()
        ),
        libc::EEXIST
    );
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            adopts_a_borrowed_guest_memfd_and_leaves_the_vmms_fd_slot_and_mapping_alone,
            Need::GuestMemfd,
            Need::SharedGuestMemfd,
            Need::UserMemory2
        ),
        gmem::kvm_test!(
            adopting_a_file_that_is_not_a_guest_memfd_is_refused,
            Need::Kvm
        ),
        gmem::kvm_test!(
            adopts_an_owned_guest_memfd_and_converts_through_the_vmms_memslot,
            Need::PrivateAttributes,
            Need::UserMemory2
        ),
    ])
}
