//! Digests of IGVM files built with the `igvm` crate, against its own `measurement` module
//! (the IGVM format's reference implementation, an independent implementation).

mod common;

use cc_image::{hex, load_igvm, load_igvm_with, IgvmPolicy, Platform};
use common::*;

const FILES: u64 = 200;

fn ours(bytes: &[u8], platform: Platform, policy: IgvmPolicy) -> Vec<u8> {
    load_igvm_with(bytes, platform, policy)
        .and_then(|i| i.measure())
        .unwrap_or_else(|e| panic!("{platform}: {e}"))
}

#[test]
fn random_files_default_policy_agrees_when_vp_contexts_come_last() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut nonempty = 0;
    for i in 0..FILES {
        let dirs = random_file(
            &mut rng,
            &Options {
                vmsas_anywhere: false,
            },
        );
        let bytes = serialize(dirs);
        for (platform, mask) in [(Platform::Snp, SNP), (Platform::Tdx, TDX)] {
            let want = reference(&bytes, mask);
            let got = ours(&bytes, platform, IgvmPolicy::default());
            assert_eq!(hex(&got), hex(&want), "file {i}, {platform}");
            assert_eq!(got.len(), 48);
        }
        if !load_igvm(&bytes, Platform::Snp)
            .unwrap()
            .regions()
            .is_empty()
        {
            nonempty += 1;
        }
    }
    // The generator must exercise real content, not only empty files.
    assert!(nonempty > FILES / 2, "{nonempty}");
}

#[test]
fn random_files_reference_policy_agrees_with_vp_contexts_anywhere() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut interleaved = 0;
    for i in 0..FILES {
        let bytes = serialize(random_file(
            &mut rng,
            &Options {
                vmsas_anywhere: true,
            },
        ));
        let want = reference(&bytes, SNP);
        let got = ours(&bytes, Platform::Snp, IgvmPolicy::REFERENCE);
        assert_eq!(hex(&got), hex(&want), "file {i}");
        let tdx = ours(&bytes, Platform::Tdx, IgvmPolicy::REFERENCE);
        assert_eq!(hex(&tdx), hex(&reference(&bytes, TDX)), "file {i} tdx");
        let image = load_igvm_with(&bytes, Platform::Snp, IgvmPolicy::REFERENCE).unwrap();
        let n = image.regions().len();
        if image.vmsas().iter().any(|v| v.regions_before() < n) {
            interleaved += 1;
            // The KVM default then differs: VMSAs last, at the KVM address.
            let kvm = ours(&bytes, Platform::Snp, IgvmPolicy::KVM);
            assert_ne!(kvm, got, "file {i}");
        }
    }
    assert!(interleaved > FILES / 4, "{interleaved}");
}
