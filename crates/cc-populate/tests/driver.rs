//! The driver against a scripted backend: reports equal what the backend did, resume completes
//! a stopped plan, nothing is populated twice.

use std::collections::BTreeMap;

use cc_populate::testing::{Answer, LedgerBackend};
use cc_populate::{
    Conversion, ConversionPolicy, Driver, DriverOptions, ErrorKind, MemoryLayout, Observer, Phase,
    Plan, PlanBuilder, RegionReport, RegionState, Report, ResumeRefusal, Role, RunError, SourceBuf,
    StopCause,
};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

/// Three regions: 5 MiB measured from a source (2 MiB chunks: 1+2+2 from 1 MiB), one zero
/// page, 2 MiB in place. The backend checks every chunk's content against it.
fn plan<'a>(backend: &mut LedgerBackend, data: &'a [u8]) -> Plan<'a> {
    let plan = PlanBuilder::new()
        .source(MIB, Role::Measured, data)
        .zero(16 * MIB, 4096)
        .in_place(32 * MIB, 2 * MIB, Role::Unmeasured)
        .build(&backend.caps, &MemoryLayout::unbounded())
        .unwrap();
    backend.expect_plan(&plan);
    plan
}

/// Bytes the backend populated per region, from its own ledger.
fn ledger_per_region(b: &LedgerBackend) -> BTreeMap<usize, u64> {
    let mut m = BTreeMap::new();
    for e in b.ledger.iter().filter(|e| !e.convert) {
        *m.entry(e.region).or_insert(0) += e.len;
    }
    m
}

fn assert_report_matches_ledger(report: &Report, b: &LedgerBackend) {
    let per = ledger_per_region(b);
    for (i, r) in report.regions.iter().enumerate() {
        assert_eq!(
            r.populated,
            per.get(&i).copied().unwrap_or(0),
            "region {i}: report {r:?}"
        );
        assert_eq!(b.populated_in(r.gpa, r.len), r.populated, "region {i}");
    }
    let calls = b.ledger.iter().filter(|e| !e.convert).count() as u64;
    assert_eq!(report.calls(), calls);
    assert!(b.twice.is_empty(), "populated twice at {:x?}", b.twice);
    assert!(b.bad_sources.is_empty());
    assert!(
        b.wrong_content.is_empty(),
        "wrong content at {:x?}",
        b.wrong_content
    );
    assert!(
        b.not_private.is_empty(),
        "populated before conversion at {:x?}",
        b.not_private
    );
}

fn data() -> Vec<u8> {
    (0..5 * MIB).map(|i| (i % 251) as u8).collect()
}

#[test]
fn clean_run_reports_every_region() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(report.calls(), 5);
    assert_eq!(report.bytes_populated(), 5 * MIB + 4096 + 2 * MIB);
    assert!(report
        .regions
        .iter()
        .all(|r| r.state() == RegionState::Done));
    assert_eq!(
        report.regions.iter().map(|r| r.calls).collect::<Vec<_>>(),
        vec![3, 1, 1]
    );
    assert_report_matches_ledger(&report, &b);
    // Chunks as the backend saw them.
    let seen: Vec<(u64, u64)> = b.ledger.iter().map(|e| (e.gpa, e.asked)).collect();
    assert_eq!(
        seen,
        vec![
            (MIB, MIB),
            (2 * MIB, 2 * MIB),
            (4 * MIB, 2 * MIB),
            (16 * MIB, 4096),
            (32 * MIB, 2 * MIB)
        ]
    );
}

