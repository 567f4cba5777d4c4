//! `ccpop check` and `ccpop id-block` on launches measured by `ccpop measure`: a report, quote
//! or token built here from the published formats (offsets and CBOR written out in this file)
//! with the measured value matches, and with any other value names the field. A test that
//! needs Debian's OVMF and cannot find it is reported ignored (gmem::testing).

mod common;

use std::path::{Path, PathBuf};

use common::{ccpop, last_line, scratch_dir, text};
use gmem::testing::{self, Need};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

const NEEDS_OVMF: Need = Need::File {
    path: OVMF,
    from: "Debian's ovmf package: apt-get install ovmf",
};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn write(d: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `ccpop check ...`: exit code and stdout.
fn check(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["check"];
    all.extend(args);
    let out = ccpop(&all);
    (out.status.code(), text(&out.stdout))
}

/// An SNP ATTESTATION_REPORT (SEV-SNP firmware ABI): VERSION 0x000, POLICY 0x008,
/// MEASUREMENT 0x090, HOST_DATA 0x0c0; 0x4a0 bytes.
fn snp_report(measurement: &[u8], policy: u64, host_data: [u8; 32]) -> Vec<u8> {
    let mut r = vec![0u8; 0x4a0];
    r[0..4].copy_from_slice(&3u32.to_le_bytes());
    r[0x08..0x10].copy_from_slice(&policy.to_le_bytes());
    r[0x90..0xc0].copy_from_slice(measurement);
    r[0xc0..0xe0].copy_from_slice(&host_data);
    r
}

fn snp_report_matches_the_measured_launch_only() {
    let d = scratch_dir("check-snp");
    let m = last_line(&ccpop(&["measure", "snp", "--firmware", OVMF]));
    let good = write(&d, "good.bin", &snp_report(&unhex(&m), 0x3_0000, [7; 32]));
    let (code, out) = check(&[
        "snp",
        "--report",
        good.to_str().unwrap(),
        "--measurement",
        &m,
        "--policy",
        "0x30000",
        "--host-data",
        &"07".repeat(32),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "match: MEASUREMENT, POLICY, HOST_DATA");
    // The same report against a launch with two vCPUs: the measurement differs.
    let two = last_line(&ccpop(&[
        "measure",
        "snp",
        "--firmware",
        OVMF,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Genoa",
    ]));
    let (code, out) = check(&[
        "snp",
        "--report",
        good.to_str().unwrap(),
        "--measurement",
        &two,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!(
            "mismatch: MEASUREMENT: the report has {m}, expected {two}"
        )),
        "{out}"
    );
    // The right launch, another policy.
    let (code, out) = check(&[
        "snp",
        "--report",
        good.to_str().unwrap(),
        "--measurement",
        &m,
        "--policy",
        "0x10000",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("mismatch: POLICY: the report has 0x30000, expected 0x10000"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(d);
}

/// An ECDSA P-384 key as PEM, from a fixed scalar.
fn pem_key(d: &Path, name: &str, seed: u8) -> PathBuf {
    let pem = p384::SecretKey::from_slice(&[seed; 48])
        .unwrap()
        .to_sec1_pem(p384::pkcs8::LineEnding::LF)
        .unwrap();
    write(d, name, pem.as_bytes())
}

fn id_block_for_the_launch_passes_finish_and_for_another_is_bad_measurement() {
    let d = scratch_dir("check-idblock");
    let m = last_line(&ccpop(&["measure", "snp", "--firmware", OVMF]));
    let (id, author) = (pem_key(&d, "id.pem", 3), pem_key(&d, "author.pem", 5));
    let out = ccpop(&[
        "id-block",
        "--measurement",
        &m,
        "--id-key",
        id.to_str().unwrap(),
        "--author-key",
        author.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let first = stdout.lines().next().unwrap();
    let fields: Vec<&str> = first.split(',').collect();
    assert_eq!(fields.len(), 3, "{first}");
    let block = fields[0].strip_prefix("id-block=").unwrap();
    let auth = fields[1].strip_prefix("id-auth=").unwrap();
    assert_eq!(fields[2], "author-key-enabled=on");
    assert!(stdout.contains("\nid-key-digest: "), "{stdout}");
    assert!(stdout.contains("\nauthor-key-digest: "), "{stdout}");
    let finish = |measurement: &str, policy: &str| {
        check(&[
            "snp",
            "--id-block",
            block,
            "--id-auth",
            auth,
            "--measurement",
            measurement,
            "--policy",
            policy,
        ])
    };
    let (code, out) = finish(&m, "0x30000");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("match: ID_BLOCK_SIG, ID_KEY_SIG, LD, POLICY"),
        "{out}"
    );
    // AMDSEV issue 195: an ID block made for another launch.
    let other = "ab".repeat(48);
    let (code, out) = finish(&other, "0x30000");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!(
            "mismatch: SNP_LAUNCH_FINISH would fail: the ID block's digest {m} is not the \
             launch digest {other} (BAD_MEASUREMENT"
        )),
        "{out}"
    );
    let (code, out) = finish(&m, "0x10000");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("(POLICY_FAILURE)"), "{out}");
    let _ = std::fs::remove_dir_all(d);
}

/// A version 4 TDX quote (DCAP Quoting Library API): header version 4, tee_type 0x81; body at
/// 48 with MRTD at 136, TDATTRIBUTES at 120.
fn tdx_quote(mrtd: &[u8]) -> Vec<u8> {
    let mut q = vec![0u8; 48 + 584 + 4];
    q[0..2].copy_from_slice(&4u16.to_le_bytes());
    q[4..8].copy_from_slice(&0x81u32.to_le_bytes());
    q[48 + 120..48 + 128].copy_from_slice(&0x1000_0000u64.to_le_bytes());
    q[48 + 136..48 + 184].copy_from_slice(mrtd);
    q
}

fn tdx_quote_matches_the_measured_td_only() {
    let d = scratch_dir("check-tdx");
    let m = last_line(&ccpop(&["measure", "tdx", "--firmware", OVMF]));
    let quote = write(&d, "quote.bin", &tdx_quote(&unhex(&m)));
    let q = quote.to_str().unwrap();
    let (code, out) = check(&[
        "tdx",
        "--quote",
        q,
        "--mrtd",
        &m,
        "--td-attributes",
        "0x10000000",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.trim(),
        "quote version 4, TDX 1.0 body\nmatch: MRTD, TDATTRIBUTES"
    );
    let (code, out) = check(&["tdx", "--quote", q, "--mrtd", &"00".repeat(48)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("mismatch: MRTD: the quote has "), "{out}");
    let (code, out) = check(&["tdx", "--quote", q, "--mrtd", &m, "--td-attributes", "0"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("mismatch: TDATTRIBUTES: the quote has 0x10000000, expected 0x0"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(d);
}

/// CBOR by hand (RFC 8949): a head of major type `major` with argument `n`.
fn head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        _ => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
    }
}

fn bstr(b: &[u8]) -> Vec<u8> {
    [head(2, b.len() as u64), b.to_vec()].concat()
}

/// A CCA token: tag 399 {44241: realm COSE_Sign1 (tag 18) whose payload has the RIM (44238),
/// the hash algorithm (44236), the challenge (10) and the personalization value (44235)}.
fn cca_token(rim: &[u8]) -> Vec<u8> {
    let mut payload = head(5, 4);
    payload.extend(head(0, 10));
    payload.extend(bstr(&[1; 64]));
    payload.extend(head(0, 44235));
    payload.extend(bstr(&[2; 64]));
    payload.extend(head(0, 44236));
    payload.extend([head(3, 7), b"sha-256".to_vec()].concat());
    payload.extend(head(0, 44238));
    payload.extend(bstr(rim));
    let mut sign1 = head(6, 18);
    sign1.extend(head(4, 4));
    sign1.extend(bstr(&[]));
    sign1.extend(head(5, 0));
    sign1.extend(bstr(&payload));
    sign1.extend(bstr(&[0; 96]));
    let mut token = head(6, 399);
    token.extend(head(5, 1));
    token.extend(head(0, 44241));
    token.extend(bstr(&sign1));
    token
}

fn cca_token_matches_the_measured_realm_only() {
    let d = scratch_dir("check-cca");
    let image = write(&d, "fw.bin", &[0x90u8; 8192]);
    let m = last_line(&ccpop(&[
        "measure",
        "cca",
        "--firmware",
        image.to_str().unwrap(),
        "--load-gpa",
        "0x80000",
    ]));
    let token = write(&d, "token.cbor", &cca_token(&unhex(&m)));
    let t = token.to_str().unwrap();
    let rpv = "02".repeat(64);
    let (code, out) = check(&[
        "cca", "--token", t, "--rim", &m, "--hash", "sha256", "--rpv", &rpv,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.trim(),
        "match: realm hash algorithm, realm initial measurement, realm personalization value"
    );
    let (code, out) = check(&["cca", "--token", t, "--rim", &"00".repeat(32)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!(
            "mismatch: realm initial measurement: the token has {m}"
        )),
        "{out}"
    );
    let (code, out) = check(&["cca", "--token", t, "--rim", &m, "--hash", "sha512"]);
    assert_eq!(code, Some(2), "a 32-byte RIM is not a sha512 one: {out}");
    let _ = std::fs::remove_dir_all(d);
}

fn bad_input_is_one_line_exit_2() {
    let d = scratch_dir("check-bad");
    let short = write(&d, "short.bin", &[0u8; 100]);
    let out = ccpop(&[
        "check",
        "snp",
        "--report",
        short.to_str().unwrap(),
        "--measurement",
        &"00".repeat(48),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "ccpop: {}: SNP attestation report: 100 bytes; an ATTESTATION_REPORT has 0x4a0",
            short.display()
        )
    );
    let out = ccpop(&[
        "check",
        "tdx",
        "--quote",
        short.to_str().unwrap(),
        "--mrtd",
        "00",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "ccpop: --mrtd 00: not 48 bytes of hex (96 digits)"
    );
    let _ = std::fs::remove_dir_all(d);
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(snp_report_matches_the_measured_launch_only, NEEDS_OVMF),
        gmem::kvm_test!(
            id_block_for_the_launch_passes_finish_and_for_another_is_bad_measurement,
            NEEDS_OVMF
        ),
        gmem::kvm_test!(tdx_quote_matches_the_measured_td_only, NEEDS_OVMF),
        gmem::kvm_test!(cca_token_matches_the_measured_realm_only),
        gmem::kvm_test!(bad_input_is_one_line_exit_2),
    ])
}
