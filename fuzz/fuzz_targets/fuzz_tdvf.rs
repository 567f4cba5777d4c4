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
#![no_main]

use cc_populate_fuzz::*;
use libfuzzer_sys::fuzz_target;
use tdx_backend::tdvf::{self, PageAugPolicy, PlanOptions, SectionType};

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
    let meta = match tdvf::parse(image) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string(); // formatting a refusal must not panic
            return;
        }
    };
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
            let Ok(regions) = tdvf::plan_regions(image, &options) else {
                continue;
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
