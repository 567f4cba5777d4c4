//! The Realm Initial Measurement (RIM), computed offline (RMM specification 1.0 and 2.0).
//!
//! The RIM starts as the hash of the measured realm parameters (RMI_REALM_CREATE, B4.3.9.4) and
//! is extended by hashing a 256-byte measurement descriptor holding the current RIM for every
//! RMI_DATA_CREATE (B4.3.1.4), every RTT entry of RMI_RTT_INIT_RIPAS (B4.3.18.4, RMM 1.0 only:
//! see [`RmmVersion`]) and every runnable RMI_REC_CREATE (B4.3.12.4). Descriptor layouts
//! (C1.11-C1.13, zero padded to 256 bytes): `desc_type` u8 at 0x0 (DATA 0, REC 1, RIPAS 2),
//! `len` u64 at 0x8 (0x100), `rim[64]` at 0x10, then DATA: `ipa` at 0x50, `flags` at 0x58,
//! `content[64]` at 0x60; REC: `content[64]` at 0x50; RIPAS: `base` at 0x50, `top` at 0x58. A
//! SHA-256 result fills the low 32 bytes of a 64-byte field and the rest stays zero. TF-RMM's
//! 2.0-era runtime keeps the DATA and REC layouts (`app/attestation/rmm_stub/src/
//! measurement_descs.h` at `9a7f8ef46378320ad69140a42e51c1ccf5914661`).
//!
//! The order of the records is the order the host issues the RMI calls: [`MeasureOrder`] names
//! the orders the CCA KVM series produce.

use std::fmt;

#[cfg(feature = "kvm")]
use cc_populate::{Content, InPlaceReader, Plan, Role};
use sha2::digest::consts::{U128, U64};
use sha2::digest::generic_array::GenericArray;

use crate::params::{HashAlgo, RealmParams, RecParams, RmmVersion};
use crate::ripas::{ripas_split, GRANULE};
use crate::Error;
#[cfg(feature = "kvm")]
use crate::UapiVersion;

/// Size of every measurement descriptor.
pub const DESCRIPTOR_SIZE: usize = 256;
/// `RmmMeasurementDescriptorData.desc_type`.
pub const DESC_TYPE_DATA: u8 = 0;
/// `RmmMeasurementDescriptorRec.desc_type`.
pub const DESC_TYPE_REC: u8 = 1;
/// `RmmMeasurementDescriptorRipas.desc_type`.
pub const DESC_TYPE_RIPAS: u8 = 2;
/// `RmiDataFlags.measure` = `RMI_MEASURE_CONTENT`.
pub const RMI_MEASURE_CONTENT: u64 = 1;

const PAGE: usize = GRANULE as usize;

/// A hash result, zero padded to the 64 bytes of an `RmmRealmMeasurement`.
pub type Measurement = [u8; 64];

/// Hashes `data` with `algo`, zero padding the result to 64 bytes.
///
/// Short whole-block messages (the 256-byte measurement descriptors, hashed serially once per
/// granule) go straight to the compression function, in one call with their constant padding
/// block; anything else through `sha2`'s digest, which compresses whole blocks in place. Both
/// paths are checked against each other in tests.
pub fn hash(algo: HashAlgo, data: &[u8]) -> Measurement {
    let mut out = [0u8; 64];
    match algo {
        HashAlgo::Sha256 if data.len().is_multiple_of(64) && data.len() <= SHORT => {
            let mut blocks = [GenericArray::<u8, U64>::default(); SHORT / 64 + 1];
            let n = data.len() / 64;
            for (b, d) in blocks.iter_mut().zip(data.chunks_exact(64)) {
                b.copy_from_slice(d);
            }
            blocks[n][0] = 0x80;
            blocks[n][56..].copy_from_slice(&((data.len() as u64) * 8).to_be_bytes());
            let mut state = SHA256_IV;
            sha2::compress256(&mut state, &blocks[..=n]);
            for (o, w) in out.chunks_exact_mut(4).zip(state) {
                o.copy_from_slice(&w.to_be_bytes());
            }
        }
        HashAlgo::Sha512 if data.len().is_multiple_of(128) && data.len() <= SHORT => {
            let mut blocks = [GenericArray::<u8, U128>::default(); SHORT / 128 + 1];
            let n = data.len() / 128;
            for (b, d) in blocks.iter_mut().zip(data.chunks_exact(128)) {
                b.copy_from_slice(d);
            }
            blocks[n][0] = 0x80;
            blocks[n][112..].copy_from_slice(&((data.len() as u128) * 8).to_be_bytes());
            let mut state = SHA512_IV;
            sha2::compress512(&mut state, &blocks[..=n]);
            for (o, w) in out.chunks_exact_mut(8).zip(state) {
                o.copy_from_slice(&w.to_be_bytes());
            }
        }
        HashAlgo::Sha256 => out[..32].copy_from_slice(&cc_hash::sha256(data)),
        HashAlgo::Sha512 => out.copy_from_slice(&cc_hash::sha512(data)),
    }
    out
}

