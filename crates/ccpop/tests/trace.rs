//! `ccpop measure ... --trace` and `ccpop diff`: a real launch changed in one byte, one flag or
//! the order of two regions, and the diff must name the step and address where it changed.
//! The expected step and address are worked out here from the change made (the byte's file
//! offset and where the firmware loads the file; the plan file's regions), and the traces are
//! read with serde_json, not with cc-image's reader. A test that needs Debian's OVMF and
//! cannot find it is reported ignored with a `SKIPPED [file:...]` line (gmem::testing).

mod common;

use std::path::{Path, PathBuf};

use common::{ccpop, scratch_dir, text};
use gmem::testing::{self, Need};
use serde_json::Value;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

const NEEDS_OVMF: Need = Need::File {
    path: OVMF,
    from: "Debian's ovmf package: apt-get install ovmf",
};

fn dir(name: &str) -> PathBuf {
    scratch_dir(&format!("trace-{name}"))
}

/// Runs `ccpop measure <args> --trace <to>`: the printed measurement (last line).
fn measure(args: &[&str], to: &Path) -> String {
    let mut all = vec!["measure".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(["--trace".to_string(), to.display().to_string()]);
    let out = ccpop(&all);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    stdout.lines().last().unwrap_or_default().to_string()
}

/// The trace's steps, read as plain JSON.
fn steps(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `ccpop measure snp --firmware <firmware>` with `vcpus` EPYC-Genoa vCPUs, traced to `to`.
fn snp_vcpus(firmware: &str, vcpus: &str, to: &Path) -> String {
    measure(
        &[
            "snp",
            "--firmware",
            firmware,
            "--vcpus",
            vcpus,
            "--vcpu-type",
            "EPYC-Genoa",
        ],
        to,
    )
}

/// `ccpop diff a b`: exit code and stdout.
fn diff(a: &Path, b: &Path) -> (Option<i32>, String) {
    let out = ccpop(&[std::ffi::OsStr::new("diff"), a.as_os_str(), b.as_os_str()]);
    (out.status.code(), text(&out.stdout))
}

/// `ccpop diff a b` must exit 1 and open with the first difference at `step` and `gpa`, then
/// `differs in: <what>`; the whole output, for further checks.
fn expect_diff(a: &Path, b: &Path, step: usize, gpa: &str, what: &str) -> String {
    let (code, out) = diff(a, b);
    assert_eq!(code, Some(1), "{out}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("first difference: step {step}, gpa {gpa}").as_str()),
        "{out}"
    );
    assert_eq!(
        lines.next(),
        Some(format!("  differs in: {what}").as_str()),
        "{out}"
    );
    out
}

/// Every step has the fields the format promises, numbered in order, and the last running
/// value is the measurement printed.
fn check_shape(t: &[Value], measurement: &str) {
    for (i, s) in t.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(i as u64), "{s}");
        for field in ["kind", "gpa", "digest", "from"] {
            assert!(s[field].is_string(), "step {i} lacks {field}: {s}");
        }
    }
    assert_eq!(t.last().unwrap()["digest"].as_str(), Some(measurement));
}

/// A copy of OVMF with one byte flipped at `at`.
fn flipped_ovmf(d: &Path, at: usize) -> PathBuf {
    let mut img = std::fs::read(OVMF).unwrap();
    img[at] ^= 0x5a;
    let p = d.join("flipped.fd");
    std::fs::write(&p, &img).unwrap();
    p
}

fn snp_one_byte_names_the_page() {
    let d = dir("snp-byte");
    let len = std::fs::metadata(OVMF).unwrap().len() as usize;
    // A byte in the middle of the image, away from the SEV metadata and GUID table at its end.
    let at = len / 2 + 0x123;
    let b = flipped_ovmf(&d, at);
    let (ta, tb) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let ma = snp_vcpus(OVMF, "2", &ta);
    let mb = snp_vcpus(b.to_str().unwrap(), "2", &tb);
    assert_ne!(ma, mb);
    check_shape(&steps(&ta), &ma);
    // QEMU loads the image to end at 4 GiB and measures it first, a page per step.
    let page = at & !0xfff;
    let gpa = (1u64 << 32) - len as u64 + page as u64;
    let out = expect_diff(&ta, &tb, at / 4096, &format!("{gpa:#x}"), "contents");
    assert!(
        out.contains(&format!("flipped.fd at offset {page:#x})")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{OVMF} at offset {page:#x})")),
        "{out}"
    );
    assert!(
        out.contains("later steps: the same (0 differ)"),
        "one byte changes one step's input: {out}"
    );
    // The same launch twice: equal, exit 0.
    let tc = d.join("c.jsonl");
    assert_eq!(snp_vcpus(OVMF, "2", &tc), ma);
    let (code, out) = diff(&ta, &tc);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), format!("equal: {} steps", steps(&ta).len()));
    let _ = std::fs::remove_dir_all(d);
}

