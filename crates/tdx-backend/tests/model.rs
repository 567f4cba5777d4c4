//! The backend driven by cc-populate's driver through the in-process model of Linux 6.18.2's
//! TDX code: exact ioctl bytes, partial progress, retries, the states 6.18 cannot leave, and
//! the check that the VM is a TD.

use cc_populate::{
    Backend, ChunkRequest, ChunkSource, ConversionPolicy, Driver, DriverOptions, ErrorKind,
    MemoryLayout, Plan, PlanBuilder, Role, RunError, SourceBuf, StopCause,
};
use tdx_backend::status::{TDX_OPERAND_BUSY, TDX_OPERAND_INVALID};
use tdx_backend::testing::{Event, Host, Memslot, Scope, TdxModel, VmFault, X86Call, SHARED_BIT};
use tdx_backend::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_MAX_CPUID_ENTRIES,
    KVM_TDX_CMD_NR_MAX, KVM_TDX_FINALIZE_VM, KVM_TDX_GET_CPUID, KVM_TDX_INIT_MEM_REGION,
    KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM, TDX_MAX_CPUID_CONFIG,
};
use tdx_backend::{
    measure_plan, AddedRange, Error, PageState, TdParams, TdxBackend, TdxIoctl, INIT_VM_ATTEMPTS,
    TDX_CAPS,
};

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
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    vcpus(&mut td, 1);
    td
}

/// The split irqchip, then vCPUs 0..n created, given a CPUID with x2APIC and initialized.
fn vcpus(td: &mut TdxBackend<TdxModel>, n: u64) {
    td.enable_split_irqchip(24).unwrap();
    for id in 0..n {
        td.create_vcpu(id).unwrap();
        td.set_cpuid(id, &TdxModel::minimal_vcpu_cpuid()).unwrap();
        td.init_vcpu(id, RCX).unwrap();
    }
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
    assert_eq!(caps.cpuid.len(), 3);
    assert_eq!(
        (caps.cpuid[0].function, caps.cpuid[0].index),
        (0x8000_0008, 0)
    );
    assert_eq!((caps.cpuid[2].function, caps.cpuid[2].index), (7, 1));

    let params = TdParams {
        attributes: 1 << 28,
        xfam: 0x6_02e7,
        mrconfigid: [0x11; 48],
        mrowner: [0x22; 48],
        mrownerconfig: [0x33; 48],
        // Leaf 7.0 without TSX (EBX bits 4, 11) or WAITPKG (ECX bit 5), and the GPAW leaf:
        // arch/x86/kvm/vmx/tdx.c: setup_tdparams refuses a CPUID without either.
        cpuid: vec![
            kvm_cpuid_entry2 {
                function: 7,
                index: 0,
                flags: 1,
                eax: 0,
                ebx: 0xffff_f7ef,
                ecx: 2,
                edx: 3,
                padding: [0; 3],
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0008,
                eax: 48 << 16,
                ..Default::default()
            },
        ],
    };
    td.init_vm(&params).unwrap();
    vcpus(&mut td, 1);
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
    let mut expect = vec![0u8; 264 + 2 * 40];
    expect[3] = 0x10; // attributes = 1 << 28
    expect[8..11].copy_from_slice(&[0xe7, 0x02, 0x06]); // xfam
    expect[16..64].fill(0x11);
    expect[64..112].fill(0x22);
    expect[112..160].fill(0x33);
    expect[256] = 2; // cpuid.nent
    expect[264] = 7; // function
    expect[272] = 1; // flags
    expect[280..284].copy_from_slice(&[0xef, 0xf7, 0xff, 0xff]); // ebx
    expect[284] = 2; // ecx
    expect[288] = 3; // edx
    expect[304..308].copy_from_slice(&[0x08, 0x00, 0x00, 0x80]); // function 0x80000008
    expect[318] = 48; // eax = 48 << 16
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
    assert_eq!(td.ioctl().vcpu_rcx(0), Some(RCX));
    assert_eq!(
        td.ioctl().x86_calls,
        [
            X86Call::EnableSplitIrqchip(24, Ok(())),
            X86Call::CreateVcpu(0, Ok(())),
            X86Call::SetCpuid(0, 1, Ok(())),
        ]
    );
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
    assert!(matches!(
        measure_plan(&plan),
        Err(Error::Content { region: 3, .. })
    ));
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
fn interrupted_calls_resume_where_the_kernel_stopped() {
    let fw = unaligned(8 * 4096, 4);
    let gpa = 0x40_0000;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &fw[1..])
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut().script.extend([
        Event::Signal { after_pages: 2 },
        Event::Signal { after_pages: 1 },
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
        vec![Err(libc::EINTR), Err(libc::EINTR), Ok(())]
    );
    assert_report_matches_ledger(&plan, &report, model);
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

/// Runs a measured 4-page region then a zero region; `event` hits the first call.
fn run_into(event: Event) -> (TdxBackend<TdxModel>, cc_populate::Report, u64) {
    let fw = unaligned(4 * 4096, 5);
    let gpa = 0xfffc_0000u64;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &fw[1..])
        .zero(0x80_0000, 2 * PAGE)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut().script.push_back(event);
    let mut driver = Driver::new(&mut td);
    let err = driver.run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    // The report counts the pages added whole; the page it stopped at may be in the TD
    // half-measured (ExtendFailed), which the backend's Unrecoverable says.
    let model = driver.backend().ioctl();
    let stop = report.stop.as_ref().unwrap().gpa;
    for (i, r) in plan.regions().iter().enumerate() {
        let half = u64::from(
            model
                .added
                .get(&stop)
                .is_some_and(|p| p.chunks_extended < 16),
        );
        let whole = model.populated_in(r.gpa(), r.len())
            - half * u64::from(r.gpa() <= stop && stop < r.gpa() + r.len()) * PAGE;
        assert_eq!(report.regions[i].populated, whole, "region {i}");
    }
    // Linux 6.18 cannot take the page again: the driver refuses to resume, and calls nothing.
    let calls = driver.backend().ioctl().calls.len();
    let again = driver.resume(&plan, &report).unwrap_err();
    assert!(matches!(again, RunError::Unrecoverable(_)), "{again}");
    assert_eq!(driver.backend().ioctl().calls.len(), calls);
    (td, report, gpa)
}

/// Runs `plan` with the caller claiming every region is already private; it must fail.
fn run_caller_converted(td: &mut TdxBackend<TdxModel>, plan: &Plan<'_>) -> RunError {
    let opts = DriverOptions {
        conversion: ConversionPolicy::CallerConverted,
        ..DriverOptions::default()
    };
    Driver::new(td).with_options(opts).run(plan).unwrap_err()
}

fn backend_error(report: &cc_populate::Report) -> &cc_populate::BackendError {
    let StopCause::Backend(e) = &report.stop.as_ref().unwrap().cause else {
        panic!("{:?}", report.stop)
    };
    e
}

/// What Linux 6.18 does with the page left behind, asked of the model directly: adding it
/// again is EEXIST (guest_memfd has it prepared); finalize is EINVAL while it is pre-mapped.
fn kernel_refuses_retry_and_finalize(td: &mut TdxBackend<TdxModel>, page: u64) -> Result<(), i32> {
    let model = td.ioctl_mut();
    assert!(model.is_prepared(page));
    let src = vec![0u8; 2 * 4096];
    let off = src.as_ptr().align_offset(4096);
    let src = &src[off..off + 4096];
    let mut region = kvm_tdx_init_mem_region {
        source_addr: src.as_ptr() as u64,
        gpa: page,
        nr_pages: 1,
    };
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_MEM_REGION,
        ..Default::default()
    };
    assert_eq!(
        model.init_mem_region(&mut cmd, &mut region, src),
        Err(libc::EEXIST)
    );
    assert_eq!(region.nr_pages, 1, "nothing done");
    assert_eq!(model.twice, vec![page]);
    let mut fin = kvm_tdx_cmd {
        id: KVM_TDX_FINALIZE_VM,
        ..Default::default()
    };
    model.vm_op(&mut fin, None)
}

