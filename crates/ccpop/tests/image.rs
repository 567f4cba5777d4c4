//! `--plan FILE` and `--igvm FILE`: launch images read by cc-image, run as the built binary and
//! checked against the platform backends measuring an equivalent plan built directly.

mod common;

use std::path::{Path, PathBuf};

use common::{ccpop, hex, is_lower_hex, last_line, one_line_error, scratch_dir, text};

use cc_populate::{MemoryLayout, PlanBuilder, Role};

/// A folder of its own for each test.
fn dir(test: &str) -> PathBuf {
    scratch_dir(&format!("image-{test}"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn tdx_plan_file_measures_as_the_backend_does() {
    let d = dir("tdx");
    let fw = pattern(8192, 1);
    write(&d, "fw.bin", &fw);
    let plan = write(
        &d,
        "plan.json",
        br#"{ "version": 1, "platform": "tdx", "regions": [
            { "gpa": "0xffffe000", "size": 8192, "role": "measured", "file": "fw.bin" },
            { "gpa": "0x800000", "size": "0x2000", "role": "zero" } ] }"#,
    );
    let mrtd = last_line(&ccpop(&["measure", "tdx", "--plan", &plan]));
    assert!(is_lower_hex(&mrtd, 96), "{mrtd}");
    let want = PlanBuilder::new()
        .source(0xffff_e000, Role::Measured, &fw)
        .zero(0x80_0000, 0x2000)
        .build(&tdx_backend::TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_eq!(mrtd, hex(&tdx_backend::measure_plan(&want).unwrap()));

    // `plan` takes the platform from the file, or checks it.
    let out = ccpop(&["plan", "--plan", &plan]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("plan (tdx): 2 regions, 16 KiB"),
        "{stdout}"
    );
    assert!(stdout.contains("plan region 0"), "{stdout}");
    assert!(ccpop(&["plan", "--plan", &plan, "--platform", "tdx"])
        .status
        .success());
    let e = one_line_error(&ccpop(&["plan", "--plan", &plan, "--platform", "snp"]));
    assert_eq!(
        e,
        format!("ccpop: {plan}: the plan is for platform tdx, not snp")
    );
    let e = one_line_error(&ccpop(&["measure", "cca", "--plan", &plan]));
    assert_eq!(
        e,
        format!("ccpop: {plan}: the plan is for platform tdx, not cca")
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn snp_plan_file_with_a_vmsa_measures_as_the_backend_does() {
    let d = dir("snp");
    let fw = pattern(3 * 4096, 7);
    let vmsa = pattern(4096, 9);
    write(&d, "fw.bin", &fw);
    write(&d, "vmsa.bin", &vmsa);
    let plan = write(
        &d,
        "plan.json",
        br#"{ "version": 1, "platform": "snp", "regions": [
            { "gpa": "0xffffd000", "size": "0x3000", "role": "measured", "file": "fw.bin" },
            { "gpa": "0x80d000", "size": 4096, "role": "secrets" },
            { "gpa": "0x800000", "size": "0x9000", "role": "zero" } ],
          "snp": { "vmsa": [ { "file": "vmsa.bin" } ] } }"#,
    );
    let digest = last_line(&ccpop(&["measure", "snp", "--plan", &plan]));
    assert!(is_lower_hex(&digest, 96), "{digest}");
    let want = PlanBuilder::new()
        .source(0xffff_d000, Role::Measured, &fw)
        .zeros(0x80_d000, 4096, Role::Secrets)
        .zero(0x80_0000, 0x9000)
        .build(&sev_backend::verifier_caps(), &MemoryLayout::unbounded())
        .unwrap();
    let pages = [sev_backend::VmsaPage::kvm(&vmsa)];
    let want = sev_backend::measure(&want, &pages, &Default::default()).unwrap();
    assert_eq!(digest, hex(&want));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn cca_plan_files_print_64_or_128_digits() {
    let d = dir("cca");
    let kernel = pattern(5 * 4096, 3);
    write(&d, "kernel.bin", &kernel);
    for (hash, digits, algo) in [
        ("sha256", 64, cca_backend::HashAlgo::Sha256),
        ("sha512", 128, cca_backend::HashAlgo::Sha512),
    ] {
        let plan = write(
            &d,
            &format!("{hash}.json"),
            format!(
                r#"{{ "version": 1, "platform": "cca", "regions": [
                    {{ "gpa": 0, "size": "0x40000000", "role": "ripas" }},
                    {{ "gpa": "0x80000", "size": "0x5000", "role": "measured", "file": "kernel.bin" }} ],
                  "cca": {{ "hash": "{hash}", "ipa_bits": 40, "lpa2": false, "num_bps": 2,
                           "num_wps": 2, "sve_vl": 0, "pmu_counters": null,
                           "recs": [ {{ "pc": "0x80000", "gprs": [1, 0, 0, 0, 0, 0, 0, 0],
                                       "runnable": true }} ] }} }}"#
            )
            .as_bytes(),
        );
        let rim = last_line(&ccpop(&["measure", "cca", "--plan", &plan]));
        assert!(is_lower_hex(&rim, digits), "{rim}");
        let want = PlanBuilder::new()
            .zeros(0, 1 << 30, Role::Ripas)
            .source(0x8_0000, Role::Measured, &kernel)
            .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
            .unwrap();
        let rec = cca_backend::RecParams {
            pc: 0x8_0000,
            gprs: [1, 0, 0, 0, 0, 0, 0, 0],
            runnable: true,
        };
        let want =
            cca_backend::measure(&want, &cca_backend::RealmParams::new(algo, 40), &[rec]).unwrap();
        assert_eq!(rim, want.to_string());
    }
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn bad_plan_files_are_one_line_naming_the_field_or_region() {
    let d = dir("bad");
    write(&d, "fw.bin", &pattern(4096, 1));
    let cases: [(&str, &str, &str); 5] = [
        ("not-json.json", "{ version: 1", "not valid JSON"),
        (
            "missing-file.json",
            r#"{ "version": 1, "platform": "tdx", "regions": [
                { "gpa": 0, "size": 4096, "role": "measured", "file": "nope.bin" } ] }"#,
            "regions[0].file",
        ),
        (
            "bad-role.json",
            r#"{ "version": 1, "platform": "tdx", "regions": [
                { "gpa": 0, "size": 4096, "role": "measured", "file": "fw.bin" },
                { "gpa": 4096, "size": 4096, "role": "weird" } ] }"#,
            "regions[1]",
        ),
        (
            "overlap.json",
            r#"{ "version": 1, "platform": "tdx", "regions": [
                { "gpa": 0, "size": 8192, "role": "zero" },
                { "gpa": 4096, "size": 4096, "role": "zero" } ] }"#,
            "region 1",
        ),
        (
            "bad-platform.json",
            r#"{ "version": 1, "platform": "sgx", "regions": [] }"#,
            "sgx",
        ),
    ];
    for (name, body, names) in cases {
        let plan = write(&d, name, body.as_bytes());
        for args in [
            vec!["measure", "tdx", "--plan", plan.as_str()],
            vec!["plan", "--plan", plan.as_str()],
        ] {
            let e = one_line_error(&ccpop(&args));
            assert!(e.starts_with(&format!("ccpop: {plan}: ")), "{name}: {e}");
            assert!(e.contains(names), "{name}: {e}");
        }
    }
    let e = one_line_error(&ccpop(&["plan", "--plan", "/nonexistent/plan.json"]));
    assert!(e.starts_with("ccpop: /nonexistent/plan.json: "), "{e}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn bad_igvm_files_and_platforms_are_one_line() {
    let d = dir("igvm");
    let junk = write(&d, "junk.igvm", &pattern(4096, 5));
    for args in [
        vec!["measure", "snp", "--igvm", junk.as_str()],
        vec!["measure", "tdx", "--igvm", junk.as_str()],
        vec!["plan", "--platform", "snp", "--igvm", junk.as_str()],
    ] {
        let e = one_line_error(&ccpop(&args));
        assert!(
            e.starts_with(&format!("ccpop: {junk}: IGVM file refused")),
            "{e}"
        );
    }
    let e = one_line_error(&ccpop(&["plan", "--platform", "cca", "--igvm", &junk]));
    assert!(e.contains("snp or tdx, not cca"), "{e}");
    let e = one_line_error(&ccpop(&[
        "measure", "snp", "--igvm", &junk, "--vmsa", &junk,
    ]));
    assert!(
        e.contains("--vmsa and --firmware-only go with --firmware"),
        "{e}"
    );
    let e = one_line_error(&ccpop(&[
        "measure",
        "snp",
        "--igvm",
        &junk,
        "--igvm-policy",
        "hyperv",
    ]));
    assert!(e.contains("--igvm-policy hyperv: unknown"), "{e}");
    let _ = std::fs::remove_dir_all(d);
}

