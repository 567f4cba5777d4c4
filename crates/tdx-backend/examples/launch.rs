//! A TD from `KVM_CREATE_VM` to vCPUs ready to run, in the KVM selftests' style: the shortest
//! sequence Linux 6.18.2 and 7.3.4 accept.
//!
//! 1. `KVM_CREATE_VM(KVM_X86_TDX_VM)`, a guest_memfd bound as the TD's memory;
//! 2. `KVM_TDX_CAPABILITIES`;
//! 3. `KVM_TDX_INIT_VM` with a CPUID built from a CPU model (here the host's
//!    `KVM_GET_SUPPORTED_CPUID`) masked by the configurable bits (`init_vm_cpuid`);
//! 4. `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`;
//! 5. per vCPU: `KVM_CREATE_VCPU`, `KVM_SET_CPUID2` (with x2APIC), `KVM_TDX_INIT_VCPU`;
//! 6. populate through the cc-populate driver (`KVM_SET_MEMORY_ATTRIBUTES` through gmem, then
//!    `KVM_TDX_INIT_MEM_REGION`);
//! 7. `KVM_TDX_FINALIZE_VM`; the vCPUs are handed back to run.
//!
//! `cargo run -p tdx-backend --example launch [TDVF.fd]`. Without an image a synthetic
//! firmware page is used. On a host without TDX it stops at step 1 with
//! `Error::NotSupported` ("TDX not supported by this KVM: ...") and exit status 2.
//!
//! [`launch`] is the sequence itself; `tests/launch.rs` runs this same function against the
//! model of each kernel release, and drops or moves each step to see it refused by name.

use cc_populate::{Driver, MemoryLayout, Memslot, Plan, PlanBuilder, Report, Role, RunError};
use tdx_backend::uapi::{kvm_cpuid_entry2, SPLIT_IRQCHIP_IOAPIC_PINS};
use tdx_backend::{
    init_vm_cpuid, Error, LaunchStep, TdParams, TdxBackend, TdxCapabilities, TdxIoctl, TDX_CAPS,
};

/// The steps for `vcpus` vCPUs, in the order the kernel needs them.
pub fn sequence(vcpus: u64) -> Vec<LaunchStep> {
    let mut s = vec![
        LaunchStep::Capabilities,
        LaunchStep::InitVm,
        LaunchStep::SplitIrqchip,
    ];
    for id in 0..vcpus {
        s.extend([
            LaunchStep::CreateVcpu(id),
            LaunchStep::SetCpuid(id),
            LaunchStep::InitVcpu(id),
        ]);
    }
    s.extend([LaunchStep::Populate, LaunchStep::Finalize]);
    s
}

/// What the launch needs besides the backend.
pub struct Inputs<'p> {
    /// The CPU model: the host's `KVM_GET_SUPPORTED_CPUID` (it has x2APIC: KVM emulates it).
    pub cpu_model: Vec<kvm_cpuid_entry2>,
    /// The TD's guest physical address width: 48, or 52 with 5-level EPT.
    pub gpaw: u8,
    /// TD attributes (bit 28: `SEPT_VE_DISABLE`).
    pub attributes: u64,
    /// The initial RCX of every vCPU (TDVF expects the TD HOB's address).
    pub rcx: u64,
    /// The image.
    pub plan: &'p Plan<'p>,
}

/// Why [`launch`] stopped.
#[derive(Debug)]
pub enum LaunchError {
    /// A step refused (by a guard before any ioctl, naming what is missing, or by the kernel).
    Step(LaunchStep, Error),
    /// The driver stopped; its report says what is in the TD.
    Populate(Box<RunError>),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Step(s, e) => write!(f, "{s}: {e}"),
            LaunchError::Populate(e) => write!(f, "Populate: {e}"),
        }
    }
}

impl std::error::Error for LaunchError {}

