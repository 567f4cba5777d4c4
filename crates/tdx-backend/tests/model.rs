//! The backend driven by cc-populate's driver through the in-process model of the kernel's
//! documented TDX behaviour: exact ioctl bytes, partial progress, retries, stops and resume.

use cc_populate::{
    ConversionPolicy, Driver, DriverOptions, ErrorKind, MemoryLayout, Plan, PlanBuilder, Role,
    RunError, SourceBuf, StopCause,
};
use tdx_backend::status::{TDX_OPERAND_BUSY, TDX_OPERAND_INVALID};
use tdx_backend::testing::{Event, Scope, TdxModel};
use tdx_backend::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_TDX_FINALIZE_VM,
};
use tdx_backend::{measure_plan, Error, TdParams, TdxBackend, TDX_CAPS};

const RCX: u64 = 0x0080_9000;
const PAGE: u64 = 4096;

fn cmd_bytes(c: &kvm_tdx_cmd) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&c.id.to_le_bytes());
    v.extend_from_slice(&c.flags.to_le_bytes());
    v.extend_from_slice(&c.data.to_le_bytes());
    v.extend_from_slice(&c.hw_error.to_le_bytes());
    v
}

fn launched() -> TdxBackend<TdxModel> {
    let mut td = TdxBackend::new(TdxModel::new());
    td.capabilities().unwrap();
    td.init_vm(&TdParams::default()).unwrap();
    td.init_vcpu(RCX).unwrap();
    td
}

/// A buffer whose data starts one byte past a page boundary (so the backend must bounce it).
fn unaligned(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; len + 1];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    v
}

fn assert_report_matches_ledger(plan: &Plan<'_>, report: &cc_populate::Report, model: &TdxModel) {
    for (i, r) in plan.regions().iter().enumerate() {
        assert_eq!(
            report.regions[i].populated,
            model.populated_in(r.gpa(), r.len()),
            "region {i}"
        );
    }
    assert!(
        model.twice.is_empty(),
        "pages populated twice: {:?}",
        model.twice
    );
}

