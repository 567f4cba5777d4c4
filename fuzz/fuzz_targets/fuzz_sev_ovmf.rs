//! The OVMF parser of `sev-backend` (GUIDed table and SEV metadata) and the SNP firmware
//! planner on arbitrary images.
//!
//! Never panics; every entry it returns is a view of the image at the offset it names, and the
//! table it walked is the one a reference walk (written here from the layout) finds; the SEV
//! metadata lies inside the image, starts with "ASEV", and its sections are the bytes there.
//! The planner's regions are the image ending at 4 GiB then 4 KiB-aligned, non-empty sections
//! ending at or below 4 GiB; a plan built from them never panics.
//!
//! Refusals are checked too: the target decides, from the layout alone (`must_refuse`), whether
//! an image has to be refused (no footer, a malformed table, a SEV metadata entry whose offset
//! or header does not fit or is not "ASEV", a length too short for its sections), and the
//! parser must accept exactly the others. The planner is judged the same way: it must refuse
//! exactly when the image is not a non-zero multiple of 4 KiB up to 4 GiB, the parser must
//! refuse it, it has no SEV metadata, or a section is empty, not 4 KiB aligned or ends past
//! 4 GiB (`plan_must_refuse`, from the bytes).
#![no_main]

use cc_populate::{MemoryLayout, PlanBuilder, Role};
use cc_populate_fuzz::*;
use libfuzzer_sys::fuzz_target;
use sev_backend::{parse_ovmf, plan_ovmf, verifier_caps, SectionPolicy};

const FOUR_GIB: u64 = 1 << 32;

/// Why the OVMF format says `image` cannot be parsed, or `None` when it can: the GUIDed table
/// (footer GUID 48 bytes before the end, a `u16` length before it, entries `data, u16 length,
/// GUID` back to back) must be whole; if an entry carries the SEV metadata GUID, the first
/// from the end must hold a `u32` offset from the end of the image to a header `"ASEV", u32
/// length, u32 version, u32 count` inside the image whose length holds `16 + 12 * count`
/// bytes and stays inside the image. Written from the layout, in `u128`, without the parser.
fn must_refuse(image: &[u8]) -> Option<&'static str> {
    let Some((entries, whole)) = ovmf_table(image) else {
        return Some("no GUIDed table footer");
    };
    if !whole {
        return Some("a malformed GUIDed table");
    }
    // No SEV metadata entry: nothing more to refuse.
    let e = entries.iter().find(|e| e.guid == SEV_META_GUID)?;
    if e.len < 4 {
        return Some("a SEV metadata entry without an offset");
    }
    let size = image.len() as u128;
    let from_end = le(image, e.offset as u128, 4).expect("inside the entry") as u128;
    if from_end > size {
        return Some("a SEV metadata offset before the image");
    }
    let at = size - from_end;
    if at + 16 > size {
        return Some("a SEV metadata header past the end");
    }
    if image[at as usize..at as usize + 4] != *b"ASEV" {
        return Some("no ASEV signature");
    }
    let len = le(image, at + 4, 4).expect("header") as u128;
    let count = le(image, at + 12, 4).expect("header") as u128;
    if 16 + 12 * count > len {
        return Some("a SEV metadata length too short for its sections");
    }
    if at + len > size {
        return Some("SEV metadata past the end");
    }
    None
}

/// Why the SNP planner must refuse `image`, or `None` (see the module documentation).
fn plan_must_refuse(image: &[u8]) -> Option<&'static str> {
    let size = image.len() as u128;
    if size == 0 || !size.is_multiple_of(4096) || size > FOUR_GIB as u128 {
        return Some("an image that cannot end at 4 GiB in whole pages");
    }
    if let Some(why) = must_refuse(image) {
        return Some(why);
    }
    let (entries, _) = ovmf_table(image).expect("parsed");
    let Some(e) = entries.iter().find(|e| e.guid == SEV_META_GUID) else {
        return Some("no SEV metadata");
    };
    let at = size - le(image, e.offset as u128, 4).expect("offset") as u128;
    let count = le(image, at + 12, 4).expect("header") as u128;
    for i in 0..count {
        let o = at + 16 + 12 * i;
        let base = le(image, o, 4).expect("section") as u128;
        let len = le(image, o + 4, 4).expect("section") as u128;
        if len == 0
            || !base.is_multiple_of(4096)
            || !len.is_multiple_of(4096)
            || base + len > FOUR_GIB as u128
        {
            return Some("a section that is empty, unaligned or past 4 GiB");
        }
    }
    None
}

