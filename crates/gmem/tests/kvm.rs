//! Every operation of the crate against the real /dev/kvm, and every refusal.

mod common;

use gmem::testing::Need;
use std::os::fd::AsRawFd;

use common::*;
use gmem::{Capabilities, Error, GmemFlags, GuestMemfd, MemoryState};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

fn probe_matches_raw_check_extension() {
    let (kvm, vm) = vm();
    let caps = Capabilities::probe(&vm);
    // An independent reading of the same capabilities, by number from the kernel header.
    let raw = |cap: u64| vm.check_extension_raw(cap);
    assert_eq!(caps.guest_memfd, raw(234) > 0);
    assert_eq!(caps.guest_memfd_flags.bits(), raw(244).max(0) as u64);
    assert_eq!(caps.memory_attributes, raw(233).max(0) as u64);
    assert_eq!(caps.vm_types, raw(235).max(0) as u64);
    assert_eq!(caps.user_memory2, raw(231) > 0);
    assert_eq!(caps.pre_fault_memory, raw(236) > 0);
    assert_eq!(caps.nr_memslots as i32, raw(10));
    // The project needs these on its machines.
    assert!(caps.guest_memfd && caps.user_memory2, "{caps}");
    // The default VM type is always accepted.
    assert!(caps.supports_vm_type(0), "{caps}");
    let line = caps.to_string();
    assert!(
        line.starts_with("guest_memfd=true guest_memfd_flags="),
        "{line}"
    );

    let sys = Capabilities::probe_kvm(&kvm);
    assert_eq!(sys.guest_memfd, kvm.check_extension_raw(234) > 0);
    assert_eq!(sys.vm_types, kvm.check_extension_raw(235).max(0) as u64);
}

fn create_each_offered_flag_combination() {
    let (_kvm, vm) = vm();
    let offered = Capabilities::probe(&vm).guest_memfd_flags;
    for bits in 0..4u64 {
        let flags = GmemFlags::from_bits(bits);
        // INIT_SHARED without MMAP is meaningless; skip combinations not offered.
        if !offered.contains(flags) || bits == 2 {
            continue;
        }
        let size = 8 * PAGE;
        let g = GuestMemfd::create(&vm, size, flags).unwrap();
        assert_eq!(g.size(), size);
        assert_eq!(g.flags(), flags);
        // The kernel's view of the file: its size.
        let (dev, ino, st_size, _) = fstat(g.as_raw_fd()).expect("fd open");
        assert_eq!(st_size as u64, size);
        // Private tracking: everything private unless INIT_SHARED.
        let expect: Vec<(u64, u64)> = if flags.contains(GmemFlags::INIT_SHARED) {
            vec![]
        } else {
            vec![(0, size)]
        };
        assert_eq!(g.private_ranges(), expect);
        // Dropping closes the fd: the number is either closed or reused by another file.
        let fd = g.as_raw_fd();
        drop(g);
        if let Some((d2, i2, _, _)) = fstat(fd) {
            assert_ne!((d2, i2), (dev, ino), "guest_memfd fd still open after drop");
        }
    }
}

fn create_refuses_bad_size_and_flags_before_the_kernel() {
    let (_kvm, vm) = vm();
    let caps = Capabilities::probe(&vm);
    assert!(matches!(
        GuestMemfd::create(&vm, 0, GmemFlags::empty()),
        Err(Error::InvalidSize { size: 0, .. })
    ));
    assert!(matches!(
        GuestMemfd::create(&vm, PAGE + 1, GmemFlags::empty()),
        Err(Error::InvalidSize { size, .. }) if size == PAGE + 1
    ));
    // A bit no kernel offers (1 << 40).
    let bogus = GmemFlags::from_bits(1 << 40);
    match GuestMemfd::create(&vm, PAGE, GmemFlags::MMAP | bogus) {
        Err(e @ Error::FlagsNotOffered { .. }) => {
            let Error::FlagsNotOffered {
                requested, offered, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*requested, bogus);
            assert_eq!(*offered, caps.guest_memfd_flags);
            assert!(e.to_string().contains("0x10000000000"), "{e}");
        }
        other => panic!("expected FlagsNotOffered, got {other:?}"),
    }
    // A VM that offers no flags at all refuses MMAP.
    let none = Capabilities {
        guest_memfd_flags: GmemFlags::empty(),
        ..caps
    };
    assert!(matches!(
        GuestMemfd::create_with(&vm, &none, PAGE, GmemFlags::MMAP),
        Err(Error::FlagsNotOffered { requested, .. }) if requested == GmemFlags::MMAP
    ));
    // And one without guest_memfd refuses creation outright.
    let no_gmem = Capabilities {
        guest_memfd: false,
        ..caps
    };
    assert!(matches!(
        GuestMemfd::create_with(&vm, &no_gmem, PAGE, GmemFlags::empty()),
        Err(Error::GuestMemfdUnsupported { .. })
    ));
}

