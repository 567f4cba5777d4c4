//! The driver: runs a plan against a backend and reports exactly what was done.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, Conversion, ErrorKind, Populated,
};
use crate::backend::{ChunkSource, InPlacePopulate, HUGE_2M};
use crate::plan::{Content, ContentKind, InPlaceReader, Plan};
use crate::Role;

/// Chunks of `[gpa + offset, gpa + len)` cut only at 2 MiB boundaries, each at most `max_chunk`
/// (rounded down to whole 2 MiB units) long; the first ends at the next boundary when `offset`
/// is not on one (a resumed region).
fn unit_chunks(gpa: u64, len: u64, offset: u64, max_chunk: u64) -> Vec<(u64, u64)> {
    let step = (max_chunk / HUGE_2M).max(1) * HUGE_2M;
    let end = gpa + len;
    let mut at = gpa + offset;
    let mut chunks = Vec::new();
    while at < end {
        let next = if at.is_multiple_of(HUGE_2M) {
            at + step
        } else {
            at.next_multiple_of(HUGE_2M)
        };
        let stop = next.min(end);
        chunks.push((at, stop - at));
        at = stop;
    }
    chunks
}

/// The most a [`GuestSource`](crate::GuestSource) is read (and handed to one populate call) at
/// a time: the driver's bounce buffer never grows past it.
const GUEST_PIECE: u64 = HUGE_2M;

/// Who makes memory private on a [`Conversion::BeforePopulate`] platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConversionPolicy {
    /// Follow the backend: on `BeforePopulate` platforms the driver asks the backend to convert
    /// each region just before populating it.
    #[default]
    Auto,
    /// The caller has already made every region private; the driver converts nothing.
    CallerConverted,
}

/// How the driver behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// Conversion policy.
    pub conversion: ConversionPolicy,
    /// How many retryable errors (EINTR, EAGAIN) in a row without progress before giving up.
    pub max_retries: u32,
    /// How many calls in a row that succeed but move nothing before giving up (a kernel that
    /// answers success with no progress must not make the driver spin).
    pub max_no_progress: u32,
    /// Release each source as soon as its bytes are populated (only with
    /// [`Driver::run_releasing`] / [`Driver::resume_releasing`], which take the plan mutably):
    /// [`SourceBuf`](crate::SourceBuf) content chunk by chunk, owned `Vec` content at the end of
    /// its region. Borrowed content belongs to the caller and is never touched.
    pub release_sources: bool,
    /// Whether in-place content may be copied out to a separate source where the backend's
    /// kernel cannot populate it in place ([`InPlacePopulate::Unavailable`]); needs a reader
    /// ([`Driver::with_in_place_reader`]). Off by default: such a run stops before converting.
    pub in_place_fallback: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            conversion: ConversionPolicy::Auto,
            max_retries: 64,
            max_no_progress: 2,
            release_sources: true,
            in_place_fallback: false,
        }
    }
}

/// Progress callbacks, for a progress bar or a log.
pub trait Observer {
    /// After every call that made progress: bytes populated so far, of `total`.
    fn on_progress(&mut self, done: u64, total: u64) {
        let _ = (done, total);
    }
    /// When region `index` is fully populated.
    fn on_region_done(&mut self, index: usize, region: &RegionReport) {
        let _ = (index, region);
    }
}

/// What happened to one region. `converted` and `populated` are byte counts from the region's
/// start: the driver works through a region in order, so each is a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegionReport {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length.
    pub len: u64,
    /// Role.
    pub role: Role,
    /// Content kind.
    pub content: ContentKind,
    /// Bytes known to be private (converted by the driver, or by the platform as it populated).
    /// Always 0 on [`Conversion::NotNeeded`] platforms.
    pub converted: u64,
    /// Bytes populated.
    pub populated: u64,
    /// Bytes of its source given back after populating.
    pub released: u64,
    /// Populate calls issued for this region (including interrupted ones).
    pub calls: u64,
    /// Conversion calls issued for this region.
    pub convert_calls: u64,
    /// Calls that ended interrupted or busy and were retried.
    pub retries: u64,
    /// How its in-place content was populated (`None`: not in-place content, or not on a
    /// [`Conversion::BeforePopulate`] platform). A [`GuestSource`](crate::GuestSource) that is
    /// the guest_memfd itself at the region's address counts as in-place content where the
    /// backend populates from a zero source.
    pub in_place: Option<InPlaceOutcome>,
}

/// How a region with in-place content was populated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum InPlaceOutcome {
    /// The backend handled it its own way ([`InPlacePopulate::Backend`]).
    ByBackend,
    /// Populated where it lies, from a zero source, after conversion
    /// ([`InPlacePopulate::ZeroSource`]).
    InPlace {
        /// Whether every conversion and populate call covered whole 2 MiB units (a 2 MiB-aligned
        /// region and chunks of at least 2 MiB); `false` for a region that is not.
        whole_2m_units: bool,
    },
    /// Copied out to a separate source before conversion, and populated from it, because the
    /// kernel cannot populate in place and the caller allowed the fallback.
    FellBack,
}

