//! Plan building and validation from arbitrary regions and memslots.
//!
//! Never panics; the memory layout and the plan are accepted exactly when a naive oracle says
//! they are valid; every accepted plan keeps the given order and has a sorted, non-overlapping
//! index (ripas regions may only wholly contain data regions listed after them); every refusal
//! is a typed error whose claim the oracle confirms and whose message names the range.
#![no_main]

use std::borrow::Cow;

use arbitrary::Arbitrary;
use cc_populate::{
    Content, ContentError, ContentKind, InPlaceReader, MemoryLayout, PlanBuilder, PlanError,
    RegionBytes, RegionSpec, Role, SourceBuf,
};
use cc_populate_fuzz::*;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ContentIn {
    /// Borrowed bytes; `delta` pages more or fewer than the region (0: exact).
    Bytes(i8),
    /// An owned `Vec`.
    Owned(i8),
    /// A `SourceBuf` (exact length when it fits, else short).
    Buffer,
    InPlace,
    Zero,
}

#[derive(Arbitrary, Debug)]
struct RegionIn {
    gpa: Addr,
    len: Len,
    role: Role,
    content: ContentIn,
}

#[derive(Arbitrary, Debug)]
struct Input {
    caps: CapsIn,
    /// `None`: unbounded layout.
    slots: Option<Vec<SlotIn>>,
    regions: Vec<RegionIn>,
}

/// What the oracle knows of a region spec.
#[derive(Debug, Clone, Copy)]
struct Spec {
    gpa: u64,
    len: u64,
    role: Role,
    kind: ContentKind,
    src_len: Option<u64>,
}

fn source_len(len: u64, delta: i8) -> u64 {
    let want = (len as i128 + delta as i128 * PAGE as i128).max(0);
    if want <= MAX_SOURCE as i128 {
        want as u64
    } else {
        // Too big to hand out: a short source (always a mismatch, as `len` > MAX_SOURCE here
        // unless delta pushed it over).
        len % MAX_SOURCE
    }
}

fn content_for(c: ContentIn, len: u64) -> (Content<'static>, Option<u64>) {
    match c {
        ContentIn::Bytes(d) => {
            let n = source_len(len, d);
            (Content::Bytes(Cow::Borrowed(zeros(n as usize))), Some(n))
        }
        ContentIn::Owned(d) => {
            let n = source_len(len, d);
            // Filling big owned buffers costs more than it finds: borrow those.
            if n <= 64 << 10 {
                (Content::Bytes(Cow::Owned(vec![0xa5; n as usize])), Some(n))
            } else {
                (Content::Bytes(Cow::Borrowed(zeros(n as usize))), Some(n))
            }
        }
        ContentIn::Buffer => {
            let n = source_len(len, 0);
            match SourceBuf::new(n as usize) {
                Ok(b) => (Content::Buffer(b), Some(n)),
                Err(_) => (Content::Zero, None),
            }
        }
        ContentIn::InPlace => (Content::InPlace, None),
        ContentIn::Zero => (Content::Zero, None),
    }
}

/// Why the oracle would refuse region `i` on its own, if it would.
fn region_problems(
    s: &Spec,
    caps_in: &CapsIn,
    caps: &cc_populate::BackendCaps,
    slots: Option<&[cc_populate::Memslot]>,
) -> Vec<&'static str> {
    let mut p = Vec::new();
    if s.len == 0 {
        p.push("zero");
    }
    if s.gpa as u128 + s.len as u128 > u64::MAX as u128 {
        p.push("overflow");
    }
    if !s.gpa.is_multiple_of(caps.granule) || !s.len.is_multiple_of(caps.granule) {
        p.push("misaligned");
    }
    if !mask_has(caps_in.roles, s.role) {
        p.push("role");
    }
    if !oracle_carries_content(s.role) && s.kind != ContentKind::Zero {
        p.push("content");
    }
    if s.src_len.is_some_and(|n| n != s.len) {
        p.push("source-length");
    }
    if s.kind == ContentKind::InPlace && !caps.in_place {
        p.push("in-place");
    }
    if let Some(slots) = slots {
        match oracle_slot_at(slots, s.gpa) {
            None => p.push("outside"),
            Some(m) if !within(s.gpa, s.len, m.gpa, m.size) => p.push("crosses"),
            Some(_) => {}
        }
    }
    p
}

