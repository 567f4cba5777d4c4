//! Realm and REC parameters, and the RMM 1.0 structures measured from them.
//!
//! Layouts from the RMM specification 1.0 (DEN0137 1.0-rel0): B4.4.12 `RmiRealmParams`
//! (4096 bytes: `flags` 0x0, `s2sz` 0x8, `sve_vl` 0x10, `num_bps` 0x18, `num_wps` 0x20,
//! `pmu_num_ctrs` 0x28, `hash_algo` 0x30, `rpv` 0x400, `vmid` 0x800, `rtt_base` 0x808,
//! `rtt_level_start` 0x810, `rtt_num_start` 0x818), B4.4.11 `RmiRealmFlags` (bit 0 `lpa2`,
//! bit 1 `sve`, bit 2 `pmu`), B4.4.7 `RmiHashAlgorithm` (0 SHA-256, 1 SHA-512), B4.4.19
//! `RmiRecParams` (4096 bytes: `flags` 0x0, `mpidr` 0x100, `pc` 0x200, `gprs[0..8]` 0x300,
//! `num_aux` 0x800, `aux` 0x808), B4.4.13 `RmiRecCreateFlags` (bit 0 `runnable`).

use crate::Error;

/// Size of `RmiRealmParams` and `RmiRecParams`.
pub const RMI_PARAMS_SIZE: usize = 4096;

/// Offsets of the measured `RmiRealmParams` fields (B4.4.12).
pub mod realm_offsets {
    /// `flags` (`RmiRealmFlags`, 64 bits).
    pub const FLAGS: usize = 0x0;
    /// `s2sz` (UInt8).
    pub const S2SZ: usize = 0x8;
    /// `sve_vl` (UInt8, `(VL / 128) - 1`).
    pub const SVE_VL: usize = 0x10;
    /// `num_bps` (UInt8, count - 1).
    pub const NUM_BPS: usize = 0x18;
    /// `num_wps` (UInt8, count - 1).
    pub const NUM_WPS: usize = 0x20;
    /// `pmu_num_ctrs` (UInt8).
    pub const PMU_NUM_CTRS: usize = 0x28;
    /// `hash_algo` (`RmiHashAlgorithm`, UInt8).
    pub const HASH_ALGO: usize = 0x30;
    /// `rpv` (Bits512): not measured into the RIM.
    pub const RPV: usize = 0x400;
}

/// Offsets of the measured `RmiRecParams` fields (B4.4.19).
pub mod rec_offsets {
    /// `flags` (`RmiRecCreateFlags`).
    pub const FLAGS: usize = 0x0;
    /// `pc`.
    pub const PC: usize = 0x200;
    /// `gprs[0]`; `gprs[i]` at `GPRS + 8 * i`, `i < 8`.
    pub const GPRS: usize = 0x300;
}

/// `RmiRealmFlags.lpa2`.
pub const REALM_FLAG_LPA2: u64 = 1 << 0;
/// `RmiRealmFlags.sve`.
pub const REALM_FLAG_SVE: u64 = 1 << 1;
/// `RmiRealmFlags.pmu`.
pub const REALM_FLAG_PMU: u64 = 1 << 2;
/// `RmiRecCreateFlags.runnable`.
pub const REC_FLAG_RUNNABLE: u64 = 1 << 0;

/// The realm's measurement hash algorithm (`RmiHashAlgorithm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// SHA-256 (`RMI_HASH_SHA_256` = 0): 32-byte RIM.
    #[default]
    Sha256,
    /// SHA-512 (`RMI_HASH_SHA_512` = 1): 64-byte RIM.
    Sha512,
}

impl HashAlgo {
    /// The `RmiHashAlgorithm` encoding.
    pub fn rmi_value(self) -> u8 {
        match self {
            HashAlgo::Sha256 => 0,
            HashAlgo::Sha512 => 1,
        }
    }