#[test]
fn a_failed_page_add_is_unrecoverable_and_says_what_is_in_the_td() {
    let (mut td, report, gpa) = run_into(Event::PageAddFailed { after_pages: 3 });
    assert_eq!(report.regions[0].populated, 3 * PAGE);
    assert_eq!(report.regions[1].populated, 0);
    let stop = report.stop.as_ref().unwrap();
    assert_eq!((stop.region, stop.gpa), (0, gpa + 3 * PAGE));
    assert_eq!(stop.page_type, "PAGE.ADD+MR.EXTEND");
    let e = backend_error(&report);
    assert!(e.unrecoverable);
    assert_eq!(e.kind, ErrorKind::Failed);
    assert_eq!(e.errno, Some(libc::EIO));
    // Linux 6.18 does not copy hw_error out for vCPU commands: there is no module status.
    assert_eq!(e.platform, None);
    assert!(
        e.detail
            .contains("stopped at GPA 0xfffc3000 after 3 page(s)"),
        "{}",
        e.detail
    );
    assert!(
        e.detail
            .contains("in the TD (12288 bytes added by this backend): [0xfffc0000..0xfffc3000) measured; tear the VM down"),
        "{}",
        e.detail
    );
    let u = td.unrecoverable().unwrap().clone();
    assert_eq!(u.page, gpa + 3 * PAGE);
    assert_eq!(u.errno, libc::EIO);
    assert_eq!(u.page_state, PageState::NotAddedOrPartlyMeasured);
    assert_eq!(
        u.in_td,
        vec![AddedRange {
            gpa,
            len: 3 * PAGE,
            measured: true
        }]
    );
    // The backend refuses finalize without an ioctl, and populates nothing more.
    let calls = td.ioctl().calls.len();
    assert_eq!(
        td.finalize(),
        Err(Error::Unrecoverable(Box::new(u.clone())))
    );
    assert!(td
        .finalize()
        .unwrap_err()
        .to_string()
        .contains("tear the VM down"));
    assert_eq!(td.ioctl().calls.len(), calls);
    let zero = td.populate(&ChunkRequest {
        region: 1,
        gpa: 0x80_0000,
        len: PAGE,
        role: Role::Zero,
        source: ChunkSource::Zero,
    });
    let e = zero.result.unwrap_err();
    assert!(e.unrecoverable && e.detail.contains("not sent"), "{e}");
    assert_eq!(td.ioctl().calls.len(), calls);
    // The kernel: the page is pre-mapped, not added.
    assert_eq!(td.ioctl().premapped(), 1);
    assert!(!td.ioctl().added.contains_key(&u.page));
    assert_eq!(
        kernel_refuses_retry_and_finalize(&mut td, u.page),
        Err(libc::EINVAL)
    );
    assert_eq!(td.ioctl().mrtd(), None);
}

