//! The harness of `gmem::testing`: which need a host lacks, the skip line, the skip log, and
//! what libtest reports for a skipped test (run as a child process of this test binary).
//! (Its own test binary: it sets CCPOP_KVM_SKIP_LOG for this process only.)

use gmem::testing::{self, Host, Need, Test};
use gmem::{Capabilities, GmemFlags};

/// A host that offers `default` on a default VM and, where `protected` is given, has the
/// software-protected VM type with those capabilities.
fn host(default: Capabilities, protected: Option<Capabilities>) -> Host {
    Host {
        release: "9.9.9-test".into(),
        kvm_error: None,
        default_vm: Some(default),
        protected_vm: protected,
    }
}

/// What the project's 6.18.44-fc machines answered (`kvm-on-this-machine.md`): no guest_memfd.
fn no_gmem() -> Capabilities {
    Capabilities {
        vm_types: 1,
        user_memory2: true,
        ..Capabilities::default()
    }
}

/// What a 7.3 lab kernel answers on a default VM and on a software-protected one
/// (`kernel-lab.md`).
fn lab() -> (Capabilities, Capabilities) {
    let default = Capabilities {
        guest_memfd: true,
        guest_memfd_flags: GmemFlags::MMAP | GmemFlags::INIT_SHARED,
        vm_types: 0b11,
        user_memory2: true,
        pre_fault_memory: true,
        ..Capabilities::default()
    };
    let protected = Capabilities {
        guest_memfd_flags: GmemFlags::MMAP,
        memory_attributes: 8,
        ..default
    };
    (default, protected)
}

fn a_host_without_guest_memfd_lacks_each_gmem_need_and_says_why() {
    let h = host(no_gmem(), None);
    assert_eq!(h.lacks(&Need::Kvm), None);
    assert_eq!(h.lacks(&Need::UserMemory2), None);
    assert_eq!(h.lacks(&Need::NoSharedGuestMemfd), None);
    assert_eq!(
        h.lacks(&Need::GuestMemfd).as_deref(),
        Some("KVM_CAP_GUEST_MEMFD is 0 on a default VM")
    );
    assert_eq!(
        h.lacks(&Need::SharedGuestMemfd).as_deref(),
        Some("KVM_CAP_GUEST_MEMFD is 0, KVM_CAP_GUEST_MEMFD_FLAGS 0x0 on a default VM")
    );
    for need in [
        Need::SwProtectedVm,
        Need::PrivateAttributes,
        Need::PreFaultMemory,
    ] {
        assert_eq!(
            h.lacks(&need).as_deref(),
            Some("KVM_CAP_VM_TYPES is 0x1: no software-protected VM type"),
            "{need:?}"
        );
    }
}

fn the_lab_kernel_offers_every_kvm_need() {
    let (default, protected) = lab();
    let h = host(default, Some(protected));
    assert_eq!(
        h.lacks(&Need::NoSharedGuestMemfd).as_deref(),
        Some("KVM_CAP_GUEST_MEMFD_FLAGS is 0x3 on a default VM: the kernel has it")
    );
    for need in [
        Need::Kvm,
        Need::GuestMemfd,
        Need::SharedGuestMemfd,
        Need::UserMemory2,
        Need::SwProtectedVm,
        Need::PrivateAttributes,
        Need::PreFaultMemory,
    ] {
        assert_eq!(h.lacks(&need), None, "{need:?}");
    }
}

fn a_6_12_kernel_has_private_memory_but_no_shared_view() {
    // 6.12: guest_memfd without flags, private memory on software-protected VMs.
    let (mut default, mut protected) = lab();
    default.guest_memfd_flags = GmemFlags::empty();
    protected.guest_memfd_flags = GmemFlags::empty();
    let h = host(default, Some(protected));
    assert_eq!(h.lacks(&Need::GuestMemfd), None);
    assert_eq!(h.lacks(&Need::PrivateAttributes), None);
    assert_eq!(
        h.lacks(&Need::SharedGuestMemfd).as_deref(),
        Some("KVM_CAP_GUEST_MEMFD is 1, KVM_CAP_GUEST_MEMFD_FLAGS 0x0 on a default VM")
    );
    // Attributes without PRIVATE, or no pre-fault, are each named.
    protected.memory_attributes = 0;
    protected.pre_fault_memory = false;
    let h = host(default, Some(protected));
    assert_eq!(
        h.lacks(&Need::PrivateAttributes).as_deref(),
        Some("KVM_CAP_MEMORY_ATTRIBUTES is 0x0 on a software-protected VM")
    );
    assert_eq!(
        h.lacks(&Need::PreFaultMemory).as_deref(),
        Some("KVM_CAP_PRE_FAULT_MEMORY is 0 on a software-protected VM")
    );
}

