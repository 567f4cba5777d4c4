//! The worked integration against sev-backend's model of the kernel's SEV-SNP commands: the
//! VMM launches an IGVM file built here with the `igvm` crate, through the driver and through
//! Cloud Hypervisor's page-per-call loop. The expected digests come from cc-image's offline
//! measurement of the same file and the model's own (its `PAGE_INFO` code and `sha2`); the
//! expected ioctl counts from the file's runs of pages, counted here.

use cc_image::{load_igvm_with, EmptyPages, IgvmPolicy, Platform};
use sev_backend::{KernelVersion, KNOWN_KERNELS};
use vm_memory::{Bytes, GuestAddress};
use vmm_example::testing::{igvm_file, page_bytes, sample_file, Kind, Run, SAMPLE};
use vmm_example::{
    IoctlCounts, KvmSnp, LaunchOptions, LaunchReport, ModelVm, PopulatePath, SnpHypervisor, Vmm,
};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
/// `KVM_SEV_SNP_PAGE_TYPE_ZERO` (include/uapi/linux/kvm.h).
const TYPE_ZERO: u8 = 3;

fn model_vmm(version: KernelVersion) -> Vmm<ModelVm> {
    Vmm::new(ModelVm::new(version), &[(0, 16 * MIB)]).unwrap()
}

fn launch(file: &[u8], empty: EmptyPages, path: PopulatePath) -> (Vmm<ModelVm>, LaunchReport) {
    let mut vmm = model_vmm(KernelVersion::default());
    let opts = LaunchOptions {
        policy: IgvmPolicy::KVM.with_empty_pages(empty),
        vcpus: 2,
        path,
    };
    let report = vmm.launch_igvm(file, &opts).unwrap();
    (vmm, report)
}

/// The ioctls each path makes for `runs`, counted from the runs: every run is apart from the
/// others, so it is one region of the image. The driver converts each region with one
/// `KVM_SET_MEMORY_ATTRIBUTES` and populates it with one `LAUNCH_UPDATE` per 2 MiB unit it
/// touches; the page-per-call loop makes both per page. Both issue `KVM_SEV_INIT2`,
/// `LAUNCH_START` and `LAUNCH_FINISH` once.
fn expected(runs: &[Run], path: PopulatePath) -> IoctlCounts {
    let once = IoctlCounts {
        init2: 1,
        launch_start: 1,
        launch_finish: 1,
        ..Default::default()
    };
    match path {
        PopulatePath::Driver => IoctlCounts {
            set_memory_attributes: runs.len() as u64,
            launch_update: runs
                .iter()
                .map(|r| {
                    let last = r.gpa + r.pages * PAGE - 1;
                    last / (2 * MIB) - r.gpa / (2 * MIB) + 1
                })
                .sum(),
            ..once
        },
        PopulatePath::PagePerCall => {
            let pages: u64 = runs.iter().map(|r| r.pages).sum();
            IoctlCounts {
                set_memory_attributes: pages,
                launch_update: pages,
                ..once
            }
        }
    }
}

#[test]
fn the_digest_equals_the_offline_measurement_under_each_policy_and_path() {
    let file = sample_file();
    let mut digests = Vec::new();
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        // What a verifier computes from the file alone.
        let offline = load_igvm_with(
            &file,
            Platform::Snp,
            IgvmPolicy::KVM.with_empty_pages(empty),
        )
        .unwrap()
        .measure()
        .unwrap();
        for path in [PopulatePath::Driver, PopulatePath::PagePerCall] {
            let (vmm, report) = launch(&file, empty, path);
            let model = vmm.hypervisor().model();
            assert_eq!(
                model.launch_digest().to_vec(),
                offline,
                "{empty:?} {path:?}"
            );
            assert_eq!(report.digest, Some(model.launch_digest()));
            assert_eq!(report.expected, offline);
            assert!(report.digest_matches());
            // Nothing the kernel would refuse or warn about, every page populated once.
            assert!(model.twice.is_empty() && model.not_private.is_empty());
            assert!(model.warnings.is_empty() && model.violations.is_empty());
            assert_eq!(model.ledger.len() as u64, 1059);
            // ZERO pages exactly at the empty runs, and only under the ZERO-page policy.
            let zero: Vec<u64> = model
                .ledger
                .iter()
                .filter(|(_, t, _)| *t == TYPE_ZERO)
                .map(|(gpa, _, _)| *gpa)
                .collect();
            let empty_pages: Vec<u64> = SAMPLE
                .iter()
                .filter(|r| r.kind == Kind::Empty)
                .flat_map(|r| (0..r.pages).map(move |k| r.gpa + k * PAGE))
                .collect();
            match empty {
                EmptyPages::NormalZeros => assert!(zero.is_empty()),
                EmptyPages::ZeroPage => assert_eq!(zero, empty_pages),
            }
            digests.push(offline.clone());
        }
    }
    // The policies differ (at the empty pages), the paths do not.
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[2], digests[3]);
    assert_ne!(digests[0], digests[2]);
}

