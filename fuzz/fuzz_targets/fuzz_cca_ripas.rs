//! Arm CCA range arithmetic: the RTT geometry of an arbitrary IPA width and the split of an
//! arbitrary RIPAS range into RTT entries (`cca_backend::rtt_geometry`, `ripas_split`).
//!
//! Never panics or overflows; a geometry starts at level -1..=3 with 1 to 16 tables that reach
//! `2^ipa_bits` bytes (concatenated tables exactly, a single table with more than 16 entries); a split is accepted exactly for non-empty,
//! 4 KiB-aligned ranges below the unprotected half, and covers the range exactly once with
//! blocks each aligned to its size, of a size the starting level allows (level 1 and below may
//! hold 1 GiB blocks, level 2 2 MiB ones), always the largest that fits.
#![no_main]

use arbitrary::Arbitrary;
use cc_populate_fuzz::Addr;
use cca_backend::{ripas_split, rtt_geometry};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    ipa_bits: u8,
    lpa2: bool,
    base: Addr,
    top: Addr,
}

/// Blocks a split may take; more are not walked (a split is linear in its blocks).
const MAX_BLOCKS: u128 = 1 << 14;

fuzz_target!(|input: Input| {
    let bits = input.ipa_bits;
    let max_bits = if input.lpa2 { 52 } else { 48 };
    let geometry = rtt_geometry(bits, input.lpa2);
    let ok_bits = (32..=max_bits).contains(&bits);
    assert_eq!(
        geometry.is_ok(),
        ok_bits,
        "ipa_bits {bits} lpa2 {}",
        input.lpa2
    );
    let Ok(g) = geometry else { return };
    assert!((-1..=3).contains(&g.start_level), "{g:?}");
    assert!((1..=16).contains(&g.start_tables), "{g:?}");
    // One entry at level L maps 2^(12 + 9 (3 - L)) bytes; a table holds up to 512 entries.
    let entry = 12 + 9 * (3 - g.start_level as i32) as u32;
    let reach = (g.start_tables as u128) << (entry + 9);
    assert!(reach >= 1u128 << bits, "{g:?} does not reach 2^{bits}");
    if g.start_tables > 1 {
        // Concatenated tables are full.
        assert_eq!(reach, 1u128 << bits, "{g:?} at {bits} bits");
    } else {
        // A single (possibly partial) table has more than 16 entries, else the tables one
        // level down would be concatenated instead; and it is not bigger than needed.
        assert!(
            (1u128 << bits) > 16u128 << entry || g.start_level == 3,
            "{g:?} at {bits} bits"
        );
        assert!(reach < 1u128 << (bits + 9), "{g:?} at {bits} bits");
    }
    // Block sizes from the starting level (blocks exist at levels 1, 2 and 3 with 4 KiB).
    let sizes: Vec<u64> = (g.start_level.max(1)..=3)
        .map(|l| 1u64 << (12 + 9 * (3 - l as u32)))
        .collect();

    let (base, top) = (input.base.get(&[]), input.top.get(&[]));
    let ok_range =
        base < top && base % 4096 == 0 && top % 4096 == 0 && (top as u128) <= 1u128 << (bits - 1);
    let split = ripas_split(base, top, bits, input.lpa2);
    assert_eq!(
        split.is_ok(),
        ok_range,
        "[{base:#x}, {top:#x}) at {bits} bits"
    );
    let Ok(split) = split else { return };
    let largest = *sizes.first().expect("a size");
    if (top - base) as u128 / largest as u128 + 2 * 512 * sizes.len() as u128 > MAX_BLOCKS {
        return;
    }
    let mut cur = base;
    for (b, e) in split {
        assert_eq!(b, cur, "gap or overlap at {b:#x}");
        assert!(e > b && e <= top);
        let s = e - b;
        assert!(
            sizes.contains(&s),
            "block size {s:#x} not allowed at start level {}",
            g.start_level
        );
        assert_eq!(b % s, 0, "block {b:#x}+{s:#x} misaligned");
        for &bigger in sizes.iter().filter(|x| **x > s) {
            assert!(
                b % bigger != 0 || (b as u128 + bigger as u128) > top as u128,
                "block {b:#x}+{s:#x}: {bigger:#x} would fit"
            );
        }
        cur = e;
    }
    assert_eq!(cur, top);
});
