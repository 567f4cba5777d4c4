//! `examples/launch.rs`'s launch, run against the model of every kernel version
//! (`sev_backend::testing`, each rule cited there), and each precondition the kernel (or the
//! backend, where the kernel would accept a launch that cannot run) enforces, refusing when its
//! step is skipped or moved.

mod common;
#[path = "../examples/launch.rs"]
mod example;

use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role, RunError};
use common::{initialised, start, update};
use sev_backend::testing::KernelModel;
use sev_backend::uapi::{kvm_sev_init, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update};
use sev_backend::{
    measure, snp_cpuid_table, AttachState, Error, FinishParams, InitParams, KernelVersion,
    LaunchConfig, LaunchState, MeasureOptions, SevCmd, SevIoctl, SnpBackend, StartParams,
    UpdateSource, VmsaPage, KNOWN_KERNELS,
};

/// A vCPU's CPUID as KVM_GET_SUPPORTED_CPUID gives it: (function, index, flags, regs).
fn cpuid() -> Vec<(u32, u32, u32, [u32; 4])> {
    vec![
        (0, 0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (1, 0, 0, [0x00a0_0f11, 0x0800, 0x7ed8_320b, 0x178b_fbff]),
        (7, 0, 1, [0, 0x219c_97a9, 0x0040_069c, 0]),
        (0xd, 0, 1, [0x2e7, 0x980, 0x988, 0]),
        (0xd, 1, 1, [0xf, 0x3c0, 0x1800, 0]),
        (0xd, 2, 1, [0x100, 0x240, 0, 0]),
        (0x8000_0000, 0, 0, [0x8000_0028, 0, 0, 0]),
    ]
}

fn firmware() -> Vec<u8> {
    (0..(64u32 << 10))
        .map(|i| (i >> 8) as u8 ^ i as u8)
        .collect()
}

fn vmsa(id: u64) -> Vec<u8> {
    (0..4096u64).map(|i| (i * 7 + id * 31) as u8).collect()
}

/// The model's stand-in for KVM_SET_CPUID2 and the registers: the VMSA KVM will measure.
fn setup(snp: &mut SnpBackend<KernelModel>, id: u64) -> Result<(), Box<dyn std::error::Error>> {
    snp.ioctl_mut().vmsas.push(vmsa(id));
    Ok(())
}

#[test]
fn the_example_launch_runs_on_every_kernel_version() {
    let fw = firmware();
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        let report = example::launch(&mut snp, 3, &mut setup, &cpuid(), &fw).unwrap();
        assert!(report.is_complete(), "{v}");
        assert_eq!(snp.state(), LaunchState::Finished, "{v}");
        let m = snp.ioctl();
        assert!(m.twice.is_empty() && m.not_private.is_empty(), "{v}");
        assert!(
            m.warnings.is_empty() && m.violations.is_empty(),
            "{v}: {:?}",
            m.violations
        );
        assert_eq!(m.vcpus, 3, "{v}");
        assert!(m.vmsas_measured(), "{v}");
        // The digest the model's firmware computed is the offline one over the same pages and
        // the three VMSAs (sha2 in the model, cc-hash in the crate).
        let page = snp_cpuid_table(&cpuid()).unwrap().to_page().unwrap();
        let plan = PlanBuilder::new()
            .source((1 << 32) - fw.len() as u64, Role::Measured, &fw)
            .zeros(example::SECRETS_GPA, 4096, Role::Secrets)
            .source(example::CPUID_GPA, Role::Cpuid, &page)
            .build(&snp.caps_now(), &MemoryLayout::unbounded())
            .unwrap();
        let (a, b, c) = (vmsa(0), vmsa(1), vmsa(2));
        let want = measure(
            &plan,
            &[VmsaPage::kvm(&a), VmsaPage::kvm(&b), VmsaPage::kvm(&c)],
            &MeasureOptions::default(),
        )
        .unwrap();
        assert_eq!(m.launch_digest(), want, "{v}");
        // The CPUID page reached the firmware as built: leaf 0xD sub-leaves 0 and 1 with XCR0
        // input 1 and EBX 0x240 (QEMU's sev_snp_cpuid_info_fill), 7 entries.
        let sent = &m.ledger.iter().find(|(_, t, _)| *t == 6).unwrap().2;
        assert_eq!(u32::from_le_bytes(sent[0..4].try_into().unwrap()), 7);
        let fn3 = 16 + 3 * 48; // (0xd, 0)
        assert_eq!(&sent[fn3..fn3 + 4], &0xdu32.to_le_bytes());
        assert_eq!(&sent[fn3 + 8..fn3 + 16], &1u64.to_le_bytes());
        assert_eq!(&sent[fn3 + 28..fn3 + 32], &0x240u32.to_le_bytes());
        let fn5 = 16 + 5 * 48; // (0xd, 2): untouched, xcr0_in 0
        assert_eq!(&sent[fn5 + 4..fn5 + 8], &2u32.to_le_bytes());
        assert_eq!(&sent[fn5 + 8..fn5 + 16], &0u64.to_le_bytes());
        assert_eq!(&sent[fn5 + 28..fn5 + 32], &0x240u32.to_le_bytes());
        let fn0 = 16; // leaf 0 not indexed: ecx_in 0
        assert_eq!(&sent[fn0 + 4..fn0 + 8], &0u32.to_le_bytes());
    }
}

