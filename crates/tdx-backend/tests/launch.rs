//! The whole TD launch, as `examples/launch.rs` does it (the file is included here: the same
//! `launch` function), against the model of each kernel release: the sequence succeeds with
//! the plan's MRTD; each step dropped or moved is refused with a typed error naming it; and the
//! model refuses the same steps as the kernel does when the guard is bypassed.

use cc_populate::{MemoryLayout, Plan, PlanBuilder, Role};
use tdx_backend::testing::{TdxModel, X86Call};
use tdx_backend::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_TDX_FINALIZE_VM,
    KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM,
};
use tdx_backend::{
    init_vm_cpuid, measure_plan, Error, Kernel, LaunchStep, TdParams, TdxBackend, TdxIoctl,
    TDX_CAPS,
};

#[allow(dead_code)]
#[path = "../examples/launch.rs"]
mod example;
use example::{launch, sequence, Inputs, LaunchError};

const RCX: u64 = 0x80_9000;
const VCPUS: u64 = 2;

fn plan(firmware: &[u8]) -> Plan<'_> {
    PlanBuilder::new()
        .source(0xffff_e000, Role::Measured, firmware)
        .zero(0x80_0000, 4 << 10)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap()
}

/// Runs the example's `launch` with `steps` against the model of `kernel`.
fn run_on(kernel: Kernel, steps: &[LaunchStep]) -> (TdxBackend<TdxModel>, Result<(), LaunchError>) {
    let firmware = vec![0x90u8; 8 << 10];
    let plan = plan(&firmware);
    let inputs = Inputs {
        cpu_model: TdxModel::host_cpuid(),
        gpaw: 48,
        attributes: 1 << 28,
        rcx: RCX,
        plan: &plan,
    };
    let mut td = TdxBackend::new(TdxModel::on(kernel)).with_kernel(kernel);
    let r = launch(&mut td, &inputs, steps).map(|report| {
        assert!(report.is_complete());
    });
    if r.is_ok() {
        assert_eq!(td.ioctl().mrtd(), measure_plan(&plan).ok());
    }
    (td, r)
}

fn run(steps: &[LaunchStep]) -> Result<TdxBackend<TdxModel>, (LaunchStep, Error)> {
    let (td, r) = run_on(Kernel::V6_18, steps);
    match r {
        Ok(()) => Ok(td),
        Err(LaunchError::Step(s, e)) => Err((s, e)),
        Err(LaunchError::Populate(e)) => panic!("{e}"),
    }
}

fn documented() -> Vec<LaunchStep> {
    sequence(VCPUS)
}

