//! The real `/dev/kvm` of a machine without SEV-SNP: probing and creating a launch refuse with
//! the typed "not supported" error.

use sev_backend::{probe, Error, LaunchConfig, SnpBackend};

#[test]
fn real_kvm_without_snp_says_not_supported() {
    let Some(kvm) = gmem::testing::require_kvm("real_kvm_without_snp_says_not_supported") else {
        return;
    };
    let types = kvm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_VM_TYPES));
    if types > 0 && types & (1 << kvm_bindings::KVM_X86_SNP_VM) != 0 {
        eprintln!("this KVM offers SNP VMs (KVM_CAP_VM_TYPES = {types:#x}): nothing to refuse");
        return;
    }
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
