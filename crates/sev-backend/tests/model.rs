//! The backend driven by the cc-populate driver through the in-process model of Linux 6.18.2's
//! SNP launch (`sev_backend::testing`, each rule cited there): exact reports, resume without
//! double population, the EIO-with-firmware-status-0 trap and its bound, memslot ends, CPUID
//! policies (also for a rejection the kernel reports as success), in-place modes, parameter
//! checks before the ioctl, the unrecoverable LAUNCH_FINISH, and the exact bytes sent.

use cc_populate::{
    Driver, ErrorKind, MemoryLayout, Plan, PlanBuilder, PlanError, Report, Role, RunError,
    StopCause,
};
use sev_backend::testing::{KernelModel, Memslot, Step};
use sev_backend::uapi::*;
use sev_backend::{
    measure, sev_cmd, CpuidPolicy, Error, FinishParams, InPlaceMode, InitParams, LaunchConfig,
    LaunchState, MeasureOptions, SevCmd, SevIoctl, SnpBackend, StartParams, UpdateSource, VmsaPage,
    SNP_POLICY_MASK_VALID, SNP_POLICY_RESERVED_MBO, SNP_POLICY_SMT, SNP_VMSA_FEATURES_KNOWN,
};

const FW: u64 = 0xffc0_0000;

fn backend(config: LaunchConfig, model: KernelModel) -> SnpBackend<KernelModel> {
    let mut b = SnpBackend::with_ioctl(model, config);
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    b.start(&StartParams::default()).unwrap();
    b
}

/// A CPUID table page with leaf 0 reporting `max_leaf` in EAX.
fn cpuid_page(max_leaf: u32) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    p[0] = 2; // count
    p[16 + 24..16 + 28].copy_from_slice(&max_leaf.to_le_bytes()); // fn[0]: leaf 0, eax
    p[16 + 48..16 + 52].copy_from_slice(&1u32.to_le_bytes()); // fn[1]: leaf 1
    p[16 + 48 + 28..16 + 48 + 32].copy_from_slice(&0x0800u32.to_le_bytes()); // ebx
    p
}

struct Inputs {
    firmware: Vec<u8>,
    unmeasured: Vec<u8>,
    cpuid: Vec<u8>,
}

fn inputs() -> Inputs {
    Inputs {
        firmware: (0..(4u32 << 20))
            .map(|i| (i >> 9) as u8 ^ i as u8)
            .collect(),
        unmeasured: vec![0x77; 8192],
        cpuid: cpuid_page(0xd),
    }
}

fn plan<'a>(b: &SnpBackend<KernelModel>, i: &'a Inputs) -> Plan<'a> {
    PlanBuilder::new()
        .source(FW, Role::Measured, &i.firmware)
        .zero(0x80_0000, 0x9000)
        .zeros(0x80_d000, 4096, Role::Secrets)
        .source(0x80_e000, Role::Cpuid, &i.cpuid)
        .source(0x90_0000, Role::Unmeasured, &i.unmeasured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap()
}

/// The driver's report matches the model's ledger region by region.
fn assert_report_exact(report: &Report, model: &KernelModel) {
    for (i, r) in report.regions.iter().enumerate() {
        assert_eq!(r.populated, model.populated_in(r.gpa, r.len), "region {i}");
    }
    if let Some(s) = &report.stop {
        assert!(
            !model.is_populated(s.gpa),
            "stop GPA {:#x} populated",
            s.gpa
        );
    }
    assert!(
        model.twice.is_empty(),
        "populated twice: {:x?}",
        model.twice
    );
    assert!(
        model.not_private.is_empty(),
        "populated while shared: {:x?}",
        model.not_private
    );
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    assert!(model.violations.is_empty(), "{:?}", model.violations);
}

fn vmsa() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 13) as u8).collect()
}

fn finish_and_compare(mut b: SnpBackend<KernelModel>, plan: &Plan<'_>) {
    let v = vmsa();
    b.ioctl_mut().vmsas.push(v.clone());
    b.finish(&FinishParams::default()).unwrap();
    let want = measure(plan, &[VmsaPage::kvm(&v)], &MeasureOptions::default()).unwrap();
    assert_eq!(
        b.ioctl().launch_digest(),
        want,
        "offline digest differs from the model's"
    );
}

#[test]
fn full_launch_matches_offline_digest() {
    let i = inputs();
    let mut b = backend(LaunchConfig::default(), KernelModel::new());
    let plan = plan(&b, &i);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_report_exact(&report, b.ioctl());
    let types: Vec<u8> = b.ioctl().ledger.iter().map(|(_, t, _)| *t).collect();
    let mut want = vec![1u8; 1024];
    want.extend([3u8; 9]);
    want.extend([5, 6, 4, 4]);
    assert_eq!(types, want);
    // The CPUID page reached the firmware through a bounce page with the caller's table.
    let cpuid = b.ioctl().ledger.iter().find(|(_, t, _)| *t == 6).unwrap();
    assert_eq!(cpuid.2, i.cpuid);
    assert!(b.ioctl().wrote_shared.is_empty());
    finish_and_compare(b, &plan);
}

#[test]
fn partial_progress_and_eio_zero_are_followed() {
    let i = inputs();
    let mut model = KernelModel::new();
    model.script.extend([
        Step::Signal(5), // progress, so the call succeeds and the signal is not seen
        Step::Signal(2),
        Step::Signal(0), // no progress: -EIO with firmware status 0
        Step::All,
    ]);
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.regions[0].retries, 1);
    // Two 2 MiB chunks: the first took two driver calls (one retried), the second one.
    assert_eq!(report.regions[0].calls, 3);
    // LAUNCH_UPDATE calls: 4 for the first chunk, 1 for the second, 1 per other region.
    let updates = b
        .ioctl()
        .calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .count();
    assert_eq!(updates, 4 + 1 + 4);
    assert_report_exact(&report, b.ioctl());
    finish_and_compare(b, &plan);
}

