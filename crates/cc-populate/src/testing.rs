//! A scriptable in-memory backend that keeps a ledger of what it did, for tests, examples and
//! fuzzing of code built on the driver. It touches no memory and no kernel.

use std::collections::{BTreeMap, VecDeque};

use crate::backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind,
    InPlacePopulate, Populated,
};
use crate::{Content, ContentKind, Plan, Role, RoleSet};

/// One scripted answer of [`LedgerBackend`]: how many granules of the request to do, then how to
/// end. Granules beyond the request are clamped to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Answer {
    /// Granules to populate (clamped to the request).
    pub granules: u32,
    /// `None`: end successfully; `Some(kind)`: end with an error of that kind.
    pub error: Option<ErrorKind>,
    /// Bytes claimed on top of those done (0: an honest answer). A claim of more than asked, or
    /// of a partial granule, is what a buggy kernel might answer after really doing `granules`.
    pub overclaim: u64,
}

impl Answer {
    /// Do everything asked.
    pub const ALL: Answer = Answer {
        granules: u32::MAX,
        error: None,
        overclaim: 0,
    };

    /// Do `granules`, then fail with `kind`.
    pub fn fail(granules: u32, kind: ErrorKind) -> Answer {
        Answer {
            granules,
            error: Some(kind),
            overclaim: 0,
        }
    }

    /// Do `granules` and return success (partial progress when fewer than asked).
    pub fn partial(granules: u32) -> Answer {
        Answer {
            granules,
            error: None,
            overclaim: 0,
        }
    }

    /// Do `granules`, then claim `extra` bytes more than that, successfully.
    pub fn overclaim(granules: u32, extra: u64) -> Answer {
        Answer {
            granules,
            error: None,
            overclaim: extra,
        }
    }
}

/// What a plan region should hand the backend, copied from the plan by
/// [`LedgerBackend::expect_plan`] (independently of the driver).
#[derive(Clone, Debug)]
struct Expected {
    gpa: u64,
    len: u64,
    role: Role,
    kind: ContentKind,
    /// The source bytes (source content only).
    bytes: Vec<u8>,
}

/// What the backend did, call by call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Region index in the request.
    pub region: usize,
    /// Address populated.
    pub gpa: u64,
    /// Bytes populated by this call (possibly 0).
    pub len: u64,
    /// Bytes asked.
    pub asked: u64,
    /// Bytes the backend claimed to the driver (`len`, unless the answer over-claimed).
    pub claimed: u64,
    /// Role.
    pub role: Role,
    /// Whether the call was a conversion rather than a populate.
    pub convert: bool,
}

/// A backend that does what a script says and records exactly what it did.
#[derive(Clone, Debug)]
pub struct LedgerBackend {
    /// What it declares (tests may change it before building a plan).
    pub caps: BackendCaps,
    /// Answers for the next populate calls; when empty, every call does all it is asked.
    pub script: VecDeque<Answer>,
    /// Answers for the next conversion calls; when empty, every call converts all it is asked.
    pub convert_script: VecDeque<Answer>,
    /// Every call, in order.
    pub ledger: Vec<LedgerEntry>,
    /// Populated data ranges (start -> end), merged; a byte populated twice is recorded in `twice`.
    populated: BTreeMap<u64, u64>,
    /// RIPAS-initialised ranges, kept apart: a ripas region may contain data regions, and
    /// initialising RIPAS and populating data are different operations.
    ripas: BTreeMap<u64, u64>,
    /// Converted ranges (start -> end), merged.
    converted: BTreeMap<u64, u64>,
    /// Addresses of chunks that were populated a second time (must stay empty).
    pub twice: Vec<u64>,
    /// Chunks whose source did not have the chunk's length (must stay empty).
    pub bad_sources: Vec<u64>,
    /// Chunks populated before being converted on a `BeforePopulate` backend (must stay empty).
    pub not_private: Vec<u64>,
    /// Chunks whose content is not the plan's at the chunk's place (must stay empty): source
    /// bytes other than the region's at the chunk's offset, another kind of content, or a
    /// chunk outside its region. Checked once [`expect_plan`](LedgerBackend::expect_plan) is
    /// given the plan.
    pub wrong_content: Vec<u64>,
    /// Per plan region, what its chunks must carry (empty: not checked).
    expected: Vec<Expected>,
    /// What [`Backend::in_place_populate`] answers (default: the backend's own handling).
    pub in_place_populate: InPlacePopulate,
    /// Whether to keep the source bytes of every populate call ([`kept`](Self::kept)).
    pub keep_sources: bool,
    /// The source bytes each call was handed, by address (with `keep_sources`).
    pub kept: BTreeMap<u64, Vec<u8>>,
}

