//! The RIM checked by someone else's code (issue 22, item 3): `cca-realm-measurements` (Veraison,
//! crates.io 0.1.0; its `Realm` measures with OpenSSL through `cca-rmm`'s descriptor layouts)
//! against `measure_with_options`, on seeded random launches: realm parameters (both hashes, IPA
//! width, debug counts, SVE, PMU, LPA2), measured and unmeasured data (given bytes and zeros),
//! RIPAS ranges and RECs (runnable or not), in the plan's order.
//!
//! - RMM 1.0 rules: REALM_CREATE, then the regions in the plan's order (DATA_CREATE granule by
//!   granule, RTT_INIT_RIPAS one descriptor per RTT entry), then the runnable RECs.
//! - RMM 2.0 rules (TF-RMM from commit `bdb07f46` on): the same launches with the RIPAS steps
//!   left out on the reference's side, since RMM 2.0 does not measure RTT_INIT_RIPAS; the
//!   reference knows only RMM 1.0.
//!
//! Where the reference and TF-RMM disagree, TF-RMM wins:
//! `a_non_runnable_rec_is_not_measured_tf_rmm_wins`.
//!
//! x86_64 only (the reference links the system's OpenSSL, which the aarch64 cross build in
//! `.ci/aarch64.sh` lacks; see Cargo.toml): on other targets this file compiles to nothing.
#![cfg(target_arch = "x86_64")]

use cc_populate::{MemoryLayout, PlanBuilder, Role};
use cca_backend::{
    measure_with_options, HashAlgo, MeasureOptions, MeasureOrder, RealmParams, RecParams,
    RmmVersion, CCA_CAPS,
};
use cca_realm_measurements::realm::RealmParams as RefParams;
use cca_realm_measurements::vmm::BlobStorage;
use cca_realm_measurements::Realm;
use cca_rmm::{RmiHashAlgorithm, RmiRecCreateFlags, RmiRecParams};

const GRANULE: u64 = 4096;
const LAUNCHES: u64 = 128;

/// SplitMix64: a seeded, reproducible stream (the seed is in every failure message).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// One region of a random launch, in plan order.
enum Step {
    Ripas { gpa: u64, len: u64 },
    Data { gpa: u64, bytes: Vec<u8> },
    Zeros { gpa: u64, len: u64 },
    Unmeasured { gpa: u64, bytes: Vec<u8> },
}

struct Launch {
    realm: RealmParams,
    steps: Vec<Step>,
    recs: Vec<RecParams>,
}

/// A random launch: parameters, 1 to 6 disjoint regions in random order (RIPAS ranges of up to
/// 3 GiB so that 1 GiB and 2 MiB RTT entries occur, data of up to 16 granules), 1 to 4 RECs.
fn launch(seed: u64) -> Launch {
    let mut r = Rng(seed);
    let mut realm = RealmParams::new(
        if r.coin() {
            HashAlgo::Sha256
        } else {
            HashAlgo::Sha512
        },
        r.range(38, 48) as u8,
    );
    realm.lpa2 = r.range(0, 3) == 0;
    if realm.lpa2 && r.coin() {
        realm.ipa_bits = r.range(49, 52) as u8;
    }
    realm.num_bps = r.range(2, 16) as u8;
    realm.num_wps = r.range(2, 16) as u8;
    realm.sve_vl = if r.coin() {
        r.range(1, 16) as u16 * 128
    } else {
        0
    };
    realm.pmu_counters = r.coin().then(|| r.range(0, 31) as u8);
    realm.validate().expect("valid by construction");

    // Disjoint slots of 4 GiB below 64 GiB (inside the protected half from 38 bits on), taken in
    // a random order.
    let mut slots: Vec<u64> = (0..16).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, r.range(0, i as u64) as usize);
    }
    let n = r.range(1, 6) as usize;
    let mut steps = Vec::new();
    for &slot in slots.iter().take(n) {
        let base = slot << 32;
        let step = match r.range(0, 3) {
            0 => {
                // A start at any granule of the first 2 MiB of a 1 GiB-aligned span, a length
                // of up to 3 GiB: 4 KiB, 2 MiB and 1 GiB entries.
                let gpa = base + r.range(0, 511) * GRANULE * if r.coin() { 1 } else { 0 };
                let len = if r.coin() {
                    r.range(1, 3) << 30
                } else {
                    r.range(1, 1024) * GRANULE
                } + r.range(0, 3) * GRANULE;
                Step::Ripas { gpa, len }
            }
            k => {
                let gpa = base + r.range(0, 1023) * GRANULE;
                let len = r.range(1, 16) as usize * GRANULE as usize;
                let mut bytes = vec![0u8; len];
                for b in bytes.iter_mut() {
                    *b = r.next() as u8;
                }
                match k {
                    1 => Step::Data { gpa, bytes },
                    2 => Step::Zeros {
                        gpa,
                        len: len as u64,
                    },
                    _ => Step::Unmeasured { gpa, bytes },
                }
            }
        };
        steps.push(step);
    }
    let recs = (0..r.range(1, 4))
        .map(|_| {
            let mut gprs = [0u64; 8];
            for g in gprs.iter_mut() {
                *g = r.next();
            }
            RecParams {
                pc: r.next() & !3,
                gprs,
                runnable: r.coin(),
            }
        })
        .collect();
    Launch { realm, steps, recs }
}