#[test]
fn firmware_error_stops_exactly_and_resume_completes() {
    let i = inputs();
    let mut model = KernelModel::new();
    // Page 3 fails: the first call reports the 3 pages before it as progress (the error is
    // lost: kvm_gmem_populate returns the pages done), the next call starts at the bad page and
    // fails with the status. sev_gmem_post_populate reclaims the page, so it can be sent
    // again; that the firmware then takes it (its guest context unchanged by the failure) is
    // firmware internals the model assumes.
    model.script.extend([
        Step::Firmware {
            after: 3,
            code: 0x1a,
        },
        Step::Firmware {
            after: 0,
            code: 0x1a,
        },
    ]);
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.region, 0);
    assert_eq!(stop.gpa, FW + 3 * 4096);
    assert_eq!(stop.page_type, "PAGE_TYPE_NORMAL");
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!(e.kind, ErrorKind::Failed);
    assert_eq!(e.errno, Some(libc::EIO));
    let p = e.platform.clone().unwrap();
    assert_eq!(
        (p.code, p.name.as_ref()),
        (0x1a, "SEV_RET_INVALID_PAGE_STATE")
    );
    assert!(
        e.detail.contains(&format!("GPA {:#x}", FW + 3 * 4096)),
        "{}",
        e.detail
    );
    assert_eq!(report.regions[0].populated, 3 * 4096);
    assert_report_exact(&report, b.ioctl());

    let report = Driver::new(&mut b).resume(&plan, &report).unwrap();
    assert!(report.is_complete());
    assert_report_exact(&report, b.ioctl());
    finish_and_compare(b, &plan);
}

#[test]
fn eio_zero_is_retried_a_bounded_number_of_times_and_names_the_ambiguity() {
    let i = inputs();
    let mut model = KernelModel::new();
    model.script.extend([Step::Signal(0); 5]);
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    // The driver would retry 64 times; the backend gives up after its own bound (2 retries).
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!(
        (e.kind, e.errno, e.platform.clone()),
        (ErrorKind::Failed, Some(libc::EIO), None)
    );
    for want in [
        format!("at GPA {FW:#x}"),
        "giving up after 3 in a row".into(),
        "a pending signal (EINTR)".into(),
        "the page already populated (EEXIST) or not private (EINVAL)".into(),
        "PSP time-out".into(),
        "snp_launch_update".into(),
        // sev_gmem_post_populate's RMP check, __kvm_gmem_get_pfn's folio errors.
        "RMP entry not in its initial shared state".into(),
        "ENOMEM, EHWPOISON".into(),
    ] {
        assert!(e.detail.contains(&want), "{want}: {}", e.detail);
    }
    assert_eq!(report.regions[0].retries, 2);
    let updates = |b: &SnpBackend<KernelModel>| {
        b.ioctl()
            .calls
            .iter()
            .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
            .count()
    };
    assert_eq!(updates(&b), 3);
    assert_eq!(report.bytes_populated(), 0);
    assert_report_exact(&report, b.ioctl());
    // A signal is gone on the next try: resuming (a fresh bound) completes after two more.
    let report = Driver::new(&mut b).resume(&plan, &report).unwrap();
    assert!(report.is_complete());
    assert_report_exact(&report, b.ioctl());
}

#[test]
fn a_psp_time_out_ends_the_launch() {
    // sev-dev.c: __sev_do_cmd_locked marks the PSP dead; the reclaim in
    // sev_gmem_post_populate then fails and snp_page_reclaim kills the VM (KVM_BUG): every
    // later ioctl is EIO with status 0. No resume can go on.
    let i = inputs();
    let mut model = KernelModel::new();
    model.script.push_back(Step::PspTimeout(3));
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.gpa, FW + 3 * 4096);
    assert_eq!(report.regions[0].populated, 3 * 4096);
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!((e.kind, e.errno), (ErrorKind::Failed, Some(libc::EIO)));
    assert!(b.ioctl().vm_dead() && b.ioctl().psp_dead());
    // The EIO of the dead VM is not taken for an interruption: the backend asks whether the
    // VM is alive (SevIoctl::vm_alive) and stops at once: one call that did 3 pages, one EIO.
    assert!(e.detail.contains("it is dead"), "{e}");
    let updates = b
        .ioctl()
        .calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE);
    assert_eq!(updates.count(), 2);
    assert_report_exact(&report, b.ioctl());
    let err = Driver::new(&mut b).resume(&plan, &report).unwrap_err();
    assert_eq!(err.report().unwrap().regions[0].populated, 3 * 4096);
    let e = b.finish(&FinishParams::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unrecoverable {
                errno: libc::EIO,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(b.ioctl_mut().set_private(0, 4096), Err(libc::EIO));
    let r = cc_populate::Backend::make_private(&mut b, 0x10_0000, 4096);
    let e = r.result.unwrap_err();
    assert_eq!((r.done, e.errno), (0, Some(libc::EIO)));
    assert!(
        e.detail
            .contains("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [0x100000..+0x1000)"),
        "{e}"
    );
    assert!(format!("{:?}", b.ioctl()).contains("vm_dead: true"));
    assert!(format!("{b:?}").contains("Unrecoverable"));
}

#[test]
fn bad_state_names_where_the_launch_is() {
    let mut b = SnpBackend::with_ioctl(KernelModel::default(), LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    let e = b.init(&InitParams::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("initialised (before KVM_SEV_SNP_LAUNCH_START)"),
        "{e}"
    );
    b.start(&StartParams::default()).unwrap();
    let e = b.start(&StartParams::default()).unwrap_err();
    assert!(e.to_string().ends_with("the launch is started"), "{e}");
    b.finish(&FinishParams::default()).unwrap();
    let e = b.finish(&FinishParams::default()).unwrap_err();
    assert!(e.to_string().ends_with("the launch is finished"), "{e}");
    assert_eq!(b.ioctl().calls.len(), 3);

    // The same launch over a borrowed ioctl layer (`&mut impl SevIoctl`).
    let mut model = KernelModel::new();
    let mut b = SnpBackend::with_ioctl(&mut model, LaunchConfig::default());
    assert!(!b.ioctl().in_place_populate());
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    b.start(&StartParams::default()).unwrap();
    let plan = PlanBuilder::new()
        .zero(0x10_0000, 0x3000)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(&mut b).run(&plan).unwrap().is_complete());
    assert_eq!(model.populated_in(0x10_0000, 0x3000), 0x3000);
}

#[test]
fn a_start_page_outside_a_guest_memfd_memslot_is_einval() {
    let i = inputs();
    let mut model = KernelModel::new();
    // The firmware in guest_memfd; low memory in an ordinary memslot.
    model.memslots = vec![
        Memslot {
            gpa: FW,
            len: 4 << 20,
            guest_memfd: true,
        },
        Memslot {
            gpa: 0,
            len: 16 << 20,
            guest_memfd: false,
        },
    ];
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!((stop.region, stop.gpa), (1, 0x80_0000));
    let StopCause::Backend(e) = &stop.cause else {
        panic!()
    };
    assert_eq!(
        (e.kind, e.errno, e.platform.clone()),
        (ErrorKind::Failed, Some(libc::EINVAL), None)
    );
    assert!(
        e.detail
            .contains("a start page outside a guest_memfd memslot"),
        "{}",
        e.detail
    );
    assert!(report.regions[0].populated == 4 << 20);
    assert_report_exact(&report, b.ioctl());
}

#[test]
fn a_memslot_end_stops_a_call_and_the_next_goes_on() {
    let i = inputs();
    let mut model = KernelModel::new();
    // The firmware's first 2 MiB chunk spans two guest_memfd memslots; the last 1 MiB of the
    // firmware has no memslot at all.
    model.memslots = vec![
        Memslot {
            gpa: FW,
            len: 1 << 20,
            guest_memfd: true,
        },
        Memslot {
            gpa: FW + (1 << 20),
            len: 2 << 20,
            guest_memfd: true,
        },
    ];
    let mut b = backend(LaunchConfig::default(), model);
    let plan = PlanBuilder::new()
        .source(FW, Role::Measured, &i.firmware)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.gpa, FW + (3 << 20));
    assert_eq!(report.regions[0].populated, 3 << 20);
    let lens: Vec<u64> = b
        .ioctl()
        .calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .map(|c| u64::from_le_bytes(c.params[16..24].try_into().unwrap()))
        .collect();
    // Chunk 1: 2 MiB asked, 1 MiB done (slot end), then the other 1 MiB. Chunk 2: 1 MiB done,
    // then the rest starts outside any memslot: EINVAL.
    assert_eq!(lens, [2 << 20, 1 << 20, 2 << 20, 1 << 20]);
    let StopCause::Backend(e) = &stop.cause else {
        panic!()
    };
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert_report_exact(&report, b.ioctl());
}

