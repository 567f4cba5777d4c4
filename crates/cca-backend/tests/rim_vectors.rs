//! RIM vectors derived by hand from the RMM specification 1.0 (DEN0137 1.0-rel0), independently
//! of the crate's record builders: every structure is written byte by byte here from the
//! specification's tables, hashed with `ring` (the crate hashes with `sha2`), and chained by hand.
//! RMM 2.0 vectors follow TF-RMM's 2.0-era runtime (commit
//! `bdb07f46c010ea285c268411b4a3696fd0812e1c` removed the RIPAS measurement from
//! `smc_rtt_init_ripas`; the other records are unchanged), and the v12 order follows the v12
//! patches of "arm64: Support for Arm CCA in KVM" (see `MeasureOrder::SeriesV12`).

use cc_populate::{MemoryLayout, PlanBuilder, Role};
use cca_backend::{
    measure, measure_with_options, ripas_split, rtt_geometry, Error, HashAlgo, MeasureOptions,
    MeasureOrder, RealmParams, RecParams, RimDigest, RmmVersion, CCA_CAPS,
};

/// The RHA of the realm, zero filled to the 64 bytes of an RmmRealmMeasurement.
fn rha(sha512: bool, data: &[u8]) -> [u8; 64] {
    let alg = if sha512 {
        &ring::digest::SHA512
    } else {
        &ring::digest::SHA256
    };
    let d = ring::digest::digest(alg, data);
    let mut out = [0u8; 64];
    out[..d.as_ref().len()].copy_from_slice(d.as_ref());
    out
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// RmmMeasurementDescriptorData (C1.11): desc_type 0x0 @0, len 0x100 @8, rim @0x10,
/// ipa @0x50, flags @0x58, content @0x60; 256 bytes.
fn data_desc(rim: &[u8; 64], ipa: u64, flags: u64, content: &[u8; 64]) -> [u8; 256] {
    let mut d = [0u8; 256];
    d[0] = 0x0;
    put(&mut d, 0x8, &0x100u64.to_le_bytes());
    put(&mut d, 0x10, rim);
    put(&mut d, 0x50, &ipa.to_le_bytes());
    put(&mut d, 0x58, &flags.to_le_bytes());
    put(&mut d, 0x60, content);
    d
}

/// RmmMeasurementDescriptorRipas (C1.13): desc_type 0x2, len, rim, base @0x50, top @0x58.
fn ripas_desc(rim: &[u8; 64], base: u64, top: u64) -> [u8; 256] {
    let mut d = [0u8; 256];
    d[0] = 0x2;
    put(&mut d, 0x8, &0x100u64.to_le_bytes());
    put(&mut d, 0x10, rim);
    put(&mut d, 0x50, &base.to_le_bytes());
    put(&mut d, 0x58, &top.to_le_bytes());
    d
}

/// RmmMeasurementDescriptorRec (C1.12): desc_type 0x1, len, rim, content @0x50.
fn rec_desc(rim: &[u8; 64], content: &[u8; 64]) -> [u8; 256] {
    let mut d = [0u8; 256];
    d[0] = 0x1;
    put(&mut d, 0x8, &0x100u64.to_le_bytes());
    put(&mut d, 0x10, rim);
    put(&mut d, 0x50, content);
    d
}

/// The measured RmiRecParams page (B4.4.19): flags @0, pc @0x200, gprs @0x300.
fn rec_page(runnable: bool, pc: u64, gprs: [u64; 8]) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    put(&mut p, 0, &(runnable as u64).to_le_bytes());
    put(&mut p, 0x200, &pc.to_le_bytes());
    for (i, g) in gprs.iter().enumerate() {
        put(&mut p, 0x300 + 8 * i, &g.to_le_bytes());
    }
    p
}

fn page(fill: impl Fn(usize) -> u8) -> Vec<u8> {
    (0..4096).map(fill).collect()
}

