//! One test per behaviour that differs between Linux 6.12, 6.18 and 7.3, run on each version
//! (the model's rules are cited in `sev_backend::testing`; the expected values here are the
//! kernels' code read in 6.12.118, 6.18.2 and 7.3.4, written out).

mod common;

use cc_populate::{Driver, MemoryLayout, PlanBuilder};
use common::{initialised, start, started, update};
use sev_backend::testing::KernelModel;
use sev_backend::uapi::{kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start};
use sev_backend::{
    Error, FinishParams, InitParams, KernelVersion, LaunchConfig, SevCmd, SevIoctl, SnpBackend,
    StartParams, UpdateSource, KNOWN_KERNELS,
};

use KernelVersion::{V6_12, V6_18, V7_3};

#[repr(align(4096))]
struct Pages([u8; 8192]);

#[test]
fn ghcb_version_1_for_snp_is_6_12_only() {
    // sev.c: __sev_guest_init: 6.18 and 7.3 `snp_active && ghcb_version < 2` -> EINVAL.
    for (v, ok) in [(V6_12, true), (V6_18, false), (V7_3, false)] {
        let mut m = KernelModel::for_version(v);
        let mut init = kvm_sev_init {
            ghcb_version: 1,
            ..Default::default()
        };
        let r = m.encrypt_op(SevCmd::Init2(&mut init));
        assert_eq!(r.is_ok(), ok, "{v}: {r:?}");
        // The backend refuses it before the ioctl where the kernel would.
        let mut b = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        let r = b.init(&InitParams {
            ghcb_version: 1,
            ..Default::default()
        });
        assert_eq!(r.is_ok(), ok, "{v}: {r:?}");
        if !ok {
            assert!(b.ioctl().calls.is_empty());
        }
    }
}

#[test]
fn a_6_12_host_never_offers_secure_tsc() {
    // sev.c: sev_hardware_setup (6.12) has no SECURE_TSC: the model cannot be told otherwise.
    let mut m = KernelModel::for_version(V6_12);
    m.supported_vmsa_features |= 1 << 9;
    let r = m.encrypt_op(SevCmd::Init2(&mut kvm_sev_init {
        vmsa_features: 1 << 9,
        ..Default::default()
    }));
    assert_eq!(r.unwrap_err().errno, libc::EINVAL);
}

#[test]
fn secure_tsc_is_offered_from_6_18() {
    // sev.c: sev_hardware_setup: 6.12 offers DEBUG_SWAP (bit 5) only.
    for (v, ok) in [(V6_12, false), (V6_18, true), (V7_3, true)] {
        let mut b = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        let r = b.init(&InitParams {
            vmsa_features: 1 << 9,
            ghcb_version: 0,
        });
        assert_eq!(r.is_ok(), ok, "{v}: {r:?}");
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    Error::InvalidParam {
                        field: "vmsa_features",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(b.ioctl().calls.is_empty());
            let mut m = KernelModel::for_version(v);
            let r = m.encrypt_op(SevCmd::Init2(&mut kvm_sev_init {
                vmsa_features: 1 << 9,
                ..Default::default()
            }));
            assert_eq!(r.unwrap_err().errno, libc::EINVAL);
        }
    }
}