/// Content hashes of the granules of `src` into `dst` (one per granule, zero padded), several
/// granules per vector register where the CPU allows (`cc_hash::sha*_many`: 16 lanes of
/// SHA-256 or 8 of SHA-512 with AVX-512), one stream per granule otherwise.
fn hash_granules(algo: HashAlgo, src: &[u8], dst: &mut [Measurement]) {
    let ok = match algo {
        HashAlgo::Sha512 => cc_hash::sha512_many(src, PAGE, dst).is_ok(),
        HashAlgo::Sha256 => {
            let mut tmp = [[0u8; 32]; 64];
            let mut ok = src.len() == dst.len() * PAGE;
            for (s, d) in src.chunks(tmp.len() * PAGE).zip(dst.chunks_mut(tmp.len())) {
                let t = &mut tmp[..d.len()];
                ok &= cc_hash::sha256_many(s, PAGE, t).is_ok();
                for (d, t) in d.iter_mut().zip(t.iter()) {
                    d[..32].copy_from_slice(t);
                    d[32..].fill(0);
                }
            }
            ok
        }
    };
    // The callers pass whole granules, one digest slot each; should that ever not hold, hash
    // what there is one granule at a time.
    if !ok {
        for (page, h) in src.chunks_exact(PAGE).zip(dst.iter_mut()) {
            *h = hash(algo, page);
        }
    }
}

/// Messages up to this size (a descriptor) take the direct compression path.
const SHORT: usize = DESCRIPTOR_SIZE;

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
/// SHA-512 initial hash value (FIPS 180-4, 5.3.5).
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

fn header(desc_type: u8, rim: &Measurement) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = [0u8; DESCRIPTOR_SIZE];
    d[0] = desc_type;
    d[8..16].copy_from_slice(&(DESCRIPTOR_SIZE as u64).to_le_bytes());
    d[0x10..0x50].copy_from_slice(rim);
    d
}

/// `RmmMeasurementDescriptorData` for a DATA granule at `ipa`: `content` is the granule's hash
/// when `measured`, ignored (zeros) otherwise.
pub fn data_descriptor(
    rim: &Measurement,
    ipa: u64,
    measured: bool,
    content: &Measurement,
) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = header(DESC_TYPE_DATA, rim);
    d[0x50..0x58].copy_from_slice(&ipa.to_le_bytes());
    if measured {
        d[0x58..0x60].copy_from_slice(&RMI_MEASURE_CONTENT.to_le_bytes());
        d[0x60..0xa0].copy_from_slice(content);
    }
    d
}

/// `RmmMeasurementDescriptorRipas` for one RTT entry `[base, top)`.
pub fn ripas_descriptor(rim: &Measurement, base: u64, top: u64) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = header(DESC_TYPE_RIPAS, rim);
    d[0x50..0x58].copy_from_slice(&base.to_le_bytes());
    d[0x58..0x60].copy_from_slice(&top.to_le_bytes());
    d
}

/// `RmmMeasurementDescriptorRec` with `content` the hash of the measured `RmiRecParams`.
pub fn rec_descriptor(rim: &Measurement, content: &Measurement) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = header(DESC_TYPE_REC, rim);
    d[0x50..0x90].copy_from_slice(content);
    d
}

/// A finished RIM: 32 bytes for SHA-256 realms, 64 for SHA-512.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rim {
    algo: HashAlgo,
    value: Measurement,
}

impl Rim {
    /// The hash algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The RIM's bytes (32 or 64).
    pub fn as_bytes(&self) -> &[u8] {
        &self.value[..self.algo.output_len()]
    }

    /// The RIM's bytes as a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl fmt::Display for Rim {
    /// Lower-case hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Rim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rim({}:{self})", self.algo.name())
    }
}

/// Granules hashed per batch by [`RimDigest::data_range`] (16 MiB).
const BATCH: usize = 4096;
/// In-place content is read and measured this many bytes at a time (64 MiB).
#[cfg(feature = "kvm")]
const IN_PLACE_PIECE: u64 = 64 << 20;
/// Below this many measured granules, hashing stays on the calling thread.
const PARALLEL_MIN: usize = 64;

/// The RIM being built, one RMM operation at a time, in the order the host issues them.
///
/// [`measure`] drives it from a [`Plan`]; an IGVM loader can drive it directive by directive.
///
/// ```
/// use cca_backend::{HashAlgo, RealmParams, RecParams, RimDigest};
/// let realm = RealmParams::new(HashAlgo::Sha256, 40);
/// let mut rim = RimDigest::new(&realm)?;
/// rim.ripas_range(0, 2 << 20)?;
/// rim.data_range(0x1000, &[0x90u8; 8192], true)?;
/// rim.rec(&RecParams { pc: 0x1000, gprs: [0; 8], runnable: true });
/// assert_eq!(rim.finish().as_bytes().len(), 32);
/// # Ok::<(), cca_backend::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RimDigest {
    algo: HashAlgo,
    rmm: RmmVersion,
    ipa_bits: u8,
    lpa2: bool,
    rim: Measurement,
    zero_page: Option<Measurement>,
    threads: usize,
    /// Every step that extended the RIM, in order, when tracing ([`RimDigest::traced`]).
    trace: Option<Vec<RimRecord>>,
}

/// What one step of a RIM was. Only steps that extend the RIM are recorded: a non-runnable
/// REC, and RTT_INIT_RIPAS under RMM 2.0 rules, leave no record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RimStep {
    /// RMI_REALM_CREATE: the RIM starts as the hash of the measured `RmiRealmParams`.
    RealmCreate,
    /// RMI_DATA_CREATE of the granule at the record's address; `content` is its content hash
    /// (`None`: an unmeasured granule).
    Data {
        /// The granule's content hash, in the realm's hash algorithm (zero-padded to 64 bytes).
        content: Option<Measurement>,
    },
    /// RMI_RTT_INIT_RIPAS of the RTT entry from the record's address to `top`.
    Ripas {
        /// The entry's end (exclusive).
        top: u64,
    },
    /// RMI_REC_CREATE of a runnable REC; `content` is the hash of its measured parameters.
    Rec {
        /// Hash of the REC's measured `RmiRecParams` (zero-padded to 64 bytes).
        content: Measurement,
    },
}

