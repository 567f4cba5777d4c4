//! Probing and versions: only capability numbers read in the series' own patches are used,
//! other versions are refused by name, and this machine's KVM (no CCA) says so with typed errors.

use gmem::testing::Need;
use std::cell::Cell;

use cc_populate::{Driver, ErrorKind, MemoryLayout, Phase, PlanBuilder, Role, StopCause};
use cca_backend::{
    probe, probe_with, CapSource, CcaBackend, Error, HashAlgo, KvmCcaIoctl, RealmParams,
    UapiVersion,
};

/// A kernel that creates every VM it is asked for (a kernel with the series).
fn any_vm(_: u64) -> Result<(), i32> {
    Ok(())
}

fn series_number_is_asked_unless_the_caller_knows_better() {
    let asked = Cell::new(0);
    let check = |cap: u32| {
        asked.set(cap);
        i32::from(cap == 249 || cap == 251)
    };
    let p = probe_with(&check, &any_vm, None, true, UapiVersion::V14).unwrap();
    assert_eq!(
        (p.cap, p.cap_source, p.version),
        (249, CapSource::SeriesNumber, UapiVersion::V14)
    );
    // v13's number (248) is not answered by this kernel.
    let e = probe_with(&check, &any_vm, None, true, UapiVersion::V13).unwrap_err();
    assert_eq!(asked.get(), 248);
    let Error::NotSupported { reason } = e else {
        panic!()
    };
    assert!(reason.contains("KVM_CHECK_EXTENSION(248) = 0"), "{reason}");
    assert!(
        reason.contains("series patches") && reason.contains("v13"),
        "{reason}"
    );
    // A caller-known number takes precedence.
    let p = probe_with(&check, &any_vm, Some(251), true, UapiVersion::V12).unwrap();
    assert_eq!(
        (p.cap, p.cap_source, p.version),
        (251, CapSource::Caller, UapiVersion::V12)
    );
    let e = probe_with(&check, &any_vm, Some(7), true, UapiVersion::V12).unwrap_err();
    assert!(e.to_string().contains("from the caller"), "{e}");
}

/// A capability that answers is confirmed by creating a VM of the version's realm type, which a
/// kernel without the series refuses: mainline 7.3 answers 251 (`KVM_CAP_ARM_PMU_V3_STRICT`,
/// `include/uapi/linux/kvm.h`; arm64 `kvm_vm_ioctl_check_extension` returns
/// `kvm_supports_guest_pmuv3()`) and refuses every type bit outside `KVM_VM_TYPE_ARM_MASK`
/// (`kvm_arch_init_vm`: `if (type & ~KVM_VM_TYPE_ARM_MASK) return -EINVAL;`, the mask being the
/// IPA size 0xff and bit 31).
fn a_reused_capability_number_does_not_fool_the_probe() {
    // Mainline 7.3 arm64, as read: the capabilities it answers among 247-251, and its VM types.
    let mainline_7_3 = |cap: u32| i32::from(cap == 251);
    let created = std::cell::RefCell::new(Vec::new());
    let mainline_create = |vm_type: u64| {
        created.borrow_mut().push(vm_type);
        if vm_type & !(0xff | (1 << 31)) != 0 {
            Err(libc::EINVAL)
        } else {
            Ok(())
        }
    };
    for v in [UapiVersion::V14, UapiVersion::V13, UapiVersion::V12] {
        let e = probe_with(&mainline_7_3, &mainline_create, Some(251), true, v).unwrap_err();
        let Error::NotSupported { reason } = e else {
            panic!()
        };
        assert!(reason.contains("KVM_CHECK_EXTENSION(251) = 1"), "{reason}");
        assert!(reason.contains("KVM_CREATE_VM"), "{reason}");
        assert!(reason.contains("errno 22"), "{reason}");
        assert!(reason.contains("KVM_CAP_ARM_PMU_V3_STRICT"), "{reason}");
    }
    // The realm types asked, IPA size 32: bit 30 on v14 (16/44), bit 8 on v13 and v12.
    assert_eq!(
        *created.borrow(),
        vec![(1 << 30) | 32, (1 << 8) | 32, (1 << 8) | 32]
    );
    assert_eq!(cca_backend::PROBE_IPA_BITS, 32);
    // A v14 kernel (bit 30) asked for v13's type (bit 8) refuses it too: the version is wrong.
    let v14_kernel = |cap: u32| i32::from(cap == 248 || cap == 249);
    let v14_create = |vm_type: u64| {
        if vm_type & !(0xff | (1 << 30)) != 0 {
            Err(libc::EINVAL)
        } else {
            Ok(())
        }
    };
    assert!(probe_with(&v14_kernel, &v14_create, None, true, UapiVersion::V14).is_ok());
    assert!(matches!(
        probe_with(&v14_kernel, &v14_create, None, true, UapiVersion::V13),
        Err(Error::NotSupported { .. })
    ));
}

