//! A guest-memory source: the bytes at a GPA of the VMM's own vm-memory `GuestMemoryMmap`,
//! populated through the driver chunk by chunk (never copied whole), checked against the bytes
//! the test wrote into that memory.

use std::fs::File;
use std::os::fd::FromRawFd;

use cc_populate::testing::LedgerBackend;
use cc_populate::{
    Conversion, Driver, GuestSource, InPlaceOutcome, InPlacePopulate, MemoryLayout, PlanBuilder,
    RegionBytes, Role, RunError, StopCause,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

const MIB: u64 = 1 << 20;

/// A plan of one `Measured` region read from `mem` at `at`, for `backend`.
fn guest_plan<'m>(
    backend: &LedgerBackend,
    gpa: u64,
    len: u64,
    mem: &'m GuestMemoryMmap<()>,
    at: u64,
) -> cc_populate::Plan<'m> {
    PlanBuilder::new()
        .guest(gpa, len, Role::Measured, GuestSource::new(mem, at))
        .build(&backend.caps, &MemoryLayout::unbounded())
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn bytes_come_from_guest_memory_in_2mib_pieces() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 * MIB as usize)]).unwrap();
    let image = pattern(3 * MIB as usize, 0x5a);
    mem.write_slice(&image, GuestAddress(2 * MIB)).unwrap();
    let mut backend = LedgerBackend::new(1 << 30);
    backend.keep_sources = true;
    let plan = guest_plan(&backend, 2 * MIB, 3 * MIB, &mem, 2 * MIB);
    let report = Driver::new(&mut backend).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(backend.kept_at(2 * MIB, image.len()).unwrap(), image);
    // One 3 MiB chunk, handed in 2 MiB pieces: [2M, 4M) whole, then [4M, 5M).
    let calls: Vec<(u64, u64)> = backend.ledger.iter().map(|e| (e.gpa, e.asked)).collect();
    assert_eq!(calls, [(2 * MIB, 2 * MIB), (4 * MIB, MIB)]);
    // The offline view of the region reads the same memory.
    match plan.content_of(0, None).unwrap() {
        RegionBytes::Bytes(b) => assert_eq!(&b[..], &image[..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_source_may_sit_at_another_address_and_private_destinations_are_fine() {
    // The VMM's shared backing is separate memory (VM-attributes path): the destination being
    // made private before populate does not touch it.
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000_0000), MIB as usize)]).unwrap();
    let image = pattern(0x3000, 7);
    mem.write_slice(&image, GuestAddress(0x1000_1000)).unwrap();
    let mut backend = LedgerBackend::new(2 * MIB);
    backend.caps.conversion = Conversion::BeforePopulate;
    backend.keep_sources = true;
    let plan = guest_plan(&backend, 0x8000, 0x3000, &mem, 0x1000_1000);
    Driver::new(&mut backend).run(&plan).unwrap();
    assert_eq!(backend.kept_at(0x8000, 0x3000).unwrap(), image);
    assert!(backend.not_private.is_empty());
}

#[test]
fn unmapped_guest_memory_stops_the_run_naming_the_address() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MIB as usize)]).unwrap();
    let mut backend = LedgerBackend::new(2 * MIB);
    // The region runs 8 KiB past the end of the VMM's memory.
    let plan = guest_plan(&backend, 0, MIB + 0x2000, &mem, 0);
    let err = Driver::new(&mut backend).run(&plan).unwrap_err();
    let RunError::Stopped(report) = err else {
        panic!("{err:?}")
    };
    let stop = report.stop.as_ref().unwrap();
    assert_eq!(stop.gpa, 0);
    assert!(
        matches!(&stop.cause, StopCause::SourceUnreadable(m) if m.contains("0x100000")),
        "{:?}",
        stop.cause
    );
    // Nothing was handed to the backend for the unreadable chunk.
    assert!(backend.ledger.is_empty());
}

/// A `GuestMemoryMmap` whose one region maps a file named like a guest_memfd (the kernel names
/// its file `[kvm-gmem]`): this host has no guest_memfd, and the refusal is decided by that
/// name before anything is read.
fn memory_mapping_a_file_named(name: &std::ffi::CStr, len: usize) -> GuestMemoryMmap<()> {
    // SAFETY: memfd_create takes a NUL-terminated name that lives across the call.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: a new fd nothing else owns.
    let file = unsafe { File::from_raw_fd(raw) };
    file.set_len(len as u64).unwrap();
    let region = MmapRegion::from_file(FileOffset::new(file, 0), len).unwrap();
    GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(region, GuestAddress(0)).unwrap()])
        .unwrap()
}

#[test]
fn a_source_that_is_the_guest_memfd_is_refused_where_populate_makes_it_private_first() {
    let mem = memory_mapping_a_file_named(c"[kvm-gmem]", MIB as usize);
    let mut backend = LedgerBackend::new(2 * MIB);
    backend.caps.conversion = Conversion::BeforePopulate;
    let plan = guest_plan(&backend, 0x4000, 0x1000, &mem, 0x4000);
    let err = Driver::new(&mut backend).run(&plan).unwrap_err();
    let report = err.report().unwrap();
    let cause = &report.stop.as_ref().unwrap().cause;
    assert!(
        matches!(cause, StopCause::SourceUnreadable(m)
            if m.contains("guest_memfd itself (file offset 0x4000)") && m.contains("in place")),
        "{cause:?}"
    );
    assert!(backend.ledger.iter().all(|e| e.convert), "no populate call");
    // A kernel that populates in place from a zero source: the region is populated where it
    // lies, never read, and the report says so.
    let mut zero = LedgerBackend::new(2 * MIB);
    zero.caps.conversion = Conversion::BeforePopulate;
    zero.in_place_populate = InPlacePopulate::ZeroSource;
    zero.keep_sources = true;
    let plan = guest_plan(&zero, 0x4000, 0x1000, &mem, 0x4000);
    let report = Driver::new(&mut zero).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(
        report.regions[0].in_place,
        Some(InPlaceOutcome::InPlace {
            whole_2m_units: false
        })
    );
    assert!(zero.kept.is_empty(), "no bytes were read and handed over");
    assert!(zero.not_private.is_empty());
    // At another address than the region's own, it is not in place: refused as before.
    let mut elsewhere = LedgerBackend::new(2 * MIB);
    elsewhere.caps.conversion = Conversion::BeforePopulate;
    elsewhere.in_place_populate = InPlacePopulate::ZeroSource;
    let plan = guest_plan(&elsewhere, 0x8000, 0x1000, &mem, 0x4000);
    let err = Driver::new(&mut elsewhere).run(&plan).unwrap_err();
    assert!(matches!(
        &err.report().unwrap().stop.as_ref().unwrap().cause,
        StopCause::SourceUnreadable(_)
    ));
    // On a plain VM (nothing private) the same memory is read.
    let mut plain = LedgerBackend::new(2 * MIB);
    plain.keep_sources = true;
    mem.write_slice(b"plain", GuestAddress(0x4000)).unwrap();
    let plan = guest_plan(&plain, 0x4000, 0x1000, &mem, 0x4000);
    Driver::new(&mut plain).run(&plan).unwrap();
    assert_eq!(&plain.kept_at(0x4000, 5).unwrap(), b"plain");
}
