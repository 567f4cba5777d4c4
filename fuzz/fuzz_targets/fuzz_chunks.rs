//! Chunking of arbitrary valid plans.
//!
//! For every region of an accepted plan, `Plan::chunks(i, offset)` must cover the region from
//! `offset` exactly once, in order; every chunk is a non-zero multiple of the granule and at
//! most `max_chunk`; with `hugepage_chunks`, no chunk boundary falls strictly inside an aligned
//! 2 MiB span (and 1 GiB span when `max_chunk >= 1 GiB`) that lies wholly inside the chunked
//! range and is no larger than `max_chunk`; a region built against memslots never leaves its
//! memslot.
//!
//! `Plan::chunk_count` (and the number of chunks of every region) is checked against a count
//! made here by a naive walk, one granule at a time, of the chunking rule as documented: the
//! cut alignment is the largest hugepage (1 GiB, 2 MiB) no larger than `max_chunk` and no
//! smaller than the granule when `hugepage_chunks` is set, else the granule; a chunk grows
//! while it stays within `max_chunk` and the region; one that starts off the alignment ends at
//! the first aligned address; one that starts aligned and is cut short by `max_chunk` is
//! trimmed back to a whole number of alignments.
#![no_main]

use arbitrary::Arbitrary;
use cc_populate::{MemoryLayout, Memslot, PlanBuilder, Role};
use cc_populate_fuzz::*;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct RegionIn {
    gpa: Addr,
    len: Len,
    role: Role,
    in_place: bool,
    /// Where the second chunking starts, in granules from the region's start.
    resume_at: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    caps: CapsIn,
    slots: Option<Vec<SlotIn>>,
    regions: Vec<RegionIn>,
}

/// Most regions a run chunks (chunking is linear in the chunk count).
const MAX_CHUNKS_PER_REGION: u128 = 1 << 14;
/// Most granules the naive count walks per input.
const MAX_WALK: u128 = 1 << 18;

/// The number of chunks of `[start, end)` by the naive walk described above (in `u128`).
fn walk_count(start: u64, end: u64, granule: u64, max_chunk: u64, huge: bool) -> u64 {
    let (g, max) = (granule as u128, max_chunk as u128);
    let mut align = g;
    if huge {
        for h in [1u128 << 30, 2 << 20] {
            if h <= max && h >= g {
                align = h;
                break;
            }
        }
    }
    let (mut s, end) = (start as u128, end as u128);
    let mut n = 0;
    while s < end {
        n += 1;
        let mut p = s;
        while p + g <= end && p + g - s <= max {
            p += g;
            if s % align != 0 && p % align == 0 {
                break;
            }
        }
        if p < end && s % align == 0 && p - s > max - g {
            // Cut by max_chunk: back to the last aligned address.
            p = s + (p - s) / align * align;
        }
        s = p;
    }
    n
}

#[allow(clippy::too_many_arguments)]
fn check_chunks(
    i: usize,
    start: u64,
    end: u64,
    chunks: &[(u64, u64)],
    granule: u64,
    max_chunk: u64,
    huge: bool,
    slot: Option<Memslot>,
) {
    // Cover [start, end) exactly once, in order.
    let mut cur = start;
    for &(g, l) in chunks {
        assert_eq!(
            g, cur,
            "region {i}: gap or overlap at {g:#x} (expected {cur:#x})"
        );
        assert!(l > 0, "region {i}: empty chunk at {g:#x}");
        assert!(
            l <= max_chunk,
            "region {i}: chunk {g:#x}+{l:#x} over max {max_chunk:#x}"
        );
        assert_eq!(
            l % granule,
            0,
            "region {i}: chunk {g:#x}+{l:#x} not whole granules"
        );
        assert_eq!(g % granule, 0, "region {i}: chunk at {g:#x} misaligned");
        if let Some(s) = slot {
            assert!(
                within(g, l, s.gpa, s.size),
                "region {i}: chunk {g:#x}+{l:#x} leaves slot {s:?}"
            );
        }
        cur = cur.checked_add(l).expect("chunk end overflows");
    }
    assert_eq!(
        cur, end,
        "region {i}: chunks end at {cur:#x}, region at {end:#x}"
    );
    if !huge {
        return;
    }
    // No boundary strictly inside a whole aligned hugepage span that fits in max_chunk.
    let sizes: &[u64] = if max_chunk >= G1 { &[M2, G1] } else { &[M2] };
    for &(b, _) in chunks.iter().skip(1) {
        for &h in sizes {
            if h > max_chunk || b % h == 0 {
                continue;
            }
            let a = b - b % h;
            let whole = a >= start && (a as u128 + h as u128) <= end as u128;
            assert!(!whole, "region {i}: boundary {b:#x} splits the aligned {h:#x} span at {a:#x} (range {start:#x}..{end:#x}, max {max_chunk:#x})");
        }
    }
}

