//! Attestation reports read and checked, and ID blocks built and signed, against independent
//! implementations: reports are encoded by the `sev` crate (virtee) and read back here; ID
//! blocks are compared with sev-snp-measure's `snp-create-id-block` (a test that cannot run it
//! is reported ignored with a `SKIPPED [python:sevsnpmeasure]` line), and the layouts with
//! offsets written out from the SEV-SNP firmware ABI specification.

mod needs;

use gmem::testing::{self, Need};
use p384::ecdsa::SigningKey;
use sev::parser::ByteParser;
use sev_backend::id_block::{self, check_finish, id_auth, FinishRefusal, IdBlock};
use sev_backend::report::{AttestationReport, ExpectedLaunch, REPORT_SIZE};

/// A report as the `sev` crate encodes it, with every launch field set to something distinct.
fn sev_crate_report() -> Vec<u8> {
    use sev::firmware::guest::{AttestationReport as Peer, GuestPolicy, KeyInfo};
    let peer = Peer {
        version: 3,
        guest_svn: 7,
        policy: GuestPolicy::from(0x3_0000u64),
        family_id: [0x11; 16],
        image_id: [0x22; 16],
        vmpl: 1,
        sig_algo: 1,
        key_info: KeyInfo::from(1u32),
        report_data: [0x33; 64],
        measurement: [0x44; 48],
        host_data: [0x55; 32],
        id_key_digest: [0x66; 48],
        author_key_digest: [0x77; 48],
        chip_id: [0x88; 64],
        cpuid_fam_id: Some(0x19),
        cpuid_mod_id: Some(0x11),
        cpuid_step: Some(1),
        ..Peer::default()
    };
    peer.to_bytes().expect("the sev crate encodes it").to_vec()
}

fn expected() -> ExpectedLaunch {
    ExpectedLaunch {
        measurement: [0x44; 48],
        policy: Some(0x3_0000),
        family_id: Some([0x11; 16]),
        image_id: Some([0x22; 16]),
        host_data: Some([0x55; 32]),
        id_key_digest: Some([0x66; 48]),
        author_key_digest: Some([0x77; 48]),
    }
}