// ---- each precondition, its step skipped or moved -------------------------------------------

fn missing(e: &Error) -> Option<&'static str> {
    match e {
        Error::MissingStep { missing, .. } => Some(missing),
        _ => None,
    }
}

#[test]
fn vcpus_before_init2_are_refused_and_the_kernel_would_fail_init2() {
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        let e = snp.create_vcpu(0).unwrap_err();
        assert_eq!(missing(&e), Some("KVM_SEV_INIT2"), "{v}: {e}");
        assert!(e.to_string().contains("__sev_guest_init"), "{e}");
        // Moved past the guard (the VMM created it on the VM fd): sev.c: __sev_guest_init
        // answers EINVAL, on every version.
        let mut m = KernelModel::for_version(v);
        m.create_vcpu(0).unwrap();
        let mut init = kvm_sev_init::default();
        let r = m.encrypt_op(SevCmd::Init2(&mut init)).unwrap_err();
        assert_eq!(r.errno, libc::EINVAL, "{v}");
    }
}

#[test]
fn start_without_init2_names_it_and_the_kernel_answers_enotty() {
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        let e = snp.start(&StartParams::default()).unwrap_err();
        assert_eq!(missing(&e), Some("KVM_SEV_INIT2"), "{v}: {e}");
        assert!(snp.ioctl().calls.is_empty());
        let mut m = KernelModel::for_version(v);
        let mut s = kvm_sev_snp_launch_start {
            policy: 0x3_0000,
            ..Default::default()
        };
        let r = m.encrypt_op(SevCmd::LaunchStart(&mut s)).unwrap_err();
        assert_eq!(r.errno, libc::ENOTTY, "{v}");
    }
}

#[test]
fn populate_and_finish_without_launch_start_name_it() {
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        snp.init(&InitParams::default()).unwrap();
        snp.create_vcpu(0).unwrap();
        let e = snp.finish(&FinishParams::default()).unwrap_err();
        assert_eq!(missing(&e), Some("KVM_SEV_SNP_LAUNCH_START"), "{v}: {e}");
        let plan = PlanBuilder::new()
            .zero(0x10_0000, 0x1000)
            .build(&snp.caps_now(), &MemoryLayout::unbounded())
            .unwrap();
        let err = Driver::new(&mut snp).run(&plan).unwrap_err();
        assert!(matches!(err, RunError::Stopped(_)));
        assert!(
            err.to_string().contains("before KVM_SEV_SNP_LAUNCH_START"),
            "{err}"
        );
        assert!(snp.ioctl().ledger.is_empty());
        // Moved past the guard: sev.c: snp_launch_update answers EINVAL without a context.
        let mut m = initialised(v);
        let r = update(&mut m, 0x100, 0, 4096, 3, None).unwrap_err();
        assert_eq!(r.0, libc::EINVAL, "{v}");
    }
}

#[test]
fn finish_without_vcpus_names_the_missing_vcpus() {
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        snp.init(&InitParams::default()).unwrap();
        snp.start(&StartParams::default()).unwrap();
        let e = snp.finish(&FinishParams::default()).unwrap_err();
        assert_eq!(missing(&e), Some("KVM_CREATE_VCPU"), "{v}: {e}");
        assert!(e.to_string().contains("snp_launch_update_vmsa"), "{e}");
        assert_eq!(snp.ioctl().calls.len(), 2, "no LAUNCH_FINISH sent");
        // vCPUs the VMM created itself count once recorded.
        snp.vcpus_created(1).unwrap();
        snp.finish(&FinishParams::default()).unwrap();
    }
}

#[test]
fn vcpus_after_finish_are_refused() {
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        let fw = firmware();
        example::launch(&mut snp, 1, &mut setup, &cpuid(), &fw).unwrap();
        let e = snp.create_vcpu(1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadState {
                    step: "KVM_CREATE_VCPU",
                    ..
                }
            ),
            "{v}: {e}"
        );
        assert!(matches!(
            snp.vcpus_created(1),
            Err(Error::BadState {
                step: "KVM_CREATE_VCPU",
                ..
            })
        ));
        assert_eq!(snp.ioctl().vcpus, 1);
    }
}

#[test]
fn a_page_not_made_private_is_refused_by_every_kernel() {
    // The driver converts first; sent directly, kvm_gmem_populate's attribute check fails the
    // page and snp_launch_update answers EIO with status 0.
    for v in KNOWN_KERNELS {
        let mut m = initialised(v);
        start(&mut m);
        let r = update(&mut m, 0x100, 0, 4096, 3, None).unwrap_err();
        assert_eq!(r, (libc::EIO, 0), "{v}");
        assert_eq!(m.not_private, vec![0x10_0000], "{v}");
    }
}

