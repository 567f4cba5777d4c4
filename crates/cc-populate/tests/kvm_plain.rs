//! End to end on this machine's real KVM: a plan mixing source, in-place and zero regions is
//! populated into guest_memfd through the driver and the plain backend, the memory is bound to
//! memslots, and a vCPU checksums every region; the test asserts the guest saw exactly the plan.

use cc_populate::plain::{PlainBackend, ZeroMode};
use cc_populate::{Backend, Driver, PlanBuilder, Role, RoleSet, SourceBuf};
use gmem::testing::Need;
use gmem::{GmemFlags, GuestMemfd};
use guest_check::{checksum, CheckGuest, CheckRange};

const MIB: u64 = 1 << 20;

fn pattern(len: u64, seed: u64) -> Vec<u8> {
    // xorshift: position-dependent, no period inside a region.
    let mut x = seed | 1;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn plan_populated_through_the_driver_is_what_the_guest_sees() {
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    // Two guest_memfds, two memslots: [0, 16 MiB) and [32 MiB, 48 MiB).
    let flags = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
    let low = GuestMemfd::create(&vm, 16 * MIB, flags).unwrap();
    let high = GuestMemfd::create(&vm, 16 * MIB, flags).unwrap();
    let _s0 = low.bind(0, 0, 0, 16 * MIB).unwrap();
    let _s1 = high.bind(1, 32 * MIB, 0, 16 * MIB).unwrap();

    // Junk everywhere first, so zero regions and untouched gaps are checked for real.
    for g in [&low, &high] {
        let v = g.map_shared(0, g.size()).unwrap();
        v.write_at(0, &vec![0xee; g.size() as usize]).unwrap();
    }

    // In-place content, written by "the VMM" through the shared view.
    let in_place = pattern(4 * MIB, 11);
    low.map_shared(8 * MIB, 4 * MIB)
        .unwrap()
        .write_at(0, &in_place)
        .unwrap();

    let firmware = pattern(2 * MIB, 22); // 2 MiB-aligned 2 MiB region
    let kernel = pattern(5 * MIB + 12 * 4096, 33);
    let mut initrd = SourceBuf::new((3 * MIB) as usize).unwrap();
    initrd.as_mut_slice().copy_from_slice(&pattern(3 * MIB, 44));
    let initrd_copy = initrd.as_slice().to_vec();
    let cpuid = pattern(4096, 55);

    let mut backend = PlainBackend::new()
        .with_zero_mode(ZeroMode::Punch)
        .with_roles(RoleSet::COMMON.with(Role::Cpuid));
    backend.add_memslot(0, 0, &low, 0, 16 * MIB).unwrap();
    backend
        .add_memslot(1, 32 * MIB, &high, 0, 16 * MIB)
        .unwrap();
    // Given order is not GPA order.
    let mut plan = PlanBuilder::new()
        .source(2 * MIB, Role::Measured, &firmware)
        .in_place(8 * MIB, 4 * MIB, Role::Measured)
        .zero(12 * MIB, 2 * MIB + 4096)
        .buffer(32 * MIB + 4096, Role::Unmeasured, initrd)
        .source(0x10000, Role::Cpuid, &cpuid)
        .source(
            MIB + 0x20000 + 4096 * 4,
            Role::Measured,
            &kernel[..MIB as usize / 2],
        )
        .source(36 * MIB, Role::Measured, &kernel)
        .build(&backend.caps(), &backend.layout().unwrap())
        .unwrap();
    assert!(
        plan.total_bytes() >= 16 * MIB,
        "the issue asks for a plan of at least 16 MiB"
    );
    let report = Driver::new(&mut backend).run_releasing(&mut plan).unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.bytes_populated(), plan.total_bytes());
    // The initrd's SourceBuf was given back as it landed.
    assert_eq!(report.regions[3].released, 3 * MIB);
    // The 2 MiB-aligned firmware went in one call.
    assert_eq!(report.regions[0].calls, 1);
    drop(backend);

    // Expected content per region, from the inputs (not from guest memory).
    let expected: Vec<(u64, Vec<u8>)> = vec![
        (2 * MIB, firmware.clone()),
        (8 * MIB, in_place.clone()),
        (12 * MIB, vec![0; (2 * MIB + 4096) as usize]),
        (32 * MIB + 4096, initrd_copy.clone()),
        (0x10000, cpuid.clone()),
        (
            MIB + 0x20000 + 4096 * 4,
            kernel[..MIB as usize / 2].to_vec(),
        ),
        (36 * MIB, kernel.clone()),
        // A gap nobody populated keeps its junk.
        (0x20000, vec![0xee; 4096]),
    ];
    let ranges: Vec<CheckRange> = expected
        .iter()
        .map(|(g, d)| CheckRange::new(*g, d.len() as u64))
        .collect();
    let mut guest = CheckGuest::new(&vm, 2, 1 << 30).unwrap();
    let sums = guest.run(&ranges).unwrap();
    for ((gpa, data), got) in expected.iter().zip(&sums) {
        assert_eq!(
            *got,
            checksum(*gpa, data).unwrap(),
            "guest checksum of the region at {gpa:#x}"
        );
    }
    // And a single flipped byte would have been seen: the guest's view really is the memory.
    high.map_shared(36 * MIB - 32 * MIB, 4096)
        .unwrap()
        .write_at(100, &[kernel[100] ^ 1])
        .unwrap();
    let again = guest.run(&ranges[6..7]).unwrap();
    assert_ne!(again[0], checksum(36 * MIB, &kernel).unwrap());
}

