//! `checksum` against values derived without the crate's code, and the detection properties its
//! documentation promises.
//!
//! Independent sources of expected values:
//! - vectors computed with Python's arbitrary-precision integers from the definition in the README
//!   (`sum of mix(w[i] ^ ((gpa + 8i) * POSITION_KEY))` modulo 2^64), pinned below;
//! - the same definition evaluated by `python3` at test time on random inputs
//!   (`tests/checksum_python.rs`);
//! - a second Rust model written from the definition in another shape (each word's address
//!   multiplied out in 128 bits, no running key).
//!
//! The guest's own code is checked against `checksum` on real KVM (`tests/kvm.rs`).

use guest_check::{checksum, mix, MIX_K1, MIX_K2, POSITION_KEY};
use proptest::prelude::*;

fn to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// MurmurHash3's fmix64, written out with 128-bit products truncated.
fn model_mix(x: u64) -> u64 {
    let lo = |v: u128| (v & u128::from(u64::MAX)) as u64;
    let x = x ^ (x >> 33);
    let x = lo(u128::from(x) * u128::from(0xff51_afd7_ed55_8ccd_u64));
    let x = x ^ (x >> 33);
    let x = lo(u128::from(x) * u128::from(0xc4ce_b9fe_1a85_ec53_u64));
    x ^ (x >> 33)
}

/// The definition, word by word, each address computed from scratch.
fn model(gpa: u64, words: &[u64]) -> u64 {
    let lo = |v: u128| (v & u128::from(u64::MAX)) as u64;
    words.iter().enumerate().fold(0u64, |sum, (i, w)| {
        let addr = lo(u128::from(gpa) + 8 * i as u128);
        let key = lo(u128::from(addr) * u128::from(0x9e37_79b9_7f4a_7c15_u64));
        lo(u128::from(sum) + u128::from(model_mix(w ^ key)))
    })
}

/// The checksum this crate used before: `a = 1, b = 0; a += w; b += a; a ^ rol(b, 32)`. Linear
/// in the words, and blind to position beyond a weight per index.
fn old_linear(words: &[u64]) -> u64 {
    let (mut a, mut b) = (1u64, 0u64);
    for w in words {
        a = a.wrapping_add(*w);
        b = b.wrapping_add(a);
    }
    a ^ b.rotate_left(32)
}

#[test]
fn constants_are_the_published_ones() {
    // MurmurHash3's fmix64 constants and the 64-bit golden ratio, 2^64 / phi rounded to odd.
    assert_eq!(MIX_K1, 0xff51_afd7_ed55_8ccd);
    assert_eq!(MIX_K2, 0xc4ce_b9fe_1a85_ec53);
    assert_eq!(POSITION_KEY, 0x9e37_79b9_7f4a_7c15);
    // fmix64(1), as published for MurmurHash3 (and computed by Python below).
    assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
}

#[test]
fn vectors_computed_with_python() {
    // python3: M = 2**64 - 1; mix as in the README; cs(gpa, b) = sum(mix(w ^ ((gpa+i)*K & M))) & M
    assert_eq!(mix(u64::MAX), 0x64b5_720b_4b82_5f21);
    assert_eq!(checksum(0, &[0u8; 4096]).unwrap(), 0xf329_c02c_6dcc_c3af);
    let ramp: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    assert_eq!(checksum(0x1000, &ramp).unwrap(), 0xff04_cc66_af4f_6c1f);
    assert_eq!(
        checksum(0x20_0003, b"ccpop demo: guest check\0").unwrap(),
        0xe595_445d_b5d7_0daf
    );
    assert_eq!(
        checksum(u64::MAX - 7, &u64::MAX.to_le_bytes()).unwrap(),
        0x11e5_b73e_31c3_5100
    );
    // The demo's junk page at GPA 0.
    assert_eq!(checksum(0, &[0xee; 4096]).unwrap(), 0x7854_ac9f_7e76_7134);
}

/// `bad` fools the old linear function but not `checksum` at `gpa`.
fn old_blind_new_sees(gpa: u64, good: &[u64], bad: &[u64], what: &str) {
    assert_ne!(good, bad, "{what}");
    assert_eq!(
        old_linear(bad),
        old_linear(good),
        "the old blind spot: {what}"
    );
    assert_ne!(
        checksum(gpa, &to_bytes(bad)).unwrap(),
        checksum(gpa, &to_bytes(good)).unwrap(),
        "{what}"
    );
}

