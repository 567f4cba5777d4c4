//! The worked integration on this host's real `/dev/kvm`: where the host has no SEV-SNP
//! (`KVM_X86_SNP_VM` missing from `KVM_CAP_VM_TYPES`, or no `/dev/sev`), the VMM's launch ends
//! in the typed "not supported" error naming what is missing.

use gmem::testing::{self, Need};
use vmm_example::{KvmSnp, LaunchOptions, Vmm};

fn the_launch_on_this_host_ends_in_not_supported_or_runs() {
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let probe = sev_backend::probe(&kvm);
    let vm = KvmSnp::create(&kvm, 16 << 20);
    match probe {
        Err(sev_backend::Error::NotSupported { reason }) => {
            let e = vm.unwrap_err();
            assert!(e.is_not_supported(), "{e}");
            assert_eq!(
                e.to_string(),
                format!("SEV-SNP: SNP not supported by this KVM: {reason}")
            );
        }
        Err(e) => panic!("probe: {e}"),
        // An SEV-SNP host (never seen by this project): the whole launch, on hardware.
        Ok(_) => {
            let mut vmm = Vmm::new(vm.unwrap(), &[(0, 16 << 20)]).unwrap();
            let file = vmm_example::testing::sample_file();
            let report = vmm.launch_igvm(&file, &LaunchOptions::default()).unwrap();
            assert_eq!(report.digest, None);
        }
    }
}

fn main() -> std::process::ExitCode {
    testing::run(vec![gmem::kvm_test!(
        the_launch_on_this_host_ends_in_not_supported_or_runs,
        Need::Kvm
    )])
}
