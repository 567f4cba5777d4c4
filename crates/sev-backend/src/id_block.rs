//! SEV-SNP ID blocks: the 96-byte `ID_BLOCK` and the 4096-byte `ID_AUTH_INFO` a VMM hands to
//! `SNP_LAUNCH_FINISH` ([`crate::FinishParams::id_block`], QEMU's `id-block` / `id-auth`),
//! built and signed with ECDSA P-384 (the `p384` crate), and checked as the firmware checks
//! them.
//!
//! Layouts (SEV-SNP Firmware ABI specification, "ID_BLOCK Structure", "ID_AUTH_INFO
//! Structure", "ECDSA P-384 Public Key", "ECDSA Signature"):
//!
//! | `ID_BLOCK` | offset |
//! |---|---|
//! | `LD` (the launch digest) | 0x00, 48 |
//! | `FAMILY_ID` | 0x30, 16 |
//! | `IMAGE_ID` | 0x40, 16 |
//! | `VERSION` (1) | 0x50, 4 |
//! | `GUEST_SVN` | 0x54, 4 |
//! | `POLICY` | 0x58, 8 |
//!
//! `ID_AUTH_INFO`: `ID_KEY_ALGO` 0x000 and `AUTH_KEY_ALGO` 0x004 (1: ECDSA P-384 with
//! SHA-384), `ID_BLOCK_SIG` 0x040, `ID_KEY` 0x240, `ID_KEY_SIG` 0x680 (the author key's
//! signature of `ID_KEY`), `AUTHOR_KEY` 0x880. A public key is `CURVE` (2: P-384) then `QX`
//! and `QY`, 72 bytes each, little endian, 0x404 bytes in all; a signature is `R` and `S`, 72
//! bytes each, little endian, in 0x200 bytes. The report's `ID_KEY_DIGEST` and
//! `AUTHOR_KEY_DIGEST` are SHA-384 of those 0x404 bytes.
//!
//! At `SNP_LAUNCH_FINISH` with `ID_BLOCK_EN` the firmware verifies `ID_BLOCK_SIG` with the ID
//! key (and, with `AUTHOR_KEY_EN`, `ID_KEY_SIG` with the author key), then refuses an ID block
//! whose `LD` is not the launch digest with `BAD_MEASUREMENT` (status 0x0b, the "Bad
//! measurement" of AMDSEV issue 195) and one whose `POLICY` is not the guest's with
//! `POLICY_FAILURE` (0x07). [`check_finish`] applies the same checks before the launch.
//!
//! ```
//! use p384::ecdsa::SigningKey;
//! use sev_backend::id_block::{check_finish, id_auth, IdBlock};
//!
//! let id_key = SigningKey::from_slice(&[7u8; 48])?;
//! let block = IdBlock::new([0xab; 48], 0x30000);
//! let auth = id_auth(&block, &id_key, None);
//! assert_eq!(check_finish(&block.to_bytes(), &auth, &[0xab; 48], 0x30000), Ok(()));
//! let e = check_finish(&block.to_bytes(), &auth, &[0xcd; 48], 0x30000).unwrap_err();
//! assert_eq!(e.status(), 0x0b); // SEV_RET_BAD_MEASUREMENT
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::Signature;
/// The key types of the `p384` crate this module signs and verifies with.
pub use p384::ecdsa::{SigningKey, VerifyingKey};

use crate::hash::sha384;
use crate::{Error, DIGEST_LEN};

/// Size of an `ID_BLOCK` (`KVM_SEV_SNP_ID_BLOCK_SIZE`).
pub const ID_BLOCK_SIZE: usize = 0x60;
/// Size of an `ID_AUTH_INFO` (`KVM_SEV_SNP_ID_AUTH_SIZE`).
pub const ID_AUTH_SIZE: usize = 0x1000;
/// Size of an ECDSA P-384 public key structure.
pub const PUBLIC_KEY_SIZE: usize = 0x404;
/// Size of an ECDSA signature structure.
pub const SIGNATURE_SIZE: usize = 0x200;
/// `ID_KEY_ALGO` / `AUTH_KEY_ALGO`: ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// `CURVE`: P-384.
pub const CURVE_P384: u32 = 2;

const ID_BLOCK_SIG: usize = 0x040;
const ID_KEY: usize = 0x240;
const ID_KEY_SIG: usize = 0x680;
const AUTHOR_KEY: usize = 0x880;