/// SHA-256 realm, 40-bit IPA, SVE 256 bits, PMU with 3 counters, 4 breakpoints, 2 watchpoints.
/// Plan: ripas [0, 4 MiB), measured 2 granules at 0x1000, unmeasured 1 granule at 0x20_0000;
/// RECs: one runnable, one not.
#[test]
fn sha256_small_plan() {
    // RmiRealmParams (B4.4.12) with only the measured fields.
    let mut rim = rha(false, &small_params_page());

    // RTT_INIT_RIPAS [0, 4 MiB): 40-bit IPA starts at level 1 (2 concatenated tables), the range
    // is smaller than 1 GiB: two 2 MiB entries.
    rim = rha(false, &ripas_desc(&rim, 0, 0x20_0000));
    rim = rha(false, &ripas_desc(&rim, 0x20_0000, 0x40_0000));

    // DATA_CREATE measured: content hashes of each granule, flags = RMI_MEASURE_CONTENT.
    let (p0, p1, unmeasured) = small_pages();
    rim = rha(false, &data_desc(&rim, 0x1000, 1, &rha(false, &p0)));
    rim = rha(false, &data_desc(&rim, 0x2000, 1, &rha(false, &p1)));
    // DATA_CREATE unmeasured: flags 0, content zero.
    rim = rha(false, &data_desc(&rim, 0x20_0000, 0, &[0u8; 64]));

    // REC_CREATE of the runnable REC; the second is not runnable and does not extend the RIM.
    let rec_hash = rha(false, &rec_page(true, 0x1000, SMALL_GPRS));
    rim = rha(false, &rec_desc(&rim, &rec_hash));
    let expected = &rim[..32];

    let mut realm = small_realm();
    realm.rpv = [0x5a; 64]; // not measured
    let mut data = p0.clone();
    data.extend_from_slice(&p1);
    let plan = small_plan(&data, &unmeasured);
    let recs = small_recs();
    let got = measure(&plan, &realm, &recs).unwrap();
    assert_eq!(got.as_bytes(), expected);
    assert_eq!(got.to_string().len(), 64);

    // The same through the incremental digest.
    let mut d = RimDigest::new(&realm).unwrap();
    d.ripas_range(0, 0x40_0000).unwrap();
    d.data_granule(0x1000, &p0, true).unwrap();
    d.data_granule(0x2000, &p1, true).unwrap();
    d.data_granule(0x20_0000, &unmeasured, false).unwrap();
    for r in &recs {
        d.rec(r);
    }
    assert_eq!(d.finish().as_bytes(), expected);
}

/// SHA-512 realm with LPA2 and a 52-bit IPA, SVE off, PMU off, 2/2 debug resources. Plan:
/// measured zero content (2 granules) at 1 GiB - 8 KiB, ripas [1 GiB, 3 GiB + 2 MiB + 4 KiB)
/// split by the level-0 start (16 concatenated tables): 1 GiB, 1 GiB, 2 MiB, 4 KiB.
#[test]
fn sha512_lpa2_plan() {
    let mut params = vec![0u8; 4096];
    params[0x0] = 0b001; // lpa2
    params[0x8] = 52;
    params[0x18] = 1;
    params[0x20] = 1;
    params[0x30] = 1; // RMI_HASH_SHA_512
    let mut rim = rha(true, &params);
    let zero = rha(true, &[0u8; 4096]);
    rim = rha(true, &data_desc(&rim, 0x3fff_e000, 1, &zero));
    rim = rha(true, &data_desc(&rim, 0x3fff_f000, 1, &zero));
    for (b, t) in [
        (0x4000_0000u64, 0x8000_0000u64),
        (0x8000_0000, 0xc000_0000),
        (0xc000_0000, 0xc020_0000),
        (0xc020_0000, 0xc020_1000),
    ] {
        rim = rha(true, &ripas_desc(&rim, b, t));
    }
    let rec_hash = rha(true, &rec_page(true, 0xffff_0000_1234, [0; 8]));
    rim = rha(true, &rec_desc(&rim, &rec_hash));

    let mut realm = RealmParams::new(HashAlgo::Sha512, 52);
    realm.lpa2 = true;
    let plan = PlanBuilder::new()
        .zeros(0x3fff_e000, 0x2000, Role::Measured)
        .zeros(0x4000_0000, 0x8020_1000, Role::Ripas)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let rec = RecParams {
        pc: 0xffff_0000_1234,
        gprs: [0; 8],
        runnable: true,
    };
    let got = measure(&plan, &realm, &[rec]).unwrap();
    assert_eq!(got.as_bytes(), &rim[..]);
    assert_eq!(got.as_bytes().len(), 64);
}

