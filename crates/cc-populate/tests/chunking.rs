//! Chunking: property tests against a naive oracle.

use cc_populate::{
    BackendCaps, Conversion, MemoryLayout, Memslot, PlanBuilder, Role, RoleSet, HUGE_1G, HUGE_2M,
};
use proptest::prelude::*;

const G: u64 = 4096;

fn caps(max_chunk: u64, huge: bool) -> BackendCaps {
    BackendCaps {
        granule: G,
        max_chunk,
        hugepage_chunks: huge,
        in_place: true,
        conversion: Conversion::NotNeeded,
        roles: RoleSet::COMMON,
    }
}

#[test]
fn aligned_64m_in_2m_chunks_takes_32_calls() {
    let plan = PlanBuilder::new()
        .in_place(1 << 30, 64 << 20, Role::Measured)
        .build(&caps(HUGE_2M, true), &MemoryLayout::unbounded())
        .unwrap();
    let chunks: Vec<_> = plan.chunks(0, 0).collect();
    assert_eq!(chunks.len(), 32);
    assert!(chunks
        .iter()
        .all(|(g, l)| *l == HUGE_2M && g % HUGE_2M == 0));
    assert_eq!(plan.chunk_count(), 32);
}

#[test]
fn unaligned_head_is_cut_at_the_hugepage_boundary() {
    // [1 MiB, 5 MiB) with 2 MiB chunks: the 2 MiB span [2, 4) stays whole.
    let plan = PlanBuilder::new()
        .in_place(1 << 20, 4 << 20, Role::Measured)
        .build(&caps(HUGE_2M, true), &MemoryLayout::unbounded())
        .unwrap();
    let chunks: Vec<_> = plan.chunks(0, 0).collect();
    assert_eq!(
        chunks,
        vec![(1 << 20, 1 << 20), (2 << 20, 2 << 20), (4 << 20, 1 << 20)]
    );
    // Without hugepage awareness the same region is cut every 2 MiB from its start.
    let plan = PlanBuilder::new()
        .in_place(1 << 20, 4 << 20, Role::Measured)
        .build(&caps(HUGE_2M, false), &MemoryLayout::unbounded())
        .unwrap();
    let chunks: Vec<_> = plan.chunks(0, 0).collect();
    assert_eq!(chunks, vec![(1 << 20, 2 << 20), (3 << 20, 2 << 20)]);
}

#[test]
fn gigabyte_spans_stay_whole_with_big_chunks() {
    let plan = PlanBuilder::new()
        .in_place(HUGE_1G - HUGE_2M, HUGE_1G + 2 * HUGE_2M, Role::Measured)
        .build(&caps(4 * HUGE_1G, true), &MemoryLayout::unbounded())
        .unwrap();
    let chunks: Vec<_> = plan.chunks(0, 0).collect();
    // The head up to the 1 GiB boundary, then the rest whole (it fits in one call).
    assert_eq!(
        chunks,
        vec![(HUGE_1G - HUGE_2M, HUGE_2M), (HUGE_1G, HUGE_1G + HUGE_2M)]
    );
    // With 1 GiB calls the gigabyte stays whole and the tail is its own call.
    let plan = PlanBuilder::new()
        .in_place(HUGE_1G - HUGE_2M, HUGE_1G + 2 * HUGE_2M, Role::Measured)
        .build(&caps(HUGE_1G, true), &MemoryLayout::unbounded())
        .unwrap();
    let chunks: Vec<_> = plan.chunks(0, 0).collect();
    assert_eq!(
        chunks,
        vec![
            (HUGE_1G - HUGE_2M, HUGE_2M),
            (HUGE_1G, HUGE_1G),
            (2 * HUGE_1G, HUGE_2M)
        ]
    );
}

#[test]
fn chunks_from_an_offset_resume_mid_region() {
    let plan = PlanBuilder::new()
        .in_place(0, 8 << 20, Role::Measured)
        .build(&caps(HUGE_2M, true), &MemoryLayout::unbounded())
        .unwrap();
    let chunks: Vec<_> = plan.chunks(0, 3 * G).collect();
    assert_eq!(chunks[0], (3 * G, HUGE_2M - 3 * G));
    assert_eq!(chunks.len(), 4);
    assert_eq!(plan.chunks(0, 8 << 20).count(), 0);
    assert_eq!(plan.chunks(1, 0).count(), 0);
}

/// Checks one region's chunks against the rules, naively.
fn check_chunks(
    gpa: u64,
    len: u64,
    c: &BackendCaps,
    chunks: &[(u64, u64)],
) -> Result<(), TestCaseError> {
    let mut cur = gpa;
    for (g, l) in chunks {
        prop_assert_eq!(*g, cur, "chunks must be contiguous");
        prop_assert!(*l > 0 && *l <= c.max_chunk && l % c.granule == 0);
        cur += l;
    }
    prop_assert_eq!(cur, gpa + len, "chunks must cover the region exactly");
    if c.hugepage_chunks {
        for h in [HUGE_2M, HUGE_1G] {
            if h > c.max_chunk {
                continue;
            }
            // No boundary strictly inside an aligned span wholly in the region.
            for (g, _) in chunks.iter().skip(1) {
                let span = g - g % h;
                if g % h != 0 && span >= gpa && span + h <= gpa + len {
                    return Err(TestCaseError::fail(format!(
                        "boundary {g:#x} cuts the {h:#x} span at {span:#x}"
                    )));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunks_cover_exactly_and_keep_spans(
        start_pages in 0u64..(3 << 18),
        len_pages in 1u64..(3 << 18),
        max_pages in prop_oneof![Just(512u64), Just(1u64), 1u64..2048, Just(1u64 << 18), Just(3u64 << 18)],
        huge in any::<bool>(),
    ) {
        let c = caps(max_pages * G, huge);
        let (gpa, len) = (start_pages * G, len_pages * G);
        let plan = PlanBuilder::new().in_place(gpa, len, Role::Measured).build(&c, &MemoryLayout::unbounded()).unwrap();
        let chunks: Vec<_> = plan.chunks(0, 0).collect();
        check_chunks(gpa, len, &c, &chunks)?;
    }

    #[test]
    fn regions_in_a_layout_never_leave_their_memslot(
        slots in proptest::collection::vec((1u64..64, 1u64..64), 1..6),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 0u64..64, 1u64..64), 1..8),
    ) {
        // Slots laid out one after another with gaps, sizes in 2 MiB units.
        let mut layout = Vec::new();
        let mut at = 0u64;
        for (i, (gap, size)) in slots.iter().enumerate() {
            at += gap * HUGE_2M;
            layout.push(Memslot { slot: i as u32, gpa: at, size: size * HUGE_2M });
            at += size * HUGE_2M;
        }
        let l = MemoryLayout::new(&layout).unwrap();
        let c = caps(HUGE_2M, true);
        for (idx, off, len) in picks {
            let s = idx.get(&layout);
            let gpa = s.gpa + off * G * 37 % s.size / G * G;
            let len = len * G * 1013;
            let r = PlanBuilder::new().in_place(gpa, len, Role::Measured).build(&c, &l);
            let inside = gpa + len <= s.gpa + s.size;
            prop_assert_eq!(r.is_ok(), inside);
            if let Ok(plan) = r {
                prop_assert_eq!(plan.regions()[0].memslot(), Some(s.slot));
                for (g, cl) in plan.chunks(0, 0) {
                    prop_assert!(g >= s.gpa && g + cl <= s.gpa + s.size);
                }
            }
        }
    }
}