fn rejecting_model() -> KernelModel {
    let mut m = KernelModel::new();
    // The firmware insists on max leaf 0x10.
    m.cpuid_check = Some(Box::new(|page: &[u8]| {
        (page[40..44] != 0x10u32.to_le_bytes()).then(|| {
            let mut fixed = page.to_vec();
            fixed[40..44].copy_from_slice(&0x10u32.to_le_bytes());
            fixed
        })
    }));
    m
}

#[test]
fn cpuid_fail_policy_stops_with_the_leaf_difference() {
    let i = inputs();
    let mut b = backend(LaunchConfig::default(), rejecting_model());
    let plan = plan(&b, &i);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!((stop.region, stop.gpa), (3, 0x80_e000));
    let StopCause::Backend(e) = &stop.cause else {
        panic!()
    };
    assert_eq!(e.platform.as_ref().unwrap().name, "SEV_RET_INVALID_PARAM");
    assert!(
        e.detail.contains(
            "leaf 0x0 sub-leaf 0x0: ours 0000000d 00000000 00000000 00000000 firmware 00000010"
        ),
        "{}",
        e.detail
    );
    let c = &b.cpuid_corrections()[0];
    assert_eq!(
        (c.gpa, c.diff.len(), c.applied, c.firmware_page.is_some()),
        (0x80_e000, 1, false, false)
    );
    assert_report_exact(&report, b.ioctl());
    assert!(b.ioctl().wrote_shared.is_empty());
    // The caller decides to accept the firmware's values and resumes.
    b.set_cpuid_policy(CpuidPolicy::UseFirmwareValues);
    let report = Driver::new(&mut b).resume(&plan, &report).unwrap();
    assert!(report.is_complete());
    assert_report_exact(&report, b.ioctl());
}

#[test]
fn cpuid_firmware_values_policy_populates_the_corrected_table() {
    let i = inputs();
    let config = LaunchConfig {
        cpuid: CpuidPolicy::UseFirmwareValues,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, rejecting_model());
    let plan = plan(&b, &i);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    let c = &b.cpuid_corrections()[0];
    assert!(c.applied);
    assert_eq!(c.diff[0].ours, Some([0xd, 0, 0, 0]));
    assert_eq!(c.diff[0].firmware, Some([0x10, 0, 0, 0]));
    let page = &b.ioctl().ledger.iter().find(|(_, t, _)| *t == 6).unwrap().2;
    assert_eq!(page, &cpuid_page(0x10));
    assert_report_exact(&report, b.ioctl());
    // CPUID contents are not measured: the digest is the same.
    finish_and_compare(b, &plan);
}

#[test]
fn cpuid_report_only_keeps_the_firmware_table() {
    let i = inputs();
    let config = LaunchConfig {
        cpuid: CpuidPolicy::ReportOnly,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, rejecting_model());
    let plan = plan(&b, &i);
    // The run stops at the CPUID page the firmware rejected, not elsewhere.
    match Driver::new(&mut b).run(&plan).unwrap_err() {
        cc_populate::RunError::Stopped(r) => {
            assert_eq!(r.stop.as_ref().map(|s| s.role), Some(Role::Cpuid), "{r:?}")
        }
        other => panic!("{other:?}"),
    }
    let c = &b.cpuid_corrections()[0];
    assert!(!c.applied);
    assert_eq!(c.firmware_page.as_deref(), Some(&cpuid_page(0x10)[..]));
    assert!(!b.ioctl().is_populated(0x80_e000));
}

/// A two-page CPUID region whose second page the firmware rejects (the first already says
/// 0x10, the second 0xd).
fn two_page_cpuid() -> Vec<u8> {
    let mut t = cpuid_page(0x10);
    t.extend(cpuid_page(0xd));
    t
}

fn run_two_page_cpuid(policy: CpuidPolicy) -> (SnpBackend<KernelModel>, Result<Report, RunError>) {
    let table = two_page_cpuid();
    let config = LaunchConfig {
        cpuid: policy,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, rejecting_model());
    let plan = PlanBuilder::new()
        .source(0x80_e000, Role::Cpuid, &table)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let r = Driver::new(&mut b).run(&plan);
    (b, r)
}