/// At every call position and for every kind of answer: the report is exact and resume
/// finishes the plan without populating anything twice.
#[test]
fn every_stop_position_resumes_exactly() {
    let data = data();
    let answers = [
        Answer::fail(0, ErrorKind::Failed),
        Answer::fail(3, ErrorKind::Failed),
        Answer::fail(0, ErrorKind::Unsupported),
        Answer::fail(7, ErrorKind::Unsupported),
    ];
    for pos in 0..5 {
        for a in answers {
            let mut b = LedgerBackend::new(2 * MIB);
            let plan = plan(&mut b, &data);
            b.script.extend(std::iter::repeat_n(Answer::ALL, pos));
            b.script.push_back(a);
            let mut d = Driver::new(&mut b);
            let err = d.run(&plan).unwrap_err();
            let report = err.report().expect("a stop carries its report").clone();
            let stop = report.stop.clone().unwrap();
            assert_eq!(stop.phase, Phase::Populate);
            assert!(matches!(stop.cause, StopCause::Backend(ref e) if e.kind == a.error.unwrap()));
            // The stop names the first byte not done.
            let r = &report.regions[stop.region];
            assert_eq!(stop.gpa, r.gpa + r.populated, "pos {pos} {a:?}");
            assert!(
                err.to_string().contains(&format!("{:#x}", stop.gpa)),
                "{err}"
            );
            assert_report_matches_ledger(&report, &b);
            let done = Driver::new(&mut b).resume(&plan, &report).unwrap();
            assert!(done.is_complete());
            assert_report_matches_ledger(&done, &b);
            assert_eq!(b.populated_bytes(), plan.total_bytes());
        }
    }
}

#[test]
fn interrupted_and_busy_calls_are_retried_from_where_they_stopped() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    b.script.extend([
        Answer::fail(5, ErrorKind::Interrupted),
        Answer::fail(0, ErrorKind::Again),
        Answer::partial(3),
        Answer::fail(0, ErrorKind::Interrupted),
    ]);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(report.regions[0].retries, 3);
    assert_eq!(report.retries(), 3);
    assert_report_matches_ledger(&report, &b);
    // First chunk [1 MiB, 2 MiB): 5 pages, then 0, then 3, then 0, then the rest.
    let first: Vec<(u64, u64)> = b.ledger.iter().take(5).map(|e| (e.gpa, e.len)).collect();
    let p = 4096;
    assert_eq!(
        first,
        vec![
            (MIB, 5 * p),
            (MIB + 5 * p, 0),
            (MIB + 5 * p, 3 * p),
            (MIB + 8 * p, 0),
            (MIB + 8 * p, MIB - 8 * p)
        ]
    );
}

#[test]
fn retries_are_bounded() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    b.script.extend(std::iter::repeat_n(
        Answer::fail(0, ErrorKind::Interrupted),
        10,
    ));
    let opts = DriverOptions {
        max_retries: 4,
        ..Default::default()
    };
    let err = Driver::new(&mut b)
        .with_options(opts)
        .run(&plan)
        .unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert!(
        matches!(stop.cause, StopCause::RetriesExhausted { attempts: 5, .. }),
        "{stop:?}"
    );
    assert_eq!(b.ledger.len(), 5);
    // Progress resets the bound: 4 interruptions, progress, 4 more is fine.
    let mut b = LedgerBackend::new(2 * MIB);
    b.script.extend(std::iter::repeat_n(
        Answer::fail(0, ErrorKind::Interrupted),
        4,
    ));
    b.script.push_back(Answer::fail(1, ErrorKind::Interrupted));
    b.script.extend(std::iter::repeat_n(
        Answer::fail(0, ErrorKind::Interrupted),
        4,
    ));
    let opts = DriverOptions {
        max_retries: 4,
        ..Default::default()
    };
    assert!(Driver::new(&mut b)
        .with_options(opts)
        .run(&plan)
        .unwrap()
        .is_complete());
}

#[test]
fn success_without_progress_does_not_spin() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    b.script.extend([
        Answer::ALL,
        Answer::partial(0),
        Answer::partial(0),
        Answer::partial(0),
    ]);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap();
    let stop = report.stop.as_ref().unwrap();
    assert_eq!(stop.cause, StopCause::NoProgress { attempts: 2 });
    assert_eq!(stop.gpa, 2 * MIB);
    assert_eq!(b.ledger.len(), 3);
    assert_report_matches_ledger(report, &b);
}