fn series_numbers_are_the_patches() {
    // v12 06/46, v13 11/48, v14 13/44 ("Define the user ABI").
    assert_eq!(UapiVersion::V14.series_cap(), 249);
    assert_eq!(UapiVersion::V13.series_cap(), 248);
    assert_eq!(UapiVersion::V12.series_cap(), 247);
    assert_eq!(UapiVersion::default(), UapiVersion::V14);
    for (n, v) in [
        (12, UapiVersion::V12),
        (13, UapiVersion::V13),
        (14, UapiVersion::V14),
    ] {
        assert_eq!(UapiVersion::from_series(n).unwrap(), v);
    }
    // The realm VM type: bit 30 on v14 (16/44), bit 8 before (v12 09/46, v13 14/48).
    assert_eq!(UapiVersion::V14.realm_vm_type(40), (1 << 30) | 40);
    assert_eq!(UapiVersion::V13.realm_vm_type(40), (1 << 8) | 40);
    assert_eq!(UapiVersion::V12.realm_vm_type(48), (1 << 8) | 48);
    assert_eq!(UapiVersion::V14.to_string(), "v14");
}

fn unsupported_versions_are_refused_by_name() {
    for n in [0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16, 17, 99] {
        let e = UapiVersion::from_series(n).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { series, .. } if series == n),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with(&format!("version v{n} of the Arm CCA KVM series")));
    }
    let e = UapiVersion::from_series(11).unwrap_err();
    assert!(e.to_string().contains("capability number"), "{e}");
    for n in [15, 16] {
        let e = UapiVersion::from_series(n).unwrap_err();
        assert!(e.to_string().contains("could not be read"), "{e}");
    }
    // v9 was dropped, and says why: its number is mainline's CACHEABLE_PFNMAP capability.
    let e = UapiVersion::from_series(9).unwrap_err();
    assert!(e.to_string().contains("dropped"), "{e}");
    assert!(
        e.to_string()
            .contains("KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED"),
        "{e}"
    );
}

fn non_arm64_host_asks_nothing() {
    let check = |_: u32| -> i32 { panic!("must not ask the kernel") };
    let create = |_: u64| -> Result<(), i32> { panic!("must not ask the kernel") };
    let e = probe_with(&check, &create, Some(249), false, UapiVersion::V14).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("Arm CCA realms are not supported by this KVM"));
}

fn real_kvm_here_is_not_supported() {
    let kvm = gmem::testing::kvm();
    for v in [UapiVersion::V14, UapiVersion::V13, UapiVersion::V12] {
        let e = probe(&kvm, v).unwrap_err();
        assert!(matches!(e, Error::NotSupported { .. }), "{e}");
        #[cfg(target_arch = "x86_64")]
        assert!(e.to_string().contains("x86_64 host"), "{e}");
    }
}

fn real_vm_fd_refuses_with_typed_errors() {
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let vcpus = [vm.create_vcpu(0).unwrap()];
    // configure reaches the vCPUs only through arm64 ioctls: refused, naming the vCPU.
    let io = KvmCcaIoctl::new(&vm).with_vcpus(&vcpus);
    let mut be = CcaBackend::with_version(io, UapiVersion::V14, 249);
    let e = be
        .configure(&RealmParams::new(HashAlgo::Sha256, 40))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::VcpuIoctl {
                vcpu: 0,
                errno: libc::ENOTTY,
                ..
            }
        ),
        "{e}"
    );
    // Without vCPUs configure says what is missing.
    let mut be = CcaBackend::with_version(KvmCcaIoctl::new(&vm), UapiVersion::V14, 249);
    assert!(be
        .configure(&RealmParams::new(HashAlgo::Sha256, 40))
        .is_err());
    // The run stops at the first step, the conversion (KVM_SET_MEMORY_ATTRIBUTES through a
    // guest_memfd): the layer holds none the range is bound to, so it is refused (EINVAL).
    for v in [UapiVersion::V14, UapiVersion::V12] {
        let mut be = CcaBackend::with_version(KvmCcaIoctl::new(&vm), v, v.series_cap());
        let data = cc_populate::SourceBuf::new(4096).unwrap();
        let plan = PlanBuilder::new()
            .source(0, Role::Measured, data.as_slice())
            .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
            .unwrap();
        let err = Driver::new(&mut be).run(&plan).unwrap_err();
        let stop = err.report().unwrap().stop.clone().unwrap();
        assert_eq!(stop.phase, Phase::Convert);
        let StopCause::Backend(e) = stop.cause else {
            panic!("{stop}")
        };
        assert_eq!(e.kind, ErrorKind::Failed);
        assert_eq!(e.errno, Some(libc::EINVAL));
        assert!(
            e.detail.contains("KVM_SET_MEMORY_ATTRIBUTES"),
            "{}",
            e.detail
        );
    }
    // v13 (no configure needed), with the caller converting: populate itself is ENOTTY.
    let mut be = CcaBackend::with_version(KvmCcaIoctl::new(&vm), UapiVersion::V13, 248);
    let data = cc_populate::SourceBuf::new(4096).unwrap();
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, data.as_slice())
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let options = cc_populate::DriverOptions {
        conversion: cc_populate::ConversionPolicy::CallerConverted,
        ..Default::default()
    };
    let err = Driver::new(&mut be)
        .with_options(options)
        .run(&plan)
        .unwrap_err();
    let StopCause::Backend(e) = err.report().unwrap().stop.clone().unwrap().cause else {
        panic!()
    };
    assert_eq!(
        (e.kind, e.errno),
        (ErrorKind::Unsupported, Some(libc::ENOTTY))
    );
    assert!(
        e.detail.contains("KVM_ARM_RMI_POPULATE (v13)"),
        "{}",
        e.detail
    );
}

