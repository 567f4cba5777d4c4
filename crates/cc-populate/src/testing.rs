//! A scriptable in-memory backend that keeps a ledger of what it did, for tests, examples and
//! fuzzing of code built on the driver. It touches no memory and no kernel.

use std::collections::{BTreeMap, VecDeque};

use crate::backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind, Populated,
};
use crate::{Role, RoleSet};

/// One scripted answer of [`LedgerBackend`]: how many granules of the request to do, then how to
/// end. Granules beyond the request are clamped to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Answer {
    /// Granules to populate (clamped to the request).
    pub granules: u32,
    /// `None`: end successfully; `Some(kind)`: end with an error of that kind.
    pub error: Option<ErrorKind>,
}

impl Answer {
    /// Do everything asked.
    pub const ALL: Answer = Answer {
        granules: u32::MAX,
        error: None,
    };

    /// Do `granules`, then fail with `kind`.
    pub fn fail(granules: u32, kind: ErrorKind) -> Answer {
        Answer {
            granules,
            error: Some(kind),
        }
    }

    /// Do `granules` and return success (partial progress when fewer than asked).
    pub fn partial(granules: u32) -> Answer {
        Answer {
            granules,
            error: None,
        }
    }
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

    fn answer(
        script: &mut VecDeque<Answer>,
        granule: u64,
        asked: u64,
    ) -> (u64, Result<(), BackendError>) {
        let a = script.pop_front().unwrap_or(Answer::ALL);
        let done = (a.granules as u64).saturating_mul(granule).min(asked);
        let result =
            match a.error {
                None => Ok(()),
                Some(kind) => Err(BackendError::new(kind, "scripted")
                    .with_platform(0x1000 + kind as u64, "SCRIPTED")),
            };
        (done, result)
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
        let (done, result) = Self::answer(&mut self.convert_script, self.caps.granule, len);
        insert(&mut self.converted, gpa, gpa + done);
        self.ledger.push(LedgerEntry {
            region: usize::MAX,
            gpa,
            len: done,
            asked: len,
            role: Role::Zero,
            convert: true,
        });
        Populated { done, result }
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        if let ChunkSource::Bytes(b) = chunk.source {
            if b.len() as u64 != chunk.len {
                self.bad_sources.push(chunk.gpa);
            }
        }
        let (done, result) = Self::answer(&mut self.script, self.caps.granule, chunk.len);
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
            role: chunk.role,
            convert: false,
        });
        Populated { done, result }
    }
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