/// A page of words with a known word sum: random words, the last one fixing the sum to `sum`.
fn page_with_sum(seed: u64, sum: u64) -> Vec<u64> {
    let mut x = seed | 1;
    let mut page: Vec<u64> = (0..511)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    let partial = page.iter().fold(0u64, |s, w| s.wrapping_add(*w));
    page.push(sum.wrapping_sub(partial));
    page
}

/// Two different 4 KiB pages with equal word sums swapped inside one range: the old function is
/// blind to it (`a` is unchanged, and `b` moves by the distance times the difference of the
/// sums, which is 0).
#[test]
fn old_blind_spot_equal_sum_pages_swapped() {
    let p = page_with_sum(1, 0xabcd);
    let q = page_with_sum(2, 0xabcd);
    let filler = page_with_sum(3, 5);
    // Adjacent pages, and pages with one page between them.
    for between in [0usize, 1] {
        let layout = |first: &[u64], second: &[u64]| {
            let mut m = first.to_vec();
            for _ in 0..between {
                m.extend_from_slice(&filler);
            }
            m.extend_from_slice(second);
            m
        };
        let what = format!("{between} pages between");
        old_blind_new_sees(0x10_0000, &layout(&p, &q), &layout(&q, &p), &what);
    }
}

/// Bit 63 flipped in words `i` and `i + 2k`: the old function is blind to it (each flip adds
/// 2^63 to `a`, two of them cancel, and `b` moves by 2^63 times an even number).
#[test]
fn old_blind_spot_bit_63_twice_an_even_distance_apart() {
    let words: Vec<u64> = page_with_sum(7, 0);
    for (i, dist) in [(0usize, 2usize), (3, 4), (100, 300), (10, 500)] {
        let mut bad = words.clone();
        bad[i] ^= 1 << 63;
        bad[i + dist] ^= 1 << 63;
        old_blind_new_sees(0x4000, &words, &bad, &format!("flips at {i}, +{dist}"));
    }
}

/// `+d, -2d, +d` on three consecutive words: `a` and `b` of the old function are unchanged.
#[test]
fn old_blind_spot_plus_d_minus_2d_plus_d() {
    let words: Vec<u64> = page_with_sum(9, 0);
    for (i, d) in [(0usize, 1u64), (17, 0x1000), (509, u64::MAX / 3)] {
        let mut bad = words.clone();
        bad[i] = bad[i].wrapping_add(d);
        bad[i + 1] = bad[i + 1].wrapping_sub(d.wrapping_mul(2));
        bad[i + 2] = bad[i + 2].wrapping_add(d);
        old_blind_new_sees(0x8000, &words, &bad, &format!("+{d:#x} at {i}"));
    }
}

/// What the documentation says is not detected: someone who knows the function makes a second
/// content with the same checksum by changing two words.
#[test]
fn a_collision_can_be_constructed_by_anyone_who_knows_the_function() {
    // Inverse of mix: x ^= x >> 33 is its own inverse (33 >= 64 / 2); multiplication by an odd
    // constant is inverted by its inverse modulo 2^64 (Newton's iteration, 6 steps for 64 bits).
    let inv = |k: u64| {
        (0..6).fold(k, |y, _| {
            y.wrapping_mul(2u64.wrapping_sub(k.wrapping_mul(y)))
        })
    };
    let unmix = |x: u64| {
        let x = x ^ (x >> 33);
        let x = x.wrapping_mul(inv(MIX_K2));
        let x = x ^ (x >> 33);
        let x = x.wrapping_mul(inv(MIX_K1));
        x ^ (x >> 33)
    };
    assert_eq!(unmix(mix(0x1234_5678)), 0x1234_5678);
    let gpa = 0x20_0000u64;
    let words: Vec<u64> = (1..=64).collect();
    let key = |i: usize| (gpa + 8 * i as u64).wrapping_mul(POSITION_KEY);
    let term = |i: usize, w: u64| mix(w ^ key(i));
    let mut forged = words.clone();
    forged[5] = 0xdead_beef;
    // Word 9 absorbs the difference.
    let t9 = term(9, words[9])
        .wrapping_add(term(5, words[5]))
        .wrapping_sub(term(5, forged[5]));
    forged[9] = unmix(t9) ^ key(9);
    assert_ne!(forged, words);
    assert_eq!(
        checksum(gpa, &to_bytes(&forged)).unwrap(),
        checksum(gpa, &to_bytes(&words)).unwrap()
    );
}

