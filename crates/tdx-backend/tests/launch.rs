//! The whole TD launch against the model of Linux 6.18.2: the sequence the README documents
//! succeeds; each step it needs, dropped or moved, is refused by the backend's guard naming
//! it; and the model refuses the same steps as the kernel does when the guard is bypassed.

use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role, StopCause};
use tdx_backend::testing::{TdxModel, X86Call};
use tdx_backend::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_TDX_FINALIZE_VM,
    KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM, SPLIT_IRQCHIP_IOAPIC_PINS,
};
use tdx_backend::{
    init_vm_cpuid, measure_plan, Error, LaunchStep, TdParams, TdxBackend, TdxIoctl, TDX_CAPS,
};

const RCX: u64 = 0x80_9000;
const VCPUS: u64 = 2;

/// The steps of the README's VMM example, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Capabilities,
    InitVm,
    SplitIrqchip,
    CreateVcpu(u64),
    SetCpuid(u64),
    InitVcpu(u64),
    Populate,
    Finalize,
}

fn documented() -> Vec<Step> {
    let mut s = vec![Step::Capabilities, Step::InitVm, Step::SplitIrqchip];
    for id in 0..VCPUS {
        s.extend([Step::CreateVcpu(id), Step::SetCpuid(id), Step::InitVcpu(id)]);
    }
    s.extend([Step::Populate, Step::Finalize]);
    s
}

/// Runs `steps` as the README does; the first failure with the step that failed.
fn run(steps: &[Step]) -> Result<TdxBackend<TdxModel>, (Step, Error)> {
    let firmware = vec![0x90u8; 8 << 10];
    let plan = PlanBuilder::new()
        .source(0xffff_e000, Role::Measured, &firmware)
        .zero(0x80_0000, 4 << 10)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .map_err(|e| (Step::Populate, Error::Plan(e)))?;
    let host = TdxModel::host_cpuid();
    let mut td = TdxBackend::new(TdxModel::new());
    let mut caps = None;
    for step in steps {
        let r = match *step {
            Step::Capabilities => td.capabilities().map(|c| caps = Some(c)),
            Step::InitVm => {
                let configurable = caps.as_ref().map(|c| c.cpuid.clone()).unwrap_or_default();
                init_vm_cpuid(&host, &configurable, 48).and_then(|cpuid| {
                    td.init_vm(&TdParams {
                        attributes: 1 << 28,
                        cpuid,
                        ..Default::default()
                    })
                })
            }
            Step::SplitIrqchip => td.enable_split_irqchip(SPLIT_IRQCHIP_IOAPIC_PINS),
            Step::CreateVcpu(id) => td.create_vcpu(id),
            Step::SetCpuid(id) => td.set_cpuid(id, &host),
            Step::InitVcpu(id) => td.init_vcpu(id, RCX),
            Step::Populate => match Driver::new(&mut td).run(&plan) {
                Ok(r) => {
                    assert!(r.is_complete());
                    Ok(())
                }
                Err(e) => {
                    let report = e.report().expect("a stopped run");
                    let Some(StopCause::Backend(b)) = report.stop.as_ref().map(|s| &s.cause) else {
                        panic!("{e}")
                    };
                    Err(Error::Ioctl {
                        op: "populate",
                        errno: b.errno.unwrap_or(0),
                        hw_error: 0,
                        detail: b.detail.clone(),
                    })
                }
            },
            Step::Finalize => td.finalize(),
        };
        r.map_err(|e| (*step, e))?;
    }
    assert_eq!(td.ioctl().mrtd(), measure_plan(&plan).ok());
    Ok(td)
}

#[test]
fn the_documented_sequence_launches_a_td_with_the_plans_mrtd() {
    let td = run(&documented()).unwrap();
    let m = td.ioctl();
    assert!(td.is_finalized());
    assert_eq!(td.vcpus(), [(0, true), (1, true)]);
    for id in 0..VCPUS {
        assert_eq!(m.vcpu_rcx(id), Some(RCX));
    }
    assert_eq!(
        m.x86_calls[..3],
        [
            X86Call::EnableSplitIrqchip(24, Ok(())),
            X86Call::CreateVcpu(0, Ok(())),
            X86Call::SetCpuid(0, TdxModel::host_cpuid().len(), Ok(())),
        ]
    );
    // INIT_VM's CPUID from init_vm_cpuid: each sub-leaf its own value, masked.
    assert_eq!(m.td_cpuid(7, 0), Some([1, 0x0229, 0x4, 0]));
    assert_eq!(m.td_cpuid(7, 1), Some([0x10, 0, 0, 0]));
    // The model's module makes only the GPAW field of 0x80000008 configurable, and
    // setup_tdparams_cpuids clears that field in TD_PARAMS.
    assert_eq!(m.td_cpuid(0x8000_0008, 0), Some([0, 0, 0, 0]));
}