#[test]
fn the_driver_makes_the_ioctls_the_plan_implies_far_fewer_than_page_per_call() {
    let file = sample_file();
    let (dvmm, driver) = launch(&file, EmptyPages::ZeroPage, PopulatePath::Driver);
    let (pvmm, pages) = launch(&file, EmptyPages::ZeroPage, PopulatePath::PagePerCall);
    assert_eq!(driver.ioctls, expected(&SAMPLE, PopulatePath::Driver));
    assert_eq!(pages.ioctls, expected(&SAMPLE, PopulatePath::PagePerCall));
    // Written out for this file: 8 regions; the kernel's 800 pages touch three 2 MiB units.
    assert_eq!(
        (
            driver.ioctls.set_memory_attributes,
            driver.ioctls.launch_update
        ),
        (8, 10)
    );
    assert_eq!(pages.ioctls.populate(), 2 * 1059);
    assert_eq!((driver.pages, pages.pages), (1059, 1059));
    // The model's own record of the commands it received agrees with the VMM's counts.
    for (vmm, report) in [(&dvmm, &driver), (&pvmm, &pages)] {
        let c = report.ioctls;
        assert_eq!(
            vmm.hypervisor().model().calls.len() as u64,
            c.init2 + c.launch_start + c.launch_update + c.launch_finish
        );
    }
    assert!(driver.ioctls.total() * 100 < pages.ioctls.total());
}

#[test]
fn counts_follow_the_file_for_other_layouts() {
    // A 4 MiB run aligned (two units), one crossing a boundary, single pages, no ID block.
    let runs = [
        Run {
            gpa: 0x40_0000,
            pages: 1024,
            kind: Kind::Data,
        },
        Run {
            gpa: 0x1f_f000,
            pages: 3,
            kind: Kind::Unmeasured,
        },
        Run {
            gpa: 0x10_0000,
            pages: 1,
            kind: Kind::Empty,
        },
        Run {
            gpa: 0x12_0000,
            pages: 1,
            kind: Kind::Cpuid,
        },
        Run {
            gpa: 0x90_0000,
            pages: 513,
            kind: Kind::Empty,
        },
    ];
    let file = igvm_file(&runs, 7, false);
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        for path in [PopulatePath::Driver, PopulatePath::PagePerCall] {
            let (_, report) = launch(&file, empty, path);
            assert_eq!(report.ioctls, expected(&runs, path), "{empty:?} {path:?}");
            assert!(report.digest_matches(), "{empty:?} {path:?}");
            assert!(!report.id_block);
        }
    }
}

