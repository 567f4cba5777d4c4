//! The empty-page policy: an IGVM page-data directive without bytes populated and measured as
//! a NORMAL page of zeros (the IGVM reference) or as a ZERO page (Cloud Hypervisor). Digests
//! are checked against the igvm crate's reference, against `sev_backend::LaunchDigest` driven
//! page by page here from the file as the igvm crate parses it, and against the launch digest
//! of sev-backend's kernel model after the plan was populated through it.

mod common;

use cc_image::trace::diff;
use cc_image::{load_igvm_with, EmptyPages, IgvmPolicy, Platform};
use cc_populate::{Driver, MemoryLayout, Role};
use common::*;
use igvm::IgvmDirectiveHeader;
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};
use sev_backend::testing::KernelModel;
use sev_backend::{FinishParams, InitParams, LaunchConfig, SnpBackend, StartParams};

const N: IgvmPageDataType = IgvmPageDataType::NORMAL;

/// Pages with bytes, runs of empty pages (first, inside and after full pages), an empty
/// unmeasured page, secrets and CPUID pages, and a parameter area.
fn file() -> Vec<u8> {
    let f = IgvmPageDataFlags::new;
    serialize(vec![
        page(0x10_0000, BOTH, f(), N, vec![1; 4096]),
        page(0x10_1000, BOTH, f(), N, Vec::new()),
        page(0x10_2000, BOTH, f(), N, Vec::new()),
        page(0x10_3000, BOTH, f(), N, vec![2; 100]),
        page(0x20_0000, BOTH, f().with_unmeasured(true), N, Vec::new()),
        page(0x30_0000, SNP, f(), IgvmPageDataType::SECRETS, Vec::new()),
        page(
            0x30_1000,
            SNP,
            f(),
            IgvmPageDataType::CPUID_DATA,
            vec![3; 64],
        ),
        page(0x40_0000, BOTH, f(), N, Vec::new()),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 4096,
            parameter_area_index: 0,
            initial_data: Vec::new(),
        },
        IgvmDirectiveHeader::ParameterInsert(igvm_defs::IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x50_0000,
            compatibility_mask: BOTH,
            parameter_area_index: 0,
        }),
        page(0x60_0000, BOTH, f(), N, vec![4; 4096]),
    ])
}

/// The addresses of the measured empty pages of `file()`, written out.
const EMPTY: [u64; 3] = [0x10_1000, 0x10_2000, 0x40_0000];

/// `common::snp_by_hand` under `empty`.
fn by_hand(bytes: &[u8], empty: EmptyPages) -> [u8; 48] {
    snp_by_hand(bytes, empty == EmptyPages::ZeroPage, &[])
}

fn policy(empty: EmptyPages) -> IgvmPolicy {
    IgvmPolicy::KVM.with_empty_pages(empty)
}

#[test]
fn each_policy_gives_the_digest_computed_page_by_page() {
    let bytes = file();
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        let image = load_igvm_with(&bytes, Platform::Snp, policy(empty)).unwrap();
        assert_eq!(
            image.measure().unwrap(),
            by_hand(&bytes, empty),
            "{empty:?}"
        );
        // The plan carries the policy: the empty pages' role is what the VMM populates.
        let plan = image
            .plan(
                &Platform::Snp.try_caps().unwrap(),
                &MemoryLayout::unbounded(),
            )
            .unwrap();
        for gpa in EMPTY {
            let r = plan
                .regions()
                .iter()
                .find(|r| r.gpa() <= gpa && gpa < r.gpa() + r.len())
                .unwrap();
            let want = match empty {
                EmptyPages::NormalZeros => Role::Measured,
                EmptyPages::ZeroPage => Role::Zero,
            };
            assert_eq!(r.role(), want, "{empty:?} {gpa:#x}");
        }
    }
    // NORMAL of zeros is the IGVM reference's measurement.
    let normal = load_igvm_with(&bytes, Platform::Snp, IgvmPolicy::KVM).unwrap();
    assert_eq!(normal.measure().unwrap(), reference(&bytes, SNP));
    assert_eq!(
        IgvmPolicy::CLOUD_HYPERVISOR,
        policy(EmptyPages::ZeroPage),
        "Cloud Hypervisor: VMSAs as KVM measures them, empty pages as ZERO pages"
    );
}

