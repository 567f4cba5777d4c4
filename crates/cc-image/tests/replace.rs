//! Replacing page contents before populate and measurement (`LaunchImage::replace_contents`):
//! the plan carries the new bytes, the measurement changes exactly at the pages replaced (and
//! only where the page type measures contents), and every refusal names the range and why.

mod common;

use cc_image::trace::{diff, Rest};
use cc_image::{load_igvm_with, EmptyPages, Error, IgvmPolicy, Platform};
use cc_populate::{MemoryLayout, Role};
use common::*;
use igvm::IgvmDirectiveHeader;
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};

const N: IgvmPageDataType = IgvmPageDataType::NORMAL;

fn file() -> Vec<u8> {
    let f = IgvmPageDataFlags::new;
    serialize(vec![
        page(0x10_0000, BOTH, f(), N, vec![1; 4096]),
        page(0x10_1000, BOTH, f(), N, vec![2; 4096]),
        page(0x10_2000, BOTH, f(), N, vec![3; 4096]),
        page(0x20_0000, BOTH, f(), N, Vec::new()),
        page(0x20_1000, BOTH, f(), N, Vec::new()),
        page(0x20_2000, BOTH, f(), N, Vec::new()),
        page(0x30_0000, SNP, f(), IgvmPageDataType::SECRETS, Vec::new()),
        page(
            0x30_1000,
            SNP,
            f(),
            IgvmPageDataType::CPUID_DATA,
            vec![5; 64],
        ),
        IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 8192,
            parameter_area_index: 0,
            initial_data: Vec::new(),
        },
        IgvmDirectiveHeader::ParameterInsert(igvm_defs::IGVM_VHS_PARAMETER_INSERT {
            gpa: 0x40_0000,
            compatibility_mask: BOTH,
            parameter_area_index: 0,
        }),
    ])
}

fn load(empty: EmptyPages, platform: Platform) -> cc_image::LaunchImage {
    load_igvm_with(&file(), platform, IgvmPolicy::KVM.with_empty_pages(empty)).unwrap()
}

/// The plan's bytes at `gpa` (one page), as the VMM would populate them.
fn plan_page(image: &cc_image::LaunchImage, gpa: u64) -> (Role, Vec<u8>) {
    let plan = image
        .plan(
            &Platform::Snp.try_caps().unwrap(),
            &MemoryLayout::unbounded(),
        )
        .unwrap();
    let r = plan
        .regions()
        .iter()
        .find(|r| r.gpa() <= gpa && gpa < r.gpa() + r.len())
        .unwrap();
    let off = (gpa - r.gpa()) as usize;
    let bytes = r
        .source()
        .map_or(vec![0; 4096], |s| s[off..off + 4096].to_vec());
    (r.role(), bytes)
}

#[test]
fn a_replaced_measured_page_changes_the_snp_digest_at_that_page_only() {
    let table = vec![0xc5u8; 4096];
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        let zero = empty == EmptyPages::ZeroPage;
        let before = load(empty, Platform::Snp);
        let mut after = before.clone();
        after.replace_contents(0x10_1000, &table).unwrap();
        assert_eq!(
            plan_page(&after, 0x10_1000),
            (Role::Measured, table.clone())
        );
        assert_eq!(
            after.measure().unwrap(),
            snp_by_hand(&file(), zero, &[(0x10_1000, &table)])
        );
        let d = diff(&before.trace(None).unwrap(), &after.trace(None).unwrap()).unwrap();
        assert_eq!(d.first_line(), "first difference: step 1, gpa 0x101000");
        assert_eq!((d.rest, d.later_differing), (Rest::SameSteps, 0), "{d}");
        assert!(d.to_string().contains("differs in: contents\n"), "{d}");
    }
}

#[test]
fn a_replaced_empty_page_becomes_a_measured_page_under_both_policies() {
    let hashes = vec![0x4bu8; 4096];
    for empty in [EmptyPages::NormalZeros, EmptyPages::ZeroPage] {
        let zero = empty == EmptyPages::ZeroPage;
        let before = load(empty, Platform::Snp);
        let mut after = before.clone();
        // The middle page of the run of three empty pages.
        after.replace_contents(0x20_1000, &hashes).unwrap();
        assert_eq!(
            plan_page(&after, 0x20_1000),
            (Role::Measured, hashes.clone())
        );
        let rest = if zero { Role::Zero } else { Role::Measured };
        assert_eq!(plan_page(&after, 0x20_0000), (rest, vec![0; 4096]));
        assert_eq!(plan_page(&after, 0x20_2000), (rest, vec![0; 4096]));
        assert_eq!(
            after.measure().unwrap(),
            snp_by_hand(&file(), zero, &[(0x20_1000, &hashes)]),
            "{empty:?}"
        );
        let (ta, tb) = (before.trace(None).unwrap(), after.trace(None).unwrap());
        let d = diff(&ta, &tb).unwrap();
        assert_eq!(d.first_line(), "first difference: step 4, gpa 0x201000");
        assert_eq!((d.rest, d.later_differing), (Rest::SameSteps, 0), "{d}");
        let types = |t: &[cc_image::trace::TraceStep]| t[4].page_type.clone().unwrap();
        let was = if zero {
            "PAGE_TYPE_ZERO"
        } else {
            "PAGE_TYPE_NORMAL"
        };
        assert_eq!(
            (types(&ta).as_str(), types(&tb).as_str()),
            (was, "PAGE_TYPE_NORMAL")
        );
    }
}