impl LedgerBackend {
    /// A backend with a 4 KiB granule, the given maximum chunk, hugepage chunking, in-place
    /// support, no conversion and every role.
    pub fn new(max_chunk: u64) -> Self {
        LedgerBackend {
            caps: BackendCaps {
                granule: 4096,
                max_chunk,
                hugepage_chunks: true,
                in_place: true,
                conversion: Conversion::NotNeeded,
                roles: Role::ALL.into_iter().collect::<RoleSet>(),
            },
            script: VecDeque::new(),
            convert_script: VecDeque::new(),
            ledger: Vec::new(),
            populated: BTreeMap::new(),
            ripas: BTreeMap::new(),
            converted: BTreeMap::new(),
            twice: Vec::new(),
            bad_sources: Vec::new(),
            not_private: Vec::new(),
            wrong_content: Vec::new(),
            expected: Vec::new(),
            in_place_populate: InPlacePopulate::Backend,
            keep_sources: false,
            kept: BTreeMap::new(),
        }
    }

    /// The kept source bytes at `gpa .. gpa + len` (with `keep_sources`), if every byte was
    /// handed to a populate call.
    pub fn kept_at(&self, gpa: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = gpa.checked_add(out.len() as u64)?;
            let (start, bytes) = self.kept.range(..=at).next_back()?;
            let from = usize::try_from(at - start).ok()?;
            let piece = bytes.get(from..)?;
            if piece.is_empty() {
                return None;
            }
            let n = piece.len().min(len - out.len());
            out.extend_from_slice(&piece[..n]);
        }
        Some(out)
    }

    /// From now on, checks every populate call against `plan`: the chunk must lie in the region
    /// it names, with the region's role and kind of content, and source bytes must be the
    /// region's bytes at the chunk's offset (from its address). Mismatches go to
    /// [`wrong_content`](LedgerBackend::wrong_content). Copies the plan's sources: call it
    /// before a run releases any.
    pub fn expect_plan(&mut self, plan: &Plan<'_>) {
        self.expected = plan
            .regions()
            .iter()
            .map(|r| Expected {
                gpa: r.gpa(),
                len: r.len(),
                role: r.role(),
                kind: r.content().kind(),
                bytes: match r.content() {
                    Content::Bytes(_) | Content::Buffer(_) => {
                        r.source().map(<[u8]>::to_vec).unwrap_or_default()
                    }
                    Content::InPlace | Content::Zero | Content::Guest(_) => Vec::new(),
                },
            })
            .collect();
    }

    /// Whether `chunk` carries what the plan given to [`expect_plan`](Self::expect_plan) has
    /// at its place (true when no plan was given).
    fn content_matches(&self, chunk: &ChunkRequest<'_>) -> bool {
        if self.expected.is_empty() {
            return true;
        }
        let Some(e) = self.expected.get(chunk.region) else {
            return false;
        };
        let Some(off) = chunk.gpa.checked_sub(e.gpa) else {
            return false;
        };
        if off.checked_add(chunk.len).is_none_or(|end| end > e.len) || chunk.role != e.role {
            return false;
        }
        match (chunk.source, e.kind) {
            (ChunkSource::Bytes(b), ContentKind::Source) => {
                let want = usize::try_from(off)
                    .ok()
                    .and_then(|o| e.bytes.get(o..o.checked_add(b.len())?));
                want == Some(b)
            }
            (ChunkSource::InPlace, ContentKind::InPlace)
            | (ChunkSource::Zero, ContentKind::Zero) => true,
            _ => false,
        }
    }

    /// Bytes populated in all (data and RIPAS-only ranges).
    pub fn populated_bytes(&self) -> u64 {
        self.populated
            .iter()
            .chain(&self.ripas)
            .map(|(s, e)| e - s)
            .sum()
    }

    /// Data bytes (every role but `Ripas`) populated inside `gpa..gpa+len`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        covered(&self.populated, gpa, len)
    }

    /// Bytes of `Ripas` regions initialised inside `gpa..gpa+len`.
    pub fn ripas_in(&self, gpa: u64, len: u64) -> u64 {
        covered(&self.ripas, gpa, len)
    }

    /// Bytes converted inside `gpa..gpa+len`.
    pub fn converted_in(&self, gpa: u64, len: u64) -> u64 {
        covered(&self.converted, gpa, len)
    }

    /// Bytes done, bytes claimed, and how the call ends.
    fn answer(
        script: &mut VecDeque<Answer>,
        granule: u64,
        asked: u64,
    ) -> (u64, u64, Result<(), BackendError>) {
        let a = script.pop_front().unwrap_or(Answer::ALL);
        let done = (a.granules as u64).saturating_mul(granule).min(asked);
        let result =
            match a.error {
                None => Ok(()),
                Some(kind) => Err(BackendError::new(kind, "scripted")
                    .with_platform(0x1000 + kind as u64, "SCRIPTED")),
            };
        (done, done.saturating_add(a.overclaim), result)
    }
}