fn shared_view_write_read_through_two_mappings() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 16 * PAGE);
    let a = g.map_shared(4 * PAGE, 8 * PAGE).unwrap();
    let b = g.map_shared(0, 16 * PAGE).unwrap();
    assert_eq!(
        (a.offset(), a.len(), a.is_empty()),
        (4 * PAGE, 8 * PAGE, false)
    );
    // A pattern that differs per byte, crossing a page boundary.
    let data: Vec<u8> = (0..3 * PAGE as usize).map(|i| (i * 7 + 3) as u8).collect();
    a.write_at(PAGE / 2, &data).unwrap();
    // Read back through the other mapping, at the file offset: same pages.
    let mut back = vec![0u8; data.len()];
    b.read_at(4 * PAGE + PAGE / 2, &mut back).unwrap();
    assert_eq!(back, data);
    // Bytes before the write are still zero.
    let mut before = [0xffu8; 16];
    b.read_at(4 * PAGE + PAGE / 2 - 16, &mut before).unwrap();
    assert_eq!(before, [0; 16]);
    // fill_zero clears exactly the range asked.
    a.fill_zero(PAGE, 20000).unwrap();
    let mut z = vec![0xffu8; data.len()];
    b.read_at(4 * PAGE + PAGE / 2, &mut z).unwrap();
    let first_zeroed = (PAGE - PAGE / 2) as usize;
    assert_eq!(z[..first_zeroed], data[..first_zeroed]);
    assert!(z[first_zeroed..].iter().all(|&x| x == 0));
    // vm-memory Bytes through the view.
    a.write_obj(0xdead_beef_u32, MemoryRegionAddress(8))
        .unwrap();
    let mut w = [0u8; 4];
    b.read_at(4 * PAGE + 8, &mut w).unwrap();
    assert_eq!(u32::from_le_bytes(w), 0xdead_beef);
    assert_eq!(
        b.read_obj::<u32>(MemoryRegionAddress(4 * PAGE + 8))
            .unwrap(),
        0xdead_beef
    );
    assert!(a
        .write_obj(1u64, MemoryRegionAddress(8 * PAGE - 4))
        .is_err());
    assert_eq!(a.as_volatile_slice().len(), 8 * PAGE as usize);
}

fn populate_write_makes_pages_resident() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 8 * PAGE);
    let v = g.map_shared(0, 8 * PAGE).unwrap();
    assert_eq!(resident(&v), vec![false; 8]);
    // Unaligned request: covers pages 2..=4.
    v.populate_write(2 * PAGE + 100, 2 * PAGE).unwrap();
    let r = resident(&v);
    assert_eq!(
        r,
        [false, false, true, true, true, false, false, false],
        "{r:?}"
    );
    assert!(matches!(
        v.populate_write(7 * PAGE, 2 * PAGE),
        Err(Error::OutOfBounds { .. })
    ));
    v.populate_write(0, 0).unwrap();
    assert!(!resident(&v)[0]);
}