/// An `ID_BLOCK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdBlock {
    /// `LD`: the expected launch digest.
    pub launch_digest: [u8; DIGEST_LEN],
    /// `FAMILY_ID`.
    pub family_id: [u8; 16],
    /// `IMAGE_ID`.
    pub image_id: [u8; 16],
    /// `VERSION` (1 is the only one defined).
    pub version: u32,
    /// `GUEST_SVN`.
    pub guest_svn: u32,
    /// `POLICY`: the guest policy the launch must have.
    pub policy: u64,
}

impl IdBlock {
    /// An ID block for `launch_digest` and `policy`, version 1, zero IDs and SVN (what
    /// sev-snp-measure's `snp-create-id-block` writes, which fixes the policy at 0x30000).
    pub fn new(launch_digest: [u8; DIGEST_LEN], policy: u64) -> Self {
        IdBlock {
            launch_digest,
            family_id: [0; 16],
            image_id: [0; 16],
            version: 1,
            guest_svn: 0,
            policy,
        }
    }

    /// The 96 bytes.
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut b = [0u8; ID_BLOCK_SIZE];
        b[0x00..0x30].copy_from_slice(&self.launch_digest);
        b[0x30..0x40].copy_from_slice(&self.family_id);
        b[0x40..0x50].copy_from_slice(&self.image_id);
        b[0x50..0x54].copy_from_slice(&self.version.to_le_bytes());
        b[0x54..0x58].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[0x58..0x60].copy_from_slice(&self.policy.to_le_bytes());
        b
    }

    /// Reads 96 bytes.
    pub fn from_bytes(b: &[u8; ID_BLOCK_SIZE]) -> Self {
        let take = |from: usize, to: usize| &b[from..to];
        let mut ld = [0u8; DIGEST_LEN];
        ld.copy_from_slice(take(0x00, 0x30));
        let (mut family_id, mut image_id) = ([0u8; 16], [0u8; 16]);
        family_id.copy_from_slice(take(0x30, 0x40));
        image_id.copy_from_slice(take(0x40, 0x50));
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut policy = [0u8; 8];
        policy.copy_from_slice(take(0x58, 0x60));
        IdBlock {
            launch_digest: ld,
            family_id,
            image_id,
            version: u32_at(0x50),
            guest_svn: u32_at(0x54),
            policy: u64::from_le_bytes(policy),
        }
    }
}

/// The firmware's public key structure of `key` (`CURVE`, `QX`, `QY` little endian).
pub fn public_key_bytes(key: &VerifyingKey) -> [u8; PUBLIC_KEY_SIZE] {
    let point = key.to_encoded_point(false);
    let mut b = [0u8; PUBLIC_KEY_SIZE];
    b[0..4].copy_from_slice(&CURVE_P384.to_le_bytes());
    if let (Some(x), Some(y)) = (point.x(), point.y()) {
        // Big-endian field elements, stored little endian in 72-byte fields.
        for (i, v) in x.iter().rev().enumerate() {
            b[4 + i] = *v;
        }
        for (i, v) in y.iter().rev().enumerate() {
            b[4 + 72 + i] = *v;
        }
    }
    b
}

/// `ID_KEY_DIGEST` / `AUTHOR_KEY_DIGEST` of `key`: SHA-384 of its public key structure.
pub fn key_digest(key: &VerifyingKey) -> [u8; DIGEST_LEN] {
    sha384(&public_key_bytes(key))
}

fn signature_bytes(sig: &Signature) -> [u8; SIGNATURE_SIZE] {
    let (r, s) = sig.split_bytes();
    let mut b = [0u8; SIGNATURE_SIZE];
    for (i, v) in r.iter().rev().enumerate() {
        b[i] = *v;
    }
    for (i, v) in s.iter().rev().enumerate() {
        b[72 + i] = *v;
    }
    b
}

/// Reads a signature structure; `None` when R or S does not fit P-384 (bytes 48..72 of each
/// set) or is not a valid scalar.
fn signature_from(b: &[u8]) -> Option<Signature> {
    if b[48..72].iter().chain(&b[72 + 48..144]).any(|&x| x != 0) {
        return None;
    }
    let mut rs = [0u8; 96];
    for i in 0..48 {
        rs[47 - i] = b[i];
        rs[48 + 47 - i] = b[72 + i];
    }
    Signature::from_slice(&rs).ok()
}