/// A realm with no regions and no RECs: the RIM is the hash of the parameters page alone.
#[test]
fn empty_plan_is_realm_params_hash() {
    let mut params = vec![0u8; 4096];
    params[0x8] = 48;
    params[0x18] = 1;
    params[0x20] = 1;
    let plan = PlanBuilder::new()
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let rim = measure(&plan, &RealmParams::new(HashAlgo::Sha256, 48), &[]).unwrap();
    assert_eq!(rim.as_bytes(), &rha(false, &params)[..32]);
}

#[test]
fn plan_order_is_measured_order() {
    let a = vec![1u8; 4096];
    let b = vec![2u8; 4096];
    let realm = RealmParams::new(HashAlgo::Sha256, 40);
    let p1 = PlanBuilder::new()
        .source(0x1000, Role::Measured, &a)
        .source(0x2000, Role::Measured, &b)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let p2 = PlanBuilder::new()
        .source(0x2000, Role::Measured, &b)
        .source(0x1000, Role::Measured, &a)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_ne!(
        measure(&p1, &realm, &[]).unwrap(),
        measure(&p2, &realm, &[]).unwrap()
    );
}

#[test]
fn outside_protected_half_is_refused_naming_the_region() {
    let realm = RealmParams::new(HashAlgo::Sha256, 40);
    let data = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x1000, Role::Measured, &data)
        .source(1 << 39, Role::Measured, &data)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let e = measure(&plan, &realm, &[]).unwrap_err();
    assert_eq!(
        e,
        Error::OutsideProtectedIpa {
            region: 1,
            gpa: 1 << 39,
            len: 4096,
            limit: 1 << 39,
            ipa_bits: 40
        }
    );
    assert!(
        e.to_string().contains("region 1 [0x8000000000..+0x1000)"),
        "{e}"
    );
}

#[test]
fn zero_secrets_cpuid_are_refused() {
    // CCA's caps refuse them at plan validation...
    let err = PlanBuilder::new()
        .zero(0x1000, 0x1000)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap_err();
    assert!(
        err.to_string().contains("role zero is not supported"),
        "{err}"
    );
    // ...and measuring a plan validated for another platform refuses them too.
    let backend = cc_populate::testing::LedgerBackend::new(2 << 20);
    let cpuid = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x3000, Role::Cpuid, &cpuid)
        .build(&backend.caps, &MemoryLayout::unbounded())
        .unwrap();
    let e = measure(&plan, &RealmParams::new(HashAlgo::Sha256, 40), &[]).unwrap_err();
    assert!(matches!(
        e,
        Error::RoleRefused {
            region: 0,
            gpa: 0x3000,
            len: 4096,
            role: Role::Cpuid
        }
    ));
}

#[test]
fn invalid_params_are_typed() {
    let plan = PlanBuilder::new()
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    realm.sve_vl = 100;
    assert!(matches!(
        measure(&plan, &realm, &[]),
        Err(Error::InvalidParam {
            field: "sve_vl",
            value: 100,
            ..
        })
    ));
}

