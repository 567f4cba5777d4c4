//! The driver against a backend whose every answer comes from the fuzzer.
//!
//! A `LedgerBackend` does what each scripted answer says (some granules, then success, EINTR,
//! EAGAIN, "unsupported" or a hard error), for populate and for conversion calls alike; it can
//! also do some granules and then claim impossible progress (more than asked, not whole
//! granules). After each stop the run is resumed from its report with the script going on, and
//! finally with no script left, when it must complete; on the way an older report, and the
//! report with another plan, are given to resume too. Throughout, checked against the
//! backend's own ledger (never against the driver's view of itself):
//! - no byte populated twice (data regions among themselves, ripas regions among themselves),
//!   whatever the backend answered;
//! - every chunk carries the plan's content at its place: source bytes (patterned, so that no
//!   two pages agree) equal to the region's at the chunk's offset, in place or zero likewise;
//! - per region, the report's `populated` equals the ledger's bytes, as a prefix of the region,
//!   but for a call that claimed impossible progress (nothing of it counted, nothing after it);
//!   its call counts equal the ledger's calls; the conversions add up likewise;
//! - nothing populated before it was private on a `BeforePopulate` backend;
//! - every source chunk handed over has the chunk's length;
//! - a stop names the first region not done, at its first byte not done;
//! - a stop after impossible progress is never resumed (`ResumeRefusal::UnknownExtent`, naming
//!   the call), nor is an older report or one of another plan, and a refused resume calls
//!   nothing;
//! - otherwise the final report is complete, the released bytes match the plan's, and the
//!   observer heard of every region's completion exactly once.
//! - on a backend whose kernel populates in place from a zero source, every in-place region
//!   reached is reported populated in place, and a 2 MiB-aligned one is asked in calls that end
//!   only on 2 MiB boundaries or its end.
#![no_main]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use cc_populate::testing::{Answer, LedgerBackend};
use cc_populate::{
    Backend, BackendCaps, ChunkRequest, Content, ContentKind, ConversionPolicy, Driver,
    DriverOptions, ErrorKind, InPlaceOutcome, InPlacePopulate, MemoryLayout, Observer, Phase,
    PlanBuilder, Populated, RegionReport, RegionSpec, Report, ResumeRefusal, Role, RunError,
    SourceBuf, StopCause,
};
use cc_populate_fuzz::*;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ContentIn {
    Bytes,
    Owned,
    Buffer,
    InPlace,
    Zero,
}

#[derive(Arbitrary, Debug)]
struct RegionIn {
    /// Pages skipped before the region.
    gap: u8,
    /// Length in pages (0 is made 1), or in 2 MiB pages.
    pages: u8,
    huge: bool,
    role: Role,
    content: ContentIn,
    /// Place it inside the last ripas region, if it fits.
    nested: bool,
}

/// One answer of the backend.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Step {
    /// Do `granules` (255: all), then end as `error` says.
    Do {
        granules: u8,
        error: Option<ErrorKind>,
    },
    /// Do `granules` (255: all), then claim one granule more than asked.
    Overshoot { granules: u8 },
    /// Do `granules` (255: all), then claim half a granule more (not whole granules).
    Ragged { granules: u8 },
}

#[derive(Arbitrary, Debug)]
struct Round {
    populate: Vec<Step>,
    convert: Vec<Step>,
    /// Before resuming the newest report, try to resume an older one (index among them).
    replay: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// 4 KiB << (shift % 2).
    granule_shift: u8,
    /// In granules (0: 2 MiB, 1: 2 MiB + 1 granule, 2: 1 GiB).
    max_chunk: u8,
    hugepage_chunks: bool,
    in_place: bool,
    conversion: cc_populate::Conversion,
    caller_converted: bool,
    release: bool,
    max_retries: u8,
    max_no_progress: u8,
    /// Start of the first region, in 2 MiB pages minus pages.
    base: (u8, u8),
    regions: Vec<RegionIn>,
    rounds: Vec<Round>,
}

