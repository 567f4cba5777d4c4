//! `ccpop check` (what the hardware signed against an expected launch) and `ccpop id-block`.
//!
//! Parsing only: signatures and certificate chains of reports, quotes and tokens are not
//! verified here (verify them first); ID blocks are signed and their signatures checked.

use std::path::Path;

use crate::error::Error;
use crate::firmware::{base64, hex, read};

/// `bytes` of exactly `len` from hex (`0x` optional, either case), naming `flag` on refusal.
pub fn unhex(flag: &str, s: &str, len: usize) -> Result<Vec<u8>, Error> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    let bad = || {
        Error::Usage(format!(
            "{flag} {s}: not {len} bytes of hex ({} digits)",
            2 * len
        ))
    };
    if h.len() != 2 * len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    (0..len)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| bad()))
        .collect()
}

fn array<const N: usize>(flag: &str, s: &str) -> Result<[u8; N], Error> {
    let v = unhex(flag, s, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&v);
    Ok(out)
}

fn opt_array<const N: usize>(flag: &str, s: &Option<String>) -> Result<Option<[u8; N]>, Error> {
    s.as_deref().map(|s| array(flag, s)).transpose()
}

/// Decodes standard base64 (RFC 4648, padding optional), naming `flag` on refusal.
pub fn unbase64(flag: &str, s: &str) -> Result<Vec<u8>, Error> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim().trim_end_matches('=').bytes() {
        let v = A.iter().position(|a| *a == c).ok_or_else(|| {
            Error::Usage(format!("{flag}: {:?} is not a base64 character", c as char))
        })? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn key(flag: &str, path: &Path) -> Result<sev_backend::id_block::SigningKey, Error> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("{flag} {}: {e}", path.display())))?;
    sev_backend::id_block::signing_key_from_pem(&pem)
        .map_err(|e| Error::Usage(format!("{flag} {}: {e}", path.display())))
}

/// What a match or a mismatch prints: `match: ...` (exit 0) or the first difference (exit 1).
fn verdict(checked: &[&str], first: Option<String>) -> Result<(), Error> {
    match first {
        None => {
            println!("match: {}", checked.join(", "));
            Ok(())
        }
        Some(m) => {
            println!("mismatch: {m}");
            Err(Error::NoMatch(m))
        }
    }
}

/// The `check snp` inputs.
pub struct SnpCheck<'a> {
    pub report: Option<&'a Path>,
    pub id_block: Option<&'a str>,
    pub id_auth: Option<&'a str>,
    pub measurement: &'a str,
    pub policy: Option<u64>,
    pub family_id: &'a Option<String>,
    pub image_id: &'a Option<String>,
    pub host_data: &'a Option<String>,
    pub id_key: Option<&'a Path>,
    pub author_key: Option<&'a Path>,
}

/// `ccpop check snp`.
pub fn snp(c: &SnpCheck<'_>) -> Result<(), Error> {
    use sev_backend::id_block::{self, ID_AUTH_SIZE, ID_BLOCK_SIZE};
    let measurement: [u8; 48] = array("--measurement", c.measurement)?;
    match (c.report, c.id_block) {
        (Some(path), None) => {
            let bytes = read(path)?;
            let report = sev_backend::report::AttestationReport::parse(&bytes)
                .map_err(|e| Error::Platform(format!("{}: {e}", path.display())))?;
            let digest_of = |flag: &str, p: Option<&Path>| -> Result<Option<[u8; 48]>, Error> {
                p.map(|p| key(flag, p).map(|k| id_block::key_digest(k.verifying_key())))
                    .transpose()
            };
            let expected = sev_backend::report::ExpectedLaunch {
                measurement,
                policy: c.policy,
                family_id: opt_array("--family-id", c.family_id)?,
                image_id: opt_array("--image-id", c.image_id)?,
                host_data: opt_array("--host-data", c.host_data)?,
                id_key_digest: digest_of("--id-key", c.id_key)?,
                author_key_digest: digest_of("--author-key", c.author_key)?,
            };
            let mut checked = vec!["MEASUREMENT"];
            for (name, on) in [
                ("POLICY", expected.policy.is_some()),
                ("FAMILY_ID", expected.family_id.is_some()),
                ("IMAGE_ID", expected.image_id.is_some()),
                ("HOST_DATA", expected.host_data.is_some()),
                ("ID_KEY_DIGEST", expected.id_key_digest.is_some()),
                ("AUTHOR_KEY_DIGEST", expected.author_key_digest.is_some()),
            ] {
                if on {
                    checked.push(name);
                }
            }
            verdict(
                &checked,
                report.check(&expected).err().map(|m| m.to_string()),
            )
        }
        (None, Some(block)) => {
            let auth = c.id_auth.ok_or_else(|| {
                Error::Usage("--id-block goes with --id-auth (QEMU's id-block and id-auth)".into())
            })?;
            let block = unbase64("--id-block", block)?;
            let auth = unbase64("--id-auth", auth)?;
            let block: [u8; ID_BLOCK_SIZE] = block.as_slice().try_into().map_err(|_| {
                Error::Usage(format!(
                    "--id-block: {} bytes, an ID block has {ID_BLOCK_SIZE}",
                    block.len()
                ))
            })?;
            let auth: [u8; ID_AUTH_SIZE] = auth.as_slice().try_into().map_err(|_| {
                Error::Usage(format!(
                    "--id-auth: {} bytes, an ID authentication structure has {ID_AUTH_SIZE}",
                    auth.len()
                ))
            })?;
            let policy = c.policy.ok_or_else(|| {
                Error::Usage("--id-block needs --policy: the guest policy of the launch".into())
            })?;
            verdict(
                &[
                    "ID_BLOCK_SIG",
                    "ID_KEY_SIG",
                    "LD",
                    "POLICY (as SNP_LAUNCH_FINISH checks them)",
                ],
                id_block::check_finish(&block, &auth, &measurement, policy)
                    .err()
                    .map(|r| format!("SNP_LAUNCH_FINISH would fail: {r}")),
            )
        }
        _ => Err(Error::Usage(
            "check snp takes --report FILE or --id-block B64 --id-auth B64".into(),
        )),
    }
}

