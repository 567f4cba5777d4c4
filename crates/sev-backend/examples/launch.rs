//! The whole SEV-SNP launch as the kernel enforces it, in the style of the KVM selftests
//! (`tools/testing/selftests/kvm/lib/x86/sev.c`): from `KVM_CREATE_VM` to vCPUs ready to run.
//!
//! ```text
//! cargo run -p sev-backend --example launch -- [FIRMWARE] [VCPUS]
//! ```
//!
//! 1. `KVM_CREATE_VM(KVM_X86_SNP_VM)` after [`probe`] (on a KVM without SNP this stops with
//!    `Error::NotSupported`, which is where it ends on a machine without SNP).
//! 2. The VMM's guest memory: guest_memfd-backed memslots (crate `gmem`).
//! 3. `KVM_SEV_INIT2`, then the vCPUs: after INIT2, since `arch/x86/kvm/svm/sev.c:
//!    __sev_guest_init` refuses a VM that has vCPUs, and `sev_vcpu_create` gives a vCPU its
//!    VMSA page only on an SNP (SEV-ES) VM. Each gets the CPUID the VMM chose
//!    (`KVM_SET_CPUID2`, here KVM's supported CPUID as is).
//! 4. `KVM_SEV_SNP_LAUNCH_START`.
//! 5. Populate through the `cc-populate` driver: the firmware image (measured), the secrets
//!    page, and the CPUID page built from the vCPU's CPUID ([`snp_cpuid_table`], as QEMU builds
//!    it); the driver makes each range private first.
//! 6. `KVM_SEV_SNP_LAUNCH_FINISH`: KVM measures every vCPU's VMSA here (`snp_launch_update_vmsa`)
//!    and no vCPU created later; the backend refuses a finish without vCPUs.
//!
//! The backend borrows the VM fd and `/dev/sev`, which the VMM keeps: the kernel issues the
//! guest's attestation requests through that `/dev/sev` fd for the VM's life
//! (`snp_launch_start`, `snp_handle_guest_req`). The same [`launch`] runs in
//! `tests/launch.rs` against the model of every kernel version.

#![allow(dead_code)] // `tests/launch.rs` includes this file for `launch` and uses only that.

use std::os::fd::AsFd;
use std::process::ExitCode;

use cc_populate::{Driver, MemoryLayout, Memslot, PlanBuilder, Report, Role};
use sev_backend::{snp_cpuid_table, FinishParams, InitParams, SevIoctl, SnpBackend, StartParams};

/// Where the launch puts its pages (those of OVMF's AmdSev build: its SEV metadata names the
/// secrets page at 0x80d000 and the CPUID page at 0x80e000; a VMM with a real image takes
/// them from `sev_backend::plan_ovmf`).
pub const SECRETS_GPA: u64 = 0x80_d000;
/// The CPUID page.
pub const CPUID_GPA: u64 = 0x80_e000;
/// Guest RAM below the firmware: one memslot from 0.
pub const LOW_SIZE: u64 = 0x8000_0000;
/// The firmware's memslot: the 16 MiB below 4 GiB.
pub const FLASH_GPA: u64 = 0xff00_0000;
/// Its size.
pub const FLASH_SIZE: u64 = 0x100_0000;

/// What the VMM does to vCPU `id` right after creating it (`KVM_SET_CPUID2`, registers).
pub type VcpuSetup<'a, I> =
    dyn FnMut(&mut SnpBackend<I>, u64) -> Result<(), Box<dyn std::error::Error>> + 'a;