#[test]
fn a_busy_page_add_is_unrecoverable_too() {
    let (mut td, report, gpa) = run_into(Event::PageAddBusy { after_pages: 0 });
    assert_eq!(report.regions[0].populated, 0);
    let e = backend_error(&report);
    assert!(e.unrecoverable, "EBUSY is not retried in 6.18");
    assert_eq!(e.errno, Some(libc::EBUSY));
    assert_eq!(report.regions[0].retries, 0);
    let u = td.unrecoverable().unwrap().clone();
    assert_eq!((u.page, u.page_state), (gpa, PageState::PreMappedNotAdded));
    assert!(u.in_td.is_empty());
    assert!(
        e.detail
            .contains("in the TD (0 bytes added by this backend): nothing"),
        "{}",
        e.detail
    );
    assert_eq!(
        kernel_refuses_retry_and_finalize(&mut td, gpa),
        Err(libc::EINVAL)
    );
}

#[test]
fn a_failed_unmeasured_add_is_a_pre_mapped_page() {
    let page = vec![3u8; 2 * 4096];
    let plan = PlanBuilder::new()
        .source(0x10_0000, Role::Unmeasured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut()
        .script
        .push_back(Event::PageAddFailed { after_pages: 1 });
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    assert_eq!(err.report().unwrap().regions[0].populated, PAGE);
    let u = td.unrecoverable().unwrap();
    assert_eq!(u.page_state, PageState::PreMappedNotAdded);
    assert_eq!(
        u.in_td,
        vec![AddedRange {
            gpa: 0x10_0000,
            len: PAGE,
            measured: false
        }]
    );
}

#[test]
fn a_failed_extend_leaves_a_page_in_the_td_with_a_wrong_mrtd() {
    let (mut td, report, gpa) = run_into(Event::ExtendFailed {
        after_pages: 1,
        chunk: 5,
    });
    assert_eq!(report.regions[0].populated, PAGE);
    let u = td.unrecoverable().unwrap().clone();
    assert_eq!(u.page, gpa + PAGE);
    assert_eq!(u.page_state, PageState::NotAddedOrPartlyMeasured);
    // The model (the kernel): added, 5 of 16 chunks measured, nothing pre-mapped; finalize
    // would succeed with an MRTD no plan has, which is why the backend refuses it.
    let model = td.ioctl();
    assert_eq!(model.added[&(gpa + PAGE)].chunks_extended, 5);
    assert_eq!(model.premapped(), 0);
    assert_eq!(
        kernel_refuses_retry_and_finalize(&mut td, gpa + PAGE),
        Ok(())
    );
    let fw = unaligned(4 * 4096, 5);
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &fw[1..])
        .zero(0x80_0000, 2 * PAGE)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_ne!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

#[test]
fn a_signal_after_the_fault_makes_the_retry_see_eexist() {
    let (td, report, gpa) = run_into(Event::SignalAfterFault { after_pages: 2 });
    // EINTR is retried; the retry finds the page prepared: EEXIST, unrecoverable.
    assert_eq!(report.regions[0].retries, 1);
    assert_eq!(report.regions[0].populated, 2 * PAGE);
    let e = backend_error(&report);
    assert_eq!(e.errno, Some(libc::EEXIST));
    assert!(e.unrecoverable);
    let u = td.unrecoverable().unwrap();
    assert_eq!(
        (u.page, u.page_state),
        (gpa + 2 * PAGE, PageState::AlreadyPrepared)
    );
    assert_eq!(td.ioctl().twice, vec![gpa + 2 * PAGE]);
    assert_eq!(td.ioctl().premapped(), 0);
}

#[test]
fn an_unreadable_source_is_a_plain_failure_that_resumes() {
    let fw = unaligned(3 * 4096, 8);
    let plan = PlanBuilder::new()
        .source(0x20_0000, Role::Measured, &fw[1..])
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut()
        .script
        .push_back(Event::SourceFault { after_pages: 1 });
    let mut driver = Driver::new(&mut td);
    let report = driver.run(&plan).unwrap_err().report().unwrap().clone();
    let e = backend_error(&report);
    assert_eq!((e.errno, e.unrecoverable), (Some(libc::EFAULT), false));
    assert!(
        e.detail.contains("the page was not touched"),
        "{}",
        e.detail
    );
    // get_user_pages_fast failed before the fault: the page is not prepared, so it can be added.
    let done = driver.resume(&plan, &report).unwrap();
    assert!(done.is_complete());
    assert!(td.unrecoverable().is_none());
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

#[test]
fn a_memslot_end_stops_a_populate_and_it_resumes_once_memory_is_there() {
    let data = unaligned(4 * 4096, 9);
    let gpa = 0x10_0000 - 2 * PAGE;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &data[1..])
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    td.ioctl_mut().memslots = vec![
        Memslot {
            gpa: 0,
            len: 0x10_0000,
            guest_memfd: true,
        },
        Memslot {
            gpa: 0x10_0000,
            len: 0x10_0000,
            guest_memfd: false,
        },
    ];
    let mut driver = Driver::new(&mut td);
    let report = driver.run(&plan).unwrap_err().report().unwrap().clone();
    // kvm_gmem_populate: the page after the guest_memfd memslot is in a slot without
    // guest_memfd: EINVAL, after the two pages before it, written back.
    assert_eq!(report.regions[0].populated, 2 * PAGE);
    let e = backend_error(&report);
    assert_eq!((e.errno, e.unrecoverable), (Some(libc::EINVAL), false));
    assert!(
        e.detail.contains("a page in no guest_memfd memslot"),
        "{}",
        e.detail
    );
    let model = driver.backend().ioctl();
    assert_eq!(
        model.calls.last().unwrap().region.unwrap(),
        kvm_tdx_init_mem_region {
            source_addr: 0,
            gpa,
            nr_pages: 4
        }
    );
    assert!(!model.is_prepared(0x10_0000));
    // Two guest_memfd memslots back to back: a populate crosses from one to the next.
    driver.backend_mut().ioctl_mut().memslots[1].guest_memfd = true;
    let done = driver.resume(&plan, &report).unwrap();
    assert!(done.is_complete());
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan).unwrap()));
}

