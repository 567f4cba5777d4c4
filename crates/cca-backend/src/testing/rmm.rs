//! The model's RMM: the realm's RTTs and its RIM, from the model's own reading of TF-RMM, not
//! from this crate's [`measure`](crate::measure) module, with which it shares no code (issue 22,
//! item 3). Every structure is laid out here as bytes at the offsets TF-RMM gives and hashed
//! with `sha2` directly, so a slip in `measure.rs` (a field, an offset, a flag, an order) makes
//! the model's RIM and `measure_with_options`'s differ in the tests that compare them.
//!
//! Read in TF-RMM (github.com/TF-RMM/tf-rmm) at `9a7f8ef4` (2.0-era) and `tf-rmm-v0.8.0`
//! (RMM 1.0):
//! - `app/attestation/rmm_stub/src/rim.c`: `measurement_realm_params_measure` (a zeroed
//!   `struct rmi_realm_params`, 4096 bytes, with `flags0` u64 @0x0, `s2sz` @0x8, `sve_vl`
//!   @0x10, `num_bps` @0x18, `num_wps` @0x20, `pmu_num_ctrs` @0x28 (each `unsigned int`),
//!   `algorithm` u8 @0x30 copied from the host's, hashed whole: the RIM's first value);
//!   `measurement_data_granule_measure` (`struct measurement_desc_data`, 0x100 bytes:
//!   `desc_type` 0 @0x0, `len` 0x100 @0x8, `rim` @0x10, `ipa` @0x50, `flags` @0x58, `content`
//!   @0x60 the granule's hash only when `flags == RMI_MEASURE_CONTENT` (1)); and
//!   `measurement_rec_params_measure` (a zeroed `struct rmi_rec_params`, 4096 bytes, with
//!   `flags` @0x0, `pc` @0x200, `gprs[8]` @0x300 copied; its hash at `content` @0x50 of
//!   `struct measurement_desc_rec`, `desc_type` 1). Each descriptor's hash is the new RIM.
//! - `lib/smc/include/smc-rmi.h`: `RMI_REALM_FLAGS0_LPA2` bit 0, `_SVE` bit 1, `_PMU` bit 2;
//!   `REC_PARAMS_FLAG_RUNNABLE` bit 0; `RMI_HASH_SHA_256` 0, `RMI_HASH_SHA_512` 1.
//! - `runtime/rmi/rec.c` (`smc_rec_create`): a REC is measured only when runnable.
//! - `tf-rmm-v0.8.0` `runtime/rmi/rtt.c` (`smc_rtt_init_ripas`): walk to the deepest RTT at
//!   `base`; `RMI_ERROR_RTT` with that level when `base` is not aligned to its entry size;
//!   then entry by entry to the end of that table while the entry ends at or below `top`,
//!   stopping at an entry that is neither UNASSIGNED EMPTY nor UNASSIGNED RAM; each entry made
//!   RAM is measured (`measurement_init_ripas_measure`: `struct measurement_desc_ripas`,
//!   `desc_type` 2, `base` @0x50, `top` @0x58 of the entry); success with the address reached,
//!   else `RMI_ERROR_RTT` with the level. TF-RMM from `bdb07f46` (RMM 2.0 rules) no longer
//!   measures it.
//! - `RMI_DATA_CREATE` (v0.8.0 `runtime/rmi/rtt.c`; `rtt_map.c` in the 2.0 era): the entry at
//!   level 3 becomes ASSIGNED (RAM); `RMI_ERROR_RTT` with the level the walk reached when no
//!   level-3 table covers the address.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256, Sha512};

/// `RMI_HASH_SHA_256`.
pub const HASH_SHA_256: u8 = 0;
/// `RMI_HASH_SHA_512`.
pub const HASH_SHA_512: u8 = 1;

const DESC_TYPE_DATA: u8 = 0;
const DESC_TYPE_REC: u8 = 1;
const DESC_TYPE_RIPAS: u8 = 2;
const DESC_LEN: u64 = 0x100;

/// The hash TF-RMM's `measurement_hash_compute` gives (32 or 64 bytes).
pub fn digest(algorithm: u8, bytes: &[u8]) -> Vec<u8> {
    if algorithm == HASH_SHA_512 {
        Sha512::digest(bytes).to_vec()
    } else {
        Sha256::digest(bytes).to_vec()
    }
}