/// This crate's RIM of `l` under `rmm`'s rules, in the plan's order.
fn ours(l: &Launch, rmm: RmmVersion) -> Vec<u8> {
    let mut b = PlanBuilder::new();
    for s in &l.steps {
        b = match s {
            Step::Ripas { gpa, len } => b.zeros(*gpa, *len, Role::Ripas),
            Step::Data { gpa, bytes } => b.source(*gpa, Role::Measured, bytes),
            Step::Zeros { gpa, len } => b.zeros(*gpa, *len, Role::Measured),
            Step::Unmeasured { gpa, bytes } => b.source(*gpa, Role::Unmeasured, bytes),
        };
    }
    let plan = b
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .expect("valid plan");
    let opts = MeasureOptions {
        rmm,
        order: MeasureOrder::Planned,
        ..MeasureOptions::default()
    };
    measure_with_options(&plan, &l.realm, &l.recs, &opts)
        .expect("measurable")
        .to_vec()
}

/// The reference's RIM of `l`: RMM 1.0 calls, RIPAS steps only when `ripas`; RECs as the RMM
/// measures them (only runnable ones, unless `every_rec`).
fn reference(l: &Launch, ripas: bool, every_rec: bool) -> Vec<u8> {
    let p = &l.realm;
    let params = RefParams {
        ipa_bits: Some(p.ipa_bits),
        num_bps: Some(p.num_bps),
        num_wps: Some(p.num_wps),
        sve_vl: Some(p.sve_vl),
        pmu: Some(p.pmu_counters.is_some()),
        pmu_num_ctrs: p.pmu_counters,
        lpa2: Some(p.lpa2),
        hash_algo: Some(match p.hash {
            HashAlgo::Sha256 => RmiHashAlgorithm::RmiHashSha256,
            HashAlgo::Sha512 => RmiHashAlgorithm::RmiHashSha512,
        }),
    };
    let mut realm = Realm::new();
    realm.rim_realm_create(&params).expect("REALM_CREATE");
    for s in &l.steps {
        match s {
            Step::Ripas { gpa, len } => {
                if ripas {
                    realm.rim_init_ripas(*gpa, gpa + len).expect("RIPAS");
                }
            }
            Step::Data { gpa, bytes } => {
                let mut blob = BlobStorage::Bytes(bytes.clone());
                realm.rim_data_create(*gpa, &mut blob).expect("DATA");
            }
            Step::Zeros { gpa, len } => {
                let mut blob = BlobStorage::Bytes(vec![0; *len as usize]);
                realm.rim_data_create(*gpa, &mut blob).expect("DATA");
            }
            Step::Unmeasured { gpa, bytes } => {
                realm
                    .rim_data_create_unmeasured(*gpa, bytes.len() as u64)
                    .expect("DATA unmeasured");
            }
        }
    }
    for rec in &l.recs {
        if rec.runnable || every_rec {
            let flags = if rec.runnable {
                RmiRecCreateFlags::RUNNABLE
            } else {
                RmiRecCreateFlags::empty()
            };
            realm
                .rim_rec_create(&RmiRecParams::new(flags, rec.pc, rec.gprs))
                .expect("REC");
        }
    }
    let len = match p.hash {
        HashAlgo::Sha256 => 32,
        HashAlgo::Sha512 => 64,
    };
    realm.measurements.rim[..len].to_vec()
}

#[test]
fn rmm_1_0_rim_equals_the_reference_on_seeded_launches() {
    let mut ripas_steps = 0;
    for seed in 0..LAUNCHES {
        let l = launch(seed);
        ripas_steps += l
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Ripas { .. }))
            .count();
        assert_eq!(
            ours(&l, RmmVersion::V1_0),
            reference(&l, true, false),
            "seed {seed}"
        );
    }
    assert!(ripas_steps > LAUNCHES as usize / 2, "RIPAS is exercised");
}

/// RMM 2.0 rules: the reference knows RMM 1.0 only, so its launches leave out the RIPAS steps,
/// which RMM 2.0 (TF-RMM from `bdb07f46` on) does not measure.
#[test]
fn rmm_2_0_rim_equals_the_reference_without_ripas_on_seeded_launches() {
    let mut differs = 0;
    for seed in 0..LAUNCHES {
        let l = launch(seed);
        let want = reference(&l, false, false);
        assert_eq!(ours(&l, RmmVersion::V2_0), want, "seed {seed}");
        differs += usize::from(ours(&l, RmmVersion::V1_0) != want);
    }
    assert!(differs > 0, "the RIPAS steps matter in some launches");
}

/// The reference measures whatever REC it is handed (`Realm::rim_rec_create`); current TF-RMM
/// (`runtime/rmi/rec.c`, REC creation: `if (rec->runnable) measurement_rec_params_measure(..)`;
/// older TF-RMM measured every REC) and RMM 1.0 (B4.3.12.4) extend the RIM only for a runnable
/// REC. TF-RMM wins:
/// this crate leaves non-runnable RECs out, and the reference agrees only when it is handed the
/// runnable ones.
#[test]
fn a_non_runnable_rec_is_not_measured_tf_rmm_wins() {
    let mut checked = 0;
    for seed in 0..LAUNCHES {
        let l = launch(seed);
        if l.recs.iter().all(|r| r.runnable) {
            continue;
        }
        checked += 1;
        let ours = ours(&l, RmmVersion::V1_0);
        assert_eq!(ours, reference(&l, true, false), "seed {seed}");
        assert_ne!(ours, reference(&l, true, true), "seed {seed}");
    }
    assert!(checked > 10);
}
