//! The SNP CPUID table parser (`sev_backend::parse_cpuid_table`) on arbitrary bytes: the page
//! the firmware hands back after correcting the VMM's table is untrusted input.
//!
//! Never panics; accepts exactly the buffers that hold the 16-byte header and `count <= 64`
//! 48-byte entries; every field equals the one decoded here, independently, from the layout of
//! `struct snp_cpuid_table` (count u32, reserved u32, reserved u64; entries eax_in u32, ecx_in
//! u32, xcr0_in u64, xss_in u64, eax/ebx/ecx/edx u32, reserved u64). The per-leaf diff of two
//! tables never panics, names only differing entries, is empty for a table against itself
//! (also with repeated inputs), and lists as firmware-only exactly the surplus occurrences.
#![no_main]

use cc_populate_fuzz::le;
use libfuzzer_sys::fuzz_target;
use sev_backend::{cpuid_diff, parse_cpuid_table};

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
                tables.push(t);
            }
            Err(e) => {
                assert!(!fits, "refused a well-formed table: {e}");
            }
        }
    }
    for x in &tables {
        // A table never differs from itself, repeated inputs or not.
        assert!(cpuid_diff(x, x).is_empty());
        for y in &tables {
            let count =
                |t: &sev_backend::CpuidTable, k| t.leaves.iter().filter(|l| l.key() == k).count();
            let diff = cpuid_diff(x, y);
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