/// The state of a region, derived from its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionState {
    /// Nothing done.
    Untouched,
    /// Partly or wholly converted to private, nothing populated.
    Converted,
    /// Partly populated.
    Partial,
    /// Wholly populated.
    Done,
}

impl RegionReport {
    /// The region's state.
    pub fn state(&self) -> RegionState {
        if self.populated == self.len {
            RegionState::Done
        } else if self.populated > 0 {
            RegionState::Partial
        } else if self.converted > 0 {
            RegionState::Converted
        } else {
            RegionState::Untouched
        }
    }
}

/// Which step a stop happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Making the range private.
    Convert,
    /// Populating it.
    Populate,
}

/// Why the driver stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The backend failed with a non-retryable error.
    Backend(BackendError),
    /// Retryable errors kept coming without progress.
    RetriesExhausted {
        /// Calls in a row without progress.
        attempts: u32,
        /// The last error.
        last: BackendError,
    },
    /// Calls kept succeeding without moving anything.
    NoProgress {
        /// Calls in a row without progress.
        attempts: u32,
    },
    /// The backend reported progress that cannot be: more than asked, or not whole granules.
    /// Nothing of that call is counted, and the report cannot be resumed
    /// ([`ResumeRefusal::UnknownExtent`]): the backend may have done anything up to the end of
    /// the call.
    BadProgress {
        /// Bytes it claimed.
        done: u64,
        /// Bytes it was asked for.
        asked: u64,
    },
    /// The region's source was released by an earlier run (a plan run with
    /// `release_sources` cannot be populated again from those sources).
    SourceReleased,
    /// Giving a source back to the kernel failed (the populate itself succeeded).
    ReleaseFailed(String),
    /// A region with in-place content on a backend whose kernel cannot populate in place, and
    /// the fallback to a separate source was not allowed or had no reader; nothing of the region
    /// was converted or populated.
    InPlaceUnavailable(String),
    /// A [`GuestSource`](crate::GuestSource) could not be read (unmapped guest memory, or the
    /// guest_memfd itself, which is private by the time of the populate); nothing of the chunk
    /// was handed to the backend.
    SourceUnreadable(String),
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Backend(e) => write!(f, "{e}"),
            StopCause::RetriesExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} retries without progress; last: {last}")
            }
            StopCause::NoProgress { attempts } => {
                write!(f, "{attempts} calls in a row reported success but populated nothing")
            }
            StopCause::BadProgress { done, asked } => write!(
                f,
                "backend reported {done:#x} bytes done of {asked:#x} asked (not possible; nothing counted)"
            ),
            StopCause::SourceReleased => {
                write!(f, "the region's source was released by an earlier run")
            }
            StopCause::ReleaseFailed(e) => write!(f, "releasing the source failed: {e}"),
            StopCause::SourceUnreadable(e) => write!(f, "reading the source failed: {e}"),
            StopCause::InPlaceUnavailable(e) => write!(f, "in-place content: {e}"),
        }
    }
}

/// Where and why a run stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// Index of the region.
    pub region: usize,
    /// First guest-physical address not done.
    pub gpa: u64,
    /// Length of the call that failed (or of what was left of the region).
    pub len: u64,
    /// The region's role.
    pub role: Role,
    /// The platform's page type for that role.
    pub page_type: Cow<'static, str>,
    /// The step.
    pub phase: Phase,
    /// Why.
    pub cause: StopCause,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.phase {
            Phase::Convert => "converting to private",
            Phase::Populate => "populating",
        };
        write!(
            f,
            "{what} region {} ({} as {}) stopped at GPA {:#x} (+{:#x}): {}",
            self.region, self.role, self.page_type, self.gpa, self.len, self.cause
        )
    }
}

/// The exact record of a run: per region what was converted, populated and released, with
/// call counts, and where and why it stopped, if it did. Feed it to [`Driver::resume`] to
/// continue a stopped run.
///
/// Only the driver makes reports: each carries the identity of its run and plan
/// ([`Report::id`]), which [`Driver::resume`] checks (see there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One entry per plan region, in the plan's order.
    pub regions: Vec<RegionReport>,
    /// Wall time spent in runs that produced this report.
    pub elapsed: Duration,
    /// Set when the run stopped before the end.
    pub stop: Option<Stop>,
    id: RunId,
}

impl Report {
    /// A report of nothing done yet for `plan`, for run `id`.
    fn new(plan: &Plan<'_>, id: RunId) -> Report {
        Report {
            regions: plan
                .regions()
                .iter()
                .map(|r| RegionReport {
                    gpa: r.gpa(),
                    len: r.len(),
                    role: r.role(),
                    content: r.content().kind(),
                    converted: 0,
                    populated: 0,
                    released: 0,
                    calls: 0,
                    convert_calls: 0,
                    retries: 0,
                    in_place: None,
                })
                .collect(),
            elapsed: Duration::ZERO,
            stop: None,
            id,
        }
    }

    /// Which run of which plan made this report, and how many resumes it is from the first.
    pub fn id(&self) -> RunId {
        self.id
    }

    /// Whether every region is fully populated.
    pub fn is_complete(&self) -> bool {
        self.stop.is_none() && self.regions.iter().all(|r| r.populated == r.len)
    }

    /// Bytes populated in all.
    pub fn bytes_populated(&self) -> u64 {
        self.regions.iter().map(|r| r.populated).sum()
    }