fn view_refusals_name_the_range_and_change_nothing() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 4 * PAGE);
    assert!(matches!(
        g.map_shared(0, 0),
        Err(Error::EmptyRange { offset: 0 })
    ));
    assert!(matches!(
        g.map_shared(1, PAGE),
        Err(Error::Unaligned { offset: 1, .. })
    ));
    assert!(matches!(
        g.map_shared(2 * PAGE, 4 * PAGE),
        Err(Error::OutOfBounds { size, .. }) if size == 4 * PAGE
    ));
    assert!(matches!(
        g.map_shared(u64::MAX - PAGE + 1, 2 * PAGE),
        Err(Error::RangeOverflow { .. })
    ));
    let v = g.map_shared(0, 2 * PAGE).unwrap();
    v.write_at(0, &[0xaa; 8]).unwrap();
    let e = v.write_at(2 * PAGE - 4, &[1; 8]).unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { offset, len: 8, .. } if offset == 2 * PAGE - 4));
    assert!(e.to_string().contains("0x1ffc"), "{e}");
    let mut buf = [0u8; 4];
    v.read_at(2 * PAGE - 4, &mut buf).unwrap();
    assert_eq!(
        buf, [0; 4],
        "a refused write must not write a partial prefix"
    );
    assert!(matches!(
        v.read_at(u64::MAX, &mut buf),
        Err(Error::RangeOverflow { .. })
    ));
    assert!(matches!(
        v.fill_zero(PAGE, 2 * PAGE),
        Err(Error::OutOfBounds { .. })
    ));
    v.write_at(2 * PAGE, &[]).unwrap();

    // Without MMAP the file cannot be mapped at all.
    let plain = GuestMemfd::create(&vm, 4 * PAGE, GmemFlags::empty()).unwrap();
    assert!(matches!(
        plain.map_shared(0, PAGE),
        Err(Error::NotMappable { flags, .. }) if flags.is_empty()
    ));
    // MMAP without INIT_SHARED starts private: refused (the kernel would SIGBUS on touch).
    let private = GuestMemfd::create(&vm, 4 * PAGE, GmemFlags::MMAP).unwrap();
    assert!(matches!(
        private.map_shared(PAGE, PAGE),
        Err(Error::Private { first_private, .. }) if first_private == PAGE
    ));
}

fn allocate_keeps_size_and_contents() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 8 * PAGE);
    let v = g.map_shared(0, 8 * PAGE).unwrap();
    v.write_at(PAGE, &[0x5a; 64]).unwrap();
    g.allocate(0, 8 * PAGE).unwrap();
    // KEEP_SIZE: the file size is unchanged; data already there survives; new pages read zero.
    assert_eq!(fstat(g.as_raw_fd()).unwrap().2 as u64, 8 * PAGE);
    let mut b = [0u8; 64];
    v.read_at(PAGE, &mut b).unwrap();
    assert_eq!(b, [0x5a; 64]);
    v.read_at(5 * PAGE, &mut b).unwrap();
    assert_eq!(b, [0; 64]);
    // Also works on a file the host cannot map.
    let plain = GuestMemfd::create(&vm, 4 * PAGE, GmemFlags::empty()).unwrap();
    plain.allocate(PAGE, 2 * PAGE).unwrap();
}

fn punch_hole_zeroes_and_frees_exactly_the_range() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 4 * PAGE);
    let v = g.map_shared(0, 4 * PAGE).unwrap();
    for p in 0..4u64 {
        v.write_at(p * PAGE, &vec![p as u8 + 1; PAGE as usize])
            .unwrap();
    }
    assert_eq!(resident(&v), vec![true; 4]);
    g.punch_hole(PAGE, 2 * PAGE).unwrap();
    // The punched pages left the page cache...
    assert_eq!(resident(&v), [true, false, false, true]);
    // ...and read back as zero; their neighbours are intact.
    let mut page = vec![0u8; PAGE as usize];
    for (p, expect) in [(0u64, 1u8), (1, 0), (2, 0), (3, 4)] {
        v.read_at(p * PAGE, &mut page).unwrap();
        assert!(page.iter().all(|&x| x == expect), "page {p}");
    }
}

