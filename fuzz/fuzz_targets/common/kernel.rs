//! What the fake-kernel targets (`fuzz_sev_kernel`, `fuzz_cca_kernel`) share: driving a plan
//! through rounds of fuzzer answers with resumes, then an honest kernel, and the ledger checks.
//! Included with `#[path]` by each target.

use cc_populate::{Backend, Driver, ErrorKind, Plan, Report, RunError, StopCause};
use cc_populate_fuzz::intersects;

/// Entries of `ledger` (`(gpa, bytes)`) that start within `[gpa, gpa+len)`, sorted, must tile
/// a prefix of it: returns the prefix's length.
pub fn prefix(ledger: &[(u64, u64)], gpa: u64, len: u64, what: &str) -> u64 {
    let mut mine: Vec<(u64, u64)> = ledger
        .iter()
        .copied()
        .filter(|(g, _)| *g >= gpa && *g < gpa + len)
        .collect();
    mine.sort_unstable();
    let mut cur = gpa;
    for (g, n) in &mine {
        assert_eq!(*g, cur, "{what}: {g:#x} done, expected {cur:#x}");
        cur += n;
    }
    assert!(cur <= gpa + len, "{what}: done beyond the region");
    cur - gpa
}

/// No two entries of `ledger` overlap.
pub fn assert_disjoint(ledger: &[(u64, u64)], what: &str) {
    for (x, a) in ledger.iter().enumerate() {
        for b in &ledger[x + 1..] {
            assert!(!intersects(a.0, a.1, b.0, b.1), "{what} twice: {a:?} {b:?}");
        }
    }
}

/// Runs `plan` on `backend`, then resumes after each stop: one round per element of `rounds`
/// (handed to `feed` before the run), then a last one with `feed(None)` (the kernel turns
/// honest). `impossible` counts the impossible answers the kernel gave so far: a run that saw
/// one must stop hard (`ErrorKind::Failed`), a run that completes must have seen none. After
/// every run `check` gets the backend and the report. The plan must complete by the end.
pub fn drive<B: Backend, R>(
    plan: &Plan<'_>,
    backend: &mut B,
    rounds: &[R],
    mut feed: impl FnMut(&mut B, Option<&R>),
    impossible: impl Fn(&B) -> u64,
    mut check: impl FnMut(&B, &Report),
) {
    let mut report: Option<Report> = None;
    let mut all: Vec<Option<&R>> = rounds.iter().map(Some).collect();
    all.push(None);
    for round in all {
        feed(backend, round);
        let before = impossible(backend);
        let mut driver = Driver::new(&mut *backend);
        let result = match &report {
            None => driver.run(plan),
            Some(r) => driver.resume(plan, r),
        };
        let after = impossible(backend);
        let r = match result {
            Ok(r) => {
                assert_eq!(after, before, "an impossible answer went unnoticed");
                assert!(r.is_complete());
                r
            }
            Err(RunError::Stopped(r)) => {
                assert!(
                    round.is_some(),
                    "an honest kernel did not complete the plan: {r}"
                );
                if after > before {
                    let stop = r.stop.as_ref().expect("stop");
                    assert!(
                        matches!(&stop.cause, StopCause::Backend(e) if e.kind == ErrorKind::Failed),
                        "an impossible answer must stop the run hard: {stop}"
                    );
                }
                *r
            }
            Err(e) => panic!("unexpected: {e}"),
        };
        check(backend, &r);
        let done = r.is_complete();
        report = Some(r);
        if done {
            break;
        }
    }
    assert!(report.is_some_and(|r| r.is_complete()));
}
