//! Feature-trimmed builds (issue 25): the measurement-only build (`--no-default-features
//! --features measure`) pulls in no KVM crate, and the populate-only build (`--features kvm`) no
//! hashing crate. Asked of `cargo tree` itself, offline (the lock file has everything).

use std::process::Command;

/// The crates `cargo tree -e normal` lists for cca-backend built with only `features`.
fn crates(features: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "cca-backend", "-e", "normal"])
        .args(["--no-default-features", "--features", features])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `c` holds every crate of `want` and none of `never`.
fn check(build: &str, c: &[String], want: &[&str], never: &[&str]) {
    for w in want {
        assert!(
            c.iter().any(|n| n == w),
            "{w} missing from the {build} build: {c:?}"
        );
    }
    for n in never {
        assert!(!c.iter().any(|x| x == n), "{n} in the {build} build: {c:?}");
    }
}

#[test]
fn measurement_only_has_no_kvm_crate() {
    let kvm = [
        "kvm-ioctls",
        "kvm-bindings",
        "vmm-sys-util",
        "gmem",
        "cc-populate",
    ];
    check(
        "measurement-only",
        &crates("measure"),
        &["sha2", "cc-hash"],
        &kvm,
    );
}

#[test]
fn populate_only_has_no_hashing_crate() {
    let hash = ["cc-hash", "sha2", "ring", "openssl", "aws-lc-rs"];
    check(
        "populate-only",
        &crates("kvm"),
        &["kvm-ioctls", "cc-populate"],
        &hash,
    );
}
