//! The realm claims of a CCA attestation token, read (not verified) and checked against an
//! expected realm.
//!
//! A CCA attestation token (RMM specification, "Attestation token format"; TF-RMM
//! `attestation_defs_priv.h`) is CBOR: tag 399 over a map of the platform token (key 44234)
//! and the realm token (key 44241), each a byte string holding a `COSE_Sign1` (tag 18: an array
//! of protected header, unprotected header, payload, signature). The newer format (realm profile
//! 2.0) is a CMW collection, tag 907, whose map values are records `[content-format, bytes]`;
//! both are read. The realm token's payload is
//! a map of claims; read here: the challenge (10), the realm personalization value (44235),
//! the realm hash algorithm (44236, `"sha-256"` or `"sha-512"`), the realm initial measurement
//! (44238) and the realm extensible measurements (44239). The COSE signatures and the platform
//! token are **not** verified: a verifier checks them first (for example with Veraison's
//! `ccatoken`), then asks this module whether the realm claims describe the realm it expected.
//! CBOR is read with the `ciborium` crate.
//!
//! ```
//! use cca_backend::token::{ExpectedRealm, RealmClaims};
//!
//! // A realm token alone, CBOR by hand: COSE_Sign1 [h'', {}, payload, h''] whose payload is
//! // {10: h'01', 44235: h'02', 44236: "sha-256", 44238: h'abcd'}.
//! let mut payload = vec![0xa4, 0x0a, 0x41, 0x01, 0x19, 0xac, 0xcb, 0x41, 0x02];
//! payload.extend([0x19, 0xac, 0xcc, 0x67]);
//! payload.extend(b"sha-256");
//! payload.extend([0x19, 0xac, 0xce, 0x42, 0xab, 0xcd]);
//! let mut token = vec![0x84, 0x40, 0xa0, 0x58, payload.len() as u8];
//! token.extend(&payload);
//! token.push(0x40);
//! let claims = RealmClaims::parse(&token)?;
//! assert_eq!((claims.hash_algo.as_str(), &claims.rim[..]), ("sha-256", &[0xab, 0xcd][..]));
//! assert_eq!(claims.check(&ExpectedRealm::new(vec![0xab, 0xcd])), Ok(()));
//! assert_eq!(claims.check(&ExpectedRealm::new(vec![0; 2])).unwrap_err().claim, "realm initial measurement");
//! # Ok::<(), cca_backend::Error>(())
//! ```

use std::fmt;

use ciborium::value::Value;

use crate::Error;

/// CBOR tag of a CCA attestation token (the first token format, realm profile 1.0).
pub const TAG_CCA_TOKEN: u64 = 399;
/// CBOR tag of a CMW collection: the CCA token format of the realm 2.0 profile (TF-M's
/// `iat-verifier` example token; draft-ffm-rats-cca-token with draft-ietf-rats-msg-wrap), in
/// which each token is a CMW record `[content-format, bytes]` rather than bare bytes.
pub const TAG_CMW_COLLECTION: u64 = 907;
/// CBOR tag of a `COSE_Sign1`.
pub const TAG_COSE_SIGN1: u64 = 18;
/// Map key of the platform token.
pub const CCA_PLATFORM_TOKEN: i64 = 44234;
/// Map key of the realm token.
pub const CCA_REALM_TOKEN: i64 = 44241;
/// Claim: the challenge.
pub const CLAIM_CHALLENGE: i64 = 10;
/// Claim: the realm personalization value.
pub const CLAIM_PERSONALIZATION_VALUE: i64 = 44235;
/// Claim: the realm hash algorithm.
pub const CLAIM_HASH_ALGO: i64 = 44236;
/// Claim: the realm initial measurement.
pub const CLAIM_RIM: i64 = 44238;
/// Claim: the realm extensible measurements.
pub const CLAIM_REMS: i64 = 44239;

/// What a realm token claims about its realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmClaims {
    /// The challenge.
    pub challenge: Vec<u8>,
    /// The realm personalization value (64 bytes).
    pub personalization_value: Vec<u8>,
    /// The realm hash algorithm, as the token names it (`sha-256`, `sha-512`).
    pub hash_algo: String,
    /// The realm initial measurement.
    pub rim: Vec<u8>,
    /// The four realm extensible measurements.
    pub rems: Vec<Vec<u8>>,
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Token {
        reason: reason.into(),
    }
}

fn decode(bytes: &[u8], what: &str) -> Result<Value, Error> {
    ciborium::de::from_reader(bytes).map_err(|e| refused(format!("{what}: not CBOR: {e}")))
}

fn untag(v: Value, tag: u64, what: &str) -> Result<Value, Error> {
    match v {
        Value::Tag(t, inner) if t == tag => Ok(*inner),
        Value::Tag(t, _) => Err(refused(format!("{what}: CBOR tag {t}, expected {tag}"))),
        _ => Err(refused(format!("{what}: not tagged {tag}"))),
    }
}

fn key_is(k: &Value, want: i64) -> bool {
    matches!(k, Value::Integer(i) if i128::from(*i) == i128::from(want))
}

fn field(map: &[(Value, Value)], key: i64) -> Option<&Value> {
    map.iter().find(|(k, _)| key_is(k, key)).map(|(_, v)| v)
}

fn bytes(map: &[(Value, Value)], key: i64, what: &str) -> Result<Vec<u8>, Error> {
    match field(map, key) {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        Some(_) => Err(refused(format!(
            "{what} (claim {key}) is not a byte string"
        ))),
        None => Err(refused(format!("no {what} (claim {key})"))),
    }
}

