//! Plan files: parsing, every refusal as one line naming the field or region, and the
//! measurements against independent derivations.

mod common;

use std::path::{Path, PathBuf};

use cc_image::{hex, load_plan_file, Error, Platform};
use cc_populate::{MemoryLayout, PlanBuilder, Role};
use sha2::{Digest, Sha384};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("cc-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> &Self {
        std::fs::write(self.0.join(name), bytes).unwrap();
        self
    }
    fn plan(&self, json: &str) -> Result<cc_image::LaunchImage, Error> {
        let p = self.0.join("plan.json");
        std::fs::write(&p, json).unwrap();
        load_plan_file(&p)
    }
    fn err(&self, json: &str) -> String {
        let e = self.plan(json).expect_err("must be refused").to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(
            e.starts_with(&self.0.join("plan.json").display().to_string()),
            "{e}"
        );
        e
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_plain_plan_reads_files_at_offsets_in_order() {
    let d = Dir::new("plain");
    d.file("a.bin", &pattern(3 * 4096, 1));
    let img = d
        .plan(
            r#"{"version": 1, "platform": "plain", "regions": [
            {"gpa": "0x200000", "size": 8192, "role": "measured", "file": "a.bin", "file_offset": "0x1000"},
            {"gpa": 0, "size": "0x1000", "role": "unmeasured", "file": "a.bin"},
            {"gpa": "0x100000", "size": 4096, "role": "zero"},
            {"gpa": "0x300000", "size": 4096, "role": "measured"}]}"#,
        )
        .unwrap();
    assert_eq!(img.platform(), Platform::Plain);
    let r = img.regions();
    assert_eq!(r.len(), 4);
    assert_eq!(
        (r[0].gpa(), r[0].size(), r[0].role()),
        (0x20_0000, 8192, Role::Measured)
    );
    assert_eq!(r[0].data().unwrap(), &pattern(3 * 4096, 1)[4096..]);
    assert_eq!(r[1].data().unwrap(), &pattern(3 * 4096, 1)[..4096]);
    assert_eq!(r[2].data(), None);
    assert_eq!(r[3].data(), None);
    // The plan keeps the file's order.
    let plan = img
        .plan(
            &Platform::Plain.try_caps().unwrap(),
            &MemoryLayout::unbounded(),
        )
        .unwrap();
    let gpas: Vec<u64> = plan.regions().iter().map(|r| r.gpa()).collect();
    assert_eq!(gpas, vec![0x20_0000, 0, 0x10_0000, 0x30_0000]);
    assert_eq!(
        img.measure().unwrap_err().to_string(),
        "platform plain has no launch measurement"
    );
}