/// CRC-32 (IEEE, reflected, as IGVM's header checksum), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A minimal IGVM file laid out by hand from the format (igvm_defs): the fixed header, one
/// SUPPORTED_PLATFORM header (`platform_type` 2 = SEV-SNP, 3 = TDX; compatibility mask 1), one
/// PAGE_DATA directive per page (NORMAL, measured) with its 4096 bytes in the file data section
/// (none for a page given no bytes).
fn igvm_file(platform_type: u8, pages: &[(u64, &[u8])]) -> Vec<u8> {
    let mut vh = Vec::new();
    // IGVM_VHT_SUPPORTED_PLATFORM (0x1), 16 bytes.
    vh.extend_from_slice(&1u32.to_le_bytes());
    vh.extend_from_slice(&16u32.to_le_bytes());
    vh.extend_from_slice(&1u32.to_le_bytes()); // compatibility_mask
    vh.push(0); // highest_vtl
    vh.push(platform_type);
    vh.extend_from_slice(&1u16.to_le_bytes()); // platform_version
    vh.extend_from_slice(&0u64.to_le_bytes()); // shared_gpa_boundary
    let data_start = 24 + vh.len() + pages.len() * 32;
    let mut at = data_start;
    for (gpa, data) in pages {
        // A page without bytes has file offset 0 (a page of zeros) and no data.
        let file_offset = if data.is_empty() { 0 } else { at };
        at += data.len();
        // IGVM_VHT_PAGE_DATA (0x302), 24 bytes.
        vh.extend_from_slice(&0x302u32.to_le_bytes());
        vh.extend_from_slice(&24u32.to_le_bytes());
        vh.extend_from_slice(&gpa.to_le_bytes());
        vh.extend_from_slice(&1u32.to_le_bytes()); // compatibility_mask
        vh.extend_from_slice(&(file_offset as u32).to_le_bytes());
        vh.extend_from_slice(&0u32.to_le_bytes()); // flags: measured, 4 KiB, private
        vh.extend_from_slice(&0u16.to_le_bytes()); // data_type NORMAL
        vh.extend_from_slice(&0u16.to_le_bytes()); // reserved
    }
    let total = at;
    let mut file = Vec::with_capacity(total);
    file.extend_from_slice(b"IGVM");
    file.extend_from_slice(&1u32.to_le_bytes()); // format_version
    file.extend_from_slice(&24u32.to_le_bytes()); // variable_header_offset
    file.extend_from_slice(&(vh.len() as u32).to_le_bytes());
    file.extend_from_slice(&(total as u32).to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes()); // checksum, filled below
    file.extend_from_slice(&vh);
    let sum = crc32(&file);
    file[20..24].copy_from_slice(&sum.to_le_bytes());
    for (_, data) in pages {
        file.extend_from_slice(data);
    }
    file
}