fn allocate_and_punch_hole_refusals() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 4 * PAGE);
    let v = g.map_shared(0, 4 * PAGE).unwrap();
    v.write_at(0, &[7; 4 * 4096]).unwrap();
    for op in [GuestMemfd::allocate, GuestMemfd::punch_hole] {
        assert!(matches!(op(&g, 0, 0), Err(Error::EmptyRange { .. })));
        assert!(matches!(
            op(&g, 100, PAGE),
            Err(Error::Unaligned { offset: 100, .. })
        ));
        assert!(matches!(op(&g, 0, PAGE + 1), Err(Error::Unaligned { .. })));
        assert!(matches!(
            op(&g, 3 * PAGE, 2 * PAGE),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            op(&g, !(PAGE - 1), 2 * PAGE),
            Err(Error::RangeOverflow { .. })
        ));
        assert!(matches!(
            op(&g, 1 << 62, 1 << 62),
            Err(Error::OutOfBounds { .. })
        ));
    }
    // Nothing was punched.
    let mut all = vec![0u8; 4 * PAGE as usize];
    v.read_at(0, &mut all).unwrap();
    assert!(all.iter().all(|&x| x == 7));
}

fn bind_creates_the_slot_and_drop_deletes_it() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 16 * PAGE);
    let other = shared_gmem(&vm, 16 * PAGE);
    let slot = g.bind(3, 0x10_0000, 4 * PAGE, 8 * PAGE).unwrap();
    assert_eq!(
        (
            slot.slot(),
            slot.gpa(),
            slot.offset(),
            slot.len(),
            slot.is_empty()
        ),
        (3, 0x10_0000, 4 * PAGE, 8 * PAGE, false)
    );
    assert_ne!(slot.userspace_addr(), 0);
    // The kernel has it: another file at an overlapping GPA is refused by KVM (EEXIST).
    let e = other
        .bind(4, 0x10_0000 + 7 * PAGE, 0, 2 * PAGE)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::SlotOverlap {
                slot: 4,
                other: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("0x107000"), "{e}");
    // Deleted on drop: the same GPA range can now be bound by the other file.
    drop(slot);
    let s2 = other.bind(4, 0x10_0000 + 7 * PAGE, 0, 2 * PAGE).unwrap();
    // And explicitly: unbind reports success, after which the slot id is free again.
    s2.unbind().unwrap();
    let s3 = other.bind(4, 0x10_0000, 0, 2 * PAGE).unwrap();
    drop(s3);
    // A file without MMAP binds too (its slot gets an anonymous shared backing).
    let plain = GuestMemfd::create(&vm, 4 * PAGE, GmemFlags::empty()).unwrap();
    plain
        .bind(9, 0x20_0000, 0, 4 * PAGE)
        .unwrap()
        .unbind()
        .unwrap();
}

fn bind_refusals_change_nothing() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 16 * PAGE);
    let _s = g.bind(1, 0x10_0000, 0, 4 * PAGE).unwrap();
    // Slot id already used by this file.
    assert!(matches!(
        g.bind(1, 0x40_0000, 8 * PAGE, PAGE),
        Err(Error::SlotInUse { slot: 1, .. })
    ));
    // File range already bound.
    assert!(matches!(
        g.bind(2, 0x40_0000, 3 * PAGE, 2 * PAGE),
        Err(Error::AlreadyBound { slot: 1, .. })
    ));
    // GPA range overlapping a slot of this file.
    assert!(matches!(
        g.bind(2, 0x10_0000 + 3 * PAGE, 8 * PAGE, 2 * PAGE),
        Err(Error::SlotOverlap { other: Some(1), .. })
    ));
    // Unaligned GPA, overflowing GPA, bad file ranges.
    assert!(matches!(
        g.bind(2, 0x40_0001, 8 * PAGE, PAGE),
        Err(Error::Unaligned {
            offset: 0x40_0001,
            ..
        })
    ));
    assert!(matches!(
        g.bind(2, u64::MAX - PAGE + 1, 8 * PAGE, 2 * PAGE),
        Err(Error::RangeOverflow { .. })
    ));
    assert!(matches!(
        g.bind(2, 0x40_0000, 8 * PAGE, 0),
        Err(Error::EmptyRange { .. })
    ));
    assert!(matches!(
        g.bind(2, 0x40_0000, 8 * PAGE, 9 * PAGE),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        g.bind(2, 0x40_0000, 8 * PAGE + 1, PAGE),
        Err(Error::Unaligned { .. })
    ));
    // None of these created a slot: the range they named is still free for a valid bind.
    let ok = g.bind(2, 0x40_0000, 8 * PAGE, 8 * PAGE).unwrap();
    drop(ok);
    // A slot id beyond what KVM allows is the kernel's refusal, typed with the GPA range.
    let nr = Capabilities::probe(&vm).nr_memslots;
    let e = g.bind(nr + 100, 0x80_0000, 8 * PAGE, PAGE).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Kvm {
                op: "KVM_SET_USER_MEMORY_REGION2",
                offset: 0x80_0000,
                ..
            }
        ),
        "{e:?}"
    );
}

