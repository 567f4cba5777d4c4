//! Feature-trimmed builds (issue 25 item 7): the measurement-only build pulls in no KVM crate,
//! and the populate-only build no hashing crate. Asked of `cargo tree` itself.

use std::process::Command;

fn tree(features: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "tdx-backend", "-e", "normal"])
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crates(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn measurement_only_has_no_kvm_crate() {
    let t = tree("measure");
    let c = crates(&t);
    assert!(c.contains(&"cc-hash"), "{t}");
    for kvm in [
        "kvm-ioctls",
        "kvm-bindings",
        "vmm-sys-util",
        "gmem",
        "cc-populate",
    ] {
        assert!(
            !c.contains(&kvm),
            "{kvm} in the measurement-only build:\n{t}"
        );
    }
}

#[test]
fn populate_only_has_no_hashing_crate() {
    let t = tree("kvm");
    let c = crates(&t);
    assert!(
        c.contains(&"kvm-ioctls") && c.contains(&"cc-populate"),
        "{t}"
    );
    for hash in ["cc-hash", "ring", "sha2", "openssl", "aws-lc-rs"] {
        assert!(
            !c.contains(&hash),
            "{hash} in the populate-only build:\n{t}"
        );
    }
}