fn snp_section_policy_flag_names_the_first_prevalidated_page() {
    let d = dir("snp-flag");
    let (ta, tb) = (d.join("qemu.jsonl"), d.join("gce.jsonl"));
    let ma = measure(&["snp", "--firmware", OVMF], &ta);
    measure(&["snp", "--firmware", OVMF, "--section-policy", "gce"], &tb);
    let a = steps(&ta);
    check_shape(&a, &ma);
    // QEMU measures pre-validated memory (SNP_SEC_MEM) as ZERO pages, GCE as UNMEASURED: the
    // first ZERO page of the QEMU launch is where the two part.
    let first_zero = a
        .iter()
        .position(|s| s["page_type"] == "PAGE_TYPE_ZERO")
        .expect("Debian's OVMF has pre-validated memory");
    let gpa = a[first_zero]["gpa"].as_str().unwrap();
    let out = expect_diff(&ta, &tb, first_zero, gpa, "page type");
    assert!(out.contains("a: PAGE_INFO PAGE_TYPE_ZERO"), "{out}");
    assert!(out.contains("b: PAGE_INFO PAGE_TYPE_UNMEASURED"), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

fn snp_vcpu_count_is_a_missing_step_at_the_end() {
    let d = dir("snp-vcpus");
    let (ta, tb) = (d.join("two.jsonl"), d.join("three.jsonl"));
    snp_vcpus(OVMF, "2", &ta);
    snp_vcpus(OVMF, "3", &tb);
    let n = steps(&ta).len();
    let (code, out) = diff(&ta, &tb);
    assert_eq!(code, Some(1), "{out}");
    // The third VMSA is measured after everything the two launches share, at KVM's VMSA GPA.
    assert_eq!(
        out.lines().next(),
        Some(format!("first difference: step {n}, gpa 0xfffffffff000").as_str())
    );
    assert!(out.contains("a: (trace ended)"), "{out}");
    assert!(out.contains("from VMSA of vCPU 2"), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

fn tdx_one_byte_names_the_chunk() {
    let d = dir("tdx-byte");
    let len = std::fs::metadata(OVMF).unwrap().len() as usize;
    let at = len / 2 + 0x123;
    let b = flipped_ovmf(&d, at);
    let (ta, tb) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let ma = measure(&["tdx", "--firmware", OVMF], &ta);
    let mb = measure(&["tdx", "--firmware", b.to_str().unwrap()], &tb);
    assert_ne!(ma, mb, "the byte lies in a measured TDVF section");
    let a = steps(&ta);
    check_shape(&a, &ma);
    // TDVF's measured (BFV) section is the image's bytes at the same place as loaded below
    // 4 GiB; MR.EXTEND measures 256-byte chunks.
    let chunk = at & !0xff;
    let gpa = format!("{:#x}", (1u64 << 32) - len as u64 + chunk as u64);
    let step = a
        .iter()
        .position(|s| s["kind"] == "MR.EXTEND" && s["gpa"] == gpa.as_str())
        .expect("an MR.EXTEND of that chunk");
    assert_eq!(
        a[step]["offset"].as_str(),
        Some(format!("{chunk:#x}").as_str())
    );
    let out = expect_diff(&ta, &tb, step, &gpa, "contents");
    assert!(out.contains("a: MR.EXTEND gpa"), "{out}");
    assert!(out.contains("later steps: the same (0 differ)"), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

/// A CCA plan file with the kernel and initrd regions in the given order.
fn cca_plan(d: &Path, name: &str, kernel_first: bool) -> PathBuf {
    let kernel =
        r#"{ "gpa": "0x80000", "size": "0x2000", "role": "measured", "file": "kernel.bin" }"#;
    let initrd =
        r#"{ "gpa": "0x100000", "size": "0x1000", "role": "measured", "file": "initrd.bin" }"#;
    let (x, y) = if kernel_first {
        (kernel, initrd)
    } else {
        (initrd, kernel)
    };
    let p = d.join(name);
    std::fs::write(
        &p,
        format!(
            r#"{{ "version": 1, "platform": "cca", "regions": [
                {{ "gpa": 0, "size": "0x40000000", "role": "ripas" }}, {x}, {y} ],
              "cca": {{ "hash": "sha256", "ipa_bits": 40, "lpa2": false, "num_bps": 2,
                       "num_wps": 2, "sve_vl": 0, "pmu_counters": null, "rmm": "2.0",
                       "recs": [ {{ "pc": "0x80000", "gprs": [0, 0, 0, 0, 0, 0, 0, 0],
                                   "runnable": true }} ] }} }}"#
        ),
    )
    .unwrap();
    p
}

fn cca_region_order_and_one_byte() {
    let d = dir("cca");
    std::fs::write(d.join("kernel.bin"), vec![0x11u8; 0x2000]).unwrap();
    std::fs::write(d.join("initrd.bin"), vec![0x22u8; 0x1000]).unwrap();
    let (pa, pb) = (cca_plan(&d, "a.json", true), cca_plan(&d, "b.json", false));
    let (ta, tb) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let ma = measure(&["cca", "--plan", pa.to_str().unwrap()], &ta);
    measure(&["cca", "--plan", pb.to_str().unwrap()], &tb);
    let a = steps(&ta);
    check_shape(&a, &ma);
    // RMM 2.0: REALM_CREATE, the three data granules, the runnable REC; RIPAS unmeasured.
    let kinds: Vec<&str> = a.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["REALM_CREATE", "DATA", "DATA", "DATA", "REC"]);
    // Step 0 is REALM_CREATE; the first data granule is the kernel's in a, the initrd's in b.
    let out = expect_diff(&ta, &tb, 1, "0x80000", "address, contents");
    assert!(
        out.contains("the rest is changed content, not a shift"),
        "{out}"
    );

    // One byte of the initrd: its one granule, the last DATA step.
    let tc = d.join("c.jsonl");
    std::fs::write(d.join("initrd.bin"), {
        let mut v = vec![0x22u8; 0x1000];
        v[0x800] = 0;
        v
    })
    .unwrap();
    measure(&["cca", "--plan", pa.to_str().unwrap()], &tc);
    let (code, out) = diff(&ta, &tc);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out.lines().next(),
        Some("first difference: step 3, gpa 0x100000")
    );
    assert!(out.contains("later steps: the same (0 differ)"), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

/// The library's trace of a plan file, written by cc-image, is the CLI's, byte for byte.
fn library_and_cli_traces_are_identical() {
    let d = dir("lib");
    std::fs::write(d.join("kernel.bin"), vec![0x11u8; 0x2000]).unwrap();
    std::fs::write(d.join("initrd.bin"), vec![0x22u8; 0x1000]).unwrap();
    std::fs::write(d.join("fw.bin"), vec![0xf4u8; 0x2000]).unwrap();
    let snp = d.join("snp.json");
    std::fs::write(
        &snp,
        r#"{ "version": 1, "platform": "snp", "regions": [
            { "gpa": "0xffffe000", "size": "0x2000", "role": "measured", "file": "fw.bin" },
            { "gpa": "0x800000", "size": "0x3000", "role": "zero" },
            { "gpa": "0x803000", "size": "0x1000", "role": "secrets" } ] }"#,
    )
    .unwrap();
    let tdx = d.join("tdx.json");
    std::fs::write(
        &tdx,
        r#"{ "version": 1, "platform": "tdx", "regions": [
            { "gpa": "0xffffe000", "size": "0x2000", "role": "measured", "file": "fw.bin" },
            { "gpa": "0x800000", "size": "0x2000", "role": "zero" } ] }"#,
    )
    .unwrap();
    let cca = cca_plan(&d, "cca.json", true);
    for (platform, plan) in [("snp", &snp), ("tdx", &tdx), ("cca", &cca)] {
        let cli = d.join(format!("{platform}-cli.jsonl"));
        measure(&[platform, "--plan", plan.to_str().unwrap()], &cli);
        let image = cc_image::load_plan_file(plan).unwrap();
        let mut lib = Vec::new();
        cc_image::trace::write_jsonl(&image.trace(None).unwrap(), &mut lib).unwrap();
        assert_eq!(
            text(&lib),
            std::fs::read_to_string(&cli).unwrap(),
            "{platform}"
        );
        assert!(!lib.is_empty(), "{platform}");
    }
    let _ = std::fs::remove_dir_all(d);
}