/// A backend that claims more than it was asked, or a partial granule, is stopped without
/// counting the claim.
#[test]
fn impossible_progress_is_refused() {
    struct Liar(u64);
    impl cc_populate::Backend for Liar {
        fn caps(&self) -> cc_populate::BackendCaps {
            LedgerBackend::new(2 * MIB).caps
        }
        fn populate(&mut self, c: &cc_populate::ChunkRequest<'_>) -> cc_populate::Populated {
            cc_populate::Populated::all(c.len + self.0)
        }
    }
    let data = data();
    let plan = plan(&mut LedgerBackend::new(2 * MIB), &data);
    for extra in [4096, 1] {
        let err = Driver::new(Liar(extra)).run(&plan).unwrap_err();
        let r = err.report().unwrap();
        assert_eq!(r.regions[0].populated, 0);
        assert!(matches!(
            r.stop.as_ref().unwrap().cause,
            StopCause::BadProgress { .. }
        ));
    }
}

#[test]
fn conversion_happens_before_populate_and_resumes() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    b.caps.conversion = Conversion::BeforePopulate;
    b.caps.in_place = true;
    let plan = plan(&mut b, &data);
    // The second region's conversion is interrupted after nothing, then fails after nothing.
    b.convert_script.extend([
        Answer::ALL,
        Answer::fail(0, ErrorKind::Interrupted),
        Answer::fail(0, ErrorKind::Failed),
    ]);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.phase, Phase::Convert);
    assert_eq!(stop.region, 1);
    assert_eq!(stop.gpa, 16 * MIB);
    assert_eq!(report.regions[0].converted, 5 * MIB);
    assert_eq!(report.regions[0].state(), RegionState::Done);
    assert_eq!(report.regions[1].state(), RegionState::Untouched);
    assert_eq!(report.convert_calls(), 3);
    assert_report_matches_ledger(&report, &b);
    // Partial conversion, then resume.
    b.convert_script.push_back(Answer::partial(0));
    let done = Driver::new(&mut b).resume(&plan, &report).unwrap();
    assert!(done.is_complete());
    assert!(done.regions.iter().all(|r| r.converted == r.len));
    assert_report_matches_ledger(&done, &b);
    for r in &done.regions {
        assert_eq!(b.converted_in(r.gpa, r.len), r.len);
    }
    // A caller that converted everything itself: the driver converts nothing.
    let mut b2 = LedgerBackend::new(2 * MIB);
    b2.caps = b.caps.clone();
    let opts = DriverOptions {
        conversion: ConversionPolicy::CallerConverted,
        ..Default::default()
    };
    let r = Driver::new(&mut b2).with_options(opts).run(&plan).unwrap();
    assert_eq!(r.convert_calls(), 0);
    assert_eq!(b2.ledger.iter().filter(|e| e.convert).count(), 0);
}

#[test]
fn by_populate_platforms_report_populated_bytes_as_private() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    b.caps.conversion = Conversion::ByPopulate;
    let plan = plan(&mut b, &data);
    b.script
        .extend([Answer::ALL, Answer::fail(2, ErrorKind::Failed)]);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let r = &err.report().unwrap().regions[0];
    assert_eq!(r.converted, r.populated);
    assert_eq!(r.populated, MIB + 2 * 4096);
    assert_eq!(r.convert_calls, 0);
}

#[test]
fn sources_are_released_as_they_land_and_a_released_plan_is_not_rerun() {
    let mut b = LedgerBackend::new(2 * MIB);
    let mut buf = SourceBuf::new((4 * MIB) as usize).unwrap();
    buf.as_mut_slice().fill(0x5a);
    let owned: Vec<u8> = vec![0x33; 8192];
    let borrowed = vec![0x44u8; 4096];
    let mut plan = PlanBuilder::new()
        .buffer(0, Role::Measured, buf)
        .region(cc_populate::RegionSpec {
            gpa: 8 * MIB,
            len: 8192,
            role: Role::Measured,
            content: cc_populate::Content::Bytes(owned.into()),
        })
        .source(9 * MIB, Role::Measured, &borrowed)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    b.script
        .extend([Answer::ALL, Answer::fail(1, ErrorKind::Failed)]);
    let err = Driver::new(&mut b).run_releasing(&mut plan).unwrap_err();
    let report = err.report().unwrap().clone();
    // The first 2 MiB chunk and one more page were populated and released.
    assert_eq!(report.regions[0].released, 2 * MIB + 4096);
    assert_eq!(plan.regions()[0].released(), 2 * MIB + 4096);
    assert_eq!(
        plan.regions()[0].source().unwrap()[0],
        0,
        "released pages read as zeros"
    );
    assert_eq!(
        plan.regions()[0].source().unwrap()[(2 * MIB + 4096) as usize],
        0x5a
    );
    // Resume releases the rest; borrowed bytes are never touched.
    let done = Driver::new(&mut b)
        .resume_releasing(&mut plan, &report)
        .unwrap();
    assert!(done.is_complete());
    assert_eq!(done.regions[0].released, 4 * MIB);
    assert_eq!(done.regions[1].released, 8192);
    assert_eq!(done.regions[2].released, 0);
    assert_eq!(done.bytes_released(), 4 * MIB + 8192);
    assert_eq!(borrowed[0], 0x44);
    // Running the released plan again (a reset VM) is refused for the released source.
    let mut fresh = LedgerBackend::new(2 * MIB);
    let err = Driver::new(&mut fresh).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert_eq!(stop.cause, StopCause::SourceReleased);
    assert_eq!(stop.region, 0);
    assert_eq!(fresh.populated_bytes(), 0);
}

