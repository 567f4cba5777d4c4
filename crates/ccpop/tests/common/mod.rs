//! Running the built `ccpop` binary and reading what it printed, for the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `ccpop` with `args`.
pub fn ccpop<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ccpop"))
        .args(args)
        .output()
        .expect("run ccpop")
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lower-case hex, written out here rather than taken from the crates under test.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `s` is exactly `digits` lower-case hex digits.
pub fn is_lower_hex(s: &str, digits: usize) -> bool {
    s.len() == digits
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The last line of a successful run's stdout.
pub fn last_line(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    stdout.lines().last().unwrap_or_default().to_string()
}

/// A failed run's one-line error: exit 2, one line on stderr, no panic, nothing on stdout.
pub fn one_line_error(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    stderr.trim_end().to_string()
}

/// A folder of its own for this test process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ccpop-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch folder");
    d
}