/// `ccpop check tdx`.
pub fn tdx(
    quote: &Path,
    mrtd: &str,
    td_attributes: Option<u64>,
    xfam: Option<u64>,
    mr_config_id: &Option<String>,
) -> Result<(), Error> {
    // The command line first, then the file.
    let expected = tdx_backend::quote::ExpectedTd {
        mrtd: array("--mrtd", mrtd)?,
        td_attributes,
        xfam,
        mr_config_id: opt_array("--mr-config-id", mr_config_id)?,
    };
    let bytes = read(quote)?;
    let q = tdx_backend::quote::Quote::parse(&bytes)
        .map_err(|e| Error::Platform(format!("{}: {e}", quote.display())))?;
    let mut checked = vec!["MRTD"];
    for (name, on) in [
        ("TDATTRIBUTES", td_attributes.is_some()),
        ("XFAM", xfam.is_some()),
        ("MRCONFIGID", expected.mr_config_id.is_some()),
    ] {
        if on {
            checked.push(name);
        }
    }
    println!(
        "quote version {}, TDX {} body",
        q.version,
        if q.body_version == 15 { "1.5" } else { "1.0" }
    );
    verdict(&checked, q.check(&expected).err().map(|m| m.to_string()))
}

/// `ccpop check cca`.
pub fn cca(token: &Path, rim: &str, hash: Option<&str>, rpv: &Option<String>) -> Result<(), Error> {
    let bytes = read(token)?;
    let claims = cca_backend::token::RealmClaims::parse(&bytes)
        .map_err(|e| Error::Platform(format!("{}: {e}", token.display())))?;
    let hash_algo = match hash {
        None => None,
        Some("sha256") => Some("sha-256".to_string()),
        Some("sha512") => Some("sha-512".to_string()),
        Some(h) => {
            return Err(Error::Usage(format!(
                "--hash {h}: unknown (known: sha256, sha512)"
            )))
        }
    };
    let rim_len = match hash_algo.as_deref().unwrap_or(&claims.hash_algo) {
        "sha-512" => 64,
        _ => 32,
    };
    let expected = cca_backend::token::ExpectedRealm {
        rim: unhex("--rim", rim, rim_len)?,
        hash_algo,
        personalization_value: rpv.as_deref().map(|s| unhex("--rpv", s, 64)).transpose()?,
    };
    let mut checked = vec!["realm initial measurement"];
    if expected.hash_algo.is_some() {
        checked.insert(0, "realm hash algorithm");
    }
    if expected.personalization_value.is_some() {
        checked.push("realm personalization value");
    }
    verdict(
        &checked,
        claims.check(&expected).err().map(|m| m.to_string()),
    )
}

/// The `id-block` inputs.
pub struct IdBlockArgs<'a> {
    pub measurement: &'a str,
    pub id_key: &'a Path,
    pub author_key: Option<&'a Path>,
    pub policy: u64,
    pub family_id: &'a Option<String>,
    pub image_id: &'a Option<String>,
    pub guest_svn: u32,
}

/// `ccpop id-block`: prints `id-block=<base64>,id-auth=<base64>` (QEMU's `sev-snp-guest`
/// properties), then the key digests the guest's report will carry.
pub fn id_block(a: &IdBlockArgs<'_>) -> Result<(), Error> {
    use sev_backend::id_block::{id_auth, report_key_digests, IdBlock};
    let mut block = IdBlock::new(array("--measurement", a.measurement)?, a.policy);
    if let Some(f) = opt_array("--family-id", a.family_id)? {
        block.family_id = f;
    }
    if let Some(i) = opt_array("--image-id", a.image_id)? {
        block.image_id = i;
    }
    block.guest_svn = a.guest_svn;
    let id_key = key("--id-key", a.id_key)?;
    let author = a.author_key.map(|p| key("--author-key", p)).transpose()?;
    let auth = id_auth(&block, &id_key, author.as_ref());
    println!(
        "id-block={},id-auth={}{}",
        base64(&block.to_bytes()),
        base64(&auth),
        if author.is_some() {
            ",author-key-enabled=on"
        } else {
            ""
        }
    );
    let (id_digest, author_digest) = report_key_digests(&auth);
    println!("id-key-digest: {}", hex(&id_digest));
    if let Some(d) = author_digest {
        println!("author-key-digest: {}", hex(&d));
    }
    Ok(())
}