impl RealmClaims {
    /// Reads the realm claims of a CCA attestation token (the whole tag-399 token, or a realm
    /// token on its own: a `COSE_Sign1`, tagged 18 or not).
    pub fn parse(token: &[u8]) -> Result<Self, Error> {
        let top = decode(token, "token")?;
        let realm = match top {
            Value::Tag(tag @ (TAG_CCA_TOKEN | TAG_CMW_COLLECTION), inner) => {
                let Value::Map(map) = *inner else {
                    return Err(refused(format!("the tag-{tag} token is not a map")));
                };
                match field(&map, CCA_REALM_TOKEN) {
                    Some(Value::Bytes(b)) => decode(b, "realm token")?,
                    // A CMW record: [content-format, bytes].
                    Some(Value::Array(record)) => match record.as_slice() {
                        [Value::Integer(_), Value::Bytes(b)] => decode(b, "realm token")?,
                        _ => {
                            return Err(refused(format!(
                                "realm token (key {CCA_REALM_TOKEN}) is neither a byte string \
                                 nor a CMW record [content-format, bytes]"
                            )))
                        }
                    },
                    Some(_) => {
                        return Err(refused(format!(
                            "realm token (key {CCA_REALM_TOKEN}) is not a byte string"
                        )))
                    }
                    None => {
                        return Err(refused(format!(
                            "no realm token (key {CCA_REALM_TOKEN}) in the CCA token"
                        )))
                    }
                }
            }
            other => other,
        };
        let sign1 = match realm {
            Value::Tag(..) => untag(realm, TAG_COSE_SIGN1, "realm token")?,
            v => v,
        };
        let Value::Array(parts) = sign1 else {
            return Err(refused("the realm token is not a COSE_Sign1 array"));
        };
        let Some(Value::Bytes(payload)) = parts.get(2) else {
            return Err(refused(
                "the realm token's COSE_Sign1 has no payload byte string (element 2)",
            ));
        };
        let Value::Map(claims) = decode(payload, "realm token payload")? else {
            return Err(refused("the realm token payload is not a map of claims"));
        };
        let hash_algo = match field(&claims, CLAIM_HASH_ALGO) {
            Some(Value::Text(t)) => t.clone(),
            Some(_) => {
                return Err(refused(format!(
                    "realm hash algorithm (claim {CLAIM_HASH_ALGO}) is not text"
                )))
            }
            None => {
                return Err(refused(format!(
                    "no realm hash algorithm (claim {CLAIM_HASH_ALGO})"
                )))
            }
        };
        let rems = match field(&claims, CLAIM_REMS) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(refused(format!(
                        "a realm extensible measurement (claim {CLAIM_REMS}) is not a byte string"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(refused(format!(
                    "realm extensible measurements (claim {CLAIM_REMS}) are not an array"
                )))
            }
            None => Vec::new(),
        };
        Ok(RealmClaims {
            challenge: bytes(&claims, CLAIM_CHALLENGE, "challenge")?,
            personalization_value: bytes(
                &claims,
                CLAIM_PERSONALIZATION_VALUE,
                "realm personalization value",
            )?,
            hash_algo,
            rim: bytes(&claims, CLAIM_RIM, "realm initial measurement")?,
            rems,
        })
    }

    /// `Ok` when the claims describe `expected`; otherwise the first claim that differs (the
    /// hash algorithm, then the RIM, then the personalization value).
    pub fn check(&self, expected: &ExpectedRealm) -> Result<(), ClaimMismatch> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        if let Some(algo) = &expected.hash_algo {
            if &self.hash_algo != algo {
                return Err(ClaimMismatch {
                    claim: "realm hash algorithm",
                    got: self.hash_algo.clone(),
                    want: algo.clone(),
                    hint: "the realm was created with another measurement algorithm",
                });
            }
        }
        if self.rim != expected.rim {
            return Err(ClaimMismatch {
                claim: "realm initial measurement",
                got: hex(&self.rim),
                want: hex(&expected.rim),
                hint: "the realm's parameters, contents, RECs or RMM rules differ: trace both \
                       (`ccpop measure cca ... --trace`) and `ccpop diff` them",
            });
        }
        if let Some(rpv) = &expected.personalization_value {
            if &self.personalization_value != rpv {
                return Err(ClaimMismatch {
                    claim: "realm personalization value",
                    got: hex(&self.personalization_value),
                    want: hex(rpv),
                    hint: "the VMM's RPV at realm creation",
                });
            }
        }
        Ok(())
    }
}

/// The realm a verifier expects (`None`: not checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRealm {
    /// The RIM (`ccpop measure cca`, [`crate::measure_with_options`]).
    pub rim: Vec<u8>,
    /// `sha-256` or `sha-512`.
    pub hash_algo: Option<String>,
    /// The personalization value (64 bytes).
    pub personalization_value: Option<Vec<u8>>,
}

impl ExpectedRealm {
    /// Only the RIM is checked.
    pub fn new(rim: Vec<u8>) -> Self {
        ExpectedRealm {
            rim,
            hash_algo: None,
            personalization_value: None,
        }
    }
}

/// The first realm claim that differs from the expected realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMismatch {
    /// The claim.
    pub claim: &'static str,
    /// What the token has.
    pub got: String,
    /// What was expected.
    pub want: String,
    /// What usually makes it differ.
    pub hint: &'static str,
}

impl fmt::Display for ClaimMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the token has {}, expected {} ({})",
            self.claim, self.got, self.want, self.hint
        )
    }
}
