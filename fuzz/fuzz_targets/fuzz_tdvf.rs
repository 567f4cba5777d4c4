//! The TDVF metadata parser and planner of `tdx-backend` on arbitrary images.
//!
//! Never panics; the OVMF table entry it finds is the one a reference walk (written here from
//! the layout) finds first from the end, as a view of the image; accepted metadata is at the
//! offset the entry names, signed "TDVF", version 1, at least two sections, its length exactly
//! the header and sections, inside the image; every section is the bytes there and passes the
//! checks QEMU applies (image bytes inside the image, memory size covering them, 4 KiB
//! aligned, non-empty, not wrapping, firmware volumes with bytes, HOB/temporary memory
//! without). The planner's regions tile each planned section's range in metadata order, with
//! content of their length (firmware volumes: a view of the image at DataOffset); a plan built
//! from them never panics.
//!
//! Refusals are checked too: the target decides, from the layout and QEMU's rules alone
//! (`must_refuse`), whether the metadata has to be refused, and the parser must accept exactly
//! the images with none of those faults. So is the planner (`plan_must_refuse`): with parsed
//! metadata it must refuse exactly a PAGE_AUG section (attribute bit 1) with MR_EXTEND (bit 0)
//! left to the guest, a firmware volume whose MemoryDataSize bytes from DataOffset run past the
//! image, a TD HOB larger than its section, and any section type but BFV, CFV, TD_HOB and
//! TEMP_MEM not left to the guest.
#![no_main]

use cc_populate_fuzz::*;
use libfuzzer_sys::fuzz_target;
use tdx_backend::tdvf::{self, PageAugPolicy, PlanOptions, SectionType};

/// Why the TDVF metadata of `image` must be refused, given the first TDX offset entry the
/// reference walk found from the end, or `None` when QEMU's `tdx_parse_tdvf_metadata` /
/// `tdvf_parse_and_check_section_entry` would take it. Written from the layout (`u32` offset
/// from the end; header `"TDVF", u32 length, u32 version, u32 count`; 32-byte sections
/// `u32 DataOffset, u32 RawDataSize, u64 MemoryAddress, u64 MemoryDataSize, u32 Type,
/// u32 Attributes`), in `u128`, without the parser.
fn must_refuse(image: &[u8], first: Option<&TableEntry>) -> Option<String> {
    let Some(e) = first else {
        return Some("no TDX metadata offset entry".into());
    };
    if e.len < 4 {
        return Some("an offset entry without an offset".into());
    }
    let size = image.len() as u128;
    let from_end = le(image, e.offset as u128, 4).expect("inside the entry") as u128;
    if from_end > size || size - from_end + 16 > size {
        return Some("the metadata header does not fit".into());
    }
    let at = size - from_end;
    if image[at as usize..at as usize + 4] != *b"TDVF" {
        return Some("no TDVF signature".into());
    }
    let h = |o: u128| le(image, at + o, 4).expect("header") as u128;
    let (length, version, count) = (h(4), h(8), h(12));
    if version != 1 {
        return Some(format!("version {version}"));
    }
    if count < 2 {
        return Some(format!("{count} sections"));
    }
    if length != 16 + 32 * count {
        return Some(format!("length {length} for {count} sections"));
    }
    if at + length > size {
        return Some("sections past the end".into());
    }
    for i in 0..count {
        let o = at + 16 + 32 * i;
        let f = |off: u128, n: usize| le(image, o + off, n).expect("section") as u128;
        let (data_offset, raw, addr, mem, ty) = (f(0, 4), f(4, 4), f(8, 8), f(16, 8), f(24, 4));
        let fault = if data_offset + raw > size {
            "image bytes past the end"
        } else if mem < raw {
            "RawDataSize above MemoryDataSize"
        } else if addr % 4096 != 0 || mem % 4096 != 0 {
            "not 4 KiB aligned"
        } else if mem == 0 {
            "empty"
        } else if addr + mem > u64::MAX as u128 {
            "wraps"
        } else if (ty == 0 || ty == 1) && raw == 0 {
            "a firmware volume (BFV 0, CFV 1) without bytes"
        } else if (ty == 2 || ty == 3) && raw != 0 {
            "TD_HOB (2) or TEMP_MEM (3) with bytes"
        } else {
            continue;
        };
        return Some(format!("section {i}: {fault}"));
    }
    None
}

/// Why the planner must refuse metadata at `at` that the parser accepted, or `None`.
fn plan_must_refuse(image: &[u8], at: u128, leave_aug: bool, hob: Option<usize>) -> Option<String> {
    let count = le(image, at + 12, 4).expect("header") as u128;
    for i in 0..count {
        let o = at + 16 + 32 * i;
        let f = |off: u128, n: usize| le(image, o + off, n).expect("section") as u128;
        let (data_offset, mem, ty, attrs) = (f(0, 4), f(16, 8), f(24, 4), f(28, 4));
        let (mr_extend, page_aug) = (attrs & 1 != 0, attrs & 2 != 0);
        if page_aug && leave_aug {
            if mr_extend {
                return Some(format!(
                    "section {i}: a measured PAGE_AUG section left to the guest"
                ));
            }
            continue;
        }
        let fault = match ty {
            0 | 1 if data_offset + mem > image.len() as u128 => "a volume past the image",
            2 if hob.is_some_and(|h| h as u128 > mem) => "a TD HOB larger than its section",
            0..=3 => continue,
            _ => "a section type QEMU does not take",
        };
        return Some(format!("section {i}: {fault}"));
    }
    None
}