#[test]
fn launch_sequence_sends_exact_bytes() {
    let mut td = TdxBackend::new(TdxModel::new());
    let caps = td.capabilities().unwrap();
    assert_eq!(caps.supported_attrs, 1 << 28);
    assert_eq!(caps.cpuid.len(), 2);
    assert_eq!((caps.cpuid[1].function, caps.cpuid[1].index), (7, 1));

    let params = TdParams {
        attributes: 1 << 28,
        xfam: 0x6_02e7,
        mrconfigid: [0x11; 48],
        mrowner: [0x22; 48],
        mrownerconfig: [0x33; 48],
        cpuid: vec![kvm_cpuid_entry2 {
            function: 7,
            index: 0,
            flags: 1,
            eax: 0,
            ebx: 0xffff_ffff,
            ecx: 2,
            edx: 3,
            padding: [0; 3],
        }],
    };
    td.init_vm(&params).unwrap();
    td.init_vcpu(RCX).unwrap();
    let page = vec![0x5au8; 4096];
    let plan = PlanBuilder::new()
        .source(0xffff_f000, Role::Measured, &page)
        .zero(0x80_0000, PAGE)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    Driver::new(&mut td).run(&plan).unwrap();
    td.finalize().unwrap();

    let calls = &td.ioctl().calls;
    assert_eq!(calls.len(), 6);

    // KVM_TDX_CAPABILITIES: id 0, data -> struct kvm_tdx_capabilities with room for 256 entries.
    assert_eq!(calls[0].scope, Scope::Vm);
    assert_eq!(cmd_bytes(&calls[0].cmd), [0u8; 24]);
    let p = calls[0].payload.as_ref().unwrap();
    assert_eq!(p.len(), 2048 + 8 + 256 * 40);
    assert_eq!(&p[2048..2052], &[0x00, 0x01, 0x00, 0x00]);
    assert!(p.iter().enumerate().all(|(i, b)| *b == 0 || i == 2049));

    // KVM_TDX_INIT_VM: id 1; struct kvm_tdx_init_vm built by hand.
    assert_eq!(calls[1].scope, Scope::Vm);
    let mut c = [0u8; 24];
    c[0] = 1;
    assert_eq!(cmd_bytes(&calls[1].cmd), c);
    let mut expect = vec![0u8; 264 + 40];
    expect[3] = 0x10; // attributes = 1 << 28
    expect[8..11].copy_from_slice(&[0xe7, 0x02, 0x06]); // xfam
    expect[16..64].fill(0x11);
    expect[64..112].fill(0x22);
    expect[112..160].fill(0x33);
    expect[256] = 1; // cpuid.nent
    expect[264] = 7; // function
    expect[272] = 1; // flags
    expect[280..284].fill(0xff); // ebx
    expect[284] = 2; // ecx
    expect[288] = 3; // edx
    assert_eq!(calls[1].payload.as_deref(), Some(&expect[..]));

    // KVM_TDX_INIT_VCPU on the vCPU: id 2, data = initial RCX (an immediate).
    assert_eq!(calls[2].scope, Scope::Vcpu);
    assert_eq!(
        cmd_bytes(&calls[2].cmd),
        [2, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x90, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(calls[2].payload, None);

    // KVM_TDX_INIT_MEM_REGION: id 3, flags KVM_TDX_MEASURE_MEMORY_REGION for the measured page,
    // 0 for the zero page; one page each, source at the start of the source buffer.
    let mut c = [0u8; 24];
    c[0] = 3;
    c[4] = 1;
    assert_eq!(calls[3].scope, Scope::Vcpu);
    assert_eq!(cmd_bytes(&calls[3].cmd), c);
    assert_eq!(
        calls[3].region,
        Some(kvm_tdx_init_mem_region {
            source_addr: 0,
            gpa: 0xffff_f000,
            nr_pages: 1
        })
    );
    c[4] = 0;
    assert_eq!(cmd_bytes(&calls[4].cmd), c);
    assert_eq!(
        calls[4].region,
        Some(kvm_tdx_init_mem_region {
            source_addr: 0,
            gpa: 0x80_0000,
            nr_pages: 1
        })
    );

    // KVM_TDX_FINALIZE_VM: id 4, nothing else.
    let mut c = [0u8; 24];
    c[0] = 4;
    assert_eq!(calls[5].scope, Scope::Vm);
    assert_eq!(cmd_bytes(&calls[5].cmd), c);

    assert_eq!(td.ioctl().params.as_ref(), Some(&params));
    assert_eq!(td.ioctl().vcpu_rcx, Some(RCX));
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

#[test]
fn full_run_matches_the_ledger_and_the_offline_mrtd() {
    let fw = unaligned(5 * 4096, 1);
    let hob = unaligned(4096, 2);
    let buf = SourceBuf::from_slice(&unaligned(3 * 4096, 3)[1..]).unwrap();
    let mut plan = PlanBuilder::new()
        .source(0xfffe_b000, Role::Measured, &fw[1..])
        .source(0x80_9000, Role::Unmeasured, &hob[1..])
        .zero(0x80_0000, 2 * PAGE)
        .buffer(0x100_0000, Role::Measured, buf)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    let report = Driver::new(&mut td).run_releasing(&mut plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(
        report.bytes_released(),
        3 * PAGE,
        "the SourceBuf is released"
    );
    assert_eq!(report.calls(), 4);
    assert_eq!(report.convert_calls(), 4);
    let model = td.ioctl();
    assert_report_matches_ledger(&plan, &report, model);
    for r in plan.regions() {
        for p in 0..r.len() / PAGE {
            let gpa = r.gpa() + p * PAGE;
            assert!(model.is_private(gpa));
            assert_eq!(
                model.added[&gpa].measured,
                r.role() == Role::Measured,
                "{gpa:#x}"
            );
        }
    }
    // The released plan can no longer be measured offline; a fresh copy of it can.
    assert!(measure_plan(&plan).is_err());
    td.finalize().unwrap();
    let buf = SourceBuf::from_slice(&unaligned(3 * 4096, 3)[1..]).unwrap();
    let again = PlanBuilder::new()
        .source(0xfffe_b000, Role::Measured, &fw[1..])
        .source(0x80_9000, Role::Unmeasured, &hob[1..])
        .zero(0x80_0000, 2 * PAGE)
        .buffer(0x100_0000, Role::Measured, buf)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&again).unwrap()));
}

#[test]
fn interrupted_and_busy_calls_resume_where_the_kernel_stopped() {
    let fw = unaligned(8 * 4096, 4);
    let gpa = 0x40_0000;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &fw[1..])
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut().script.extend([
        Event::Signal { after_pages: 2 },
        Event::Again { after_pages: 1 },
    ]);
    let report = Driver::new(&mut td).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(report.regions[0].calls, 3);
    assert_eq!(report.regions[0].retries, 2);
    let model = td.ioctl();
    let regions: Vec<_> = model.calls[3..].iter().map(|c| c.region.unwrap()).collect();
    let at = |pages: u64, left: u64| kvm_tdx_init_mem_region {
        source_addr: 0,
        gpa: gpa + pages * PAGE,
        nr_pages: left,
    };
    assert_eq!(regions, vec![at(0, 8), at(2, 6), at(3, 5)]);
    assert_eq!(
        model.calls[3..]
            .iter()
            .map(|c| c.result)
            .collect::<Vec<_>>(),
        vec![Err(libc::EINTR), Err(libc::EAGAIN), Ok(())]
    );
    assert_report_matches_ledger(&plan, &report, model);
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

#[test]
fn module_error_stops_with_an_exact_report_and_resume_completes() {
    let fw = unaligned(4 * 4096, 5);
    let gpa = 0xfffc_0000u64;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &fw[1..])
        .zero(0x80_0000, 2 * PAGE)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut().script.push_back(Event::ModuleError {
        after_pages: 3,
        hw_error: None,
    });
    let mut driver = Driver::new(&mut td);
    let err = driver.run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].populated, 3 * PAGE);
    assert_eq!(report.regions[1].populated, 0);
    let stop = report.stop.as_ref().unwrap();
    assert_eq!((stop.region, stop.gpa), (0, gpa + 3 * PAGE));
    assert_eq!(stop.page_type, "PAGE.ADD+MR.EXTEND");
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!(e.kind, ErrorKind::Failed);
    assert_eq!(e.errno, Some(libc::EIO));
    assert_eq!(e.platform, None);
    assert!(
        e.detail
            .contains("stopped at GPA 0xfffc3000 after 3 page(s)"),
        "{}",
        e.detail
    );
    assert!(
        e.detail
            .contains("TDH.MEM.PAGE.ADD or TDH.MR.EXTEND failed"),
        "{}",
        e.detail
    );
    assert_report_matches_ledger(&plan, &report, driver.backend().ioctl());

    let done = driver.resume(&plan, &report).unwrap();
    assert!(done.is_complete());
    assert_report_matches_ledger(&plan, &done, td.ioctl());
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