#[test]
fn with_normal_zeros_a_replaced_page_measures_as_the_file_carrying_those_bytes() {
    // The igvm crate's reference, on a file that carries the bytes itself (and no parameter
    // area: its two UNMEASURED pages continue the reference's chain here).
    let bytes = vec![0x77u8; 4096];
    let mut image = load(EmptyPages::NormalZeros, Platform::Snp);
    image.replace_contents(0x20_2000, &bytes).unwrap();
    let f = IgvmPageDataFlags::new;
    let with_bytes = serialize(vec![
        page(0x10_0000, BOTH, f(), N, vec![1; 4096]),
        page(0x10_1000, BOTH, f(), N, vec![2; 4096]),
        page(0x10_2000, BOTH, f(), N, vec![3; 4096]),
        page(0x20_0000, BOTH, f(), N, Vec::new()),
        page(0x20_1000, BOTH, f(), N, Vec::new()),
        page(0x20_2000, BOTH, f(), N, bytes),
        page(0x30_0000, SNP, f(), IgvmPageDataType::SECRETS, Vec::new()),
        page(
            0x30_1000,
            SNP,
            f(),
            IgvmPageDataType::CPUID_DATA,
            vec![5; 64],
        ),
    ]);
    let mut ld = sev_backend::LaunchDigest::from_digest(reference(&with_bytes, SNP));
    for k in 0..2 {
        ld.update_page(
            0x40_0000 + k * 4096,
            sev_backend::PageType::Unmeasured,
            None,
        )
        .unwrap();
    }
    assert_eq!(image.measure().unwrap(), ld.digest().to_vec());
}

#[test]
fn unmeasured_cpuid_and_parameter_pages_carry_the_bytes_but_do_not_change_the_digest() {
    let mut image = load(EmptyPages::NormalZeros, Platform::Snp);
    let digest = image.measure().unwrap();
    let cpuid = vec![0x11u8; 4096];
    let params: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    image.replace_contents(0x30_1000, &cpuid).unwrap();
    image.replace_contents(0x40_0000, &params).unwrap();
    assert_eq!(plan_page(&image, 0x30_1000), (Role::Cpuid, cpuid));
    assert_eq!(
        plan_page(&image, 0x40_0000),
        (Role::Unmeasured, params[..4096].to_vec())
    );
    assert_eq!(
        plan_page(&image, 0x40_1000),
        (Role::Unmeasured, params[4096..].to_vec())
    );
    assert_eq!(image.measure().unwrap(), digest);
}

#[cfg(feature = "tdx")]
#[test]
fn on_tdx_the_replaced_page_changes_its_own_extends_only() {
    let before = load(EmptyPages::NormalZeros, Platform::Tdx);
    let mut after = before.clone();
    let bytes: Vec<u8> = (0..4096u32).map(|i| 0x80 | (i / 256) as u8).collect();
    after.replace_contents(0x10_2000, &bytes).unwrap();
    let (ta, tb) = (before.trace(None).unwrap(), after.trace(None).unwrap());
    assert_eq!(ta.len(), tb.len());
    let changed: Vec<&str> = ta
        .iter()
        .zip(&tb)
        .filter(|(a, b)| (&a.kind, &a.sha) != (&b.kind, &b.sha))
        .map(|(a, _)| a.gpa.as_str())
        .collect();
    // The page's sixteen 256-byte MR.EXTEND chunks, each of new bytes.
    let want: Vec<String> = (0..16)
        .map(|k| format!("{:#x}", 0x10_2000 + k * 256))
        .collect();
    assert_eq!(changed, want);
    assert_ne!(after.measure().unwrap(), before.measure().unwrap());
}

#[test]
fn vmsas_placed_after_a_split_region_stay_after_it() {
    let f = IgvmPageDataFlags::new;
    let bytes = serialize(vec![
        page(0x20_0000, BOTH, f(), N, Vec::new()),
        page(0x20_1000, BOTH, f(), N, Vec::new()),
        page(0x20_2000, BOTH, f(), N, Vec::new()),
        vmsa(0x5000, 0, 0x1234),
        page(0x60_0000, BOTH, f(), N, vec![6; 4096]),
    ]);
    let policy = IgvmPolicy::REFERENCE.with_empty_pages(EmptyPages::ZeroPage);
    let mut image = load_igvm_with(&bytes, Platform::Snp, policy).unwrap();
    assert_eq!(image.vmsas()[0].regions_before(), 1);
    image.replace_contents(0x20_1000, &[9; 4096]).unwrap();
    assert_eq!(image.regions().len(), 4);
    assert_eq!(image.vmsas()[0].regions_before(), 3);
    // The VMSA step still comes after the three pages and before the last one.
    let t = image.trace(None).unwrap();
    let kinds: Vec<&str> = t.iter().map(|s| s.page_type.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "PAGE_TYPE_ZERO",
            "PAGE_TYPE_NORMAL",
            "PAGE_TYPE_ZERO",
            "PAGE_TYPE_VMSA",
            "PAGE_TYPE_NORMAL"
        ]
    );
    assert_eq!(
        image.regions()[1].origin(),
        &cc_image::Origin::IgvmPages { headers: vec![1] }
    );
}