/// A `LedgerBackend` fed one fuzzer step per call.
struct Scripted {
    inner: LedgerBackend,
    populate: VecDeque<Step>,
    convert: VecDeque<Step>,
}

/// The answer for `step` to a call asking `asked` bytes.
fn answer(step: Option<Step>, granule: u64, asked: u64) -> Answer {
    let (granules, error, lie) = match step {
        None => return Answer::ALL,
        Some(Step::Do { granules, error }) => (granules, error, None),
        Some(Step::Overshoot { granules }) => (granules, None, Some(granule)),
        Some(Step::Ragged { granules }) => (granules, None, Some(granule / 2 + 1)),
    };
    let granules = if granules == 255 {
        u32::MAX
    } else {
        granules as u32
    };
    let done = (granules as u64).saturating_mul(granule).min(asked);
    Answer {
        granules,
        error,
        // More than asked: past the request; ragged: a partial granule past what was done.
        overclaim: match (step, lie) {
            (Some(Step::Overshoot { .. }), Some(g)) => asked - done + g,
            (_, Some(half)) => half,
            _ => 0,
        },
    }
}

impl Backend for Scripted {
    fn caps(&self) -> BackendCaps {
        self.inner.caps()
    }
    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        let step = self.convert.pop_front();
        let a = answer(step, self.inner.caps.granule, len);
        self.inner.convert_script.push_back(a);
        self.inner.make_private(gpa, len)
    }
    fn in_place_populate(&self) -> InPlacePopulate {
        self.inner.in_place_populate
    }
    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let step = self.populate.pop_front();
        let a = answer(step, self.inner.caps.granule, chunk.len);
        self.inner.script.push_back(a);
        self.inner.populate(chunk)
    }
}

/// Source bytes: no two pages of it, and no two offsets within a page, agree (byte `j` mixes
/// `j mod 251` with `j`'s page number), so a chunk handed another place's bytes is seen.
fn pattern() -> &'static [u8] {
    static BUF: OnceLock<Vec<u8>> = OnceLock::new();
    BUF.get_or_init(|| {
        (0..MAX_PATTERNED as usize + PAGE as usize)
            .map(|j| (j % 251) as u8 ^ (j >> 12) as u8)
            .collect()
    })
}

/// Region `i`'s `len` source bytes, starting at a place in the pattern of its own.
fn source_bytes(i: usize, len: u64) -> &'static [u8] {
    let shift = (i * 1031) % PAGE as usize;
    &pattern()[shift..shift + len as usize]
}

#[derive(Default)]
struct Watch {
    last: u64,
    total: u64,
    done: Vec<usize>,
}

impl Observer for Watch {
    fn on_progress(&mut self, done: u64, total: u64) {
        assert!(
            done > self.last,
            "progress went from {} to {done}",
            self.last
        );
        assert!(done <= total, "progress {done} over total {total}");
        self.last = done;
        self.total = total;
    }
    fn on_region_done(&mut self, index: usize, region: &RegionReport) {
        assert_eq!(
            region.populated, region.len,
            "region {index} reported done early"
        );
        self.done.push(index);
    }
}

/// Largest owned (`Vec`) source: filling bigger ones costs more than it finds.
const MAX_OWNED: u64 = 64 << 10;

/// Largest borrowed or `SourceBuf` source: every source byte is patterned, copied into the
/// backend's expectation and compared there, so bigger ones cost more than they find (a 2 MiB
/// region gets in-place or zero content).
const MAX_PATTERNED: u64 = 1 << 20;

/// Most populate calls one plan may take without stops (keeps runs fast).
const MAX_CALLS: u128 = 4096;