#[test]
fn the_same_plan_runs_again_on_a_fresh_backend() {
    let data = data();
    let mut b0 = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b0, &data);
    let mut reports = Vec::new();
    let mut ledgers = Vec::new();
    for _ in 0..2 {
        let mut b = LedgerBackend::new(2 * MIB);
        b.expect_plan(&plan);
        let r = Driver::new(&mut b).run(&plan).unwrap();
        assert_report_matches_ledger(&r, &b);
        reports.push(r);
        ledgers.push(b.ledger);
    }
    assert_eq!(reports[0].regions, reports[1].regions);
    assert_eq!(ledgers[0], ledgers[1]);
    // Two runs, one plan.
    let (a, b) = (reports[0].id(), reports[1].id());
    assert_ne!(a.run, b.run);
    assert_eq!((a.plan, b.plan), (plan.id(), plan.id()));
    assert_eq!((a.generation, b.generation), (0, 0));
}

/// A stopped run on `b` of the test plan: the second 2 MiB chunk fails after one page.
fn stopped<'a>(b: &mut LedgerBackend, data: &'a [u8]) -> (Plan<'a>, Report) {
    let plan = plan(b, data);
    b.script
        .extend([Answer::ALL, Answer::fail(1, ErrorKind::Failed)]);
    let err = Driver::new(&mut *b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].populated, MIB + 4096);
    (plan, report)
}

