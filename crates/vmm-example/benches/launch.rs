//! The worked integration's two populate paths over the same IGVM file, on sev-backend's model
//! of the kernel: cc-populate's driver (one conversion per region, one `LAUNCH_UPDATE` per
//! 2 MiB unit) and Cloud Hypervisor's loop (both per 4 KiB page). Prints the ratios of ioctls
//! and of populate wall time, loop over driver; nothing is asserted (the exact counts are the
//! tests'). The model hashes every page with SHA-384 as the firmware would, so the time ratio
//! is a floor of what per-call overhead costs, not what a real PSP takes. Run with
//! `cargo bench -p vmm-example`.

use std::time::Duration;

use cc_image::IgvmPolicy;
use sev_backend::KernelVersion;
use vmm_example::testing::{igvm_file, sample_file, Kind, Run};
use vmm_example::{LaunchOptions, LaunchReport, ModelVm, PopulatePath, Vmm};

const MIB: u64 = 1 << 20;

/// The best populate time of `runs` launches of `file` by `path`, with the last report.
fn best(file: &[u8], path: PopulatePath, runs: usize) -> (Duration, LaunchReport) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let mut vmm = Vmm::new(ModelVm::new(KernelVersion::default()), &[(0, 128 * MIB)])
            .expect("guest memory");
        let opts = LaunchOptions {
            policy: IgvmPolicy::CLOUD_HYPERVISOR,
            vcpus: 1,
            path,
        };
        let report = vmm.launch_igvm(file, &opts).expect("the launch");
        assert!(report.digest_matches(), "{report}");
        best = best.min(report.populate_time);
        last = Some(report);
    }
    (best, last.expect("at least one run"))
}

fn compare(name: &str, file: &[u8]) {
    let (td, driver) = best(file, PopulatePath::Driver, 5);
    let (tp, pages) = best(file, PopulatePath::PagePerCall, 5);
    println!("{name}: {} pages", driver.pages);
    println!(
        "  driver:         {:>6} ioctls ({:>5} to populate), populate {:>9.3} ms",
        driver.ioctls.total(),
        driver.ioctls.populate(),
        td.as_secs_f64() * 1e3
    );
    println!(
        "  page per call:  {:>6} ioctls ({:>5} to populate), populate {:>9.3} ms",
        pages.ioctls.total(),
        pages.ioctls.populate(),
        tp.as_secs_f64() * 1e3
    );
    println!(
        "  page per call / driver: {:.1}x the ioctls ({:.1}x to populate), {:.2}x the wall time",
        pages.ioctls.total() as f64 / driver.ioctls.total() as f64,
        pages.ioctls.populate() as f64 / driver.ioctls.populate() as f64,
        tp.as_secs_f64() / td.as_secs_f64()
    );
}

fn main() {
    compare(
        "the tests' file (firmware, kernel, bss, secrets, CPUID, ...)",
        &sample_file(),
    );
    // A 64 MiB kernel-and-initrd image: 2 MiB aligned, plus 8 MiB of bss as empty pages.
    let big = [
        Run {
            gpa: 0x20_0000,
            pages: 16384,
            kind: Kind::Data,
        },
        Run {
            gpa: 0x440_0000,
            pages: 2048,
            kind: Kind::Empty,
        },
    ];
    compare("a 72 MiB image", &igvm_file(&big, 3, false));
}