fuzz_target!(|input: Input| {
    let caps = input.caps.get();
    if !oracle_caps_ok(&caps) {
        return;
    }
    let slots = input.slots.as_deref().map(slots_of);
    let layout = match &slots {
        None => MemoryLayout::unbounded(),
        Some(s) => match MemoryLayout::new(s) {
            Ok(l) => l,
            Err(_) => return,
        },
    };
    let mut builder = PlanBuilder::new();
    for r in &input.regions {
        let gpa = r.gpa.get(slots.as_deref().unwrap_or(&[]));
        let len = r.len.get(gpa);
        builder = if r.in_place && caps.in_place && r.role != Role::Zero && r.role != Role::Ripas {
            builder.in_place(gpa, len, r.role)
        } else {
            builder.zeros(gpa, len, r.role)
        };
    }
    let Ok(plan) = builder.build(&caps, &layout) else {
        return;
    };
    let mut total_calls = 0u64;
    let mut counted_all = true;
    let walk: u128 = plan
        .regions()
        .iter()
        .map(|r| r.len() as u128 / caps.granule as u128)
        .sum();

    for (i, (r, ri)) in plan.regions().iter().zip(&input.regions).enumerate() {
        if chunk_bound(r.len(), caps.max_chunk) > MAX_CHUNKS_PER_REGION {
            counted_all = false;
            continue;
        }
        let slot = slots
            .as_deref()
            .map(|s| oracle_slot_at(s, r.gpa()).expect("slot of an accepted region"));
        let chunks: Vec<(u64, u64)> = plan.chunks(i, 0).collect();
        total_calls += chunks.len() as u64;
        if walk <= MAX_WALK {
            let n = walk_count(
                r.gpa(),
                r.end(),
                caps.granule,
                caps.max_chunk,
                caps.hugepage_chunks,
            );
            assert_eq!(
                chunks.len() as u64,
                n,
                "region {i}: {} chunks, the naive walk cuts {n}",
                chunks.len()
            );
        }
        check_chunks(
            i,
            r.gpa(),
            r.end(),
            &chunks,
            caps.granule,
            caps.max_chunk,
            caps.hugepage_chunks,
            slot,
        );

        // Chunking resumed part-way (as the driver does after partial progress).
        let off = ((ri.resume_at as u64).wrapping_mul(caps.granule) % r.len()) / caps.granule
            * caps.granule;
        let rest: Vec<(u64, u64)> = plan.chunks(i, off).collect();
        check_chunks(
            i,
            r.gpa() + off,
            r.end(),
            &rest,
            caps.granule,
            caps.max_chunk,
            caps.hugepage_chunks,
            slot,
        );
        // Past the end, or a region that does not exist: nothing.
        assert_eq!(plan.chunks(i, r.len()).next(), None);
        assert_eq!(plan.chunks(i, u64::MAX).next(), None);
    }
    assert_eq!(plan.chunks(plan.regions().len(), 0).next(), None);
    if counted_all {
        assert_eq!(plan.chunk_count(), total_calls);
    }
    if walk <= MAX_WALK {
        let walked: u64 = plan
            .regions()
            .iter()
            .map(|r| {
                walk_count(
                    r.gpa(),
                    r.end(),
                    caps.granule,
                    caps.max_chunk,
                    caps.hugepage_chunks,
                )
            })
            .sum();
        assert_eq!(
            plan.chunk_count(),
            walked,
            "chunk_count differs from the naive walk's count"
        );
    }
});
