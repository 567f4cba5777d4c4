//! `ccpop demo` on this machine's real KVM, run as the built binary.

mod common;

use common::{ccpop, text};
use gmem::testing::Need;

fn demo_populates_64_mib_and_the_guest_verifies_it() {
    let out = ccpop(&["demo"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last(), Some("verified"), "{stdout}");
    // The plan summary: seven regions of at least 64 MiB, the roles, the calls.
    let plan = stdout
        .lines()
        .find(|l| l.starts_with("plan (plain): 7 regions"))
        .unwrap_or_else(|| panic!("no plan line: {stdout}"));
    let bytes: u64 = plan
        .split('(')
        .nth(2)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {plan}"));
    assert!(bytes >= 64 << 20, "{plan}");
    assert!(stdout.contains("by role: measured"), "{stdout}");
    // The report names bytes, calls, retries, time and throughput.
    let report = stdout
        .lines()
        .find(|l| l.starts_with("report: 7/7 regions populated"))
        .unwrap_or_else(|| panic!("no report: {stdout}"));
    assert!(report.contains(&format!("({bytes} bytes)")), "{report}");
    assert!(report.contains("calls, 0 retries"), "{report}");
    assert!(stdout.contains("MiB/s"), "{stdout}");
    // Every region and both unpopulated ranges (page 0, the gap after the boot tables) were
    // checked by the guest, none mismatched: every byte of both memslots.
    assert_eq!(stdout.matches(" ok\n").count(), 9, "{stdout}");
    assert_eq!(stdout.matches(" unpopulated ").count(), 2, "{stdout}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    let memslots: u64 = stdout
        .lines()
        .next()
        .and_then(|l| l.split(" of ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|mib| mib << 20)
        .unwrap_or_else(|| panic!("no guest memory size: {stdout}"));
    let check = stdout
        .lines()
        .find(|l| l.starts_with("guest check: "))
        .unwrap_or_else(|| panic!("no check line: {stdout}"));
    assert!(
        check.contains(&format!(
            "checksummed {} MiB (every byte of both memslots) in 9 ranges",
            memslots >> 20
        )),
        "{check}"
    );
    assert!(
        stdout.contains("a second pass over the same ranges, every page already mapped: "),
        "{stdout}"
    );
}

fn demo_with_a_flipped_byte_exits_1_without_verified() {
    let out = ccpop(&["demo", "--size-mib", "16", "--corrupt"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.lines().any(|l| l == "verified"), "{stdout}");
    // Exactly the kernel region mismatches; the message is one line naming it.
    assert_eq!(stdout.matches("MISMATCH").count(), 1, "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ccpop: verification failed: kernel [0x200000.."),
        "{stderr}"
    );
}

fn demo_without_kvm_says_so_in_one_line() {
    let out = ccpop(&["demo", "--kvm-device", "/nonexistent/kvm"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "ccpop: /nonexistent/kvm cannot be opened (No such file or directory (os error 2)): `ccpop demo` needs KVM on this machine"
    );
    assert!(out.stdout.is_empty());
}

fn demo_sizes_out_of_range_are_refused() {
    for size in ["8", "5000"] {
        let out = ccpop(&["demo", "--size-mib", size]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "ccpop: --size-mib {size}: must be between 16 and 4096"
            )),
            "{stderr}"
        );
    }
}

/// A populate that writes a page past the end of the boot tables, reporting success, is caught
/// by the check of the unpopulated gap after them, and only there; the same demo without the
/// overrun verifies.
fn an_overrun_into_an_unpopulated_gap_is_caught() {
    let out = ccpop(&["demo", "--size-mib", "16", "--overrun", "boot tables"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.trim_end();
    assert!(
        line.starts_with(
            "ccpop: verification failed: unpopulated [0x10000..+0x1f0000): guest checksum"
        ),
        "{line}"
    );
    assert!(!line.contains(';'), "one mismatch only: {line}");
    assert!(!text(&out.stdout).contains("verified"));
    let out = ccpop(&["demo", "--size-mib", "16"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().last(), Some("verified"));
}

fn an_overrun_of_an_unknown_region_is_a_usage_error() {
    let out = ccpop(&["demo", "--size-mib", "16", "--overrun", "nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "ccpop: --overrun nothing: no demo region of that name"
    );
}

/// On a kernel without guest_memfd's shared view (the 6.18.44-fc machines, 6.12), the demo names
/// what it needs, what the kernel answered, and where to run it instead, in one line.
fn demo_on_a_kernel_without_the_shared_view_says_what_is_missing() {
    let out = ccpop(&["demo", "--size-mib", "16"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        stderr.starts_with(&format!(
            "ccpop: `ccpop demo` needs guest_memfd with MMAP|INIT_SHARED on a default VM (Linux \
             6.18 or later), which this kernel ({}) does not offer: KVM_CAP_GUEST_MEMFD is ",
            release.trim()
        )),
        "{stderr}"
    );
    assert!(
        stderr.trim_end().ends_with(
            "; run it in the KVM lab instead: bash lab/run --kernel 7.3 (lab/README.md)"
        ),
        "{stderr}"
    );
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            demo_populates_64_mib_and_the_guest_verifies_it,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(
            demo_with_a_flipped_byte_exits_1_without_verified,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(demo_without_kvm_says_so_in_one_line),
        gmem::kvm_test!(demo_sizes_out_of_range_are_refused),
        gmem::kvm_test!(
            an_overrun_into_an_unpopulated_gap_is_caught,
            Need::SharedGuestMemfd
        ),
        gmem::kvm_test!(an_overrun_of_an_unknown_region_is_a_usage_error),
        gmem::kvm_test!(
            demo_on_a_kernel_without_the_shared_view_says_what_is_missing,
            Need::Kvm,
            Need::NoSharedGuestMemfd
        ),
    ])
}