/// The fields of `struct rmi_realm_params` the kernel fills and `REALM_CREATE` measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealmCreate {
    /// `flags0`.
    pub flags0: u64,
    /// `s2sz`.
    pub s2sz: u32,
    /// `sve_vl` (vector length in quadwords, minus one).
    pub sve_vl: u32,
    /// `num_bps` (as the kernel writes it: `ID_AA64DFR0_EL1.BRPs`).
    pub num_bps: u32,
    /// `num_wps` (`ID_AA64DFR0_EL1.WRPs`).
    pub num_wps: u32,
    /// `pmu_num_ctrs`.
    pub pmu_num_ctrs: u32,
    /// `algorithm`.
    pub algorithm: u8,
}

/// Size of an RTT entry at `level` (4 KiB granule): 4 KiB at level 3, 2 MiB at 2, 1 GiB at 1,
/// 512 GiB at 0 (the kernel's `rmi_rtt_level_mapsize`, TF-RMM's `s2tte_map_size`).
pub fn map_size(level: i8) -> u64 {
    1u64 << (9 * (4 - i32::from(level)) + 3)
}

/// The realm's RMM state the model keeps: RIM, RTTs, RIPAS and assigned granules.
#[derive(Clone, Debug)]
pub struct Rmm {
    algorithm: u8,
    rim: Vec<u8>,
    measure_ripas: bool,
    start_level: i8,
    /// RTTs below the root: `(level, base)`, `base` aligned to the size the table covers.
    tables: BTreeSet<(i8, u64)>,
    /// UNASSIGNED entries made RAM, `start -> end`.
    ram: BTreeMap<u64, u64>,
    /// ASSIGNED level-3 entries (populated granules).
    assigned: BTreeSet<u64>,
    /// A measured granule whose content the model did not read: the RIM is unknown.
    unknown: bool,
}

impl Rmm {
    /// `RMI_REALM_CREATE` with `p`, RTT starting level `start_level`; `measure_ripas`: the
    /// firmware measures `RMI_RTT_INIT_RIPAS` (RMM 1.0 rules).
    pub fn realm_create(p: &RealmCreate, start_level: i8, measure_ripas: bool) -> Rmm {
        let mut page = vec![0u8; 4096];
        page[0x0..0x8].copy_from_slice(&p.flags0.to_le_bytes());
        page[0x8..0xc].copy_from_slice(&p.s2sz.to_le_bytes());
        page[0x10..0x14].copy_from_slice(&p.sve_vl.to_le_bytes());
        page[0x18..0x1c].copy_from_slice(&p.num_bps.to_le_bytes());
        page[0x20..0x24].copy_from_slice(&p.num_wps.to_le_bytes());
        page[0x28..0x2c].copy_from_slice(&p.pmu_num_ctrs.to_le_bytes());
        page[0x30] = p.algorithm;
        Rmm {
            algorithm: p.algorithm,
            rim: digest(p.algorithm, &page),
            measure_ripas,
            start_level,
            tables: BTreeSet::new(),
            ram: BTreeMap::new(),
            assigned: BTreeSet::new(),
            unknown: false,
        }
    }

    /// The RIM, or `None` when a measured granule's content was not read.
    pub fn rim(&self) -> Option<Vec<u8>> {
        (!self.unknown).then(|| self.rim.clone())
    }

    /// A 256-byte descriptor of `desc_type` with the current RIM at 0x10 and `fill` applied;
    /// its hash becomes the RIM.
    fn extend(&mut self, desc_type: u8, fill: impl FnOnce(&mut [u8])) {
        let mut d = [0u8; 0x100];
        d[0] = desc_type;
        d[0x8..0x10].copy_from_slice(&DESC_LEN.to_le_bytes());
        d[0x10..0x10 + self.rim.len()].copy_from_slice(&self.rim);
        fill(&mut d);
        self.rim = digest(self.algorithm, &d);
    }

    /// The hash of a granule's content with the realm's algorithm.
    pub fn content_hash(&self, bytes: &[u8]) -> Vec<u8> {
        digest(self.algorithm, bytes)
    }