/// One step of a RIM, as [`RimDigest::traced`] keeps them: the step and the RIM after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RimRecord {
    /// The step's IPA (the granule, the RIPAS entry's base; 0 for REALM_CREATE and RECs).
    pub ipa: u64,
    /// Which step.
    pub step: RimStep,
    /// The RIM after it.
    pub rim: Rim,
}

impl RimDigest {
    /// Starts the RIM of a realm under RMM 1.0: the hash of its measured `RmiRealmParams`
    /// (RMI_REALM_CREATE).
    pub fn new(realm: &RealmParams) -> Result<Self, Error> {
        Self::with_rmm(realm, RmmVersion::V1_0)
    }

    /// Starts the RIM of a realm under the measurement rules of `rmm`.
    pub fn with_rmm(realm: &RealmParams, rmm: RmmVersion) -> Result<Self, Error> {
        let page = realm.measured_bytes()?;
        Ok(RimDigest {
            algo: realm.hash,
            rmm,
            ipa_bits: realm.ipa_bits,
            lpa2: realm.lpa2,
            rim: hash(realm.hash, &page[..]),
            zero_page: None,
            threads: 0,
            trace: None,
        })
    }

    /// Keeps every step that extends the RIM from now on ([`records`](Self::records)), with
    /// the RIM after each: the trace of a launch. Called on a new digest, its first record is
    /// the REALM_CREATE it started from.
    ///
    /// ```
    /// use cca_backend::{HashAlgo, RealmParams, RimDigest, RimStep};
    /// let realm = RealmParams::new(HashAlgo::Sha256, 40);
    /// let mut rim = RimDigest::new(&realm)?.traced();
    /// rim.data_range(0x1000, &[0x90u8; 8192], true)?;
    /// let r = rim.records();
    /// assert_eq!(r.len(), 3);
    /// assert_eq!(r[0].step, RimStep::RealmCreate);
    /// assert_eq!(r[2].ipa, 0x2000);
    /// assert_eq!(r[2].rim, rim.current());
    /// # Ok::<(), cca_backend::Error>(())
    /// ```
    pub fn traced(mut self) -> Self {
        if self.trace.is_none() {
            self.trace = Some(vec![RimRecord {
                ipa: 0,
                step: RimStep::RealmCreate,
                rim: self.current(),
            }]);
        }
        self
    }