#[test]
fn steps_already_done_are_refused_by_state() {
    for v in KNOWN_KERNELS {
        let mut snp = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        snp.init(&InitParams::default()).unwrap();
        assert!(matches!(
            snp.init(&InitParams::default()),
            Err(Error::BadState { .. })
        ));
        // Sent anyway: sev.c: sev_mem_enc_ioctl answers EPERM on an SNP guest.
        let r = snp
            .ioctl_mut()
            .encrypt_op(SevCmd::Init2(&mut kvm_sev_init::default()))
            .unwrap_err();
        assert_eq!(r.errno, libc::EPERM, "{v}");
    }
}

#[test]
fn the_cpuid_page_is_lent_writable_or_not_at_all() {
    // The backend lends the CPUID page as a writable bounce page (check_lent refuses anything
    // else before the ioctl); sent read-only anyway, 7.3 pins it FOLL_WRITE and fails, 6.12 and
    // 6.18 take it (they write back only after a rejection).
    for v in KNOWN_KERNELS {
        let mut m = initialised(v);
        start(&mut m);
        m.set_private(0x80_e000, 4096).unwrap();
        let page = Aligned([0u8; 4096]);
        let mut p = kvm_sev_snp_launch_update {
            gfn_start: 0x80e,
            uaddr: page.0.as_ptr() as u64,
            len: 4096,
            type_: 6,
            ..Default::default()
        };
        let cmd = SevCmd::LaunchUpdate {
            params: &mut p,
            source: Some(UpdateSource::Shared(&page.0)),
        };
        assert_eq!(
            sev_backend::check_lent(&cmd).unwrap_err().errno,
            libc::EINVAL
        );
        let r = m.encrypt_op(cmd);
        if v == KernelVersion::V7_3 {
            assert_eq!(r.unwrap_err().errno, libc::EIO, "{v}");
            assert!(!m.is_populated(0x80_e000));
        } else {
            assert_eq!(r, Ok(()), "{v}");
            assert!(m.is_populated(0x80_e000));
        }
    }
}

#[repr(align(4096))]
struct Aligned([u8; 4096]);

// ---- attach: a launch the VMM started --------------------------------------------------------

#[test]
fn attach_takes_the_state_given_and_refuses_what_it_forbids() {
    for v in KNOWN_KERNELS {
        // The VMM issued INIT2, created two vCPUs and LAUNCH_START itself.
        let mut m = initialised(v);
        m.create_vcpu(0).unwrap();
        m.create_vcpu(1).unwrap();
        start(&mut m);
        let sent = m.calls.len();
        let at = AttachState {
            state: LaunchState::Started,
            vcpus: 2,
        };
        let mut snp = SnpBackend::attach(m, LaunchConfig::default(), at).unwrap();
        assert_eq!(snp.ioctl().calls.len(), sent, "nothing replayed");
        assert!(matches!(
            snp.init(&InitParams::default()),
            Err(Error::BadState { .. })
        ));
        assert!(matches!(
            snp.start(&StartParams::default()),
            Err(Error::BadState { .. })
        ));
        let fw = firmware();
        let plan = PlanBuilder::new()
            .source((1 << 32) - fw.len() as u64, Role::Measured, &fw)
            .build(&snp.caps_now(), &MemoryLayout::unbounded())
            .unwrap();
        assert!(Driver::new(&mut snp).run(&plan).unwrap().is_complete());
        snp.finish(&FinishParams::default()).unwrap();
        // Past LAUNCH_FINISH a new vCPU would never be measured.
        assert!(matches!(
            snp.create_vcpu(2),
            Err(Error::BadState {
                step: "KVM_CREATE_VCPU",
                ..
            })
        ));

        // Attached after INIT2 only: vCPUs may still come, LAUNCH_START is the next step.
        let m = initialised(v);
        let at = AttachState {
            state: LaunchState::Initialized,
            vcpus: 0,
        };
        let mut snp = SnpBackend::attach(m, LaunchConfig::default(), at).unwrap();
        let e = snp.finish(&FinishParams::default()).unwrap_err();
        assert_eq!(missing(&e), Some("KVM_SEV_SNP_LAUNCH_START"), "{e}");
        snp.create_vcpu(0).unwrap();
        snp.start(&StartParams::default()).unwrap();
        snp.finish(&FinishParams::default()).unwrap();

        for state in [
            LaunchState::Created,
            LaunchState::Finished,
            LaunchState::Unrecoverable,
        ] {
            let at = AttachState { state, vcpus: 1 };
            let r = SnpBackend::attach(KernelModel::for_version(v), LaunchConfig::default(), at);
            assert!(
                matches!(r, Err(Error::BadState { step: "attach", .. })),
                "{state:?}"
            );
        }
    }
}

// ---- Send and Sync, checked when this file compiles ------------------------------------------

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[test]
fn the_backend_is_send_and_sync() {
    assert_send::<SnpBackend<sev_backend::KvmSevIoctl<'static>>>();
    assert_sync::<SnpBackend<sev_backend::KvmSevIoctl<'static>>>();
    assert_send::<SnpBackend<sev_backend::KvmSevRef<'static>>>();
    assert_sync::<SnpBackend<sev_backend::KvmSevRef<'static>>>();
    assert_send::<SnpBackend<KernelModel>>();
    assert_sync::<SnpBackend<KernelModel>>();
}
