//! Probing on the real /dev/kvm of the machine the tests run on. Where there is no TDX (the
//! project's machines), every entry point must say so with `Error::NotSupported`.

use kvm_ioctls::Kvm;
use tdx_backend::{create_td_vm, probe, Error, KvmTdx, TdxBackend};

// TODO: switch to `gmem::testing::require_kvm` once gmem has landed it.
fn require_kvm(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("SKIPPED {test}: /dev/kvm not usable: {e}");
            None
        }
    }
}

fn has_tdx(kvm: &Kvm) -> bool {
    kvm.check_extension_raw(235) > 0 && kvm.check_extension_raw(235) & (1 << 5) != 0
}

#[test]
fn probe_says_tdx_is_not_supported_here() {
    let Some(kvm) = require_kvm("probe_says_tdx_is_not_supported_here") else {
        return;
    };
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

#[test]
fn tdx_capabilities_on_an_ordinary_vm_are_not_supported() {
    let Some(kvm) = require_kvm("tdx_capabilities_on_an_ordinary_vm_are_not_supported") else {
        return;
    };
    let vm = kvm.create_vm().unwrap();
    let mut td = TdxBackend::new(KvmTdx::new(&vm));
    let e = td.capabilities().unwrap_err();
    eprintln!("capabilities: {e}");
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("TDX not supported by this KVM"),
        "{e}"
    );
    // vCPU sub-commands without a vCPU fd are refused before any ioctl.
    let e = td.init_vcpu(0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Ioctl {
                errno: libc::EBADF,
                ..
            }
        ),
        "{e:?}"
    );
}