#[test]
fn refusals_name_the_field_or_region() {
    let d = Dir::new("refusals");
    d.file("four.bin", &[7u8; 4096]);
    let cases: &[(&str, &str)] = &[
        ("{", "not valid JSON"),
        ("[]", "(top level): expected a JSON object"),
        (r#"{"platform": "tdx", "regions": []}"#, "version: missing"),
        (
            r#"{"version": 2, "platform": "tdx", "regions": []}"#,
            "version: unsupported plan file version 2",
        ),
        (
            r#"{"version": "1", "platform": "tdx", "regions": []}"#,
            "version: string \"1\" is not a \"0x...\" hex number",
        ),
        (
            r#"{"version": 1, "platform": "sev", "regions": []}"#,
            "platform: unknown platform \"sev\"",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [], "extra": 1}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"version": 1, "platform": "tdx"}"#,
            "missing field `regions`",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": -4096, "size": 4096, "role": "zero"}]}"#,
            "regions[0]: -4096 is negative",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 4096.0, "size": 4096, "role": "zero"}]}"#,
            "regions[0]: a number that is not an integer",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 18446744073709551616, "size": 4096, "role": "zero"}]}"#,
            "regions[0]: a number that is not an integer in 0..2^64",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "zero", "colour": 1}]}"#,
            "regions[0]: unknown field `colour`",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "role": "zero"}]}"#,
            "regions[0]: missing field `size`",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "data"}]}"#,
            "regions[0]: unknown variant `data`",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "measured"}, {"gpa": 4096, "size": 4096, "role": "cpuid"}]}"#,
            "region 1 [0x1000..+0x1000): role cpuid is not supported by this platform",
        ),
        (
            r#"{"version": 1, "platform": "snp", "regions": [{"gpa": 0, "size": 4096, "role": "ripas"}]}"#,
            "region 0 [0x0..+0x1000): role ripas is not supported",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 8192, "role": "zero"}, {"gpa": 4096, "size": 4096, "role": "zero"}]}"#,
            "region 1 [0x1000..+0x1000) overlaps region 0 [0x0..+0x2000)",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 100, "role": "zero"}]}"#,
            "region 0 [0x0..+0x64) is not aligned to the 0x1000-byte granule",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 0, "role": "zero"}]}"#,
            "region 0 at 0x0 has length zero",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": "0xfffffffffffff000", "size": 8192, "role": "zero"}]}"#,
            "regions[0]: gpa 0xfffffffffffff000 + size 0x2000 ends past 2^64",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "measured", "file": "nope.bin"}]}"#,
            "regions[0].file: ",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 8192, "role": "measured", "file": "four.bin"}]}"#,
            "regions[0].file: ",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "measured", "file": "four.bin", "file_offset": 1}]}"#,
            "(the file is too short)",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "measured", "file": "/dev/zero"}]}"#,
            "regions[0].file: /dev/zero is not a regular file",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "measured", "file": "."}]}"#,
            "is not a regular file",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "zero", "file": "four.bin"}]}"#,
            "regions[0].file: a zero region cannot have a file",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "zero", "file_offset": 0}]}"#,
            "regions[0].file_offset: given without a file",
        ),
        (
            r#"{"version": 1, "platform": "tdx", "regions": [], "snp": {"vmsa": []}}"#,
            "snp: only allowed in an snp plan (this plan is for tdx)",
        ),
        (
            r#"{"version": 1, "platform": "snp", "regions": [], "cca": {}}"#,
            "cca: only allowed in a cca plan (this plan is for snp)",
        ),
        (
            r#"{"version": 1, "platform": "snp", "regions": [], "snp": {"vmsa": [{"file": "four.bin", "gpa": 1}]}}"#,
            "snp.vmsa[0].gpa: 0x1 is not 4 KiB aligned",
        ),
        (
            r#"{"version": 1, "platform": "snp", "regions": [], "snp": {"vmsa": [{"file": "none.bin"}]}}"#,
            "snp.vmsa[0].file: ",
        ),
        (
            r#"{"version": 1, "platform": "snp", "regions": [], "snp": {"vmsa": [{"file": "four.bin", "x": 1}]}}"#,
            "snp.vmsa[0]: unknown field `x`",
        ),
        (
            r#"{"version": 1, "platform": "cca", "regions": []}"#,
            "cca: missing",
        ),
        (
            // A field name with a newline in it (found by fuzz_plan_file): still one line.
            r#"{"version": 1, "platform": "tdx", "regions": [{"gpa": 0, "size": 4096, "role": "zero", "x\ny": 1}]}"#,
            "unknown field `x\\ny`",
        ),
    ];
    for (json, want) in cases {
        let e = d.err(json);
        assert!(!e.contains('\n'), "{json}\n  gave more than one line: {e}");
        assert!(e.contains(want), "{json}\n  gave: {e}\n  want: {want}");
    }
}

const CCA_OK: &str = r#""cca": {"hash": "sha256", "ipa_bits": 33, "lpa2": false, "num_bps": 2,
    "num_wps": 2, "sve_vl": 0, "pmu_counters": null, "recs": []}"#;