    /// Populate calls in all.
    pub fn calls(&self) -> u64 {
        self.regions.iter().map(|r| r.calls).sum()
    }

    /// Conversion calls in all.
    pub fn convert_calls(&self) -> u64 {
        self.regions.iter().map(|r| r.convert_calls).sum()
    }

    /// Retried calls in all.
    pub fn retries(&self) -> u64 {
        self.regions.iter().map(|r| r.retries).sum()
    }

    /// Bytes of sources released in all.
    pub fn bytes_released(&self) -> u64 {
        self.regions.iter().map(|r| r.released).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.regions.iter().filter(|r| r.populated == r.len).count();
        write!(
            f,
            "{done}/{} regions, {} bytes populated in {} calls ({} retried, {} conversions), {} bytes of source released, {:.3?}",
            self.regions.len(),
            self.bytes_populated(),
            self.calls(),
            self.retries(),
            self.convert_calls(),
            self.bytes_released(),
            self.elapsed
        )?;
        if let Some(s) = &self.stop {
            write!(f, "; {s}")?;
        }
        Ok(())
    }
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run stopped part-way: the report says exactly what was done and where it stopped.
    #[error("{}", .0.stop.as_ref().map(|s| s.to_string()).unwrap_or_default())]
    Stopped(Box<Report>),
    /// The plan was validated against other capabilities than the backend declares now.
    #[error("the plan was validated for other backend capabilities ({plan:?}) than this backend's ({backend:?})")]
    CapsMismatch {
        /// Capabilities the plan was validated against.
        plan: Box<BackendCaps>,
        /// The backend's.
        backend: Box<BackendCaps>,
    },
    /// [`Driver::resume`] refused the report: resuming it could populate a byte twice, or it
    /// is not a report of this plan's run. The reason names the run, or the region and range.
    #[error("cannot resume: {0}")]
    NotResumable(ResumeRefusal),
    /// The report given to resume stopped on an unrecoverable error
    /// ([`BackendError::unrecoverable`]): nothing is retried; the VM must be torn down.
    #[error("cannot resume: the run stopped on an unrecoverable error: {}", .0.stop.as_ref().map(|s| s.to_string()).unwrap_or_default())]
    Unrecoverable(Box<Report>),
}

impl RunError {
    /// The report of a stopped run (also of one that cannot be resumed).
    pub fn report(&self) -> Option<&Report> {
        match self {
            RunError::Stopped(r) | RunError::Unrecoverable(r) => Some(r),
            _ => None,
        }
    }
}

/// The identity a [`Report`] carries: the run that made it, the plan it ran, and how many
/// resumes it is from the run's first report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RunId {
    /// The run: unique in the process ([`Driver::run`] and [`Driver::run_releasing`] start a
    /// new one; a resume continues it).
    pub run: u64,
    /// The plan: unique in the process (set when the plan is built).
    pub plan: u64,
    /// 0 for the report of [`Driver::run`], one more for each resume of the run.
    pub generation: u64,
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} of plan {} (report {})",
            self.run, self.plan, self.generation
        )
    }
}

/// Why [`Driver::resume`] refused a report ([`RunError::NotResumable`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeRefusal {
    /// The report is from a run of another plan (also one with the same regions: a plan
    /// built again may carry other bytes).
    #[error("the report is from plan {report_plan}, not from this plan ({plan})")]
    OtherPlan {
        /// The plan the report's run populated.
        report_plan: u64,
        /// The plan given to resume.
        plan: u64,
    },
    /// The run stopped on a call whose extent is unknown: the backend claimed progress it
    /// cannot have made ([`StopCause::BadProgress`]), so it may have populated (or converted)
    /// anything up to the end of the call. Resuming could populate those bytes again; the VM
    /// must be torn down.
    #[error("region {region}: the call at GPA {gpa:#x} (+{asked:#x}) claimed {claimed:#x} bytes, so how much of [{gpa:#x}..{end:#x}) was {what} is unknown; tear the VM down", end = gpa.saturating_add(*asked), what = match phase { Phase::Convert => "converted", Phase::Populate => "populated" })]
    UnknownExtent {
        /// Index of the region.
        region: usize,
        /// The step.
        phase: Phase,
        /// Where the call started.
        gpa: u64,
        /// Bytes it was asked for.
        asked: u64,
        /// Bytes the backend claimed.
        claimed: u64,
    },
    /// This report was resumed already: a newer report of the run exists, and only the newest
    /// may be resumed (resuming an older one would repeat work).
    #[error("the report is number {generation} of run {run}, but the run has gone on to report {latest}: resume from the newest report")]
    AlreadyResumed {
        /// The run.
        run: u64,
        /// The report's generation.
        generation: u64,
        /// The run's newest generation.
        latest: u64,
    },
    /// Another call is resuming this run right now.
    #[error("run {run} is being resumed by another call")]
    InProgress {
        /// The run.
        run: u64,
    },
    /// The run completed: there is nothing to resume.
    #[error("run {run} completed: there is nothing to resume")]
    Complete {
        /// The run.
        run: u64,
    },
    /// The run stopped where it cannot be resumed (an unknown extent or an unrecoverable
    /// error), though the report given says otherwise: it was changed since the driver made it.
    #[error("run {run} stopped where it cannot be resumed, whatever this report says")]
    Closed {
        /// The run.
        run: u64,
    },
    /// The report's progress (a region's converted, populated or released bytes, or the
    /// stop) is not what the run recorded: it was changed since the driver made it.
    #[error("the report of run {run} was changed since the driver made it (its progress is not what the run recorded)")]
    Altered {
        /// The run.
        run: u64,
    },
    /// The plan has no record of the run.
    #[error("this plan has no record of run {run}")]
    UnknownRun {
        /// The run.
        run: u64,
    },
}