    /// The deepest RTT level whose table covers `ipa`.
    fn walk(&self, ipa: u64) -> i8 {
        let mut level = self.start_level;
        while level < 3
            && self
                .tables
                .contains(&(level + 1, ipa & !(map_size(level) - 1)))
        {
            level += 1;
        }
        level
    }

    /// `RMI_RTT_CREATE` of the table at `level` covering `ipa`: `Err(level - 1)`
    /// (`RMI_ERROR_RTT`) when it exists or its parent does not.
    pub fn rtt_create(&mut self, ipa: u64, level: i8) -> Result<(), i8> {
        if level <= self.start_level || level > 3 || self.walk(ipa) != level - 1 {
            return Err(self.walk(ipa).min(level - 1));
        }
        let base = ipa & !(map_size(level - 1) - 1);
        self.tables.insert((level, base));
        Ok(())
    }

    /// `RMI_DATA_CREATE` at `ipa` (`content`: the granule's bytes as read, or `None` when the
    /// model did not read them). `Err(level)` (`RMI_ERROR_RTT`) without a level-3 table.
    pub fn data_create(
        &mut self,
        ipa: u64,
        measured: bool,
        content: Option<&[u8]>,
    ) -> Result<(), i8> {
        let level = self.walk(ipa);
        if level != 3 {
            return Err(level);
        }
        let hash = match (measured, content) {
            (true, Some(c)) => Some(digest(self.algorithm, c)),
            (true, None) => {
                self.unknown = true;
                None
            }
            (false, _) => None,
        };
        let flags: u64 = u64::from(measured);
        self.extend(DESC_TYPE_DATA, |d| {
            d[0x50..0x58].copy_from_slice(&ipa.to_le_bytes());
            d[0x58..0x60].copy_from_slice(&flags.to_le_bytes());
            if let Some(h) = &hash {
                d[0x60..0x60 + h.len()].copy_from_slice(h);
            }
        });
        self.assigned.insert(ipa);
        Ok(())
    }

    /// `RMI_REC_CREATE` with `flags`, `pc`, `gprs`: measured only when runnable.
    pub fn rec_create(&mut self, flags: u64, pc: u64, gprs: &[u64; 8]) {
        if flags & 1 == 0 {
            return;
        }
        let mut page = vec![0u8; 4096];
        page[0..8].copy_from_slice(&flags.to_le_bytes());
        page[0x200..0x208].copy_from_slice(&pc.to_le_bytes());
        for (i, g) in gprs.iter().enumerate() {
            page[0x300 + 8 * i..0x308 + 8 * i].copy_from_slice(&g.to_le_bytes());
        }
        let content = digest(self.algorithm, &page);
        self.extend(DESC_TYPE_REC, |d| {
            d[0x50..0x50 + content.len()].copy_from_slice(&content);
        });
    }

    fn is_ram(&self, start: u64, end: u64) -> bool {
        self.ram
            .range(..=start)
            .next_back()
            .is_some_and(|(_, e)| *e >= end)
    }

    /// `RMI_RTT_INIT_RIPAS(base, top)` as `tf-rmm-v0.8.0`'s `smc_rtt_init_ripas`: `Ok(next)`
    /// or `Err(level)` (`RMI_ERROR_RTT`).
    pub fn rtt_init_ripas(&mut self, base: u64, top: u64) -> Result<u64, i8> {
        let level = self.walk(base);
        let size = map_size(level);
        let mut addr = base & !(size - 1);
        if addr != base {
            return Err(level);
        }
        // The table holds 512 entries (concatenated root tables: 512 per granule).
        let table_end = (base & !(512 * size - 1)) + 512 * size;
        while addr < table_end {
            let next = addr + size;
            if next > top {
                break;
            }
            let table_below = level < 3 && self.tables.contains(&(level + 1, addr));
            let assigned = level == 3 && self.assigned.contains(&addr);
            if table_below || assigned {
                break;
            }
            if !self.is_ram(addr, next) {
                super::merge_range(&mut self.ram, addr, next);
            }
            if self.measure_ripas {
                self.extend(DESC_TYPE_RIPAS, |d| {
                    d[0x50..0x58].copy_from_slice(&addr.to_le_bytes());
                    d[0x58..0x60].copy_from_slice(&next.to_le_bytes());
                });
            }
            addr = next;
        }
        if addr > base {
            Ok(addr)
        } else {
            Err(level)
        }
    }
}
