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
//!
//! The write-out is checked against a second writer that shares nothing with cc-image: `write`
//! here prints the plan file's JSON by hand from its fields (role and platform names, hex and
//! decimal numbers, string escapes written out). `serde_json`'s output of the `PlanFile` must be
//! the same JSON value as the hand-written one, and the hand-written text must load to the same
//! image and read back as the same `PlanFile`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::fmt::Write;

use cc_image::planfile::PlanFile;
use cc_image::{parse_plan, Num, Platform};
use cc_populate::{MemoryLayout, Role};
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

/// A JSON string literal, escaped by hand (RFC 8259: quote, backslash and control characters).
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A plan-file number: a JSON integer or, when `hex`, a `"0x..."` string.
fn num(out: &mut String, n: Num, hex: bool) {
    if hex {
        let _ = write!(out, "\"0x{:x}\"", n.0);
    } else {
        let _ = write!(out, "{}", n.0);
    }
}

/// The plan file's JSON, written by hand (numbers in hex when `hex`).
fn write(p: &PlanFile, hex: bool) -> String {
    let mut o = String::new();
    let _ = write!(o, "{{\"version\": ");
    num(&mut o, p.version, hex);
    let platform = match p.platform {
        Platform::Plain => "plain",
        Platform::Snp => "snp",
        Platform::Tdx => "tdx",
        Platform::Cca => "cca",
    };
    let _ = write!(o, ", \"platform\": \"{platform}\", \"regions\": [");
    for (i, r) in p.regions.iter().enumerate() {
        o.push_str(if i == 0 { "\n  {" } else { ",\n  {" });
        o.push_str("\"gpa\": ");
        num(&mut o, r.gpa, hex);
        o.push_str(", \"size\": ");
        num(&mut o, r.size, hex);
        let role = match r.role {
            Role::Measured => "measured",
            Role::Unmeasured => "unmeasured",
            Role::Zero => "zero",
            Role::Secrets => "secrets",
            Role::Cpuid => "cpuid",
            Role::Ripas => "ripas",
            other => panic!("a role this writer does not know: {other:?}"),
        };
        let _ = write!(o, ", \"role\": \"{role}\"");
        if let Some(f) = &r.file {
            o.push_str(", \"file\": ");
            string(&mut o, f.to_str().expect("read from JSON text"));
        }
        if let Some(n) = r.file_offset {
            o.push_str(", \"file_offset\": ");
            num(&mut o, n, hex);
        }
        o.push('}');
    }
    o.push(']');
    if let Some(snp) = &p.snp {
        o.push_str(",\n \"snp\": {\"vmsa\": [");
        for (i, v) in snp.vmsa.iter().enumerate() {
            o.push_str(if i == 0 {
                "{\"file\": "
            } else {
                ", {\"file\": "
            });
            string(&mut o, v.file.to_str().expect("read from JSON text"));
            if let Some(g) = v.gpa {
                o.push_str(", \"gpa\": ");
                num(&mut o, g, hex);
            }
            o.push('}');
        }
        o.push_str("]}");
    }
    if let Some(c) = &p.cca {
        o.push_str(",\n \"cca\": {\"hash\": ");
        string(&mut o, &c.hash);
        for (name, n) in [
            ("ipa_bits", c.ipa_bits),
            ("num_bps", c.num_bps),
            ("num_wps", c.num_wps),
            ("sve_vl", c.sve_vl),
        ] {
            let _ = write!(o, ", \"{name}\": ");
            num(&mut o, n, hex);
        }
        let _ = write!(o, ", \"lpa2\": {}, \"pmu_counters\": ", c.lpa2);
        match c.pmu_counters {
            Some(n) => num(&mut o, n, hex),
            None => o.push_str("null"),
        }
        o.push_str(", \"recs\": [");
        for (i, r) in c.recs.iter().enumerate() {
            o.push_str(if i == 0 { "{\"pc\": " } else { ", {\"pc\": " });
            num(&mut o, r.pc, hex);
            o.push_str(", \"gprs\": [");
            for (j, g) in r.gprs.iter().enumerate() {
                if j > 0 {
                    o.push_str(", ");
                }
                num(&mut o, *g, hex);
            }
            let _ = write!(o, "], \"runnable\": {}}}", r.runnable);
        }
        o.push(']');
        if let Some(rmm) = &c.rmm {
            o.push_str(", \"rmm\": ");
            string(&mut o, rmm);
        }
        o.push('}');
    }
    o.push_str("}\n");
    o
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
    // The independent writer: the same JSON value as serde's, the same image, the same PlanFile.
    let decimal = write(&typed, false);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&written).expect("JSON"),
        serde_json::from_str::<serde_json::Value>(&decimal)
            .unwrap_or_else(|e| panic!("the hand-written text is not JSON: {e}\n{decimal}")),
        "serde_json writes the PlanFile differently from the hand-written text:\n{written}\n{decimal}"
    );
    for hand in [decimal, write(&typed, true)] {
        let again = parse_plan(&hand, &d.join("plan.json"), d)
            .unwrap_or_else(|e| panic!("the hand-written plan file is refused: {e}\n{hand}"));
        assert_eq!(
            format!("{again:?}"),
            format!("{image:?}"),
            "the hand-written plan file loads differently:\n{hand}"
        );
        let reread: PlanFile =
            serde_json::from_str(&hand).expect("the hand-written text is a PlanFile");
        assert_eq!(reread, typed, "{hand}");
    }

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