/// Starting levels, worked out by hand: bits above the page offset = ipa - 12, 9 per level; the
/// top level holds 2^(remaining bits) entries; at 16 or fewer, tables are concatenated one
/// level down.
#[test]
fn rtt_starting_levels() {
    let g = |ipa, lpa2| {
        let g = rtt_geometry(ipa, lpa2).unwrap();
        (g.start_level, g.start_tables)
    };
    // 40: 28 bits = 1 + 9 + 9 + 9: level 0 would hold 2 entries -> level 1, 2 tables.
    assert_eq!(g(40, false), (1, 2));
    // 44: 32 bits = 5 + 27: level 0 holds 32 entries.
    assert_eq!(g(44, false), (0, 1));
    // 48: 36 bits: level 0 holds 512 entries.
    assert_eq!(g(48, false), (0, 1));
    // 52 (LPA2): 40 bits = 4 + 36: level -1 would hold 16 -> level 0, 16 tables.
    assert_eq!(g(52, true), (0, 16));
    // 36: 24 bits = 6 + 18: level 1 holds 64 entries.
    assert_eq!(g(36, false), (1, 1));
    // 32: 20 bits = 2 + 18: level 1 would hold 4 -> level 2, 4 tables.
    assert_eq!(g(32, false), (2, 4));
    // 33: level 1 would hold 8 -> level 2, 8 tables.
    assert_eq!(g(33, false), (2, 8));
    for (bits, lpa2) in [(52, false), (31, false), (53, true)] {
        match rtt_geometry(bits, lpa2) {
            Err(cca_backend::Error::InvalidParam { field, value, .. }) => {
                assert_eq!((field, value), ("ipa_bits", u64::from(bits)))
            }
            other => panic!("{bits} bits, lpa2 {lpa2}: {other:?}"),
        }
    }
    // The edges are accepted: 48 bits without LPA2, 52 with it.
    assert!(rtt_geometry(48, false).is_ok() && rtt_geometry(52, true).is_ok());
}

fn split(base: u64, top: u64, ipa: u8, lpa2: bool) -> Vec<(u64, u64)> {
    ripas_split(base, top, ipa, lpa2).unwrap().collect()
}

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

#[test]
fn ripas_split_by_hand() {
    // 40 bits (level 1 start): [1 GiB - 4 KiB, 2 GiB + 2 MiB + 8 KiB).
    let want = vec![
        (G1 - K4, G1),
        (G1, 2 * G1),
        (2 * G1, 2 * G1 + M2),
        (2 * G1 + M2, 2 * G1 + M2 + K4),
        (2 * G1 + M2 + K4, 2 * G1 + M2 + 2 * K4),
    ];
    assert_eq!(split(G1 - K4, 2 * G1 + M2 + 2 * K4, 40, false), want);
    // The same range with 44 and 48 bits (level 0 start): 1 GiB blocks are still the largest.
    assert_eq!(split(G1 - K4, 2 * G1 + M2 + 2 * K4, 44, false), want);
    assert_eq!(split(G1 - K4, 2 * G1 + M2 + 2 * K4, 48, false), want);
    assert_eq!(split(G1 - K4, 2 * G1 + M2 + 2 * K4, 52, true), want);
    // 33 bits (level 2 start): no 1 GiB blocks: [2 MiB - 4 KiB, 1 GiB + 2 MiB).
    let s = split(M2 - K4, G1 + M2, 33, false);
    assert_eq!(s[0], (M2 - K4, M2));
    assert_eq!(s.len(), 1 + 512);
    assert!(s[1..].iter().all(|(b, t)| t - b == M2 && b % M2 == 0));
    assert_eq!(s.last(), Some(&(G1, G1 + M2)));
    // An unaligned start walks 4 KiB up to the 2 MiB boundary, then 2 MiB up to 1 GiB.
    let s = split(G1 - M2 - 3 * K4, G1 + K4, 40, false);
    assert_eq!(
        s,
        vec![
            (G1 - M2 - 3 * K4, G1 - M2 - 2 * K4),
            (G1 - M2 - 2 * K4, G1 - M2 - K4),
            (G1 - M2 - K4, G1 - M2),
            (G1 - M2, G1),
            (G1, G1 + K4),
        ]
    );
    // A single granule.
    assert_eq!(split(0x7000, 0x8000, 48, false), vec![(0x7000, 0x8000)]);
}