#[test]
fn a_shared_bit_gpa_is_refused_before_any_page() {
    let page = vec![0u8; 4096];
    let gpa = SHARED_BIT | 0x1000;
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut td = launched();
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    let e = backend_error(err.report().unwrap());
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert!(td.ioctl().added.is_empty());
}

#[test]
fn init_vm_is_retried_on_eagain_as_qemu_does() {
    let mut td = TdxBackend::new(TdxModel::new());
    td.ioctl_mut()
        .vm_faults
        .extend([VmFault::InitVmNoEntropy; 3]);
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    let calls = &td.ioctl().calls;
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls.iter().map(|c| c.result).collect::<Vec<_>>(),
        vec![
            Err(libc::EAGAIN),
            Err(libc::EAGAIN),
            Err(libc::EAGAIN),
            Ok(())
        ]
    );
    assert!(td.ioctl().params.is_some());

    // The bound: INIT_VM_ATTEMPTS calls, then a hard error.
    let mut td = TdxBackend::new(TdxModel::new());
    td.ioctl_mut().vm_faults.extend(std::iter::repeat_n(
        VmFault::InitVmNoEntropy,
        INIT_VM_ATTEMPTS as usize,
    ));
    let e = td.init_vm(&TdxModel::minimal_params()).unwrap_err();
    assert_eq!(td.ioctl().calls.len(), 10_000);
    assert!(td.ioctl().params.is_none());
    let Error::Ioctl { errno, detail, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*errno, libc::EAGAIN);
    assert!(detail.contains("10000 attempts"), "{detail}");
}

#[test]
fn init_vm_names_the_operand_the_module_refused_and_is_not_retried() {
    let mut td = TdxBackend::new(TdxModel::new());
    td.ioctl_mut()
        .vm_faults
        .push_back(VmFault::InitVmOperandInvalid(TDX_OPERAND_INVALID | 3));
    let e = td.init_vm(&TdxModel::minimal_params()).unwrap_err();
    assert!(
        matches!(e, Error::Ioctl { errno: libc::EINVAL, hw_error, .. } if hw_error == TDX_OPERAND_INVALID | 3),
        "{e:?}"
    );
    assert!(e.to_string().contains("TDX_OPERAND_INVALID"), "{e}");
    assert_eq!(td.ioctl().calls.len(), 1);
}