    /// Output size in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    /// The plan-file name (`"sha256"`, `"sha512"`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Parses a plan-file name.
    pub fn from_name(name: &str) -> Option<HashAlgo> {
        match name {
            "sha256" => Some(HashAlgo::Sha256),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }
}

/// The parameters of a realm (the plan file's `"cca"` object, minus the RECs).
///
/// ```
/// use cca_backend::{HashAlgo, RealmParams};
/// let mut realm = RealmParams::new(HashAlgo::Sha512, 40);
/// realm.sve_vl = 512;
/// realm.pmu_counters = Some(4);
/// realm.validate()?;
/// let page = realm.measured_bytes()?;
/// assert_eq!(page[0x10], 3); // (512 / 128) - 1
/// # Ok::<(), cca_backend::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmParams {
    /// Measurement hash algorithm.
    pub hash: HashAlgo,
    /// IPA width in bits (`s2sz`): 32 to 48, or up to 52 with `lpa2`.
    pub ipa_bits: u8,
    /// Whether LPA2 is enabled.
    pub lpa2: bool,
    /// Number of breakpoints (at least 2, at most 64; the RMM encodes count - 1).
    pub num_bps: u8,
    /// Number of watchpoints (at least 2, at most 64; the RMM encodes count - 1).
    pub num_wps: u8,
    /// SVE vector length in bits: a multiple of 128 up to 2048, or 0 for SVE off.
    pub sve_vl: u16,
    /// PMU counters (at most 31), or `None` for PMU off.
    pub pmu_counters: Option<u8>,
    /// The Realm Personalization Value. Not measured into the RIM (the attestation token
    /// carries it); not in plan files. Defaults to zeros.
    pub rpv: [u8; 64],
}

impl RealmParams {
    /// A realm with the given hash and IPA width, LPA2, SVE and PMU off, and the minimum of 2
    /// breakpoints and 2 watchpoints.
    pub fn new(hash: HashAlgo, ipa_bits: u8) -> Self {
        RealmParams {
            hash,
            ipa_bits,
            lpa2: false,
            num_bps: 2,
            num_wps: 2,
            sve_vl: 0,
            pmu_counters: None,
            rpv: [0; 64],
        }
    }

    /// Checks every field against what the RMM specification allows.
    pub fn validate(&self) -> Result<(), Error> {
        let max_ipa = if self.lpa2 { 52 } else { 48 };
        if self.ipa_bits < 32 || self.ipa_bits > max_ipa {
            return Err(Error::InvalidParam {
                field: "ipa_bits",
                value: self.ipa_bits.into(),
                reason: "must be 32 to 48, or up to 52 with lpa2",
            });
        }
        for (field, v) in [("num_bps", self.num_bps), ("num_wps", self.num_wps)] {
            if !(2..=64).contains(&v) {
                return Err(Error::InvalidParam {
                    field,
                    value: v.into(),
                    reason: "must be 2 to 64 (the RMM encodes count - 1; 0 is reserved)",
                });
            }
        }
        if self.sve_vl % 128 != 0 || self.sve_vl > 2048 {
            return Err(Error::InvalidParam {
                field: "sve_vl",
                value: self.sve_vl.into(),
                reason: "must be a multiple of 128 bits up to 2048, or 0 for SVE off",
            });
        }
        if let Some(n) = self.pmu_counters {
            if n > 31 {
                return Err(Error::InvalidParam {
                    field: "pmu_counters",
                    value: n.into(),
                    reason: "must be at most 31, or null for PMU off",
                });
            }
        }
        Ok(())
    }

    /// The first unprotected IPA: `2^(ipa_bits - 1)`. Realm memory lies below it.
    pub fn protected_limit(&self) -> u64 {
        1u64 << (self.ipa_bits.clamp(1, 64) - 1)
    }

    /// `RmiRealmFlags` for these parameters.
    pub fn rmi_flags(&self) -> u64 {
        let mut f = 0;
        if self.lpa2 {
            f |= REALM_FLAG_LPA2;
        }
        if self.sve_vl != 0 {
            f |= REALM_FLAG_SVE;
        }
        if self.pmu_counters.is_some() {
            f |= REALM_FLAG_PMU;
        }
        f
    }

    /// The 4096-byte `RmiRealmParams` with only the measured fields set and the rest zero:
    /// what RMI_REALM_CREATE hashes to initialise the RIM (B4.3.9.4).
    pub fn measured_bytes(&self) -> Result<Box<[u8; RMI_PARAMS_SIZE]>, Error> {
        self.validate()?;
        let mut p = Box::new([0u8; RMI_PARAMS_SIZE]);
        use realm_offsets as o;
        p[o::FLAGS..o::FLAGS + 8].copy_from_slice(&self.rmi_flags().to_le_bytes());
        p[o::S2SZ] = self.ipa_bits;
        p[o::SVE_VL] = if self.sve_vl == 0 {
            0
        } else {
            (self.sve_vl / 128 - 1) as u8
        };
        p[o::NUM_BPS] = self.num_bps - 1;
        p[o::NUM_WPS] = self.num_wps - 1;
        p[o::PMU_NUM_CTRS] = self.pmu_counters.unwrap_or(0);
        p[o::HASH_ALGO] = self.hash.rmi_value();
        Ok(p)
    }
}