/// `--igvm-policy cloud-hypervisor`: a measured page without bytes is a ZERO page, where `kvm`
/// and `reference` measure a NORMAL page of zeros; TDX the same under every policy.
#[test]
fn the_cloud_hypervisor_policy_measures_empty_pages_as_zero_pages() {
    let d = dir("igvm-empty");
    let a = pattern(4096, 13);
    let pages: [(u64, &[u8]); 3] = [(0x20_0000, &a), (0x20_1000, &[]), (0x20_2000, &[])];
    let snp = write(&d, "snp.igvm", &igvm_file(2, &pages));
    let measure = |policy: &str| {
        last_line(&ccpop(&[
            "measure",
            "snp",
            "--igvm",
            &snp,
            "--igvm-policy",
            policy,
        ]))
    };
    let by_hand = |empty: sev_backend::PageType| {
        let mut ld = sev_backend::LaunchDigest::new();
        let zeros = [0u8; 4096];
        ld.update_page(0x20_0000, sev_backend::PageType::Normal, Some(&a))
            .unwrap();
        for gpa in [0x20_1000, 0x20_2000] {
            let content = (empty == sev_backend::PageType::Normal).then_some(&zeros[..]);
            ld.update_page(gpa, empty, content).unwrap();
        }
        hex(&ld.digest())
    };
    let normal = by_hand(sev_backend::PageType::Normal);
    let zero = by_hand(sev_backend::PageType::Zero);
    assert_ne!(normal, zero);
    assert_eq!(measure("kvm"), normal);
    assert_eq!(measure("reference"), normal);
    assert_eq!(measure("cloud-hypervisor"), zero);
    // The plan carries it: the empty pages are a zero region.
    let out = ccpop(&[
        "plan",
        "--platform",
        "snp",
        "--igvm",
        &snp,
        "--igvm-policy",
        "cloud-hypervisor",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let roles: Vec<&str> = v["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["measured", "zero"]);
    // TDX: no ZERO page type; the same MRTD under every policy.
    let tdx = write(&d, "tdx.igvm", &igvm_file(3, &pages));
    let mrtd = |policy: &str| {
        last_line(&ccpop(&[
            "measure",
            "tdx",
            "--igvm",
            &tdx,
            "--igvm-policy",
            policy,
        ]))
    };
    assert_eq!(mrtd("cloud-hypervisor"), mrtd("kvm"));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn igvm_files_plan_and_measure_as_the_backends_do() {
    let d = dir("igvm-ok");
    let (a, b) = (pattern(4096, 11), pattern(4096, 12));
    // Two pages out of GPA order: measured in file order.
    let pages: [(u64, &[u8]); 2] = [(0x20_1000, &a), (0x20_0000, &b)];

    let snp = write(&d, "snp.igvm", &igvm_file(2, &pages));
    let digest = last_line(&ccpop(&["measure", "snp", "--igvm", &snp]));
    assert!(is_lower_hex(&digest, 96), "{digest}");
    let mut ld = sev_backend::LaunchDigest::new();
    for (gpa, data) in pages {
        ld.update_page(gpa, sev_backend::PageType::Normal, Some(data))
            .unwrap();
    }
    assert_eq!(digest, hex(&ld.digest()));

    let tdx = write(&d, "tdx.igvm", &igvm_file(3, &pages));
    let mrtd = last_line(&ccpop(&["measure", "tdx", "--igvm", &tdx]));
    assert!(is_lower_hex(&mrtd, 96), "{mrtd}");
    let plan = PlanBuilder::new()
        .source(0x20_1000, Role::Measured, &a)
        .source(0x20_0000, Role::Measured, &b)
        .build(&tdx_backend::TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_eq!(mrtd, hex(&tdx_backend::measure_plan(&plan).unwrap()));

    let out = ccpop(&["plan", "--platform", "snp", "--igvm", &snp, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["platform"], "snp");
    assert_eq!(v["total_bytes"].as_u64(), Some(8192));
    let gpas: Vec<u64> = v["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gpa"].as_u64().unwrap())
        .collect();
    assert_eq!(gpas, vec![0x20_1000, 0x20_0000]);

    // The SNP file has no TDX platform header: one line naming that.
    let e = one_line_error(&ccpop(&["measure", "tdx", "--igvm", &snp]));
    assert_eq!(
        e,
        format!("ccpop: {snp}: IGVM file has no tdx platform header"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(d);
}

/// A CCA plan file with a memslot (ripas) region and two vCPUs; `rmm` is spliced into the
/// `cca` section.
fn cca_rmm_plan(d: &Path, name: &str, rmm: &str) -> String {
    write(
        d,
        name,
        format!(
            r#"{{ "version": 1, "platform": "cca", "regions": [
                {{ "gpa": 0, "size": "0x800000", "role": "ripas" }},
                {{ "gpa": "0x80000", "size": "0x3000", "role": "measured", "file": "kernel.bin" }} ],
              "cca": {{ "hash": "sha256", "ipa_bits": 40, "lpa2": false, "num_bps": 6,
                       "num_wps": 4, "sve_vl": 256, "pmu_counters": 3,
                       "recs": [ {{ "pc": "0x80000", "gprs": [7, 0, 0, 0, 0, 0, 0, 0], "runnable": true }},
                                 {{ "pc": 0, "gprs": [0, 0, 0, 0, 0, 0, 0, 0], "runnable": false }} ]{rmm} }} }}"#
        )
        .as_bytes(),
    )
}

/// The RIM the backend computes for `cca_rmm_plan`'s realm, built directly (with or without
/// the ripas region) under `opts`.
fn cca_rmm_want(kernel: &[u8], ripas: bool, opts: &cca_backend::MeasureOptions<'_>) -> String {
    let mut b = PlanBuilder::new();
    if ripas {
        b = b.zeros(0, 0x80_0000, Role::Ripas);
    }
    let plan = b
        .source(0x8_0000, Role::Measured, kernel)
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut realm = cca_backend::RealmParams::new(cca_backend::HashAlgo::Sha256, 40);
    realm.num_bps = 6;
    realm.num_wps = 4;
    realm.sve_vl = 256;
    realm.pmu_counters = Some(3);
    let recs = [
        cca_backend::RecParams {
            pc: 0x8_0000,
            gprs: [7, 0, 0, 0, 0, 0, 0, 0],
            runnable: true,
        },
        cca_backend::RecParams {
            pc: 0,
            gprs: [0; 8],
            runnable: false,
        },
    ];
    cca_backend::measure_with_options(&plan, &realm, &recs, opts)
        .unwrap()
        .to_string()
}

#[test]
fn measure_cca_rmm_from_the_file_or_the_command_line() {
    use cca_backend::{MeasureOptions, MeasureOrder, RmmVersion};
    let d = dir("cca-rmm");
    let kernel = pattern(3 * 4096, 9);
    write(&d, "kernel.bin", &kernel);
    let v = |rmm| MeasureOptions {
        rmm,
        ..Default::default()
    };
    let v1 = cca_rmm_want(&kernel, true, &v(RmmVersion::V1_0));
    let v2 = cca_rmm_want(&kernel, true, &v(RmmVersion::V2_0));
    // RMM 2.0 differs from 1.0 exactly by the RIPAS records: it is 1.0 without the ripas region.
    assert_ne!(v1, v2);
    assert_eq!(v2, cca_rmm_want(&kernel, false, &v(RmmVersion::V1_0)));

    let silent = cca_rmm_plan(&d, "silent.json", "");
    let says1 = cca_rmm_plan(&d, "says1.json", r#", "rmm": "1.0""#);
    let says2 = cca_rmm_plan(&d, "says2.json", r#", "rmm": "2.0""#);
    let rim = |args: &[&str]| last_line(&ccpop(&[&["measure", "cca"], args].concat()));
    // Neither says: RMM 1.0, as plan files always meant.
    assert_eq!(rim(&["--plan", &silent]), v1);
    assert_eq!(rim(&["--plan", &silent, "--rmm", "1.0"]), v1);
    assert_eq!(rim(&["--plan", &silent, "--rmm", "2.0"]), v2);
    assert_eq!(rim(&["--plan", &says1]), v1);
    assert_eq!(rim(&["--plan", &says2]), v2);
    assert_eq!(rim(&["--plan", &says2, "--rmm", "2.0"]), v2);
    // What was used is printed.
    let out = text(&ccpop(&["measure", "cca", "--plan", &says2]).stdout);
    assert!(
        out.contains("measured as: RMM 2.0 (cca.rmm), planned order"),
        "{out}"
    );
    assert!(
        out.contains(
            "LPA2 off, 6 breakpoints, 4 watchpoints, SVE 256 bits, PMU 3 counters, 2 RECs"
        ),
        "{out}"
    );

    // Both say, differently: one line, exit 2.
    let e = one_line_error(&ccpop(&[
        "measure", "cca", "--plan", &says1, "--rmm", "2.0",
    ]));
    assert_eq!(
        e,
        format!(
            "ccpop: {says1}: the plan file says cca.rmm \"1.0\" and --rmm says 2.0: give one, or the same"
        )
    );
    let e = one_line_error(&ccpop(&[
        "measure", "cca", "--plan", &says2, "--rmm", "1.0",
    ]));
    assert!(e.contains("says cca.rmm \"2.0\" and --rmm says 1.0"), "{e}");
    let e = one_line_error(&ccpop(&[
        "measure", "cca", "--plan", &silent, "--rmm", "1.1",
    ]));
    assert_eq!(e, "ccpop: --rmm 1.1: unknown (known: 1.0, 2.0)");

    // The v12 order, against the backend's.
    let v12 = cca_rmm_want(
        &kernel,
        true,
        &MeasureOptions {
            order: MeasureOrder::SeriesV12,
            ..Default::default()
        },
    );
    assert_ne!(v12, v1);
    assert_eq!(rim(&["--plan", &silent, "--order", "v12"]), v12);
    let e = one_line_error(&ccpop(&[
        "measure", "cca", "--plan", &silent, "--order", "v9",
    ]));
    assert!(
        e.contains("--order v9: unknown (known: planned, v12)"),
        "{e}"
    );

    // The options the help and README give per series and firmware rules are the backend's
    // for_series (the RMM rules are the firmware build's: v13 has both).
    use cca_backend::UapiVersion;
    for (series, rmm, args) in [
        (
            UapiVersion::V12,
            RmmVersion::V1_0,
            &["--rmm", "1.0", "--order", "v12"][..],
        ),
        (
            UapiVersion::V13,
            RmmVersion::V1_0,
            &["--rmm", "1.0", "--order", "v12"][..],
        ),
        (UapiVersion::V13, RmmVersion::V2_0, &["--rmm", "2.0"][..]),
        (UapiVersion::V14, RmmVersion::V2_0, &["--rmm", "2.0"][..]),
    ] {
        assert!(series.rmm_rules().contains(&rmm), "{series}");
        let want = cca_rmm_want(&kernel, true, &MeasureOptions::for_series(series, rmm));
        let mut a = vec!["--plan", silent.as_str()];
        a.extend_from_slice(args);
        assert_eq!(rim(&a), want, "{series} {rmm:?}");
    }
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn measure_cca_firmware_takes_every_realm_parameter() {
    use cca_backend::{HashAlgo, MeasureOptions, RealmParams, RecParams, RmmVersion};
    let d = dir("cca-fw-params");
    let fw = pattern(5000, 4);
    let path = write(&d, "fw.bin", &fw);
    let mut padded = fw.clone();
    padded.resize(8192, 0);
    let plan = PlanBuilder::new()
        .zeros(0x1000_0000, 8192, Role::Ripas)
        .source(0x1000_0000, Role::Measured, &padded)
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let rec = RecParams {
        pc: 0x1000_0000,
        gprs: [0; 8],
        runnable: true,
    };
    let want = |realm: &RealmParams, rmm| {
        cca_backend::measure_with_options(
            &plan,
            realm,
            &[rec],
            &MeasureOptions {
                rmm,
                ..Default::default()
            },
        )
        .unwrap()
        .to_string()
    };
    let base = [
        "measure",
        "cca",
        "--firmware",
        &path,
        "--load-gpa",
        "0x10000000",
    ];
    // The defaults: 2 breakpoints, 2 watchpoints, SVE, PMU and LPA2 off, RMM 1.0.
    let defaults = RealmParams::new(HashAlgo::Sha256, 40);
    assert_eq!(last_line(&ccpop(&base)), want(&defaults, RmmVersion::V1_0));
    let mut realm = RealmParams::new(HashAlgo::Sha512, 48);
    realm.num_bps = 6;
    realm.num_wps = 4;
    realm.sve_vl = 512;
    realm.pmu_counters = Some(5);
    realm.lpa2 = true;
    let args = [
        &base[..],
        &[
            "--hash",
            "sha512",
            "--ipa-bits",
            "48",
            "--num-bps",
            "6",
            "--num-wps",
            "4",
            "--sve-vl",
            "512",
            "--pmu-counters",
            "5",
            "--lpa2",
            "--rmm",
            "2.0",
        ],
    ]
    .concat();
    let out = ccpop(&args);
    assert_eq!(last_line(&out), want(&realm, RmmVersion::V2_0));
    assert!(text(&out.stdout).contains("measured as: RMM 2.0 (--rmm), planned order"));
    // Parameters the RMM refuses, and the v12 order without memslots: one line each.
    let e = one_line_error(&ccpop(&[&base[..], &["--num-bps", "1"]].concat()));
    assert!(e.contains("num_bps = 1 is invalid"), "{e}");
    let e = one_line_error(&ccpop(&[&base[..], &["--order", "v12"]].concat()));
    assert!(
        e.contains("--order v12: needs the realm's guest_memfd memslots"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(d);
}