/// Dropping any step of the documented sequence makes a later step fail, refused by the
/// backend before any ioctl with the dropped step named (populate's guard speaks through the
/// driver's error text); `KVM_TDX_CAPABILITIES` is the exception: INIT_VM then has no
/// configurable leaves to build a CPUID from.
#[test]
fn every_dropped_step_is_named_by_the_step_that_needs_it() {
    let all = documented();
    for (i, dropped) in all.iter().enumerate() {
        if matches!(dropped, Step::Populate | Step::Finalize) {
            // Nothing after finalize needs it; an empty TD can be finalized: the MRTD check
            // catches both (the next test).
            continue;
        }
        let mut steps = all.clone();
        steps.remove(i);
        let Err((at, e)) = run(&steps) else {
            panic!("{dropped:?} dropped, and the launch succeeded");
        };
        let text = e.to_string();
        let named = match dropped {
            Step::Capabilities => {
                assert_eq!(at, Step::InitVm);
                assert!(matches!(e, Error::InvalidParam { .. }), "{e:?}");
                continue;
            }
            Step::InitVm => LaunchStep::InitVm,
            Step::SplitIrqchip => LaunchStep::SplitIrqchip,
            Step::CreateVcpu(id) => LaunchStep::CreateVcpu(*id),
            Step::SetCpuid(id) => LaunchStep::SetCpuid(*id),
            Step::InitVcpu(id) => LaunchStep::InitVcpu(*id),
            Step::Populate => unreachable!("checked above"),
            Step::Finalize => unreachable!("the last step: nothing after it fails"),
        };
        assert!(
            text.contains(&format!("{named} must come first")),
            "{dropped:?} dropped: {at:?} failed with {text}"
        );
    }
}

#[test]
fn populate_is_checked_against_the_plans_mrtd_so_dropping_it_is_seen() {
    for dropped in [Step::Populate, Step::Finalize] {
        let mut steps = documented();
        steps.retain(|s| *s != dropped);
        let r = std::panic::catch_unwind(|| run(&steps));
        assert!(r.is_err(), "{dropped:?} dropped, and the MRTD check passed");
    }
}