#[test]
fn ripas_split_refusals() {
    assert!(matches!(
        ripas_split(0x2000, 0x2000, 40, false),
        Err(Error::BadRange { .. })
    ));
    assert!(matches!(
        ripas_split(0x2001, 0x3000, 40, false),
        Err(Error::BadRange { .. })
    ));
    // Top reaching the unprotected half of a 40-bit IPA space.
    assert!(matches!(
        ripas_split(0, (1 << 39) + K4, 40, false),
        Err(Error::BadRange { .. })
    ));
    assert!(ripas_split(0, 1 << 39, 40, false).is_ok());
}

fn opts(rmm: RmmVersion, order: MeasureOrder) -> MeasureOptions<'static> {
    MeasureOptions {
        rmm,
        order,
        ..MeasureOptions::default()
    }
}

/// The measured RmiRealmParams page of `sha256_small_plan`'s realm.
fn small_params_page() -> Vec<u8> {
    let mut params = vec![0u8; 4096];
    params[0x0] = 0b110; // flags: sve | pmu
    params[0x8] = 40; // s2sz
    params[0x10] = 1; // sve_vl: 256 / 128 - 1
    params[0x18] = 3; // num_bps - 1
    params[0x20] = 1; // num_wps - 1
    params[0x28] = 3; // pmu_num_ctrs
    params
}

/// x0..x7 of `sha256_small_plan`'s runnable REC.
const SMALL_GPRS: [u64; 8] = [0x4000_0000, 1, 2, 3, 4, 5, 6, 0x7777_0000_0000_0007];

/// The two measured granules and the unmeasured one of `sha256_small_plan`.
fn small_pages() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        page(|i| (i % 251) as u8),
        page(|i| 0xff - (i % 13) as u8),
        vec![0xeeu8; 4096],
    )
}

/// Ripas [0, 4 MiB), `data` measured at 0x1000, `unmeasured` at 0x20_0000.
fn small_plan<'a>(data: &'a [u8], unmeasured: &'a [u8]) -> cc_populate::Plan<'a> {
    PlanBuilder::new()
        .zeros(0, 0x40_0000, Role::Ripas)
        .source(0x1000, Role::Measured, data)
        .source(0x20_0000, Role::Unmeasured, unmeasured)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap()
}

/// One runnable REC, one not.
fn small_recs() -> [RecParams; 2] {
    [
        RecParams {
            pc: 0x1000,
            gprs: SMALL_GPRS,
            runnable: true,
        },
        RecParams {
            pc: 0x2000,
            gprs: [9; 8],
            runnable: false,
        },
    ]
}

fn small_realm() -> RealmParams {
    let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    realm.sve_vl = 256;
    realm.pmu_counters = Some(3);
    realm.num_bps = 4;
    realm.num_wps = 2;
    realm
}