fn covered(map: &BTreeMap<u64, u64>, gpa: u64, len: u64) -> u64 {
    let end = gpa.saturating_add(len);
    map.range(..end)
        .map(|(s, e)| (*e).min(end).saturating_sub((*s).max(gpa)))
        .sum()
}

/// Inserts `[s, e)`; returns whether any byte was already present.
fn insert(map: &mut BTreeMap<u64, u64>, s: u64, e: u64) -> bool {
    if s >= e {
        return false;
    }
    let overlap = covered(map, s, e - s) > 0;
    let (mut ns, mut ne) = (s, e);
    let touching: Vec<(u64, u64)> = map
        .range(..=e)
        .filter(|(a, b)| **b >= s && **a <= e)
        .map(|(a, b)| (*a, *b))
        .collect();
    for (a, b) in touching {
        map.remove(&a);
        ns = ns.min(a);
        ne = ne.max(b);
    }
    map.insert(ns, ne);
    overlap
}

impl Backend for LedgerBackend {
    fn caps(&self) -> BackendCaps {
        self.caps.clone()
    }

    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        let (done, claimed, result) =
            Self::answer(&mut self.convert_script, self.caps.granule, len);
        insert(&mut self.converted, gpa, gpa + done);
        self.ledger.push(LedgerEntry {
            region: usize::MAX,
            gpa,
            len: done,
            asked: len,
            claimed,
            role: Role::Zero,
            convert: true,
        });
        Populated {
            done: claimed,
            result,
        }
    }

    fn in_place_populate(&self) -> InPlacePopulate {
        self.in_place_populate
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        if let ChunkSource::Bytes(b) = chunk.source {
            if b.len() as u64 != chunk.len {
                self.bad_sources.push(chunk.gpa);
            }
            if self.keep_sources {
                self.kept.insert(chunk.gpa, b.to_vec());
            }
        }
        if !self.content_matches(chunk) {
            self.wrong_content.push(chunk.gpa);
        }
        let (done, claimed, result) = Self::answer(&mut self.script, self.caps.granule, chunk.len);
        if self.caps.conversion == Conversion::BeforePopulate
            && covered(&self.converted, chunk.gpa, done) != done
        {
            self.not_private.push(chunk.gpa);
        }
        let set = if chunk.role == Role::Ripas {
            &mut self.ripas
        } else {
            &mut self.populated
        };
        if insert(set, chunk.gpa, chunk.gpa + done) {
            self.twice.push(chunk.gpa);
        }
        self.ledger.push(LedgerEntry {
            region: chunk.region,
            gpa: chunk.gpa,
            len: done,
            asked: chunk.len,
            claimed,
            role: chunk.role,
            convert: false,
        });
        Populated {
            done: claimed,
            result,
        }
    }
}

/// The check every real ioctl layer that converts through gmem shares: `backend` holds a
/// guest_memfd bound as guest-physical `[gpa, gpa + 8 pages)` from file offset 4 pages. Two pages
/// inside are made private, and two pages running past the memslot's end are refused with
/// `EINVAL` and nothing done (not this guest_memfd's memory: a bare `KVM_SET_MEMORY_ATTRIBUTES`
/// would take them, and the handle's record would not know). Then drop the backend and call
/// [`check_recorded_private`].
pub fn check_make_private_through_gmem(backend: &mut impl Backend, gpa: u64) {
    const PAGE: u64 = 4096;
    let done = backend.make_private(gpa + PAGE, 2 * PAGE);
    assert_eq!(done.result.map_err(|e| e.to_string()), Ok(()));
    assert_eq!(done.done, 2 * PAGE);
    let refused = backend.make_private(gpa + 7 * PAGE, 2 * PAGE);
    let e = match refused.result {
        Err(e) => e,
        Ok(()) => panic!("a range past the memslot was made private"),
    };
    assert_eq!((refused.done, e.errno), (0, Some(libc::EINVAL)), "{e}");
}

/// After [`check_make_private_through_gmem`]: file `[5 pages, 7 pages)` of `g` is recorded
/// private, so no shared view of it can be made.
pub fn check_recorded_private(g: &gmem::GuestMemfd) {
    const PAGE: u64 = 4096;
    let private = g.private_ranges();
    assert!(
        private.iter().any(|&(s, e)| s <= 5 * PAGE && 7 * PAGE <= e),
        "{private:?}"
    );
    assert!(g.map_shared(5 * PAGE, PAGE).is_err());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_set() {
        let mut m = BTreeMap::new();
        assert!(!insert(&mut m, 0, 10));
        assert!(!insert(&mut m, 20, 30));
        assert!(!insert(&mut m, 10, 20));
        assert_eq!(m.len(), 1);
        assert_eq!(covered(&m, 0, 100), 30);
        assert!(insert(&mut m, 29, 31));
        assert_eq!(covered(&m, 5, 10), 10);
        assert_eq!(covered(&m, 40, 10), 0);
    }
}