#[test]
fn cca_refusals_name_the_field_or_region() {
    let d = Dir::new("cca-refusals");
    let with = |cca: &str, regions: &str| {
        format!(r#"{{"version": 1, "platform": "cca", "regions": [{regions}], "cca": {cca}}}"#)
    };
    let base = r#"{"hash": "sha256", "ipa_bits": 40, "lpa2": false, "num_bps": 2, "num_wps": 2, "sve_vl": 0, "pmu_counters": null, "recs": []}"#;
    let sub = |from: &str, to: &str| base.replace(from, to);
    let cases: Vec<(String, &str)> = vec![
        (with(&sub("sha256", "sha384"), ""), "cca.hash: \"sha384\" is not \"sha256\" or \"sha512\""),
        (with(&sub("\"num_bps\": 2", "\"num_bps\": 1"), ""), "cca.num_bps: realm parameter num_bps = 1 is invalid"),
        (with(&sub("\"num_wps\": 2", "\"num_wps\": 300"), ""), "cca.num_wps: 300 is out of range"),
        (with(&sub("\"sve_vl\": 0", "\"sve_vl\": 100"), ""), "cca.sve_vl: realm parameter sve_vl = 100 is invalid"),
        (with(&sub("\"ipa_bits\": 40", "\"ipa_bits\": 60"), ""), "cca.ipa_bits: realm parameter ipa_bits = 60 is invalid"),
        (with(&sub("\"pmu_counters\": null", "\"pmu_counters\": 32"), ""), "cca.pmu_counters: realm parameter pmu_counters = 32 is invalid"),
        (with(&sub("\"lpa2\": false, ", ""), ""), "cca: missing field `lpa2`"),
        (with(&sub("\"recs\": []", "\"recs\": [{\"pc\": 0, \"gprs\": [0,0,0,0,0,0,0], \"runnable\": true}]"), ""), "cca.recs[0]: invalid length 7"),
        (with(&sub("\"recs\": []", "\"recs\": [{\"pc\": 0, \"gprs\": [0,0,0,0,0,0,0,0], \"runnable\": 1}]"), ""), "cca.recs[0]: invalid type"),
        (with(base, r#"{"gpa": "0x7ffffff000", "size": 8192, "role": "measured"}"#), "regions[0]: [0x7ffffff000..0x8000001000) is not in the protected half of the IPA space (below 0x8000000000)"),
        (with(base, r#"{"gpa": 0, "size": 4096, "role": "zero"}"#), "region 0 [0x0..+0x1000): role zero is not supported"),
        (with(base, r#"{"gpa": 0, "size": 4096, "role": "secrets"}"#), "role secrets is not supported"),
        (with(base, r#"{"gpa": 0, "size": 4096, "role": "measured"}, {"gpa": 0, "size": 8192, "role": "ripas"}"#), "region 0 [0x0..+0x1000) lies in ripas region 1, which must be listed before it"),
        (with(&sub("\"recs\": []", "\"recs\": [], \"rmm\": \"3.0\""), ""), "cca.rmm: \"3.0\" is not \"1.0\" or \"2.0\""),
        (with(&sub("\"recs\": []", "\"recs\": [], \"rmm\": \"2\""), ""), "cca.rmm: \"2\" is not \"1.0\" or \"2.0\""),
        (with(&sub("\"recs\": []", "\"recs\": [], \"rmm\": 2.0"), ""), "cca.rmm: 2.0 is not \"1.0\" or \"2.0\" (a JSON string)"),
    ];
    for (json, want) in &cases {
        let e = d.err(json);
        assert!(e.contains(want), "{json}\n  gave: {e}\n  want: {want}");
    }
    // The good base is accepted.
    assert!(d
        .plan(&format!(
            r#"{{"version": 1, "platform": "cca", "regions": [], {CCA_OK}}}"#
        ))
        .is_ok());
}

/// SHA-384 of one SNP `PAGE_INFO`, written field by field from the SNP firmware ABI
/// (SNP_LAUNCH_UPDATE): DIGEST_CUR, CONTENTS, LENGTH = 0x70, PAGE_TYPE, IMI_PAGE, VMPL3..1
/// permissions, reserved, GPA.
fn snp_step(cur: [u8; 48], contents: [u8; 48], page_type: u8, gpa: u64) -> [u8; 48] {
    let mut info = Vec::with_capacity(0x70);
    info.extend_from_slice(&cur);
    info.extend_from_slice(&contents);
    info.extend_from_slice(&0x70u16.to_le_bytes());
    info.push(page_type);
    info.extend_from_slice(&[0, 0, 0, 0, 0]);
    info.extend_from_slice(&gpa.to_le_bytes());
    assert_eq!(info.len(), 0x70);
    Sha384::digest(&info).into()
}

fn sha384(b: &[u8]) -> [u8; 48] {
    Sha384::digest(b).into()
}

#[test]
fn snp_plan_digest_matches_a_hand_derived_chain() {
    let d = Dir::new("snp");
    let fw = pattern(2 * 4096, 9);
    let cpuid = pattern(4096, 3);
    let vmsa0 = pattern(4096, 100);
    let vmsa1 = pattern(4096, 200);
    d.file("fw.bin", &fw)
        .file("cpuid.bin", &cpuid)
        .file("v0.bin", &vmsa0)
        .file("v1.bin", &vmsa1);
    let img = d
        .plan(
            r#"{"version": 1, "platform": "snp",
            "regions": [
              {"gpa": "0xffffe000", "size": 8192, "role": "measured", "file": "fw.bin"},
              {"gpa": "0x800000", "size": 8192, "role": "zero"},
              {"gpa": "0x802000", "size": 4096, "role": "unmeasured", "file": "cpuid.bin"},
              {"gpa": "0x803000", "size": 4096, "role": "secrets"},
              {"gpa": "0x804000", "size": 4096, "role": "cpuid"},
              {"gpa": "0x805000", "size": 4096, "role": "measured"}],
            "snp": {"vmsa": [{"file": "v1.bin", "gpa": "0x1000"}, {"file": "v0.bin"}]}}"#,
        )
        .unwrap();
    // PAGE_TYPE: NORMAL 1, VMSA 2, ZERO 3, UNMEASURED 4, SECRETS 5, CPUID 6.
    let z = [0u8; 48];
    let mut ld = [0u8; 48];
    ld = snp_step(ld, sha384(&fw[..4096]), 1, 0xffff_e000);
    ld = snp_step(ld, sha384(&fw[4096..]), 1, 0xffff_f000);
    ld = snp_step(ld, z, 3, 0x80_0000);
    ld = snp_step(ld, z, 3, 0x80_1000);
    ld = snp_step(ld, z, 4, 0x80_2000);
    ld = snp_step(ld, z, 5, 0x80_3000);
    ld = snp_step(ld, z, 6, 0x80_4000);
    ld = snp_step(ld, sha384(&[0u8; 4096]), 1, 0x80_5000);
    ld = snp_step(ld, sha384(&vmsa1), 2, 0x1000);
    ld = snp_step(ld, sha384(&vmsa0), 2, 0xffff_ffff_f000);
    let got = img.measure().unwrap();
    assert_eq!(hex(&got), hex(&ld));
    assert_eq!(hex(&got).len(), 96);
}

#[test]
fn tdx_plan_digest_matches_the_igvm_reference_on_the_same_pages() {
    use common::*;
    use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};
    let d = Dir::new("tdx");
    let fw = pattern(3 * 4096, 5);
    let un = pattern(4096, 77);
    d.file("fw.bin", &fw).file("un.bin", &un);
    let img = d
        .plan(
            r#"{"version": 1, "platform": "tdx", "regions": [
              {"gpa": "0xffffd000", "size": "0x3000", "role": "measured", "file": "fw.bin"},
              {"gpa": "0x800000", "size": 8192, "role": "zero"},
              {"gpa": "0x900000", "size": 4096, "role": "unmeasured", "file": "un.bin"},
              {"gpa": "0xa00000", "size": 4096, "role": "measured"}]}"#,
        )
        .unwrap();
    // The same launch as IGVM directives: measured pages with data, zero and unmeasured
    // pages as unmeasured page data (PAGE.ADD only), a measured page without data (zeros).
    let m = IgvmPageDataFlags::new();
    let u = IgvmPageDataFlags::new().with_unmeasured(true);
    let n = IgvmPageDataType::NORMAL;
    let dirs = vec![
        page(0xffff_d000, TDX, m, n, fw[..4096].to_vec()),
        page(0xffff_e000, TDX, m, n, fw[4096..8192].to_vec()),
        page(0xffff_f000, TDX, m, n, fw[8192..].to_vec()),
        page(0x80_0000, TDX, u, n, Vec::new()),
        page(0x80_1000, TDX, u, n, Vec::new()),
        page(0x90_0000, TDX, u, n, un.clone()),
        page(0xa0_0000, TDX, m, n, Vec::new()),
    ];
    let want = reference(&serialize(dirs), TDX);
    assert_eq!(hex(&img.measure().unwrap()), hex(&want));
}

#[test]
fn cca_plan_rim_is_the_backends_rim_of_the_equivalent_plan() {
    use cca_backend::{HashAlgo, RealmParams, RecParams, CCA_CAPS};
    let d = Dir::new("cca");
    let kernel = pattern(3 * 4096, 42);
    d.file("kernel.bin", &kernel);
    for (hash, algo, len) in [
        ("sha256", HashAlgo::Sha256, 32),
        ("sha512", HashAlgo::Sha512, 64),
    ] {
        let img = d
            .plan(&format!(
                r#"{{"version": 1, "platform": "cca", "regions": [
              {{"gpa": 0, "size": "0x400000", "role": "ripas"}},
              {{"gpa": "0x80000", "size": "0x3000", "role": "measured", "file": "kernel.bin"}},
              {{"gpa": "0x200000", "size": "0x1000", "role": "unmeasured"}}],
              "cca": {{"hash": "{hash}", "ipa_bits": 40, "lpa2": false, "num_bps": 6,
                "num_wps": 4, "sve_vl": 512, "pmu_counters": 8,
                "recs": [{{"pc": "0x80000", "gprs": ["0xfedcba9876543210", 1, 2, 3, 4, 5, 6, 18446744073709551615], "runnable": true}},
                         {{"pc": 0, "gprs": [0, 0, 0, 0, 0, 0, 0, 0], "runnable": false}}]}}}}"#
            ))
            .unwrap();
        let zeros = vec![0u8; 4096];
        let plan = PlanBuilder::new()
            .zeros(0, 0x40_0000, Role::Ripas)
            .source(0x8_0000, Role::Measured, &kernel)
            .source(0x20_0000, Role::Unmeasured, &zeros)
            .build(&CCA_CAPS, &MemoryLayout::unbounded())
            .unwrap();
        let mut realm = RealmParams::new(algo, 40);
        realm.num_bps = 6;
        realm.num_wps = 4;
        realm.sve_vl = 512;
        realm.pmu_counters = Some(8);
        let recs = [
            RecParams {
                pc: 0x8_0000,
                gprs: [0xfedc_ba98_7654_3210, 1, 2, 3, 4, 5, 6, u64::MAX],
                runnable: true,
            },
            RecParams {
                pc: 0,
                gprs: [0; 8],
                runnable: false,
            },
        ];
        assert_eq!(img.cca().unwrap().realm, realm);
        assert_eq!(img.cca().unwrap().recs, recs);
        let want = cca_backend::measure(&plan, &realm, &recs).unwrap();
        let got = img.measure().unwrap();
        assert_eq!(got.len(), len);
        assert_eq!(got, want.to_vec());
    }
}

#[test]
fn the_example_plan_file_loads_and_measures() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/example-tdx.json");
    let img = load_plan_file(&p).unwrap();
    assert_eq!(img.platform(), Platform::Tdx);
    assert_eq!(hex(&img.measure().unwrap()).len(), 96);
}

/// The RMM 1.0 hash of `data` for a realm of `algo`, zero padded to the 512-bit fields the
/// measurement descriptors hold.
fn rmm_hash(sha512: bool, data: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    if sha512 {
        out.copy_from_slice(&sha2::Sha512::digest(data));
    } else {
        out[..32].copy_from_slice(&sha2::Sha256::digest(data));
    }
    out
}

#[test]
fn cca_plan_rim_matches_a_hand_derived_descriptor_chain() {
    // RMM specification 1.0: REALM_CREATE sets the RIM to the hash of the 4096-byte
    // RmiRealmParams with only the measured fields kept (flags 0x0, s2sz 0x8, sve_vl 0x10,
    // num_bps 0x18, num_wps 0x20, pmu_num_ctrs 0x28, hash_algo 0x30); DATA_CREATE hashes a
    // 256-byte RmmMeasurementDescriptorData (desc_type 0 at 0x0, len 0x100 at 0x8, rim at
    // 0x10, ipa at 0x50, flags at 0x58 (bit 0: content measured), content hash at 0x60);
    // REC_CREATE of a runnable REC hashes a RmmMeasurementDescriptorRec (desc_type 1, len,
    // rim at 0x10, content at 0x50 = hash of RmiRecParams with flags 0x0, pc 0x200,
    // gprs 0x300 kept).
    let d = Dir::new("cca-hand");
    let kernel = pattern(2 * 4096, 11);
    let blob = pattern(4096, 12);
    d.file("kernel.bin", &kernel).file("blob.bin", &blob);
    for (name, sha512) in [("sha256", false), ("sha512", true)] {
        let img = d
            .plan(&format!(
                r#"{{"version": 1, "platform": "cca", "regions": [
                  {{"gpa": "0x40000", "size": 8192, "role": "measured", "file": "kernel.bin"}},
                  {{"gpa": "0x10000", "size": 4096, "role": "unmeasured", "file": "blob.bin"}}],
                  "cca": {{"hash": "{name}", "ipa_bits": 36, "lpa2": false, "num_bps": 4,
                    "num_wps": 3, "sve_vl": 256, "pmu_counters": 5,
                    "recs": [{{"pc": "0x40000", "gprs": [9, 8, 7, 6, 5, 4, 3, "0x8000000000000001"], "runnable": true}}]}}}}"#
            ))
            .unwrap();
        let mut params = vec![0u8; 4096];
        params[0] = 0b110; // SVE (bit 1) and PMU (bit 2) enabled, no LPA2.
        params[0x8] = 36;
        params[0x10] = 1; // 256 bits = 2 x 128: encoded as 2 - 1.
        params[0x18] = 3; // 4 breakpoints, encoded as count - 1.
        params[0x20] = 2;
        params[0x28] = 5;
        params[0x30] = u8::from(sha512); // RMI_HASH_SHA_256 = 0, RMI_HASH_SHA_512 = 1.
        let mut rim = rmm_hash(sha512, &params);
        let data = |rim: [u8; 64], ipa: u64, content: Option<&[u8]>| {
            let mut desc = vec![0u8; 256];
            desc[0] = 0;
            desc[8..16].copy_from_slice(&0x100u64.to_le_bytes());
            desc[0x10..0x50].copy_from_slice(&rim);
            desc[0x50..0x58].copy_from_slice(&ipa.to_le_bytes());
            if let Some(c) = content {
                desc[0x58] = 1;
                desc[0x60..0xa0].copy_from_slice(&rmm_hash(sha512, c));
            }
            rmm_hash(sha512, &desc)
        };
        rim = data(rim, 0x40000, Some(&kernel[..4096]));
        rim = data(rim, 0x41000, Some(&kernel[4096..]));
        rim = data(rim, 0x10000, None);
        let mut rec = vec![0u8; 4096];
        rec[0] = 1; // runnable
        rec[0x200..0x208].copy_from_slice(&0x40000u64.to_le_bytes());
        for (i, g) in [9u64, 8, 7, 6, 5, 4, 3, 0x8000_0000_0000_0001]
            .iter()
            .enumerate()
        {
            rec[0x300 + 8 * i..0x308 + 8 * i].copy_from_slice(&g.to_le_bytes());
        }
        let mut desc = vec![0u8; 256];
        desc[0] = 1;
        desc[8..16].copy_from_slice(&0x100u64.to_le_bytes());
        desc[0x10..0x50].copy_from_slice(&rim);
        desc[0x50..0x90].copy_from_slice(&rmm_hash(sha512, &rec));
        rim = rmm_hash(sha512, &desc);
        let len = if sha512 { 64 } else { 32 };
        assert_eq!(hex(&img.measure().unwrap()), hex(&rim[..len]), "{name}");
    }
}

