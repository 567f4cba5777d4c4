//! Realm and REC parameters, the RMM version whose rules measure them, and the structures
//! measured from them.
//!
//! Layouts from the RMM specification 1.0 (DEN0137 1.0-rel0): B4.4.12 `RmiRealmParams`
//! (4096 bytes: `flags` 0x0, `s2sz` 0x8, `sve_vl` 0x10, `num_bps` 0x18, `num_wps` 0x20,
//! `pmu_num_ctrs` 0x28, `hash_algo` 0x30, `rpv` 0x400, `vmid` 0x800, `rtt_base` 0x808,
//! `rtt_level_start` 0x810, `rtt_num_start` 0x818), B4.4.11 `RmiRealmFlags` (bit 0 `lpa2`,
//! bit 1 `sve`, bit 2 `pmu`), B4.4.7 `RmiHashAlgorithm` (0 SHA-256, 1 SHA-512), B4.4.19
//! `RmiRecParams` (4096 bytes: `flags` 0x0, `mpidr` 0x100, `pc` 0x200, `gprs[0..8]` 0x300,
//! `num_aux` 0x800, `aux` 0x808), B4.4.13 `RmiRecCreateFlags` (bit 0 `runnable`).
//!
//! RMM 2.0 keeps every measured offset: TF-RMM's 2.0-era runtime (`TF-RMM/tf-rmm` at
//! `9a7f8ef46378320ad69140a42e51c1ccf5914661`, `lib/smc/include/smc-rmi.h`: `struct
//! rmi_realm_params` with `flags0` 0x0, `s2sz` 0x8, `sve_vl` 0x10, `num_bps` 0x18, `num_wps`
//! 0x20, `pmu_num_ctrs` 0x28, `algorithm` 0x30, and `struct rmi_rec_params` with `flags` 0x0,
//! `pc` 0x200, `gprs` 0x300; `RMI_REALM_FLAGS0_{LPA2,SVE,PMU}` bits 0, 1, 2) copies exactly
//! those fields into a zeroed page before hashing (`app/attestation/rmm_stub/src/rim.c`:
//! `measurement_realm_params_measure`, `measurement_rec_params_measure`). Its wider fields
//! (`unsigned int` where 1.0 has UInt8) hold the same little-endian bytes for every value
//! accepted here.

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

/// The RMM specification version whose measurement rules the RIM follows.
///
/// The two differ in one step: RMM 1.0 extends the RIM for every RTT entry of
/// `RMI_RTT_INIT_RIPAS` (DEN0137 1.0-rel0, B4.3.18.4); RMM 2.0 does not. TF-RMM removed the
/// measurement from `smc_rtt_init_ripas` (`runtime/rmi/rtt.c`) in commit
/// `bdb07f46c010ea285c268411b4a3696fd0812e1c` ("feat(runtime): align RMI_RTT_INIT_RIPAS to
/// RMMv2.0"); every other measured record (realm and REC parameters, DATA descriptors) is the
/// same in both. Which series targets which: v12 and earlier RMM 1.0 (v12 cover letter: "this
/// series is still targetting RMM v1.0"), v13 and v14 RMM 2.0.
///
/// ```
/// use cca_backend::RmmVersion;
/// assert_eq!(RmmVersion::default(), RmmVersion::V1_0);
/// assert_eq!(RmmVersion::from_name("2.0"), Some(RmmVersion::V2_0));
/// assert!(!RmmVersion::V2_0.measures_init_ripas());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RmmVersion {
    /// RMM 1.0: `RMI_RTT_INIT_RIPAS` is measured. The default, so that plans written before
    /// the version could be chosen keep their RIM.
    #[default]
    V1_0,
    /// RMM 2.0: `RMI_RTT_INIT_RIPAS` is not measured (TF-RMM from commit `bdb07f46`,
    /// 2026-04-28, "feat(runtime): align RMI_RTT_INIT_RIPAS to RMMv2.0", on). A firmware built
    /// before that commit measures RIPAS as 1.0 does, even under the 2.0 interface (v13's
    /// firmware branch): which rules apply is the firmware build's, see
    /// [`UapiVersion::rmm_rules`](crate::UapiVersion::rmm_rules).
    V2_0,
}

impl RmmVersion {
    /// Every version, oldest first.
    pub const ALL: [RmmVersion; 2] = [RmmVersion::V1_0, RmmVersion::V2_0];

