//! Probing: the capability number is discovered, and a KVM without CCA says so with a typed error.

use std::cell::Cell;

use cc_populate::{Driver, ErrorKind, MemoryLayout, PlanBuilder, Role, StopCause};
use cca_backend::{probe, probe_with, CapSource, CcaBackend, Error, KvmCcaIoctl, UapiVersion};

#[test]
fn module_parameter_wins_over_series_number() {
    let asked = Cell::new(0);
    let check = |cap: u32| {
        asked.set(cap);
        i32::from(cap == 251)
    };
    let p = probe_with(&check, Some("251\n"), None, true, UapiVersion::V14).unwrap();
    assert_eq!(p.cap, 251);
    assert_eq!(p.cap_source, CapSource::ModuleParam);
    assert_eq!(asked.get(), 251);
    // Without the parameter, the v14 number (249) is asked, and this kernel does not know it.
    let e = probe_with(&check, None, None, true, UapiVersion::V14).unwrap_err();
    assert_eq!(asked.get(), 249);
    let Error::NotSupported { reason } = e else {
        panic!()
    };
    assert!(reason.contains("KVM_CHECK_EXTENSION(249) = 0"), "{reason}");
    assert!(reason.contains("series patches"), "{reason}");
    // A caller-known number takes precedence.
    let p = probe_with(&check, Some("7"), Some(251), true, UapiVersion::V12).unwrap();
    assert_eq!(
        (p.cap, p.cap_source, p.version),
        (251, CapSource::Caller, UapiVersion::V12)
    );
    // Garbage in the parameter is reported, not guessed around.
    assert!(matches!(
        probe_with(&check, Some("abc"), None, true, UapiVersion::V14),
        Err(Error::NotSupported { .. })
    ));
}

#[test]
fn series_numbers() {
    assert_eq!(UapiVersion::V14.series_cap(), 249);
    assert_eq!(UapiVersion::V13.series_cap(), 248);
    assert_eq!(UapiVersion::V12.series_cap(), 247);
    assert_eq!(UapiVersion::EnableCap.series_cap(), 243);
    assert_eq!(UapiVersion::from_series(14), Some(UapiVersion::V14));
    assert_eq!(UapiVersion::from_series(11), Some(UapiVersion::EnableCap));
    assert_eq!(UapiVersion::from_series(15), None);
    assert_eq!(UapiVersion::default(), UapiVersion::V14);
}

#[test]
fn non_arm64_host_asks_nothing() {
    let check = |_: u32| -> i32 { panic!("must not ask the kernel") };
    let e = probe_with(&check, Some("249"), None, false, UapiVersion::V14).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("Arm CCA realms are not supported by this KVM"));
}

#[test]
fn real_kvm_here_is_not_supported() {
    let Some(kvm) = gmem::testing::require_kvm("real_kvm_here_is_not_supported") else {
        return;
    };
    let e = probe(&kvm, UapiVersion::V14).unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e}");
    #[cfg(target_arch = "x86_64")]
    assert!(e.to_string().contains("x86_64 host"), "{e}");
}

#[test]
fn real_vm_fd_refuses_populate_with_a_typed_error() {
    let Some(kvm) = gmem::testing::require_kvm("real_vm_fd_refuses_populate_with_a_typed_error")
    else {
        return;
    };
    let vm = kvm.create_vm().unwrap();
    let mut be = CcaBackend::with_version(KvmCcaIoctl::new(&vm), UapiVersion::V14, 249);
    let data = cc_populate::SourceBuf::new(4096).unwrap();
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, data.as_slice())
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut be).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    let StopCause::Backend(e) = stop.cause else {
        panic!("{stop}")
    };
    // Not an arm64 CCA kernel: the ioctl is not supported (ENOTTY), named as such.
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(e.errno, Some(libc::ENOTTY));
    assert!(e.detail.contains("KVM_ARM_RMI_POPULATE"), "{}", e.detail);
}