fn conversion_is_typed_unsupported_without_memory_attributes() {
    let (_kvm, vm) = vm();
    let caps = Capabilities::probe(&vm);
    let mut g = shared_gmem(&vm, 8 * PAGE);
    let _slot = g.bind(0, 0, 0, 8 * PAGE).unwrap();
    // Bad input is reported first, whatever the VM offers.
    assert!(matches!(g.set_private(0, 0), Err(Error::EmptyRange { .. })));
    assert!(matches!(
        g.set_private(1, PAGE),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        g.set_shared(0, 9 * PAGE),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        g.convert(!(PAGE - 1), 2 * PAGE, MemoryState::Private),
        Err(Error::RangeOverflow { .. })
    ));
    if caps.conversion_path().is_some() {
        // A VM with memory attributes: exercised where the hardware/VM type offers it.
        return;
    }
    assert_eq!(g.conversion_path(), None);
    let e = g.set_private(PAGE, 2 * PAGE).unwrap_err();
    assert!(
        matches!(e, Error::ConversionUnsupported { offset, len, to: MemoryState::Private, .. }
            if offset == PAGE && len == 2 * PAGE),
        "{e:?}"
    );
    assert!(e.to_string().contains("not supported"), "{e}");
    // Nothing changed: the range is still shared and mappable.
    assert_eq!(g.private_ranges(), vec![]);
    let v = g.map_shared(PAGE, 2 * PAGE).unwrap();
    v.write_at(0, b"still shared").unwrap();
}

fn into_guest_region_serves_vm_memory() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 16 * PAGE);
    {
        let v = g.map_shared(0, 16 * PAGE).unwrap();
        v.write_at(3 * PAGE + 5, b"from the view").unwrap();
    }
    let region = g.into_guest_region(GuestAddress(0x100_0000)).unwrap();
    assert_eq!(region.len(), 16 * PAGE);
    let mem = GuestMemoryMmap::from_regions(vec![region]).unwrap();
    let mut b = [0u8; 13];
    mem.read_slice(&mut b, GuestAddress(0x100_0000 + 3 * PAGE + 5))
        .unwrap();
    assert_eq!(&b, b"from the view");
    mem.write_obj(0x1234_5678u32, GuestAddress(0x100_0000 + 15 * PAGE))
        .unwrap();
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0x100_0000 + 15 * PAGE))
            .unwrap(),
        0x1234_5678
    );
    assert!(mem
        .find_region(GuestAddress(0x100_0000 + 16 * PAGE - 1))
        .is_some());
    assert!(mem
        .find_region(GuestAddress(0x100_0000 + 16 * PAGE))
        .is_none());

    // Refused for a file whose pages start private, and at a base that overflows.
    let private = GuestMemfd::create(&vm, 4 * PAGE, GmemFlags::MMAP).unwrap();
    assert!(matches!(
        private.into_guest_region(GuestAddress(0)),
        Err(Error::Private { .. })
    ));
    let g2 = shared_gmem(&vm, 4 * PAGE);
    assert!(matches!(
        g2.into_guest_region(GuestAddress(u64::MAX - PAGE)),
        Err(Error::RangeOverflow { .. })
    ));
}

