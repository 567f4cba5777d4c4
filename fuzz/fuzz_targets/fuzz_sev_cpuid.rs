//! The SNP CPUID table parser (`sev_backend::parse_cpuid_table`) on arbitrary bytes: the page
//! the firmware hands back after correcting the VMM's table is untrusted input.
//!
//! Never panics; accepts exactly the buffers that hold the 16-byte header and `count <= 64`
//! 48-byte entries; every field equals the one decoded here, independently, from the layout of
//! `struct snp_cpuid_table` (count u32, reserved u32, reserved u64; entries eax_in u32, ecx_in
//! u32, xcr0_in u64, xss_in u64, eax/ebx/ecx/edx u32, reserved u64). The per-leaf diff of two
//! tables never panics, names only differing entries, is empty for a table against itself
//! (also with repeated inputs), and lists as firmware-only exactly the surplus occurrences.
//!
//! The diff is also complete: a second comparison written here, from the tables' bytes (not the
//! parsed leaves), groups each table's entries by their inputs in table order and pairs the
//! n-th occurrence in the VMM's table with the n-th in the firmware's; every pair that differs
//! (or has no partner) must be in the diff, and nothing else, entries of ours first.
#![no_main]

use std::collections::BTreeMap;

use cc_populate_fuzz::le;
use libfuzzer_sys::fuzz_target;
use sev_backend::{cpuid_diff, parse_cpuid_table};

/// Inputs `(eax_in, ecx_in, xcr0_in, xss_in)` of a CPUID entry.
type Key = (u32, u32, u64, u64);
/// One expected difference: inputs, ours, firmware's.
type Expected = (Key, Option<[u32; 4]>, Option<[u32; 4]>);

/// A table's entries read from its bytes, grouped by inputs, each group in table order.
fn by_inputs(page: &[u8]) -> BTreeMap<Key, Vec<[u32; 4]>> {
    let count = le(page, 0, 4).expect("a parsed table has a header");
    let mut groups: BTreeMap<Key, Vec<[u32; 4]>> = BTreeMap::new();
    for i in 0..count as u128 {
        let o = 16 + 48 * i;
        let f = |off: u128, n: usize| le(page, o + off, n).expect("inside");
        let key = (f(0, 4) as u32, f(4, 4) as u32, f(8, 8), f(16, 8));
        let regs = [0, 1, 2, 3].map(|k| f(24 + 4 * k, 4) as u32);
        groups.entry(key).or_default().push(regs);
    }
    groups
}

/// The differences between two tables, by the rule above, sorted.
fn expected_diff(ours: &[u8], firmware: &[u8]) -> Vec<Expected> {
    let (a, b) = (by_inputs(ours), by_inputs(firmware));
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<Key> = a.keys().chain(b.keys()).copied().collect();
    for k in keys {
        let (x, y) = (a.get(&k), b.get(&k));
        let n = x.map_or(0, Vec::len).max(y.map_or(0, Vec::len));
        for j in 0..n {
            let ours = x.and_then(|v| v.get(j)).copied();
            let fw = y.and_then(|v| v.get(j)).copied();
            if ours != fw {
                out.push((k, ours, fw));
            }
        }
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into the VMM's table and the firmware's.
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (*s as usize * 16, r),
        None => (0, data),
    };
    let split = split.min(rest.len());
    let (a, b) = rest.split_at(split);
    let mut tables = Vec::new();
    for page in [a, b, rest] {
        let count = le(page, 0, 4);
        let fits = count.is_some_and(|c| c <= 64 && page.len() as u64 >= 16 + 48 * c);
        match parse_cpuid_table(page) {
            Ok(t) => {
                assert!(fits, "accepted {} bytes with count {count:?}", page.len());
                assert_eq!(Some(t.leaves.len() as u64), count);
                for (i, l) in t.leaves.iter().enumerate() {
                    let o = 16 + 48 * i as u128;
                    let f = |off: u128, n: usize| le(page, o + off, n).expect("inside");
                    assert_eq!(l.eax_in as u64, f(0, 4));
                    assert_eq!(l.ecx_in as u64, f(4, 4));
                    assert_eq!(l.xcr0_in, f(8, 8));
                    assert_eq!(l.xss_in, f(16, 8));
                    for k in 0..4 {
                        assert_eq!(l.regs[k] as u64, f(24 + 4 * k as u128, 4));
                    }
                }
                tables.push((page, t));
            }
            Err(e) => {
                assert!(!fits, "refused a well-formed table: {e}");
            }
        }
    }
    for (px, x) in &tables {
        // A table never differs from itself, repeated inputs or not.
        assert!(cpuid_diff(x, x).is_empty());
        for (py, y) in &tables {
            let count =
                |t: &sev_backend::CpuidTable, k| t.leaves.iter().filter(|l| l.key() == k).count();
            let diff = cpuid_diff(x, y);
            let mut got: Vec<Expected> = diff
                .iter()
                .map(|d| {
                    (
                        (d.eax_in, d.ecx_in, d.xcr0_in, d.xss_in),
                        d.ours,
                        d.firmware,
                    )
                })
                .collect();
            // Entries of ours come first, then those only the firmware has.
            let first_fw_only = got.iter().position(|e| e.1.is_none()).unwrap_or(got.len());
            assert!(
                got[first_fw_only..].iter().all(|e| e.1.is_none()),
                "an entry of ours after a firmware-only one"
            );
            got.sort();
            assert_eq!(
                got,
                expected_diff(px, py),
                "the diff is not the independent comparison's"
            );
            for d in &diff {
                assert_ne!(d.ours, d.firmware, "{d}");
                let key = (d.eax_in, d.ecx_in, d.xcr0_in, d.xss_in);
                let (cx, cy) = (count(x, key), count(y, key));
                if d.ours.is_some() {
                    assert!(cx > 0, "{d}");
                } else {
                    // Only the firmware's table has this occurrence of the inputs.
                    let only_fw = diff
                        .iter()
                        .filter(|e| {
                            e.ours.is_none() && (e.eax_in, e.ecx_in, e.xcr0_in, e.xss_in) == key
                        })
                        .count();
                    assert_eq!(only_fw, cy.saturating_sub(cx), "{d}");
                }
                let _ = d.to_string(); // formatting a difference must not panic
            }
        }
    }
});