fn without_kvm_every_kvm_need_names_the_open_error_but_files_are_checked() {
    let h = Host {
        release: "9.9.9-test".into(),
        kvm_error: Some("/dev/kvm: No such file or directory (os error 2)".into()),
        default_vm: None,
        protected_vm: None,
    };
    assert_eq!(
        h.lacks(&Need::GuestMemfd).as_deref(),
        Some("/dev/kvm: No such file or directory (os error 2)")
    );
    // (The root exists wherever the test runs, also in the lab's initramfs.)
    let present = Need::File {
        path: "/",
        from: "the root file system",
    };
    assert_eq!(h.lacks(&present), None);
    let absent = Need::File {
        path: "/nonexistent/ccpop-test-file",
        from: "nowhere",
    };
    assert_eq!(
        h.lacks(&absent).as_deref(),
        Some("/nonexistent/ccpop-test-file is missing (it comes from nowhere)")
    );
}

fn root() -> std::path::PathBuf {
    "/".into()
}

fn nowhere() -> std::path::PathBuf {
    std::env::temp_dir().join("ccpop-no-such-dir/fixture.bin")
}

fn usable() -> Result<(), String> {
    Ok(())
}

fn unusable() -> Result<(), String> {
    Err("python3 -c 'import nothing' failed".into())
}

fn runtime_paths_and_tools_are_checked_named_and_carry_their_id() {
    let h = Host {
        release: "9.9.9-test".into(),
        kvm_error: Some("/dev/kvm: No such file or directory (os error 2)".into()),
        default_vm: None,
        protected_vm: None,
    };
    // A path computed when the test runs: checked like a file, its id the computed path.
    let present = Need::FileAt {
        path: root,
        from: "the root file system",
    };
    assert_eq!(h.lacks(&present), None);
    assert_eq!(present.id(), "file:/");
    let absent = Need::FileAt {
        path: nowhere,
        from: "the fixtures folder",
    };
    let want = nowhere().display().to_string();
    assert_eq!(absent.id(), format!("file:{want}"));
    assert_eq!(
        h.lacks(&absent),
        Some(format!(
            "{want} is missing (it comes from the fixtures folder)"
        ))
    );
    assert_eq!(absent.to_string(), format!("{want} (the fixtures folder)"));
    // A tool: its own check decides, the id is the test's, the reason names what installs it.
    let tool = |check| Need::Tool {
        id: "python:nothing",
        from: "pip install nothing",
        check,
    };
    assert_eq!(h.lacks(&tool(usable)), None);
    assert_eq!(
        h.lacks(&tool(unusable)).as_deref(),
        Some("python3 -c 'import nothing' failed")
    );
    assert_eq!(tool(unusable).id(), "python:nothing");
    assert_eq!(
        tool(unusable).to_string(),
        "python:nothing (pip install nothing)"
    );
    let t = Test::new("peer", vec![tool(usable), absent, tool(unusable)], unused);
    assert_eq!(
        testing::skip_of(&t, &h),
        Some(format!(
            "SKIPPED [file:{want}] peer: needs {want} (the fixtures folder): {want} is missing \
             (it comes from the fixtures folder) (kernel 9.9.9-test)"
        ))
    );
}

fn unused() {}

fn the_skip_line_names_the_need_test_reason_and_kernel() {
    let h = host(no_gmem(), None);
    let t = Test::new(
        "shared_view",
        vec![Need::Kvm, Need::SharedGuestMemfd, Need::SwProtectedVm],
        unused,
    );
    // The first need the host lacks is the one named.
    assert_eq!(
        testing::skip_of(&t, &h).as_deref(),
        Some(
            "SKIPPED [guest_memfd_shared] shared_view: needs guest_memfd with MMAP|INIT_SHARED \
             on a default VM: KVM_CAP_GUEST_MEMFD is 0, KVM_CAP_GUEST_MEMFD_FLAGS 0x0 on a \
             default VM (kernel 9.9.9-test)"
        )
    );
    let (default, protected) = lab();
    assert_eq!(testing::skip_of(&t, &host(default, Some(protected))), None);
    let m = gmem::kvm_test!(unused, Need::GuestMemfd);
    assert_eq!(m.name(), "unused");
    assert_eq!(m.needs(), &[Need::GuestMemfd]);
}