/// Reads a public key structure; `None` when the curve is not P-384 or the point is not on it.
fn public_key_from(b: &[u8]) -> Option<VerifyingKey> {
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != CURVE_P384 {
        return None;
    }
    let mut sec1 = [0u8; 97];
    sec1[0] = 4;
    for i in 0..48 {
        sec1[1 + 47 - i] = b[4 + i];
        sec1[49 + 47 - i] = b[4 + 72 + i];
    }
    VerifyingKey::from_sec1_bytes(&sec1).ok()
}

/// The `ID_AUTH_INFO` for `block`: signed by `id_key` and, when given, the ID key signed by
/// `author_key` (the launch then needs `AUTHOR_KEY_EN`, [`crate::FinishParams::auth_key`]).
/// Signatures are deterministic (RFC 6979), over SHA-384 of the bytes signed.
pub fn id_auth(
    block: &IdBlock,
    id_key: &SigningKey,
    author_key: Option<&SigningKey>,
) -> [u8; ID_AUTH_SIZE] {
    let mut a = [0u8; ID_AUTH_SIZE];
    a[0..4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
    let block_sig: Signature = id_key.sign(&block.to_bytes());
    a[ID_BLOCK_SIG..ID_BLOCK_SIG + SIGNATURE_SIZE].copy_from_slice(&signature_bytes(&block_sig));
    let id_pub = public_key_bytes(id_key.verifying_key());
    a[ID_KEY..ID_KEY + PUBLIC_KEY_SIZE].copy_from_slice(&id_pub);
    if let Some(author) = author_key {
        a[4..8].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
        let key_sig: Signature = author.sign(&id_pub);
        a[ID_KEY_SIG..ID_KEY_SIG + SIGNATURE_SIZE].copy_from_slice(&signature_bytes(&key_sig));
        a[AUTHOR_KEY..AUTHOR_KEY + PUBLIC_KEY_SIZE]
            .copy_from_slice(&public_key_bytes(author.verifying_key()));
    }
    a
}

/// An ECDSA P-384 private key from a PEM file's text (SEC1 `EC PRIVATE KEY` or PKCS#8
/// `PRIVATE KEY`, as `openssl ecparam -genkey -name secp384r1` and `openssl genpkey` write).
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, Error> {
    use p384::pkcs8::DecodePrivateKey;
    let key = p384::SecretKey::from_sec1_pem(pem)
        .or_else(|_| p384::SecretKey::from_pkcs8_pem(pem))
        .map_err(|e| Error::IdBlock {
            reason: format!("not an ECDSA P-384 private key in PEM (SEC1 or PKCS#8): {e}"),
        })?;
    Ok(SigningKey::from(key))
}

/// What [`check_finish`] found, as the firmware would answer `SNP_LAUNCH_FINISH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishRefusal {
    /// `ID_KEY_ALGO` (or `AUTH_KEY_ALGO`) is not ECDSA P-384 with SHA-384, or a key is not on
    /// P-384.
    BadKey {
        /// Which key.
        which: &'static str,
    },
    /// `ID_BLOCK_SIG` does not verify under `ID_KEY`, or `ID_KEY_SIG` under `AUTHOR_KEY`.
    BadSignature {
        /// Which signature.
        which: &'static str,
    },
    /// `ID_BLOCK.LD` is not the launch digest.
    BadMeasurement {
        /// The ID block's `LD`.
        id_block: [u8; DIGEST_LEN],
        /// The launch digest.
        launch: [u8; DIGEST_LEN],
    },
    /// `ID_BLOCK.POLICY` is not the guest's policy.
    PolicyFailure {
        /// The ID block's.
        id_block: u64,
        /// The guest's (`SNP_LAUNCH_START`).
        guest: u64,
    },
}

impl FinishRefusal {
    /// The firmware status `SNP_LAUNCH_FINISH` would return (`SEV_RET_*`).
    pub fn status(&self) -> u32 {
        match self {
            FinishRefusal::BadKey { .. } => 0x16, // SEV_RET_INVALID_KEY
            FinishRefusal::BadSignature { .. } => 0x1b, // SEV_RET_BAD_SIGNATURE
            FinishRefusal::BadMeasurement { .. } => 0x0b, // SEV_RET_BAD_MEASUREMENT
            FinishRefusal::PolicyFailure { .. } => 0x07, // SEV_RET_POLICY_FAILURE
        }
    }
}

