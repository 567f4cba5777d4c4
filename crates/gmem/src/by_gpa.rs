//! Conversion by guest-physical address: what a platform backend holds (a GPA range it makes
//! private before populating) translated through the handle's memslot bindings to file offsets,
//! so the conversion goes through [`GuestMemfd::convert`] and the handle's record of private
//! ranges stays true.

use crate::gmem::Binding;
use crate::{Error, GuestMemfd, MemoryState};

impl GuestMemfd {
    /// The file pieces `(offset, len)` that the guest-physical range `[gpa, gpa + len)` is bound
    /// to, in GPA order, or [`Error::GpaNotBound`] naming the first address no memslot of this
    /// handle covers (also for an empty or overflowing range, which no binding covers).
    pub fn gpa_offsets(&self, gpa: u64, len: u64) -> Result<Vec<(u64, u64)>, Error> {
        offsets_of(&self.shared.bindings(), gpa, len)
    }

    /// Converts the guest-physical range `[gpa, gpa + len)` to `to` through
    /// [`convert`](Self::convert), piece by piece of the memslots it is bound to, so the handle
    /// records it ([`private_ranges`](Self::private_ranges)). A range not wholly bound to this
    /// handle's memslots is refused with [`Error::GpaNotBound`] before any conversion. On a
    /// failure part-way the pieces before the failing one were converted (see `convert`).
    pub fn convert_gpa(&mut self, gpa: u64, len: u64, to: MemoryState) -> Result<(), Error> {
        for (offset, piece) in self.gpa_offsets(gpa, len)? {
            self.convert(offset, piece, to)?;
        }
        Ok(())
    }
}

/// Converts the guest-physical range `[gpa, gpa + len)` to `to` through whichever of `gmems`
/// each part is bound to ([`GuestMemfd::convert_gpa`]), in GPA order: what a platform backend
/// whose VM has several guest_memfds calls instead of setting memory attributes itself. A
/// range with any address bound to none of them is refused with [`Error::GpaNotBound`] naming
/// the first such address, before any conversion.
pub fn convert_gpa_range(
    gmems: &mut [&mut GuestMemfd],
    gpa: u64,
    len: u64,
    to: MemoryState,
) -> Result<(), Error> {
    let end = gpa_end(gpa, len)?;
    // Each piece: (gpa, len, which guest_memfd), found before anything is converted.
    let mut pieces = Vec::new();
    let mut at = gpa;
    while at < end {
        let found = gmems.iter().enumerate().find_map(|(i, g)| {
            g.shared
                .bindings()
                .iter()
                .find(|b| b.gpa <= at && at - b.gpa < b.len)
                .map(|b| (i, (b.gpa + b.len).min(end)))
        });
        let Some((i, piece_end)) = found else {
            return Err(Error::GpaNotBound {
                gpa,
                len,
                unbound: at,
            });
        };
        pieces.push((at, piece_end - at, i));
        at = piece_end;
    }
    for (at, piece, i) in pieces {
        if let Some(g) = gmems.get_mut(i) {
            g.convert_gpa(at, piece, to)?;
        }
    }
    Ok(())
}

/// The file pieces `(offset, len)` of the guest-physical range `[gpa, gpa + len)` under
/// `bindings`, in GPA order (see [`GuestMemfd::gpa_offsets`]).
fn offsets_of(bindings: &[Binding], gpa: u64, len: u64) -> Result<Vec<(u64, u64)>, Error> {
    let end = gpa_end(gpa, len)?;
    let mut bindings = bindings.to_vec();
    bindings.sort_by_key(|b| b.gpa);
    let mut pieces = Vec::new();
    let mut at = gpa;
    for b in bindings {
        let b_end = b.gpa + b.len;
        if b_end <= at {
            continue;
        }
        if b.gpa > at || at == end {
            break;
        }
        let piece_end = b_end.min(end);
        pieces.push((b.offset + (at - b.gpa), piece_end - at));
        at = piece_end;
    }
    if at == end {
        return Ok(pieces);
    }
    Err(Error::GpaNotBound {
        gpa,
        len,
        unbound: at,
    })
}

/// `gpa + len`, or [`Error::GpaNotBound`] for an empty or overflowing range.
fn gpa_end(gpa: u64, len: u64) -> Result<u64, Error> {
    gpa.checked_add(len)
        .filter(|_| len > 0)
        .ok_or(Error::GpaNotBound {
            gpa,
            len,
            unbound: gpa,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 0x1000;

    fn b(slot: u32, gpa: u64, offset: u64, len: u64) -> Binding {
        Binding {
            slot,
            gpa,
            offset,
            len,
            external: false,
        }
    }

    fn not_bound(r: Result<Vec<(u64, u64)>, Error>) -> (u64, u64, u64) {
        match r {
            Err(Error::GpaNotBound { gpa, len, unbound }) => (gpa, len, unbound),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gpa_ranges_map_to_file_offsets_in_gpa_order() {
        // Two slots of one file, given out of GPA order: file [8P, 12P) at GPA 0x10_0000 and
        // file [0, 4P) at GPA 0x10_4000 (contiguous in GPA, not in the file).
        let bs = [b(1, 0x10_4000, 0, 4 * P), b(0, 0x10_0000, 8 * P, 4 * P)];
        assert_eq!(
            offsets_of(&bs, 0x10_0000, 8 * P).unwrap(),
            vec![(8 * P, 4 * P), (0, 4 * P)]
        );
        // Inside one slot, and across the boundary.
        assert_eq!(offsets_of(&bs, 0x10_1000, P).unwrap(), vec![(9 * P, P)]);
        assert_eq!(
            offsets_of(&bs, 0x10_3000, 2 * P).unwrap(),
            vec![(11 * P, P), (0, P)]
        );
    }

    #[test]
    fn unbound_empty_and_overflowing_ranges_name_the_first_unbound_address() {
        let bs = [b(0, 0x10_0000, 0, 4 * P), b(1, 0x10_8000, 4 * P, 4 * P)];
        // A gap between the slots.
        assert_eq!(
            not_bound(offsets_of(&bs, 0x10_2000, 8 * P)),
            (0x10_2000, 8 * P, 0x10_4000)
        );
        // Before every slot, past every slot, no slots at all.
        assert_eq!(not_bound(offsets_of(&bs, 0, P)), (0, P, 0));
        assert_eq!(
            not_bound(offsets_of(&bs, 0x10_b000, 2 * P)),
            (0x10_b000, 2 * P, 0x10_c000)
        );
        assert_eq!(
            not_bound(offsets_of(&[], 0x10_0000, P)),
            (0x10_0000, P, 0x10_0000)
        );
        // Empty and overflowing ranges.
        assert_eq!(
            not_bound(offsets_of(&bs, 0x10_0000, 0)),
            (0x10_0000, 0, 0x10_0000)
        );
        assert_eq!(
            not_bound(offsets_of(&bs, u64::MAX - P + 1, 2 * P)),
            (u64::MAX - P + 1, 2 * P, u64::MAX - P + 1)
        );
        let e = Error::GpaNotBound {
            gpa: 0x10_2000,
            len: 0x8000,
            unbound: 0x10_4000,
        };
        assert_eq!(
            e.to_string(),
            "GPA range [0x102000, +0x8000): address 0x104000 is not bound to a memslot of this \
             guest_memfd"
        );
        assert_eq!(e.errno(), libc::EINVAL);
    }
}
