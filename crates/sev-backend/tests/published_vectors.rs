//! The launch digests sev-snp-measure publishes for its own test fixtures, computed here from
//! the same fixtures.
//!
//! The fixtures (`ovmf_AmdSev_suffix.bin`, `ovmf_OvmfX64_suffix.bin`, `svsm_ovmf.fd`,
//! `svsm.bin`) are virtee/sev-snp-measure's `tests/fixtures` (Apache-2.0). They are not part of
//! this repository: they are read from `shared/fixtures/sev-snp-measure/` beside the clone
//! (`$CCPOP_SSM_FIXTURES` overrides the directory), whose `SOURCE` note names the commit they
//! come from. Without them a test is reported ignored with a `SKIPPED [file:<path>]` line
//! (gmem::testing's harness), and CI fails where the file is there after all.
//!
//! The expected digests are the ones sev-snp-measure's `tests/test_guest.py` asserts at that
//! commit (cc93bb02c7048797ac9b34afccd824a182b9b021), for the flags each case repeats.

mod needs;

use std::path::PathBuf;

use gmem::testing;
use needs::{amdsev, ovmfx64, svsm, svsm_ovmf};

use sev_backend::{
    measure_snp_launch, vmsa_layout, MeasureError, SectionPolicy, SevHashes, SnpLaunch, SvsmLaunch,
    VcpuConfig, VcpuType, VmmType,
};