/// The parameters of one REC (vCPU) as measured: the plan file's `"recs"` entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecParams {
    /// Entry program counter.
    pub pc: u64,
    /// `x0` to `x7` at entry.
    pub gprs: [u64; 8],
    /// Whether the REC is runnable at activation (only runnable RECs extend the RIM).
    pub runnable: bool,
}

impl RecParams {
    /// The 4096-byte `RmiRecParams` with only the measured fields (`flags`, `pc`, `gprs`) set:
    /// what RMI_REC_CREATE hashes into the REC descriptor's content (B4.3.12.4).
    pub fn measured_bytes(&self) -> Box<[u8; RMI_PARAMS_SIZE]> {
        let mut p = Box::new([0u8; RMI_PARAMS_SIZE]);
        use rec_offsets as o;
        let flags = if self.runnable { REC_FLAG_RUNNABLE } else { 0 };
        p[o::FLAGS..o::FLAGS + 8].copy_from_slice(&flags.to_le_bytes());
        p[o::PC..o::PC + 8].copy_from_slice(&self.pc.to_le_bytes());
        for (i, g) in self.gprs.iter().enumerate() {
            let at = o::GPRS + 8 * i;
            p[at..at + 8].copy_from_slice(&g.to_le_bytes());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = RealmParams::new(HashAlgo::Sha256, 40);
        assert!(ok.validate().is_ok());
        let mut r = ok.clone();
        r.ipa_bits = 52;
        assert!(matches!(
            r.validate(),
            Err(Error::InvalidParam {
                field: "ipa_bits",
                value: 52,
                ..
            })
        ));
        r.lpa2 = true;
        assert!(r.validate().is_ok());
        r.ipa_bits = 31;
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.num_bps = 1;
        assert!(matches!(
            r.validate(),
            Err(Error::InvalidParam {
                field: "num_bps",
                ..
            })
        ));
        let mut r = ok.clone();
        r.num_wps = 65;
        assert!(matches!(
            r.validate(),
            Err(Error::InvalidParam {
                field: "num_wps",
                ..
            })
        ));
        let mut r = ok.clone();
        r.sve_vl = 129;
        assert!(r.validate().is_err());
        r.sve_vl = 2176;
        assert!(r.validate().is_err());
        r.sve_vl = 2048;
        assert!(r.validate().is_ok());
        let mut r = ok;
        r.pmu_counters = Some(32);
        assert!(r.validate().is_err());
        r.pmu_counters = Some(0);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn realm_page_fields() {
        let mut r = RealmParams::new(HashAlgo::Sha512, 48);
        r.num_bps = 6;
        r.num_wps = 4;
        r.sve_vl = 2048;
        r.pmu_counters = Some(8);
        r.rpv = [0xaa; 64];
        let p = r.measured_bytes().unwrap();
        assert_eq!(p[0], 0b110); // sve | pmu
        assert_eq!(p[8], 48);
        assert_eq!(p[0x10], 15);
        assert_eq!(p[0x18], 5);
        assert_eq!(p[0x20], 3);
        assert_eq!(p[0x28], 8);
        assert_eq!(p[0x30], 1);
        // RPV is not measured.
        assert!(p[0x400..0x440].iter().all(|b| *b == 0));
        let nonzero = p.iter().filter(|b| **b != 0).count();
        assert_eq!(nonzero, 7);
    }

    #[test]
    fn rec_page_fields() {
        let rec = RecParams {
            pc: 0x8000_0000,
            gprs: [1, 2, 3, 4, 5, 6, 7, 8],
            runnable: true,
        };
        let p = rec.measured_bytes();
        assert_eq!(p[0], 1);
        assert_eq!(&p[0x200..0x208], &0x8000_0000u64.to_le_bytes());
        assert_eq!(p[0x300], 1);
        assert_eq!(p[0x338], 8);
        assert_eq!(p.iter().filter(|b| **b != 0).count(), 1 + 1 + 8);
    }
}