fuzz_target!(|image: &[u8]| {
    let reference = ovmf_table(image);
    let refuse = must_refuse(image);
    match parse_ovmf(image) {
        Ok(parsed) => {
            assert_eq!(refuse, None, "accepted an image the format refuses");
            assert!(std::ptr::eq(parsed.image, image));
            let (entries, whole) =
                reference.expect("parsed an image the reference finds no table in");
            assert!(whole, "parsed a table the reference finds malformed");
            assert_eq!(parsed.entries.len(), entries.len());
            for (e, r) in parsed.entries.iter().zip(&entries) {
                assert_eq!((e.guid, e.offset, e.data.len()), (r.guid, r.offset, r.len));
                assert!(is_view(image, e.data, e.offset));
            }
            let has_meta = entries.iter().any(|e| e.guid == SEV_META_GUID);
            assert_eq!(parsed.sev_metadata.is_some(), has_meta);
            if let Some(m) = &parsed.sev_metadata {
                let first = entries
                    .iter()
                    .find(|e| e.guid == SEV_META_GUID)
                    .expect("entry");
                let from_end = le(image, first.offset as u128, 4).expect("offset") as usize;
                assert_eq!(m.offset, image.len() - from_end);
                assert_eq!(&image[m.offset..m.offset + 4], b"ASEV");
                let at = m.offset as u128;
                assert_eq!(le(image, at + 8, 4), Some(m.version as u64));
                assert_eq!(le(image, at + 12, 4), Some(m.sections.len() as u64));
                let len = le(image, at + 4, 4).expect("len") as u128;
                assert!(16 + 12 * m.sections.len() as u128 <= len);
                assert!(at + len <= image.len() as u128);
                for (i, s) in m.sections.iter().enumerate() {
                    let o = at + 16 + 12 * i as u128;
                    assert_eq!(le(image, o, 4), Some(s.base as u64));
                    assert_eq!(le(image, o + 4, 4), Some(s.len as u64));
                }
            }
        }
        Err(e) => {
            let msg = e.to_string(); // formatting a refusal must not panic
            assert!(refuse.is_some(), "refused a well-formed image: {msg}");
        }
    }
    let plan_refuse = plan_must_refuse(image);
    for policy in [SectionPolicy::QEMU, SectionPolicy::UNMEASURED] {
        let regions = match plan_ovmf(image, policy) {
            Ok(r) => {
                assert_eq!(plan_refuse, None, "planned an image that must be refused");
                r
            }
            Err(e) => {
                assert!(plan_refuse.is_some(), "refused to plan a good image: {e}");
                continue;
            }
        };
        let size = image.len() as u64;
        let fw = regions.first().expect("the firmware region");
        assert_eq!(
            (fw.gpa, fw.len, fw.role()),
            (FOUR_GIB - size, size, Role::Measured)
        );
        assert!(fw.content.is_some_and(|c| std::ptr::eq(c, image)));
        for r in &regions[1..] {
            assert!(r.len > 0 && r.gpa % 4096 == 0 && r.len % 4096 == 0, "{r:?}");
            assert!(r.gpa as u128 + r.len as u128 <= FOUR_GIB as u128, "{r:?}");
            if let Some(c) = r.content {
                assert_eq!(c.len() as u64, r.len);
            }
        }
        let mut b = PlanBuilder::with_capacity(regions.len());
        for r in &regions {
            b.push(r.to_spec());
        }
        if let Err(e) = b.build(&verifier_caps(), &MemoryLayout::unbounded()) {
            let _ = e.to_string(); // formatting a refusal must not panic
        }
    }
});