fn zero_regions_can_be_written_instead_of_punched() {
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let g = GuestMemfd::create(&vm, 4 * MIB, GmemFlags::MMAP | GmemFlags::INIT_SHARED).unwrap();
    g.map_shared(0, 4 * MIB)
        .unwrap()
        .write_at(0, &vec![0x77; (4 * MIB) as usize])
        .unwrap();
    let mut backend = PlainBackend::new()
        .with_zero_mode(ZeroMode::Write)
        .with_threads(1);
    backend.add_memslot(0, 0, &g, 0, 4 * MIB).unwrap();
    let plan = PlanBuilder::new()
        .zero(MIB, 2 * MIB)
        .build(&backend.caps(), &backend.layout().unwrap())
        .unwrap();
    Driver::new(&mut backend).run(&plan).unwrap();
    drop(backend);
    let v = g.map_shared(0, 4 * MIB).unwrap();
    let mut buf = vec![0u8; (4 * MIB) as usize];
    v.read_at(0, &mut buf).unwrap();
    assert!(buf[..MIB as usize].iter().all(|b| *b == 0x77));
    assert!(buf[MIB as usize..3 * MIB as usize].iter().all(|b| *b == 0));
    assert!(buf[3 * MIB as usize..].iter().all(|b| *b == 0x77));
}

fn a_chunk_outside_the_registered_memslots_is_a_clear_error() {
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let g = GuestMemfd::create(&vm, 2 * MIB, GmemFlags::MMAP | GmemFlags::INIT_SHARED).unwrap();
    let mut backend = PlainBackend::new();
    backend.add_memslot(0, 0, &g, 0, 2 * MIB).unwrap();
    // A plan validated for a bigger layout than the backend has.
    let layout = cc_populate::MemoryLayout::new(&[cc_populate::Memslot {
        slot: 0,
        gpa: 0,
        size: 8 * MIB,
    }])
    .unwrap();
    let data = vec![1u8; 4096];
    let plan = PlanBuilder::new()
        .source(4 * MIB, Role::Measured, &data)
        .build(&backend.caps(), &layout)
        .unwrap();
    let err = Driver::new(&mut backend).run(&plan).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("0x400000"), "{msg}");
    assert!(msg.contains("no registered memslot"), "{msg}");
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            plan_populated_through_the_driver_is_what_the_guest_sees,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            zero_regions_can_be_written_instead_of_punched,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            a_chunk_outside_the_registered_memslots_is_a_clear_error,
            Need::SharedGuestMemfd
        ),
    ])
}