#[test]
fn cpuid_rejection_of_a_later_page_is_not_accepted_silently() {
    // sev_gmem_post_populate copies the firmware's table into the source of the second page
    // and kvm_gmem_populate returns 1 page done: the call succeeds. Sending the rest from the
    // same buffer would hand the firmware its own table.
    let (b, r) = run_two_page_cpuid(CpuidPolicy::Fail);
    let err = r.unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.gpa, 0x80_f000);
    assert_eq!(report.regions[0].populated, 4096);
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!((e.kind, e.errno), (ErrorKind::Failed, None));
    assert_eq!(e.platform.as_ref().unwrap().name, "SEV_RET_INVALID_PARAM");
    assert!(e.detail.contains("came back changed"), "{}", e.detail);
    assert!(
        e.detail.contains(
            "leaf 0x0 sub-leaf 0x0: ours 0000000d 00000000 00000000 00000000 firmware 00000010"
        ),
        "{}",
        e.detail
    );
    let c = b.cpuid_corrections();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].gpa, c[0].applied, c[0].diff.len()),
        (0x80_f000, false, 1)
    );
    // One page reached the firmware: the first, with our table.
    assert_eq!(b.ioctl().ledger.len(), 1);
    assert!(!b.ioctl().is_populated(0x80_f000));
    assert_report_exact(&report, b.ioctl());

    // ReportOnly: the same stop, with the firmware's page kept.
    let (b, r) = run_two_page_cpuid(CpuidPolicy::ReportOnly);
    match r {
        Err(cc_populate::RunError::Stopped(r)) => {
            let stop = r.stop.as_ref().expect("a stop");
            assert_eq!((stop.role, stop.gpa), (Role::Cpuid, 0x80_f000), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    let c = &b.cpuid_corrections()[0];
    assert_eq!(c.firmware_page.as_deref(), Some(&cpuid_page(0x10)[..]));
    assert!(!b.ioctl().is_populated(0x80_f000));

    // UseFirmwareValues: the firmware's table is sent, once, and recorded as applied.
    let (b, r) = run_two_page_cpuid(CpuidPolicy::UseFirmwareValues);
    assert!(r.unwrap().is_complete());
    let c = b.cpuid_corrections();
    assert_eq!((c.len(), c[0].gpa, c[0].applied), (1, 0x80_f000, true));
    let pages: Vec<&Vec<u8>> = b.ioctl().ledger.iter().map(|(_, _, p)| p).collect();
    assert_eq!(pages, [&cpuid_page(0x10), &cpuid_page(0x10)]);

    // A call that stops after the first page for another reason (a signal) leaves the next
    // source page as sent: no rejection is seen, and the rest goes on.
    let mut model = KernelModel::new();
    model.script.push_back(Step::Signal(1));
    let mut b = backend(LaunchConfig::default(), model);
    let table = two_page_cpuid();
    let plan = PlanBuilder::new()
        .source(0x80_e000, Role::Cpuid, &table)
        .zeros(0x90_0000, 4096, Role::Cpuid)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(&mut b).run(&plan).unwrap().is_complete());
    assert!(b.cpuid_corrections().is_empty());
    assert_eq!(b.ioctl().ledger.len(), 3);
    assert_eq!(b.ioctl().ledger[2].2, vec![0u8; 4096]);
}

#[test]
fn cpuid_rejection_without_the_table_written_back_is_reported_as_unknown() {
    // The firmware rejects the table, but the source came back unchanged (here: the firmware
    // wrote back the table it was sent; in 6.18 also when the reclaim failed, which kills the
    // VM in snp_page_reclaim): nothing to apply, whatever the policy.
    let mut model = KernelModel::new();
    model.script.push_back(Step::Firmware {
        after: 0,
        code: 0x16,
    });
    let config = LaunchConfig {
        cpuid: CpuidPolicy::UseFirmwareValues,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, model);
    // A table that does not parse either way (count 65): only the note is recorded.
    let mut table = vec![0u8; 4096];
    table[0] = 65;
    let plan = PlanBuilder::new()
        .source(0x80_e000, Role::Cpuid, &table)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert!(stop.to_string().contains("came back unchanged"), "{stop}");
    let c = &b.cpuid_corrections()[0];
    assert!(!c.applied && c.diff.is_empty() && c.note.is_some());

    // A table written back that differs only outside its entries: no leaf differs, and Fail
    // still stops.
    let mut model = KernelModel::new();
    model.cpuid_check = Some(Box::new(|page: &[u8]| {
        let mut p = page.to_vec();
        p[4095] ^= 1;
        Some(p)
    }));
    let mut b = backend(LaunchConfig::default(), model);
    let ours = cpuid_page(0xd);
    let plan = PlanBuilder::new()
        .source(0x80_e000, Role::Cpuid, &ours)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    assert!(err.to_string().contains("no leaf differs"), "{err}");

    // A table written back that does not parse: the difference cannot be given, and the
    // table is sent as the firmware left it (the policy asked for that).
    let mut model = KernelModel::new();
    let once = std::sync::atomic::AtomicBool::new(true);
    model.cpuid_check = Some(Box::new(move |_: &[u8]| {
        once.swap(false, std::sync::atomic::Ordering::Relaxed)
            .then(|| table.clone())
    }));
    let mut b = backend(config, model);
    let ours = cpuid_page(0xd);
    let plan = PlanBuilder::new()
        .source(0x80_e000, Role::Cpuid, &ours)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(&mut b).run(&plan).unwrap().is_complete());
    let c = &b.cpuid_corrections()[0];
    assert!(c.applied && c.diff.is_empty());
    assert!(
        c.note.as_deref().unwrap().contains("could not compare"),
        "{:?}",
        c.note
    );
}

struct View(u64, Vec<u8>);
impl cc_populate::InPlaceReader for View {
    fn read_in_place(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
        let off = gpa.checked_sub(self.0).ok_or("below the view")? as usize;
        buf.copy_from_slice(self.1.get(off..off + buf.len()).ok_or("past the view")?);
        Ok(())
    }
}

/// An ioctl layer that advertises in-place populate over the 6.18 model (no released kernel
/// does): what a backend told so would send, and what 6.18 would answer.
struct Advertising(KernelModel);
impl sev_backend::SevIoctl for Advertising {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), sev_backend::SevIoctlError> {
        self.0.encrypt_op(cmd)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        self.0.set_private(gpa, len)
    }
    fn in_place_populate(&self) -> bool {
        true
    }
}

#[test]
fn in_place_through_the_kernel_is_refused_on_6_18() {
    let config = LaunchConfig {
        in_place: InPlaceMode::Kernel,
        ..LaunchConfig::default()
    };
    // 6.18 carries no in-place conversion series: the driver is told the kernel cannot
    // populate in place, and stops before converting anything (no fallback was allowed).
    let mut b = backend(config, KernelModel::new());
    assert!(!b.ioctl().in_place_populate());
    let plan = PlanBuilder::new()
        .in_place(0x20_0000, 4096, Role::Measured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let sent = b.ioctl().calls.len();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert!(
        matches!(&stop.cause, StopCause::InPlaceUnavailable(m) if m.contains("in_place_fallback")),
        "{:?}",
        stop.cause
    );
    assert_eq!(b.ioctl().calls.len(), sent, "no ioctl after the refusal");
    assert!(b.ioctl().private.is_empty(), "nothing converted");

    // Where a kernel advertised it, the backend would send uaddr 0; 6.18 warns and answers EIO
    // with status 0 for every such page, which the backend bounds.
    let mut b = SnpBackend::with_ioctl(Advertising(KernelModel::new()), config);
    b.init(&InitParams::default()).unwrap();
    b.start(&StartParams::default()).unwrap();
    let plan = PlanBuilder::new()
        .in_place(0x20_0000, 2 * 4096, Role::Measured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!((e.kind, e.errno), (ErrorKind::Failed, Some(libc::EIO)));
    let m = &b.ioctl().0;
    let calls: Vec<_> = m
        .calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .collect();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.params[8..16] == [0u8; 8]));
    assert_eq!(m.warnings.len(), 3, "{:?}", m.warnings);
    assert!(m.ledger.is_empty());
}