proptest! {
    #[test]
    fn matches_the_model(
        gpa in any::<u64>(),
        words in proptest::collection::vec(any::<u64>(), 0..300),
    ) {
        prop_assert_eq!(checksum(gpa, &to_bytes(&words)).unwrap(), model(gpa, &words));
    }

    /// The documented certainty: one changed word always changes the result.
    #[test]
    fn one_changed_word_always_changes_it(
        gpa in any::<u64>(),
        words in proptest::collection::vec(any::<u64>(), 1..100),
        at in any::<prop::sample::Index>(),
        new in any::<u64>(),
    ) {
        let i = at.index(words.len());
        prop_assume!(words[i] != new);
        let mut bad = words.clone();
        bad[i] = new;
        prop_assert_ne!(
            checksum(gpa, &to_bytes(&bad)).unwrap(),
            checksum(gpa, &to_bytes(&words)).unwrap()
        );
    }

    /// The same bytes one word away (a shift by 8 bytes) give another value.
    #[test]
    fn shifted_by_a_word_changes_it(
        gpa in 0u64..(1 << 52),
        words in proptest::collection::vec(any::<u64>(), 1..100),
    ) {
        let bytes = to_bytes(&words);
        prop_assert_ne!(checksum(gpa, &bytes).unwrap(), checksum(gpa + 8, &bytes).unwrap());
    }

    /// Adjacent different words swapped.
    #[test]
    fn swapped_words_change_it(
        gpa in any::<u64>(),
        mut words in proptest::collection::vec(any::<u64>(), 2..100),
        at in any::<prop::sample::Index>(),
    ) {
        let i = at.index(words.len() - 1);
        prop_assume!(words[i] != words[i + 1]);
        let before = checksum(gpa, &to_bytes(&words)).unwrap();
        words.swap(i, i + 1);
        prop_assert_ne!(checksum(gpa, &to_bytes(&words)).unwrap(), before);
    }

    /// Additive over consecutive pieces, as documented.
    #[test]
    fn additive_over_pieces(
        gpa in any::<u64>(),
        words in proptest::collection::vec(any::<u64>(), 0..100),
        at in any::<prop::sample::Index>(),
    ) {
        let cut = at.index(words.len() + 1);
        let (a, b) = words.split_at(cut);
        let whole = checksum(gpa, &to_bytes(&words)).unwrap();
        let parts = checksum(gpa, &to_bytes(a))
            .unwrap()
            .wrapping_add(checksum(gpa.wrapping_add(8 * cut as u64), &to_bytes(b)).unwrap());
        prop_assert_eq!(whole, parts);
    }

    /// The copy program's model (`CheckGuest::copy`: each copy a forward byte copy, in table
    /// order) against the guest check: a copy that lands a few bytes off, or reads a few bytes
    /// off, changes the checksum of the destination range; the intended copy reproduces the
    /// source's bytes at the destination's address.
    #[test]
    fn misdirected_copies_change_the_destination_checksum(
        src_words in proptest::collection::vec(any::<u64>(), 2..64),
        junk in any::<u64>(),
        off in 1usize..16,
        wrong_src in any::<bool>(),
    ) {
        let src = to_bytes(&src_words);
        let n = src.len();
        // Guest memory: the source at 0, the destination at 0x1000, junk elsewhere.
        let mut memory = to_bytes(&vec![junk; 0x3000 / 8]);
        memory[..n].copy_from_slice(&src);
        let copy = |memory: &mut Vec<u8>, from: usize, to: usize| {
            let piece = memory[from..from + n].to_vec();
            memory[to..to + n].copy_from_slice(&piece);
        };
        let mut good = memory.clone();
        copy(&mut good, 0, 0x1000);
        let mut bad = memory.clone();
        if wrong_src {
            copy(&mut bad, off, 0x1000);
        } else {
            copy(&mut bad, 0, 0x1000 + off);
        }
        let at = |m: &Vec<u8>| checksum(0x1000, &m[0x1000..0x1000 + n]).unwrap();
        prop_assert_eq!(at(&good), checksum(0x1000, &src).unwrap());
        if good[0x1000..0x1000 + n] != bad[0x1000..0x1000 + n] {
            prop_assert_ne!(at(&good), at(&bad));
        }
    }

    /// Lengths that are not a multiple of 8 are refused, never truncated.
    #[test]
    fn partial_words_are_refused(len in 0usize..200) {
        let bytes = vec![0xa5u8; len];
        prop_assert_eq!(checksum(0, &bytes).is_ok(), len % 8 == 0);
    }
}
