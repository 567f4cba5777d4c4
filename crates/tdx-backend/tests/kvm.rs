//! Probing on the real /dev/kvm of the machine the tests run on. Where there is no TDX (the
//! project's machines), every entry point must say so with `Error::NotSupported`.

use gmem::testing::Need;
use kvm_ioctls::Kvm;
use tdx_backend::{create_td_vm, probe, Error, KvmTdx, TdxBackend};

fn has_tdx(kvm: &Kvm) -> bool {
    kvm.check_extension_raw(235) > 0 && kvm.check_extension_raw(235) & (1 << 5) != 0
}

fn probe_says_tdx_is_not_supported_here() {
    let kvm = gmem::testing::kvm();
    if has_tdx(&kvm) {
        assert_eq!(probe(&kvm), Ok(()));
        return;
    }
    let e = probe(&kvm).unwrap_err();
    eprintln!("probe: {e}");
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("TDX not supported by this KVM"), "{msg}");
    assert!(
        msg.contains("KVM_X86_TDX_VM") || msg.contains("KVM_CAP_VM_TYPES"),
        "{msg}"
    );

    let e = create_td_vm(&kvm).unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
}

fn tdx_capabilities_on_an_ordinary_vm_are_not_supported() {
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let mut io = KvmTdx::new(&vm);
    // What the check reads on the VM fd: the host's VM types, and sync regs (an ordinary VM
    // has no protected state: KVM_SYNC_X86_VALID_FIELDS).
    use tdx_backend::TdxIoctl;
    let types = io.vm_check_extension(235);
    assert_eq!(
        types,
        kvm.check_extension_raw(235),
        "same answer on the VM fd"
    );
    assert_eq!(io.vm_check_extension(74), 0x7);
    // A live VM answers KVM_CHECK_EXTENSION: not dead.
    assert!(!io.vm_dead());
    let mut td = TdxBackend::new(io);
    let e = td.capabilities().unwrap_err();
    eprintln!("capabilities: {e}");
    if has_tdx(&kvm) {
        assert!(matches!(e, Error::NotATd { .. }), "{e:?}");
        return;
    }
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("TDX not supported by this KVM"), "{msg}");
    assert!(
        msg.contains(&format!("KVM_CAP_VM_TYPES on the VM fd is {types:#x}")),
        "{msg}"
    );
    assert!(msg.contains("no TDX command was sent"), "{msg}");
    // Every TDX command is refused before any ioctl: INIT_VM by the same check, the steps
    // after it by the backend's guards (INIT_VM has not been done).
    let e = td.init_vm(&Default::default()).unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    for e in [td.init_vcpu(0, 0).unwrap_err(), td.finalize().unwrap_err()] {
        assert!(
            matches!(
                e,
                Error::StepMissing {
                    missing: tdx_backend::LaunchStep::InitVm,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

fn the_real_ioctl_path_runs_and_an_ordinary_vm_refuses_it() {
    use tdx_backend::uapi::{kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_TDX_INIT_MEM_REGION};
    use tdx_backend::TdxIoctl;
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut io = KvmTdx::new(&vm).with_vcpu(&vcpu);
    let source = vec![0u8; 3 * 4096];
    let aligned = source.as_ptr().align_offset(4096);
    let src = &source[aligned..aligned + 4096];
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_MEM_REGION,
        ..Default::default()
    };
    // Arguments the kernel would read out of bounds are refused before any ioctl.
    let mut region = kvm_tdx_init_mem_region {
        source_addr: src.as_ptr() as u64,
        gpa: 0,
        nr_pages: 2,
    };
    assert_eq!(
        io.init_mem_region(&mut cmd, &mut region, src),
        Err(libc::EINVAL)
    );
    let mut region = kvm_tdx_init_mem_region {
        source_addr: src.as_ptr() as u64 + 4096,
        gpa: 0,
        nr_pages: 1,
    };
    assert_eq!(
        io.init_mem_region(&mut cmd, &mut region, src),
        Err(libc::EINVAL)
    );
    // Well-formed arguments reach the kernel, which refuses TDX on an ordinary VM's vCPU.
    let mut region = kvm_tdx_init_mem_region {
        source_addr: src.as_ptr() as u64,
        gpa: 0,
        nr_pages: 1,
    };
    let r = io.init_mem_region(&mut cmd, &mut region, src);
    eprintln!("INIT_MEM_REGION on an ordinary vCPU: {r:?}");
    assert!(
        matches!(r, Err(e) if e == libc::ENOTTY || e == libc::EINVAL),
        "{r:?}"
    );
    assert_eq!(region.nr_pages, 1, "nothing was done");
    // In place (series v8 patch 23/46): source_addr 0 with no source lent reaches the kernel
    // too, which refuses it the same way here.
    let mut region = kvm_tdx_init_mem_region {
        source_addr: 0,
        gpa: 0,
        nr_pages: 1,
    };
    let r = io.init_mem_region(&mut cmd, &mut region, &[]);
    assert!(
        matches!(r, Err(e) if e == libc::ENOTTY || e == libc::EINVAL),
        "{r:?}"
    );
    assert_eq!(region.nr_pages, 1, "nothing was done");
    // A payload too short for the sub-command never reaches the kernel.
    let mut short = [0u8; 16];
    let mut caps = kvm_tdx_cmd::default();
    assert_eq!(io.vm_op(&mut caps, Some(&mut short)), Err(libc::EINVAL));
}

/// `KvmTdx`'s vCPU management and its refusals before any ioctl, on an ordinary VM of the real
/// KVM: the steps that are plain KVM (split irqchip, vCPU creation, `KVM_SET_CPUID2`) succeed
/// as the kernel answers them, the TDX sub-commands are refused, and vCPUs are handed back.
fn kvm_tdx_manages_vcpus_on_an_ordinary_vm() {
    use tdx_backend::uapi::{kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region};
    use tdx_backend::TdxIoctl;
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let mut io = KvmTdx::new(&vm);
    // No vCPU yet: vCPU-scoped sub-commands have nowhere to go.
    let mut cmd = kvm_tdx_cmd {
        id: 2, // KVM_TDX_INIT_VCPU
        ..Default::default()
    };
    assert_eq!(io.vcpu_op(&mut cmd, None), Err(libc::EBADF));
    assert_eq!(io.vcpu_op_on(0, &mut cmd, None), Err(libc::EBADF));
    assert_eq!(io.set_cpuid(0, &[]), Err(libc::EBADF));
    // KVM_CAP_SPLIT_IRQCHIP before any vCPU, as a TD needs it (x86.c: kvm_vm_ioctl_enable_cap).
    io.enable_split_irqchip(24).unwrap();
    // ... and refused once it is set (EEXIST: irqchip already in the kernel).
    assert_eq!(io.enable_split_irqchip(24), Err(libc::EEXIST));
    io.create_vcpu(0).unwrap();
    // The same id again: kvm_vm_ioctl_create_vcpu says EEXIST.
    assert_eq!(io.create_vcpu(0), Err(libc::EEXIST));
    assert!(io.vcpu(0).is_some() && io.vcpu(1).is_none());
    let host: Vec<kvm_cpuid_entry2> = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap()
        .as_slice()
        .iter()
        .map(|e| (*e).into())
        .collect();
    io.set_cpuid(0, &host).unwrap();
    assert_eq!(io.set_cpuid(1, &host), Err(libc::EBADF));
    // An ordinary vCPU has no TDX: the sub-command reaches the kernel and is refused.
    assert!(io.vcpu_op(&mut cmd, None).is_err());
    assert!(io.vcpu_op_on(0, &mut cmd, None).is_err());
    // A region whose source is not the buffer given, or too short, never reaches the kernel.
    let source = vec![0u8; 4096];
    let mut region = kvm_tdx_init_mem_region {
        source_addr: source.as_ptr() as u64 + 4096,
        gpa: 0,
        nr_pages: 1,
    };
    let mut mem = kvm_tdx_cmd {
        id: 3, // KVM_TDX_INIT_MEM_REGION
        ..Default::default()
    };
    assert_eq!(
        io.init_mem_region(&mut mem, &mut region, &source),
        Err(libc::EINVAL)
    );
    region.source_addr = source.as_ptr() as u64;
    region.nr_pages = 2;
    assert_eq!(
        io.init_mem_region(&mut mem, &mut region, &source),
        Err(libc::EINVAL)
    );
    // No guest_memfd lent: conversion is refused before any ioctl.
    assert_eq!(io.set_private(0, 4096), Err(libc::EINVAL));
    assert!(io.vm_check_extension(235) >= 1); // KVM_CAP_VM_TYPES: at least the default VM
    let vcpus = io.into_vcpus();
    assert_eq!(vcpus.len(), 1);
    assert_eq!(vcpus[0].0, 0);
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(probe_says_tdx_is_not_supported_here, Need::Kvm),
        gmem::kvm_test!(kvm_tdx_manages_vcpus_on_an_ordinary_vm, Need::Kvm),
        gmem::kvm_test!(
            tdx_capabilities_on_an_ordinary_vm_are_not_supported,
            Need::Kvm
        ),
        gmem::kvm_test!(
            the_real_ioctl_path_runs_and_an_ordinary_vm_refuses_it,
            Need::Kvm
        ),
    ])
}