/// The fixture `path`, read (its presence is the test's need, checked by the harness).
fn fixture(path: fn() -> PathBuf) -> Vec<u8> {
    let path = path();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn epyc_v4() -> u32 {
    VcpuType::by_name("EPYC-v4").unwrap().signature()
}

/// `calc_launch_digest(SEV_SNP, vcpus, EPYC-v4, fixture, kernel, initrd, append, features,
/// vmm_type=vmm)` of test_guest.py: `kernel: Some(append)` stands for kernel and initrd
/// `/dev/null` (no bytes) with that command line, `None` for no kernel.
struct Case {
    vcpus: u32,
    vmm: VmmType,
    features: u64,
    kernel: Option<&'static str>,
    want: &'static str,
}

fn launch(firmware: &[u8], c: &Case, seed: Option<[u8; 48]>) -> Result<[u8; 48], MeasureError> {
    measure_snp_launch(&SnpLaunch {
        firmware,
        firmware_digest: seed,
        vcpus: Some(VcpuConfig {
            count: c.vcpus,
            signature: epyc_v4(),
            vmm: c.vmm,
            guest_features: c.features,
        }),
        kernel: c
            .kernel
            .map(|append| SevHashes::new(b"", Some(b""), Some(append))),
        ..SnpLaunch::default()
    })
    .map(|m| m.digest)
}

fn amdsev_fixture_gives_the_published_digests() {
    let ovmf = fixture(amdsev);
    // test_snp_ovmf_hash_full_default: calc_snp_ovmf_hash of the fixture.
    let image = measure_snp_launch(&SnpLaunch {
        firmware: &ovmf,
        ..SnpLaunch::default()
    })
    .unwrap()
    .firmware_digest;
    assert_eq!(
        hex(&image),
        "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"
    );
    let q = VmmType::Qemu;
    let cases = [
        // test_snp_default, test_snp_ovmf_hash_full_default
        Case { vcpus: 1, vmm: q, features: 0x21, kernel: Some("console=ttyS0 loglevel=7"),
               want: "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977" },
        // test_snp_guest_feature_snp_only, test_snp_ovmf_hash_full_feature_snp_only
        Case { vcpus: 1, vmm: q, features: 0x1, kernel: Some("console=ttyS0 loglevel=7"),
               want: "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa" },
        // test_snp_ovmf_hash_gen_default
        Case { vcpus: 1, vmm: q, features: 0x21, kernel: Some(""),
               want: "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198" },
        // test_snp_ovmf_hash_gen_feature_snp_only
        Case { vcpus: 1, vmm: q, features: 0x1, kernel: Some(""),
               want: "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5" },
        // test_snp_ec2_default
        Case { vcpus: 1, vmm: VmmType::Ec2, features: 0x21, kernel: Some(""),
               want: "6ae80856486b1396af8c82a40351d6ed76a20c785e9c7fa4ffa27c22d5d6313b4b3b458cd3c9968e6f89fb5d8450d7a6" },
        // test_snp_ec2_feature_snp_only
        Case { vcpus: 1, vmm: VmmType::Ec2, features: 0x1, kernel: Some(""),
               want: "7d3756157c805bf6adf617064c8552e8c1688fa1c8756f11cbf56ba5d25c9270fb69c0505c1cbe1c5c66c0e34c6ed3be" },
        // test_snp_without_kernel_default
        Case { vcpus: 1, vmm: q, features: 0x21, kernel: None,
               want: "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b" },
        // test_snp_without_kernel_feature_snp_only
        Case { vcpus: 1, vmm: q, features: 0x1, kernel: None,
               want: "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d" },
        // test_snp_with_multiple_vcpus_default
        Case { vcpus: 4, vmm: q, features: 0x21, kernel: Some(""),
               want: "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942" },
        // test_snp_with_multiple_vcpus_feature_snp_only
        Case { vcpus: 4, vmm: q, features: 0x1, kernel: Some(""),
               want: "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5" },
    ];
    for c in &cases {
        let what = format!(
            "{} vCPUs {:?} features {:#x} kernel {:?}",
            c.vcpus, c.vmm, c.features, c.kernel
        );
        if c.vmm == VmmType::Ec2 {
            ec2_as_published(&ovmf, c, &what);
            continue;
        }
        assert_eq!(hex(&launch(&ovmf, c, None).unwrap()), c.want, "{what}");
        // The same from the published firmware digest (`--snp-ovmf-hash`).
        assert_eq!(
            hex(&launch(&ovmf, c, Some(image)).unwrap()),
            c.want,
            "{what}, seeded"
        );
    }
}

/// The EC2 vectors were published at the fixtures' commit, whose EC2 VMSA has `RDX` 0; the
/// project follows sev-snp-measure 0.0.13 (`RDX` 0x600, the value EC2 reports, as the `peer`
/// tests pin against that release). The pages differ in `RDX` alone: with it set to 0, the
/// rest of the launch gives the published digest.
fn ec2_as_published(ovmf: &[u8], c: &Case, what: &str) {
    let kernel = c
        .kernel
        .map(|append| SevHashes::new(b"", Some(b""), Some(append)));
    let ours = measure_snp_launch(&SnpLaunch {
        firmware: ovmf,
        vcpus: Some(VcpuConfig {
            count: c.vcpus,
            signature: epyc_v4(),
            vmm: c.vmm,
            guest_features: c.features,
        }),
        kernel,
        ..SnpLaunch::default()
    })
    .unwrap();
    assert_ne!(hex(&ours.digest), c.want, "{what}");
    let vmsas = ours.vmsas.as_ref().unwrap();
    let pages: Vec<Vec<u8>> = (0..vmsas.count())
        .map(|i| {
            let mut p = vmsas.page(i).unwrap().to_vec();
            assert_eq!(p[vmsa_layout::RDX..][..8], 0x600u64.to_le_bytes(), "{what}");
            p[vmsa_layout::RDX..][..8].fill(0);
            p
        })
        .collect();
    let published = measure_snp_launch(&SnpLaunch {
        firmware: ovmf,
        policy: Some(SectionPolicy::EC2),
        vmsa_pages: pages.iter().map(Vec::as_slice).collect(),
        kernel,
        ..SnpLaunch::default()
    })
    .unwrap();
    assert_eq!(hex(&published.digest), c.want, "{what}, RDX 0");
}

fn ovmfx64_fixture_gives_the_published_digests() {
    let ovmf = fixture(ovmfx64);
    let q = VmmType::Qemu;
    let cases = [
        // test_snp_with_ovmfx64_without_default
        Case { vcpus: 1, vmm: q, features: 0x21, kernel: None,
               want: "28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385" },
        // test_snp_with_ovmfx64_without_kernel_feature_snp_only
        Case { vcpus: 1, vmm: q, features: 0x1, kernel: None,
               want: "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005" },
    ];
    for c in &cases {
        assert_eq!(
            hex(&launch(&ovmf, c, None).unwrap()),
            c.want,
            "features {:#x}",
            c.features
        );
    }
    // test_snp_with_ovmfx64_and_kernel_should_fail: no SNP_KERNEL_HASHES section, refused.
    let with_kernel = Case {
        kernel: Some(""),
        ..cases[0]
    };
    match launch(&ovmf, &with_kernel, None) {
        Err(MeasureError::Hashes(e)) => {
            assert!(e.to_string().contains("SNP_KERNEL_HASHES"), "{e}")
        }
        other => panic!("a kernel on OvmfX64: {other:?}"),
    }
}

fn svsm_fixtures_give_the_published_digests_with_the_peers_fcw() {
    let (ovmf, svsm) = (fixture(svsm_ovmf), fixture(svsm));
    // test_snp_svsm_4_vcpus and test_snp_svsm_2_vcpus: EPYC-v4, features 0x21, QEMU, vars
    // size 540672.
    let vars_size = 540_672;
    let published = [
        (4, "27d154c27b7b359c935e250ec6fee72aa0ae8c1225e3b0e1cf46a9567e938066d7d6f94bbdc4a857818bdb79277a44b2"),
        (2, "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa57928bd963d68d3bfcb715d6019b9167ee2517b11b0d9be7"),
    ];
    let svsm_launch = SvsmLaunch {
        image: &svsm,
        vars_size,
    };
    for (vcpus, want) in published {
        let ours = measure_snp_launch(&SnpLaunch {
            firmware: &ovmf,
            vcpus: Some(VcpuConfig {
                count: vcpus,
                signature: epyc_v4(),
                vmm: VmmType::Qemu,
                guest_features: 0x21,
            }),
            svsm: Some(svsm_launch),
            ..SnpLaunch::default()
        })
        .unwrap();
        // Ours follows the kernel: X87_FCW 0x37f in every VMSA (sev_es_sync_vmsa copies the
        // guest FPU's control word, which QEMU's reset state sets). sev-snp-measure 0.0.13's
        // SVSM VMSA leaves the field 0 (it passes the value as `fcw=`, which names no field),
        // so the published digest is not ours ...
        assert_ne!(hex(&ours.digest), want, "{vcpus} vCPUs");
        let vmsas = ours.vmsas.as_ref().unwrap();
        assert_eq!(vmsas.count(), vcpus);
        let peer_pages: Vec<Vec<u8>> = (0..vcpus)
            .map(|i| {
                let mut p = vmsas.page(i).unwrap().to_vec();
                assert_eq!(p[vmsa_layout::X87_FCW..][..2], [0x7f, 0x03]);
                p[vmsa_layout::X87_FCW..][..2].fill(0);
                p
            })
            .collect();
        // ... and with that one field as sev-snp-measure writes it, everything else is equal:
        // the published digest is the firmware, the SVSM and these pages.
        let peers = measure_snp_launch(&SnpLaunch {
            firmware: &ovmf,
            vmsa_pages: peer_pages.iter().map(Vec::as_slice).collect(),
            svsm: Some(svsm_launch),
            ..SnpLaunch::default()
        })
        .unwrap();
        assert_eq!(hex(&peers.digest), want, "{vcpus} vCPUs, X87_FCW 0");
    }
}

fn main() -> std::process::ExitCode {
    use needs::fixture as need;
    testing::run(vec![
        gmem::kvm_test!(amdsev_fixture_gives_the_published_digests, need(amdsev)),
        gmem::kvm_test!(ovmfx64_fixture_gives_the_published_digests, need(ovmfx64)),
        gmem::kvm_test!(
            svsm_fixtures_give_the_published_digests_with_the_peers_fcw,
            need(svsm_ovmf),
            need(svsm)
        ),
    ])
}