fn refusal(r: Result<Report, RunError>) -> ResumeRefusal {
    match r {
        Err(RunError::NotResumable(why)) => why,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn mismatched_caps_or_reports_are_refused() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let (plan, report) = stopped(&mut b, &data);
    b.caps.max_chunk = 4 * MIB;
    assert!(matches!(
        Driver::new(&mut b).run(&plan),
        Err(RunError::CapsMismatch { .. })
    ));
    assert!(matches!(
        Driver::new(&mut b).resume(&plan, &report),
        Err(RunError::CapsMismatch { .. })
    ));
    b.caps.max_chunk = 2 * MIB;
    let calls = b.ledger.len();
    // Any change to what the resume would start from is refused.
    let mut d = Driver::new(&mut b);
    let mut r = report.clone();
    r.regions.pop();
    assert_eq!(
        refusal(d.resume(&plan, &r)),
        ResumeRefusal::Altered {
            run: report.id().run
        }
    );
    let mut r = report.clone();
    r.regions[0].gpa += 4096;
    assert!(matches!(
        refusal(d.resume(&plan, &r)),
        ResumeRefusal::Altered { .. }
    ));
    for populated in [0, 100, 2 * MIB] {
        let mut r = report.clone();
        r.regions[0].populated = populated;
        let why = refusal(d.resume(&plan, &r));
        assert!(matches!(why, ResumeRefusal::Altered { .. }), "{why}");
    }
    assert_eq!(b.ledger.len(), calls, "a refused resume calls nothing");
    // The CapsMismatch refusal above did not use the report up: it still resumes.
    let done = Driver::new(&mut b).resume(&plan, &report).unwrap();
    assert!(done.is_complete());
    assert_report_matches_ledger(&done, &b);
}

/// Issue 20, item 1: a backend that populated, then over-claimed. The old driver resumed the
/// report and populated those pages again.
#[test]
fn a_stop_of_unknown_extent_is_not_resumed() {
    let data = data();
    // Populate: the second call populates 3 pages, then claims more than asked, or a ragged
    // count.
    for extra in [2 * MIB, 1] {
        let mut b = LedgerBackend::new(2 * MIB);
        let plan = plan(&mut b, &data);
        b.script.extend([Answer::ALL, Answer::overclaim(3, extra)]);
        let err = Driver::new(&mut b).run(&plan).unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        assert!(
            matches!(stop.cause, StopCause::BadProgress { .. }),
            "{stop}"
        );
        // Nothing of the lying call counted, though the backend did 3 pages.
        assert_eq!(report.regions[0].populated, MIB);
        assert_eq!(b.populated_in(MIB, 5 * MIB), MIB + 3 * 4096);
        let calls = b.ledger.len();
        let again = Driver::new(&mut b).resume(&plan, &report).unwrap_err();
        let RunError::NotResumable(ResumeRefusal::UnknownExtent {
            region,
            phase,
            gpa,
            asked,
            claimed,
        }) = &again
        else {
            panic!("{again}")
        };
        assert_eq!(
            (*region, *phase, *gpa, *asked),
            (0, Phase::Populate, 2 * MIB, 2 * MIB)
        );
        assert_eq!(*claimed, 3 * 4096 + extra);
        let msg = again.to_string();
        assert!(
            msg.contains("region 0") && msg.contains("0x200000"),
            "{msg}"
        );
        // Not even a second time, nor with the report's cause rewritten.
        assert!(Driver::new(&mut b).resume(&plan, &report).is_err());
        let mut forged = report.clone();
        forged.stop.as_mut().unwrap().cause = StopCause::NoProgress { attempts: 2 };
        assert_eq!(
            refusal(Driver::new(&mut b).resume(&plan, &forged)),
            ResumeRefusal::Closed {
                run: report.id().run
            }
        );
        assert_eq!(b.ledger.len(), calls, "a refused resume calls nothing");
        assert!(b.twice.is_empty(), "{:x?}", b.twice);
    }
    // Conversion: the second region's conversion claims more than asked.
    let mut b = LedgerBackend::new(2 * MIB);
    b.caps.conversion = Conversion::BeforePopulate;
    let plan = plan(&mut b, &data);
    b.convert_script
        .extend([Answer::ALL, Answer::overclaim(0, 8192)]);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let why = refusal(Driver::new(&mut b).resume(&plan, &report));
    assert!(
        matches!(
            why,
            ResumeRefusal::UnknownExtent {
                region: 1,
                phase: Phase::Convert,
                gpa,
                ..
            } if gpa == 16 * MIB
        ),
        "{why}"
    );
}

/// Issue 20, item 1: each report resumes once. The old driver resumed a report a second time
/// and populated again what the first resume had populated.
#[test]
fn a_report_resumes_once_and_only_the_newest() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let (plan, first) = stopped(&mut b, &data);
    // The first resume stops again, two pages on.
    b.script.push_back(Answer::fail(2, ErrorKind::Failed));
    let err = Driver::new(&mut b).resume(&plan, &first).unwrap_err();
    let second = err.report().unwrap().clone();
    assert_eq!(second.regions[0].populated, MIB + 3 * 4096);
    assert_eq!(second.id().run, first.id().run);
    assert_eq!(second.id().generation, 1);
    let calls = b.ledger.len();
    // The first report again (or a copy of it): refused.
    for r in [&first, &first.clone()] {
        assert_eq!(
            refusal(Driver::new(&mut b).resume(&plan, r)),
            ResumeRefusal::AlreadyResumed {
                run: first.id().run,
                generation: 0,
                latest: 1
            }
        );
    }
    assert_eq!(b.ledger.len(), calls);
    // The newest resumes, once.
    let done = Driver::new(&mut b).resume(&plan, &second).unwrap();
    assert!(done.is_complete());
    assert_report_matches_ledger(&done, &b);
    let calls = b.ledger.len();
    assert!(matches!(
        refusal(Driver::new(&mut b).resume(&plan, &second)),
        ResumeRefusal::AlreadyResumed {
            generation: 1,
            latest: 2,
            ..
        }
    ));
    // A complete report has nothing to resume.
    assert_eq!(
        refusal(Driver::new(&mut b).resume(&plan, &done)),
        ResumeRefusal::Complete { run: done.id().run }
    );
    assert_eq!(b.ledger.len(), calls);
    assert!(b.twice.is_empty(), "{:x?}", b.twice);
}