/// Process-wide source of run and plan identities.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new identity, unique in the process.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Where a run of a plan stands, as the plan keeps it: the newest report's generation and
/// what may be done with it.
#[derive(Clone, Copy, Debug)]
enum RunState {
    /// Stopped; the report with this digest of its progress may be resumed.
    Resumable { digest: u64 },
    /// Being run or resumed.
    Running,
    /// Finished.
    Complete,
    /// Stopped where it cannot be resumed.
    Closed,
}

#[derive(Debug)]
struct RunRecord {
    run: u64,
    generation: u64,
    state: RunState,
}

/// The runs of one plan, kept by the plan so that only the newest report of each can be
/// resumed, once.
#[derive(Debug, Default)]
pub(crate) struct RunBook(Mutex<Vec<RunRecord>>);

impl RunBook {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<RunRecord>) -> R) -> R {
        // Nothing panics while the lock is held; a poisoned book is still consistent.
        let mut runs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut runs)
    }

    /// Records a new run, running.
    fn start(&self, run: u64) {
        self.with(|runs| {
            runs.push(RunRecord {
                run,
                generation: 0,
                state: RunState::Running,
            })
        });
    }

    /// Takes `report`'s run for a resume: it must be stopped, resumable, and `report` its
    /// newest report, unchanged. Returns the generation of the report the resume makes.
    fn claim(&self, report: &Report) -> Result<u64, ResumeRefusal> {
        let id = report.id;
        let run = id.run;
        self.with(|runs| {
            let Some(rec) = runs.iter_mut().find(|r| r.run == run) else {
                return Err(ResumeRefusal::UnknownRun { run });
            };
            if rec.generation != id.generation {
                return Err(ResumeRefusal::AlreadyResumed {
                    run,
                    generation: id.generation,
                    latest: rec.generation,
                });
            }
            match rec.state {
                RunState::Running => Err(ResumeRefusal::InProgress { run }),
                RunState::Complete => Err(ResumeRefusal::Complete { run }),
                RunState::Closed => Err(ResumeRefusal::Closed { run }),
                RunState::Resumable { digest } if digest != progress_digest(report) => {
                    Err(ResumeRefusal::Altered { run })
                }
                RunState::Resumable { .. } => {
                    rec.generation += 1;
                    rec.state = RunState::Running;
                    Ok(rec.generation)
                }
            }
        })
    }

    /// Records how a run (or resume) that made `result` ended.
    fn settle(&self, result: &Result<Report, RunError>) {
        let (report, state) = match result {
            Ok(r) => (r, RunState::Complete),
            Err(RunError::Stopped(r)) if resume_refusal(r).is_some() => (&**r, RunState::Closed),
            Err(RunError::Stopped(r)) => (
                &**r,
                RunState::Resumable {
                    digest: progress_digest(r),
                },
            ),
            // Refused before it started: nothing was recorded.
            Err(_) => return,
        };
        let id = report.id;
        self.with(|runs| {
            if let Some(rec) = runs.iter_mut().find(|r| r.run == id.run) {
                rec.generation = id.generation;
                rec.state = state;
            }
        });
    }
}

/// A digest of what a resume starts from: per region the range, role, content kind and the
/// bytes converted, populated and released, and where the run stopped.
fn progress_digest(report: &Report) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    report.id.hash(&mut h);
    report.regions.len().hash(&mut h);
    for r in &report.regions {
        (r.gpa, r.len, r.role, r.content).hash(&mut h);
        (r.converted, r.populated, r.released).hash(&mut h);
    }
    report
        .stop
        .as_ref()
        .map(|s| (s.region, s.gpa, s.len, s.phase))
        .hash(&mut h);
    h.finish()
}

/// Why the report's own stop forbids a resume, if it does (an unrecoverable error is
/// refused separately, as [`RunError::Unrecoverable`]).
fn resume_refusal(report: &Report) -> Option<ResumeRefusal> {
    let stop = report.stop.as_ref()?;
    match &stop.cause {
        StopCause::BadProgress { done, asked } => Some(ResumeRefusal::UnknownExtent {
            region: stop.region,
            phase: stop.phase,
            gpa: stop.gpa,
            asked: *asked,
            claimed: *done,
        }),
        StopCause::Backend(e) if e.unrecoverable => {
            Some(ResumeRefusal::Closed { run: report.id.run })
        }
        _ => None,
    }
}

enum PlanAccess<'p, 'a> {
    Shared(&'p Plan<'a>),
    Exclusive(&'p mut Plan<'a>),
}