#[test]
fn module_status_is_surfaced_by_name_and_busy_is_retried() {
    let page = vec![1u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x1000, Role::Measured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut().script.push_back(Event::ModuleError {
        after_pages: 0,
        hw_error: Some(TDX_OPERAND_INVALID | 0x1),
    });
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    let RunError::Stopped(report) = &err else {
        panic!("{err}")
    };
    let StopCause::Backend(e) = &report.stop.as_ref().unwrap().cause else {
        panic!()
    };
    let p = e.platform.as_ref().unwrap();
    assert_eq!(
        (p.code, &*p.name),
        (TDX_OPERAND_INVALID | 1, "TDX_OPERAND_INVALID")
    );
    assert!(
        err.to_string()
            .contains("TDX_OPERAND_INVALID (0xc000010000000001)"),
        "{err}"
    );
    assert!(e.detail.contains("an operand is invalid"), "{}", e.detail);

    let mut td = launched();
    td.ioctl_mut().script.push_back(Event::ModuleError {
        after_pages: 0,
        hw_error: Some(TDX_OPERAND_BUSY | 0x92),
    });
    let report = Driver::new(&mut td).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(report.retries(), 1);
}

#[test]
fn finalize_reports_the_module_status() {
    let mut td = launched();
    td.ioctl_mut().fail_vm_op = Some((KVM_TDX_FINALIZE_VM, libc::EBUSY, TDX_OPERAND_BUSY));
    let e = td.finalize().unwrap_err();
    assert_eq!(
        e,
        Error::Ioctl {
            op: "KVM_TDX_FINALIZE_VM",
            errno: libc::EBUSY,
            hw_error: TDX_OPERAND_BUSY,
            detail: String::new()
        }
    );
    assert!(
        e.to_string()
            .contains("TDX_OPERAND_BUSY (0x8000020000000000): an operand is locked by another operation; retry"),
        "{e}"
    );
    assert!(!td.is_finalized());
    td.finalize().unwrap();
    assert!(td.is_finalized());
    // Nothing can be added after finalization.
    let page = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0, Role::Unmeasured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    assert!(err.to_string().contains("finalized"), "{err}");
}

#[test]
fn populate_before_init_vcpu_is_refused_by_the_kernel() {
    let mut td = TdxBackend::new(TdxModel::new());
    td.init_vm(&TdParams::default()).unwrap();
    let page = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x2000, Role::Measured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    let report = err.report().unwrap();
    assert_eq!(report.bytes_populated(), 0);
    let StopCause::Backend(e) = &report.stop.as_ref().unwrap().cause else {
        panic!()
    };
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert!(e.detail.contains("vCPU not initialized"), "{}", e.detail);
}

#[test]
fn the_model_refuses_a_second_populate_and_unconverted_memory() {
    let page = vec![9u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x3000, Role::Measured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    Driver::new(&mut td).run(&plan).unwrap();
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    assert_eq!(td.ioctl().twice, vec![0x3000]);
    assert!(err.to_string().contains("already populated"), "{err}");

    // Memory the caller claims it converted, but did not: guest_memfd refuses (EINVAL).
    let mut td = launched();
    let opts = DriverOptions {
        conversion: ConversionPolicy::CallerConverted,
        ..DriverOptions::default()
    };
    let err = Driver::new(&mut td)
        .with_options(opts)
        .run(&plan)
        .unwrap_err();
    let StopCause::Backend(e) = &err.report().unwrap().stop.as_ref().unwrap().cause else {
        panic!()
    };
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert!(e.detail.contains("non-private range"), "{}", e.detail);
    assert!(td.ioctl().added.is_empty());
}

#[test]
fn large_unaligned_sources_go_through_the_bounce_buffer_and_resume() {
    let len = (3 << 20) + 4096;
    let data = unaligned(len, 6);
    let gpa = 0x1000_0000u64;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &data[1..])
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut()
        .script
        .extend([Event::Complete, Event::Signal { after_pages: 5 }]);
    let report = Driver::new(&mut td).run(&plan).unwrap();
    assert!(report.is_complete());
    let model = td.ioctl();
    let regions: Vec<_> = model.calls[3..].iter().map(|c| c.region.unwrap()).collect();
    let r = |off: u64, n: u64| kvm_tdx_init_mem_region {
        source_addr: 0,
        gpa: gpa + off,
        nr_pages: n,
    };
    assert_eq!(
        regions,
        vec![r(0, 512), r(2 << 20, 257), r((2 << 20) + 5 * PAGE, 252)]
    );
    assert_report_matches_ledger(&plan, &report, model);
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}
