//! The backend driven by the cc-populate driver through the in-process model of the kernel's
//! documented LAUNCH_UPDATE behaviour: exact reports, resume without double population, the
//! EIO-with-firmware-status-0 trap, CPUID policies, in-place modes, and the exact bytes sent.

use cc_populate::{
    Driver, DriverOptions, ErrorKind, MemoryLayout, Plan, PlanBuilder, PlanError, Report, Role,
    RunError, StopCause,
};
use sev_backend::testing::{KernelModel, Step};
use sev_backend::uapi::*;
use sev_backend::{
    measure, sev_cmd, CpuidPolicy, Error, FinishParams, InPlaceMode, InitParams, LaunchConfig,
    MeasureOptions, SevCmd, SnpBackend, StartParams, UpdateSource, VmsaPage,
};

const FW: u64 = 0xffc0_0000;

fn backend(config: LaunchConfig, model: KernelModel) -> SnpBackend<KernelModel> {
    let mut b = SnpBackend::with_ioctl(model, config);
    b.init(&InitParams::default()).unwrap();
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
fn partial_progress_eagain_and_eio_zero_are_followed() {
    let i = inputs();
    let mut model = KernelModel::new();
    model.script.extend([
        Step::Partial(5),
        Step::Signal(2), // progress, so the call succeeds and the signal is not seen
        Step::Again,
        Step::Signal(0), // no progress: -EIO with firmware status 0
        Step::All,
    ]);
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.regions[0].retries, 2);
    // Two 2 MiB chunks: the first took three driver calls (two retried), the second one.
    assert_eq!(report.regions[0].calls, 4);
    // LAUNCH_UPDATE calls: 5 for the first chunk, 1 for the second, 1 per other region.
    let updates = b
        .ioctl()
        .calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .count();
    assert_eq!(updates, 5 + 1 + 4);
    assert_report_exact(&report, b.ioctl());
    finish_and_compare(b, &plan);
}

#[test]
fn firmware_error_stops_exactly_and_resume_completes() {
    let i = inputs();
    let mut model = KernelModel::new();
    // Page 3 fails: the first call reports the 3 pages before it as progress (the error is
    // lost), the next call starts at the bad page and fails with the status.
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
fn eio_zero_is_an_interruption_naming_the_gpa() {
    let i = inputs();
    let mut model = KernelModel::new();
    model.script.extend([Step::Signal(0); 5]);
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let opts = DriverOptions {
        max_retries: 3,
        ..DriverOptions::default()
    };
    let err = Driver::new(&mut b)
        .with_options(opts.clone())
        .run(&plan)
        .unwrap_err();
    let report = err.report().unwrap().clone();
    let stop = report.stop.clone().unwrap();
    let StopCause::RetriesExhausted { last, .. } = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!(last.kind, ErrorKind::Interrupted);
    assert_eq!(last.errno, Some(libc::EIO));
    assert!(
        last.detail.contains(&format!("at GPA {FW:#x}")),
        "{}",
        last.detail
    );
    assert!(
        last.detail.contains("interrupted before any page"),
        "{}",
        last.detail
    );
    assert_eq!(report.bytes_populated(), 0);
    assert_report_exact(&report, b.ioctl());
    let report = Driver::new(&mut b)
        .with_options(opts)
        .resume(&plan, &report)
        .unwrap();
    assert!(report.is_complete());
    assert_report_exact(&report, b.ioctl());
}

#[test]
fn other_errnos_keep_their_meaning() {
    let i = inputs();
    let mut model = KernelModel::new();
    model.script.extend([Step::Errno(libc::EFAULT)]);
    let mut b = backend(LaunchConfig::default(), model);
    let plan = plan(&b, &i);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    let StopCause::Backend(e) = &stop.cause else {
        panic!()
    };
    assert_eq!(
        (e.kind, e.errno, e.platform.clone()),
        (ErrorKind::Failed, Some(libc::EFAULT), None)
    );
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
    assert!(Driver::new(&mut b).run(&plan).is_err());
    let c = &b.cpuid_corrections()[0];
    assert!(!c.applied);
    assert_eq!(c.firmware_page.as_deref(), Some(&cpuid_page(0x10)[..]));
    assert!(!b.ioctl().is_populated(0x80_e000));
}

struct View(u64, Vec<u8>);
impl cc_populate::InPlaceReader for View {
    fn read_in_place(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
        let off = gpa.checked_sub(self.0).ok_or("below the view")? as usize;
        buf.copy_from_slice(self.1.get(off..off + buf.len()).ok_or("past the view")?);
        Ok(())
    }
}

#[test]
fn in_place_through_the_kernel() {
    let data: Vec<u8> = (0..(64 * 4096u32)).map(|x| ((x * 31) >> 3) as u8).collect();
    let mut model = KernelModel::new();
    model.in_place = true;
    for (k, p) in data.chunks(4096).enumerate() {
        model.memory.insert(0x20_0000 + k as u64 * 4096, p.to_vec());
    }
    let config = LaunchConfig {
        in_place: InPlaceMode::Kernel,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, model);
    let plan = PlanBuilder::new()
        .in_place(0x20_0000, data.len() as u64, Role::Measured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    // uaddr 0: no copy was handed to the kernel.
    let call = b
        .ioctl()
        .calls
        .iter()
        .find(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .unwrap();
    assert_eq!(&call.params[8..16], &[0u8; 8]);
    let view = View(0x20_0000, data);
    let want = measure(
        &plan,
        &[],
        &MeasureOptions {
            reader: Some(&view),
            threads: 0,
        },
    )
    .unwrap();
    assert_eq!(b.ioctl().launch_digest(), want);
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
    let mut model = KernelModel::new();
    model.in_place = true;
    let config = LaunchConfig {
        in_place: InPlaceMode::Kernel,
        ..LaunchConfig::default()
    };
    let mut b = backend(config, model);
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
    // Never handed to the kernel with uaddr 0.
    assert!(b
        .ioctl()
        .calls
        .iter()
        .all(|c| c.id != KVM_SEV_SNP_LAUNCH_UPDATE));

    // With a copy taken before conversion, the bounce page is there.
    let config = LaunchConfig {
        in_place: InPlaceMode::CopyBeforeConversion,
        ..LaunchConfig::default()
    };
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
    let unaligned = if backing.as_ptr() as usize % 4096 == 0 {
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
            Error::BadState {
                step: "KVM_SEV_SNP_LAUNCH_START",
                ..
            }
        ),
        "{e}"
    );
    assert!(b.finish(&FinishParams::default()).is_err());
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
        vmsa_features: 0x1_0000_0001,
        ghcb_version: 2,
    })
    .unwrap();
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
    let mut init = vec![0x01, 0, 0, 0, 0x01, 0, 0, 0];
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
    let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    b.start(&StartParams::default()).unwrap();
    b.finish(&FinishParams {
        id_block: Some(&id_block),
        ..FinishParams::default()
    })
    .unwrap();
    let fin = &b.ioctl().calls[2].params;
    assert_eq!(&fin[0..8], &(id_block.as_ptr() as u64).to_le_bytes());
    assert_eq!(fin[16], 1);
}
