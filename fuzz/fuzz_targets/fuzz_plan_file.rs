//! The plan-file loader of `cc-image` on arbitrary text: `parse_plan` with content files in a
//! scratch folder (two small files the seeds name, so accepted plans are reached).
//!
//! Never panics; every refusal is one line (the CLI prints it as such); an accepted image's
//! regions are non-empty, do not wrap, and carry exactly their size of data or none; its plan,
//! validated for its platform, builds; small images measure (or refuse with a typed error)
//! without panicking. An accepted file survives a write-out and reload unchanged: read as the
//! typed [`PlanFile`] (which every accepted file must be), written with `serde_json` and parsed
//! again, it loads to the same image (compared field by field through `Debug`, content bytes
//! included), and the written text reads back as the same `PlanFile`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cc_image::planfile::PlanFile;
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
            assert!(!msg.contains('\n'), "a refusal must be one line: {msg:?}");
            return;
        }
    };
    // Write-out and reload. `serde_json::Value` first, as `parse_plan` reads it (a repeated
    // key keeps its last value there, where a typed read would refuse it).
    let value: serde_json::Value = serde_json::from_str(text).expect("parse_plan read it");
    let typed: PlanFile = serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("an accepted plan file is not a PlanFile: {e}"));
    let written = serde_json::to_string_pretty(&typed).expect("a PlanFile serializes");
    let again = parse_plan(&written, &d.join("plan.json"), d)
        .unwrap_or_else(|e| panic!("the written plan file is refused: {e}\n{written}"));
    assert_eq!(
        format!("{again:?}"),
        format!("{image:?}"),
        "the written plan file loads differently:\n{written}"
    );
    let reread: PlanFile = serde_json::from_str(&written).expect("the written text is a PlanFile");
    assert_eq!(reread, typed, "{written}");

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