#[test]
fn capabilities_ask_for_the_kernel_maximum_once() {
    let mut td = TdxBackend::new(TdxModel::new());
    td.ioctl_mut().cpuid_entries = TDX_MAX_CPUID_CONFIG;
    let caps = td.capabilities().unwrap();
    assert_eq!(caps.cpuid.len(), 128);
    let calls = &td.ioctl().calls;
    assert_eq!(calls.len(), 1);
    let p = calls[0].payload.as_ref().unwrap();
    assert_eq!(p.len(), 2048 + 8 + KVM_MAX_CPUID_ENTRIES as usize * 40);

    // The model, as tdx_get_capabilities: E2BIG when the room is short, nent not written back.
    let mut model = TdxModel::new();
    let mut b = vec![0u8; 2048 + 8 + 40];
    b[2048] = 1;
    let mut cmd = kvm_tdx_cmd::default();
    assert_eq!(model.vm_op(&mut cmd, Some(&mut b)), Err(libc::E2BIG));
    assert_eq!(b[2048..2052], [1, 0, 0, 0]);
}

#[test]
fn the_model_answers_vm_and_vcpu_commands_as_6_18_does() {
    let mut td = launched();
    let model = td.ioctl_mut();
    // hw_error set on input: EINVAL, VM and vCPU.
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_FINALIZE_VM,
        hw_error: 1,
        ..Default::default()
    };
    assert_eq!(model.vm_op(&mut cmd, None), Err(libc::EINVAL));
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_VCPU,
        hw_error: 1,
        ..Default::default()
    };
    assert_eq!(model.vcpu_op(&mut cmd, None), Err(libc::EINVAL));
    // Command 6 is KVM_TDX_CMD_NR_MAX: no such command (there is no KVM_TDX_TERMINATE_VM).
    for id in [KVM_TDX_CMD_NR_MAX, 7] {
        let mut cmd = kvm_tdx_cmd {
            id,
            ..Default::default()
        };
        assert_eq!(model.vm_op(&mut cmd, None), Err(libc::EINVAL));
        assert_eq!(model.vcpu_op(&mut cmd, None), Err(libc::EINVAL));
    }
    // KVM_TDX_GET_CPUID writes the count back with E2BIG (tdx_vcpu_get_cpuid).
    let mut b = vec![0u8; 8];
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_GET_CPUID,
        ..Default::default()
    };
    // (The model answers the one entry INIT_VM was given: the GPAW leaf.)
    assert_eq!(model.vcpu_op(&mut cmd, Some(&mut b)), Err(libc::E2BIG));
    assert_eq!(b[0..4], [1, 0, 0, 0]);
    let mut b = vec![0u8; 48];
    b[0] = 1;
    assert_eq!(model.vcpu_op(&mut cmd, Some(&mut b)), Ok(()));
    assert_eq!(b[8..12], [0x08, 0, 0, 0x80]);
    // FINALIZE reads neither flags nor data.
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_FINALIZE_VM,
        flags: 1,
        data: 9,
        ..Default::default()
    };
    assert_eq!(model.vm_op(&mut cmd, None), Ok(()));
    // After finalization every vCPU command is EINVAL.
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_GET_CPUID,
        ..Default::default()
    };
    assert_eq!(model.vcpu_op(&mut cmd, Some(&mut b)), Err(libc::EINVAL));
}

#[test]
fn no_tdx_command_reaches_an_ordinary_vm_on_an_amd_sev_host() {
    // What the danger is: command 0 on such a VM is KVM_SEV_INIT, and it "succeeds".
    let mut raw = TdxModel::ordinary_vm(Host::AmdSev);
    let mut cmd = kvm_tdx_cmd::default();
    let mut caps = vec![0u8; 2048 + 8];
    assert_eq!(raw.vm_op(&mut cmd, Some(&mut caps)), Ok(()));
    assert!(raw.sev_initialized);
    // sev_mem_enc_ioctl on such a VM: a second KVM_SEV_INIT is EINVAL (sev->active), and
    // before SEV init an id the switch lacks is EINVAL (default), a launch command ENOTTY.
    assert_eq!(raw.vm_op(&mut cmd, Some(&mut caps)), Err(libc::EINVAL));
    let mut fresh = TdxModel::ordinary_vm(Host::AmdSev);
    for (id, errno) in [
        (2, libc::ENOTTY),
        (4, libc::ENOTTY),
        (10, libc::EINVAL),
        (22, libc::EINVAL),
        (50, libc::EINVAL),
        (100, libc::ENOTTY),
        (101, libc::EINVAL),
    ] {
        let mut cmd = kvm_tdx_cmd {
            id,
            ..Default::default()
        };
        assert_eq!(fresh.vm_op(&mut cmd, None), Err(errno), "id {id}");
    }
    assert!(!fresh.sev_initialized);

    let mut td = TdxBackend::initialized(TdxModel::ordinary_vm(Host::AmdSev), &[0]);
    let e = td.capabilities().unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("KVM_CAP_VM_TYPES on the VM fd is 0x1d"),
        "{e}"
    );
    assert!(e.to_string().contains("no TDX command was sent"), "{e}");
    // Each later step is refused before any ioctl: the TD never came to be.
    let calls = td.ioctl().calls.len();
    assert!(matches!(
        td.init_vm(&TdxModel::minimal_params()),
        Err(Error::TooLate { .. })
    ));
    assert!(matches!(td.init_vcpu(0, RCX), Err(Error::TooLate { .. })));
    assert!(matches!(td.finalize(), Err(Error::NotSupported { .. })));
    assert_eq!(td.ioctl().calls.len(), calls, "no TDX command was sent");
    let page = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x1000, Role::Measured, &page)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let err = run_caller_converted(&mut td, &plan);
    let e = backend_error(err.report().unwrap());
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(td.ioctl().calls.is_empty(), "{:?}", td.ioctl().calls);
    assert!(!td.ioctl().sev_initialized);
}