#[test]
fn the_example_launches_a_td_with_the_plans_mrtd_on_every_release() {
    for kernel in Kernel::KNOWN {
        let (td, r) = run_on(kernel, &documented());
        r.unwrap();
        let m = td.ioctl();
        assert!(td.is_finalized());
        assert!(td.ready_to_run().is_ok());
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
}

/// Drops `dropped` from the example's sequence, on `kernel`: the launch must stop with a typed
/// error whose missing step is `dropped`, before the model saw the step that needed it.
fn dropped_is_named(kernel: Kernel, dropped: LaunchStep) {
    let mut steps = documented();
    steps.retain(|s| *s != dropped);
    let (td, r) = run_on(kernel, &steps);
    let Err(LaunchError::Step(at, e)) = r else {
        panic!("{kernel}: {dropped:?} dropped, and the launch gave {r:?}");
    };
    let named = dropped;
    assert!(
        matches!(&e, Error::StepMissing { missing, .. } if *missing == named),
        "{kernel}: {dropped:?} dropped: {at:?} failed with {e}"
    );
    assert!(
        e.to_string().contains(&format!("{named} must come first")),
        "{e}"
    );
    // A guard refused: the kernel model answered no call with an error.
    let m = td.ioctl();
    assert!(m.calls.iter().all(|c| c.result.is_ok()), "{:?}", m.calls);
    assert!(
        m.x86_calls.iter().all(|c| !matches!(
            c,
            X86Call::CreateVcpu(_, Err(_))
                | X86Call::SetCpuid(_, _, Err(_))
                | X86Call::EnableSplitIrqchip(_, Err(_))
        )),
        "{:?}",
        m.x86_calls
    );
}

macro_rules! dropped_step_tests {
    ($($name:ident: $step:expr;)*) => {$(
        #[test]
        fn $name() {
            for kernel in Kernel::KNOWN {
                dropped_is_named(kernel, $step);
            }
        }
    )*};
}

dropped_step_tests! {
    dropping_capabilities_is_named_by_init_vm: LaunchStep::Capabilities;
    dropping_init_vm_is_named_by_the_split_irqchip_s_vcpu: LaunchStep::InitVm;
    dropping_the_split_irqchip_is_named_by_create_vcpu: LaunchStep::SplitIrqchip;
    dropping_create_vcpu_is_named_by_set_cpuid: LaunchStep::CreateVcpu(1);
    dropping_set_cpuid_is_named_by_init_vcpu: LaunchStep::SetCpuid(0);
    dropping_init_vcpu_is_named_by_populate: LaunchStep::InitVcpu(1);
    dropping_populate_is_named_by_finalize: LaunchStep::Populate;
    dropping_finalize_is_named_by_run: LaunchStep::Finalize;
}

/// Moves `step` to just after `after`: the launch must stop naming `named` as missing or as
/// the step already done that rules it out.
fn moved_is_named(kernel: Kernel, step: LaunchStep, after: LaunchStep, named: LaunchStep) {
    let mut steps = documented();
    steps.retain(|s| *s != step);
    let at = steps.iter().position(|s| *s == after).unwrap() + 1;
    steps.insert(at, step);
    let (_, r) = run_on(kernel, &steps);
    let Err(LaunchError::Step(_, e)) = r else {
        panic!("{kernel}: {step:?} moved after {after:?}, and the launch gave {r:?}");
    };
    assert!(
        matches!(&e, Error::StepMissing { missing, .. } if *missing == named)
            || matches!(&e, Error::TooLate { done, .. } if *done == named),
        "{kernel}: {step:?} after {after:?}: {e}"
    );
}

#[test]
fn steps_moved_out_of_order_are_refused_naming_the_step_on_every_release() {
    for kernel in Kernel::KNOWN {
        // After the step that needs it: the later one names it missing.
        moved_is_named(
            kernel,
            LaunchStep::SplitIrqchip,
            LaunchStep::CreateVcpu(0),
            LaunchStep::SplitIrqchip,
        );
        moved_is_named(
            kernel,
            LaunchStep::SetCpuid(0),
            LaunchStep::InitVcpu(0),
            LaunchStep::SetCpuid(0),
        );
        moved_is_named(
            kernel,
            LaunchStep::InitVm,
            LaunchStep::CreateVcpu(0),
            LaunchStep::InitVm,
        );
        moved_is_named(
            kernel,
            LaunchStep::Capabilities,
            LaunchStep::InitVm,
            LaunchStep::Capabilities,
        );
        moved_is_named(
            kernel,
            LaunchStep::InitVcpu(1),
            LaunchStep::Populate,
            LaunchStep::InitVcpu(1),
        );
        // After finalize: the step that needed it comes first and names it.
        moved_is_named(
            kernel,
            LaunchStep::CreateVcpu(1),
            LaunchStep::Finalize,
            LaunchStep::CreateVcpu(1),
        );
        moved_is_named(
            kernel,
            LaunchStep::Populate,
            LaunchStep::Finalize,
            LaunchStep::Populate,
        );
    }
}

/// `KVM_TDX_INIT_VM` issued by the VMM itself, straight to the model.
fn vmm_init_vm(model: &mut TdxModel) {
    let mut b = TdxModel::minimal_params().to_bytes();
    let cmd = &mut kvm_tdx_cmd::default();
    cmd.id = KVM_TDX_INIT_VM;
    model.vm_op(cmd, Some(&mut b)).unwrap();
}

/// A VMM that issued INIT_VM, the split irqchip and its vCPUs itself attaches the backend with
/// that state (nothing replayed), and the backend refuses what that state rules out.
#[test]
fn a_backend_attached_to_a_vmm_s_td_refuses_what_its_state_forbids() {
    for kernel in Kernel::KNOWN {
        let mut model = TdxModel::on(kernel);
        vmm_init_vm(&mut model);
        model.enable_split_irqchip(24).unwrap();
        model.create_vcpu(0).unwrap();
        model.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
        let mut iv = kvm_tdx_cmd {
            id: KVM_TDX_INIT_VCPU,
            data: RCX,
            ..Default::default()
        };
        model.vcpu_op_on(0, &mut iv, None).unwrap();
        let calls = model.calls.len();
        let mut td = TdxBackend::initialized(model, &[0]).with_kernel(kernel);
        // Nothing replayed.
        assert_eq!(td.ioctl().calls.len(), calls);
        for (e, done) in [
            (
                td.init_vm(&TdxModel::minimal_params()).unwrap_err(),
                LaunchStep::InitVm,
            ),
            (
                td.enable_split_irqchip(24).unwrap_err(),
                LaunchStep::SplitIrqchip,
            ),
        ] {
            assert!(
                matches!(e, Error::TooLate { done: d, .. } if d == done),
                "{e:?}"
            );
        }
        assert_eq!(td.ioctl().calls.len(), calls);
        let firmware = vec![0x90u8; 8 << 10];
        let plan = plan(&firmware);
        td.ready_to_populate().unwrap();
        cc_populate::Driver::new(&mut td).run(&plan).unwrap();
        td.finalize().unwrap();
        assert_eq!(td.ioctl().mrtd(), measure_plan(&plan).ok());
    }
}

/// With no vCPU fd in the ioctl layer (the backend told a vCPU exists that the layer does not
/// hold), every vCPU command is a typed error before any ioctl, not the `EBADF` the layer
/// would answer.
#[test]
fn no_vcpu_fd_is_a_typed_error_before_any_ioctl() {
    let mut model = TdxModel::new();
    vmm_init_vm(&mut model);
    let calls = model.calls.len();
    let mut td = TdxBackend::initialized(model, &[0]);
    let e = td.ready_to_populate().unwrap_err();
    let Error::NoVcpu { step, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*step, LaunchStep::Populate);
    let firmware = vec![0x90u8; 8 << 10];
    let plan = plan(&firmware);
    let err = cc_populate::Driver::new(&mut td).run(&plan).unwrap_err();
    assert!(err.to_string().contains("no vCPU fd"), "{err}");
    assert!(!err.to_string().contains("errno 9"), "{err}");
    // Only the conversion reached the model: no INIT_MEM_REGION.
    assert_eq!(td.ioctl().calls.len(), calls);
    assert!(td.ioctl().added.is_empty());
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

/// `TdxBackend::attach` takes the VMM's state as given (no ioctl) and refuses what it rules
/// out: no split irqchip yet means no vCPU; a vCPU not initialized blocks finalize, naming it;
/// a vCPU without x2APIC in its CPUID cannot be initialized; a finalized TD takes nothing.
#[test]
fn attach_refuses_what_the_given_state_rules_out() {
    use tdx_backend::{TdState, VcpuState};
    let none = TdState::default();
    let mut td = TdxBackend::attach(TdxModel::new(), &none);
    let e = td.create_vcpu(0).unwrap_err();
    let Error::StepMissing { missing, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*missing, LaunchStep::SplitIrqchip);

    let vcpus = [
        VcpuState {
            id: 0,
            x2apic_cpuid: true,
            initialized: true,
        },
        VcpuState {
            id: 1,
            x2apic_cpuid: false,
            initialized: false,
        },
    ];
    let state = TdState {
        split_irqchip: true,
        vcpus: &vcpus,
        finalized: false,
    };
    let mut td = TdxBackend::attach(TdxModel::new(), &state);
    let e = td.finalize().unwrap_err();
    let Error::StepMissing { missing, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*missing, LaunchStep::InitVcpu(1));
    let e = td.init_vcpu(1, RCX).unwrap_err();
    let Error::StepMissing { missing, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*missing, LaunchStep::SetCpuid(1));
    let e = td.enable_split_irqchip(24).unwrap_err();
    assert!(matches!(e, Error::TooLate { .. }), "{e:?}");
    assert!(td.ioctl().calls.is_empty() && td.ioctl().x86_calls.is_empty());

    let done = TdState {
        finalized: true,
        vcpus: &vcpus[..1],
        ..state
    };
    let mut td = TdxBackend::attach(TdxModel::new(), &done);
    assert!(td.ready_to_run().is_ok());
    for e in [
        td.ready_to_populate().unwrap_err(),
        td.create_vcpu(2).unwrap_err(),
        td.finalize().unwrap_err(),
    ] {
        let Error::TooLate { done, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*done, LaunchStep::Finalize);
    }
    assert!(td.ioctl().calls.is_empty() && td.ioctl().x86_calls.is_empty());
}
