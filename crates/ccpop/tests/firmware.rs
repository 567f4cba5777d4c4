//! `ccpop plan` and `ccpop measure` on firmware images, run as the built binary, checked
//! against the platform libraries' own answers for the same image. A test whose firmware image
//! or peer tool is missing is reported ignored with a `SKIPPED [<id>]` line naming it
//! (gmem::testing's harness); CI fails where the prerequisite is installed after all.

mod common;

use std::path::{Path, PathBuf};

use common::{ccpop, hex, is_lower_hex, last_line, one_line_error, scratch_dir, text};

use cc_populate::{MemoryLayout, PlanBuilder};
use gmem::testing::{self, Need};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// What a test that needs [`OVMF`] names.
const NEEDS_OVMF: Need = Need::File {
    path: OVMF,
    from: "Debian's ovmf package: apt-get install ovmf",
};

/// The OVMF image Debian/Ubuntu's `ovmf` package installs (the one sev-backend's tests use),
/// read (its presence is the test's need, checked by the harness).
fn ovmf() -> Vec<u8> {
    std::fs::read(OVMF).unwrap_or_else(|e| panic!("{OVMF}: {e}"))
}

/// A scratch file unique to this test process and `name`.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch_dir("firmware").join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn snp_library_digest(image: &[u8], vmsas: &[&[u8]], firmware_only: bool) -> String {
    let mut regions = sev_backend::plan_ovmf(image, sev_backend::SectionPolicy::QEMU).unwrap();
    if firmware_only {
        regions.truncate(1);
    }
    let mut b = PlanBuilder::new();
    for r in &regions {
        b.push(r.to_spec());
    }
    let plan = b
        .build(&sev_backend::verifier_caps(), &MemoryLayout::unbounded())
        .unwrap();
    let pages: Vec<_> = vmsas
        .iter()
        .map(|p| sev_backend::VmsaPage::kvm(p))
        .collect();
    hex(&sev_backend::measure(&plan, &pages, &Default::default()).unwrap())
}

fn measure_snp_prints_the_library_digest_last() {
    let image = ovmf();
    let digest = last_line(&ccpop(&["measure", "snp", "--firmware", OVMF]));
    assert!(is_lower_hex(&digest, 96), "{digest}");
    assert_eq!(digest, snp_library_digest(&image, &[], false));

    // VMSAs are measured after the sections, in the order given.
    let a = vec![0x11u8; 4096];
    let mut b = vec![0u8; 4096];
    b[0x3e8] = 0x22;
    let (pa, pb) = (scratch("vmsa-a", &a), scratch("vmsa-b", &b));
    let ab = last_line(&ccpop(&[
        "measure".as_ref(),
        "snp".as_ref(),
        "--firmware".as_ref(),
        OVMF.as_ref(),
        "--vmsa".as_ref(),
        pa.as_os_str(),
        "--vmsa".as_ref(),
        pb.as_os_str(),
    ]));
    let ba = last_line(&ccpop(&[
        "measure".as_ref(),
        "snp".as_ref(),
        "--firmware".as_ref(),
        OVMF.as_ref(),
        "--vmsa".as_ref(),
        pb.as_os_str(),
        "--vmsa".as_ref(),
        pa.as_os_str(),
    ]));
    assert_eq!(ab, snp_library_digest(&image, &[&a, &b], false));
    assert_eq!(ba, snp_library_digest(&image, &[&b, &a], false));
    assert_ne!(ab, ba);
    assert_ne!(ab, digest);

    // --firmware-only: the image pages alone.
    let fw = last_line(&ccpop(&[
        "measure",
        "snp",
        "--firmware",
        OVMF,
        "--firmware-only",
    ]));
    assert_eq!(fw, snp_library_digest(&image, &[], true));
    assert_ne!(fw, digest);
    for p in [pa, pb] {
        let _ = std::fs::remove_file(p);
    }
}