/// The launch after `KVM_CREATE_VM` and the VMM's memslots, over any ioctl layer: INIT2, `n`
/// vCPUs (each configured by `vcpu_setup`, e.g. `KVM_SET_CPUID2`), LAUNCH_START, populate,
/// LAUNCH_FINISH. `cpuid` is the vCPU's CPUID as `(function, index, flags, [eax, ebx, ecx,
/// edx])`; `firmware` goes right below 4 GiB.
pub fn launch<I: SevIoctl>(
    snp: &mut SnpBackend<I>,
    vcpus: u64,
    vcpu_setup: &mut VcpuSetup<'_, I>,
    cpuid: &[(u32, u32, u32, [u32; 4])],
    firmware: &[u8],
) -> Result<Report, Box<dyn std::error::Error>> {
    snp.init(&InitParams::default())?; // KVM_SEV_INIT2
    for id in 0..vcpus {
        snp.create_vcpu(id)?; // KVM_CREATE_VCPU, after INIT2
        vcpu_setup(snp, id)?;
    }
    snp.start(&StartParams::default())?; // KVM_SEV_SNP_LAUNCH_START

    let cpuid_page = snp_cpuid_table(cpuid)?.to_page()?;
    let fw_gpa = (1u64 << 32)
        .checked_sub(firmware.len() as u64)
        .ok_or("firmware larger than 4 GiB")?;
    let plan = PlanBuilder::new()
        .source(fw_gpa, Role::Measured, firmware)
        .zeros(SECRETS_GPA, 4096, Role::Secrets)
        .source(CPUID_GPA, Role::Cpuid, &cpuid_page)
        .build(
            &snp.caps_now(),
            &MemoryLayout::new(&[
                Memslot {
                    slot: 0,
                    gpa: 0,
                    size: LOW_SIZE,
                },
                Memslot {
                    slot: 1,
                    gpa: FLASH_GPA,
                    size: FLASH_SIZE,
                },
            ])?,
        )?;
    let report = Driver::new(&mut *snp).run(&plan)?; // private first, then LAUNCH_UPDATE
    snp.finish(&FinishParams::default())?; // KVM_SEV_SNP_LAUNCH_FINISH: the VMSAs
    Ok(report)
}

/// The whole launch on this machine's KVM, `args` being `[FIRMWARE] [VCPUS]` (`tests/kvm.rs`
/// checks it refuses without SNP).
pub fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let vcpus: u64 = args.get(1).map_or(Ok(2), |s| s.parse())?;

    let kvm = kvm_ioctls::Kvm::new()?;
    sev_backend::probe(&kvm)?; // Error::NotSupported without SNP
    let choice = sev_backend::KernelVersion::running()?; // refuses a kernel older than 6.12
    if choice.note != sev_backend::KernelNote::Known {
        eprintln!("launch: {}", choice.note);
    }
    let firmware = std::fs::read(
        args.first()
            .map_or("/usr/share/ovmf/OVMF.amdsev.fd", String::as_str),
    )?;

    // The VMM owns the VM, /dev/sev and its guest memory; the backend borrows them.
    let vm = kvm.create_vm_with_type(u64::from(sev_backend::uapi::KVM_X86_SNP_VM))?;
    let sev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sev_backend::SEV_DEVICE)?;
    let mut low = gmem::GuestMemfd::create(&vm, LOW_SIZE, gmem::GmemFlags::empty())?;
    let mut flash = gmem::GuestMemfd::create(&vm, FLASH_SIZE, gmem::GmemFlags::empty())?;
    let _slots = [
        low.bind(0, 0, 0, LOW_SIZE)?,
        flash.bind(1, FLASH_GPA, 0, FLASH_SIZE)?,
    ];
    let cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)?;
    let entries: Vec<_> = cpuid
        .as_slice()
        .iter()
        .map(|e| (e.function, e.index, e.flags, [e.eax, e.ebx, e.ecx, e.edx]))
        .collect();

    let mut io = sev_backend::KvmSevIoctl::new(&vm, sev.as_fd()).with_kernel(choice.version);
    io.add_guest_memfd(&mut low);
    io.add_guest_memfd(&mut flash);
    let mut snp = SnpBackend::with_ioctl(io, sev_backend::LaunchConfig::default());
    let mut setup = |snp: &mut SnpBackend<sev_backend::KvmSevIoctl<'_, _, _>>,
                     id: u64|
     -> Result<(), Box<dyn std::error::Error>> {
        let vcpu = usize::try_from(id)
            .ok()
            .and_then(|i| snp.ioctl().vcpus().get(i))
            .ok_or("vCPU not created")?;
        vcpu.set_cpuid2(&cpuid)?; // KVM_SET_CPUID2
        Ok(())
    };
    let report = launch(&mut snp, vcpus, &mut setup, &entries, &firmware)?;
    println!(
        "launched: {} regions populated, {} vCPUs measured at LAUNCH_FINISH",
        report.regions.len(),
        snp.vcpus()
    );
    // The vCPUs are ready to run; the VMM keeps `vm` and `sev` open as long as the guest lives.
    let _vcpus = snp.ioctl_mut().take_vcpus();
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("launch: {e}");
            ExitCode::FAILURE
        }
    }
}