fn check(
    backend: &Scripted,
    report: &Report,
    specs: &[(u64, u64, Role, ContentKind)],
    convert: bool,
    by_populate: bool,
) {
    let inner = &backend.inner;
    let granule = inner.caps.granule;
    // The in-place flow: on a zero-source backend that converts first, every in-place region
    // reached is reported populated in place, and one that is 2 MiB-aligned (with chunks of at
    // least 2 MiB) is asked in populate calls that end only on 2 MiB boundaries or its end.
    if inner.in_place_populate == InPlacePopulate::ZeroSource
        && inner.caps.conversion == cc_populate::Conversion::BeforePopulate
    {
        for (i, &(gpa, len, _, kind)) in specs.iter().enumerate() {
            let Some(outcome) = report.regions[i].in_place else {
                continue;
            };
            assert_eq!(
                kind,
                ContentKind::InPlace,
                "region {i}: in_place on {kind:?}"
            );
            let units = gpa % M2 == 0 && len % M2 == 0 && inner.caps.max_chunk >= M2;
            assert_eq!(
                outcome,
                InPlaceOutcome::InPlace {
                    whole_2m_units: units
                },
                "region {i}"
            );
            if units {
                for e in inner.ledger.iter().filter(|e| !e.convert && e.region == i) {
                    let end = e.gpa + e.asked;
                    assert!(
                        end % M2 == 0 || end == gpa + len,
                        "region {i}: a call [{:#x}, {end:#x}) ends inside a 2 MiB unit",
                        e.gpa
                    );
                }
            }
        }
    }
    assert!(inner.twice.is_empty(), "populated twice: {:?}", inner.twice);
    assert!(
        inner.bad_sources.is_empty(),
        "bad sources at {:?}",
        inner.bad_sources
    );
    assert!(
        inner.wrong_content.is_empty(),
        "chunks with content other than the plan's at {:#x?}",
        inner.wrong_content
    );
    let impossible = |claimed: u64, asked: u64| claimed > asked || claimed % granule != 0;
    assert!(
        inner.not_private.is_empty(),
        "populated before private at {:?}",
        inner.not_private
    );
    // Independent ledger check: data regions' populated ranges pairwise disjoint, ripas
    // likewise (sorted by address, each class checked against its neighbour).
    for ripas in [false, true] {
        let mut pops: Vec<(u64, u64)> = inner
            .ledger
            .iter()
            .filter(|e| !e.convert && e.len > 0 && (e.role == Role::Ripas) == ripas)
            .map(|e| (e.gpa, e.len))
            .collect();
        pops.sort_unstable();
        for w in pops.windows(2) {
            assert!(
                !intersects(w[0].0, w[0].1, w[1].0, w[1].1),
                "populated twice: {:#x}+{:#x} and {:#x}+{:#x}",
                w[0].0,
                w[0].1,
                w[1].0,
                w[1].1
            );
        }
    }
    let mut convert_calls = 0u64;
    let mut converted = 0u64;
    for e in inner.ledger.iter().filter(|e| e.convert) {
        convert_calls += 1;
        if e.claimed == e.len {
            converted += e.len;
        } else {
            assert!(impossible(e.claimed, e.asked), "{e:?}");
        }
    }
    assert_eq!(report.regions.len(), specs.len());
    for (i, (rr, &(gpa, len, role, kind))) in report.regions.iter().zip(specs).enumerate() {
        assert_eq!(
            (rr.gpa, rr.len, rr.role, rr.content),
            (gpa, len, role, kind)
        );
        let mine: Vec<_> = inner
            .ledger
            .iter()
            .filter(|e| !e.convert && e.region == i)
            .collect();
        let mut cur = gpa;
        let mut lied = false;
        for e in &mine {
            assert!(!lied, "region {i}: a call after an impossible claim: {e:?}");
            assert_eq!(
                e.gpa, cur,
                "region {i}: populate call at {:#x}, expected {cur:#x}",
                e.gpa
            );
            assert_eq!(e.role, role);
            assert!(e.len <= e.asked);
            if e.claimed == e.len {
                cur += e.len;
            } else {
                // Done, but not counted: the claim was impossible.
                assert!(impossible(e.claimed, e.asked), "{e:?}");
                lied = true;
            }
        }
        assert_eq!(
            cur - gpa,
            rr.populated,
            "region {i}: ledger has {:#x} populated, report {:#x}",
            cur - gpa,
            rr.populated
        );
        assert!(rr.populated <= len);
        assert_eq!(
            mine.len() as u64,
            rr.calls,
            "region {i}: ledger calls vs report"
        );
        if by_populate {
            assert_eq!(rr.converted, rr.populated, "region {i}");
        }
        if convert {
            assert!(
                rr.converted >= rr.populated,
                "region {i}: populated {:#x} past converted {:#x}",
                rr.populated,
                rr.converted
            );
        } else if !by_populate {
            assert_eq!(rr.converted, 0);
            assert_eq!(rr.convert_calls, 0);
        }
        assert!(rr.released <= rr.populated);
    }
    assert_eq!(report.convert_calls(), convert_calls, "conversion calls");
    assert_eq!(
        report
            .regions
            .iter()
            .map(|r| if convert { r.converted } else { 0 })
            .sum::<u64>(),
        converted,
        "converted bytes"
    );
}