    /// The plan-file and command-line name (`"1.0"`, `"2.0"`).
    pub fn name(self) -> &'static str {
        match self {
            RmmVersion::V1_0 => "1.0",
            RmmVersion::V2_0 => "2.0",
        }
    }

    /// Parses a plan-file or command-line name.
    pub fn from_name(name: &str) -> Option<RmmVersion> {
        RmmVersion::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Whether `RMI_RTT_INIT_RIPAS` extends the RIM.
    pub fn measures_init_ripas(self) -> bool {
        self == RmmVersion::V1_0
    }
}

impl std::fmt::Display for RmmVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RMM {}", self.name())
    }
}

/// `ID_AA64DFR0_EL1.BRPs`, bits \[15:12\]: breakpoints - 1.
pub const ID_AA64DFR0_EL1_BRPS_SHIFT: u32 = 12;
/// `ID_AA64DFR0_EL1.WRPs`, bits \[23:20\]: watchpoints - 1.
pub const ID_AA64DFR0_EL1_WRPS_SHIFT: u32 = 20;
/// `PMCR_EL0.N`, bits \[15:11\]: event counters.
pub const PMCR_EL0_N_SHIFT: u32 = 11;

/// The parameters of a realm (the plan file's `"cca"` object, minus the RECs): what
/// [`measure`](crate::measure) hashes into the RIM and what
/// [`CcaBackend::configure`](crate::CcaBackend::configure) is given, the same value for both.
///
/// Every measured field is an input here; nothing is read from the host. On series v12 and
/// later the kernel, not the VMM, fills `RmiRealmParams` when it creates the realm
/// (`arch/arm64/kvm/rmi.c: realm_create_rd`), from the VM's state, so the values given here
/// must be the ones that state will hold then:
///
/// | field | what the v12 kernel writes (patch of "arm64: Support for Arm CCA in KVM" v12) |
/// |---|---|
/// | `hash` | nothing: the zeroed page's SHA-256 (22/46 "Create the realm descriptor") |
/// | `ipa_bits` | the VM type's IPA size (`VTCR_EL2` of the VM, 22/46) |
/// | `lpa2` | nothing: LPA2 off (22/46 sets no flag) |
/// | `num_bps`, `num_wps` | the VM's `ID_AA64DFR0_EL1.BRPs` / `.WRPs` (39/46), which reset to the RMM's maximum (RMI feature register 0, 38/46) unless the VMM lowers them with `KVM_SET_ONE_REG`: see [`set_debug_from_id_aa64dfr0`](Self::set_debug_from_id_aa64dfr0) |
/// | `sve_vl` | the vCPUs' finalized SVE maximum vector length, the same on every vCPU, or SVE off when they lack `KVM_ARM_VCPU_SVE` (42/46 `realm_init_sve_param`) |
/// | `pmu_counters` | `PMCR_EL0.N` as the VMM set it, when the VM has a PMU (`KVM_ARM_VCPU_PMU_V3`), else PMU off (37/46): see [`set_pmu_from_pmcr`](Self::set_pmu_from_pmcr) |
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
    ///
    /// These defaults are what a v12 kernel measures only when the VMM makes them so: it
    /// writes `BRPs = 1` and `WRPs = 1` into every vCPU's `ID_AA64DFR0_EL1` (otherwise the
    /// kernel measures the RMM's maximum, which TF-RMM takes from the host's `ID_AA64DFR0_EL1`
    /// in `runtime/rmi/feature.c`), and creates the vCPUs without
    /// `KVM_ARM_VCPU_SVE` and `KVM_ARM_VCPU_PMU_V3`. A VMM that does not set them sets the
    /// fields here from the vCPUs ([`set_debug_from_id_aa64dfr0`](Self::set_debug_from_id_aa64dfr0),
    /// [`set_pmu_from_pmcr`](Self::set_pmu_from_pmcr), `sve_vl`).
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

    /// Sets `num_bps` and `num_wps` from a vCPU's `ID_AA64DFR0_EL1` (as `KVM_GET_ONE_REG`
    /// returns it once the VMM has written it): `BRPs + 1` breakpoints and `WRPs + 1`
    /// watchpoints, the fields the v12+ kernel copies into `RmiRealmParams` (`BRPs` and `WRPs`
    /// already hold count - 1, the RMM's encoding).
    ///
    /// ```
    /// use cca_backend::{HashAlgo, RealmParams};
    /// let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    /// realm.set_debug_from_id_aa64dfr0(0x0000_0000_0030_5000); // BRPs 5, WRPs 3
    /// assert_eq!((realm.num_bps, realm.num_wps), (6, 4));
    /// ```
    pub fn set_debug_from_id_aa64dfr0(&mut self, id_aa64dfr0: u64) {
        self.num_bps = ((id_aa64dfr0 >> ID_AA64DFR0_EL1_BRPS_SHIFT) & 0xf) as u8 + 1;
        self.num_wps = ((id_aa64dfr0 >> ID_AA64DFR0_EL1_WRPS_SHIFT) & 0xf) as u8 + 1;
    }

    /// Sets `pmu_counters` from a vCPU's `PMCR_EL0` (its `N` field, the count the v12+ kernel
    /// measures) for a VM whose vCPUs have a PMU; `None` turns the PMU off.
    ///
    /// ```
    /// use cca_backend::{HashAlgo, RealmParams};
    /// let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    /// realm.set_pmu_from_pmcr(Some(6 << 11));
    /// assert_eq!(realm.pmu_counters, Some(6));
    /// ```
    pub fn set_pmu_from_pmcr(&mut self, pmcr_el0: Option<u64>) {
        self.pmu_counters = pmcr_el0.map(|p| ((p >> PMCR_EL0_N_SHIFT) & 0x1f) as u8);
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
        if !self.sve_vl.is_multiple_of(128) || self.sve_vl > 2048 {
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
        // Which field a refusal names, and the value it names.
        fn refused(r: &RealmParams) -> Option<(&'static str, u64)> {
            match r.validate() {
                Ok(()) => None,
                Err(Error::InvalidParam { field, value, .. }) => Some((field, value)),
                Err(e) => panic!("{e:?}"),
            }
        }
        let ok = RealmParams::new(HashAlgo::Sha256, 40);
        assert_eq!(refused(&ok), None);
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
        assert_eq!(refused(&r), None);
        r.ipa_bits = 31;
        assert_eq!(refused(&r), Some(("ipa_bits", 31)));
        r.ipa_bits = 32;
        assert_eq!(refused(&r), None);
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
        assert_eq!(refused(&r), Some(("sve_vl", 129)));
        r.sve_vl = 2176;
        assert_eq!(refused(&r), Some(("sve_vl", 2176)));
        r.sve_vl = 2048;
        assert_eq!(refused(&r), None);
        let mut r = ok;
        r.pmu_counters = Some(32);
        assert_eq!(refused(&r), Some(("pmu_counters", 32)));
        r.pmu_counters = Some(31);
        assert_eq!(refused(&r), None);
        r.pmu_counters = Some(0);
        assert_eq!(refused(&r), None);
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
    fn registers_give_the_counts() {
        // ID_AA64DFR0_EL1 (Arm ARM D23.2): BRPs [15:12], WRPs [23:20], both count - 1;
        // PMUVer [11:8] and CTX_CMPs [31:28] must not leak in.
        let mut r = RealmParams::new(HashAlgo::Sha256, 40);
        r.set_debug_from_id_aa64dfr0(0xffff_ffff_ff0f_0fff);
        assert_eq!((r.num_bps, r.num_wps), (1, 1));
        r.set_debug_from_id_aa64dfr0(0x0000_0000_00f0_f000);
        assert_eq!((r.num_bps, r.num_wps), (16, 16));
        // PMCR_EL0.N [15:11]; bits 10:0 and 16+ must not leak in.
        r.set_pmu_from_pmcr(Some(0xffff_0000 | (31 << 11) | 0x7ff));
        assert_eq!(r.pmu_counters, Some(31));
        r.set_pmu_from_pmcr(Some(0x7ff));
        assert_eq!(r.pmu_counters, Some(0));
        r.set_pmu_from_pmcr(None);
        assert_eq!(r.pmu_counters, None);
    }

    #[test]
    fn rmm_versions_by_name() {
        for v in RmmVersion::ALL {
            assert_eq!(RmmVersion::from_name(v.name()), Some(v));
        }
        assert_eq!(RmmVersion::from_name("1.1"), None);
        assert_eq!(RmmVersion::from_name("2"), None);
        assert!(RmmVersion::V1_0.measures_init_ripas());
        assert_eq!(RmmVersion::V2_0.to_string(), "RMM 2.0");
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