#[test]
fn an_ordinary_vm_on_a_tdx_host_is_not_a_td() {
    let mut td = TdxBackend::new(TdxModel::ordinary_vm(Host::Tdx));
    let e = td.capabilities().unwrap_err();
    assert!(matches!(e, Error::NotATd { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "this VM is not a TD: KVM_CAP_SYNC_REGS on the VM fd is 0x7: the VM has no protected state, so it was not created as KVM_X86_TDX_VM; no TDX command was sent"
    );
    assert!(td.ioctl().calls.is_empty());
    // The model without the check: vt_mem_enc_ioctl's ENOTTY, vt_vcpu_mem_enc_ioctl's EINVAL.
    let model = td.ioctl_mut();
    let mut cmd = kvm_tdx_cmd::default();
    assert_eq!(model.vm_op(&mut cmd, None), Err(libc::ENOTTY));
    assert_eq!(model.vcpu_op(&mut cmd, None), Err(libc::EINVAL));
}

#[test]
fn a_failed_finalize_kills_the_vm() {
    // tdx_td_finalize (Linux 6.18.2): TDH.MR.FINALIZE failing other than busy is a KVM_BUG_ON:
    // EIO with the status in hw_error, and the VM is dead (kvm_vm_ioctl, kvm_vcpu_ioctl: EIO).
    let mut td = launched();
    td.ioctl_mut()
        .vm_faults
        .push_back(VmFault::FinalizeFailed(TDX_OPERAND_INVALID));
    let e = td.finalize().unwrap_err();
    assert!(
        matches!(e, Error::Ioctl { errno: libc::EIO, hw_error, .. } if hw_error == TDX_OPERAND_INVALID),
        "{e:?}"
    );
    assert!(e.to_string().contains("marks the VM dead"), "{e}");
    assert!(!td.is_finalized());
    let e = td.finalize().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Ioctl {
                errno: libc::EIO,
                hw_error: 0,
                ..
            }
        ),
        "{e:?}"
    );
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_GET_CPUID,
        ..Default::default()
    };
    let mut b = vec![0u8; 8];
    assert_eq!(
        td.ioctl_mut().vcpu_op(&mut cmd, Some(&mut b)),
        Err(libc::EIO)
    );
    assert_eq!(td.ioctl_mut().set_private(0, PAGE), Err(libc::EIO));

    // KVM_TDX_CAPABILITIES: EIO when the module reports no attributes (init_kvm_tdx_caps).
    let mut td = TdxBackend::new(TdxModel::new());
    td.ioctl_mut().supported_attrs = 0;
    let e = td.capabilities().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Ioctl {
                errno: libc::EIO,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn finalize_reports_the_module_status() {
    let mut td = launched();
    td.ioctl_mut()
        .vm_faults
        .push_back(VmFault::FinalizeBusy(TDX_OPERAND_BUSY));
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
    // The backend's guard would refuse first: tell it the vCPU is initialized when it is not
    // (created and given a CPUID, never KVM_TDX_INIT_VCPU'd), so the model answers.
    let mut model = TdxModel::new();
    model.split_irqchip = true;
    let mut td = TdxBackend::initialized(model, &[0]);
    td.init_vm(&TdxModel::minimal_params()).unwrap_err();
    let m = td.ioctl_mut();
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_VM,
        ..Default::default()
    };
    let mut b = TdxModel::minimal_params().to_bytes();
    m.vm_op(&mut cmd, Some(&mut b)).unwrap();
    m.create_vcpu(0).unwrap();
    m.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
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
    assert!(
        err.to_string()
            .contains("guest_memfd already has the page prepared"),
        "{err}"
    );
    assert_eq!(
        td.unrecoverable().map(|u| u.page_state),
        Some(PageState::AlreadyPrepared)
    );

    // Memory the caller claims it converted, but did not: guest_memfd refuses (EINVAL).
    let mut td = launched();
    let err = run_caller_converted(&mut td, &plan);
    let StopCause::Backend(e) = &err.report().unwrap().stop.as_ref().unwrap().cause else {
        panic!()
    };
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert!(e.detail.contains("a non-private page"), "{}", e.detail);
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

#[test]
fn init_vm_is_refused_where_setup_tdparams_refuses() {
    // arch/x86/kvm/vmx/tdx.c (Linux 6.18.2): setup_tdparams, setup_tdparams_eptp_controls,
    // setup_tdparams_cpuids, after tdx_td_init's own checks. Each refusal leaves the TD
    // uninitialized, so a corrected INIT_VM succeeds.
    let gpaw = |bits: u32| kvm_cpuid_entry2 {
        function: 0x8000_0008,
        eax: bits << 16,
        ..Default::default()
    };
    let leaf7 = |ebx: u32, ecx: u32| kvm_cpuid_entry2 {
        function: 7,
        flags: 1,
        ebx,
        ecx,
        ..Default::default()
    };
    let with = |cpuid: Vec<kvm_cpuid_entry2>| TdParams {
        cpuid,
        ..TdParams::default()
    };
    let cases: Vec<(&str, TdParams, i32)> = vec![
        ("no CPUID 0x80000008", TdParams::default(), libc::EINVAL),
        ("GPAW 0", with(vec![gpaw(0)]), libc::EINVAL),
        ("GPAW 46", with(vec![gpaw(46)]), libc::EINVAL),
        (
            "GPAW 52 without 5-level EPT",
            with(vec![gpaw(52)]),
            libc::EINVAL,
        ),
        (
            "a leaf the module does not configure",
            with(vec![
                gpaw(48),
                kvm_cpuid_entry2 {
                    function: 1,
                    ..Default::default()
                },
            ]),
            libc::EINVAL,
        ),
        (
            "TSX (HLE)",
            with(vec![gpaw(48), leaf7(1 << 4, 0)]),
            libc::EINVAL,
        ),
        (
            "TSX (RTM)",
            with(vec![gpaw(48), leaf7(1 << 11, 0)]),
            libc::EINVAL,
        ),
        (
            "WAITPKG",
            with(vec![gpaw(48), leaf7(0, 1 << 5)]),
            libc::EINVAL,
        ),
    ];
    for (what, params, errno) in cases {
        // The model itself, as the kernel (the backend refuses some of these before the
        // ioctl: init_vm_refuses_a_cpuid_every_6_18_host_refuses).
        let mut model = TdxModel::new();
        let mut cmd = kvm_tdx_cmd {
            id: KVM_TDX_INIT_VM,
            ..Default::default()
        };
        let mut b = params.to_bytes();
        assert_eq!(model.vm_op(&mut cmd, Some(&mut b)), Err(errno), "{what}");
        assert!(model.params.is_none(), "{what}");
        let mut td = TdxBackend::new(model);
        td.init_vm(&TdxModel::minimal_params()).unwrap();
    }
    // What only the kernel can say (not a configurable leaf here, 5-level EPT absent): the
    // backend sends it and reports the errno, once.
    for params in [
        with(vec![
            gpaw(48),
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
        ]),
        with(vec![gpaw(52)]),
    ] {
        let mut td = TdxBackend::new(TdxModel::new());
        let e = td.init_vm(&params).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Ioctl {
                    errno: libc::EINVAL,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(td.ioctl().calls.len(), 1);
    }

    // vCPUs created before INIT_VM: EBUSY (setup_tdparams: kvm->created_vcpus).
    let mut td = TdxBackend::new(TdxModel::new());
    td.ioctl_mut().vcpus_created = true;
    let e = td.init_vm(&TdxModel::minimal_params()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Ioctl {
                errno: libc::EBUSY,
                ..
            }
        ),
        "{e:?}"
    );

    // A GPAW of 52 with 5-level EPT: the shared bit is 51 (tdx_td_init: TDX_SHARED_BIT_PWL_5),
    // so a GPA with bit 47 set is private and one with bit 51 set is not.
    let mut model = TdxModel::new();
    model.ept_5_levels = true;
    model.memslots.push(Memslot {
        gpa: SHARED_BIT,
        len: PAGE,
        guest_memfd: true,
    });
    let mut td = TdxBackend::new(model);
    td.init_vm(&with(vec![gpaw(52)])).unwrap();
    vcpus(&mut td, 1);
    let src = AlignedPages::new(1);
    td.ioctl_mut().set_private(SHARED_BIT, PAGE).unwrap();
    for (gpa, expect) in [(SHARED_BIT, Ok(())), (1 << 51, Err(libc::EINVAL))] {
        let mut cmd = kvm_tdx_cmd {
            id: KVM_TDX_INIT_MEM_REGION,
            ..Default::default()
        };
        let mut region = kvm_tdx_init_mem_region {
            source_addr: src.addr(),
            gpa,
            nr_pages: 1,
        };
        let r = td
            .ioctl_mut()
            .init_mem_region(&mut cmd, &mut region, src.bytes());
        assert_eq!(r, expect, "GPA {gpa:#x}");
    }
}

/// `pages` page-aligned pages inside a vector.
struct AlignedPages {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedPages {
    fn new(pages: usize) -> Self {
        let len = pages * PAGE as usize;
        let buf = vec![0x42u8; len + PAGE as usize];
        let off = (PAGE as usize - buf.as_ptr() as usize % PAGE as usize) % PAGE as usize;
        AlignedPages { buf, off, len }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
    fn addr(&self) -> u64 {
        self.bytes().as_ptr() as u64
    }
}

#[test]
fn a_page_count_the_shift_wraps_is_checked_as_the_kernel_checks_it() {
    // tdx_vcpu_init_mem_region (Linux 6.18.2) tests `gpa + (nr_pages << PAGE_SHIFT) <= gpa` in
    // u64: with nr_pages = 2^52 the shifted count is 0 (refused, nothing done); with 2^52 + 1
    // it is one page, the check passes and the loop runs page by page until a page fails,
    // writing the region back.
    let mut td = launched();
    let src = AlignedPages::new(2);
    td.ioctl_mut().set_private(0x1000, PAGE).unwrap();
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_MEM_REGION,
        ..Default::default()
    };
    let mut region = kvm_tdx_init_mem_region {
        source_addr: src.addr(),
        gpa: 0x1000,
        nr_pages: 1 << 52,
    };
    let r = td
        .ioctl_mut()
        .init_mem_region(&mut cmd, &mut region, src.bytes());
    assert_eq!(r, Err(libc::EINVAL));
    assert_eq!(region.nr_pages, 1 << 52);
    assert!(td.ioctl().added.is_empty());

    region.nr_pages = (1 << 52) + 1;
    let r = td
        .ioctl_mut()
        .init_mem_region(&mut cmd, &mut region, src.bytes());
    // Page 0x1000 is added; page 0x2000 is not private (kvm_gmem_populate: EINVAL).
    assert_eq!(r, Err(libc::EINVAL));
    assert_eq!(
        region,
        kvm_tdx_init_mem_region {
            source_addr: src.addr() + PAGE,
            gpa: 0x2000,
            nr_pages: 1 << 52,
        }
    );
    assert_eq!(td.ioctl().populated_in(0, 1 << 32), PAGE);
}

#[test]
fn init_vm_refuses_a_cpuid_every_6_18_host_refuses() {
    // arch/x86/kvm/vmx/tdx.c (Linux 6.18.2): setup_tdparams_eptp_controls (GPAW 48 or 52) and
    // tdx_unsupported_cpuid (TSX, WAITPKG in leaf 7.0) refuse these on every host: refused
    // before the ioctl, naming the field.
    let mut td = TdxBackend::new(TdxModel::new());
    let caps = td.capabilities().unwrap();
    let gpaw = |eax: u32| kvm_cpuid_entry2 {
        function: 0x8000_0008,
        eax,
        ..Default::default()
    };
    let cases: Vec<(Vec<kvm_cpuid_entry2>, &str, u64)> = vec![
        (vec![], "GPAW", u64::MAX),
        // The capabilities as reported: GPAW 0xff ("configurable"), to be set by the caller.
        (caps.cpuid.clone(), "GPAW", 0xff),
        (vec![gpaw(40 << 16)], "GPAW", 40),
        (
            vec![
                gpaw(48 << 16),
                kvm_cpuid_entry2 {
                    function: 7,
                    flags: 1,
                    ebx: 1 << 11,
                    ..Default::default()
                },
            ],
            "HLE, RTM",
            1 << 11,
        ),
        (
            vec![
                gpaw(48 << 16),
                kvm_cpuid_entry2 {
                    function: 7,
                    ecx: 1 << 5,
                    ..Default::default()
                },
            ],
            "WAITPKG",
            1 << 5,
        ),
    ];
    for (cpuid, field, value) in cases {
        let params = TdParams {
            cpuid,
            ..TdParams::default()
        };
        let e = td.init_vm(&params).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParam { field: f, value: v, .. } if f.contains(field) && *v == value),
            "{e:?}"
        );
        assert!(e.to_string().contains("tdx.c"), "{e}");
    }
    assert_eq!(
        td.ioctl().calls.len(),
        1,
        "only KVM_TDX_CAPABILITIES was sent"
    );
    // The capabilities with the GPAW set are taken.
    let mut cpuid = caps.cpuid;
    cpuid[0].eax = (cpuid[0].eax & !0xff_0000) | 48 << 16;
    td.init_vm(&TdParams {
        cpuid,
        ..TdParams::default()
    })
    .unwrap();
}
