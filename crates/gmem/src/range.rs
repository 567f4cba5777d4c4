//! Range checks and the set of private ranges.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::Error;

/// The host page size (`sysconf(_SC_PAGESIZE)`), the granule of every guest_memfd operation.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a configuration value; it takes no pointers.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
    })
}

/// Checks `[offset, offset + len)` lies within `size`, is non-empty and does not overflow.
pub(crate) fn check_bounds(offset: u64, len: u64, size: u64) -> Result<u64, Error> {
    let end = offset
        .checked_add(len)
        .ok_or(Error::RangeOverflow { offset, len })?;
    if len == 0 {
        return Err(Error::EmptyRange { offset });
    }
    if end > size {
        return Err(Error::OutOfBounds { offset, len, size });
    }
    Ok(end)
}

/// [`check_bounds`] plus page alignment of both ends.
pub(crate) fn check_pages(offset: u64, len: u64, size: u64) -> Result<u64, Error> {
    let end = check_bounds(offset, len, size)?;
    let page_size = page_size();
    if !offset.is_multiple_of(page_size) || !len.is_multiple_of(page_size) {
        return Err(Error::Unaligned {
            offset,
            len,
            page_size,
        });
    }
    Ok(end)
}

/// A set of disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RangeSet {
    // start -> end
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `[start, end)`, merging with overlapping or adjacent ranges.
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Ranges starting inside (or adjacent to) the new one.
        let inner: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inner {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Removes `[start, end)`, splitting ranges that straddle its ends.
    pub(crate) fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<(u64, u64)> = self
            .map
            .range(..end)
            .filter(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.map.remove(&s);
            if s < start {
                self.map.insert(s, start);
            }
            if e > end {
                self.map.insert(end, e);
            }
        }
    }

    /// The first offset of `[start, end)` that lies in the set.
    pub(crate) fn first_in(&self, start: u64, end: u64) -> Option<u64> {
        if let Some((_, &e)) = self.map.range(..=start).next_back() {
            if e > start {
                return Some(start);
            }
        }
        self.map.range(start..end).next().map(|(&s, _)| s)
    }

    /// The parts of `[start, end)` that lie in the set, in order.
    pub(crate) fn within(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        self.map
            .range(..end)
            .filter(|(_, &e)| e > start)
            .map(|(&s, &e)| (s.max(start), e.min(end)))
            .collect()
    }

    /// The parts of `[start, end)` that do not lie in the set, in order.
    pub(crate) fn gaps_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = start;
        for (s, e) in self.within(start, end) {
            if s > at {
                gaps.push((at, s));
            }
            at = e;
        }
        if at < end {
            gaps.push((at, end));
        }
        gaps
    }

    /// The ranges, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &RangeSet) -> Vec<(u64, u64)> {
        s.iter().collect()
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent() {
        let mut s = RangeSet::default();
        s.insert(10, 20);
        s.insert(30, 40);
        assert_eq!(v(&s), [(10, 20), (30, 40)]);
        s.insert(20, 30); // adjacent on both sides
        assert_eq!(v(&s), [(10, 40)]);
        s.insert(0, 5);
        s.insert(3, 12);
        assert_eq!(v(&s), [(0, 40)]);
        s.insert(50, 50); // empty: ignored
        assert_eq!(v(&s), [(0, 40)]);
        s.insert(45, 60);
        s.insert(41, 100);
        assert_eq!(v(&s), [(0, 40), (41, 100)]);
    }

    #[test]
    fn remove_splits() {
        let mut s = RangeSet::default();
        s.insert(0, 100);
        s.remove(10, 20);
        assert_eq!(v(&s), [(0, 10), (20, 100)]);
        s.remove(5, 25);
        assert_eq!(v(&s), [(0, 5), (25, 100)]);
        s.remove(0, 5);
        assert_eq!(v(&s), [(25, 100)]);
        s.remove(90, 200);
        assert_eq!(v(&s), [(25, 90)]);
        s.remove(7, 7);
        s.remove(0, 1000);
        assert_eq!(v(&s), []);
    }

    #[test]
    fn first_in_finds_first_member() {
        let mut s = RangeSet::default();
        s.insert(10, 20);
        s.insert(30, 40);
        assert_eq!(s.first_in(0, 10), None);
        assert_eq!(s.first_in(0, 11), Some(10));
        assert_eq!(s.first_in(15, 16), Some(15));
        assert_eq!(s.first_in(20, 30), None);
        assert_eq!(s.first_in(21, 35), Some(30));
        assert_eq!(s.first_in(40, 100), None);
    }

    #[test]
    fn within_and_gaps_split_a_range() {
        let mut s = RangeSet::default();
        s.insert(10, 20);
        s.insert(30, 40);
        assert_eq!(s.within(15, 35), [(15, 20), (30, 35)]);
        assert_eq!(s.gaps_in(15, 35), [(20, 30)]);
        assert_eq!(s.gaps_in(0, 50), [(0, 10), (20, 30), (40, 50)]);
        assert_eq!(s.within(20, 30), []);
        assert_eq!(s.gaps_in(12, 18), []);
    }

    #[test]
    fn range_checks_name_the_problem() {
        let p = page_size();
        assert!(matches!(
            check_pages(u64::MAX, 2, u64::MAX),
            Err(Error::RangeOverflow {
                offset: u64::MAX,
                len: 2
            })
        ));
        assert!(matches!(
            check_pages(p, 0, 4 * p),
            Err(Error::EmptyRange { .. })
        ));
        assert!(matches!(
            check_pages(3 * p, 2 * p, 4 * p),
            Err(Error::OutOfBounds { size, .. }) if size == 4 * p
        ));
        assert!(matches!(
            check_pages(1, p, 4 * p),
            Err(Error::Unaligned { .. })
        ));
        assert!(matches!(
            check_pages(0, p + 1, 4 * p),
            Err(Error::Unaligned { .. })
        ));
        assert_eq!(check_pages(p, 3 * p, 4 * p).ok(), Some(4 * p));
        assert_eq!(check_bounds(1, 3, 4).ok(), Some(4));
    }
}