    /// The records kept since [`traced`](Self::traced) (empty when not tracing).
    pub fn records(&self) -> &[RimRecord] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// Takes the records kept so far, leaving tracing on with none kept.
    pub fn take_records(&mut self) -> Vec<RimRecord> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, ipa: u64, step: RimStep) {
        let rim = self.current();
        if let Some(t) = &mut self.trace {
            t.push(RimRecord { ipa, step, rim });
        }
    }

    /// Limits content hashing to `threads` threads (0, the default: every core).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    /// The RMM version whose rules this digest follows.
    pub fn rmm(&self) -> RmmVersion {
        self.rmm
    }

    /// The RIM so far.
    pub fn current(&self) -> Rim {
        Rim {
            algo: self.algo,
            value: self.rim,
        }
    }

    /// The final RIM.
    pub fn finish(self) -> Rim {
        self.current()
    }

    fn check_range(&self, base: u64, len: u64) -> Result<(), Error> {
        let top = base.saturating_add(len);
        if len == 0 || !base.is_multiple_of(GRANULE) || !len.is_multiple_of(GRANULE) {
            return Err(Error::BadRange {
                base,
                top,
                reason: "empty or not aligned to the 4 KiB granule",
            });
        }
        if top > 1u64 << (self.ipa_bits - 1) {
            return Err(Error::BadRange {
                base,
                top,
                reason: "reaches into the unprotected half of the IPA space",
            });
        }
        Ok(())
    }

    /// RMI_DATA_CREATE of the granule at `ipa` whose content hash is `content` (`None`:
    /// unmeasured). The caller checks `ipa`.
    pub fn data_granule_hashed(&mut self, ipa: u64, content: Option<&Measurement>) {
        let d = data_descriptor(
            &self.rim,
            ipa,
            content.is_some(),
            content.unwrap_or(&[0; 64]),
        );
        self.rim = hash(self.algo, &d);
        self.record(
            ipa,
            RimStep::Data {
                content: content.copied(),
            },
        );
    }

    /// RMI_DATA_CREATE of one granule at `ipa` with `content` (exactly 4096 bytes), measured or
    /// not.
    pub fn data_granule(&mut self, ipa: u64, content: &[u8], measured: bool) -> Result<(), Error> {
        self.check_range(ipa, GRANULE)?;
        if content.len() != PAGE {
            return Err(Error::BadRange {
                base: ipa,
                top: ipa.saturating_add(content.len() as u64),
                reason: "a DATA granule's content must be exactly 4096 bytes",
            });
        }
        let h = measured.then(|| hash(self.algo, content));
        self.data_granule_hashed(ipa, h.as_ref());
        Ok(())
    }

    /// RMI_DATA_CREATE of every granule of `bytes` (a multiple of 4 KiB), from `ipa` up, in
    /// address order. Content hashes are computed on every core; the chain stays serial.
    pub fn data_range(&mut self, ipa: u64, bytes: &[u8], measured: bool) -> Result<(), Error> {
        self.check_range(ipa, bytes.len() as u64)?;
        if !measured {
            for i in 0..bytes.len() / PAGE {
                self.data_granule_hashed(ipa + (i * PAGE) as u64, None);
            }
            return Ok(());
        }
        let threads = match self.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(16),
            n => n,
        };
        let algo = self.algo;
        let hash_pages = |src: &[u8], dst: &mut [Measurement]| hash_granules(algo, src, dst);
        let pages = bytes.len() / PAGE;
        if threads <= 1 || pages < PARALLEL_MIN {
            let mut hashes = vec![[0u8; 64]; BATCH.min(pages)];
            let mut at = ipa;
            for batch in bytes.chunks(BATCH * PAGE) {
                let out = &mut hashes[..batch.len() / PAGE];
                hash_pages(batch, out);
                self.chain(&mut at, out);
            }
            return Ok(());
        }
        // Pipelined: the workers hash batch k + 1 while this thread chains batch k.
        let mut cur = vec![[0u8; 64]; BATCH.min(pages)];
        let mut prev = vec![[0u8; 64]; BATCH.min(pages)];
        let mut prev_n = 0;
        let mut at = ipa;
        for batch in bytes.chunks(BATCH * PAGE) {
            let n = batch.len() / PAGE;
            let per = n.div_ceil(threads);
            let out = &mut cur[..n];
            let chained = &prev[..prev_n];
            std::thread::scope(|s| {
                for (src, dst) in batch.chunks(per * PAGE).zip(out.chunks_mut(per)) {
                    s.spawn(move || hash_pages(src, dst));
                }
                self.chain(&mut at, chained);
            });
            std::mem::swap(&mut cur, &mut prev);
            prev_n = n;
        }
        self.chain(&mut at, &prev[..prev_n]);
        Ok(())
    }

    fn chain(&mut self, at: &mut u64, hashes: &[Measurement]) {
        for h in hashes {
            self.data_granule_hashed(*at, Some(h));
            *at += GRANULE;
        }
    }

    /// RMI_DATA_CREATE of `len` bytes of zeros from `ipa` (measured or not).
    pub fn data_zeros(&mut self, ipa: u64, len: u64, measured: bool) -> Result<(), Error> {
        self.check_range(ipa, len)?;
        let h = if measured {
            let algo = self.algo;
            Some(
                *self
                    .zero_page
                    .get_or_insert_with(|| hash(algo, &[0u8; PAGE])),
            )
        } else {
            None
        };
        for i in 0..len / GRANULE {
            self.data_granule_hashed(ipa + i * GRANULE, h.as_ref());
        }
        Ok(())
    }

    /// One RTT entry `[base, top)` of RMI_RTT_INIT_RIPAS, as given (no split). Extends the
    /// RIM under RMM 1.0 only.
    pub fn ripas_entry(&mut self, base: u64, top: u64) {
        if self.rmm.measures_init_ripas() {
            self.rim = hash(self.algo, &ripas_descriptor(&self.rim, base, top));
            self.record(base, RimStep::Ripas { top });
        }
    }

    /// RMI_RTT_INIT_RIPAS of `[base, top)`, split into RTT entries by [`ripas_split`] (checked
    /// under every RMM version; measured under RMM 1.0 only).
    pub fn ripas_range(&mut self, base: u64, top: u64) -> Result<(), Error> {
        for (b, t) in ripas_split(base, top, self.ipa_bits, self.lpa2)? {
            self.ripas_entry(b, t);
        }
        Ok(())
    }

    /// RMI_REC_CREATE of `rec`. Only a runnable REC extends the RIM (RMM 1.0, B4.3.12.4).
    pub fn rec(&mut self, rec: &RecParams) {
        if !rec.runnable {
            return;
        }
        let content = hash(self.algo, &rec.measured_bytes()[..]);
        self.rim = hash(self.algo, &rec_descriptor(&self.rim, &content));
        self.record(0, RimStep::Rec { content });
    }
}

/// The order in which a launch's RMI calls reach the RMM, which is the order the RIM records
/// them in. Which series uses which:
///
/// | series | who orders | order | policy |
/// |---|---|---|---|
/// | v12 | the kernel | REALM_CREATE, DATA in populate order, RECs at the first `KVM_RUN`, then RTT_INIT_RIPAS of the memslots | [`SeriesV12`](Self::SeriesV12) |
/// | v13, v14 | the kernel | REALM_CREATE, DATA in populate order, RECs at the first `KVM_RUN`, then RTT_INIT_RIPAS of the memslots | [`SeriesV12`](Self::SeriesV12) (the same order); with [`RmmVersion::V2_0`] rules (RIPAS not measured) [`Planned`](Self::Planned) gives the same RIM |
///
/// Like the SNP VMSA placement, the policy is the verifier's statement of how the launch was
/// made; the plan alone does not say. [`MeasureOptions::for_series`] picks it from the series
/// version and the RMM rules, which the firmware build decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MeasureOrder {
    /// REALM_CREATE, then the plan's regions in its order (ripas regions RTT_INIT_RIPAS where
    /// they stand, data regions DATA_CREATE), then the RECs in the order given (only runnable
    /// ones extend the RIM). The order of a VMM that issues each step itself (no supported
    /// series does; plan files that name no order).
    #[default]
    Planned,
    /// The order a series v12 kernel picks, whatever the VMM's order:
    ///
    /// 1. REALM_CREATE, at the first populate (`realm_ensure_created` from
    ///    `kvm_arm_rmi_populate`, v12 patch 22/46 "Create the realm descriptor");
    /// 2. DATA_CREATE of the plan's data regions, in the plan's order (the populate calls;
    ///    20/46 "Allow populating initial contents");
    /// 3. at the first `KVM_RUN` (`kvm_activate_realm`, 11/46 "Activate realm on first VCPU
    ///    run"), one REC per vCPU in creation order, only the vCPU with id 0 runnable
    ///    (`kvm_create_rec`: `if (vcpu->vcpu_id == 0) params->flags |= REC_PARAMS_FLAG_RUNNABLE`,
    ///    12/46 "Allocate/free RECs to match vCPUs"): `recs` must list every vCPU with exactly
    ///    one runnable;
    /// 4. then RTT_INIT_RIPAS over every guest_memfd memslot (`set_ripas_of_protected_regions`
    ///    → `realm_init_ipa_state` → `ripas_change`, 21/46 "Set RIPAS of initial memslots"):
    ///    the plan's ripas regions are those memslots, in the order the kernel walks them
    ///    (`kvm_for_each_memslot`: memslot hash-table buckets, not GPA order; one memslot has
    ///    no order to get wrong). RMM 1.0 measures no entry the populate already assigned
    ///    (`smc_rtt_init_ripas` stops at an ASSIGNED entry and the kernel steps over it one page
    ///    at a time, "FIXME: Ugly hack to skip regions which are already RIPAS_RAM"), so each
    ///    memslot is measured as its ranges not populated, split into RTT entries as
    ///    [`ripas_split`] says.
    ///
    /// Every data region must lie in the ripas regions (the kernel populates only guest_memfd
    /// memslots).
    SeriesV12,
}