fn bad_trace_input_exits_2_naming_the_line() {
    let d = dir("bad");
    let good = d.join("good.jsonl");
    std::fs::write(
        &good,
        r#"{"step":0,"kind":"PAGE.ADD","gpa":"0x0","digest":"00","from":"x"}"#,
    )
    .unwrap();
    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"step\":0}\nnot json\n").unwrap();
    let out = ccpop(&[
        std::ffi::OsStr::new("diff"),
        good.as_os_str(),
        bad.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(
        e.starts_with(&format!(
            "ccpop: {}: line 1: not a trace step:",
            bad.display()
        )),
        "{e}"
    );
    let missing = d.join("missing.jsonl");
    let out = ccpop(&[
        std::ffi::OsStr::new("diff"),
        good.as_os_str(),
        missing.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(d);
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(snp_one_byte_names_the_page, NEEDS_OVMF),
        gmem::kvm_test!(
            snp_section_policy_flag_names_the_first_prevalidated_page,
            NEEDS_OVMF
        ),
        gmem::kvm_test!(snp_vcpu_count_is_a_missing_step_at_the_end, NEEDS_OVMF),
        gmem::kvm_test!(tdx_one_byte_names_the_chunk, NEEDS_OVMF),
        gmem::kvm_test!(cca_region_order_and_one_byte),
        gmem::kvm_test!(library_and_cli_traces_are_identical),
        gmem::kvm_test!(bad_trace_input_exits_2_naming_the_line),
    ])
}