#[test]
fn refusals_name_the_range_and_the_reason() {
    let mut image = load(EmptyPages::ZeroPage, Platform::Snp);
    let page = [0u8; 4096];
    let two = [0u8; 8192];
    let cases: Vec<(u64, &[u8], &str)> = vec![
        (0x10_0000, &[], "[0x100000..+0x0): no bytes given"),
        (
            0x10_0800,
            &page,
            "[0x100800..+0x1000): not whole 4 KiB pages (the address and the length must be multiples of 0x1000)",
        ),
        (
            0x10_0000,
            &page[..100],
            "[0x100000..+0x64): not whole 4 KiB pages (the address and the length must be multiples of 0x1000)",
        ),
        (0xffff_ffff_ffff_f000, &two, "[0xfffffffffffff000..+0x2000): the range ends past 2^64"),
        (0x50_0000, &page, "[0x500000..+0x1000): no region of the image holds 0x500000"),
        (
            0x10_2000,
            &two,
            "[0x102000..+0x2000): runs past the end of region 0 [0x100000..+0x3000) (IGVM directives 0..=2)",
        ),
        (
            0x30_0000,
            &page,
            "[0x300000..+0x1000): region 2 [0x300000..+0x1000) (IGVM directive 6) is the SEV-SNP secrets page: the firmware fills it",
        ),
    ];
    for (gpa, bytes, want) in cases {
        let before = image.measure().unwrap();
        match image.replace_contents(gpa, bytes) {
            Err(e @ Error::Replace { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!("cannot replace the contents of {want}")
                )
            }
            other => panic!("{gpa:#x}: {other:?}"),
        }
        assert_eq!(
            image.measure().unwrap(),
            before,
            "a refusal changed the image"
        );
    }
}

#[cfg(feature = "json")]
#[test]
fn a_plan_files_zero_region_is_refused() {
    let dir = std::env::temp_dir().join(format!("cc-image-replace-zero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plan.json");
    std::fs::write(
        &path,
        r#"{"version": 1, "platform": "snp", "regions": [
            {"gpa": "0x800000", "size": "0x2000", "role": "zero"}]}"#,
    )
    .unwrap();
    let mut image = cc_image::load_plan_file(&path).unwrap();
    let e = image.replace_contents(0x80_1000, &[1; 4096]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot replace the contents of [0x801000..+0x1000): region 0 [0x800000..+0x2000) \
         (plan region 0) is a zero region: it carries no content (give it as measured)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A CCA `ripas` range holds the data regions listed after it: the data region is the one
/// replaced (its RIM content hash changes); a page only in the `ripas` range is refused.
#[cfg(all(feature = "json", feature = "cca"))]
#[test]
fn in_a_cca_plan_the_data_region_inside_a_ripas_range_is_replaced() {
    let dir = std::env::temp_dir().join(format!("cc-image-replace-cca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kernel.bin"), vec![0x21u8; 4096]).unwrap();
    let path = dir.join("plan.json");
    std::fs::write(
        &path,
        r#"{"version": 1, "platform": "cca", "regions": [
          {"gpa": 0, "size": "0x200000", "role": "ripas"},
          {"gpa": "0x1000", "size": 4096, "role": "measured", "file": "kernel.bin"}],
          "cca": {"hash": "sha256", "ipa_bits": 36, "lpa2": false, "num_bps": 2,
            "num_wps": 2, "sve_vl": 0, "pmu_counters": null,
            "recs": [{"pc": "0x1000", "gprs": [0, 0, 0, 0, 0, 0, 0, 0], "runnable": true}]}}"#,
    )
    .unwrap();
    let before = cc_image::load_plan_file(&path).unwrap();
    let mut after = before.clone();
    after.replace_contents(0x1000, &[0x42; 4096]).unwrap();
    assert_eq!(after.regions()[1].data().unwrap(), &[0x42; 4096][..]);
    let d = diff(&before.trace(None).unwrap(), &after.trace(None).unwrap()).unwrap();
    assert_eq!(d.first_line(), "first difference: step 2, gpa 0x1000");
    assert_eq!((d.rest, d.later_differing), (Rest::SameSteps, 0), "{d}");
    let e = after.replace_contents(0x3000, &[0; 4096]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot replace the contents of [0x3000..+0x1000): region 0 [0x0..+0x200000) \
         (plan region 0) is a RIPAS-only range: it carries no content"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