fn report_fields_are_where_the_sev_crate_puts_them() {
    let bytes = sev_crate_report();
    assert_eq!(bytes.len(), REPORT_SIZE);
    let r = AttestationReport::parse(&bytes).unwrap();
    assert_eq!(
        (r.version, r.guest_svn, r.policy, r.vmpl, r.signature_algo),
        (3, 7, 0x3_0000, 1, 1)
    );
    assert_eq!((r.family_id, r.image_id), ([0x11; 16], [0x22; 16]));
    assert!(r.author_key_en);
    assert_eq!(r.report_data, [0x33; 64]);
    assert_eq!(r.measurement, [0x44; 48]);
    assert_eq!(r.host_data, [0x55; 32]);
    assert_eq!(
        (r.id_key_digest, r.author_key_digest),
        ([0x66; 48], [0x77; 48])
    );
    // A short buffer is refused, naming the size.
    let e = AttestationReport::parse(&bytes[..0x2a0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SNP attestation report: 672 bytes; an ATTESTATION_REPORT has 0x4a0"
    );
}

fn check_names_the_first_field_that_differs() {
    let r = AttestationReport::parse(&sev_crate_report()).unwrap();
    assert_eq!(r.check(&expected()), Ok(()));
    // Only the measurement asked for: the other fields do not matter.
    assert_eq!(r.check(&ExpectedLaunch::new([0x44; 48])), Ok(()));
    type Change = fn(&mut ExpectedLaunch);
    let cases: [(&str, Change); 7] = [
        ("MEASUREMENT", |e| e.measurement[47] ^= 1),
        ("POLICY", |e| e.policy = Some(0x1_0000)),
        ("FAMILY_ID", |e| e.family_id = Some([0; 16])),
        ("IMAGE_ID", |e| e.image_id = Some([0; 16])),
        ("HOST_DATA", |e| e.host_data = Some([0; 32])),
        ("ID_KEY_DIGEST", |e| e.id_key_digest = Some([0; 48])),
        ("AUTHOR_KEY_DIGEST", |e| e.author_key_digest = Some([0; 48])),
    ];
    for (field, change) in cases {
        let mut want = expected();
        change(&mut want);
        let m = r.check(&want).unwrap_err();
        assert_eq!(m.field, field);
        if field == "POLICY" {
            assert_eq!((m.got.as_str(), m.want.as_str()), ("0x30000", "0x10000"));
        }
    }
    // Two fields wrong: the measurement is named first.
    let mut want = expected();
    want.measurement = [0; 48];
    want.host_data = Some([0; 32]);
    let m = r.check(&want).unwrap_err();
    assert_eq!(m.field, "MEASUREMENT");
    assert!(m.to_string().starts_with(&format!(
        "MEASUREMENT: the report has {}, expected {}",
        "44".repeat(48),
        "00".repeat(48)
    )));
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 48]).unwrap()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn id_block_layout_is_the_firmwares() {
    let mut block = IdBlock::new([0xab; 48], 0x3_0000);
    block.family_id = [1; 16];
    block.image_id = [2; 16];
    block.guest_svn = 9;
    let b = block.to_bytes();
    // ID_BLOCK: LD 0x00, FAMILY_ID 0x30, IMAGE_ID 0x40, VERSION 0x50, GUEST_SVN 0x54, POLICY 0x58.
    assert_eq!(&b[0x00..0x30], &[0xab; 48]);
    assert_eq!(&b[0x30..0x40], &[1; 16]);
    assert_eq!(&b[0x40..0x50], &[2; 16]);
    assert_eq!((u32_at(&b, 0x50), u32_at(&b, 0x54)), (1, 9));
    assert_eq!(&b[0x58..0x60], &0x3_0000u64.to_le_bytes());
    assert_eq!(IdBlock::from_bytes(&b), block);

    let (id, author) = (key(7), key(9));
    let a = id_auth(&block, &id, Some(&author));
    // ID_AUTH_INFO: algorithms at 0x000 and 0x004 (1: ECDSA P-384 SHA-384); ID_KEY at 0x240 and
    // AUTHOR_KEY at 0x880, each CURVE (2) then QX, QY (72 bytes, little endian).
    assert_eq!((u32_at(&a, 0), u32_at(&a, 4)), (1, 1));
    let point = id.verifying_key().to_encoded_point(false);
    let mut qx: Vec<u8> = point.x().unwrap().to_vec();
    qx.reverse();
    assert_eq!(u32_at(&a, 0x240), 2);
    assert_eq!(&a[0x244..0x244 + 48], &qx[..]);
    assert_eq!(&a[0x244 + 48..0x244 + 72], &[0; 24]);
    assert!(a[0x644..0x680].iter().all(|&x| x == 0));
    assert!(a[0xc84..].iter().all(|&x| x == 0));
    // The report's key digests are SHA-384 of the 0x404-byte key structures.
    let (id_digest, author_digest) = id_block::report_key_digests(&a);
    let sha = |b: &[u8]| -> [u8; 48] { <sha2::Sha384 as sha2::Digest>::digest(b).into() };
    assert_eq!(id_digest, sha(&a[0x240..0x644]));
    assert_eq!(author_digest, Some(sha(&a[0x880..0xc84])));
    assert_eq!(id_digest, id_block::key_digest(id.verifying_key()));
    // Without an author key: no AUTH_KEY_ALGO, no author fields, no author digest.
    let plain = id_auth(&block, &id, None);
    assert_eq!(u32_at(&plain, 4), 0);
    assert!(plain[0x680..].iter().all(|&x| x == 0));
    assert_eq!(id_block::report_key_digests(&plain).1, None);
}