/// Issue 20, item 1: a report of another plan, even one with the same regions (built again,
/// perhaps with other bytes), or of an older run is refused. The old driver took them.
#[test]
fn reports_of_other_plans_and_older_runs_are_refused() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let (plan, report) = stopped(&mut b, &data);
    let other = PlanBuilder::new()
        .source(MIB, Role::Measured, &data)
        .zero(16 * MIB, 4096)
        .in_place(32 * MIB, 2 * MIB, Role::Unmeasured)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    let calls = b.ledger.len();
    let why = refusal(Driver::new(&mut b).resume(&other, &report));
    assert_eq!(
        why,
        ResumeRefusal::OtherPlan {
            report_plan: plan.id(),
            plan: other.id()
        }
    );
    assert!(why.to_string().contains("not from this plan"), "{why}");
    assert_eq!(b.ledger.len(), calls);
    // A newer run of the plan on a fresh VM does not make the older report stale: each run
    // is resumed from its own reports.
    let mut fresh = LedgerBackend::new(2 * MIB);
    fresh.script.push_back(Answer::fail(0, ErrorKind::Failed));
    let newer = Driver::new(&mut fresh).run(&plan).unwrap_err();
    let newer = newer.report().unwrap().clone();
    assert_ne!(newer.id().run, report.id().run);
    assert!(Driver::new(&mut b)
        .resume(&plan, &report)
        .unwrap()
        .is_complete());
    assert!(Driver::new(&mut fresh)
        .resume(&plan, &newer)
        .unwrap()
        .is_complete());
    assert!(b.twice.is_empty() && fresh.twice.is_empty());
}

/// Issue 20, item 2: every chunk carries the plan's bytes at its own offset, also after
/// partial progress moves the offsets off chunk boundaries and across resumes. A driver that
/// sends a region's first bytes for every later chunk fails here.
#[test]
fn every_chunk_carries_the_plan_bytes_at_its_offset() {
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    b.script.extend([
        Answer::partial(1),
        Answer::fail(5, ErrorKind::Interrupted),
        Answer::ALL,
        Answer::fail(7, ErrorKind::Failed),
    ]);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_report_matches_ledger(&report, &b);
    let done = Driver::new(&mut b).resume(&plan, &report).unwrap();
    assert_report_matches_ledger(&done, &b);
    assert!(b.ledger.len() >= 7);
    // The check is not vacuous: the backend sees a chunk with the wrong bytes, or the wrong
    // kind of content, or outside its region.
    use cc_populate::{Backend, ChunkRequest, ChunkSource};
    let mut check = LedgerBackend::new(2 * MIB);
    check.expect_plan(&plan);
    let at = |gpa: u64, len: u64, source| ChunkRequest {
        region: 0,
        gpa,
        len,
        role: Role::Measured,
        source,
    };
    let p = 4096usize;
    check.populate(&at(MIB + 4096, 4096, ChunkSource::Bytes(&data[p..2 * p])));
    assert!(check.wrong_content.is_empty());
    check.populate(&at(MIB + 8192, 4096, ChunkSource::Bytes(&data[..p])));
    check.populate(&at(MIB + 12288, 4096, ChunkSource::Zero));
    check.populate(&at(6 * MIB, 4096, ChunkSource::Bytes(&data[..p])));
    assert_eq!(check.wrong_content, vec![MIB + 8192, MIB + 12288, 6 * MIB]);
}
#[test]
fn ripas_regions_and_the_data_inside_them_are_not_populated_twice() {
    let mut b = LedgerBackend::new(2 * MIB);
    let data = vec![1u8; 4096];
    let plan = PlanBuilder::new()
        .zeros(0, 0x10000, Role::Ripas)
        .source(0x1000, Role::Measured, &data)
        .build(&b.caps, &MemoryLayout::unbounded())
        .unwrap();
    let r = Driver::new(&mut b).run(&plan).unwrap();
    assert!(r.is_complete());
    assert!(b.twice.is_empty(), "{:x?}", b.twice);
    assert_eq!(b.ripas_in(0, 0x10000), 0x10000);
    assert_eq!(b.populated_in(0, 0x10000), 0x1000);
}