/// RMM 1.0 and RMM 2.0 on the same plan: the 2.0 chain is the 1.0 chain of
/// `sha256_small_plan` with its two RIPAS descriptors left out, nothing else changed.
#[test]
fn rmm_2_0_leaves_out_exactly_the_ripas_descriptors() {
    let (p0, p1, unmeasured) = small_pages();
    let chain = |with_ripas: bool| {
        let mut rim = rha(false, &small_params_page());
        if with_ripas {
            rim = rha(false, &ripas_desc(&rim, 0, 0x20_0000));
            rim = rha(false, &ripas_desc(&rim, 0x20_0000, 0x40_0000));
        }
        rim = rha(false, &data_desc(&rim, 0x1000, 1, &rha(false, &p0)));
        rim = rha(false, &data_desc(&rim, 0x2000, 1, &rha(false, &p1)));
        rim = rha(false, &data_desc(&rim, 0x20_0000, 0, &[0u8; 64]));
        rim = rha(
            false,
            &rec_desc(&rim, &rha(false, &rec_page(true, 0x1000, SMALL_GPRS))),
        );
        rim
    };
    let (v1, v2) = (chain(true), chain(false));
    assert_ne!(v1, v2);

    let mut data = p0.clone();
    data.extend_from_slice(&p1);
    let plan = small_plan(&data, &unmeasured);
    let recs = small_recs();
    let realm = small_realm();
    let got = |rmm| {
        measure_with_options(&plan, &realm, &recs, &opts(rmm, MeasureOrder::Planned)).unwrap()
    };
    assert_eq!(got(RmmVersion::V1_0).as_bytes(), &v1[..32]);
    assert_eq!(got(RmmVersion::V2_0).as_bytes(), &v2[..32]);
    // The default is RMM 1.0, as before the version could be chosen.
    assert_eq!(measure(&plan, &realm, &recs).unwrap().as_bytes(), &v1[..32]);

    // Driven record by record: RIPAS records are accepted and left out under 2.0.
    let mut d = RimDigest::with_rmm(&realm, RmmVersion::V2_0).unwrap();
    assert_eq!(d.rmm(), RmmVersion::V2_0);
    d.ripas_range(0, 0x40_0000).unwrap();
    d.ripas_entry(0, 0x1000);
    d.data_granule(0x1000, &p0, true).unwrap();
    d.data_granule(0x2000, &p1, true).unwrap();
    d.data_granule(0x20_0000, &unmeasured, false).unwrap();
    for r in &recs {
        d.rec(r);
    }
    assert_eq!(d.finish().as_bytes(), &v2[..32]);
    // RMM 2.0 still refuses a RIPAS range that RMM 1.0 refuses.
    let mut d = RimDigest::with_rmm(&realm, RmmVersion::V2_0).unwrap();
    assert!(matches!(
        d.ripas_range(0x2001, 0x3000),
        Err(Error::BadRange { .. })
    ));
}

