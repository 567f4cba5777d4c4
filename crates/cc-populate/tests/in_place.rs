//! The in-place flow through the driver, with the scripted ledger backend: content written in
//! place (the shared view), converted, populated from a zero source in whole 2 MiB units; the
//! report saying which regions were populated in place; and the fallback to a separate source
//! only where the caller allowed it.

use cc_populate::testing::{Answer, LedgerBackend};
use cc_populate::{
    Conversion, Driver, DriverOptions, ErrorKind, InPlaceOutcome, InPlacePopulate, MemoryLayout,
    Phase, PlanBuilder, Role, RunError, StopCause,
};

const MIB: u64 = 1 << 20;

/// A `BeforePopulate` ledger backend whose kernel answers `mode` for in-place content, with
/// chunks of at most 3 MiB and no hugepage chunking of its own (so keeping 2 MiB units whole is
/// the driver's doing).
fn backend(mode: InPlacePopulate) -> LedgerBackend {
    let mut b = LedgerBackend::new(3 * MIB);
    b.caps.conversion = Conversion::BeforePopulate;
    b.caps.hugepage_chunks = false;
    b.in_place_populate = mode;
    b
}

/// (gpa, asked, convert) of every call.
fn calls(b: &LedgerBackend) -> Vec<(u64, u64, bool)> {
    b.ledger
        .iter()
        .map(|e| (e.gpa, e.asked, e.convert))
        .collect()
}

/// (gpa, asked) of every populate call.
fn populate_calls(b: &LedgerBackend) -> Vec<(u64, u64)> {
    b.ledger
        .iter()
        .filter(|e| !e.convert)
        .map(|e| (e.gpa, e.asked))
        .collect()
}

#[test]
fn in_place_content_is_converted_then_populated_in_whole_2mib_units() {
    let mut b = backend(InPlacePopulate::ZeroSource);
    let image = vec![0x11u8; (3 * MIB) as usize];
    let plan = PlanBuilder::new()
        .in_place(2 * MIB, 6 * MIB, Role::Measured)
        .source(16 * MIB, Role::Measured, &image)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    b.expect_plan(&plan);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    // The in-place region: one conversion, then 2 MiB units (3 MiB chunks would cut a unit);
    // the source region is chunked as before (3 MiB).
    assert_eq!(
        calls(&b),
        [
            (2 * MIB, 6 * MIB, true),
            (2 * MIB, 2 * MIB, false),
            (4 * MIB, 2 * MIB, false),
            (6 * MIB, 2 * MIB, false),
            (16 * MIB, 3 * MIB, true),
            (16 * MIB, 3 * MIB, false),
        ]
    );
    assert!(b.not_private.is_empty() && b.wrong_content.is_empty() && b.twice.is_empty());
    assert_eq!(
        report.regions[0].in_place,
        Some(InPlaceOutcome::InPlace {
            whole_2m_units: true
        })
    );
    assert_eq!(report.regions[1].in_place, None);
}

#[test]
fn a_stopped_in_place_run_resumes_to_the_next_unit_boundary() {
    let mut b = backend(InPlacePopulate::ZeroSource);
    // The second populate call is interrupted after one page, then fails hard.
    b.script.extend([
        Answer::ALL,
        Answer::fail(1, ErrorKind::Interrupted),
        Answer::fail(0, ErrorKind::Failed),
    ]);
    let plan = PlanBuilder::new()
        .in_place(0, 6 * MIB, Role::Measured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    let mut driver = Driver::new(&mut b);
    let err = driver.run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].populated, 2 * MIB + 4096);
    let report = driver.resume(&plan, &report).unwrap();
    assert!(report.is_complete());
    // After the page, the rest of that unit, then the next whole unit.
    let populate = populate_calls(&b);
    assert_eq!(
        populate,
        [
            (0, 2 * MIB),
            (2 * MIB, 2 * MIB),
            (2 * MIB + 4096, 2 * MIB - 4096),
            (2 * MIB + 4096, 2 * MIB - 4096),
            (4 * MIB, 2 * MIB),
        ]
    );
    assert!(b.twice.is_empty());
}

#[test]
fn an_unaligned_in_place_region_says_its_units_were_not_kept_whole() {
    let mut b = backend(InPlacePopulate::ZeroSource);
    let plan = PlanBuilder::new()
        .in_place(0x1000, 4 * MIB, Role::Measured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert_eq!(
        report.regions[0].in_place,
        Some(InPlaceOutcome::InPlace {
            whole_2m_units: false
        })
    );
}

#[test]
fn without_in_place_populate_the_run_stops_before_converting_unless_allowed() {
    let mut b = backend(InPlacePopulate::Unavailable);
    let plan = PlanBuilder::new()
        .in_place(2 * MIB, 2 * MIB, Role::Measured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let RunError::Stopped(report) = &err else {
        panic!("{err:?}")
    };
    let stop = report.stop.as_ref().unwrap();
    assert_eq!((stop.gpa, stop.phase), (2 * MIB, Phase::Convert));
    assert!(
        matches!(&stop.cause, StopCause::InPlaceUnavailable(m) if m.contains("in_place_fallback")),
        "{:?}",
        stop.cause
    );
    assert!(b.ledger.is_empty(), "nothing converted or populated");
    // Allowed, but no reader: still refused, saying so.
    let options = DriverOptions {
        in_place_fallback: true,
        ..Default::default()
    };
    let err = Driver::new(&mut b)
        .with_options(options.clone())
        .run(&plan)
        .unwrap_err();
    let cause = &err.report().unwrap().stop.as_ref().unwrap().cause;
    assert!(
        matches!(cause, StopCause::InPlaceUnavailable(m) if m.contains("no reader")),
        "{cause:?}"
    );
    assert!(b.ledger.is_empty());
}

#[test]
fn the_allowed_fallback_copies_the_content_out_first_and_says_so() {
    let mut b = backend(InPlacePopulate::Unavailable);
    b.keep_sources = true;
    let plan = PlanBuilder::new()
        .in_place(2 * MIB, 2 * MIB, Role::Measured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    // What the VMM wrote through the shared view: byte i of the region is (i / 4096) as u8.
    let reader = |gpa: u64, buf: &mut [u8]| -> Result<(), String> {
        for (i, v) in buf.iter_mut().enumerate() {
            *v = ((gpa - 2 * MIB + i as u64) / 4096) as u8;
        }
        Ok(())
    };
    let options = DriverOptions {
        in_place_fallback: true,
        ..Default::default()
    };
    let report = Driver::new(&mut b)
        .with_options(options)
        .with_in_place_reader(&reader)
        .run(&plan)
        .unwrap();
    assert!(report.is_complete());
    assert_eq!(report.regions[0].in_place, Some(InPlaceOutcome::FellBack));
    let got = b.kept_at(2 * MIB, (2 * MIB) as usize).unwrap();
    assert_eq!(got[0], 0);
    assert_eq!(got[4096 * 7 + 5], 7);
    assert_eq!(got[(2 * MIB) as usize - 1], 255);
    assert!(b.not_private.is_empty());
}

#[test]
fn by_default_the_backend_keeps_its_own_handling() {
    let mut b = backend(InPlacePopulate::Backend);
    let plan = PlanBuilder::new()
        .in_place(0, 4 * MIB, Role::Measured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert_eq!(report.regions[0].in_place, Some(InPlaceOutcome::ByBackend));
    // Chunked as the backend's caps say (3 MiB), as before this flow existed.
    let populate = populate_calls(&b);
    assert_eq!(populate, [(0, 3 * MIB), (3 * MIB, MIB)]);
}