fn check_finish_answers_as_the_firmware() {
    let block = IdBlock::new([0xab; 48], 0x3_0000);
    let bytes = block.to_bytes();
    let auth = id_auth(&block, &key(7), Some(&key(9)));
    assert_eq!(check_finish(&bytes, &auth, &[0xab; 48], 0x3_0000), Ok(()));
    // AMDSEV issue 195: an ID block whose digest is not the launch's.
    let e = check_finish(&bytes, &auth, &[0xcd; 48], 0x3_0000).unwrap_err();
    assert_eq!(
        e,
        FinishRefusal::BadMeasurement {
            id_block: [0xab; 48],
            launch: [0xcd; 48]
        }
    );
    assert_eq!(e.status(), 0x0b);
    assert_eq!(
        sev_backend::fw_error_name(e.status()),
        "SEV_RET_BAD_MEASUREMENT"
    );
    let e = check_finish(&bytes, &auth, &[0xab; 48], 0x1_0000).unwrap_err();
    assert_eq!(
        sev_backend::fw_error_name(e.status()),
        "SEV_RET_POLICY_FAILURE"
    );
    // A changed ID block no longer matches its signature; nor a changed ID key its author's.
    let mut other = bytes;
    other[0x54] = 1;
    let e = check_finish(&other, &auth, &[0xab; 48], 0x3_0000).unwrap_err();
    assert_eq!(
        e,
        FinishRefusal::BadSignature {
            which: "ID_BLOCK_SIG"
        }
    );
    let mut swapped = auth;
    let other_author = id_auth(&block, &key(7), Some(&key(11)));
    swapped[0x880..0xc84].copy_from_slice(&other_author[0x880..0xc84]);
    let e = check_finish(&bytes, &swapped, &[0xab; 48], 0x3_0000).unwrap_err();
    assert_eq!(
        e,
        FinishRefusal::BadSignature {
            which: "ID_KEY_SIG"
        }
    );
    let mut bad_curve = auth;
    bad_curve[0x240] = 3;
    let e = check_finish(&bytes, &bad_curve, &[0xab; 48], 0x3_0000).unwrap_err();
    assert_eq!(e, FinishRefusal::BadKey { which: "ID_KEY" });
}

fn pem_keys_of_either_encoding_are_read() {
    use p384::pkcs8::{EncodePrivateKey, LineEnding};
    let secret = p384::SecretKey::from_slice(&[7u8; 48]).unwrap();
    let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
    let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    for pem in [sec1.as_str(), pkcs8.as_str()] {
        let k = id_block::signing_key_from_pem(pem).unwrap();
        assert_eq!(k.verifying_key(), key(7).verifying_key());
    }
    let e = id_block::signing_key_from_pem("-----BEGIN NONSENSE-----").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("SNP ID block: not an ECDSA P-384 private key in PEM"),
        "{e}"
    );
}