impl<'a> PlanAccess<'_, 'a> {
    fn get(&self) -> &Plan<'a> {
        match self {
            PlanAccess::Shared(p) => p,
            PlanAccess::Exclusive(p) => p,
        }
    }
}

/// Runs plans against a backend.
///
/// ```
/// use cc_populate::testing::LedgerBackend;
/// use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role};
///
/// let mut backend = LedgerBackend::new(2 << 20);
/// let data = vec![7u8; 3 << 20];
/// let plan = PlanBuilder::new()
///     .source(0, Role::Measured, &data)
///     .zero(4 << 20, 4096)
///     .build(&backend.caps, &MemoryLayout::unbounded())?;
/// let report = Driver::new(&mut backend).run(&plan)?;
/// assert!(report.is_complete());
/// assert_eq!(report.calls(), 3); // 2 MiB + 1 MiB + 4 KiB
/// assert_eq!(backend.populated_bytes(), (3 << 20) + 4096);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Driver<'o, B> {
    backend: B,
    options: DriverOptions,
    observer: Option<&'o mut dyn Observer>,
    in_place_reader: Option<&'o dyn InPlaceReader>,
}

impl<'o, B: Backend> Driver<'o, B> {
    /// A driver over `backend` (which may be `&mut YourBackend`) with default options.
    pub fn new(backend: B) -> Self {
        Driver {
            backend,
            options: DriverOptions::default(),
            observer: None,
            in_place_reader: None,
        }
    }