#[test]
fn the_policies_differ_exactly_at_the_empty_pages() {
    let bytes = file();
    let a = load_igvm_with(&bytes, Platform::Snp, policy(EmptyPages::NormalZeros)).unwrap();
    let b = load_igvm_with(&bytes, Platform::Snp, policy(EmptyPages::ZeroPage)).unwrap();
    assert_ne!(a.measure().unwrap(), b.measure().unwrap());
    let (ta, tb) = (a.trace(None).unwrap(), b.trace(None).unwrap());
    // One PAGE_INFO per page on both sides, at the same addresses.
    assert_eq!(ta.len(), 10);
    assert_eq!(
        ta.iter().map(|s| &s.gpa).collect::<Vec<_>>(),
        tb.iter().map(|s| &s.gpa).collect::<Vec<_>>()
    );
    let differing: Vec<String> = ta
        .iter()
        .zip(&tb)
        .filter(|(x, y)| (&x.page_type, &x.sha) != (&y.page_type, &y.sha))
        .map(|(x, _)| x.gpa.clone())
        .collect();
    let want: Vec<String> = EMPTY.iter().map(|g| format!("{g:#x}")).collect();
    assert_eq!(differing, want);
    for (x, y) in ta.iter().zip(&tb) {
        if want.contains(&x.gpa) {
            assert_eq!(x.page_type.as_deref(), Some("PAGE_TYPE_NORMAL"));
            assert_eq!(y.page_type.as_deref(), Some("PAGE_TYPE_ZERO"));
        }
    }
    let d = diff(&ta, &tb).unwrap();
    assert_eq!(d.first_line(), "first difference: step 1, gpa 0x101000");
    // The two other empty pages are the later steps that differ.
    assert_eq!(d.later_differing, 2);
}

#[cfg(feature = "tdx")]
#[test]
fn tdx_measures_empty_pages_the_same_under_both_policies() {
    let bytes = file();
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        let image = load_igvm_with(&bytes, Platform::Tdx, policy(empty)).unwrap();
        assert!(image.regions().iter().all(|r| r.role() != Role::Zero));
        assert_eq!(
            image.measure().unwrap(),
            reference(&bytes, TDX),
            "{empty:?}"
        );
    }
}

/// The plan populated through `SnpBackend` into sev-backend's model of the kernel's launch
/// commands: the model's own launch digest (its own PAGE_INFO code and SHA-384) equals the
/// offline measurement under each policy, and the model saw ZERO pages exactly where the
/// policy says.
#[test]
fn a_populated_launch_has_the_offline_digest_under_each_policy() {
    let bytes = file();
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        let image = load_igvm_with(&bytes, Platform::Snp, policy(empty)).unwrap();
        let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
        b.init(&InitParams::default()).unwrap();
        // The launch needs a vCPU before LAUNCH_FINISH; the model measures no VMSA for it.
        b.create_vcpu(0).unwrap();
        b.start(&StartParams::default()).unwrap();
        let plan = image
            .plan(&b.caps_now(), &MemoryLayout::unbounded())
            .unwrap();
        let report = Driver::new(&mut b).run(&plan).unwrap();
        assert!(report.is_complete());
        b.finish(&FinishParams::default()).unwrap();
        let model = b.ioctl();
        assert_eq!(model.launch_digest(), by_hand(&bytes, empty), "{empty:?}");
        assert_eq!(
            model.launch_digest().to_vec(),
            image.measure().unwrap(),
            "{empty:?}"
        );
        // KVM_SEV_SNP_PAGE_TYPE_ZERO is 3 (include/uapi/linux/kvm.h).
        let zero: Vec<u64> = model
            .ledger
            .iter()
            .filter(|(_, t, _)| *t == 3)
            .map(|(gpa, _, _)| *gpa)
            .collect();
        match empty {
            EmptyPages::NormalZeros => assert!(zero.is_empty(), "{zero:x?}"),
            EmptyPages::ZeroPage => assert_eq!(zero, EMPTY.to_vec()),
        }
    }
}
