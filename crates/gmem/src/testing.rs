//! Test support for crates whose tests need `/dev/kvm`.
//!
//! A test calls [`require_kvm`] first and returns early on `None`. The skip is printed, and
//! recorded in the file named by `CCPOP_KVM_SKIP_LOG` if set, so CI can fail when KVM tests were
//! skipped on a machine that has `/dev/kvm`.

use std::io::Write;

use kvm_ioctls::Kvm;

/// The environment variable naming the skip log.
pub const SKIP_LOG_ENV: &str = "CCPOP_KVM_SKIP_LOG";

/// Opens `/dev/kvm` for the test named `test`.
///
/// On failure prints `SKIPPED (needs /dev/kvm): <test>: <reason>` to stderr, appends the same
/// line to the file named by `CCPOP_KVM_SKIP_LOG` (if set), and returns `None`.
///
/// ```no_run
/// let Some(kvm) = gmem::testing::require_kvm("my_test") else { return };
/// let vm = kvm.create_vm().unwrap();
/// # let _ = vm;
/// ```
pub fn require_kvm(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            record_skip(test, &e.to_string());
            None
        }
    }
}

/// Prints and records a skip of `test` for `reason` (what [`require_kvm`] does on failure).
pub fn record_skip(test: &str, reason: &str) {
    let line = format!("SKIPPED (needs /dev/kvm): {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!(
                "could not append to {SKIP_LOG_ENV}={}: {e}",
                path.to_string_lossy()
            );
        }
    }
}