#[test]
fn a_region_finished_by_a_failing_call_is_reported_done_once() {
    #[derive(Default)]
    struct Done(Vec<usize>);
    impl Observer for Done {
        fn on_region_done(&mut self, index: usize, _: &RegionReport) {
            self.0.push(index);
        }
    }
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    // The last chunk of region 0 is done entirely, then the call fails.
    b.script.extend([
        Answer::ALL,
        Answer::ALL,
        Answer::fail(u32::MAX, ErrorKind::Failed),
    ]);
    let mut seen = Done::default();
    let err = Driver::new(&mut b)
        .with_observer(&mut seen)
        .run(&plan)
        .unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].state(), RegionState::Done);
    assert_eq!(report.stop.as_ref().unwrap().region, 0);
    Driver::new(&mut b)
        .with_observer(&mut seen)
        .resume(&plan, &report)
        .unwrap();
    assert_eq!(seen.0, vec![0, 1, 2]);
}

#[test]
fn observer_sees_progress_and_regions() {
    #[derive(Default)]
    struct Seen {
        progress: Vec<(u64, u64)>,
        regions: Vec<usize>,
    }
    impl Observer for Seen {
        fn on_progress(&mut self, done: u64, total: u64) {
            self.progress.push((done, total));
        }
        fn on_region_done(&mut self, index: usize, r: &RegionReport) {
            assert_eq!(r.populated, r.len);
            self.regions.push(index);
        }
    }
    let data = data();
    let mut b = LedgerBackend::new(2 * MIB);
    let plan = plan(&mut b, &data);
    let mut seen = Seen::default();
    Driver::new(&mut b)
        .with_observer(&mut seen)
        .run(&plan)
        .unwrap();
    let total = plan.total_bytes();
    assert_eq!(seen.progress.last(), Some(&(total, total)));
    assert!(seen.progress.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.regions, vec![0, 1, 2]);
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![Just(0u32), 1u32..8, Just(u32::MAX)],
        prop_oneof![
            4 => Just(None),
            2 => Just(Some(ErrorKind::Interrupted)),
            2 => Just(Some(ErrorKind::Again)),
            1 => Just(Some(ErrorKind::Failed)),
        ],
        // Mostly honest; sometimes a claim of a partial granule, or of more than asked (a
        // claim of whole granules within the request cannot be told from the truth).
        prop_oneof![12 => Just(0u64), 1 => 1u64..4096, 1 => Just(1u64 << 40)],
    )
        .prop_map(|(granules, error, overclaim)| Answer {
            granules,
            error,
            overclaim,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any script, over-claims included: stop, resume the newest report (with more script),
    /// and try to resume an older one, again and again. Nothing is ever populated twice (from
    /// the backend's own ledger); the report always equals the ledger but for a call that
    /// over-claimed, after which every resume is refused without a call; an honest backend
    /// completes the plan.
    #[test]
    fn nothing_is_populated_twice_whatever_the_backend_answers(
        scripts in proptest::collection::vec(
            (proptest::collection::vec(answer(), 0..12), any::<prop::sample::Index>()),
            1..5,
        ),
        convert in any::<bool>(),
    ) {
        let data = data();
        let mut b = LedgerBackend::new(2 * MIB);
        if convert {
            b.caps.conversion = Conversion::BeforePopulate;
        }
        let plan = plan(&mut b, &data);
        let opts = DriverOptions { max_retries: 3, ..Default::default() };
        let mut reports: Vec<Report> = Vec::new();
        let mut unknown_extent = false;
        let rounds = scripts.iter().map(Some).chain(std::iter::once(None));
        for round in rounds {
            let (s, stale) = match round {
                Some((s, i)) => (s.clone(), Some(i)),
                None => (Vec::new(), None),
            };
            b.script = s.iter().copied().collect();
            b.convert_script = s.iter().rev().copied().collect();
            let calls = b.ledger.len();
            // An older report is refused, calling nothing.
            if let Some(i) = stale.filter(|_| reports.len() > 1) {
                let old = &reports[i.index(reports.len() - 1)];
                let r = Driver::new(&mut b).with_options(opts.clone()).resume(&plan, old);
                prop_assert!(r.is_err());
                prop_assert_eq!(b.ledger.len(), calls);
            }
            let mut d = Driver::new(&mut b).with_options(opts.clone());
            let result = match reports.last() {
                None => d.run(&plan),
                Some(r) => d.resume(&plan, r),
            };
            match result {
                Ok(r) => {
                    prop_assert!(!unknown_extent);
                    prop_assert!(r.is_complete());
                    assert_report_matches_ledger(&r, &b);
                    prop_assert_eq!(b.populated_bytes(), plan.total_bytes());
                    return Ok(());
                }
                Err(RunError::Stopped(r)) => {
                    prop_assert!(!unknown_extent);
                    let lied = matches!(
                        r.stop.as_ref().map(|s| &s.cause),
                        Some(StopCause::BadProgress { .. })
                    );
                    if lied {
                        unknown_extent = true;
                        prop_assert!(b.twice.is_empty(), "populated twice at {:x?}", b.twice);
                    } else {
                        assert_report_matches_ledger(&r, &b);
                    }
                    reports.push(*r);
                }
                Err(RunError::NotResumable(why)) => {
                    prop_assert!(unknown_extent, "refused: {}", why);
                    prop_assert!(
                        matches!(why, ResumeRefusal::UnknownExtent { .. }),
                        "{}",
                        why
                    );
                    prop_assert_eq!(b.ledger.len(), calls, "a refused resume calls nothing");
                }
                Err(e) => prop_assert!(false, "unexpected: {}", e),
            }
            prop_assert!(b.twice.is_empty(), "populated twice at {:x?}", b.twice);
            prop_assert!(b.wrong_content.is_empty());
        }
        prop_assert!(unknown_extent, "an honest backend did not complete the plan");
    }
}

/// Populates `granules` of the first call, then ends it with an error that is retryable by
/// kind but marked unrecoverable; every later call populates everything.
struct HalfAdded {
    calls: u32,
}

impl cc_populate::Backend for HalfAdded {
    fn caps(&self) -> cc_populate::BackendCaps {
        LedgerBackend::new(2 * MIB).caps
    }
    fn populate(&mut self, chunk: &cc_populate::ChunkRequest<'_>) -> cc_populate::Populated {
        self.calls += 1;
        if self.calls == 1 {
            let e = cc_populate::BackendError::from_errno(libc::EINTR, "page left half-added")
                .unrecoverable();
            return cc_populate::Populated::failed(2 * 4096, e);
        }
        cc_populate::Populated::all(chunk.len)
    }
}

#[test]
fn an_unrecoverable_error_is_never_retried_nor_resumed() {
    let mut backend = HalfAdded { calls: 0 };
    let data = vec![1u8; 4 * 4096];
    let plan = PlanBuilder::new()
        .source(MIB, Role::Measured, &data)
        .build(&backend.caps(), &MemoryLayout::unbounded())
        .unwrap();
    use cc_populate::Backend;
    let mut driver = Driver::new(&mut backend);
    let err = driver.run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].populated, 2 * 4096);
    assert_eq!(report.regions[0].retries, 0);
    let stop = report.stop.as_ref().unwrap();
    assert_eq!(stop.gpa, MIB + 2 * 4096);
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert!(e.unrecoverable);
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(err.to_string().contains("unrecoverable, errno 4"), "{err}");
    let again = driver.resume(&plan, &report).unwrap_err();
    assert!(matches!(again, RunError::Unrecoverable(_)), "{again}");
    assert_eq!(again.report(), Some(&report));
    assert!(again.to_string().starts_with("cannot resume"), "{again}");
    assert_eq!(backend.calls, 1, "nothing was called again");
}
