//! The real `/dev/kvm` of a machine without SEV-SNP: probing and creating a launch refuse with
//! the typed "not supported" error. On a machine whose KVM offers SNP VMs there is nothing to
//! refuse: the tests are reported skipped there (need `no_snp_vm`), never passed unchecked.

#[path = "../examples/launch.rs"]
mod example;

use gmem::testing::Need;
use sev_backend::{probe, Error, InPlaceMode, LaunchConfig, SnpBackend};

/// `KVM_CAP_VM_TYPES` of this machine's KVM without the SNP VM type (`KVM_X86_SNP_VM`, bit 4).
fn no_snp_vm() -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let types = kvm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_VM_TYPES));
    if types > 0 && types & (1 << kvm_bindings::KVM_X86_SNP_VM) != 0 {
        return Err(format!(
            "this KVM offers SNP VMs (KVM_CAP_VM_TYPES = {types:#x}): nothing to refuse"
        ));
    }
    Ok(())
}

/// What these tests need: a KVM without SNP (`lab/skipcheck.py` re-checks `no_snp_vm`).
const NO_SNP_VM: Need = Need::Tool {
    id: "no_snp_vm",
    from: "a KVM without KVM_X86_SNP_VM in KVM_CAP_VM_TYPES (any host but an SNP one)",
    check: no_snp_vm,
};

fn kvm_without_snp() -> kvm_ioctls::Kvm {
    gmem::testing::kvm()
}

fn real_kvm_without_snp_says_not_supported() {
    let kvm = kvm_without_snp();
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
    let kvm = kvm_without_snp();
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
    let e = example::run(&[]).unwrap_err();
    let e = e.downcast_ref::<Error>().expect("a sev_backend::Error");
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            the_example_launch_ends_in_not_supported_without_snp,
            Need::Kvm,
            NO_SNP_VM
        ),
        gmem::kvm_test!(
            real_kvm_without_snp_says_not_supported,
            Need::Kvm,
            NO_SNP_VM
        ),
        gmem::kvm_test!(
            real_kvm_refuses_an_snp_vm_and_the_backend_names_why,
            Need::Kvm,
            NO_SNP_VM
        ),
    ])
}