impl MeasureOrder {
    /// Every policy.
    pub const ALL: [MeasureOrder; 2] = [MeasureOrder::Planned, MeasureOrder::SeriesV12];

    /// The command-line name (`"planned"`, `"v12"`).
    pub fn name(self) -> &'static str {
        match self {
            MeasureOrder::Planned => "planned",
            MeasureOrder::SeriesV12 => "v12",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<MeasureOrder> {
        MeasureOrder::ALL.into_iter().find(|o| o.name() == name)
    }
}

#[cfg(feature = "kvm")]
/// How [`measure_with_options`] measures: the RMM version, the order, in-place content and
/// threads. The default (RMM 1.0, [`MeasureOrder::Planned`], no reader, every core) is
/// [`measure`].
#[derive(Clone, Copy, Default)]
pub struct MeasureOptions<'r> {
    /// Whose measurement rules apply.
    pub rmm: RmmVersion,
    /// The order the launch issued its steps in.
    pub order: MeasureOrder,
    /// Reader for in-place content (required when a measured region's content is in place).
    pub reader: Option<&'r dyn InPlaceReader>,
    /// Threads for content hashes (0: every core).
    pub threads: usize,
}

#[cfg(feature = "kvm")]
impl MeasureOptions<'static> {
    /// The options a realm launched by the CCA KVM series `version` on a firmware following
    /// `rmm`'s rules is measured with: the order its kernel issues the RMI calls in, and `rmm`.
    ///
    /// The RMM rules are a separate choice because they belong to the firmware build, not the
    /// series: TF-RMM stopped measuring RTT_INIT_RIPAS at commit `bdb07f46` (2026-04-28), after
    /// v13's firmware branch. [`UapiVersion::rmm_rules`] lists the choices per series: v12
    /// [`RmmVersion::V1_0`]; v13 [`RmmVersion::V1_0`] on its own firmware branch,
    /// [`RmmVersion::V2_0`] on a TF-RMM from `bdb07f46` on; v14 [`RmmVersion::V2_0`].
    ///
    /// | `version` | [`order`](Self::order) |
    /// |---|---|
    /// | any, with [`RmmVersion::V1_0`] | [`MeasureOrder::SeriesV12`]: the kernel's order (RECs, then RIPAS of each memslot minus what was populated) |
    /// | any, with [`RmmVersion::V2_0`] | [`MeasureOrder::Planned`]: DATA in populate order, then the RECs; RIPAS unmeasured (the v12 order gives the same RIM) |
    ///
    /// This is the one way for a VMM to get the RIM its launch will have: the same plan, the
    /// realm parameters it gives [`CcaBackend::configure`](crate::CcaBackend::configure), and
    /// one [`RecParams`] per vCPU in creation order, runnable only the one whose id is 0 (the
    /// kernel's `kvm_create_rec` makes only that REC runnable).
    ///
    /// ```
    /// use cc_populate::{MemoryLayout, PlanBuilder, Role};
    /// use cca_backend::{
    ///     measure_with_options, HashAlgo, MeasureOptions, RealmParams, RecParams, RmmVersion,
    ///     UapiVersion, CCA_CAPS,
    /// };
    ///
    /// let kernel = vec![0xaau8; 3 * 4096];
    /// let plan = PlanBuilder::new()
    ///     .zeros(0, 1 << 30, Role::Ripas) // the guest_memfd memslot
    ///     .source(0x8_0000, Role::Measured, &kernel)
    ///     .build(&CCA_CAPS, &MemoryLayout::unbounded())?;
    /// let mut realm = RealmParams::new(HashAlgo::Sha256, 40); // what configure is given
    /// realm.set_debug_from_id_aa64dfr0(0x0030_5006); // the host's breakpoints (6)
    /// let vcpus = [
    ///     RecParams { pc: 0x8_0000, gprs: [0x4000_0000, 0, 0, 0, 0, 0, 0, 0], runnable: true },
    ///     RecParams { pc: 0, gprs: [0; 8], runnable: false },
    /// ];
    /// let opts = MeasureOptions::for_series(UapiVersion::V14, RmmVersion::V2_0);
    /// let rim = measure_with_options(&plan, &realm, &vcpus, &opts)?;
    /// println!("expected RIM on a v14 kernel: {rim}");
    /// // v13 on its own firmware branch (RIPAS measured) and on a newer TF-RMM differ:
    /// let old = MeasureOptions::for_series(UapiVersion::V13, RmmVersion::V1_0);
    /// let new = MeasureOptions::for_series(UapiVersion::V13, RmmVersion::V2_0);
    /// assert_ne!(
    ///     measure_with_options(&plan, &realm, &vcpus, &old)?,
    ///     measure_with_options(&plan, &realm, &vcpus, &new)?
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_series(version: UapiVersion, rmm: RmmVersion) -> Self {
        // Every supported version orders the launch as v12 does; under 2.0 rules RIPAS is not
        // measured and the planned order (DATA in populate order, then the RECs) is the same.
        let _ = version;
        MeasureOptions {
            rmm,
            order: match rmm {
                RmmVersion::V1_0 => MeasureOrder::SeriesV12,
                RmmVersion::V2_0 => MeasureOrder::Planned,
            },
            ..MeasureOptions::default()
        }
    }
}