/// The v12 kernel's order, derived by hand from the v12 patches and TF-RMM's 1.0-era
/// `smc_rtt_init_ripas` (`tf-rmm-v0.8.0`, `runtime/rmi/rtt.c`), on a plan that lists its
/// memslot first (the kernel measures it last) and two vCPUs.
///
/// The RTTs when RIPAS is initialised: DATA_CREATE at 0x1000 and 0x20_0000 failed on missing
/// tables and the kernel created them down to level 3 (`realm_create_protected_data_granule`
/// → `realm_create_rtt_levels(.., RMM_RTT_MAX_LEVEL)`): a level-2 table over [0, 1 GiB) and
/// level-3 tables over [0, 2 MiB) and [2 MiB, 4 MiB). `ripas_change` over the memslot
/// [0, 8 MiB) then gets, call by call (the RMM measures each entry of the deepest table at
/// `base` until an entry is not UNASSIGNED, crosses `top` or the table ends):
/// [0, 4K) as one level-3 entry; at 0x1000 and 0x2000 (ASSIGNED) an RTT error at level 3 with
/// nothing measured, which the kernel steps over a page at a time; 4 KiB entries from 0x3000
/// to the end of the first level-3 table at 2 MiB; at 2 MiB (ASSIGNED) a page skipped; 4 KiB
/// entries from 0x20_1000 to 4 MiB; then level-2 entries of 2 MiB: [4 MiB, 6 MiB) and
/// [6 MiB, 8 MiB).
#[test]
fn series_v12_order_by_hand() {
    let p0 = page(|i| (i * 3 % 256) as u8);
    let p1 = page(|i| (i % 7) as u8);
    let unmeasured = page(|_| 0x5a);
    let vcpu0 = ([0x4800_0000, 0, 0, 0, 0, 0, 0, 0], 0x8_0000u64);
    let vcpu1 = ([1, 2, 3, 4, 5, 6, 7, 8], 0x9_0000u64);

    let mut rim = rha(false, &small_params_page());
    // DATA in populate order.
    rim = rha(false, &data_desc(&rim, 0x1000, 1, &rha(false, &p0)));
    rim = rha(false, &data_desc(&rim, 0x2000, 1, &rha(false, &p1)));
    rim = rha(false, &data_desc(&rim, 0x20_0000, 0, &[0u8; 64]));
    // RECs at the first KVM_RUN: vCPU 0 runnable and measured, vCPU 1 not runnable.
    rim = rha(
        false,
        &rec_desc(&rim, &rha(false, &rec_page(true, vcpu0.1, vcpu0.0))),
    );
    // Under RMM 2.0 the chain ends here.
    let want_v2 = rim;
    // RTT_INIT_RIPAS of the memslot's ranges not populated.
    let mut entries = vec![(0u64, 0x1000u64)];
    entries.extend((0x3000..0x20_0000).step_by(0x1000).map(|a| (a, a + 0x1000)));
    entries.extend(
        (0x20_1000..0x40_0000)
            .step_by(0x1000)
            .map(|a| (a, a + 0x1000)),
    );
    entries.extend([(0x40_0000, 0x60_0000), (0x60_0000, 0x80_0000)]);
    assert_eq!(entries.len(), 1 + 509 + 511 + 2);
    for (b, t) in &entries {
        rim = rha(false, &ripas_desc(&rim, *b, *t));
    }
    let want_v1 = rim;

    let mut data = p0.clone();
    data.extend_from_slice(&p1);
    let plan = PlanBuilder::new()
        .zeros(0, 0x80_0000, Role::Ripas)
        .source(0x1000, Role::Measured, &data)
        .source(0x20_0000, Role::Unmeasured, &unmeasured)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let recs = [
        RecParams {
            pc: vcpu0.1,
            gprs: vcpu0.0,
            runnable: true,
        },
        RecParams {
            pc: vcpu1.1,
            gprs: vcpu1.0,
            runnable: false,
        },
    ];
    let realm = small_realm();
    let v12 = |rmm| measure_with_options(&plan, &realm, &recs, &opts(rmm, MeasureOrder::SeriesV12));
    assert_eq!(v12(RmmVersion::V1_0).unwrap().as_bytes(), &want_v1[..32]);
    // The plan's own order measures the memslot first and whole: another RIM.
    assert_ne!(
        measure(&plan, &realm, &recs).unwrap().as_bytes(),
        &want_v1[..32]
    );

    // Under RMM 2.0 the RIPAS step drops out and the two orders agree.
    assert_eq!(v12(RmmVersion::V2_0).unwrap().as_bytes(), &want_v2[..32]);
    let planned = measure_with_options(
        &plan,
        &realm,
        &recs,
        &opts(RmmVersion::V2_0, MeasureOrder::Planned),
    )
    .unwrap();
    assert_eq!(planned.as_bytes(), &want_v2[..32]);
}