fn real_ioctl_layer_refuses_every_call_off_arm64() {
    use cca_backend::CcaIoctl;
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let vcpus = [vm.create_vcpu(0).unwrap()];
    let io = KvmCcaIoctl::new(&vm).with_vcpus(&vcpus);
    assert_eq!(io.vcpu_count(), 1);
    // Not told of a vGIC, the layer cannot say whether there is one.
    assert_eq!(io.in_kernel_vgic(), None);
    let mut io = KvmCcaIoctl::new(&vm);
    // Conversion goes through the layer's guest_memfds on every architecture (the ioctl is
    // generic): with none, every range is refused before any ioctl.
    assert_eq!(io.set_private(0, 4096), Err(libc::EINVAL));
    #[cfg(not(target_arch = "aarch64"))]
    {
        use cca_backend::uapi::{self, KvmArmRmiPopulate};
        let mut args = KvmArmRmiPopulate::default();
        assert_eq!(
            io.rmi_populate(cca_backend::PopulateRequest::V13, &mut args),
            Err(libc::ENOTTY)
        );
        let mut b = [0u8; 8];
        assert_eq!(
            io.vcpu_get_one_reg(0, uapi::KVM_REG_ID_AA64DFR0_EL1, &mut b),
            Err(libc::ENOTTY)
        );
        assert_eq!(
            io.vcpu_set_one_reg(0, uapi::KVM_REG_ID_AA64DFR0_EL1, &b),
            Err(libc::ENOTTY)
        );
        assert_eq!(
            io.vcpu_finalize(0, uapi::KVM_ARM_VCPU_SVE),
            Err(libc::ENOTTY)
        );
    }
}

/// A layer with only the required methods: the defaults refuse what it cannot do.
struct Minimal;

impl cca_backend::CcaIoctl for Minimal {
    fn rmi_populate(
        &mut self,
        _: cca_backend::PopulateRequest,
        _: &mut cca_backend::uapi::KvmArmRmiPopulate,
    ) -> Result<i32, i32> {
        Err(libc::ENOTTY)
    }
}

fn default_layer_methods_refuse() {
    use cca_backend::CcaIoctl;
    // Through the `&mut T` forwarding impl.
    fn calls<I: CcaIoctl>(mut io: I) {
        assert_eq!(io.vcpu_count(), 0);
        assert_eq!(io.set_private(0, 4096), Err(libc::ENOTTY));
        let mut b = [0u8; 8];
        assert_eq!(io.vcpu_get_one_reg(0, 1, &mut b), Err(libc::ENOTTY));
        assert_eq!(io.vcpu_set_one_reg(0, 1, &b), Err(libc::ENOTTY));
        assert_eq!(io.vcpu_finalize(0, 4), Err(libc::ENOTTY));
        assert_eq!(io.in_kernel_vgic(), None);
        let mut a = cca_backend::uapi::KvmArmRmiPopulate::default();
        assert_eq!(
            io.rmi_populate(cca_backend::PopulateRequest::V12, &mut a),
            Err(libc::ENOTTY)
        );
    }
    let mut m = Minimal;
    calls(&mut m);
    // The backend turns them into typed errors.
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V12, 247);
    assert!(matches!(
        be.configure(&RealmParams::new(HashAlgo::Sha256, 40)),
        Err(Error::WrongState { .. })
    ));
    assert!(be.adopt(&RealmParams::new(HashAlgo::Sha256, 40)).is_ok());
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(series_number_is_asked_unless_the_caller_knows_better),
        gmem::kvm_test!(series_numbers_are_the_patches),
        gmem::kvm_test!(a_reused_capability_number_does_not_fool_the_probe),
        gmem::kvm_test!(unsupported_versions_are_refused_by_name),
        gmem::kvm_test!(non_arm64_host_asks_nothing),
        gmem::kvm_test!(real_kvm_here_is_not_supported, Need::Kvm),
        gmem::kvm_test!(real_vm_fd_refuses_with_typed_errors, Need::Kvm),
        gmem::kvm_test!(real_ioctl_layer_refuses_every_call_off_arm64, Need::Kvm),
        gmem::kvm_test!(default_layer_methods_refuse),
    ])
}