#[test]
fn a_typed_plan_file_written_with_serde_reads_back() {
    use cc_image::planfile::{PlanFile, PlanRegion, PlanSnp, PlanVmsa};
    use cc_image::Num;
    let d = Dir::new("typed");
    d.file("fw.bin", &pattern(8192, 4))
        .file("vmsa.bin", &pattern(4096, 5));
    let typed = PlanFile {
        version: Num(1),
        platform: Platform::Snp,
        regions: vec![
            PlanRegion {
                gpa: Num(0xffff_e000),
                size: Num(8192),
                role: Role::Measured,
                file: Some("fw.bin".into()),
                file_offset: None,
            },
            PlanRegion {
                gpa: Num(0x80_0000),
                size: Num(4096),
                role: Role::Secrets,
                file: None,
                file_offset: None,
            },
        ],
        snp: Some(PlanSnp {
            vmsa: vec![PlanVmsa {
                file: "vmsa.bin".into(),
                gpa: None,
            }],
        }),
        cca: None,
    };
    let json = serde_json::to_string_pretty(&typed).unwrap();
    // The typed form reads back through serde (unknown fields refused there too) ...
    assert_eq!(serde_json::from_str::<PlanFile>(&json).unwrap(), typed);
    assert!(serde_json::from_str::<PlanFile>(&json.replacen(
        "\"version\"",
        "\"x\": 1, \"version\"",
        1
    ))
    .is_err());
    // ... and the loader reads what it wrote.
    let img = d.plan(&json).unwrap();
    assert_eq!(img.regions().len(), 2);
    assert_eq!(img.vmsas().len(), 1);
    assert_eq!(img.vmsas()[0].gpa, cc_image::DEFAULT_VMSA_GPA);
    assert_eq!(img.regions()[1].role(), Role::Secrets);
}