#[test]
fn policy_rules_per_version() {
    // sev.c: snp_launch_start. 6.12: SMT (bit 16) required, SINGLE_SOCKET (bit 20) refused.
    // 7.3: the host's snp_supported_policy_bits instead of SNP_POLICY_MASK_VALID.
    let no_smt = 1u64 << 17;
    let single_socket = 1u64 << 17 | 1 << 16 | 1 << 20;
    let bit_21 = 1u64 << 17 | 1 << 16 | 1 << 21;
    for v in KNOWN_KERNELS {
        for (policy, ok) in [
            (no_smt, v != V6_12),
            (single_socket, v != V6_12),
            (bit_21, false),
        ] {
            let mut m = initialised(v);
            let r = m.encrypt_op(SevCmd::LaunchStart(&mut kvm_sev_snp_launch_start {
                policy,
                ..Default::default()
            }));
            assert_eq!(r.is_ok(), ok, "{v} policy {policy:#x}");
            let mut b =
                SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
            b.init(&InitParams::default()).unwrap();
            let r = b.start(&StartParams {
                policy,
                gosvw: [0; 16],
            });
            assert_eq!(r.is_ok(), ok, "{v} policy {policy:#x}: {r:?}");
        }
    }
    // 7.3: a host whose firmware offers CXL_ALLOW (bit 21, in KVM_SNP_POLICY_MASK_VALID)
    // takes it; the backend leaves that bit to the kernel there. Bit 26 is outside
    // KVM_SNP_POLICY_MASK_VALID: no 7.3 host takes it, whatever its firmware offers, and the
    // backend refuses it before the ioctl.
    let mut m = KernelModel::for_version(V7_3);
    m.supported_policy_bits |= 1 << 21 | 1 << 26;
    let mut b = SnpBackend::with_ioctl(m, LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    let e = b
        .start(&StartParams {
            policy: 1 << 17 | 1 << 16 | 1 << 26,
            gosvw: [0; 16],
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidParam {
                field: "policy",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(b.ioctl().calls.len(), 1, "refused before the ioctl");
    let r = b
        .ioctl_mut()
        .encrypt_op(SevCmd::LaunchStart(&mut kvm_sev_snp_launch_start {
            policy: 1 << 17 | 1 << 16 | 1 << 26,
            ..Default::default()
        }));
    assert_eq!(r.unwrap_err().errno, libc::EINVAL);
    b.start(&StartParams {
        policy: bit_21,
        gosvw: [0; 16],
    })
    .unwrap();
}

#[test]
fn an_update_of_length_0_is_accepted_by_6_12_only() {
    // sev.c: snp_launch_update: 6.12 checks only !PAGE_ALIGNED(len).
    for (v, ok) in [(V6_12, true), (V6_18, false), (V7_3, false)] {
        let mut m = started(v, 0x10_0000, 4096);
        let r = update(&mut m, 0x100, 0, 0, 3, None);
        match r {
            Ok(p) => {
                assert!(ok, "{v}");
                assert_eq!((p.gfn_start, p.len), (0x100, 0), "no progress");
            }
            Err(e) => {
                assert!(!ok, "{v}");
                assert_eq!(e, (libc::EINVAL, 0));
            }
        }
        assert!(m.ledger.is_empty());
    }
}

#[test]
fn an_unaligned_source_is_einval_on_7_3_only() {
    // sev.c: snp_launch_update (7.3): !PAGE_ALIGNED(uaddr) -> EINVAL before any page; 6.12
    // and 6.18 copy_from_user from any address.
    for (v, ok) in [(V6_12, true), (V6_18, true), (V7_3, false)] {
        let mut m = started(v, 0x10_0000, 4096);
        let buf = Pages([0x5a; 8192]);
        let src = &buf.0[16..16 + 4096];
        let r = update(
            &mut m,
            0x100,
            src.as_ptr() as u64,
            4096,
            1,
            Some(UpdateSource::Shared(src)),
        );
        match r {
            Ok(p) => {
                assert!(ok, "{v}");
                assert_eq!(p.len, 0);
                assert!(m.is_populated(0x10_0000));
            }
            Err(e) => {
                assert!(!ok, "{v}");
                assert_eq!(e, (libc::EINVAL, 0));
                assert!(!m.is_populated(0x10_0000));
            }
        }
    }
}

#[test]
fn uaddr_0_for_content_is_einval_on_7_3_and_a_warning_before() {
    // 7.3: sev.c: snp_launch_update `!params.uaddr` -> EINVAL. 6.12, 6.18:
    // sev_gmem_post_populate WARN_ON_ONCE and -EINVAL for the page, reported as EIO/0.
    for v in KNOWN_KERNELS {
        let mut m = started(v, 0x10_0000, 4096);
        let r = update(&mut m, 0x100, 0, 4096, 1, None).unwrap_err();
        if v == V7_3 {
            assert_eq!(r, (libc::EINVAL, 0), "{v}");
            assert!(m.warnings.is_empty());
        } else {
            assert_eq!(r, (libc::EIO, 0), "{v}");
            assert_eq!(m.warnings.len(), 1, "{v}");
        }
    }
}

#[test]
fn a_page_populated_twice_is_eio_0_on_every_version() {
    // 6.12, 6.18: kvm_gmem_populate's is_prepared -> EEXIST; 7.3: no such check in common
    // code, sev_gmem_post_populate's RMP check -> EEXIST; snp_launch_update -> EIO/0 for all.
    for v in KNOWN_KERNELS {
        let mut m = started(v, 0x10_0000, 4096);
        update(&mut m, 0x100, 0, 4096, 3, None).unwrap();
        let r = update(&mut m, 0x100, 0, 4096, 3, None).unwrap_err();
        assert_eq!(r, (libc::EIO, 0), "{v}");
        assert_eq!(m.twice, vec![0x10_0000], "{v}");
    }
}

#[test]
fn a_second_launch_finish_is_einval_on_6_12_and_7_3() {
    // sev.c: sev_es_sync_vmsa: 6.12 and 7.3 refuse a vCPU with guest_state_protected; 6.18.2
    // has no such check (the model records the command it cannot follow).
    for v in KNOWN_KERNELS {
        let mut m = initialised(v);
        m.create_vcpu(0).unwrap();
        m.vmsas.push(vec![1; 4096]);
        start(&mut m);
        m.encrypt_op(SevCmd::LaunchFinish(
            &mut kvm_sev_snp_launch_finish::default(),
        ))
        .unwrap();
        let digest = m.launch_digest();
        let r = m
            .encrypt_op(SevCmd::LaunchFinish(
                &mut kvm_sev_snp_launch_finish::default(),
            ))
            .unwrap_err();
        if v == V6_18 {
            assert_eq!(m.violations.len(), 1, "{v}");
        } else {
            assert_eq!((r.errno, r.fw_error), (libc::EINVAL, 0), "{v}");
            assert!(m.violations.is_empty(), "{v}");
        }
        assert_eq!(m.launch_digest(), digest, "nothing measured again");
    }
}

#[test]
fn one_guest_memfd_range_in_two_memslots_is_eexist_except_6_18() {
    // guest_memfd.c: 6.12.118 and 7.3.4 kvm_gmem_commit_memory_region -> EEXIST; 6.18.2
    // kvm_gmem_bind -> EINVAL.
    for (v, errno) in [
        (V6_12, libc::EEXIST),
        (V6_18, libc::EINVAL),
        (V7_3, libc::EEXIST),
    ] {
        let mut m = KernelModel::for_version(v);
        m.memslots.clear();
        m.add_gmem_memslot(0, 0x20_0000, 7, 0).unwrap();
        assert_eq!(
            m.add_gmem_memslot(0x100_0000, 0x1000, 7, 0x1f_f000),
            Err(errno),
            "{v}"
        );
        // Another range of the same guest_memfd, or another guest_memfd: fine.
        m.add_gmem_memslot(0x100_0000, 0x1000, 7, 0x20_0000)
            .unwrap();
        m.add_gmem_memslot(0x200_0000, 0x1000, 8, 0).unwrap();
    }
}

#[test]
fn the_backend_populates_page_aligned_sources_on_every_version() {
    // The backend bounces unaligned sources, which 7.3 requires: a launch from an unaligned
    // buffer completes on every version.
    for v in KNOWN_KERNELS {
        let mut b = SnpBackend::with_ioctl(KernelModel::for_version(v), LaunchConfig::default());
        b.init(&InitParams::default()).unwrap();
        b.create_vcpu(0).unwrap();
        b.start(&StartParams::default()).unwrap();
        let buf = Pages([0x33; 8192]);
        let plan = PlanBuilder::new()
            .source(0x10_0000, cc_populate::Role::Measured, &buf.0[8..8 + 4096])
            .build(&b.caps_now(), &MemoryLayout::unbounded())
            .unwrap();
        assert!(Driver::new(&mut b).run(&plan).unwrap().is_complete(), "{v}");
        b.finish(&FinishParams::default()).unwrap();
        assert_eq!(b.kernel(), v);
    }
}