#[cfg(feature = "kvm")]
impl fmt::Debug for MeasureOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeasureOptions")
            .field("rmm", &self.rmm)
            .field("order", &self.order)
            .field("reader", &self.reader.is_some())
            .field("threads", &self.threads)
            .finish()
    }
}

#[cfg(feature = "kvm")]
/// The RIM of a realm launched from `plan` with `recs` under RMM 1.0, in the plan's order
/// ([`MeasureOrder::Planned`]): REALM_CREATE with `realm`, then the regions in the plan's order
/// (measured and unmeasured regions DATA_CREATE granule by granule in address order, ripas
/// regions RTT_INIT_RIPAS split as [`ripas_split`] says), then each REC in the order given.
///
/// The plan's given order is measured, as the populate calls are issued; a verifier reproduces
/// it from the same plan (a VMM that wants GPA order sorts the regions before building the
/// plan). Refuses `zero`, `secrets` and `cpuid` regions, regions outside the protected half of
/// the IPA space, and in-place content (use [`measure_with`] to give a reader). Other RMM
/// versions and orders: [`measure_with_options`]. For a launch on v12, v13 or v14 use
/// [`measure_with_options`] with [`MeasureOptions::for_series`].
///
/// ```
/// use cc_populate::{MemoryLayout, PlanBuilder, Role};
/// use cca_backend::{measure, HashAlgo, RealmParams, RecParams, CCA_CAPS};
///
/// let kernel = vec![0xaau8; 3 * 4096];
/// let plan = PlanBuilder::new()
///     .zeros(0, 1 << 30, Role::Ripas)
///     .source(0x8_0000, Role::Measured, &kernel)
///     .build(&CCA_CAPS, &MemoryLayout::unbounded())?;
/// let realm = RealmParams::new(HashAlgo::Sha512, 40);
/// let rec = RecParams { pc: 0x8_0000, gprs: [0x4000_0000, 0, 0, 0, 0, 0, 0, 0], runnable: true };
/// let rim = measure(&plan, &realm, &[rec])?;
/// assert_eq!(rim.as_bytes().len(), 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn measure(plan: &Plan<'_>, realm: &RealmParams, recs: &[RecParams]) -> Result<Rim, Error> {
    measure_with_options(plan, realm, recs, &MeasureOptions::default())
}

#[cfg(feature = "kvm")]
/// [`measure`], reading in-place content through `reader`.
pub fn measure_with(
    plan: &Plan<'_>,
    realm: &RealmParams,
    recs: &[RecParams],
    reader: Option<&dyn InPlaceReader>,
) -> Result<Rim, Error> {
    measure_with_options(
        plan,
        realm,
        recs,
        &MeasureOptions {
            reader,
            ..MeasureOptions::default()
        },
    )
}

#[cfg(feature = "kvm")]
/// The RIM of `plan` with `recs` under `opts`' RMM version and order (see [`MeasureOrder`]).
///
/// ```
/// use cc_populate::{MemoryLayout, PlanBuilder, Role};
/// use cca_backend::{
///     measure_with_options, HashAlgo, MeasureOptions, MeasureOrder, RealmParams, RecParams,
///     RmmVersion, CCA_CAPS,
/// };
///
/// let kernel = vec![0xaau8; 3 * 4096];
/// let plan = PlanBuilder::new()
///     .zeros(0, 1 << 30, Role::Ripas) // the guest_memfd memslot
///     .source(0x8_0000, Role::Measured, &kernel)
///     .build(&CCA_CAPS, &MemoryLayout::unbounded())?;
/// let realm = RealmParams::new(HashAlgo::Sha256, 40);
/// let vcpus = [
///     RecParams { pc: 0x8_0000, gprs: [0; 8], runnable: true },
///     RecParams { pc: 0, gprs: [0; 8], runnable: false },
/// ];
/// let v12 = MeasureOptions { order: MeasureOrder::SeriesV12, ..Default::default() };
/// let v14 = MeasureOptions { rmm: RmmVersion::V2_0, ..Default::default() };
/// let a = measure_with_options(&plan, &realm, &vcpus, &v12)?;
/// let b = measure_with_options(&plan, &realm, &vcpus, &v14)?;
/// assert_ne!(a, b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn measure_with_options(
    plan: &Plan<'_>,
    realm: &RealmParams,
    recs: &[RecParams],
    opts: &MeasureOptions<'_>,
) -> Result<Rim, Error> {
    let mut d = RimDigest::with_rmm(realm, opts.rmm)?;
    measure_into(&mut d, plan, realm, recs, opts)?;
    Ok(d.finish())
}

#[cfg(feature = "kvm")]
/// [`measure_with_options`] with every step that extends the RIM kept, in order
/// ([`RimDigest::traced`]); the last record's RIM is the result.
pub fn measure_traced(
    plan: &Plan<'_>,
    realm: &RealmParams,
    recs: &[RecParams],
    opts: &MeasureOptions<'_>,
) -> Result<(Rim, Vec<RimRecord>), Error> {
    let mut d = RimDigest::with_rmm(realm, opts.rmm)?.traced();
    measure_into(&mut d, plan, realm, recs, opts)?;
    let records = d.take_records();
    Ok((d.finish(), records))
}