#[test]
fn in_place_falls_back_to_a_copy_taken_before_conversion() {
    let data: Vec<u8> = (0..(16 * 4096u32)).map(|x| (x ^ (x >> 12)) as u8).collect();
    let config = LaunchConfig {
        in_place: InPlaceMode::CopyBeforeConversion,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, KernelModel::new())
        .with_shared_view(Box::new(View(0x40_0000, data.clone())));
    let plan = PlanBuilder::new()
        .in_place(0x40_0000, data.len() as u64, Role::Measured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    let got: Vec<u8> = b
        .ioctl()
        .ledger
        .iter()
        .flat_map(|(_, _, c)| c.clone())
        .collect();
    assert_eq!(got, data);

    // Without a reader the copy is missing, and the error says so, naming the range.
    let mut b = backend(config, KernelModel::new());
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert!(
        stop.to_string()
            .contains("[0x400000..+0x10000): in-place content was not copied"),
        "{stop}"
    );

    // With in-place off, the plan is refused at validation.
    let b = backend(LaunchConfig::default(), KernelModel::new());
    let e = PlanBuilder::new()
        .in_place(0x40_0000, 4096, Role::Measured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap_err();
    assert!(matches!(e, PlanError::InPlaceUnsupported { .. }));
}

#[test]
fn in_place_cpuid_page_still_needs_a_source_page() {
    let config = LaunchConfig {
        in_place: InPlaceMode::CopyBeforeConversion,
        ..LaunchConfig::default()
    };
    // Without a copy of the in-place table, the CPUID page is refused before any ioctl.
    let mut b = backend(config, KernelModel::new());
    let plan = PlanBuilder::new()
        .in_place(0x80_e000, 4096, Role::Cpuid)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert!(
        stop.to_string()
            .contains("[0x80e000..+0x1000): the CPUID page needs a source page"),
        "{stop}"
    );
    assert!(b
        .ioctl()
        .calls
        .iter()
        .all(|c| c.id != KVM_SEV_SNP_LAUNCH_UPDATE));

    // With a copy taken before conversion, the bounce page is there.
    let table = cpuid_page(0xd);
    let mut b =
        backend(config, rejecting_model()).with_shared_view(Box::new(View(0x80_e000, table)));
    b.set_cpuid_policy(CpuidPolicy::UseFirmwareValues);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    assert!(b.ioctl().wrote_shared.is_empty());
    assert_eq!(b.ioctl().ledger[0].2, cpuid_page(0x10));
}

#[test]
fn sources_reach_the_kernel_page_aligned() {
    let mut aligned = cc_populate::SourceBuf::new(3 * 4096).unwrap();
    aligned.as_mut_slice().fill(0x3c);
    let aligned_ptr = aligned.as_slice().as_ptr() as u64;
    assert_eq!(aligned_ptr % 4096, 0);
    let backing = vec![0x5au8; 2 * 4096 + 1];
    let unaligned = if (backing.as_ptr() as usize).is_multiple_of(4096) {
        &backing[1..]
    } else {
        &backing[..8192]
    };
    assert_ne!(unaligned.as_ptr() as u64 % 4096, 0);

    let mut b = backend(LaunchConfig::default(), KernelModel::new());
    let plan = PlanBuilder::new()
        .buffer(0x10_0000, Role::Measured, aligned)
        .source(0x20_0000, Role::Measured, unaligned)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    let uaddrs: Vec<u64> = b
        .ioctl()
        .calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .map(|c| u64::from_le_bytes(c.params[8..16].try_into().unwrap()))
        .collect();
    // The aligned buffer is used in place; the unaligned one through an aligned copy.
    assert_eq!(uaddrs[0], aligned_ptr);
    assert_eq!(uaddrs[1] % 4096, 0);
    assert_ne!(uaddrs[1], unaligned.as_ptr() as u64);
    let contents: Vec<u8> = b
        .ioctl()
        .ledger
        .iter()
        .flat_map(|(_, _, c)| c.clone())
        .collect();
    let mut want = vec![0x3cu8; 3 * 4096];
    want.extend_from_slice(unaligned);
    assert_eq!(contents, want);
}

#[test]
fn launch_steps_in_order_only() {
    let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    let e = b.start(&StartParams::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingStep {
                step: "KVM_SEV_SNP_LAUNCH_START",
                missing: "KVM_SEV_INIT2",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        b.finish(&FinishParams::default()),
        Err(Error::MissingStep {
            step: "KVM_SEV_SNP_LAUNCH_FINISH",
            missing: "KVM_SEV_INIT2",
            ..
        })
    ));
    let i = inputs();
    let plan = PlanBuilder::new()
        .source(FW, Role::Measured, &i.firmware)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    assert!(matches!(err, RunError::Stopped(_)));
    assert!(err.to_string().contains("before KVM_SEV_INIT2"), "{err}");
    assert!(b.ioctl().ledger.is_empty());
}

// ---- exact bytes ----------------------------------------------------------------------------

#[test]
fn exact_bytes_of_every_command() {
    let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    b.init(&InitParams {
        vmsa_features: 0x220,
        ghcb_version: 2,
    })
    .unwrap();
    b.create_vcpu(0).unwrap();
    let gosvw: [u8; 16] = std::array::from_fn(|k| k as u8 + 1);
    b.start(&StartParams {
        policy: 0x3_0000,
        gosvw,
    })
    .unwrap();
    let plan = PlanBuilder::new()
        .zero(0x12_3000, 0x2000)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    Driver::new(&mut b).run(&plan).unwrap();
    let host_data: [u8; 32] = std::array::from_fn(|k| 0xa0 + k as u8);
    b.finish(&FinishParams {
        vcek_disabled: true,
        host_data,
        ..FinishParams::default()
    })
    .unwrap();

    let calls = &b.ioctl().calls;
    let ids: Vec<u32> = calls.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![22, 100, 101, 102]);

    // struct kvm_sev_init: u64 vmsa_features, u32 flags, u16 ghcb_version, u16 pad1, u32 pad2[8].
    let mut init = vec![0x20, 0x02, 0, 0, 0, 0, 0, 0];
    init.extend([0, 0, 0, 0, 2, 0, 0, 0]);
    init.extend([0u8; 32]);
    assert_eq!(calls[0].params, init);

    // struct kvm_sev_snp_launch_start: u64 policy, u8 gosvw[16], u16 flags, u8 pad0[6],
    // u64 pad1[4].
    let mut start = vec![0, 0, 3, 0, 0, 0, 0, 0];
    start.extend(1..=16u8);
    start.extend([0u8; 8 + 32]);
    assert_eq!(calls[1].params, start);

    // struct kvm_sev_snp_launch_update: u64 gfn_start, u64 uaddr, u64 len, u8 type, u8 pad0,
    // u16 flags, u32 pad1, u64 pad2[4]. A ZERO region: no uaddr.
    let mut update = vec![0x23, 0x01, 0, 0, 0, 0, 0, 0];
    update.extend([0u8; 8]);
    update.extend([0, 0x20, 0, 0, 0, 0, 0, 0]);
    update.extend([3, 0, 0, 0, 0, 0, 0, 0]);
    update.extend([0u8; 32]);
    assert_eq!(calls[2].params, update);

    // struct kvm_sev_snp_launch_finish: u64 id_block_uaddr, u64 id_auth_uaddr, u8 id_block_en,
    // u8 auth_key_en, u8 vcek_disabled, u8 host_data[32], u8 pad0[3], u16 flags, u64 pad1[4].
    let mut finish = vec![0u8; 16];
    finish.extend([0, 0, 1]);
    finish.extend(host_data);
    finish.extend([0u8; 3 + 2 + 32]);
    assert_eq!(finish.len(), 88);
    assert_eq!(calls[3].params, finish);
}

#[test]
fn kvm_sev_cmd_points_at_the_parameters_and_source() {
    let src = vec![1u8; 8192];
    let mut p = kvm_sev_snp_launch_update {
        gfn_start: 0x10,
        uaddr: src.as_ptr() as u64,
        len: 8192,
        type_: 1,
        ..Default::default()
    };
    let addr = std::ptr::addr_of!(p) as u64;
    let mut cmd = SevCmd::LaunchUpdate {
        params: &mut p,
        source: Some(UpdateSource::Shared(&src)),
    };
    let raw = sev_cmd(&mut cmd, 7);
    assert_eq!(
        (raw.id, raw.pad0, raw.data, raw.error, raw.sev_fd),
        (101, 0, addr, 0, 7)
    );
    let bytes = cmd.params_bytes();
    assert_eq!(&bytes[8..16], &(src.as_ptr() as u64).to_le_bytes());

    let id_block = [0x42u8; 96];
    let id_auth = [0x17u8; 4096];
    let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    b.start(&StartParams::default()).unwrap();
    b.finish(&FinishParams {
        id_block: Some(&id_block),
        id_auth: Some(&id_auth),
        auth_key: true,
        ..FinishParams::default()
    })
    .unwrap();
    let fin = &b.ioctl().calls[2].params;
    assert_eq!(&fin[0..8], &(id_block.as_ptr() as u64).to_le_bytes());
    assert_eq!(&fin[8..16], &(id_auth.as_ptr() as u64).to_le_bytes());
    assert_eq!((fin[16], fin[17]), (1, 1));
}

// ---- parameters as Linux 6.18.2 checks them ----------------------------------------------

#[test]
fn finish_refuses_id_parameters_the_kernel_refuses_or_ignores() {
    let id_block = [0x42u8; 96];
    let id_auth = [0x17u8; 4096];
    let mut b = backend(LaunchConfig::default(), KernelModel::new());
    for (p, field) in [
        // snp_launch_finish reads id_auth_uaddr with id_block_en: address 0 is EINVAL, after
        // the VMSAs were measured.
        (
            FinishParams {
                id_block: Some(&id_block),
                ..FinishParams::default()
            },
            "id_auth_uaddr",
        ),
        (
            FinishParams {
                id_block: Some(&id_block),
                auth_key: true,
                ..FinishParams::default()
            },
            "id_auth_uaddr",
        ),
        // Without an ID block the kernel ignores both.
        (
            FinishParams {
                id_auth: Some(&id_auth),
                ..FinishParams::default()
            },
            "id_auth_uaddr",
        ),
        (
            FinishParams {
                auth_key: true,
                ..FinishParams::default()
            },
            "auth_key_en",
        ),
    ] {
        let e = b.finish(&p).unwrap_err();
        let Error::InvalidParam { cmd, field: f, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((*cmd, *f), ("KVM_SEV_SNP_LAUNCH_FINISH", field), "{e}");
    }
    assert!(b
        .ioctl()
        .calls
        .iter()
        .all(|c| c.id != KVM_SEV_SNP_LAUNCH_FINISH));
    // The launch is untouched: it still finishes.
    b.finish(&FinishParams::default()).unwrap();
}

/// `finish` with default parameters, which must fail unrecoverably: the message, errno,
/// firmware status and reason.
fn failed_finish(b: &mut SnpBackend<KernelModel>) -> (String, i32, u32, String) {
    let e = b.finish(&FinishParams::default()).unwrap_err();
    match &e {
        Error::Unrecoverable {
            errno,
            fw_code,
            reason,
            ..
        } => (e.to_string(), *errno, *fw_code, reason.clone()),
        _ => panic!("{e:?}"),
    }
}

#[test]
fn a_failed_launch_finish_is_unrecoverable() {
    let mut model = KernelModel::new();
    model.finish_fw_error = Some(0x0b); // SEV_RET_BAD_MEASUREMENT, firmware internals
    model.vmsas.push(vmsa());
    let mut b = backend(LaunchConfig::default(), model);
    let (e, errno, fw_code, reason) = failed_finish(&mut b);
    assert_eq!((errno, fw_code), (libc::EIO, 0x0b));
    assert!(reason.contains("snp_launch_update_vmsa"), "{reason}");
    assert!(e.contains("SEV_RET_BAD_MEASUREMENT"), "{e}");
    assert!(b.ioctl().vmsas_measured());
    assert_eq!(b.state(), LaunchState::Unrecoverable);
    // No second LAUNCH_FINISH, no populate.
    let e = b.finish(&FinishParams::default()).unwrap_err();
    assert!(matches!(e, Error::BadState { .. }), "{e}");
    let plan = PlanBuilder::new()
        .zero(0x10_0000, 4096)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    assert!(err.to_string().contains("unrecoverable"), "{err}");
    assert!(b.ioctl().violations.is_empty());
}

#[test]
fn a_vcpu_with_guest_debugging_fails_launch_finish_after_the_vcpus_before_it() {
    // sev.c: snp_launch_update_vmsa -> sev_es_sync_vmsa (Linux 6.18.2): EINVAL, status 0, for a
    // vCPU with guest_debug or DR7 bits set; the VMSAs of the vCPUs before it are measured.
    let mut model = KernelModel::new();
    model.vmsas.extend([vmsa(), vmsa()]);
    model.debug_vcpu = Some(1);
    let mut b = backend(LaunchConfig::default(), model);
    let (_, errno, fw_code, reason) = failed_finish(&mut b);
    assert_eq!((errno, fw_code), (libc::EINVAL, 0));
    assert!(reason.contains("sev_es_sync_vmsa"), "{reason}");
    assert!(b.ioctl().vmsas_measured());
    assert_eq!(b.state(), LaunchState::Unrecoverable);

    // On vCPU 0 nothing was measured (the kernel could take a second LAUNCH_FINISH once the
    // VMM clears the debug state; the backend cannot tell which vCPU it was and stops).
    let mut model = KernelModel::new();
    model.vmsas.push(vmsa());
    model.debug_vcpu = Some(0);
    let mut b = backend(LaunchConfig::default(), model);
    let e = b.finish(&FinishParams::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unrecoverable {
                errno: libc::EINVAL,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!b.ioctl().vmsas_measured());
    assert_eq!(b.ioctl().launch_digest(), [0; 48]);
}

#[test]
fn init_and_start_refuse_what_the_kernel_refuses_before_the_ioctl() {
    let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    for (p, field) in [
        (
            InitParams {
                ghcb_version: 1,
                ..InitParams::default()
            },
            "ghcb_version",
        ),
        (
            InitParams {
                ghcb_version: 3,
                ..InitParams::default()
            },
            "ghcb_version",
        ),
        (
            InitParams {
                vmsa_features: 1 << 1,
                ..InitParams::default()
            },
            "vmsa_features",
        ),
    ] {
        let e = b.init(&p).unwrap_err();
        assert!(
            matches!(e, Error::InvalidParam { cmd: "KVM_SEV_INIT2", field: f, .. } if f == field),
            "{e}"
        );
    }
    assert!(b.ioctl().calls.is_empty());
    // A feature 6.18 knows but this host lacks: only the kernel can say (EINVAL).
    b.ioctl_mut().supported_vmsa_features = 0;
    let e = b
        .init(&InitParams {
            vmsa_features: SNP_VMSA_FEATURES_KNOWN,
            ghcb_version: 2,
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Command {
                errno: libc::EINVAL,
                fw_code: 0,
                ..
            }
        ),
        "{e}"
    );
    // Host state after the checks (sev.c: __sev_guest_init: sev_asid_new with every ASID
    // taken is EBUSY; sev_platform_init fails with its errno and the PSP status): the VM stays
    // uninitialised and INIT2 may be sent again.
    for (errno, code) in [(libc::EBUSY, 0), (libc::EIO, 0x15)] {
        b.ioctl_mut().init_host_error = Some((errno, code));
        let e = b.init(&InitParams::default()).unwrap_err();
        assert!(
            matches!(e, Error::Command { errno: got, fw_code, .. } if got == errno && fw_code == code),
            "{e:?}"
        );
    }
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();

    for policy in [SNP_POLICY_SMT, SNP_POLICY_RESERVED_MBO | 1 << 18] {
        let e = b
            .start(&StartParams {
                policy,
                ..StartParams::default()
            })
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidParam { cmd: "KVM_SEV_SNP_LAUNCH_START", field: "policy", value, .. } if value == policy),
            "{e}"
        );
    }
    assert_eq!(b.ioctl().calls.len(), 4);
    // A firmware refusal is EIO with its status, and a later start may succeed (sev.c:
    // snp_launch_start decommissions the context).
    b.ioctl_mut().start_fw_error = Some(7);
    let e = b.start(&StartParams::default()).unwrap_err();
    assert!(e.to_string().contains("SEV_RET_POLICY_FAILURE"), "{e}");
    // SNP_GCTX_CREATE failing is ENOTTY (not EIO) with the firmware status (sev.c:
    // snp_launch_start after snp_context_create), no context kept: the state stays
    // initialised and a later start may succeed.
    b.ioctl_mut().gctx_create_fw_error = Some(0x1f);
    let e = b.start(&StartParams::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Command {
                errno: libc::ENOTTY,
                fw_code: 0x1f,
                ..
            }
        ),
        "{e:?}"
    );
    b.start(&StartParams {
        policy: SNP_POLICY_MASK_VALID,
        ..StartParams::default()
    })
    .unwrap();
}