fuzz_target!(|input: Input| {
    let granule = PAGE << (input.granule_shift % 2);
    let max_chunk = match input.max_chunk {
        0 => M2,
        1 => M2 + granule,
        2 => G1,
        n => n as u64 * granule,
    };
    let mut inner = LedgerBackend::new(max_chunk);
    inner.caps.granule = granule;
    inner.caps.hugepage_chunks = input.hugepage_chunks;
    inner.caps.in_place = input.in_place;
    inner.caps.conversion = input.conversion;
    // The high bit of `max_retries` (only its low bits are the limit): a kernel that populates
    // in-place content where it lies, from a zero source, instead of the backend's own way.
    if input.max_retries & 0x80 != 0 {
        inner.in_place_populate = InPlacePopulate::ZeroSource;
    }
    let caps = inner.caps.clone();

    // Lay regions out one after another (or nested in the last ripas region).
    let mut cursor = (input.base.0 as u64 * M2).saturating_sub(input.base.1 as u64 * granule);
    cursor -= cursor % granule;
    let mut ripas: Option<(u64, u64)> = None; // (next free, end) inside the last ripas region
    let mut builder = PlanBuilder::new();
    let mut specs = Vec::new();
    let mut calls = 0u128;
    for r in input.regions.iter().take(12) {
        let len = if r.huge {
            (r.pages % 4 + 1) as u64 * M2
        } else {
            (r.pages.max(1)) as u64 * granule
        };
        let gap = r.gap as u64 * granule;
        let gpa = match ripas {
            Some((next, end)) if r.nested && r.role != Role::Ripas && next + gap + len <= end => {
                ripas = Some((next + gap + len, end));
                next + gap
            }
            _ => {
                let g = cursor + gap;
                cursor = g + len;
                if r.role == Role::Ripas {
                    ripas = Some((g, g + len));
                }
                g
            }
        };
        calls += chunk_bound(len, max_chunk);
        let content = if !oracle_carries_content(r.role) {
            Content::Zero
        } else {
            let i = specs.len();
            match r.content {
                ContentIn::Bytes if len <= MAX_PATTERNED => {
                    Content::Bytes(Cow::Borrowed(source_bytes(i, len)))
                }
                ContentIn::Owned if len <= MAX_OWNED => {
                    Content::Bytes(Cow::Owned(source_bytes(i, len).to_vec()))
                }
                ContentIn::Buffer if len <= MAX_PATTERNED => match SourceBuf::new(len as usize) {
                    Ok(mut b) => {
                        b.as_mut_slice().copy_from_slice(source_bytes(i, len));
                        Content::Buffer(b)
                    }
                    Err(_) => Content::Zero,
                },
                ContentIn::InPlace if input.in_place => Content::InPlace,
                _ => Content::Zero,
            }
        };
        specs.push((gpa, len, r.role, content.kind()));
        builder = builder.region(RegionSpec {
            gpa,
            len,
            role: r.role,
            content,
        });
    }
    if calls > MAX_CALLS {
        return;
    }
    let mut plan = match builder.build(&caps, &MemoryLayout::unbounded()) {
        Ok(p) => p,
        Err(e) => panic!("the layout above is valid by construction, yet: {e}"),
    };
    // The backend checks every chunk's content against a copy of the plan's.
    inner.expect_plan(&plan);
    // Another plan, whose runs' reports must not resume this one's, nor the other way.
    let other = match PlanBuilder::new()
        .zero(0, granule)
        .build(&caps, &MemoryLayout::unbounded())
    {
        Ok(p) => p,
        Err(e) => panic!("one zero granule is a valid plan, yet: {e}"),
    };

    let options = DriverOptions {
        conversion: if input.caller_converted {
            ConversionPolicy::CallerConverted
        } else {
            ConversionPolicy::Auto
        },
        max_retries: (input.max_retries % 8) as u32,
        max_no_progress: (input.max_no_progress % 4) as u32,
        release_sources: input.release,
        // The ledger backend keeps its own in-place handling (`InPlacePopulate::Backend`).
        in_place_fallback: false,
    };
    let convert =
        caps.conversion == cc_populate::Conversion::BeforePopulate && !input.caller_converted;
    let by_populate = caps.conversion == cc_populate::Conversion::ByPopulate;
    if input.caller_converted && caps.conversion == cc_populate::Conversion::BeforePopulate {
        // The caller made everything private up front.
        for &(gpa, len, ..) in &specs {
            inner.convert_script.clear();
            let p = inner.make_private(gpa, len);
            assert_eq!(p.done, len);
        }
        inner.ledger.clear();
    }
    let mut backend = Scripted {
        inner,
        populate: VecDeque::new(),
        convert: VecDeque::new(),
    };
    let mut watch = Watch::default();

    let mut report: Option<Report> = None;
    // Every stopped report, oldest first: all but the newest were resumed from already.
    let mut history: Vec<Report> = Vec::new();
    // Set once a stop's extent is unknown: its report is refused, and the run ends there.
    let mut unknown: Option<cc_populate::Stop> = None;
    let mut rounds = input.rounds.iter().take(6).map(Some).collect::<Vec<_>>();
    rounds.push(None); // the last resume, with no script left
    for round in rounds {
        match round {
            Some(r) => {
                backend.populate.extend(r.populate.iter().take(64).copied());
                backend.convert.extend(r.convert.iter().take(64).copied());
            }
            None => {
                backend.populate.clear();
                backend.convert.clear();
            }
        }
        let last = round.is_none();
        let calls = backend.inner.ledger.len();
        // An older report, or the newest with another plan: refused, calling nothing.
        if let (Some(k), true) = (round.and_then(|r| r.replay), history.len() > 1) {
            let old = &history[k as usize % (history.len() - 1)];
            match Driver::new(&mut backend).resume(&plan, old) {
                Err(RunError::NotResumable(ResumeRefusal::AlreadyResumed {
                    generation,
                    latest,
                    ..
                })) => assert!(generation < latest),
                Err(RunError::NotResumable(_)) if unknown.is_some() => {}
                other => panic!("an older report was not refused: {other:?}"),
            }
        }
        if let Some(newest) = &report {
            match Driver::new(&mut backend).resume(&other, newest) {
                Err(RunError::NotResumable(ResumeRefusal::OtherPlan { .. })) => {}
                other => panic!("a report of another plan was not refused: {other:?}"),
            }
        }
        assert_eq!(backend.inner.ledger.len(), calls, "a refused resume called");
        let mut driver = Driver::new(&mut backend)
            .with_options(options.clone())
            .with_observer(&mut watch);
        let result = match (&report, input.release) {
            (None, false) => driver.run(&plan),
            (None, true) => driver.run_releasing(&mut plan),
            (Some(r), false) => driver.resume(&plan, r),
            (Some(r), true) => driver.resume_releasing(&mut plan, r),
        };
        if let Some(stop) = &unknown {
            // A stop of unknown extent is never resumed.
            let Err(RunError::NotResumable(ResumeRefusal::UnknownExtent {
                region,
                phase,
                gpa,
                ..
            })) = &result
            else {
                panic!("a stop of unknown extent was resumed: {result:?}")
            };
            assert_eq!((*region, *phase, *gpa), (stop.region, stop.phase, stop.gpa));
            assert_eq!(backend.inner.ledger.len(), calls, "a refused resume called");
            break;
        }
        let r = match result {
            Ok(r) => {
                assert!(r.is_complete(), "Ok but not complete: {r}");
                assert!(r.stop.is_none());
                check(&backend, &r, &specs, convert, by_populate);
                for (i, rr) in r.regions.iter().enumerate() {
                    assert_eq!(rr.populated, rr.len, "region {i}");
                    let got = if rr.role == Role::Ripas {
                        backend.inner.ripas_in(rr.gpa, rr.len)
                    } else {
                        backend.inner.populated_in(rr.gpa, rr.len)
                    };
                    assert!(got >= rr.len, "region {i}: the backend's own sets disagree");
                }
                // A complete run has nothing to resume.
                assert!(matches!(
                    Driver::new(&mut backend).resume(&plan, &r),
                    Err(RunError::NotResumable(ResumeRefusal::Complete { .. }))
                ));
                report = Some(r);
                break;
            }
            Err(RunError::Stopped(r)) => {
                assert!(
                    !last,
                    "the final resume, with every answer 'all done', stopped: {r}"
                );
                check(&backend, &r, &specs, convert, by_populate);
                let stop = r.stop.clone().expect("a stopped report has a stop");
                // Every region before the stop is done, every region after it untouched.
                for (i, rr) in r.regions.iter().enumerate() {
                    if i < stop.region {
                        assert_eq!(
                            rr.populated, rr.len,
                            "region {i} before the stop at {}",
                            stop.region
                        );
                    } else if i > stop.region {
                        assert_eq!(
                            (rr.populated, rr.converted, rr.calls),
                            (0, 0, 0),
                            "region {i} after the stop at {}",
                            stop.region
                        );
                    }
                }
                let rr = &r.regions[stop.region];
                assert_eq!(stop.role, rr.role);
                match stop.phase {
                    Phase::Populate => assert_eq!(stop.gpa, rr.gpa + rr.populated, "{stop}"),
                    Phase::Convert => {
                        assert!(convert, "conversion stop without conversion: {stop}");
                        assert_eq!(stop.gpa, rr.gpa + rr.converted, "{stop}");
                        assert_eq!(rr.populated, 0);
                    }
                }
                if let StopCause::BadProgress { done, asked } = stop.cause {
                    assert!(done > asked || done % granule != 0);
                    unknown = Some(stop.clone());
                }
                let _ = r.to_string(); // formatting a report must not panic
                *r
            }
            Err(e) => panic!("unexpected driver error: {e}"),
        };
        history.push(r.clone());
        report = Some(r);
    }
    let report = report.expect("a report");
    for (i, (region, rr)) in plan.regions().iter().zip(&report.regions).enumerate() {
        assert_eq!(
            region.released(),
            rr.released,
            "region {i}: plan and report disagree on released bytes"
        );
    }
    let mut done = watch.done.clone();
    done.sort_unstable();
    if let Some(stop) = unknown {
        // The run ends at the stop: the regions before it were each reported done once.
        assert!(!report.is_complete());
        assert_eq!(
            done,
            (0..stop.region).collect::<Vec<_>>(),
            "regions reported done: {:?}",
            watch.done
        );
        return;
    }
    assert!(report.is_complete(), "never completed: {report}");
    let data: u64 = specs.iter().map(|s| s.1).sum();
    assert_eq!(report.bytes_populated(), data);
    for (i, (region, rr)) in plan.regions().iter().zip(&report.regions).enumerate() {
        let expect = match (input.release, region.content()) {
            (true, Content::Buffer(_)) => rr.len,
            (true, Content::Bytes(Cow::Owned(_))) => rr.len,
            _ => 0,
        };
        assert_eq!(rr.released, expect, "region {i} released");
    }
    if data > 0 {
        assert_eq!(watch.last, data, "progress did not reach the total");
    }
    // Every region reported done exactly once, across all the runs.
    assert_eq!(
        done,
        (0..specs.len()).collect::<Vec<_>>(),
        "regions reported done: {:?}",
        watch.done
    );
});