#[test]
fn the_launch_follows_each_known_kernels_rules() {
    let file = sample_file();
    for version in KNOWN_KERNELS {
        for path in [PopulatePath::Driver, PopulatePath::PagePerCall] {
            let mut vmm = model_vmm(version);
            let report = vmm
                .launch_igvm(
                    &file,
                    &LaunchOptions {
                        path,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{version} {path:?}: {e}"));
            assert!(report.digest_matches(), "{version} {path:?}");
            let model = vmm.hypervisor().model();
            assert!(model.warnings.is_empty(), "{version}: {:?}", model.warnings);
        }
    }
}

#[test]
fn the_file_id_block_goes_to_launch_finish() {
    let (vmm, report) = launch(&sample_file(), EmptyPages::ZeroPage, PopulatePath::Driver);
    assert!(report.id_block);
    let finish = vmm.hypervisor().model().calls.last().unwrap();
    // struct kvm_sev_snp_launch_finish: id_block_uaddr @0, id_auth_uaddr @8, id_block_en @16.
    assert_ne!(finish.params[..8], [0; 8]);
    assert_ne!(finish.params[8..16], [0; 8]);
    assert_eq!(finish.params[16], 1);
}

/// Nothing of the VMM's was handed over: after the launch its guest memory, memslots,
/// hypervisor layer and vCPUs are all still its own and usable.
#[test]
fn the_vmm_keeps_everything_it_owns() {
    let (mut vmm, _) = launch(&sample_file(), EmptyPages::ZeroPage, PopulatePath::Driver);
    // The shared pages the image was loaded into are the VMM's (devices read and write them).
    let kernel = SAMPLE[1].gpa;
    let mut page = vec![0u8; PAGE as usize];
    vmm.memory()
        .read_slice(&mut page, GuestAddress(kernel))
        .unwrap();
    assert_eq!(page, page_bytes(kernel, 1));
    vmm.memory()
        .write_slice(b"virtio", GuestAddress(0x1000))
        .unwrap();
    assert_eq!(vmm.memslots().len(), 1);
    // The VM (here the model standing in for it) is the VMM's: it can add a memslot and a vCPU.
    assert_eq!(vmm.hypervisor().vcpus(), [0, 1]);
    vmm.hypervisor_mut()
        .add_memslot(1, 1 << 32, 2 * MIB, 16 * MIB, 0)
        .unwrap();
    vmm.hypervisor_mut().create_vcpu(2).unwrap();
    assert_eq!(vmm.hypervisor().vcpu_count(), 3);
}

/// The API's shape on real KVM, checked by the compiler: the VMM's VM object holds its VM fd,
/// guest_memfd and vCPUs by value, lends them for a call, and can use every one afterwards;
/// and it can be shared between threads.
#[test]
fn the_kvm_layer_lends_and_keeps() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Vmm<KvmSnp>>();
    send_sync::<Vmm<ModelVm>>();
    #[allow(dead_code)]
    fn after_a_launch(vmm: &mut Vmm<KvmSnp>, file: &[u8]) -> Result<(), vmm_example::Error> {
        vmm.launch_igvm(file, &LaunchOptions::default())?;
        let k = vmm.hypervisor();
        let _: &kvm_ioctls::VmFd = k.vm();
        let _: std::os::fd::BorrowedFd<'_> = k.guest_memfd();
        let _: &[kvm_ioctls::VcpuFd] = k.vcpus();
        Ok(())
    }
}

/// `e` is the page-per-call loop's `LAUNCH_UPDATE` failing with `EIO` and firmware status `fw`.
fn assert_update_failed(e: &vmm_example::Error, fw: u32) {
    assert!(
        matches!(
            e,
            vmm_example::Error::Command {
                cmd: "KVM_SEV_SNP_LAUNCH_UPDATE",
                errno: libc::EIO,
                fw_error
            } if *fw_error == fw
        ),
        "{e}"
    );
}

#[test]
fn a_file_outside_guest_memory_is_refused_before_any_ioctl() {
    let runs = [Run {
        gpa: 0x100_0000,
        pages: 2,
        kind: Kind::Data,
    }];
    let mut vmm = model_vmm(KernelVersion::default());
    let e = vmm
        .launch_igvm(&igvm_file(&runs, 1, false), &LaunchOptions::default())
        .unwrap_err();
    assert!(matches!(e, vmm_example::Error::Memory(_)), "{e}");
    assert!(e.to_string().contains("[0x1000000..+0x2000)"), "{e}");
    assert!(vmm.hypervisor().model().calls.is_empty());
    let e = vmm
        .launch_igvm(b"not an IGVM file", &LaunchOptions::default())
        .unwrap_err();
    assert!(matches!(e, vmm_example::Error::Image(_)), "{e}");
}

/// The firmware fails `LAUNCH_UPDATE` of a region's third page: the driver resumes a call that
/// stopped part-way and stops with its report (two pages populated) at a call that did nothing;
/// the loop stops with the command's typed error.
#[test]
fn a_firmware_failure_is_a_typed_error_on_both_paths() {
    use sev_backend::testing::Step;
    const SEV_RET_INVALID_ADDRESS: u32 = 0x0c; // an arbitrary firmware status
    let runs = [Run {
        gpa: 0x10_0000,
        pages: 8,
        kind: Kind::Data,
    }];
    let file = igvm_file(&runs, 1, false);
    // As the kernel does, a page failing after others leaves the call successful with the
    // pages before it (kvm_gmem_populate returns the count): the driver resumes at the page.
    let mut vmm = model_vmm(KernelVersion::default());
    let fail = |after| Step::Firmware {
        after,
        code: SEV_RET_INVALID_ADDRESS,
    };
    vmm.hypervisor_mut().model_mut().script.push_back(fail(2));
    let report = vmm.launch_igvm(&file, &LaunchOptions::default()).unwrap();
    assert!(report.digest_matches());
    assert_eq!(report.ioctls.launch_update, 2);
    // Failing again at that page, before any page of the call: the run stops there.
    let mut vmm = model_vmm(KernelVersion::default());
    let script = &mut vmm.hypervisor_mut().model_mut().script;
    script.extend([fail(2), fail(0)]);
    let e = vmm
        .launch_igvm(&file, &LaunchOptions::default())
        .unwrap_err();
    let vmm_example::Error::Populate(run) = &e else {
        panic!("{e}")
    };
    let cc_populate::RunError::Stopped(report) = &**run else {
        panic!("{run}")
    };
    assert_eq!(report.regions[0].populated, 2 * PAGE);
    assert_eq!(vmm.hypervisor().model().ledger.len(), 2);

    let mut vmm = model_vmm(KernelVersion::default());
    // The loop's third LAUNCH_UPDATE is the third page; it fails before any page of it.
    for _ in 0..2 {
        vmm.hypervisor_mut().model_mut().script.push_back(Step::All);
    }
    vmm.hypervisor_mut().model_mut().script.push_back(fail(0));
    let opts = LaunchOptions {
        path: PopulatePath::PagePerCall,
        ..Default::default()
    };
    let e = vmm.launch_igvm(&file, &opts).unwrap_err();
    assert_update_failed(&e, SEV_RET_INVALID_ADDRESS);
    assert_eq!(vmm.hypervisor().model().ledger.len(), 2);
}

/// A signal pending when `LAUNCH_UPDATE` starts: Linux 6.18 answers `EIO` with firmware status
/// 0 before any page (kvm_gmem_populate's `-EINTR`, turned into `-EIO` by snp_launch_update).
/// The driver retries it (sev-backend's bounded retry) and the launch completes with the same
/// digest; the page-per-call loop, like Cloud Hypervisor's, stops.
#[test]
fn a_signal_before_a_call_is_retried_by_the_driver_and_stops_the_loop() {
    use sev_backend::testing::Step;
    let file = sample_file();
    let mut vmm = model_vmm(KernelVersion::default());
    let script = &mut vmm.hypervisor_mut().model_mut().script;
    script.extend([Step::All, Step::Signal(0)]);
    let report = vmm.launch_igvm(&file, &LaunchOptions::default()).unwrap();
    assert!(report.digest_matches());
    // One call more than without the signal.
    let plain = expected(&SAMPLE, PopulatePath::Driver);
    assert_eq!(report.ioctls.launch_update, plain.launch_update + 1);

    let mut vmm = model_vmm(KernelVersion::default());
    let script = &mut vmm.hypervisor_mut().model_mut().script;
    script.extend([Step::All, Step::Signal(0)]);
    let opts = LaunchOptions {
        path: PopulatePath::PagePerCall,
        ..Default::default()
    };
    let e = vmm.launch_igvm(&file, &opts).unwrap_err();
    assert_update_failed(&e, 0);
    assert_eq!(vmm.hypervisor().model().ledger.len(), 1);
}

/// What the VMM prints after a launch: the ioctls by command and both digests.
#[test]
fn the_report_names_the_ioctls_and_both_digests() {
    let (_, report) = launch(&sample_file(), EmptyPages::ZeroPage, PopulatePath::Driver);
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with(
            "Driver: 1059 pages, 21 ioctls: 8 KVM_SET_MEMORY_ATTRIBUTES, 10 LAUNCH_UPDATE, \
             INIT2 1, LAUNCH_START 1, LAUNCH_FINISH 1 (18 to populate) in "
        ),
        "{text}"
    );
    let hex: String = report.expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lines[1], format!("  launch digest {hex}"));
    assert_eq!(lines[2], format!("  expected      {hex} (equal)"));
}