impl fmt::Display for FinishRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        match self {
            FinishRefusal::BadKey { which } => {
                write!(
                    f,
                    "{which} is not an ECDSA P-384 (SHA-384) key (INVALID_KEY)"
                )
            }
            FinishRefusal::BadSignature { which } => {
                write!(f, "{which} does not verify (BAD_SIGNATURE)")
            }
            FinishRefusal::BadMeasurement { id_block, launch } => write!(
                f,
                "the ID block's digest {} is not the launch digest {} (BAD_MEASUREMENT, \
                 firmware status 0x0b: build the ID block from this launch's digest)",
                hex(id_block),
                hex(launch)
            ),
            FinishRefusal::PolicyFailure { id_block, guest } => write!(
                f,
                "the ID block's policy {id_block:#x} is not the guest's {guest:#x} \
                 (POLICY_FAILURE)"
            ),
        }
    }
}

/// What `SNP_LAUNCH_FINISH` with this ID block and authentication structure would refuse for
/// a launch with digest `launch` and guest policy `policy`; `Ok` when it would accept them.
/// The checks run in the firmware's order: keys and signatures, then the digest, then the
/// policy.
pub fn check_finish(
    block: &[u8; ID_BLOCK_SIZE],
    auth: &[u8; ID_AUTH_SIZE],
    launch: &[u8; DIGEST_LEN],
    policy: u64,
) -> Result<(), FinishRefusal> {
    let algo = |at: usize| u32::from_le_bytes([auth[at], auth[at + 1], auth[at + 2], auth[at + 3]]);
    if algo(0) != ALGO_ECDSA_P384_SHA384 {
        return Err(FinishRefusal::BadKey { which: "ID_KEY" });
    }
    let id_key = public_key_from(&auth[ID_KEY..ID_KEY + PUBLIC_KEY_SIZE])
        .ok_or(FinishRefusal::BadKey { which: "ID_KEY" })?;
    let sig = signature_from(&auth[ID_BLOCK_SIG..ID_BLOCK_SIG + SIGNATURE_SIZE]).ok_or(
        FinishRefusal::BadSignature {
            which: "ID_BLOCK_SIG",
        },
    )?;
    id_key
        .verify(block, &sig)
        .map_err(|_| FinishRefusal::BadSignature {
            which: "ID_BLOCK_SIG",
        })?;
    if algo(4) != 0 {
        if algo(4) != ALGO_ECDSA_P384_SHA384 {
            return Err(FinishRefusal::BadKey {
                which: "AUTHOR_KEY",
            });
        }
        let author = public_key_from(&auth[AUTHOR_KEY..AUTHOR_KEY + PUBLIC_KEY_SIZE]).ok_or(
            FinishRefusal::BadKey {
                which: "AUTHOR_KEY",
            },
        )?;
        let sig = signature_from(&auth[ID_KEY_SIG..ID_KEY_SIG + SIGNATURE_SIZE]).ok_or(
            FinishRefusal::BadSignature {
                which: "ID_KEY_SIG",
            },
        )?;
        author
            .verify(&auth[ID_KEY..ID_KEY + PUBLIC_KEY_SIZE], &sig)
            .map_err(|_| FinishRefusal::BadSignature {
                which: "ID_KEY_SIG",
            })?;
    }
    let b = IdBlock::from_bytes(block);
    if &b.launch_digest != launch {
        return Err(FinishRefusal::BadMeasurement {
            id_block: b.launch_digest,
            launch: *launch,
        });
    }
    if b.policy != policy {
        return Err(FinishRefusal::PolicyFailure {
            id_block: b.policy,
            guest: policy,
        });
    }
    Ok(())
}

/// The key digests the report of a launch with this `ID_AUTH_INFO` carries
/// (`ID_KEY_DIGEST`, and `AUTHOR_KEY_DIGEST` when an author key is in it).
pub fn report_key_digests(
    auth: &[u8; ID_AUTH_SIZE],
) -> ([u8; DIGEST_LEN], Option<[u8; DIGEST_LEN]>) {
    let author_en = auth[4..8] != [0; 4];
    (
        sha384(&auth[ID_KEY..ID_KEY + PUBLIC_KEY_SIZE]),
        author_en.then(|| sha384(&auth[AUTHOR_KEY..AUTHOR_KEY + PUBLIC_KEY_SIZE])),
    )
}