#[test]
fn steps_moved_too_late_or_repeated_are_refused_naming_what_rules_them_out() {
    // A vCPU created or initialized after finalize; the split irqchip or INIT_VM after a vCPU.
    let mut td = run(&documented()).unwrap();
    for (e, done) in [
        (td.create_vcpu(5).unwrap_err(), LaunchStep::Finalize),
        (td.init_vcpu(0, RCX).unwrap_err(), LaunchStep::Finalize),
        (td.finalize().unwrap_err(), LaunchStep::Finalize),
        (
            td.enable_split_irqchip(24).unwrap_err(),
            LaunchStep::SplitIrqchip,
        ),
        (
            td.init_vm(&TdxModel::minimal_params()).unwrap_err(),
            LaunchStep::InitVm,
        ),
    ] {
        assert!(
            matches!(e, Error::TooLate { done: d, .. } if d == done),
            "{e:?}"
        );
        assert!(e.to_string().contains("Linux 6.18.2"), "{e}");
    }

    let mut td = TdxBackend::new(TdxModel::new());
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    td.enable_split_irqchip(24).unwrap();
    td.create_vcpu(0).unwrap();
    let e = td.enable_split_irqchip(24).unwrap_err();
    assert!(matches!(e, Error::TooLate { .. }), "{e:?}");
    let mut td = TdxBackend::new(TdxModel::new());
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    let e = td.init_vm(&TdxModel::minimal_params()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLate {
                done: LaunchStep::InitVm,
                ..
            }
        ),
        "{e:?}"
    );
    // Initialized twice.
    td.enable_split_irqchip(24).unwrap();
    td.create_vcpu(0).unwrap();
    td.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    td.init_vcpu(0, RCX).unwrap();
    let e = td.init_vcpu(0, RCX).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLate {
                done: LaunchStep::InitVcpu(0),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn finalize_names_the_vcpu_not_initialized_and_a_td_without_vcpus() {
    let mut td = TdxBackend::new(TdxModel::new());
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    let e = td.finalize().unwrap_err();
    assert!(
        matches!(
            e,
            Error::StepMissing {
                missing: LaunchStep::AnyVcpu,
                ..
            }
        ),
        "{e:?}"
    );
    td.enable_split_irqchip(24).unwrap();
    for id in 0..3 {
        td.create_vcpu(id).unwrap();
        td.set_cpuid(id, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    }
    td.init_vcpu(0, RCX).unwrap();
    td.init_vcpu(2, RCX).unwrap();
    let e = td.finalize().unwrap_err();
    assert_eq!(
        e.to_string(),
        "KVM_TDX_FINALIZE_VM refused before any ioctl: KVM_TDX_INIT_VCPU on vCPU 1 must come first (every vCPU must be initialized before KVM_TDX_FINALIZE_VM, after which KVM_TDX_INIT_VCPU is EINVAL (arch/x86/kvm/vmx/tdx.c: tdx_vcpu_ioctl, Linux 6.18.2; tdx_vcpu_unlocked_ioctl in 7.3.4); KVM_TDX_INIT_MEM_REGION needs an initialized vCPU (tdx_vcpu_init_mem_region))"
    );
    // No finalize reached the model.
    assert!(td
        .ioctl()
        .calls
        .iter()
        .all(|c| c.cmd.id != KVM_TDX_FINALIZE_VM));
    td.init_vcpu(1, RCX).unwrap();
    td.finalize().unwrap();
}

#[test]
fn a_cpuid_without_x2apic_is_named_before_init_vcpu() {
    let mut td = TdxBackend::new(TdxModel::new());
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    td.enable_split_irqchip(24).unwrap();
    td.create_vcpu(0).unwrap();
    let mut no_x2apic = TdxModel::host_cpuid();
    no_x2apic
        .iter_mut()
        .filter(|e| e.function == 1)
        .for_each(|e| e.ecx = 0);
    td.set_cpuid(0, &no_x2apic).unwrap();
    let e = td.init_vcpu(0, RCX).unwrap_err();
    assert!(
        matches!(
            e,
            Error::StepMissing {
                missing: LaunchStep::SetCpuid(0),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("kvm_apic_set_base"), "{e}");
}

/// The model itself, without the guards: what Linux 6.18.2 answers each step out of order.
#[test]
fn the_model_refuses_what_the_kernel_refuses_around_vcpus() {
    let init_vm = |m: &mut TdxModel| {
        let mut cmd = kvm_tdx_cmd {
            id: KVM_TDX_INIT_VM,
            ..Default::default()
        };
        let mut b = TdxModel::minimal_params().to_bytes();
        m.vm_op(&mut cmd, Some(&mut b))
    };
    let init_vcpu = |m: &mut TdxModel, id| {
        let mut cmd = kvm_tdx_cmd {
            id: KVM_TDX_INIT_VCPU,
            data: RCX,
            ..Default::default()
        };
        m.vcpu_op_on(id, &mut cmd, None)
    };
    let mut m = TdxModel::new();
    // tdx_vcpu_create: before INIT_VM, EIO.
    m.split_irqchip = true;
    assert_eq!(m.create_vcpu(0), Err(libc::EIO));
    let mut m = TdxModel::new();
    init_vm(&mut m).unwrap();
    // tdx_vcpu_create: without a split irqchip, EINVAL.
    assert_eq!(m.create_vcpu(0), Err(libc::EINVAL));
    // kvm_vm_ioctl_enable_cap: too many pins EINVAL; then fine; then EEXIST.
    assert_eq!(m.enable_split_irqchip(4097), Err(libc::EINVAL));
    assert_eq!(m.enable_split_irqchip(24), Ok(()));
    assert_eq!(m.enable_split_irqchip(24), Err(libc::EEXIST));
    assert_eq!(m.create_vcpu(0), Ok(()));
    // kvm_vm_ioctl_create_vcpu: the same id again, EEXIST.
    assert_eq!(m.create_vcpu(0), Err(libc::EEXIST));
    assert_eq!(m.create_vcpu(1), Ok(()));
    // No fd for vCPU 7.
    assert_eq!(
        m.set_cpuid(7, &TdxModel::minimal_vcpu_cpuid()),
        Err(libc::EBADF)
    );
    // tdx_vcpu_init -> kvm_apic_set_base: no CPUID, or one without x2APIC: EINVAL.
    assert_eq!(init_vcpu(&mut m, 0), Err(libc::EINVAL));
    m.set_cpuid(
        0,
        &[kvm_cpuid_entry2 {
            function: 1,
            ..Default::default()
        }],
    )
    .unwrap();
    assert_eq!(init_vcpu(&mut m, 0), Err(libc::EINVAL));
    m.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    assert_eq!(init_vcpu(&mut m, 0), Ok(()));
    // tdx_vcpu_init: a second time, EINVAL.
    assert_eq!(init_vcpu(&mut m, 0), Err(libc::EINVAL));
    // split irqchip after vCPUs exist: EEXIST (kvm->created_vcpus).
    let mut fresh = TdxModel::new();
    init_vm(&mut fresh).unwrap();
    fresh.vcpus_created = true;
    assert_eq!(fresh.enable_split_irqchip(24), Err(libc::EEXIST));
    // After finalize (vCPU 1 never initialized): creation EIO, init EINVAL.
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_FINALIZE_VM,
        ..Default::default()
    };
    m.vm_op(&mut cmd, None).unwrap();
    assert_eq!(m.create_vcpu(2), Err(libc::EIO));
    m.set_cpuid(1, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    assert_eq!(init_vcpu(&mut m, 1), Err(libc::EINVAL));
}

/// The capabilities' CPUID passed straight to INIT_VM, as the README once did: the kernel
/// takes it, and every sub-leaf of leaf 7 gets sub-leaf 0's configurable mask
/// (`setup_tdparams_cpuids` -> `kvm_find_cpuid_entry2` without
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`); `init_vm_cpuid` gives each its host value.
#[test]
fn capabilities_passed_straight_fill_every_sub_leaf_from_the_first() {
    let mut td = TdxBackend::new(TdxModel::new());
    let caps = td.capabilities().unwrap();
    assert!(caps
        .cpuid
        .iter()
        .all(|e| e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0));
    let mut straight = caps.cpuid.clone();
    for e in straight.iter_mut().filter(|e| e.function == 0x8000_0008) {
        e.eax = (e.eax & !0x00ff_0000) | 48 << 16;
    }
    td.init_vm(&TdParams {
        cpuid: straight,
        ..Default::default()
    })
    .unwrap();
    let m = td.ioctl();
    assert_eq!(m.td_cpuid(7, 1), m.td_cpuid(7, 0));
    assert_eq!(
        m.td_cpuid(7, 1),
        Some([u32::MAX, !(1 << 4 | 1 << 11), !(1 << 5), u32::MAX])
    );

    let mut td = TdxBackend::new(TdxModel::new());
    let caps = td.capabilities().unwrap();
    let cpuid = init_vm_cpuid(&TdxModel::host_cpuid(), &caps.cpuid, 48).unwrap();
    assert!(cpuid
        .iter()
        .all(|e| e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0));
    td.init_vm(&TdParams {
        cpuid,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(td.ioctl().td_cpuid(7, 1), Some([0x10, 0, 0, 0]));
    assert_eq!(td.ioctl().td_cpuid(7, 0), Some([1, 0x0229, 0x4, 0]));
}

#[test]
fn init_vm_cpuid_refuses_a_gpaw_or_module_that_cannot_work() {
    let host = TdxModel::host_cpuid();
    let caps = [kvm_cpuid_entry2 {
        function: 0x8000_0008,
        eax: 0x00ff_ffff,
        ..Default::default()
    }];
    for gpaw in [0, 47, 51, 255] {
        let e = init_vm_cpuid(&host, &caps, gpaw).unwrap_err();
        assert!(e.to_string().contains("not 48 or 52"), "{e}");
    }
    let e = init_vm_cpuid(&host, &caps[..0], 48).unwrap_err();
    assert!(e.to_string().contains("not a configurable leaf"), "{e}");
    // GPAW leaf configurable but absent from the host: still given, with the GPAW only.
    let c = init_vm_cpuid(&host[..2], &caps, 52).unwrap();
    assert_eq!((c.len(), c[0].eax), (1, 52 << 16));
    // TSX and WAITPKG never reach INIT_VM, whatever the masks say.
    let all = [
        caps[0],
        kvm_cpuid_entry2 {
            function: 7,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        },
    ];
    let c = init_vm_cpuid(&host, &all, 48).unwrap();
    assert_eq!(c[1].ebx & (1 << 4 | 1 << 11), 0);
    assert_eq!(c[1].ecx & (1 << 5), 0);
}
