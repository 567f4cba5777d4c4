//! What the fake-kernel targets (`fuzz_tdx_kernel`, `fuzz_sev_kernel`, `fuzz_cca_kernel`)
//! share: driving a plan through rounds of fuzzer answers with resumes, then an honest kernel,
//! stopping for good where the kernel cannot recover, and the ledger checks.
//! Included with `#[path]` by each target.

use std::collections::BTreeSet;

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

/// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` over `[gpa, gpa+len)` as Linux 6.18.2 does it
/// (`virt/kvm/kvm_main.c`: `kvm_vm_ioctl_set_mem_attributes`, `kvm_vm_set_mem_attributes`),
/// on `private` (the private pages' addresses): the range must not be one the kernel refuses
/// with `EINVAL` (misaligned, empty, wrapping); nothing to do when it is private already;
/// else `ENOMEM` from `xa_reserve`, before any page changes, when `enomem()` says so.
pub fn set_private(
    private: &mut BTreeSet<u64>,
    gpa: u64,
    len: u64,
    enomem: impl FnOnce() -> bool,
) -> Result<(), i32> {
    const PAGE: u64 = 4096;
    assert!(
        gpa.is_multiple_of(PAGE)
            && len.is_multiple_of(PAGE)
            && len > 0
            && gpa.checked_add(len).is_some(),
        "KVM_SET_MEMORY_ATTRIBUTES [{gpa:#x}..+{len:#x}) is EINVAL"
    );
    let pages = (0..len / PAGE).map(|i| gpa + i * PAGE);
    if pages.clone().all(|g| private.contains(&g)) {
        return Ok(());
    }
    if enomem() {
        return Err(libc::ENOMEM);
    }
    private.extend(pages);
    Ok(())
}

/// No two entries of `ledger` overlap.
pub fn assert_disjoint(ledger: &[(u64, u64)], what: &str) {
    for (x, a) in ledger.iter().enumerate() {
        for b in &ledger[x + 1..] {
            assert!(!intersects(a.0, a.1, b.0, b.1), "{what} twice: {a:?} {b:?}");
        }
    }
}

/// How [`drive`] ended.
pub enum End {
    /// The plan completed.
    Complete,
    /// A run stopped on an error the backend marked unrecoverable (the kernel had reached a
    /// state it cannot leave), and a resume was refused without a backend call.
    Unrecoverable,
    /// A run stopped after the kernel could no longer populate (see `drive`'s `dead`).
    Dead,
}

/// Runs `plan` on `backend`, then resumes after each stop: one round per element of `rounds`
/// (handed to `feed` before the run), then a last one with `feed(None)` (the kernel turns
/// honest). `impossible` counts the impossible answers the kernel gave so far: a run that saw
/// one must stop hard (`ErrorKind::Failed`), a run that completes must have seen none.
/// `fatal` says whether the kernel has given an answer it cannot recover from (the fake
/// kernel's own judgement, from the kernel code it follows): a run stops with an error the
/// backend marked unrecoverable exactly when it has, and then a resume must be refused
/// (`RunError::Unrecoverable`, the same report; the fake kernels refuse any ioctl after a
/// fatal answer, so a resume that reached the kernel would fail there). After every run
/// `check` gets the backend and the report. Without a fatal answer the plan must complete
/// by the end: the completion check holds only where the kernel allows recovery. `dead` says
/// whether the kernel can no longer populate anything though the backend's error is not marked
/// unrecoverable (a VM killed by `KVM_BUG`, which answers every ioctl with an errno the backend
/// cannot tell from a passing failure; a CCA realm already active): a run that stops then ends
/// the drive (after `check`) without the completion check.
#[allow(clippy::too_many_arguments)]
pub fn drive<B: Backend, R>(
    plan: &Plan<'_>,
    backend: &mut B,
    rounds: &[R],
    mut feed: impl FnMut(&mut B, Option<&R>),
    impossible: impl Fn(&B) -> u64,
    fatal: impl Fn(&B) -> bool,
    dead: impl Fn(&B) -> bool,
    mut check: impl FnMut(&mut B, &Report),
) -> End {
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
                assert!(!fatal(backend), "a run completed after a fatal answer");
                assert!(!dead(backend), "a run completed on a dead VM");
                assert!(r.is_complete());
                check(backend, &r);
                return End::Complete;
            }
            Err(RunError::Stopped(r)) => *r,
            Err(e) => panic!("unexpected: {e}"),
        };
        let stop = r.stop.as_ref().expect("a stopped run names its stop");
        let unrecoverable = matches!(&stop.cause, StopCause::Backend(e) if e.unrecoverable);
        assert_eq!(
            unrecoverable,
            fatal(backend),
            "the stop is unrecoverable exactly when the kernel cannot recover: {stop}"
        );
        if after > before {
            assert!(
                matches!(&stop.cause, StopCause::Backend(e) if e.kind == ErrorKind::Failed),
                "an impossible answer must stop the run hard: {stop}"
            );
        }
        check(backend, &r);
        if unrecoverable {
            match Driver::new(&mut *backend).resume(plan, &r) {
                Err(RunError::Unrecoverable(refused)) => {
                    assert_eq!(*refused, r, "a refused resume gives the report back")
                }
                other => panic!("a resume after an unrecoverable stop was not refused: {other:?}"),
            }
            return End::Unrecoverable;
        }
        if dead(backend) {
            return End::Dead;
        }
        assert!(
            round.is_some(),
            "an honest kernel did not complete the plan, and nothing was unrecoverable: {r}"
        );
        report = Some(r);
    }
    unreachable!("the last round completes, stops unrecoverable or fails its assertion")
}