/// Runs `steps` on `td`, then checks that its vCPUs can run. Returns the populate report.
pub fn launch<I: TdxIoctl>(
    td: &mut TdxBackend<I>,
    inputs: &Inputs<'_>,
    steps: &[LaunchStep],
) -> Result<Report, LaunchError> {
    let mut caps: Option<TdxCapabilities> = None;
    let mut report = None;
    for &step in steps {
        let fail = |e| LaunchError::Step(step, e);
        match step {
            LaunchStep::Capabilities => caps = Some(td.capabilities().map_err(fail)?),
            LaunchStep::InitVm => {
                let Some(caps) = &caps else {
                    return Err(fail(Error::StepMissing {
                        step: LaunchStep::InitVm,
                        missing: LaunchStep::Capabilities,
                        why: "INIT_VM's CPUID is the CPU model masked by the configurable bits KVM_TDX_CAPABILITIES reports (an entry for no configurable leaf is EINVAL: arch/x86/kvm/vmx/tdx.c: setup_tdparams_cpuids)",
                    }));
                };
                let cpuid =
                    init_vm_cpuid(&inputs.cpu_model, &caps.cpuid, inputs.gpaw).map_err(fail)?;
                let params = TdParams {
                    attributes: inputs.attributes & caps.supported_attrs,
                    xfam: caps.supported_xfam,
                    cpuid,
                    ..Default::default()
                };
                td.init_vm(&params).map_err(fail)?;
            }
            LaunchStep::SplitIrqchip => td
                .enable_split_irqchip(SPLIT_IRQCHIP_IOAPIC_PINS)
                .map_err(fail)?,
            LaunchStep::CreateVcpu(id) => td.create_vcpu(id).map_err(fail)?,
            LaunchStep::SetCpuid(id) => td.set_cpuid(id, &inputs.cpu_model).map_err(fail)?,
            LaunchStep::InitVcpu(id) => td.init_vcpu(id, inputs.rcx).map_err(fail)?,
            LaunchStep::Populate => {
                td.ready_to_populate().map_err(fail)?;
                let r = Driver::new(&mut *td)
                    .run(inputs.plan)
                    .map_err(|e| LaunchError::Populate(Box::new(e)))?;
                report = Some(r);
            }
            LaunchStep::Finalize => {
                if report.is_none() {
                    return Err(fail(Error::StepMissing {
                        step: LaunchStep::Finalize,
                        missing: LaunchStep::Populate,
                        why: "the image must be in the TD before TDH.MR.FINALIZE fixes MRTD; no page can be added after (arch/x86/kvm/vmx/tdx.c: tdx_vcpu_init_mem_region, EINVAL)",
                    }));
                }
                td.finalize().map_err(fail)?;
            }
            other => return Err(fail(Error::StepMissing {
                step: other,
                missing: other,
                why: "not a step this sequence issues (AnyVcpu and Run are conditions, not ioctls)",
            })),
        }
    }
    td.ready_to_run()
        .map_err(|e| LaunchError::Step(LaunchStep::Run, e))?;
    report.ok_or(LaunchError::Step(
        LaunchStep::Run,
        Error::StepMissing {
            step: LaunchStep::Run,
            missing: LaunchStep::Populate,
            why: "a TD runs the image populated before finalize",
        },
    ))
}

/// The synthetic image: one measured firmware page at the top of 4 GiB.
const FIRMWARE_GPA: u64 = 0xffff_f000;

#[allow(dead_code)] // The tests include this file for `launch`, not for `main`.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("launch: {e}");
            let unsupported = e
                .downcast_ref::<Error>()
                .is_some_and(|e| matches!(e, Error::NotSupported { .. }));
            std::process::ExitCode::from(if unsupported { 2 } else { 1 })
        }
    }
}

#[allow(dead_code)]
fn run() -> Result<(), Box<dyn std::error::Error>> {
    let kernel = tdx_backend::Kernel::running()?;
    if let Some(note) = &kernel.assumed {
        eprintln!("launch: {note}");
    }
    let kvm = kvm_ioctls::Kvm::new()?;
    let vm = tdx_backend::create_td_vm(&kvm)?; // Error::NotSupported without TDX
    const RAM: u64 = 1 << 32;
    let mut ram = gmem::GuestMemfd::create(&vm, RAM, gmem::GmemFlags::empty())?;
    let _slot = ram.bind(0, 0, 0, RAM)?;
    let layout = MemoryLayout::new(&[Memslot {
        slot: 0,
        gpa: 0,
        size: RAM,
    }])?;
    let image = std::env::args().nth(1).map(std::fs::read).transpose()?;
    let firmware = vec![0xf4u8; 4096]; // HLT
    let hob = vec![0u8; 4096];
    let plan = match &image {
        Some(image) => {
            let opts = tdx_backend::tdvf::PlanOptions {
                td_hob: Some(&hob),
                ..Default::default()
            };
            tdx_backend::tdvf::build_plan(image, &opts, &layout)?
        }
        None => PlanBuilder::new()
            .source(FIRMWARE_GPA, Role::Measured, &firmware)
            .build(&TDX_CAPS, &layout)?,
    };
    let expected_mrtd = tdx_backend::measure_plan(&plan)?;
    let cpu_model: Vec<kvm_cpuid_entry2> = kvm
        .get_supported_cpuid(tdx_backend::uapi::KVM_MAX_CPUID_ENTRIES as usize)?
        .as_slice()
        .iter()
        .map(|e| (*e).into())
        .collect();
    let inputs = Inputs {
        cpu_model,
        gpaw: 48,
        attributes: 1 << 28,
        rcx: 0x80_9000,
        plan: &plan,
    };
    let ioctl = tdx_backend::KvmTdx::new(&vm).with_guest_memfd(&mut ram);
    let mut td = TdxBackend::new(ioctl).with_kernel(kernel.kernel);
    let report = launch(&mut td, &inputs, &sequence(2))?;
    let vcpus = td.into_ioctl().into_vcpus();
    println!(
        "TD launched on {}: {} bytes populated, {} vCPUs ready to run, expected MRTD {}",
        kernel.kernel,
        report.regions.iter().map(|r| r.populated).sum::<u64>(),
        vcpus.len(),
        expected_mrtd
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(())
}