/// `cca.rmm`: "1.0" and a file without the field measure RTT_INIT_RIPAS (RMM 1.0, B4.3.18.4:
/// a 256-byte RmmMeasurementDescriptorRipas, desc_type 2 at 0x0, len 0x100 at 0x8, rim at
/// 0x10, base at 0x50, top at 0x58); "2.0" does not (TF-RMM's 2.0-era `smc_rtt_init_ripas`
/// has no measurement call); `null` is the field left out.
#[test]
fn cca_rmm_field_selects_the_measurement_rules() {
    use cca_backend::RmmVersion;
    let d = Dir::new("cca-rmm");
    let kernel = pattern(4096, 21);
    d.file("kernel.bin", &kernel);
    let load = |rmm: &str| {
        d.plan(&format!(
            r#"{{"version": 1, "platform": "cca", "regions": [
              {{"gpa": 0, "size": "0x200000", "role": "ripas"}},
              {{"gpa": "0x1000", "size": 4096, "role": "measured", "file": "kernel.bin"}}],
              "cca": {{"hash": "sha256", "ipa_bits": 36, "lpa2": false, "num_bps": 2,
                "num_wps": 2, "sve_vl": 0, "pmu_counters": null,
                "recs": [{{"pc": "0x1000", "gprs": [0, 0, 0, 0, 0, 0, 0, 0], "runnable": true}}]{rmm}}}}}"#
        ))
        .unwrap()
    };
    // The chain, by hand: params page (s2sz 36, 2/2 debug resources), [RIPAS 0..2 MiB: a
    // 36-bit realm starts at level 1, the range fits one level-2 entry], DATA at 0x1000, REC.
    let mut params = vec![0u8; 4096];
    params[0x8] = 36;
    params[0x18] = 1;
    params[0x20] = 1;
    let desc = |ty: u8, rim: &[u8; 64], fill: &dyn Fn(&mut [u8])| {
        let mut d = vec![0u8; 256];
        d[0] = ty;
        d[8..16].copy_from_slice(&0x100u64.to_le_bytes());
        d[0x10..0x50].copy_from_slice(rim);
        fill(&mut d);
        rmm_hash(false, &d)
    };
    let chain = |ripas: bool| {
        let mut rim = rmm_hash(false, &params);
        if ripas {
            rim = desc(2, &rim, &|d| {
                d[0x50..0x58].copy_from_slice(&0u64.to_le_bytes());
                d[0x58..0x60].copy_from_slice(&0x20_0000u64.to_le_bytes());
            });
        }
        rim = desc(0, &rim, &|d| {
            d[0x50..0x58].copy_from_slice(&0x1000u64.to_le_bytes());
            d[0x58] = 1;
            d[0x60..0xa0].copy_from_slice(&rmm_hash(false, &kernel));
        });
        let mut rec = vec![0u8; 4096];
        rec[0] = 1;
        rec[0x200..0x208].copy_from_slice(&0x1000u64.to_le_bytes());
        rim = desc(1, &rim, &|d| {
            d[0x50..0x90].copy_from_slice(&rmm_hash(false, &rec))
        });
        hex(&rim[..32])
    };
    for (field, said, ripas) in [
        ("", None, true),
        (r#", "rmm": null"#, None, true),
        (r#", "rmm": "1.0""#, Some(RmmVersion::V1_0), true),
        (r#", "rmm": "2.0""#, Some(RmmVersion::V2_0), false),
    ] {
        let img = load(field);
        assert_eq!(img.cca().unwrap().rmm, said, "{field}");
        assert_eq!(hex(&img.measure().unwrap()), chain(ripas), "{field}");
    }
    // measure_cca takes the caller's version over the file's, and refuses other platforms.
    let img = load(r#", "rmm": "1.0""#);
    let v2 = cca_backend::MeasureOptions {
        rmm: RmmVersion::V2_0,
        ..Default::default()
    };
    assert_eq!(hex(&img.measure_cca(&v2).unwrap()), chain(false));
    let tdx = d
        .plan(r#"{"version": 1, "platform": "tdx", "regions": []}"#)
        .unwrap();
    let e = tdx.measure_cca(&v2).unwrap_err().to_string();
    assert!(e.contains("platform tdx: it has no Arm CCA realm"), "{e}");
}
