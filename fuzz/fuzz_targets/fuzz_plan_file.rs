//! The plan-file loader of `cc-image` on arbitrary text: `parse_plan` with content files in a
//! scratch folder (two small files the seeds name, so accepted plans are reached).
//!
//! Never panics; every refusal is one line (the CLI prints it as such); an accepted image's
//! regions are non-empty, do not wrap, and carry exactly their size of data or none; its plan,
//! validated for its platform, builds; small images measure (or refuse with a typed error)
//! without panicking.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cc_image::{parse_plan, Platform};
use cc_populate::MemoryLayout;
use libfuzzer_sys::fuzz_target;

/// Largest image (sum of region sizes) measured per input.
const MEASURE_LIMIT: u128 = 4 << 20;

/// A scratch folder holding `a.bin` (16 KiB) and `b.bin` (4 KiB, a VMSA-sized page).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("fuzz_plan_file.{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        let a: Vec<u8> = (0..16384u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(d.join("a.bin"), a).expect("a.bin");
        std::fs::write(d.join("b.bin"), [0x5au8; 4096]).expect("b.bin");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let d = dir();
    let image = match parse_plan(text, &d.join("plan.json"), d) {
        Ok(i) => i,
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(!msg.contains('\n'), "a refusal must be one line: {msg:?}");
            return;
        }
    };
    let platform = image.platform();
    let mut total = 0u128;
    for r in image.regions() {
        assert!(r.size() > 0, "empty region at {:#x}", r.gpa());
        assert!(
            r.gpa() as u128 + r.size() as u128 <= u64::MAX as u128,
            "region wraps"
        );
        if let Some(b) = r.data() {
            assert_eq!(b.len() as u64, r.size(), "region at {:#x}", r.gpa());
        }
        total += r.size() as u128;
    }
    let plan = image
        .plan(&platform.caps(), &MemoryLayout::unbounded())
        .expect("an accepted plan file builds a plan for its own platform");
    assert_eq!(plan.regions().len(), image.regions().len());
    if platform != Platform::Plain && total <= MEASURE_LIMIT {
        match image.measure() {
            Ok(digest) => assert!(
                matches!(digest.len(), 32 | 48 | 64),
                "{} bytes",
                digest.len()
            ),
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    }
});
