//! CCA attestation tokens read here, written by a CBOR encoder of this test's own (RFC 8949
//! major types by hand, not the `ciborium` the crate reads with), with the claim keys of TF-RMM's
//! `attestation_defs_priv.h` written out.

use cca_backend::token::{ExpectedRealm, RealmClaims};

/// A CBOR head: major type `major`, argument `n`.
fn head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
        _ => [vec![m | 27], n.to_be_bytes().to_vec()].concat(),
    }
}

fn uint(n: u64) -> Vec<u8> {
    head(0, n)
}
fn bstr(b: &[u8]) -> Vec<u8> {
    [head(2, b.len() as u64), b.to_vec()].concat()
}
fn tstr(s: &str) -> Vec<u8> {
    [head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
}
fn array(items: &[Vec<u8>]) -> Vec<u8> {
    [head(4, items.len() as u64), items.concat()].concat()
}
fn map(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = head(5, pairs.len() as u64);
    for (k, v) in pairs {
        out.extend(k);
        out.extend(v);
    }
    out
}
fn tag(t: u64, inner: Vec<u8>) -> Vec<u8> {
    [head(6, t), inner].concat()
}

/// A COSE_Sign1 (tag 18) over `payload`, with a protected header naming ES384 (alg -35).
fn sign1(payload: Vec<u8>) -> Vec<u8> {
    let protected = map(&[(uint(1), vec![0x38, 0x22])]); // {1: -35}
    tag(
        18,
        array(&[
            bstr(&protected),
            map(&[]),
            bstr(&payload),
            bstr(&[0x5a; 96]),
        ]),
    )
}

fn realm_payload(algo: &str, rim: &[u8]) -> Vec<u8> {
    map(&[
        (uint(265), tstr("tag:arm.com,2023:realm#1.0.0")),
        (uint(10), bstr(&[0xc0; 64])),
        (uint(44235), bstr(&[0x70; 64])),
        (uint(44236), tstr(algo)),
        (uint(44237), bstr(&[4; 97])),
        (uint(44238), bstr(rim)),
        (
            uint(44239),
            array(&[
                bstr(&[1; 32]),
                bstr(&[2; 32]),
                bstr(&[3; 32]),
                bstr(&[4; 32]),
            ]),
        ),
        (uint(44240), tstr("sha-256")),
    ])
}

/// The whole token: tag 399 over {44234: platform token, 44241: realm token}.
fn cca_token(algo: &str, rim: &[u8]) -> Vec<u8> {
    let platform = sign1(map(&[(uint(10), bstr(&[0xd0; 32]))]));
    tag(
        399,
        map(&[
            (uint(44234), bstr(&platform)),
            (uint(44241), bstr(&sign1(realm_payload(algo, rim)))),
        ]),
    )
}

/// The newer format (realm profile 2.0): a CMW collection, tag 907, each token a record
/// `[content-format, bytes]` (content-format 263, as TF-M's `iat-verifier` example token has).
fn cmw_token(algo: &str, rim: &[u8]) -> Vec<u8> {
    let platform = sign1(map(&[(uint(10), bstr(&[0xd0; 32]))]));
    tag(
        907,
        map(&[
            (uint(44234), array(&[uint(263), bstr(&platform)])),
            (
                uint(44241),
                array(&[uint(263), bstr(&sign1(realm_payload(algo, rim)))]),
            ),
        ]),
    )
}

#[test]
fn realm_claims_of_a_cmw_collection_token() {
    let rim = [0x31u8; 32];
    let c = RealmClaims::parse(&cmw_token("sha-256", &rim)).unwrap();
    assert_eq!(c, RealmClaims::parse(&cca_token("sha-256", &rim)).unwrap());
    // A record that is not [content-format, bytes] is named.
    let bad = tag(907, map(&[(uint(44241), array(&[bstr(&[1])]))]));
    assert_eq!(
        RealmClaims::parse(&bad).unwrap_err().to_string(),
        "CCA attestation token: realm token (key 44241) is neither a byte string nor a CMW \
         record [content-format, bytes]"
    );
}

#[test]
fn realm_claims_of_a_whole_token() {
    for (algo, len) in [("sha-256", 32), ("sha-512", 64)] {
        let rim: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let c = RealmClaims::parse(&cca_token(algo, &rim)).unwrap();
        assert_eq!(c.hash_algo, algo);
        assert_eq!(c.rim, rim);
        assert_eq!(c.challenge, [0xc0; 64]);
        assert_eq!(c.personalization_value, [0x70; 64]);
        assert_eq!(c.rems, [vec![1; 32], vec![2; 32], vec![3; 32], vec![4; 32]]);
        // The realm token alone, tagged or not, reads the same.
        let alone = sign1(realm_payload(algo, &rim));
        assert_eq!(RealmClaims::parse(&alone).unwrap(), c);
        assert_eq!(RealmClaims::parse(&alone[1..]).unwrap(), c);
    }
}

#[test]
fn check_names_the_first_claim_that_differs() {
    let rim = [0x42u8; 32];
    let c = RealmClaims::parse(&cca_token("sha-256", &rim)).unwrap();
    let all = ExpectedRealm {
        rim: rim.to_vec(),
        hash_algo: Some("sha-256".into()),
        personalization_value: Some(vec![0x70; 64]),
    };
    assert_eq!(c.check(&all), Ok(()));
    let mut want = all.clone();
    want.hash_algo = Some("sha-512".into());
    want.rim = vec![0; 64];
    let m = c.check(&want).unwrap_err();
    assert_eq!(
        (m.claim, m.got.as_str(), m.want.as_str()),
        ("realm hash algorithm", "sha-256", "sha-512")
    );
    let mut want = all.clone();
    want.rim[31] = 0;
    assert_eq!(
        c.check(&want).unwrap_err().claim,
        "realm initial measurement"
    );
    let mut want = all;
    want.personalization_value = Some(vec![0; 64]);
    assert_eq!(
        c.check(&want).unwrap_err().claim,
        "realm personalization value"
    );
}

#[test]
fn refusals_name_what_is_missing() {
    let e = |b: &[u8]| RealmClaims::parse(b).unwrap_err().to_string();
    let no_realm = tag(399, map(&[(uint(44234), bstr(&[0x80]))]));
    assert_eq!(
        e(&no_realm),
        "CCA attestation token: no realm token (key 44241) in the CCA token"
    );
    let no_rim = sign1(map(&[
        (uint(10), bstr(&[0; 64])),
        (uint(44235), bstr(&[0; 64])),
        (uint(44236), tstr("sha-256")),
    ]));
    assert_eq!(
        e(&no_rim),
        "CCA attestation token: no realm initial measurement (claim 44238)"
    );
    assert_eq!(
        e(&tag(17, array(&[]))),
        "CCA attestation token: realm token: CBOR tag 17, expected 18"
    );
    assert!(e(&[0xff, 0x00]).starts_with("CCA attestation token: token: not CBOR"));
    let not_map = sign1(array(&[]));
    assert_eq!(
        e(&not_map),
        "CCA attestation token: the realm token payload is not a map of claims"
    );
}