fn handles_and_views_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GuestMemfd>();
    check::<gmem::SharedView<'static>>();
    check::<gmem::Memslot>();
    let (_kvm, vm) = vm();
    // Two threads write disjoint halves through one view; the main thread reads both.
    let g = shared_gmem(&vm, 2 * PAGE);
    let v = g.map_shared(0, 2 * PAGE).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| v.write_at(0, &[1; 4096]).unwrap());
        s.spawn(|| v.write_at(PAGE, &[2; 4096]).unwrap());
    });
    let mut b = [0u8; 2];
    v.read_at(PAGE - 1, &mut b).unwrap();
    assert_eq!(b, [1, 2]);
}

fn shared_view_implements_vm_memory_bytes() {
    let (_kvm, vm) = vm();
    let g = shared_gmem(&vm, 2 * PAGE);
    let v = g.map_shared(0, 2 * PAGE).unwrap();
    let end = MemoryRegionAddress(2 * PAGE);
    // write/read report partial counts at the end of the view.
    assert_eq!(
        v.write(&[9; 8], MemoryRegionAddress(2 * PAGE - 3)).unwrap(),
        3
    );
    let mut three = [0u8; 8];
    assert_eq!(
        v.read(&mut three, MemoryRegionAddress(2 * PAGE - 3))
            .unwrap(),
        3
    );
    assert_eq!(three[..3], [9, 9, 9]);
    v.write_slice(b"abc", MemoryRegionAddress(10)).unwrap();
    let mut abc = [0u8; 3];
    v.read_slice(&mut abc, MemoryRegionAddress(10)).unwrap();
    assert_eq!(&abc, b"abc");
    assert!(v
        .write_slice(b"abcd", MemoryRegionAddress(2 * PAGE - 3))
        .is_err());
    assert!(v.read_slice(&mut abc, end).is_err());
    assert!(v.write_slice(b"x", MemoryRegionAddress(u64::MAX)).is_err());
    // Volatile streams in and out.
    let src: Vec<u8> = (0..100u8).collect();
    assert_eq!(
        v.read_volatile_from(MemoryRegionAddress(100), &mut &src[..], 100)
            .unwrap(),
        100
    );
    v.read_exact_volatile_from(MemoryRegionAddress(300), &mut &src[..50], 50)
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        v.write_volatile_to(MemoryRegionAddress(100), &mut out, 100)
            .unwrap(),
        100
    );
    v.write_all_volatile_to(MemoryRegionAddress(300), &mut out, 50)
        .unwrap();
    assert_eq!(out[..100], src[..]);
    assert_eq!(out[100..], src[..50]);
    // Atomics.
    v.store(
        0x55aa_u16,
        MemoryRegionAddress(512),
        std::sync::atomic::Ordering::SeqCst,
    )
    .unwrap();
    let mut w = [0u8; 2];
    v.read_at(512, &mut w).unwrap();
    assert_eq!(u16::from_le_bytes(w), 0x55aa);
    assert_eq!(
        v.load::<u16>(
            MemoryRegionAddress(512),
            std::sync::atomic::Ordering::SeqCst
        )
        .unwrap(),
        0x55aa
    );
    assert!(format!("{v:?}").contains("len: 8192"));
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(probe_matches_raw_check_extension, Need::GuestMemfd),
        gmem::kvm_test!(
            create_each_offered_flag_combination,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            create_refuses_bad_size_and_flags_before_the_kernel,
            Need::GuestMemfd
        ),
        gmem::kvm_test!(
            shared_view_write_read_through_two_mappings,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            populate_write_makes_pages_resident,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            view_refusals_name_the_range_and_change_nothing,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            allocate_keeps_size_and_contents,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            punch_hole_zeroes_and_frees_exactly_the_range,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            allocate_and_punch_hole_refusals,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            bind_creates_the_slot_and_drop_deletes_it,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            bind_refusals_change_nothing,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            conversion_is_typed_unsupported_without_memory_attributes,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            into_guest_region_serves_vm_memory,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            handles_and_views_are_send_and_sync,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            shared_view_implements_vm_memory_bytes,
            Need::GuestMemfd,
            Need::SharedGuestMemfd
        ),
    ])
}