fn measure_snp_of_a_hand_checked_one_page_image() {
    // A one-page image whose GUIDed table holds only an SEV metadata entry with no sections,
    // laid out by hand from the OVMF table format. --firmware-only measures one page at
    // 4 GiB - 4 KiB; the library's digest of that single page is the answer.
    let mut img = vec![0u8; 4096];
    let guid = |s: &str| -> Vec<u8> {
        let h: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&s.replace('-', "")[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        vec![
            h[3], h[2], h[1], h[0], h[5], h[4], h[7], h[6], h[8], h[9], h[10], h[11], h[12], h[13],
            h[14], h[15],
        ]
    };
    // SEV metadata at offset 0x100: "ASEV", len 16, version 1, 0 sections.
    img[0x100..0x104].copy_from_slice(b"ASEV");
    img[0x104..0x108].copy_from_slice(&16u32.to_le_bytes());
    img[0x108..0x10c].copy_from_slice(&1u32.to_le_bytes());
    let mut table = Vec::new();
    table.extend_from_slice(&((4096 - 0x100) as u32).to_le_bytes());
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&guid("dc886566-984a-4798-a75e-5585a7bf67cc"));
    table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
    table.extend_from_slice(&guid("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let start = 4096 - 32 - table.len();
    img[start..4096 - 32].copy_from_slice(&table);
    let path = scratch("one-page.fd", &img);
    let out = ccpop(&[
        "measure".as_ref(),
        "snp".as_ref(),
        "--firmware".as_ref(),
        path.as_os_str(),
    ]);
    let digest = last_line(&out);
    let mut ld = sev_backend::LaunchDigest::new();
    ld.update_page(0xffff_f000, sev_backend::PageType::Normal, Some(&img))
        .unwrap();
    assert_eq!(digest, hex(&ld.digest()));
    let _ = std::fs::remove_file(path);
}

fn measure_tdx_and_cca_print_the_library_digests_last() {
    let image = ovmf();
    let mrtd = last_line(&ccpop(&["measure", "tdx", "--firmware", OVMF]));
    assert!(is_lower_hex(&mrtd, 96), "{mrtd}");
    let want = tdx_backend::tdvf::measure(&image, &Default::default()).unwrap();
    assert_eq!(mrtd, hex(&want));

    for (hash, digits, algo) in [
        ("sha256", 64, cca_backend::HashAlgo::Sha256),
        ("sha512", 128, cca_backend::HashAlgo::Sha512),
    ] {
        let rim = last_line(&ccpop(&[
            "measure",
            "cca",
            "--firmware",
            OVMF,
            "--load-gpa",
            "0x80000000",
            "--hash",
            hash,
        ]));
        assert!(is_lower_hex(&rim, digits), "{rim}");
        let plan = PlanBuilder::new()
            .zeros(0x8000_0000, image.len() as u64, cc_populate::Role::Ripas)
            .source(0x8000_0000, cc_populate::Role::Measured, &image)
            .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
            .unwrap();
        let rec = cca_backend::RecParams {
            pc: 0x8000_0000,
            gprs: [0; 8],
            runnable: true,
        };
        let want =
            cca_backend::measure(&plan, &cca_backend::RealmParams::new(algo, 40), &[rec]).unwrap();
        assert_eq!(rim, want.to_string());
    }
}

fn plan_prints_regions_roles_and_calls_and_json() {
    let out = ccpop(&["plan", "--platform", "snp", "--firmware", OVMF]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("plan (snp): "), "{stdout}");
    // The image ends at 4 GiB, measured, in one call; the CPUID and secrets pages have roles.
    assert!(
        stdout.contains(
            "0x0000000100000000)       2 MiB  measured    source        1  firmware image"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  cpuid  "), "{stdout}");
    assert!(stdout.contains("  secrets  "), "{stdout}");

    let out = ccpop(&["plan", "--platform", "tdx", "--firmware", OVMF, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["platform"], "tdx");
    let regions = v["regions"].as_array().unwrap();
    assert!(!regions.is_empty());
    let sum: u64 = regions.iter().map(|r| r["len"].as_u64().unwrap()).sum();
    assert_eq!(v["total_bytes"].as_u64(), Some(sum));
    let calls: u64 = regions.iter().map(|r| r["chunks"].as_u64().unwrap()).sum();
    assert_eq!(v["chunks"].as_u64(), Some(calls));
    assert!(regions.iter().any(|r| r["role"] == "measured"));
}

fn person_caused_errors_are_one_line_and_exit_2() {
    let missing = "/nonexistent/OVMF.fd";
    for args in [
        vec!["measure", "snp", "--firmware", missing],
        vec!["measure", "tdx", "--firmware", missing],
        vec!["plan", "--platform", "snp", "--firmware", missing],
    ] {
        let e = one_line_error(&ccpop(&args));
        assert_eq!(
            e,
            format!("ccpop: {missing}: No such file or directory (os error 2)")
        );
    }

    // An image with no metadata: named, one line.
    let junk = scratch("junk.fd", &vec![0x5au8; 8192]);
    let j = junk.to_str().unwrap();
    let e = one_line_error(&ccpop(&["measure", "snp", "--firmware", j]));
    assert!(e.starts_with(&format!("ccpop: {j}: ")), "{e}");
    let e = one_line_error(&ccpop(&["plan", "--platform", "tdx", "--firmware", j]));
    assert!(e.starts_with(&format!("ccpop: {j}: ")), "{e}");
    // CCA needs to be told where the image goes.
    let e = one_line_error(&ccpop(&["plan", "--platform", "cca", "--firmware", j]));
    assert!(e.contains("--load-gpa"), "{e}");
    let e = one_line_error(&ccpop(&[
        "measure",
        "cca",
        "--firmware",
        j,
        "--load-gpa",
        "0x1000",
        "--hash",
        "md5",
    ]));
    assert_eq!(e, "ccpop: --hash md5: unknown (known: sha256, sha512)");
    let _ = std::fs::remove_file(&junk);

    // An unknown platform is clap's usage error: exit 2, no panic.
    let out = ccpop(&["plan", "--platform", "sgx", "--firmware", missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'sgx'"));
}

fn measure_snp_refuses_a_vmsa_that_is_not_one_page() {
    let short = scratch("short-vmsa", &[0u8; 100]);
    let s = short.to_str().unwrap();
    let e = one_line_error(&ccpop(&["measure", "snp", "--firmware", OVMF, "--vmsa", s]));
    assert!(e.contains("exactly 4096 bytes"), "{e}");
    let _ = std::fs::remove_file(&short);
}

// ---- `measure snp` as `sev-snp-measure` -------------------------------------------------------

/// sev-snp-measure's AmdSev OVMF fixture (with a hashes table), in
/// `shared/fixtures/sev-snp-measure/` beside the repository (`$CCPOP_SSM_FIXTURES` overrides
/// the directory).
fn amdsev() -> PathBuf {
    std::env::var_os("CCPOP_SSM_FIXTURES")
        .map_or_else(
            || {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../../shared/fixtures/sev-snp-measure"
                ))
            },
            PathBuf::from,
        )
        .join("ovmf_AmdSev_suffix.bin")
}

/// [`amdsev`], as a need.
const NEEDS_AMDSEV: Need = Need::FileAt {
    path: amdsev,
    from: "virtee/sev-snp-measure's tests/fixtures, in shared/fixtures/sev-snp-measure beside \
           the repository or $CCPOP_SSM_FIXTURES",
};

/// The directory crates/sev-backend/tests/peer/setup.sh fills (`$CCPOP_PEER_DIR`, else
/// `/tmp/ccpop-peer`).
fn peer_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CCPOP_PEER_DIR").unwrap_or_else(|| "/tmp/ccpop-peer".into()))
}

fn peer_kernel() -> PathBuf {
    peer_dir().join("vmlinuz")
}

fn peer_initrd() -> PathBuf {
    peer_dir().join("initrd.img")
}

/// sev-snp-measure's console script, where pip puts scripts for this `python3`.
fn ssm_script() -> Result<PathBuf, String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let script = PathBuf::from(text(&out.stdout).trim()).join("sev-snp-measure");
    if script.exists() {
        Ok(script)
    } else {
        Err(format!("{} is missing", script.display()))
    }
}

const SETUP: &str = "bash crates/sev-backend/tests/peer/setup.sh [$CCPOP_PEER_DIR]";

/// What the comparisons with sev-snp-measure's command line need.
fn needs_peer() -> Vec<Need> {
    vec![
        Need::Tool {
            id: "script:sev-snp-measure",
            from: "sev-snp-measure 0.0.13 from PyPI: bash crates/sev-backend/tests/peer/setup.sh",
            check: || ssm_script().map(|_| ()),
        },
        Need::FileAt {
            path: peer_kernel,
            from: SETUP,
        },
        Need::FileAt {
            path: peer_initrd,
            from: SETUP,
        },
        NEEDS_OVMF,
        NEEDS_AMDSEV,
    ]
}

fn run_in(dir: &Path, program: &Path, args: &[String]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn measure_snp_command_lines_of_sev_snp_measure_give_its_digests() {
    let (ssm, dir) = (ssm_script().unwrap(), peer_dir());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let amd = amdsev().display().to_string();
    let kernel = dir.join("vmlinuz").display().to_string();
    let initrd = dir.join("initrd.img").display().to_string();
    let seed = last_line(&ccpop(&[
        "measure",
        "snp",
        "--ovmf",
        &amd,
        "--firmware-only",
    ]));
    // sev-snp-measure --mode snp:ovmf-hash prints the firmware pages' digest.
    let out = std::process::Command::new(&ssm)
        .args(["--mode", "snp:ovmf-hash", "--ovmf", &amd])
        .output()
        .unwrap();
    assert_eq!(last_line(&out), seed);
    let cases: Vec<Vec<String>> = vec![
        s(&["--ovmf", OVMF, "--vcpus", "4", "--vcpu-type", "EPYC-v4"]),
        s(&[
            "--ovmf",
            OVMF,
            "--vcpus",
            "2",
            "--vcpu-family",
            "25",
            "--vcpu-model",
            "17",
            "--vcpu-stepping",
            "1",
            "--guest-features",
            "0x21",
        ]),
        s(&[
            "--ovmf",
            OVMF,
            "--vcpus",
            "64",
            "--vmm-type",
            "ec2",
            "--output-format",
            "base64",
        ]),
        s(&[
            "--ovmf",
            &amd,
            "--vcpus",
            "1",
            "--vmm-type",
            "gce",
            "--vcpu-sig",
            "0xa00f11",
        ]),
        s(&[
            "--ovmf",
            &amd,
            "--vcpus",
            "64",
            "--vcpu-type",
            "EPYC-Milan",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--append",
            "console=ttyS0 ro",
        ]),
        s(&[
            "--ovmf",
            &amd,
            "--vcpus",
            "8",
            "--vcpu-type",
            "EPYC-Genoa",
            "--kernel",
            &kernel,
            "--snp-ovmf-hash",
            &seed,
            "--guest-features",
            "0x21",
        ]),
    ];
    for args in cases {
        let theirs_dir = scratch_dir(&format!("ssm-{}", args.len()));
        let ours_dir = scratch_dir(&format!("ours-{}", args.len()));
        let mut peer_args = s(&["--mode", "snp", "--dump-vmsa"]);
        peer_args.extend(args.iter().cloned());
        let mut our_args = s(&["measure", "snp", "--dump-vmsa"]);
        our_args.extend(args.iter().cloned());
        let want = last_line(&run_in(&theirs_dir, &ssm, &peer_args));
        let got = last_line(&run_in(
            &ours_dir,
            Path::new(env!("CARGO_BIN_EXE_ccpop")),
            &our_args,
        ));
        assert_eq!(got, want, "{args:?}");
        // --dump-vmsa: the same files, byte for byte.
        let n: usize = args[args.iter().position(|a| a == "--vcpus").unwrap() + 1]
            .parse()
            .unwrap();
        for i in 0..n {
            let f = format!("vmsa{i}.bin");
            assert_eq!(
                std::fs::read(ours_dir.join(&f)).unwrap(),
                std::fs::read(theirs_dir.join(&f)).unwrap(),
                "{f} of {args:?}"
            );
        }
        assert!(!ours_dir.join(format!("vmsa{n}.bin")).exists());
        let _ = std::fs::remove_dir_all(theirs_dir);
        let _ = std::fs::remove_dir_all(ours_dir);
    }
}

/// The fixture `amd` with its hashes table entry's size set to `size`.
fn amdsev_with_hashes_area_size(amd: &Path, size: u32) -> Vec<u8> {
    let mut img = std::fs::read(amd).unwrap();
    // SEV_HASH_TABLE_RV_GUID 7255371f-3a3b-4b04-927b-1da6efa8d454 in EFI byte order; its entry
    // is {u32 base, u32 size}, u16 length, GUID.
    let guid = [
        0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b, 0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4,
        0x54,
    ];
    let at = img.windows(16).position(|w| w == guid).unwrap();
    img[at - 6..at - 2].copy_from_slice(&size.to_le_bytes());
    img
}

fn measure_snp_bad_input_is_one_line_naming_the_flag_and_writes_nothing() {
    let amd_path = amdsev();
    let amd = amd_path.display().to_string();
    let out_dir = scratch_dir("bad-input-dump");
    let dump = out_dir.display().to_string();
    let dir = scratch_dir("bad-input");
    let folder = dir.display().to_string();
    let small = scratch(
        "small-hashes.fd",
        &amdsev_with_hashes_area_size(&amd_path, 0x10),
    );
    let small = small.display().to_string();
    // A kernel whose setup header (boot protocol 2.15) accepts 255 bytes of command line.
    let mut k = vec![0u8; 0x1000];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    k[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes());
    let kernel = scratch("kernel-255", &k);
    let kernel = kernel.display().to_string();
    let long = "x".repeat(256);
    let short_hash = "ab".repeat(47);
    let base = [
        "measure",
        "snp",
        "--ovmf",
        &amd,
        "--dump-vmsa",
        &dump,
        "--vcpus",
        "2",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--vcpu-type", "EPYC", "--kernel", "/nonexistent/vmlinuz"],
            "--kernel /nonexistent/vmlinuz: No such file",
        ),
        (
            vec!["--vcpu-type", "EPYC", "--kernel", &folder],
            "--kernel ",
        ),
        (
            vec![
                "--vcpu-type",
                "EPYC",
                "--kernel",
                &kernel,
                "--initrd",
                "/nonexistent/initrd",
            ],
            "--initrd /nonexistent/initrd: No such file",
        ),
        (
            vec![
                "--vcpu-type",
                "EPYC",
                "--svsm",
                "/nonexistent/svsm.bin",
                "--vars-size",
                "4096",
            ],
            "--svsm /nonexistent/svsm.bin: No such file",
        ),
        (
            vec!["--vcpu-type", "EPYC-Foo"],
            "--vcpu-type EPYC-Foo: unknown vCPU type (known: EPYC, ",
        ),
        (
            vec!["--vcpu-sig", "0x100000000"],
            "--vcpu-sig 0x100000000: does not fit",
        ),
        (
            vec![
                "--vcpu-family",
                "300",
                "--vcpu-model",
                "1",
                "--vcpu-stepping",
                "1",
            ],
            "--vcpu-family: family 300 does not fit",
        ),
        (
            vec![
                "--vcpu-family",
                "25",
                "--vcpu-model",
                "1",
                "--vcpu-stepping",
                "16",
            ],
            "--vcpu-stepping: stepping 16 does not fit",
        ),
        (vec!["--vcpu-type", "EPYC", "--vcpus", "0"], "--vcpus 0: "),
        (
            vec![
                "--vcpu-type",
                "EPYC",
                "--kernel",
                &kernel,
                "--append",
                &long,
            ],
            "--append: 256 bytes, the kernel's setup header (cmdline_size) accepts at most 255",
        ),
        (
            vec!["--vcpu-type", "EPYC", "--snp-ovmf-hash", &short_hash],
            "--snp-ovmf-hash: 94 hex digits, a SHA-384 digest has 96",
        ),
        (
            vec!["--vcpu-type", "EPYC", "--vmm-type", "kvmtool"],
            "--vmm-type: unknown VMM type \"kvmtool\"",
        ),
        (
            vec!["--vcpu-type", "EPYC", "--output-format", "b32"],
            "--output-format b32: unknown",
        ),
    ];
    for (extra, want) in &cases {
        let mut args: Vec<&str> = base.to_vec();
        if extra.contains(&"--vcpus") {
            args.truncate(6);
        }
        args.extend(extra);
        let e = one_line_error(&ccpop(&args));
        assert!(e.starts_with(&format!("ccpop: {want}")), "{args:?}: {e}");
    }
    // A firmware whose hashes area is too small for the table, and one with no hashes section.
    let e = one_line_error(&ccpop(&[
        "measure",
        "snp",
        "--ovmf",
        &small,
        "--dump-vmsa",
        &dump,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--kernel",
        &kernel,
    ]));
    assert!(e.starts_with("ccpop: --kernel: the firmware's hashes table area (base 0x810c00, size 0x10) is too small"), "{e}");
    let e = one_line_error(&ccpop(&[
        "measure",
        "snp",
        "--ovmf",
        OVMF,
        "--dump-vmsa",
        &dump,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--kernel",
        &kernel,
    ]));
    assert_eq!(
        e,
        "ccpop: --kernel: the firmware's SEV metadata has no SNP_KERNEL_HASHES section"
    );
    // Nothing was written.
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
    for d in [out_dir, dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn measure_snp_svsm_is_the_library_digest_and_vars_file_is_its_size() {
    let amd = amdsev();
    // An SVSM image: the AmdSev fixture page with its hashes table entry turned into the SVSM
    // information entry (SVSM_INFO_GUID a789a612-0597-4c4b-a49f-cbb1fe9d1ddd, entry at 0x100).
    let mut svsm = std::fs::read(amd).unwrap();
    let rv = [
        0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b, 0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4,
        0x54,
    ];
    let info = [
        0x12, 0xa6, 0x89, 0xa7, 0x97, 0x05, 0x4b, 0x4c, 0xa4, 0x9f, 0xcb, 0xb1, 0xfe, 0x9d, 0x1d,
        0xdd,
    ];
    let at = svsm.windows(16).position(|w| w == rv).unwrap();
    svsm[at..at + 16].copy_from_slice(&info);
    svsm[at - 10..at - 6].copy_from_slice(&0x100u32.to_le_bytes());
    let svsm_path = scratch("svsm.bin", &svsm);
    let vars = scratch("vars.fd", &vec![0u8; 0x84000]);
    let ovmf = std::fs::read(OVMF).unwrap();
    let lib = sev_backend::measure_snp_launch(&sev_backend::SnpLaunch {
        firmware: &ovmf,
        vcpus: Some(sev_backend::VcpuConfig {
            count: 3,
            signature: sev_backend::VcpuType::by_name("EPYC-v4")
                .unwrap()
                .signature(),
            ..Default::default()
        }),
        svsm: Some(sev_backend::SvsmLaunch {
            image: &svsm,
            vars_size: 0x84000,
        }),
        ..Default::default()
    })
    .unwrap();
    let run = |vars_flag: &str, vars_value: &str| {
        last_line(&ccpop(&[
            "measure",
            "snp",
            "--ovmf",
            OVMF,
            "--vcpus",
            "3",
            "--vcpu-type",
            "EPYC-v4",
            "--svsm",
            svsm_path.to_str().unwrap(),
            vars_flag,
            vars_value,
        ]))
    };
    assert_eq!(run("--vars-size", "540672"), hex(&lib.digest));
    assert_eq!(run("--vars-file", vars.to_str().unwrap()), hex(&lib.digest));
    // An SVSM launch without the variable store's size is refused on one line.
    let e = one_line_error(&ccpop(&[
        "measure",
        "snp",
        "--ovmf",
        OVMF,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--svsm",
        svsm_path.to_str().unwrap(),
    ]));
    assert_eq!(e, "ccpop: --svsm needs --vars-size N or --vars-file FILE");
    let _ = std::fs::remove_file(svsm_path);
    let _ = std::fs::remove_file(vars);
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(measure_snp_prints_the_library_digest_last, NEEDS_OVMF),
        gmem::kvm_test!(measure_snp_of_a_hand_checked_one_page_image),
        gmem::kvm_test!(
            measure_tdx_and_cca_print_the_library_digests_last,
            NEEDS_OVMF
        ),
        gmem::kvm_test!(plan_prints_regions_roles_and_calls_and_json, NEEDS_OVMF),
        gmem::kvm_test!(person_caused_errors_are_one_line_and_exit_2),
        gmem::kvm_test!(measure_snp_refuses_a_vmsa_that_is_not_one_page, NEEDS_OVMF),
        testing::Test::new(
            "measure_snp_command_lines_of_sev_snp_measure_give_its_digests",
            needs_peer(),
            measure_snp_command_lines_of_sev_snp_measure_give_its_digests,
        ),
        gmem::kvm_test!(
            measure_snp_bad_input_is_one_line_naming_the_flag_and_writes_nothing,
            NEEDS_AMDSEV,
            NEEDS_OVMF
        ),
        gmem::kvm_test!(
            measure_snp_svsm_is_the_library_digest_and_vars_file_is_its_size,
            NEEDS_OVMF,
            NEEDS_AMDSEV
        ),
    ])
}