/// Two memslots, data only in the second, SHA-512: each memslot is measured whole or as its
/// unpopulated ranges, in the plan's (the kernel's memslot walk) order.
#[test]
fn series_v12_two_memslots_sha512() {
    let mut params = vec![0u8; 4096];
    params[0x8] = 40;
    params[0x18] = 1;
    params[0x20] = 1;
    params[0x30] = 1;
    let content = page(|i| (i >> 4) as u8);
    let mut rim = rha(true, &params);
    rim = rha(true, &data_desc(&rim, 0x4000_0000, 1, &rha(true, &content)));
    rim = rha(
        true,
        &rec_desc(&rim, &rha(true, &rec_page(true, 0x4000_0000, [0; 8]))),
    );
    // Memslot B [1 GiB, 1 GiB + 4 MiB) listed first, with its first granule populated: 4 KiB
    // entries up to 2 MiB (the level-3 table the populate created), then one 2 MiB entry.
    rim = rha(true, &ripas_desc(&rim, 0x4000_1000, 0x4000_2000));
    for a in (0x4000_2000u64..0x4020_0000).step_by(0x1000) {
        rim = rha(true, &ripas_desc(&rim, a, a + 0x1000));
    }
    rim = rha(true, &ripas_desc(&rim, 0x4020_0000, 0x4040_0000));
    // Memslot A [0, 1 GiB), nothing populated: one level-1 entry of 1 GiB.
    rim = rha(true, &ripas_desc(&rim, 0, 0x4000_0000));

    let plan = PlanBuilder::new()
        .zeros(0x4000_0000, 0x40_0000, Role::Ripas)
        .zeros(0, 0x4000_0000, Role::Ripas)
        .source(0x4000_0000, Role::Measured, &content)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let recs = [RecParams {
        pc: 0x4000_0000,
        gprs: [0; 8],
        runnable: true,
    }];
    let realm = RealmParams::new(HashAlgo::Sha512, 40);
    let got = measure_with_options(
        &plan,
        &realm,
        &recs,
        &opts(RmmVersion::V1_0, MeasureOrder::SeriesV12),
    )
    .unwrap();
    assert_eq!(got.as_bytes(), &rim[..]);
}

#[test]
fn series_v12_refusals_are_typed() {
    let data = vec![1u8; 4096];
    let plan = PlanBuilder::new()
        .zeros(0, 0x20_0000, Role::Ripas)
        .source(0x1000, Role::Measured, &data)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let realm = RealmParams::new(HashAlgo::Sha256, 40);
    let v12 = opts(RmmVersion::V1_0, MeasureOrder::SeriesV12);
    let rec = |runnable| RecParams {
        pc: 0,
        gprs: [0; 8],
        runnable,
    };
    // No vCPU, no runnable one, two runnable: not what the kernel creates (exactly one REC
    // runnable, vCPU id 0's, which need not be the first created). The value is the count.
    for (recs, field, value) in [
        (vec![], "recs", 0),
        (vec![rec(false)], "recs.runnable", 0),
        (vec![rec(true), rec(true)], "recs.runnable", 2),
    ] {
        let e = measure_with_options(&plan, &realm, &recs, &v12).unwrap_err();
        assert!(
            matches!(e, Error::InvalidParam { field: f, value: v, .. } if f == field && v == value),
            "{e}"
        );
    }
    // vCPU id 0 created second is fine, and measures the same runnable REC.
    assert_eq!(
        measure_with_options(&plan, &realm, &[rec(false), rec(true)], &v12).unwrap(),
        measure_with_options(&plan, &realm, &[rec(true), rec(false)], &v12).unwrap()
    );
    // Data outside every memslot: the v12 kernel cannot populate it.
    let plan = PlanBuilder::new()
        .zeros(0, 0x20_0000, Role::Ripas)
        .source(0x20_0000, Role::Measured, &data)
        .build(&CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let e = measure_with_options(&plan, &realm, &[rec(true)], &v12).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadRange {
                base: 0x20_0000,
                top: 0x20_1000,
                ..
            }
        ),
        "{e}"
    );
    // The planned order does not ask for memslots.
    assert!(measure(&plan, &realm, &[rec(true)]).is_ok());
}

#[test]
fn order_and_version_names() {
    for o in MeasureOrder::ALL {
        assert_eq!(MeasureOrder::from_name(o.name()), Some(o));
    }
    assert_eq!(MeasureOrder::default(), MeasureOrder::Planned);
    assert_eq!(MeasureOrder::from_name("v13"), None);
    assert_eq!(RmmVersion::from_name("1.0"), Some(RmmVersion::V1_0));
    let dbg = format!("{:?}", opts(RmmVersion::V2_0, MeasureOrder::SeriesV12));
    assert_eq!(
        dbg,
        "MeasureOptions { rmm: V2_0, order: SeriesV12, reader: false, threads: 0 }"
    );
}
