//! The driver: runs a plan against a backend and reports exactly what was done.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use crate::backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, Conversion, ErrorKind, Populated,
};
use crate::plan::{ContentKind, Plan};
use crate::Role;

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
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            conversion: ConversionPolicy::Auto,
            max_retries: 64,
            max_no_progress: 2,
            release_sources: true,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Nothing of that call is counted.
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One entry per plan region, in the plan's order.
    pub regions: Vec<RegionReport>,
    /// Wall time spent in runs that produced this report.
    pub elapsed: Duration,
    /// Set when the run stopped before the end.
    pub stop: Option<Stop>,
}

impl Report {
    /// A report of nothing done yet for `plan`.
    pub fn new(plan: &Plan<'_>) -> Report {
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
                })
                .collect(),
            elapsed: Duration::ZERO,
            stop: None,
        }
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
    /// A report given to resume does not describe this plan.
    #[error("the report does not match the plan: {0}")]
    ReportMismatch(String),
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
}

impl<'o, B: Backend> Driver<'o, B> {
    /// A driver over `backend` (which may be `&mut YourBackend`) with default options.
    pub fn new(backend: B) -> Self {
        Driver {
            backend,
            options: DriverOptions::default(),
            observer: None,
        }
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
    pub fn run(&mut self, plan: &Plan<'_>) -> Result<Report, RunError> {
        let report = Report::new(plan);
        self.execute(PlanAccess::Shared(plan), report, false)
    }

    /// Populates the whole plan, releasing sources as they are populated when
    /// [`DriverOptions::release_sources`] is set.
    pub fn run_releasing(&mut self, plan: &mut Plan<'_>) -> Result<Report, RunError> {
        let report = Report::new(plan);
        let release = self.options.release_sources;
        self.execute(PlanAccess::Exclusive(plan), report, release)
    }

    /// Continues a stopped run from its report: done regions are skipped, a partly populated
    /// region continues at its first byte not done, conversion is not repeated.
    pub fn resume(&mut self, plan: &Plan<'_>, report: &Report) -> Result<Report, RunError> {
        check_report(plan, report)?;
        self.execute(PlanAccess::Shared(plan), report.clone(), false)
    }

    /// [`resume`](Driver::resume), releasing sources as in [`run_releasing`](Driver::run_releasing).
    pub fn resume_releasing(
        &mut self,
        plan: &mut Plan<'_>,
        report: &Report,
    ) -> Result<Report, RunError> {
        check_report(plan, report)?;
        let release = self.options.release_sources;
        self.execute(PlanAccess::Exclusive(plan), report.clone(), release)
    }

    fn execute(
        &mut self,
        mut plan: PlanAccess<'_, '_>,
        mut report: Report,
        release: bool,
    ) -> Result<Report, RunError> {
        let caps = self.backend.caps();
        if &caps != plan.get().caps() {
            return Err(RunError::CapsMismatch {
                plan: Box::new(plan.get().caps().clone()),
                backend: Box::new(caps),
            });
        }
        let start = Instant::now();
        report.stop = None;
        let convert = caps.conversion == Conversion::BeforePopulate
            && self.options.conversion == ConversionPolicy::Auto;
        let total = plan.get().total_bytes();
        let mut done_bytes = report.bytes_populated();
        let n = plan.get().regions().len();
        for i in 0..n {
            let (gpa, len, role, released) = {
                let r = &plan.get().regions()[i];
                (r.gpa(), r.len(), r.role(), r.released())
            };
            if report.regions[i].populated == len {
                continue;
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
            let chunks: Vec<(u64, u64)> = plan.get().chunks(i, offset).collect();
            for (cgpa, clen) in chunks {
                let mut off = cgpa - gpa;
                let cend = off + clen;
                let mut guard = Guard::default();
                while off < cend {
                    let ask = cend - off;
                    let answer = {
                        let p = plan.get();
                        let Some(source) = p.chunk_source(i, off, ask) else {
                            let stop = self.stop_at(
                                i,
                                gpa + off,
                                ask,
                                role,
                                Phase::Populate,
                                StopCause::SourceReleased,
                            );
                            return Err(self.stopped(report, stop, start));
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
                            if let PlanAccess::Exclusive(p) = &mut plan {
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

fn check_report(plan: &Plan<'_>, report: &Report) -> Result<(), RunError> {
    if let Some(Stop {
        cause: StopCause::Backend(e),
        ..
    }) = &report.stop
    {
        if e.unrecoverable {
            return Err(RunError::Unrecoverable(Box::new(report.clone())));
        }
    }
    let regions = plan.regions();
    if regions.len() != report.regions.len() {
        return Err(RunError::ReportMismatch(format!(
            "the plan has {} regions, the report {}",
            regions.len(),
            report.regions.len()
        )));
    }
    let g = plan.caps().granule;
    for (i, (p, r)) in regions.iter().zip(&report.regions).enumerate() {
        if p.gpa() != r.gpa || p.len() != r.len || p.role() != r.role {
            return Err(RunError::ReportMismatch(format!(
                "region {i} is [{:#x}..+{:#x}) {} in the plan but [{:#x}..+{:#x}) {} in the report",
                p.gpa(),
                p.len(),
                p.role(),
                r.gpa,
                r.len,
                r.role
            )));
        }
        if r.populated > r.len
            || r.converted > r.len
            || r.populated % g != 0
            || r.converted % g != 0
        {
            return Err(RunError::ReportMismatch(format!(
                "region {i} [{:#x}..+{:#x}): populated {:#x} / converted {:#x} are not whole granules within the region",
                r.gpa, r.len, r.populated, r.converted
            )));
        }
    }
    Ok(())
}