fn b64(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = alphabet.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn id_block_equals_sev_snp_measure() {
    let dir = std::env::temp_dir().join(format!("sev-backend-idblock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Keys made by the peer's own library (`cryptography`), in the SEC1 PEM that
    // `openssl ecparam -genkey -name secp384r1` writes too.
    let write_key = |name: &str| {
        let p = dir.join(name);
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; from cryptography.hazmat.primitives.asymmetric import ec; \
                 from cryptography.hazmat.primitives import serialization as s; \
                 k = ec.generate_private_key(ec.SECP384R1()); \
                 open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, \
                 s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()))",
            ])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    };
    let (id_pem, author_pem) = (write_key("id.pem"), write_key("author.pem"));
    let read_key = |p: &std::path::Path| {
        id_block::signing_key_from_pem(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (id_key, author_key) = (read_key(&id_pem), read_key(&author_pem));
    let ld = [0x5au8; 48];
    let ld_b64 = {
        // The peer takes the measurement in base64; written out here.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        ld.chunks(3)
            .flat_map(|c| {
                let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
                (0..4).map(move |k| alphabet[((n >> (18 - 6 * k)) & 63) as usize] as char)
            })
            .collect::<String>()
    };
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; from sevsnpmeasure.id_block import snp_calc_id_block; \
             import base64; print(snp_calc_id_block(base64.b64decode(sys.argv[1]), sys.argv[2], sys.argv[3]))",
            &ld_b64,
            id_pem.to_str().unwrap(),
            author_pem.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> Vec<u8> {
        let at = text
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {text}"))
            + name.len();
        let rest = &text[at..];
        let end = rest.find([',', '\n']).unwrap_or(rest.len());
        b64(rest[..end].trim())
    };
    let (peer_block, peer_auth) = (field("id-block="), field("id-auth="));
    let (peer_id_digest, peer_author_digest) = (field("id_key_hash: "), field("author_key: "));

    // The peer fixes the policy at 0x30000 and the IDs and SVN at zero.
    let block = IdBlock::new(ld, 0x3_0000);
    let ours = id_auth(&block, &id_key, Some(&author_key));
    assert_eq!(peer_block, block.to_bytes());
    let peer_auth: [u8; 4096] = peer_auth.try_into().unwrap();
    // Everything but the two signatures is the same byte for byte.
    let unsigned = |a: &[u8; 4096]| {
        let mut a = *a;
        a[0x040..0x240].fill(0);
        a[0x680..0x880].fill(0);
        a
    };
    assert_eq!(unsigned(&peer_auth), unsigned(&ours));
    let (id_digest, author_digest) = id_block::report_key_digests(&ours);
    assert_eq!(peer_id_digest, id_digest);
    assert_eq!(
        Some(&peer_author_digest[..]),
        author_digest.as_ref().map(|d| &d[..])
    );
    // ECDSA signatures differ run to run: the peer's verify here...
    assert_eq!(
        check_finish(&block.to_bytes(), &peer_auth, &ld, 0x3_0000),
        Ok(())
    );
    // ... and ours verify in the peer's library (`cryptography`, the same public keys).
    let auth_path = dir.join("ours.auth");
    std::fs::write(&auth_path, ours).unwrap();
    let block_path = dir.join("ours.block");
    std::fs::write(&block_path, block.to_bytes()).unwrap();
    let verify = std::process::Command::new("python3")
        .args([
            "-c",
            r#"
import sys
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives import hashes
a = open(sys.argv[1], 'rb').read(); blk = open(sys.argv[2], 'rb').read()
def key(at):
    x = int.from_bytes(a[at+4:at+76], 'little'); y = int.from_bytes(a[at+76:at+148], 'little')
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
def sig(at):
    r = int.from_bytes(a[at:at+72], 'little'); s = int.from_bytes(a[at+72:at+144], 'little')
    return utils.encode_dss_signature(r, s)
key(0x240).verify(sig(0x040), blk, ec.ECDSA(hashes.SHA384()))
key(0x880).verify(sig(0x680), a[0x240:0x644], ec.ECDSA(hashes.SHA384()))
print("verified")
"#,
            auth_path.to_str().unwrap(),
            block_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&verify.stdout).trim(),
        "verified",
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() -> std::process::ExitCode {
    let peer: Vec<Need> = vec![needs::SEV_SNP_MEASURE];
    testing::run(vec![
        gmem::kvm_test!(report_fields_are_where_the_sev_crate_puts_them),
        gmem::kvm_test!(check_names_the_first_field_that_differs),
        gmem::kvm_test!(id_block_layout_is_the_firmwares),
        gmem::kvm_test!(check_finish_answers_as_the_firmware),
        gmem::kvm_test!(pem_keys_of_either_encoding_are_read),
        testing::Test::new(
            "id_block_equals_sev_snp_measure",
            peer,
            id_block_equals_sev_snp_measure,
        ),
    ])
}
