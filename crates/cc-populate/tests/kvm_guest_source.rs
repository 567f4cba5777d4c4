//! A guest-memory source over a real guest_memfd on real KVM (the lab runs it; a host without
//! guest_memfd `MMAP|INIT_SHARED` reports it skipped): the VMM's `GuestMemoryMmap` is the
//! guest_memfd itself (in place), as `GuestMemfd::into_guest_region` gives it.

use cc_populate::testing::LedgerBackend;
use cc_populate::{
    Conversion, Driver, GuestSource, InPlaceOutcome, InPlacePopulate, MemoryLayout, PlanBuilder,
    Role, StopCause,
};
use gmem::testing::Need;
use gmem::{GmemFlags, GuestMemfd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MIB: u64 = 1 << 20;

/// A `Measured` region at GPA 0x3000 read from `mem` at the same address, for `backend`.
fn plan_for<'m>(backend: &LedgerBackend, mem: &'m GuestMemoryMmap) -> cc_populate::Plan<'m> {
    PlanBuilder::new()
        .guest(
            0x3000,
            0x1000,
            Role::Measured,
            GuestSource::new(mem, 0x3000),
        )
        .build(&backend.caps, &MemoryLayout::unbounded())
        .unwrap()
}

/// A ledger backend that converts before populating, populating in place as `mode` says.
fn converting(mode: InPlacePopulate) -> LedgerBackend {
    let mut b = LedgerBackend::new(2 * MIB);
    b.caps.conversion = Conversion::BeforePopulate;
    b.in_place_populate = mode;
    b
}

fn a_guest_memfd_source_is_read_on_a_plain_vm_and_never_read_once_it_would_be_private() {
    let (_kvm, vm) = gmem::testing::default_vm();
    let g = GuestMemfd::create(&vm, 2 * MIB, GmemFlags::MMAP | GmemFlags::INIT_SHARED).unwrap();
    let region = g.into_guest_region(GuestAddress(0)).unwrap();
    let mem = GuestMemoryMmap::from_regions(vec![region]).unwrap();
    mem.write_slice(b"in the guest_memfd", GuestAddress(0x3000))
        .unwrap();

    // A plain VM: nothing becomes private, the bytes are read through vm-memory.
    let mut plain = LedgerBackend::new(2 * MIB);
    plain.keep_sources = true;
    let plan = plan_for(&plain, &mem);
    Driver::new(&mut plain).run(&plan).unwrap();
    assert_eq!(&plain.kept_at(0x3000, 18).unwrap(), b"in the guest_memfd");

    // Converted before populate, the kernel names the file [kvm-gmem]: refused before reading.
    let mut before = converting(InPlacePopulate::Backend);
    let plan = plan_for(&before, &mem);
    let err = Driver::new(&mut before).run(&plan).unwrap_err();
    let cause = &err.report().unwrap().stop.as_ref().unwrap().cause;
    assert!(
        matches!(cause, StopCause::SourceUnreadable(m) if m.contains("guest_memfd itself (file offset 0x3000)")),
        "{cause:?}"
    );
    // And populated where it lies where the kernel can.
    let mut zero = converting(InPlacePopulate::ZeroSource);
    let plan = plan_for(&zero, &mem);
    let report = Driver::new(&mut zero).run(&plan).unwrap();
    assert!(zero.not_private.is_empty());
    assert!(matches!(
        report.regions[0].in_place,
        Some(InPlaceOutcome::InPlace { .. })
    ));
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![gmem::kvm_test!(
        a_guest_memfd_source_is_read_on_a_plain_vm_and_never_read_once_it_would_be_private,
        Need::SharedGuestMemfd
    )])
}
