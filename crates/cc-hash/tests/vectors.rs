// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Known answers from NIST (FIPS 180-2 appendices B-D / the CSRC "Examples with intermediate
//! values" for SHA-256, SHA-384 and SHA-512; the empty message from the CAVP SHAVS
//! `ShortMsg` files, `Len = 0`), for one-shot, streaming and multi-buffer hashing, and the
//! multi-buffer path checked against the `sha2` crate on random inputs.

use cc_hash::{
    sha256, sha256_many, sha384, sha384_many, sha512, sha512_many, Algorithm, Error, Sha256,
    Sha384, Sha512, PAGE_SIZE,
};
use proptest::prelude::*;
use sha2::Digest as _;

const ABC: &[u8] = b"abc";
const M448: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
const M896: &[u8] = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors(alg: Algorithm) -> Vec<(&'static [u8], Vec<u8>)> {
    let v: [(&'static [u8], &str); 3] = match alg {
        Algorithm::Sha256 => [
            (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (ABC, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (M448, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ],
        Algorithm::Sha384 => [
            (b"", "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"),
            (ABC, "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"),
            (M896, "09330c33f71147e83d192fc782cd1b4753111b173b3b05d22fa08086e3b0f712fcc7c71a557e2db966c3e9fa91746039"),
        ],
        Algorithm::Sha512 => [
            (b"", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"),
            (ABC, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
            (M896, "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"),
        ],
    };
    v.into_iter().map(|(m, d)| (m, hex(d))).collect()
}

const MILLION_A: [(Algorithm, &str); 3] = [
    (Algorithm::Sha256, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
    (Algorithm::Sha384, "9d0e1809716474cb086e834e310a4a1ced149e9c00f248527972cec5704c2a5b07b8b3dc38ecc4ebae97ddd87f3d8985"),
    (Algorithm::Sha512, "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973ebde0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b"),
];

fn one_shot(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => sha256(m).to_vec(),
        Algorithm::Sha384 => sha384(m).to_vec(),
        Algorithm::Sha512 => sha512(m).to_vec(),
    }
}

/// Streams `m` in pieces of `piece` bytes.
fn streamed(alg: Algorithm, m: &[u8], piece: usize) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => {
            let mut h = Sha256::new();
            m.chunks(piece).for_each(|c| h.update(c));
            h.finalize().to_vec()
        }
        Algorithm::Sha384 => {
            let mut h = Sha384::new();
            m.chunks(piece).for_each(|c| h.update(c));
            h.finalize().to_vec()
        }
        Algorithm::Sha512 => {
            let mut h = Sha512::new();
            m.chunks(piece).for_each(|c| h.update(c));
            h.finalize().to_vec()
        }
    }
}

fn many(alg: Algorithm, data: &[u8], len: usize, count: usize) -> Result<Vec<Vec<u8>>, Error> {
    Ok(match alg {
        Algorithm::Sha256 => {
            let mut o = vec![[0u8; 32]; count];
            sha256_many(data, len, &mut o)?;
            o.iter().map(|d| d.to_vec()).collect()
        }
        Algorithm::Sha384 => {
            let mut o = vec![[0u8; 48]; count];
            sha384_many(data, len, &mut o)?;
            o.iter().map(|d| d.to_vec()).collect()
        }
        Algorithm::Sha512 => {
            let mut o = vec![[0u8; 64]; count];
            sha512_many(data, len, &mut o)?;
            o.iter().map(|d| d.to_vec()).collect()
        }
    })
}

fn reference(alg: Algorithm, m: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => sha2::Sha256::digest(m).to_vec(),
        Algorithm::Sha384 => sha2::Sha384::digest(m).to_vec(),
        Algorithm::Sha512 => sha2::Sha512::digest(m).to_vec(),
    }
}

const ALGS: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512];

#[test]
fn nist_one_shot_and_streaming() {
    for alg in ALGS {
        for (m, want) in vectors(alg) {
            assert_eq!(one_shot(alg, m), want, "{alg:?} one-shot of {m:?}");
            for piece in [1, 3, 64, 1000] {
                assert_eq!(streamed(alg, m, piece), want, "{alg:?} streamed by {piece}");
            }
            assert_eq!(want.len(), alg.digest_len());
        }
    }
}

#[test]
fn nist_million_a() {
    let m = vec![b'a'; 1_000_000];
    for (alg, want) in MILLION_A {
        assert_eq!(one_shot(alg, &m), hex(want), "{alg:?}");
        assert_eq!(streamed(alg, &m, 4097), hex(want), "{alg:?} streamed");
    }
}

#[test]
fn nist_many() {
    // Every lane and the single-stream leftovers: 2 full groups of the widest kernel plus 3.
    for alg in ALGS {
        for (m, want) in vectors(alg) {
            let count = 2 * 16 + 3;
            let data = m.repeat(count);
            let got = many(alg, &data, m.len(), count).unwrap();
            for (i, d) in got.iter().enumerate() {
                assert_eq!(*d, want, "{alg:?} message {i} of {count} x {:?}", m);
            }
        }
    }
}

#[test]
fn many_refuses_a_bad_layout() {
    let mut o = [[0u8; 48]; 3];
    assert_eq!(
        sha384_many(&[0u8; 10], 4, &mut o),
        Err(Error::Layout {
            data_len: 10,
            len: 4,
            count: 3
        })
    );
    assert_eq!(
        sha256_many(&[], usize::MAX, &mut [[0u8; 32]; 2]),
        Err(Error::Layout {
            data_len: 0,
            len: usize::MAX,
            count: 2
        })
    );
    // No messages: nothing to do.
    assert_eq!(sha512_many(&[], 128, &mut []), Ok(()));
}

#[test]
fn many_pages_match_sha2() {
    // Pages of distinct content, so that a lane mix-up shows.
    let count = 41;
    let data: Vec<u8> = (0..count * PAGE_SIZE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect();
    for alg in ALGS {
        let got = many(alg, &data, PAGE_SIZE, count).unwrap();
        for (i, d) in got.iter().enumerate() {
            let want = reference(alg, &data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]);
            assert_eq!(*d, want, "{alg:?} page {i}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random messages of every tail length class (no padding block, one, two) against `sha2`.
    #[test]
    fn many_matches_sha2(len in 0usize..700, count in 0usize..40, seed in any::<u64>()) {
        let mut x = seed | 1;
        let data: Vec<u8> = (0..len * count)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for alg in ALGS {
            let got = many(alg, &data, len, count).unwrap();
            for (i, d) in got.iter().enumerate() {
                let m = &data[i * len..(i + 1) * len];
                prop_assert_eq!(d, &reference(alg, m), "{:?} len {} message {}", alg, len, i);
            }
        }
    }
}

#[test]
fn multi_buffer_runs_where_the_cpu_has_avx512() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        assert_eq!(Algorithm::Sha256.lanes(), 16);
        assert_eq!(Algorithm::Sha384.lanes(), 8);
        assert_eq!(Algorithm::Sha512.lanes(), 8);
        return;
    }
    for alg in ALGS {
        assert_eq!(alg.lanes(), 1);
    }
}

/// Every single-stream implementation the benches compare computes the NIST answers.
#[cfg(feature = "bench-utils")]
#[test]
fn bench_candidates_are_right() {
    for alg in ALGS {
        for c in cc_hash::bench::candidates(alg) {
            for (m, want) in vectors(alg) {
                assert_eq!((c.hash)(m), want, "{alg:?} {}", c.name);
            }
            // Two padding blocks (tail of 112..128 / 56..64 bytes) and several full blocks.
            let m = vec![0x61u8; 3 * 128 + 120];
            assert_eq!((c.hash)(&m), reference(alg, &m), "{alg:?} {}", c.name);
        }
    }
}