#[cfg(feature = "kvm")]
fn measure_into(
    d: &mut RimDigest,
    plan: &Plan<'_>,
    realm: &RealmParams,
    recs: &[RecParams],
    opts: &MeasureOptions<'_>,
) -> Result<(), Error> {
    d.set_threads(opts.threads);
    let limit = realm.protected_limit();
    // Every region is checked before anything is measured, in the plan's order.
    let mut kinds = Vec::with_capacity(plan.regions().len());
    for (i, r) in plan.regions().iter().enumerate() {
        let (gpa, len) = (r.gpa(), r.len());
        if gpa.checked_add(len).is_none_or(|end| end > limit) {
            return Err(Error::OutsideProtectedIpa {
                region: i,
                gpa,
                len,
                limit,
                ipa_bits: realm.ipa_bits,
            });
        }
        kinds.push(match r.role() {
            Role::Measured => Some(true),
            Role::Unmeasured => Some(false),
            Role::Ripas => None,
            role => {
                return Err(Error::RoleRefused {
                    region: i,
                    gpa,
                    len,
                    role,
                })
            }
        });
    }
    match opts.order {
        MeasureOrder::Planned => {
            for ((i, r), kind) in plan.regions().iter().enumerate().zip(&kinds) {
                match kind {
                    None => d.ripas_range(r.gpa(), r.gpa() + r.len())?,
                    Some(measured) => data_region(d, i, r, *measured, opts.reader)?,
                }
            }
            for rec in recs {
                d.rec(rec);
            }
        }
        MeasureOrder::SeriesV12 => {
            check_v12_recs(recs)?;
            let regions = plan.regions();
            let slots = merged(
                regions
                    .iter()
                    .zip(&kinds)
                    .filter(|(_, k)| k.is_none())
                    .map(|(r, _)| (r.gpa(), r.gpa() + r.len())),
            );
            let populated = merged(
                regions
                    .iter()
                    .zip(&kinds)
                    .filter(|(_, k)| k.is_some())
                    .map(|(r, _)| (r.gpa(), r.gpa() + r.len())),
            );
            for ((i, r), kind) in regions.iter().enumerate().zip(&kinds) {
                let Some(measured) = kind else { continue };
                let (base, top) = (r.gpa(), r.gpa() + r.len());
                if !slots.iter().any(|&(b, t)| b <= base && top <= t) {
                    return Err(Error::BadRange {
                        base,
                        top,
                        reason: "under the v12 order every populated range lies in a guest_memfd memslot, given as a ripas region",
                    });
                }
                data_region(d, i, r, *measured, opts.reader)?;
            }
            for rec in recs {
                d.rec(rec);
            }
            for (r, _) in regions.iter().zip(&kinds).filter(|(_, k)| k.is_none()) {
                let (base, top) = (r.gpa(), r.gpa() + r.len());
                for (b, t) in gaps(base, top, &populated) {
                    d.ripas_range(b, t)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(feature = "kvm")]
/// `recs` as the v12 kernel creates them: at least one vCPU, and exactly one runnable (the vCPU
/// whose id is 0, wherever it stands in creation order).
fn check_v12_recs(recs: &[RecParams]) -> Result<(), Error> {
    if recs.is_empty() {
        return Err(Error::InvalidParam {
            field: "recs",
            value: 0,
            reason: "the v12 order creates one REC per vCPU at the first KVM_RUN: give every vCPU, in creation order",
        });
    }
    let runnable = recs.iter().filter(|r| r.runnable).count();
    if runnable != 1 {
        return Err(Error::InvalidParam {
            field: "recs.runnable",
            value: runnable as u64,
            reason: "the v12 kernel makes exactly one REC runnable, the vCPU whose id is 0 (kvm_create_rec: vcpu->vcpu_id == 0): mark that one only",
        });
    }
    Ok(())
}

#[cfg(feature = "kvm")]
/// Sorted, merged (adjacent ranges joined) copy of `ranges`.
fn merged(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (b, t) in v {
        match out.last_mut() {
            Some(last) if b <= last.1 => last.1 = last.1.max(t),
            _ => out.push((b, t)),
        }
    }
    out
}

#[cfg(feature = "kvm")]
/// The parts of `[base, top)` outside every range of `taken` (sorted and merged), in address
/// order.
fn gaps(base: u64, top: u64, taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = base;
    for &(b, t) in taken {
        if t <= at || b >= top {
            continue;
        }
        if b > at {
            out.push((at, b));
        }
        at = at.max(t);
        if at >= top {
            break;
        }
    }
    if at < top {
        out.push((at, top));
    }
    out
}

#[cfg(feature = "kvm")]
/// DATA_CREATE of every granule of data region `i`.
fn data_region(
    d: &mut RimDigest,
    i: usize,
    r: &cc_populate::Region<'_>,
    measured: bool,
    reader: Option<&dyn InPlaceReader>,
) -> Result<(), Error> {
    let (gpa, len) = (r.gpa(), r.len());
    let content_err = |reason: String| Error::Content {
        region: i,
        gpa,
        len,
        reason,
    };
    if r.released() > 0 {
        return Err(content_err(
            "its source was released after populating".into(),
        ));
    }
    match r.content() {
        Content::Zero => d.data_zeros(gpa, len, measured)?,
        Content::InPlace if !measured => d.data_zeros(gpa, len, false)?,
        Content::InPlace => {
            let read = reader.ok_or_else(|| {
                content_err("written in place and no reader was given to measure it".into())
            })?;
            // In bounded pieces: a region may be far larger than memory.
            let mut buf = vec![0u8; len.min(IN_PLACE_PIECE) as usize];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(IN_PLACE_PIECE) as usize;
                let piece = &mut buf[..n];
                read.read_in_place(gpa + off, piece).map_err(|e| {
                    content_err(format!("reading in place at {:#x}: {e}", gpa + off))
                })?;
                d.data_range(gpa + off, piece, true)?;
                off += n as u64;
            }
        }
        _ => {
            let bytes = r
                .source()
                .ok_or_else(|| content_err("no source bytes".into()))?;
            d.data_range(gpa, bytes, measured)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn a_traced_measurement_is_the_same_rim_with_a_record_per_extending_step() {
        use cc_populate::{MemoryLayout, PlanBuilder};
        let kernel = vec![0xabu8; 3 * PAGE];
        let plan = PlanBuilder::new()
            .zeros(0, 1 << 30, Role::Ripas)
            .source(0x8_0000, Role::Measured, &kernel)
            .zeros(0x10_0000, 2 * GRANULE, Role::Unmeasured)
            .build(&crate::CCA_CAPS, &MemoryLayout::unbounded())
            .unwrap();
        let realm = RealmParams::new(HashAlgo::Sha256, 40);
        let recs = [
            RecParams {
                pc: 0x8_0000,
                gprs: [0; 8],
                runnable: true,
            },
            RecParams {
                pc: 0,
                gprs: [0; 8],
                runnable: false,
            },
        ];
        for rmm in [RmmVersion::V1_0, RmmVersion::V2_0] {
            let opts = MeasureOptions {
                rmm,
                ..MeasureOptions::default()
            };
            let want = measure_with_options(&plan, &realm, &recs, &opts).unwrap();
            let (rim, records) = measure_traced(&plan, &realm, &recs, &opts).unwrap();
            assert_eq!(rim, want);
            assert_eq!(records.last().map(|r| r.rim), Some(want));
            let kinds: Vec<_> = records
                .iter()
                .map(|r| match r.step {
                    RimStep::RealmCreate => "create",
                    RimStep::Ripas { .. } => "ripas",
                    RimStep::Data { content: Some(_) } => "measured",
                    RimStep::Data { content: None } => "unmeasured",
                    RimStep::Rec { .. } => "rec",
                })
                .collect();
            // RMM 1.0 measures RTT_INIT_RIPAS (one 1 GiB entry at level 1 for a 40-bit IPA
            // space); 2.0 does not. The non-runnable REC extends nothing.
            let mut expect = vec!["create"];
            if rmm == RmmVersion::V1_0 {
                expect.push("ripas");
            }
            expect.extend(["measured"; 3]);
            expect.extend(["unmeasured"; 2]);
            expect.push("rec");
            assert_eq!(kinds, expect, "{rmm}");
            assert_eq!(
                records[0].rim,
                RimDigest::with_rmm(&realm, rmm).unwrap().current()
            );
        }
    }

    #[test]
    fn granule_hashes_equal_sha2_per_granule() {
        // 37 granules: two full groups of 16 SHA-256 lanes (four of 8 SHA-512 lanes) and a
        // remainder hashed one stream each; distinct content per granule.
        let data: Vec<u8> = (0..37 * PAGE)
            .map(|i| (i as u32).wrapping_mul(0x9e37_79b1).rotate_left(11) as u8)
            .collect();
        for algo in [HashAlgo::Sha256, HashAlgo::Sha512] {
            let mut got = vec![[0xffu8; 64]; 37];
            hash_granules(algo, &data, &mut got);
            for (i, (g, page)) in got.iter().zip(data.chunks_exact(PAGE)).enumerate() {
                let mut want = [0u8; 64];
                match algo {
                    HashAlgo::Sha256 => want[..32].copy_from_slice(&sha2::Sha256::digest(page)),
                    HashAlgo::Sha512 => want.copy_from_slice(&sha2::Sha512::digest(page)),
                }
                assert_eq!(*g, want, "{} granule {i}", algo.name());
            }
        }
    }

    #[test]
    fn gaps_and_merges() {
        let m = merged([(0x5000, 0x6000), (0x1000, 0x2000), (0x2000, 0x3000)].into_iter());
        assert_eq!(m, vec![(0x1000, 0x3000), (0x5000, 0x6000)]);
        assert_eq!(
            gaps(0, 0x8000, &m),
            vec![(0, 0x1000), (0x3000, 0x5000), (0x6000, 0x8000)]
        );
        assert_eq!(gaps(0x1000, 0x3000, &m), vec![]);
        assert_eq!(gaps(0x2000, 0x5800, &m), vec![(0x3000, 0x5000)]);
        assert_eq!(gaps(0x7000, 0x9000, &m), vec![(0x7000, 0x9000)]);
        assert_eq!(gaps(0, 0x1000, &[]), vec![(0, 0x1000)]);
        assert_eq!(merged([(0, 4), (1, 2)].into_iter()), vec![(0, 4)]);
    }

    #[test]
    fn block_path_equals_buffered_digest() {
        for len in [0usize, 64, 128, 256, 4096, 8192, 100, 4095] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut want = [0u8; 64];
            want[..32].copy_from_slice(&sha2::Sha256::digest(&data));
            assert_eq!(hash(HashAlgo::Sha256, &data), want, "sha256 {len}");
            assert_eq!(
                hash(HashAlgo::Sha512, &data)[..],
                sha2::Sha512::digest(&data)[..],
                "sha512 {len}"
            );
        }
    }
}