fn record_skip_line_appends_a_line_per_skip() {
    let path = std::env::temp_dir().join(format!("gmem-skip-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var(testing::SKIP_LOG_ENV, &path);
    testing::record_skip_line("SKIPPED [kvm] first: a");
    testing::record_skip_line("SKIPPED [guest_memfd] second: b");
    let log = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        log,
        "SKIPPED [kvm] first: a\nSKIPPED [guest_memfd] second: b\n"
    );
    // An unwritable log path is reported, not a panic.
    std::env::set_var(testing::SKIP_LOG_ENV, "/nonexistent-dir/log");
    testing::record_skip_line("SKIPPED [kvm] third: c");
}

/// The harness run for real, as a child process: `CCPOP_HARNESS_SELFTEST` makes this binary
/// run a harness with a test that needs nothing and one that needs a file that does not exist.
fn a_skipped_test_is_reported_ignored_and_logged_never_passed() {
    let log = std::env::temp_dir().join(format!("gmem-harness-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = child().env(testing::SKIP_LOG_ENV, &log).output().unwrap();
    let stdout = squeeze(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("test runs ... ok"), "{stdout}");
    assert!(
        stdout.contains("test needs_a_missing_file ... ignored"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed; 0 failed; 1 ignored"), "{stdout}");
    let line = "SKIPPED [file:/nonexistent/ccpop-harness-selftest] needs_a_missing_file: needs \
                /nonexistent/ccpop-harness-selftest (no package): /nonexistent/ccpop-harness-\
                selftest is missing (it comes from no package)";
    assert!(stderr.contains(line), "{stderr}");
    let logged = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.starts_with(line), "{logged}");

    // Forced to run, the skipped test fails with its reason: it cannot pass.
    let out = child().arg("--include-ignored").output().unwrap();
    let stdout = squeeze(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed; 1 failed; 0 ignored"), "{stdout}");
    assert!(
        stdout.contains("is missing (it comes from no package)"),
        "{stdout}"
    );

    // A listing probes but records no skip.
    let log2 = log.with_extension("list");
    let out = child()
        .arg("--list")
        .env(testing::SKIP_LOG_ENV, &log2)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("needs_a_missing_file: test"));
    assert!(!log2.exists());
}

/// libtest's output with runs of spaces made one (it pads test names to a column).
fn squeeze(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let mut s = String::new();
    for line in text.lines() {
        s.push_str(
            &line
                .split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        );
        s.push('\n');
    }
    s
}

fn child() -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.env("CCPOP_HARNESS_SELFTEST", "1")
        .env_remove(testing::SKIP_LOG_ENV);
    c
}

fn main() -> std::process::ExitCode {
    if std::env::var_os("CCPOP_HARNESS_SELFTEST").is_some() {
        fn runs() {}
        return testing::run(vec![
            gmem::kvm_test!(runs),
            Test::new(
                "needs_a_missing_file",
                vec![Need::File {
                    path: "/nonexistent/ccpop-harness-selftest",
                    from: "no package",
                }],
                runs,
            ),
        ]);
    }
    testing::run(vec![
        gmem::kvm_test!(a_host_without_guest_memfd_lacks_each_gmem_need_and_says_why),
        gmem::kvm_test!(the_lab_kernel_offers_every_kvm_need),
        gmem::kvm_test!(a_6_12_kernel_has_private_memory_but_no_shared_view),
        gmem::kvm_test!(without_kvm_every_kvm_need_names_the_open_error_but_files_are_checked),
        gmem::kvm_test!(runtime_paths_and_tools_are_checked_named_and_carry_their_id),
        gmem::kvm_test!(the_skip_line_names_the_need_test_reason_and_kernel),
        gmem::kvm_test!(record_skip_line_appends_a_line_per_skip),
        gmem::kvm_test!(a_skipped_test_is_reported_ignored_and_logged_never_passed),
    ])
}