    /// Sets the reader the in-place fallback copies content out with (from the shared view,
    /// before the range is converted): used only with
    /// [`DriverOptions::in_place_fallback`] on a backend whose kernel cannot populate in place.
    pub fn with_in_place_reader(mut self, reader: &'o dyn InPlaceReader) -> Self {
        self.in_place_reader = Some(reader);
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: DriverOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets a progress observer.
    pub fn with_observer(mut self, observer: &'o mut dyn Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (e.g. for the launch steps after populate).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the backend back.
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// Populates the whole plan. The plan is untouched, so it can be run again on a fresh VM.
    /// Each call is a new run ([`Report::id`]).
    pub fn run(&mut self, plan: &Plan<'_>) -> Result<Report, RunError> {
        self.start(PlanAccess::Shared(plan), false)
    }

    /// Populates the whole plan, releasing sources as they are populated when
    /// [`DriverOptions::release_sources`] is set.
    pub fn run_releasing(&mut self, plan: &mut Plan<'_>) -> Result<Report, RunError> {
        let release = self.options.release_sources;
        self.start(PlanAccess::Exclusive(plan), release)
    }

    /// Continues a stopped run from its report: done regions are skipped, a partly populated
    /// region continues at its first byte not done, conversion is not repeated.
    ///
    /// Resume never populates a byte twice, so it refuses ([`RunError::NotResumable`], with a
    /// [`ResumeRefusal`] saying why) any report but the newest of a stopped run of this very
    /// plan, unchanged, and one whose stop has an unknown extent (a backend that claimed
    /// progress it cannot have made may have done anything up to the end of that call):
    /// each report can be resumed once, and a resume makes the run's next report. A stop on an
    /// unrecoverable backend error is refused with [`RunError::Unrecoverable`]. A refused
    /// resume calls nothing.
    ///
    /// ```
    /// use cc_populate::testing::{Answer, LedgerBackend};
    /// use cc_populate::{Driver, ErrorKind, MemoryLayout, PlanBuilder, ResumeRefusal, Role, RunError};
    ///
    /// let mut backend = LedgerBackend::new(2 << 20);
    /// // The first call populates one page, then fails.
    /// backend.script.push_back(Answer::fail(1, ErrorKind::Failed));
    /// let image = vec![3u8; 4 << 20];
    /// let plan = PlanBuilder::new()
    ///     .source(0, Role::Measured, &image)
    ///     .build(&backend.caps, &MemoryLayout::unbounded())?;
    /// let mut driver = Driver::new(&mut backend);
    /// let Err(RunError::Stopped(stopped)) = driver.run(&plan) else { panic!() };
    /// let done = driver.resume(&plan, &stopped)?;
    /// assert!(done.is_complete());
    /// assert_eq!(done.id().generation, stopped.id().generation + 1);
    /// // The stopped report was resumed already: a second resume is refused.
    /// let again = driver.resume(&plan, &stopped).unwrap_err();
    /// assert!(matches!(again, RunError::NotResumable(ResumeRefusal::AlreadyResumed { .. })));
    ///
    /// // A backend that populates a page, then claims more than it was asked: how much it
    /// // really did is unknown, and the report cannot be resumed.
    /// backend.script.push_back(Answer::overclaim(1, 4 << 20));
    /// let mut driver = Driver::new(&mut backend);
    /// let Err(RunError::Stopped(stopped)) = driver.run(&plan) else { panic!() };
    /// let refused = driver.resume(&plan, &stopped).unwrap_err();
    /// let RunError::NotResumable(ResumeRefusal::UnknownExtent { region, gpa, .. }) = refused else {
    ///     panic!("{refused}")
    /// };
    /// assert_eq!((region, gpa), (0, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume(&mut self, plan: &Plan<'_>, report: &Report) -> Result<Report, RunError> {
        self.continue_run(PlanAccess::Shared(plan), report, false)
    }

    /// [`resume`](Driver::resume), releasing sources as in [`run_releasing`](Driver::run_releasing).
    pub fn resume_releasing(
        &mut self,
        plan: &mut Plan<'_>,
        report: &Report,
    ) -> Result<Report, RunError> {
        let release = self.options.release_sources;
        self.continue_run(PlanAccess::Exclusive(plan), report, release)
    }

    /// Starts a new run of `plan`.
    fn start(&mut self, plan: PlanAccess<'_, '_>, release: bool) -> Result<Report, RunError> {
        self.check_caps(plan.get())?;
        let p = plan.get();
        let id = RunId {
            run: next_id(),
            plan: p.id(),
            generation: 0,
        };
        p.runs().start(id.run);
        let report = Report::new(p, id);
        self.execute_recorded(plan, report, release)
    }

    /// Resumes `report`'s run of `plan`, if it may be.
    fn continue_run(
        &mut self,
        plan: PlanAccess<'_, '_>,
        report: &Report,
        release: bool,
    ) -> Result<Report, RunError> {
        let p = plan.get();
        if report.id.plan != p.id() {
            return Err(RunError::NotResumable(ResumeRefusal::OtherPlan {
                report_plan: report.id.plan,
                plan: p.id(),
            }));
        }
        if let Some(Stop {
            cause: StopCause::Backend(e),
            ..
        }) = &report.stop
        {
            if e.unrecoverable {
                return Err(RunError::Unrecoverable(Box::new(report.clone())));
            }
        }
        if let Some(why) = resume_refusal(report) {
            return Err(RunError::NotResumable(why));
        }
        self.check_caps(p)?;
        if report.regions.len() != p.regions().len() {
            return Err(RunError::NotResumable(ResumeRefusal::Altered {
                run: report.id.run,
            }));
        }
        let generation = p.runs().claim(report).map_err(RunError::NotResumable)?;
        let mut next = report.clone();
        next.id.generation = generation;
        self.execute_recorded(plan, next, release)
    }

    fn check_caps(&self, plan: &Plan<'_>) -> Result<(), RunError> {
        let caps = self.backend.caps();
        if &caps != plan.caps() {
            return Err(RunError::CapsMismatch {
                plan: Box::new(plan.caps().clone()),
                backend: Box::new(caps),
            });
        }
        Ok(())
    }

    /// Runs from `report` and records in the plan how the run ended.
    fn execute_recorded(
        &mut self,
        plan: PlanAccess<'_, '_>,
        report: Report,
        release: bool,
    ) -> Result<Report, RunError> {
        let mut plan = plan;
        let result = self.execute(&mut plan, report, release);
        plan.get().runs().settle(&result);
        result
    }

    fn execute(
        &mut self,
        plan: &mut PlanAccess<'_, '_>,
        mut report: Report,
        release: bool,
    ) -> Result<Report, RunError> {
        let caps = self.backend.caps();
        let start = Instant::now();
        report.stop = None;
        let convert = caps.conversion == Conversion::BeforePopulate
            && self.options.conversion == ConversionPolicy::Auto;
        let total = plan.get().total_bytes();
        let mut done_bytes = report.bytes_populated();
        // The bounce buffer guest-memory sources are read into, chunk by chunk.
        let mut bounce: Vec<u8> = Vec::new();
        let n = plan.get().regions().len();
        for i in 0..n {
            let (gpa, len, role, released) = {
                let r = &plan.get().regions()[i];
                (r.gpa(), r.len(), r.role(), r.released())
            };
            if report.regions[i].populated == len {
                continue;
            }
            // A guest-memory source that is the guest_memfd itself at the region's own address,
            // where the platform converts first and the kernel populates in place: the bytes
            // already lie where they must, and the host could not read them once private, so
            // they are populated in place, as in-place content.
            let before = caps.conversion == Conversion::BeforePopulate;
            let gmem_source = before
                && match plan.get().regions()[i].content() {
                    Content::Guest(g) => {
                        g.at() == gpa
                            && g.guest_memfd_offset(0).is_some()
                            && g.guest_memfd_offset(len - 1).is_some()
                    }
                    _ => false,
                }
                && self.backend.in_place_populate() == InPlacePopulate::ZeroSource;
            let in_place_mode = if gmem_source {
                Some(InPlacePopulate::ZeroSource)
            } else {
                (before && plan.get().regions()[i].content().kind() == ContentKind::InPlace)
                    .then(|| self.backend.in_place_populate())
            };
            // Unit-keeping chunks for content the kernel populates where it lies.
            let units = gpa.is_multiple_of(HUGE_2M)
                && len.is_multiple_of(HUGE_2M)
                && caps.max_chunk >= HUGE_2M;
            // The fallback's copy of the region (from `base` on), taken before conversion.
            let mut fallback: Option<(u64, Vec<u8>)> = None;
            match in_place_mode {
                None => {}
                Some(InPlacePopulate::Backend) => {
                    report.regions[i].in_place = Some(InPlaceOutcome::ByBackend);
                }
                Some(InPlacePopulate::ZeroSource) => {
                    report.regions[i].in_place = Some(InPlaceOutcome::InPlace {
                        whole_2m_units: units,
                    });
                }
                Some(InPlacePopulate::Unavailable) => {
                    let base = report.regions[i].populated;
                    let refusal = if !self.options.in_place_fallback {
                        Some(StopCause::InPlaceUnavailable(
                            "the kernel cannot populate it in place, and the fallback to a \
                             separate source was not allowed (DriverOptions::in_place_fallback)"
                                .into(),
                        ))
                    } else if let Some(reader) = self.in_place_reader {
                        let mut buf = vec![0u8; (len - base) as usize];
                        match reader.read_in_place(gpa + base, &mut buf) {
                            Ok(()) => {
                                fallback = Some((base, buf));
                                None
                            }
                            Err(e) => Some(StopCause::SourceUnreadable(format!(
                                "copying the in-place content out for the fallback: {e}"
                            ))),
                        }
                    } else {
                        Some(StopCause::InPlaceUnavailable(
                            "the kernel cannot populate it in place, and no reader was given to \
                             copy it to a separate source (Driver::with_in_place_reader)"
                                .into(),
                        ))
                    };
                    if let Some(cause) = refusal {
                        let stop =
                            self.stop_at(i, gpa + base, len - base, role, Phase::Convert, cause);
                        return Err(self.stopped(report, stop, start));
                    }
                    report.regions[i].in_place = Some(InPlaceOutcome::FellBack);
                }
            }
            if convert && report.regions[i].converted < len {
                if let Err(stop) = self.convert_region(&mut report, i, gpa, len, role) {
                    return Err(self.stopped(report, *stop, start));
                }
            }
            if released > report.regions[i].populated {
                let stop = self.stop_at(
                    i,
                    gpa + report.regions[i].populated,
                    len - report.regions[i].populated,
                    role,
                    Phase::Populate,
                    StopCause::SourceReleased,
                );
                return Err(self.stopped(report, stop, start));
            }
            let offset = report.regions[i].populated;
            let chunks: Vec<(u64, u64)> =
                if in_place_mode == Some(InPlacePopulate::ZeroSource) && units {
                    unit_chunks(gpa, len, offset, caps.max_chunk)
                } else {
                    plan.get().chunks(i, offset).collect()
                };
            for (cgpa, clen) in chunks {
                let mut off = cgpa - gpa;
                let cend = off + clen;
                let mut guard = Guard::default();
                while off < cend {
                    let mut ask = cend - off;
                    let answer = {
                        let p = plan.get();
                        let guest = p.regions().get(i).and_then(|r| match r.content() {
                            Content::Guest(g) => Some(*g),
                            _ => None,
                        });
                        let source = if gmem_source {
                            Ok(ChunkSource::InPlace)
                        } else if let Some((base, copy)) = &fallback {
                            let from = (off - base) as usize;
                            copy.get(from..from + ask as usize)
                                .map(ChunkSource::Bytes)
                                .ok_or(StopCause::SourceReleased)
                        } else if let Some(g) = guest {
                            // Read from the VMM's memory into the bounce buffer, at most 2 MiB
                            // at a time (2 MiB-aligned units stay whole): never the whole image.
                            ask = ask.min(GUEST_PIECE);
                            let n = ask as usize;
                            if bounce.len() < n {
                                bounce.resize(n, 0);
                            }
                            let private_first = caps.conversion == Conversion::BeforePopulate;
                            match g.read(off, &mut bounce[..n], private_first) {
                                Ok(()) => Ok(ChunkSource::Bytes(&bounce[..n])),
                                Err(reason) => Err(StopCause::SourceUnreadable(reason)),
                            }
                        } else {
                            p.chunk_source(i, off, ask).ok_or(StopCause::SourceReleased)
                        };
                        let source = match source {
                            Ok(source) => source,
                            Err(cause) => {
                                let stop =
                                    self.stop_at(i, gpa + off, ask, role, Phase::Populate, cause);
                                return Err(self.stopped(report, stop, start));
                            }
                        };
                        let req = ChunkRequest {
                            region: i,
                            gpa: gpa + off,
                            len: ask,
                            role,
                            source,
                        };
                        self.backend.populate(&req)
                    };
                    let rr = &mut report.regions[i];
                    rr.calls += 1;
                    let Populated { done, result } = answer;
                    if let Err(cause) = check_progress(done, ask, caps.granule) {
                        let stop = self.stop_at(i, gpa + off, ask, role, Phase::Populate, cause);
                        return Err(self.stopped(report, stop, start));
                    }
                    off += done;
                    rr.populated = off;
                    if caps.conversion == Conversion::ByPopulate {
                        rr.converted = rr.converted.max(off);
                    }
                    if done > 0 {
                        done_bytes += done;
                        if release {
                            if let PlanAccess::Exclusive(p) = plan {
                                match p.release_source(i, off) {
                                    Ok(freed) => report.regions[i].released += freed,
                                    Err(e) => {
                                        let stop = self.stop_at(
                                            i,
                                            gpa + off,
                                            cend - off,
                                            role,
                                            Phase::Populate,
                                            StopCause::ReleaseFailed(e.to_string()),
                                        );
                                        return Err(self.stopped(report, stop, start));
                                    }
                                }
                            }
                        }
                        if let Some(o) = self.observer.as_deref_mut() {
                            o.on_progress(done_bytes, total);
                        }
                    }
                    match guard.judge(done, result, &self.options) {
                        Ok(retried) => report.regions[i].retries += u64::from(retried),
                        Err(cause) => {
                            report.regions[i].retries += u64::from(cause.was_retried());
                            let stop = self.stop_at(
                                i,
                                gpa + off,
                                cend - off,
                                role,
                                Phase::Populate,
                                cause,
                            );
                            return Err(self.stopped(report, stop, start));
                        }
                    }
                }
            }
            if let Some(o) = self.observer.as_deref_mut() {
                o.on_region_done(i, &report.regions[i]);
            }
        }
        report.elapsed += start.elapsed();
        Ok(report)
    }

    fn convert_region(
        &mut self,
        report: &mut Report,
        i: usize,
        gpa: u64,
        len: u64,
        role: Role,
    ) -> Result<(), Box<Stop>> {
        let granule = self.backend.caps().granule;
        let mut guard = Guard::default();
        loop {
            let off = report.regions[i].converted;
            if off >= len {
                return Ok(());
            }
            let ask = len - off;
            let Populated { done, result } = self.backend.make_private(gpa + off, ask);
            let rr = &mut report.regions[i];
            rr.convert_calls += 1;
            if let Err(cause) = check_progress(done, ask, granule) {
                return Err(self.boxed_stop(i, gpa + off, ask, role, Phase::Convert, cause));
            }
            rr.converted += done;
            match guard.judge(done, result, &self.options) {
                Ok(retried) => rr.retries += u64::from(retried),
                Err(cause) => {
                    rr.retries += u64::from(cause.was_retried());
                    let at = off + done;
                    return Err(self.boxed_stop(
                        i,
                        gpa + at,
                        len - at,
                        role,
                        Phase::Convert,
                        cause,
                    ));
                }
            }
        }
    }

    fn boxed_stop(
        &self,
        region: usize,
        gpa: u64,
        len: u64,
        role: Role,
        phase: Phase,
        cause: StopCause,
    ) -> Box<Stop> {
        Box::new(self.stop_at(region, gpa, len, role, phase, cause))
    }

    fn stop_at(
        &self,
        region: usize,
        gpa: u64,
        len: u64,
        role: Role,
        phase: Phase,
        cause: StopCause,
    ) -> Stop {
        Stop {
            region,
            gpa,
            len,
            role,
            page_type: self.backend.page_type(role),
            phase,
            cause,
        }
    }

    fn stopped(&mut self, mut report: Report, stop: Stop, start: Instant) -> RunError {
        // A call can finish a region and still fail (all bytes done, then an error): the
        // region is complete, so the observer hears of it here, once (resume skips it).
        if let (Some(o), Some(r)) = (
            self.observer.as_deref_mut(),
            report.regions.get(stop.region),
        ) {
            if r.populated == r.len && stop.phase == Phase::Populate {
                o.on_region_done(stop.region, r);
            }
        }
        report.stop = Some(stop);
        report.elapsed += start.elapsed();
        RunError::Stopped(Box::new(report))
    }
}

/// A backend's claim of progress must be whole granules and no more than asked; otherwise
/// nothing of the call is counted.
fn check_progress(done: u64, asked: u64, granule: u64) -> Result<(), StopCause> {
    if done > asked || !done.is_multiple_of(granule) {
        return Err(StopCause::BadProgress { done, asked });
    }
    Ok(())
}

/// Counts calls in a row without progress on one piece of work, for the retry bound and the
/// no-progress guard; progress resets both.
#[derive(Default)]
struct Guard {
    no_progress: u32,
    retry_streak: u32,
}

impl Guard {
    /// Judges a call that moved `done` bytes (already counted) and ended with `result`:
    /// `Ok(retried)` to call again, `Err` with the cause to stop.
    fn judge(
        &mut self,
        done: u64,
        result: Result<(), BackendError>,
        options: &DriverOptions,
    ) -> Result<bool, StopCause> {
        if done > 0 {
            self.no_progress = 0;
            self.retry_streak = 0;
        }
        match result {
            Ok(()) if done == 0 => {
                self.no_progress += 1;
                if self.no_progress >= options.max_no_progress.max(1) {
                    return Err(StopCause::NoProgress {
                        attempts: self.no_progress,
                    });
                }
                Ok(false)
            }
            Ok(()) => Ok(false),
            Err(e) if e.kind.is_retryable() && !e.unrecoverable => {
                if done == 0 {
                    self.retry_streak += 1;
                }
                if self.retry_streak > options.max_retries {
                    return Err(StopCause::RetriesExhausted {
                        attempts: self.retry_streak,
                        last: e,
                    });
                }
                if e.kind == ErrorKind::Again {
                    std::thread::yield_now();
                }
                Ok(true)
            }
            Err(e) => Err(StopCause::Backend(e)),
        }
    }
}

impl StopCause {
    /// Whether the call that caused this stop ended retryable (and so counts as a retry).
    fn was_retried(&self) -> bool {
        matches!(self, StopCause::RetriesExhausted { .. })
    }
}
