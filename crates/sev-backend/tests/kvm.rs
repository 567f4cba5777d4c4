//! The real `/dev/kvm` of a machine without SEV-SNP: probing and creating a launch refuse with
//! the typed "not supported" error.

#[path = "../examples/launch.rs"]
mod example;

use gmem::testing::Need;
use sev_backend::{probe, Error, InPlaceMode, LaunchConfig, SnpBackend};

/// This machine's KVM, or `None` (said on stderr) when it offers SNP VMs: then there is
/// nothing to refuse.
fn kvm_without_snp() -> Option<kvm_ioctls::Kvm> {
    let kvm = gmem::testing::kvm();
    let types = kvm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_VM_TYPES));
    if types > 0 && types & (1 << kvm_bindings::KVM_X86_SNP_VM) != 0 {
        eprintln!("this KVM offers SNP VMs (KVM_CAP_VM_TYPES = {types:#x}): nothing to refuse");
        return None;
    }
    Some(kvm)
}

fn real_kvm_without_snp_says_not_supported() {
    let Some(kvm) = kvm_without_snp() else {
        return;
    };
    let err = probe(&kvm).unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("SNP not supported by this KVM: KVM_CAP_VM_TYPES is "),
        "{msg}"
    );
    assert!(msg.contains("KVM_X86_SNP_VM"), "{msg}");

    let err = SnpBackend::create(&kvm, LaunchConfig::default()).unwrap_err();
    assert_eq!(
        err,
        Error::NotSupported {
            reason: msg["SNP not supported by this KVM: ".len()..].to_string()
        }
    );
}

fn real_kvm_refuses_an_snp_vm_and_the_backend_names_why() {
    let Some(kvm) = kvm_without_snp() else {
        return;
    };
    // arch/x86/kvm/x86.c: kvm_arch_init_vm (Linux 6.18.2): a VM type this KVM does not support
    // is EINVAL. The backend never gets that far: its probe says why first.
    let e = kvm
        .create_vm_with_type(u64::from(kvm_bindings::KVM_X86_SNP_VM))
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    // Whatever the configuration, including in-place population through the kernel (which
    // 6.18 does not offer either), the refusal is the probe's.
    for in_place in [
        InPlaceMode::Unsupported,
        InPlaceMode::Kernel,
        InPlaceMode::CopyBeforeConversion,
    ] {
        let err = SnpBackend::create(
            &kvm,
            LaunchConfig {
                in_place,
                ..LaunchConfig::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
        assert!(err.to_string().contains("KVM_X86_SNP_VM"), "{err}");
    }
}

/// `examples/launch.rs` on this machine's KVM: without SNP it ends in the typed refusal.
fn the_example_launch_ends_in_not_supported_without_snp() {
    if kvm_without_snp().is_none() {
        return;
    }
    let e = example::run(&[]).unwrap_err();
    let e = e.downcast_ref::<Error>().expect("a sev_backend::Error");
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            the_example_launch_ends_in_not_supported_without_snp,
            Need::Kvm
        ),
        gmem::kvm_test!(real_kvm_without_snp_says_not_supported, Need::Kvm),
        gmem::kvm_test!(
            real_kvm_refuses_an_snp_vm_and_the_backend_names_why,
            Need::Kvm
        ),
    ])
}
