//! How RIPAS initialisation of a range splits into translation-table entries.
//!
//! RMI_RTT_INIT_RIPAS extends the RIM once per RTT entry it covers (RMM 1.0, B4.3.18.4), so the
//! split is part of the measurement. This module reproduces the split the Linux KVM CCA host
//! produces with 4 KiB granules:
//!
//! - The starting level follows from the IPA width: each level resolves 9 bits above the 12-bit
//!   page offset (level 3: 4 KiB entries, level 2: 2 MiB, level 1: 1 GiB, level 0: 512 GiB,
//!   level -1 with LPA2: 256 TiB). When the natural starting level would hold 16 entries or
//!   fewer, the next level down is used instead with that many concatenated tables (as KVM's
//!   stage-2 setup does).
//! - The range is walked from its base; each step is one entry of the largest block size
//!   available from the starting level down (1 GiB, 2 MiB, 4 KiB) that is aligned at the current
//!   address and fits in what is left.

use crate::Error;

/// 4 KiB, the RMM granule.
pub const GRANULE: u64 = 4096;

/// The starting level of a realm's translation tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttGeometry {
    /// The starting level (-1 to 3).
    pub start_level: i8,
    /// Number of concatenated tables at the starting level (1 to 16).
    pub start_tables: u32,
}

impl RttGeometry {
    /// The block sizes a RIPAS walk can use, largest first.
    pub fn block_sizes(&self) -> &'static [u64] {
        match self.start_level {
            i8::MIN..=1 => &[1 << 30, 2 << 20, GRANULE],
            2 => &[2 << 20, GRANULE],
            _ => &[GRANULE],
        }
    }
}

/// The starting level for an `ipa_bits`-wide realm with 4 KiB granules.
///
/// ```
/// use cca_backend::rtt_geometry;
/// let g = rtt_geometry(40, false)?;
/// assert_eq!((g.start_level, g.start_tables), (1, 2));
/// # Ok::<(), cca_backend::Error>(())
/// ```
pub fn rtt_geometry(ipa_bits: u8, lpa2: bool) -> Result<RttGeometry, Error> {
    let max = if lpa2 { 52 } else { 48 };
    if ipa_bits < 32 || ipa_bits > max {
        return Err(Error::InvalidParam {
            field: "ipa_bits",
            value: ipa_bits.into(),
            reason: "must be 32 to 48, or up to 52 with lpa2",
        });
    }
    // Bits translated by the tables, above the 12-bit page offset.
    let bits = u32::from(ipa_bits) - 12;
    let levels = bits.div_ceil(9);
    let mut start = 4 - levels as i8;
    let top_bits = bits - 9 * (levels - 1);
    let mut tables = 1u32;
    if top_bits <= 4 && start < 3 {
        // The top level would hold 2^top_bits <= 16 entries: concatenate at the next level.
        start += 1;
        tables = 1 << top_bits;
    }
    Ok(RttGeometry {
        start_level: start,
        start_tables: tables,
    })
}

/// The RTT entries, as `(base, top)` pairs, that RIPAS initialisation of `[base, top)` measures.
#[derive(Clone, Debug)]
pub struct RipasSplit {
    cur: u64,
    top: u64,
    sizes: &'static [u64],
}

impl Iterator for RipasSplit {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.cur >= self.top {
            return None;
        }
        let left = self.top - self.cur;
        let size = self
            .sizes
            .iter()
            .copied()
            .find(|s| self.cur.is_multiple_of(*s) && *s <= left)
            .unwrap_or(GRANULE);
        let base = self.cur;
        self.cur += size;
        Some((base, self.cur))
    }
}

/// Splits RIPAS initialisation of `[base, top)` into the RTT entries the Linux KVM CCA host
/// produces for an `ipa_bits`-wide realm: walking from `base`, each entry is the largest block
/// available from the starting level down ([`RttGeometry::block_sizes`]: 1 GiB, 2 MiB, 4 KiB)
/// that is aligned at the current address and fits in what is left.
///
/// Refuses an empty or unaligned range, or one reaching into the unprotected half of the IPA
/// space.
///
/// ```
/// use cca_backend::ripas_split;
/// let s: Vec<_> = ripas_split(0x3f_f000, 0x4020_1000, 40, false)?.collect();
/// assert_eq!(s[0], (0x3f_f000, 0x40_0000)); // 4 KiB up to the next 2 MiB boundary
/// assert_eq!(s[1], (0x40_0000, 0x60_0000)); // then 2 MiB blocks up to 1 GiB
/// assert_eq!(s[511], (0x4000_0000, 0x4020_0000)); // 1 GiB does not fit: 2 MiB
/// assert_eq!(s[512], (0x4020_0000, 0x4020_1000)); // and the last 4 KiB
/// assert_eq!(s.len(), 513);
/// # Ok::<(), cca_backend::Error>(())
/// ```
pub fn ripas_split(base: u64, top: u64, ipa_bits: u8, lpa2: bool) -> Result<RipasSplit, Error> {
    let geometry = rtt_geometry(ipa_bits, lpa2)?;
    if base >= top {
        return Err(Error::BadRange {
            base,
            top,
            reason: "empty",
        });
    }
    if !base.is_multiple_of(GRANULE) || !top.is_multiple_of(GRANULE) {
        return Err(Error::BadRange {
            base,
            top,
            reason: "not aligned to the 4 KiB granule",
        });
    }
    if top > 1u64 << (ipa_bits - 1) {
        return Err(Error::BadRange {
            base,
            top,
            reason: "reaches into the unprotected half of the IPA space",
        });
    }
    Ok(RipasSplit {
        cur: base,
        top,
        sizes: geometry.block_sizes(),
    })
}