/// Whether regions `a < b` (given order) may coexist: disjoint, or a ripas region `a` wholly
/// containing data region `b`. Returns the kind of conflict otherwise.
fn pair_conflict(a: &Spec, b: &Spec) -> Option<&'static str> {
    if !intersects(a.gpa, a.len, b.gpa, b.len) {
        return None;
    }
    let (ar, br) = (a.role == Role::Ripas, b.role == Role::Ripas);
    if ar && !br && within(b.gpa, b.len, a.gpa, a.len) {
        return None;
    }
    if br && !ar && within(a.gpa, a.len, b.gpa, b.len) {
        return Some("ripas-after-data");
    }
    Some("overlap")
}

/// Reads in-place content as 0x5a bytes, or fails (naming the address) when told to.
struct Reader {
    fail: bool,
}

impl InPlaceReader for Reader {
    fn read_in_place(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
        if self.fail {
            return Err(format!("no memory at {gpa:#x}"));
        }
        buf.fill(0x5a);
        Ok(())
    }
}

fn hex_in(msg: &str, v: u64) {
    let h = format!("{v:#x}");
    assert!(msg.contains(&h), "message {msg:?} does not name {h}");
}

fuzz_target!(|input: Input| {
    let caps = input.caps.get();
    let slots = input.slots.as_deref().map(slots_of);

    // The layout.
    let layout = match &slots {
        None => MemoryLayout::unbounded(),
        Some(s) => {
            let ok = oracle_slots_ok(s);
            match MemoryLayout::new(s) {
                Ok(l) => {
                    assert!(ok, "layout accepted but the oracle refuses it: {s:?}");
                    let got = l.slots().expect("bounded layout");
                    assert_eq!(got.len(), s.len());
                    assert!(got.windows(2).all(|w| w[0].gpa < w[1].gpa));
                    l
                }
                Err(e) => {
                    assert!(!ok, "layout refused but the oracle accepts it: {e}");
                    match &e {
                        PlanError::BadMemslot { slot, gpa, size } => {
                            assert!(s
                                .iter()
                                .any(|m| m.slot == *slot && m.gpa == *gpa && m.size == *size));
                            assert!(*size == 0 || *gpa as u128 + *size as u128 > u64::MAX as u128);
                            hex_in(&e.to_string(), *gpa);
                        }
                        PlanError::MemslotOverlap { first, second } => {
                            assert!(s.contains(first) && s.contains(second));
                            assert!(intersects(first.gpa, first.size, second.gpa, second.size));
                            hex_in(&e.to_string(), first.gpa);
                            hex_in(&e.to_string(), second.gpa);
                        }
                        other => panic!("unexpected layout error {other:?}"),
                    }
                    return;
                }
            }
        }
    };

    // The regions.
    let mut builder = PlanBuilder::with_capacity(input.regions.len());
    let mut specs = Vec::with_capacity(input.regions.len());
    for r in &input.regions {
        let gpa = r.gpa.get(slots.as_deref().unwrap_or(&[]));
        let len = r.len.get(gpa);
        let (content, src_len) = content_for(r.content, len);
        specs.push(Spec {
            gpa,
            len,
            role: r.role,
            kind: content.kind(),
            src_len,
        });
        builder.push(RegionSpec {
            gpa,
            len,
            role: r.role,
            content,
        });
    }
    assert_eq!(builder.len(), specs.len());

    let caps_ok = oracle_caps_ok(&caps);
    let problems: Vec<Vec<&str>> = if caps_ok {
        specs
            .iter()
            .map(|s| region_problems(s, &input.caps, &caps, slots.as_deref()))
            .collect()
    } else {
        Vec::new()
    };
    let singles_ok = caps_ok && problems.iter().all(|p| p.is_empty());
    let mut conflicts = Vec::new();
    if singles_ok {
        for (j, b) in specs.iter().enumerate() {
            for (i, a) in specs[..j].iter().enumerate() {
                if let Some(k) = pair_conflict(a, b) {
                    conflicts.push((i, j, k));
                }
            }
        }
    }
    let valid = singles_ok && conflicts.is_empty();

    match builder.build(&caps, &layout) {
        Ok(plan) => {
            assert!(valid, "plan accepted, oracle refuses: caps_ok={caps_ok} problems={problems:?} conflicts={conflicts:?}");
            assert_eq!(plan.caps(), &caps);
            let regions = plan.regions();
            assert_eq!(regions.len(), specs.len());
            let mut sum = 0u128;
            for (i, (r, s)) in regions.iter().zip(&specs).enumerate() {
                // Given order kept, nothing altered.
                assert_eq!(
                    (r.gpa(), r.len(), r.role(), r.content().kind()),
                    (s.gpa, s.len, s.role, s.kind),
                    "region {i}"
                );
                assert!(!r.is_empty());
                assert_eq!(r.end() as u128, s.gpa as u128 + s.len as u128);
                assert_eq!(r.released(), 0);
                sum += s.len as u128;
                match &slots {
                    None => assert_eq!(r.memslot(), None),
                    Some(sl) => {
                        let m = oracle_slot_at(sl, s.gpa).expect("oracle slot");
                        assert_eq!(r.memslot(), Some(m.slot));
                        assert!(within(s.gpa, s.len, m.gpa, m.size));
                    }
                }
                match plan.content_of(i, None) {
                    Ok(RegionBytes::Zeros) => assert_eq!(s.kind, ContentKind::Zero),
                    Ok(RegionBytes::Bytes(b)) => {
                        assert_eq!(s.kind, ContentKind::Source);
                        assert_eq!(b.len() as u64, s.len);
                    }
                    Err(ContentError::NoReader { region, gpa, len }) => {
                        assert_eq!(s.kind, ContentKind::InPlace);
                        assert_eq!((region, gpa, len), (i, s.gpa, s.len));
                    }
                    Err(e) => panic!("content_of({i}): {e}"),
                }
                // With a reader (small regions only: in-place content is read whole).
                if s.kind == ContentKind::InPlace && s.len <= 1 << 20 {
                    let fail = s.gpa & (1 << 12) != 0;
                    let reader = Reader { fail };
                    match plan.content_of(i, Some(&reader)) {
                        Ok(RegionBytes::Bytes(b)) => {
                            assert!(!fail);
                            assert_eq!(b.len() as u64, s.len);
                            assert!(b.iter().all(|x| *x == 0x5a));
                        }
                        Err(ContentError::ReadFailed {
                            region,
                            gpa,
                            len,
                            reason,
                        }) => {
                            assert!(fail);
                            assert_eq!((region, gpa, len), (i, s.gpa, s.len));
                            assert_eq!(reason, format!("no memory at {:#x}", s.gpa));
                        }
                        other => panic!("content_of({i}) with a reader: {other:?}"),
                    }
                }
            }
            assert_eq!(plan.total_bytes() as u128, sum.min(u64::MAX as u128));

            // The sorted index: a permutation, by address, ripas first at equal addresses.
            let sorted: Vec<usize> = plan
                .sorted()
                .map(|(i, r)| {
                    assert!(std::ptr::eq(r, &regions[i]));
                    i
                })
                .collect();
            let mut seen = vec![false; regions.len()];
            for &i in &sorted {
                assert!(!seen[i], "region {i} twice in the sorted index");
                seen[i] = true;
            }
            assert!(seen.iter().all(|s| *s));
            for w in sorted.windows(2) {
                let (a, b) = (&specs[w[0]], &specs[w[1]]);
                assert!(a.gpa <= b.gpa, "sorted index out of order: {w:?}");
                if a.gpa == b.gpa {
                    assert!(
                        !(b.role == Role::Ripas && a.role != Role::Ripas),
                        "data before ripas at {:#x}",
                        a.gpa
                    );
                }
            }
            // Non-overlapping, the naive way, among data regions and among ripas regions.
            for (x, &i) in sorted.iter().enumerate() {
                for &j in &sorted[x + 1..] {
                    let (a, b) = (&specs[i], &specs[j]);
                    if (a.role == Role::Ripas) == (b.role == Role::Ripas) {
                        assert!(
                            !intersects(a.gpa, a.len, b.gpa, b.len),
                            "regions {i} and {j} overlap"
                        );
                    } else if intersects(a.gpa, a.len, b.gpa, b.len) {
                        let (rip, dat) = if a.role == Role::Ripas {
                            (i, j)
                        } else {
                            (j, i)
                        };
                        assert!(rip < dat);
                        assert!(within(
                            specs[dat].gpa,
                            specs[dat].len,
                            specs[rip].gpa,
                            specs[rip].len
                        ));
                    }
                }
            }
        }
        Err(e) => {
            assert!(!valid, "plan refused, oracle accepts it: {e}");
            let msg = e.to_string();
            let has = |i: usize, what: &str| problems.get(i).is_some_and(|p| p.contains(&what));
            let named = |region: usize, gpa: u64, len: u64| {
                let s = specs
                    .get(region)
                    .unwrap_or_else(|| panic!("no region {region}: {e:?}"));
                assert_eq!((s.gpa, s.len), (gpa, len), "{e:?}");
                hex_in(&msg, gpa);
            };
            match e {
                PlanError::BadCaps(_) => assert!(!caps_ok),
                PlanError::ZeroLength { region, gpa } => {
                    named(region, gpa, 0);
                    assert!(has(region, "zero"));
                }
                PlanError::AddressOverflow { region, gpa, len } => {
                    named(region, gpa, len);
                    assert!(has(region, "overflow"));
                }
                PlanError::Misaligned {
                    region,
                    gpa,
                    len,
                    granule,
                } => {
                    named(region, gpa, len);
                    assert_eq!(granule, caps.granule);
                    assert!(has(region, "misaligned"));
                }
                PlanError::SourceLength {
                    region,
                    gpa,
                    len,
                    actual,
                } => {
                    named(region, gpa, len);
                    assert_eq!(Some(actual), specs[region].src_len);
                    assert!(has(region, "source-length"));
                }
                PlanError::ContentNotAllowed {
                    region,
                    gpa,
                    len,
                    role,
                    content,
                } => {
                    named(region, gpa, len);
                    assert_eq!((role, content), (specs[region].role, specs[region].kind));
                    assert!(has(region, "content"));
                }
                PlanError::RoleUnsupported {
                    region,
                    gpa,
                    len,
                    role,
                } => {
                    named(region, gpa, len);
                    assert_eq!(role, specs[region].role);
                    assert!(has(region, "role"));
                }
                PlanError::InPlaceUnsupported { region, gpa, len } => {
                    named(region, gpa, len);
                    assert!(has(region, "in-place"));
                }
                PlanError::OutsideMemslots { region, gpa, len } => {
                    named(region, gpa, len);
                    assert!(has(region, "outside"));
                }
                PlanError::CrossesMemslot {
                    region,
                    gpa,
                    len,
                    slot,
                } => {
                    named(region, gpa, len);
                    assert!(has(region, "crosses"));
                    let m = oracle_slot_at(slots.as_deref().unwrap_or(&[]), gpa).expect("slot");
                    assert_eq!(m.slot, slot);
                }
                PlanError::Overlap {
                    region,
                    gpa,
                    len,
                    other,
                    other_gpa,
                    other_len,
                } => {
                    named(region, gpa, len);
                    named(other, other_gpa, other_len);
                    assert!(singles_ok);
                    assert!(other < region, "{e:?}");
                    assert!(
                        conflicts.contains(&(other, region, "overlap")),
                        "{e:?} not a conflict: {conflicts:?}"
                    );
                }
                PlanError::RipasAfterData {
                    region,
                    gpa,
                    len,
                    ripas,
                } => {
                    named(region, gpa, len);
                    assert!(singles_ok);
                    assert!(
                        conflicts.contains(&(region, ripas, "ripas-after-data")),
                        "{e:?}: {conflicts:?}"
                    );
                }
                other => panic!("unexpected plan error {other:?}"),
            }
        }
    }
});
