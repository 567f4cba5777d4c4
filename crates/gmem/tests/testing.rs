//! `testing::record_skip` appends to the skip log named by CCPOP_KVM_SKIP_LOG.
//! (Its own test binary: it sets the variable for this process only.)

#[test]
fn record_skip_appends_a_line_per_skip() {
    let path = std::env::temp_dir().join(format!("gmem-skip-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var(gmem::testing::SKIP_LOG_ENV, &path);
    gmem::testing::record_skip("first", "no device");
    gmem::testing::record_skip("second", "permission denied");
    let log = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        log,
        "SKIPPED (needs /dev/kvm): first: no device\n\
         SKIPPED (needs /dev/kvm): second: permission denied\n"
    );
    // An unwritable log path is reported, not a panic.
    std::env::set_var(gmem::testing::SKIP_LOG_ENV, "/nonexistent-dir/log");
    gmem::testing::record_skip("third", "x");
    // require_kvm succeeds here when /dev/kvm exists, and then records nothing.
    if std::path::Path::new("/dev/kvm").exists() {
        std::env::set_var(gmem::testing::SKIP_LOG_ENV, &path);
        assert!(gmem::testing::require_kvm("present").is_some());
        assert!(!path.exists());
    }
}