fn update(gfn: u64, uaddr: u64, len: u64, type_: u8) -> kvm_sev_snp_launch_update {
    kvm_sev_snp_launch_update {
        gfn_start: gfn,
        uaddr,
        len,
        type_,
        ..Default::default()
    }
}

fn send(
    m: &mut KernelModel,
    p: &mut kvm_sev_snp_launch_update,
    src: Option<&[u8]>,
) -> Result<(), (i32, u32)> {
    m.encrypt_op(SevCmd::LaunchUpdate {
        params: p,
        source: src.map(UpdateSource::Shared),
    })
    .map_err(|e| (e.errno, e.fw_error))
}

#[test]
fn the_model_checks_commands_as_6_18_does() {
    let einval = Err((libc::EINVAL, 0));
    let mut m = KernelModel::new();
    // Before KVM_SEV_INIT2 the VM is not an SNP guest yet.
    let mut start = kvm_sev_snp_launch_start {
        policy: SNP_POLICY_RESERVED_MBO,
        ..Default::default()
    };
    let start_err = |m: &mut KernelModel, p: &mut kvm_sev_snp_launch_start| {
        m.encrypt_op(SevCmd::LaunchStart(p))
            .map_err(|e| (e.errno, e.fw_error))
    };
    let finish_err = |m: &mut KernelModel, p: &mut kvm_sev_snp_launch_finish| {
        m.encrypt_op(SevCmd::LaunchFinish(p))
            .map_err(|e| (e.errno, e.fw_error))
    };
    let init_err = |m: &mut KernelModel, p: &mut kvm_sev_init| {
        m.encrypt_op(SevCmd::Init2(p))
            .map_err(|e| (e.errno, e.fw_error))
    };
    assert_eq!(start_err(&mut m, &mut start), Err((libc::ENOTTY, 0)));
    assert_eq!(send(&mut m, &mut update(0, 0, 4096, 3), None), einval);
    let mut fin = kvm_sev_snp_launch_finish::default();
    assert_eq!(finish_err(&mut m, &mut fin), Err((libc::ENOTTY, 0)));

    // __sev_guest_init.
    for bad in [
        kvm_sev_init {
            flags: 1,
            ..Default::default()
        },
        kvm_sev_init {
            ghcb_version: 1,
            ..Default::default()
        },
        kvm_sev_init {
            ghcb_version: 3,
            ..Default::default()
        },
        kvm_sev_init {
            vmsa_features: 1,
            ..Default::default()
        },
    ] {
        let mut bad = bad;
        assert_eq!(init_err(&mut m, &mut bad), einval, "{bad:?}");
    }
    m.vcpus_created = true;
    assert_eq!(init_err(&mut m, &mut kvm_sev_init::default()), einval);
    m.vcpus_created = false;
    // The pads are not checked.
    let mut init = kvm_sev_init {
        pad1: 7,
        ..Default::default()
    };
    init.pad2[3] = 9;
    assert_eq!(init_err(&mut m, &mut init), Ok(()));
    // A second KVM_SEV_INIT2 on an SNP guest: sev_mem_enc_ioctl's EPERM.
    assert_eq!(
        init_err(&mut m, &mut kvm_sev_init::default()),
        Err((libc::EPERM, 0))
    );

    // Before LAUNCH_START: no SNP context.
    assert_eq!(send(&mut m, &mut update(0, 0, 4096, 3), None), einval);
    assert_eq!(finish_err(&mut m, &mut fin), einval);

    // snp_launch_start.
    for (flags, policy) in [
        (1, SNP_POLICY_RESERVED_MBO),
        (0, 0),
        (0, SNP_POLICY_RESERVED_MBO | 1 << 18),
    ] {
        let mut p = kvm_sev_snp_launch_start {
            policy,
            flags,
            ..Default::default()
        };
        assert_eq!(start_err(&mut m, &mut p), einval);
    }
    assert_eq!(start_err(&mut m, &mut start), Ok(()));
    assert_eq!(start_err(&mut m, &mut start), einval);

    // snp_launch_update: parameters, then the memslot, before any page.
    m.set_private(0x10_0000, 0x10_0000).unwrap();
    for (p, why) in [
        (update(0x100, 0, 0, 3), "len 0"),
        (update(0x100, 0, 100, 3), "len not page-aligned"),
        (update(0x100, 0, 4096, 2), "VMSA page type"),
        (update(0x100, 0, 4096, 7), "unknown page type"),
        (update(1 << 41, 0, 4096, 3), "outside every memslot"),
    ] {
        let mut p = p;
        let sent = (p.gfn_start, p.uaddr, p.len);
        assert_eq!(send(&mut m, &mut p, None), einval, "{why}");
        // Refused before kvm_gmem_populate: nothing written back.
        assert_eq!((p.gfn_start, p.uaddr, p.len), sent, "{why}");
    }
    let mut p = update(0x100, 0, 4096, 3);
    p.flags = 1;
    assert_eq!(send(&mut m, &mut p, None), einval);
    assert!(m.ledger.is_empty());

    // Every failure inside kvm_gmem_populate before the first page is EIO; status 0 unless
    // the firmware answered.
    let eio0 = Err((libc::EIO, 0));
    // Not private.
    assert_eq!(send(&mut m, &mut update(0x300, 0, 4096, 3), None), eio0);
    assert_eq!(m.not_private, [0x30_0000]);
    // uaddr 0 for a content page: a kernel warning.
    assert_eq!(send(&mut m, &mut update(0x100, 0, 4096, 1), None), eio0);
    assert_eq!(m.warnings.len(), 1);
    // A source the kernel cannot read (EFAULT from copy_from_user).
    let src = vec![1u8; 4096];
    let mut p = update(0x100, src.as_ptr() as u64 + 8, 4096, 1);
    assert_eq!(send(&mut m, &mut p, Some(&src)), eio0);
    // 6.18 does not check the source's alignment.
    let src = vec![2u8; 2 * 4096];
    let mut p = update(0x100, src.as_ptr() as u64 + 8, 4096, 1);
    assert_eq!(send(&mut m, &mut p, Some(&src)), Ok(()));
    assert_eq!(
        (p.gfn_start, p.len, p.uaddr),
        (0x101, 0, src.as_ptr() as u64 + 8 + 4096)
    );
    // Populated already (EEXIST).
    let mut p = update(0x100, 0, 4096, 3);
    assert_eq!(send(&mut m, &mut p, None), eio0);
    assert_eq!(m.twice, [0x10_0000]);
    // A rejected CPUID table is written back into the source even when the caller handed a
    // buffer it meant to keep (the backend never does: it uses a bounce page).
    m.cpuid_check = Some(Box::new(|_: &[u8]| Some(vec![0xee; 4096])));
    let table = vec![0u8; 4096];
    let mut p = update(0x101, table.as_ptr() as u64, 4096, 6);
    assert_eq!(send(&mut m, &mut p, Some(&table)), Err((libc::EIO, 0x16)));
    assert_eq!(m.wrote_shared, [0x10_1000]);
    m.cpuid_check = None;
    // The firmware's status.
    m.script.push_back(Step::Firmware {
        after: 0,
        code: 0x1a,
    });
    assert_eq!(
        send(&mut m, &mut update(0x101, 0, 4096, 3), None),
        Err((libc::EIO, 0x1a))
    );
    // ZERO: uaddr ignored, and not advanced.
    let mut p = update(0x101, 0xdead_0000, 2 * 4096, 3);
    assert_eq!(send(&mut m, &mut p, None), Ok(()));
    assert_eq!((p.gfn_start, p.len, p.uaddr), (0x103, 0, 0xdead_0000));

    // snp_launch_finish: flags; an ID block without its auth structure is EINVAL after the
    // VMSAs went to the firmware, and the launch cannot be finished after that.
    let mut bad = kvm_sev_snp_launch_finish {
        flags: 1,
        ..Default::default()
    };
    assert_eq!(finish_err(&mut m, &mut bad), einval);
    assert!(!m.vmsas_measured());
    let mut bad = kvm_sev_snp_launch_finish {
        id_block_en: 1,
        id_block_uaddr: 0x1000,
        ..Default::default()
    };
    assert_eq!(finish_err(&mut m, &mut bad), einval);
    assert!(m.vmsas_measured());
    assert!(m.violations.is_empty());
    // What follows is firmware internals: the model answers, and records that it was asked.
    // A second LAUNCH_FINISH: the firmware's answer, passed on (EIO, status 2).
    assert_eq!(finish_err(&mut m, &mut fin), Err((libc::EIO, 2)));
    assert_eq!(
        send(&mut m, &mut update(0x103, 0, 4096, 3), None),
        Err((libc::EIO, 0x02))
    );
    assert_eq!(m.violations.len(), 2);

    // KVM_SET_MEMORY_ATTRIBUTES: size 0 and misalignment are EINVAL.
    assert_eq!(m.set_private(0x1000, 0), Err(libc::EINVAL));
    assert_eq!(m.set_private(0x1001, 0x1000), Err(libc::EINVAL));
}