fuzz_target!(|image: &[u8]| {
    let reference = ovmf_table(image);
    let first = reference
        .as_ref()
        .and_then(|(entries, _)| entries.iter().find(|e| e.guid == TDX_META_GUID).cloned());
    match tdvf::find_table_entry(image, &TDX_META_GUID) {
        Ok(data) => {
            let e = first
                .clone()
                .expect("found an entry the reference walk does not");
            assert!(
                is_view(image, data, e.offset),
                "not the first entry from the end"
            );
            assert_eq!(data.len(), e.len);
        }
        Err(err) => {
            assert!(first.is_none(), "missed entry {first:?}: {err}");
        }
    }
    let refuse = must_refuse(image, first.as_ref());
    let meta = match tdvf::parse(image) {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string(); // formatting a refusal must not panic
            assert!(refuse.is_some(), "refused well-formed metadata: {msg}");
            return;
        }
    };
    assert_eq!(refuse, None, "accepted metadata that must be refused");
    let e = first.expect("parsed metadata without the offset entry");
    let from_end = le(image, e.offset as u128, 4).expect("offset");
    let at = image.len() as u128 - from_end as u128;
    assert_eq!(meta.offset as u128, at);
    assert_eq!(image.get(at as usize..at as usize + 4), Some(&b"TDVF"[..]));
    assert_eq!(meta.version, 1);
    assert_eq!(le(image, at + 8, 4), Some(1));
    let n = meta.sections.len() as u128;
    assert!(n >= 2);
    assert_eq!(le(image, at + 12, 4).map(u128::from), Some(n));
    assert_eq!(le(image, at + 4, 4).map(u128::from), Some(16 + 32 * n));
    assert!(at + 16 + 32 * n <= image.len() as u128);
    for (i, s) in meta.sections.iter().enumerate() {
        let o = at + 16 + 32 * i as u128;
        assert_eq!(le(image, o, 4), Some(s.data_offset as u64));
        assert_eq!(le(image, o + 4, 4), Some(s.raw_data_size as u64));
        assert_eq!(le(image, o + 8, 8), Some(s.memory_address));
        assert_eq!(le(image, o + 16, 8), Some(s.memory_data_size));
        assert_eq!(le(image, o + 28, 4), Some(s.attributes as u64));
        let raw = s.raw_data_size as u128;
        assert!(s.data_offset as u128 + raw <= image.len() as u128, "{s:?}");
        assert!(s.memory_data_size as u128 >= raw, "{s:?}");
        assert!(
            s.memory_address % 4096 == 0 && s.memory_data_size % 4096 == 0,
            "{s:?}"
        );
        assert!(s.memory_data_size > 0, "{s:?}");
        assert!(
            s.memory_address as u128 + s.memory_data_size as u128 <= u64::MAX as u128,
            "{s:?}"
        );
        match s.section_type {
            SectionType::Bfv | SectionType::Cfv => assert!(raw > 0, "{s:?}"),
            SectionType::TdHob | SectionType::TempMem => assert_eq!(raw, 0, "{s:?}"),
            _ => {}
        }
    }

    let hob = [0x4du8; 64];
    for page_aug in [PageAugPolicy::AddLikeQemu, PageAugPolicy::LeaveForGuest] {
        for td_hob in [None, Some(&hob[..])] {
            let options = PlanOptions { page_aug, td_hob };
            let leave = matches!(page_aug, PageAugPolicy::LeaveForGuest);
            let refuse = plan_must_refuse(image, at, leave, td_hob.map(<[u8]>::len));
            let regions = match tdvf::plan_regions(image, &options) {
                Ok(r) => {
                    assert_eq!(refuse, None, "planned metadata that must be refused");
                    r
                }
                Err(e) => {
                    assert!(refuse.is_some(), "refused to plan good metadata: {e}");
                    continue;
                }
            };
            // The regions of each section tile its range, in order, with content of their
            // length; firmware volumes' content is the image from DataOffset.
            let mut next: Vec<Option<u64>> = vec![None; meta.sections.len()];
            let mut last_section = 0;
            for r in &regions {
                let s = meta.sections[r.section];
                assert!(r.section >= last_section, "sections out of order");
                last_section = r.section;
                assert_eq!(r.info, s);
                let cur = next[r.section].unwrap_or(s.memory_address);
                assert_eq!(r.spec.gpa, cur, "section {} not tiled: {s:?}", r.section);
                assert!(r.spec.len > 0);
                next[r.section] = Some(cur + r.spec.len);
                if let cc_populate::Content::Bytes(b) = &r.spec.content {
                    assert_eq!(b.len() as u64, r.spec.len);
                    if matches!(s.section_type, SectionType::Bfv | SectionType::Cfv) {
                        assert!(is_view(image, b, s.data_offset as usize), "{s:?}");
                    }
                }
            }
            for (i, s) in meta.sections.iter().enumerate() {
                if let Some(end) = next[i] {
                    assert_eq!(
                        end as u128,
                        s.memory_address as u128 + s.memory_data_size as u128,
                        "section {i} not covered: {s:?}"
                    );
                }
            }
            if let Err(e) =
                tdvf::build_plan(image, &options, &cc_populate::MemoryLayout::unbounded())
            {
                let _ = e.to_string(); // formatting a refusal must not panic
            }
        }
    }
});
