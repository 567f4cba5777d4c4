//! The backend driven by the cc-populate driver through the model of the CCA series
//! (`testing::KernelModel`, which cites the patches it follows): exact bytes sent, exact reports
//! against the model's ledger, private memory, memslot ends, interruption, RMM errors, the
//! launch order and the end of population at the first `KVM_RUN`, per series version.

use std::collections::BTreeMap;

use cc_populate::{
    Backend, ChunkRequest, ChunkSource, ConversionPolicy, Driver, DriverOptions, ErrorKind,
    MemoryLayout, Phase, Plan, PlanBuilder, PlanError, Role, RunError, SourceBuf, StopCause,
};
use cca_backend::testing::{
    memslot_walk_order, Fault, KernelModel, ModelMemslot, ModelRealm, MODEL_HOST_DFR0,
};
use cca_backend::uapi::{self, KvmArmRmiPopulate};
use cca_backend::{
    hash, measure, measure_with, measure_with_options, Activation, CcaBackend, CcaIoctl, Error,
    HashAlgo, MeasureOptions, PopulateRequest, RealmParams, RecParams, RimDigest, RmmVersion,
    UapiVersion,
};

const M: u64 = 1 << 20;
const K4: u64 = 4096;

const RMI_VERSIONS: [UapiVersion; 3] = [UapiVersion::V12, UapiVersion::V13, UapiVersion::V14];

/// `KVM_ARM_RMI_POPULATE` as each version numbers it (v12 06/46 `_IOW`, v13 11/48 and v14 13/44
/// `_IOWR`; type 0xAE, nr 0xd7, 32 bytes).
fn populate_nr(v: UapiVersion) -> u64 {
    match v {
        UapiVersion::V12 => 0x4020_AED7,
        _ => 0xC020_AED7,
    }
}

/// The realm parameters a VMM on the model host gives: the host's breakpoint count (read from
/// `ID_AA64DFR0_EL1`, which the kernel refuses to change) and watchpoints.
fn realm(hash: HashAlgo) -> RealmParams {
    let mut r = RealmParams::new(hash, 40);
    r.set_debug_from_id_aa64dfr0(MODEL_HOST_DFR0);
    r
}

/// A model VM of `version`: one guest_memfd memslot over [0, 64 MiB), two vCPUs without SVE
/// (vCPU 0 boots at 2 MiB with x0 = 0x4000_0000).
fn model(version: UapiVersion, realm: RealmParams) -> KernelModel {
    let mut m = KernelModel::new(version, realm);
    // SAFETY: this model only receives calls from `CcaBackend`, which passes sources that are
    // live, readable buffers of the call's size (a borrowed chunk or its own bounce buffer).
    unsafe { m.read_sources() };
    m.add_memslot(0, 0, 64 * M, true);
    m.add_vcpus(2, false);
    m.vcpus[0].pc = 2 * M;
    m.vcpus[0].gprs[0] = 0x4000_0000;
    m
}

/// A backend over `m`, configured with `r` (v12 and later) as the launch order asks.
fn backend<'a>(
    m: &'a mut KernelModel,
    v: UapiVersion,
    r: &RealmParams,
) -> CcaBackend<'a, &'a mut KernelModel> {
    let mut be = CcaBackend::with_version(m, v, v.series_cap());
    be.configure(r).unwrap();
    be
}

/// A new backend resuming on `m`, whose vCPUs an earlier backend configured.
fn resumed<'a>(m: &'a mut KernelModel, v: UapiVersion) -> CcaBackend<'a, &'a mut KernelModel> {
    let mut be = CcaBackend::with_version(m, v, v.series_cap());
    be.adopt(&realm(HashAlgo::Sha256)).unwrap();
    be
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Fills `buf` so that `&buf[range]` equals `data` and does not start on a page boundary (the
/// bounce-buffer path).
fn unaligned(buf: &mut Vec<u8>, data: &[u8]) -> std::ops::Range<usize> {
    *buf = vec![0u8; data.len() + 1];
    let start = if (buf.as_ptr() as usize + 1).is_multiple_of(4096) {
        0
    } else {
        1
    };
    buf[start..start + data.len()].copy_from_slice(data);
    start..start + data.len()
}

struct Image {
    measured: SourceBuf,
    measured_bytes: Vec<u8>,
    unmeasured: Vec<u8>,
}

fn image() -> Image {
    let measured_bytes = pattern(3 * M + 2 * K4, 7);
    let mut measured = SourceBuf::new(measured_bytes.len()).unwrap();
    measured.as_mut_slice().copy_from_slice(&measured_bytes);
    Image {
        measured,
        measured_bytes,
        unmeasured: pattern(3 * K4, 99),
    }
}

/// ripas [0, 64 MiB) (only with `ripas`), measured 3 MiB + 8 KiB at 2 MiB from a page-aligned
/// buffer, unmeasured 12 KiB at 16 MiB, measured zeros 8 KiB at 32 MiB.
fn plan<'a>(
    img: &'a Image,
    unmeasured: &'a [u8],
    ripas: bool,
    caps: &cc_populate::BackendCaps,
) -> Plan<'a> {
    let mut b = PlanBuilder::new();
    if ripas {
        b = b.zeros(0, 64 * M, Role::Ripas);
    }
    b.source(2 * M, Role::Measured, img.measured.as_slice())
        .source(16 * M, Role::Unmeasured, unmeasured)
        .zeros(32 * M, 2 * K4, Role::Measured)
        .build(caps, &MemoryLayout::unbounded())
        .unwrap()
}

/// The ledger says exactly what the report says, granule by granule, with the right content.
fn check_ledger(m: &KernelModel, img: &Image, algo: HashAlgo) {
    let mut expect = BTreeMap::new();
    for (i, page) in img.measured_bytes.chunks(4096).enumerate() {
        expect.insert(2 * M + i as u64 * K4, (true, Some(hash(algo, page))));
    }
    for (i, page) in img.unmeasured.chunks(4096).enumerate() {
        expect.insert(16 * M + i as u64 * K4, (false, Some(hash(algo, page))));
    }
    for i in 0..2 {
        expect.insert(32 * M + i * K4, (true, Some(hash(algo, &[0u8; 4096]))));
    }
    let got: BTreeMap<_, _> = m
        .ledger
        .iter()
        .map(|(a, g)| (*a, (g.measured, g.content)))
        .collect();
    assert_eq!(got, expect);
    // DATA_CREATE in plan order, each region in address order.
    let order: Vec<u64> = expect.keys().copied().collect();
    assert_eq!(m.order, order);
}

fn populate_calls(m: &KernelModel) -> Vec<&cca_backend::testing::Call> {
    m.calls
        .iter()
        .filter(|c| c.request == 0x4020_AED7 || c.request == 0xC020_AED7)
        .collect()
}

fn le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn boot_rec() -> RecParams {
    RecParams {
        pc: 2 * M,
        gprs: [0x4000_0000, 0, 0, 0, 0, 0, 0, 0],
        runnable: true,
    }
}

fn second_rec() -> RecParams {
    RecParams {
        pc: 0,
        gprs: [0; 8],
        runnable: false,
    }
}

#[test]
fn full_run_exact_bytes_ledger_and_first_run() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut um = Vec::new();
        let r = unaligned(&mut um, &img.unmeasured);
        let mut want_realm = realm(HashAlgo::Sha256);
        want_realm.num_wps = 2;
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, v, &want_realm);
        let plan = plan(&img, &um[r], true, &be.caps());
        let report = Driver::new(&mut be).run(&plan).unwrap();
        assert!(report.is_complete(), "{v}: {report}");
        assert_eq!(be.activate().unwrap(), Activation::OnFirstRun);
        let caps = be.caps();
        drop(be);

        // configure: per vCPU, ID_AA64DFR0_EL1 read, written with WRPs = 1 and BRPs = 5,
        // CTX_CMPs = 1 kept as the host has them (the model host: 0x6 | 5 << 12 | 3 << 20 |
        // 1 << 28; the kernel refuses any change of those two), then SVE_VLS read (ENOENT: no
        // SVE).
        let dfr0 = 0x6u64 | (5 << 12) | (1 << 20) | (1 << 28);
        let sets: Vec<_> = m
            .calls
            .iter()
            .filter(|c| c.request == 0x4010_AEAC)
            .collect();
        assert_eq!(sets.len(), 2, "{v}");
        for (i, c) in sets.iter().enumerate() {
            assert_eq!(c.vcpu, Some(i));
            assert_eq!(le(&c.bytes, 0), 0x6030_0000_0013_C028);
            assert_eq!(le(&c.bytes, 8), dfr0);
            assert_eq!(c.errno, None);
        }
        // Every region made private before its populate: KVM_SET_MEMORY_ATTRIBUTES
        // {address, size, attributes = PRIVATE (8), flags 0}.
        let attrs: Vec<(u64, u64, u64, u64)> = m
            .calls
            .iter()
            .filter(|c| c.request == 0x4020_AED2)
            .map(|c| {
                (
                    le(&c.bytes, 0),
                    le(&c.bytes, 8),
                    le(&c.bytes, 16),
                    le(&c.bytes, 24),
                )
            })
            .collect();
        assert_eq!(
            attrs,
            vec![
                (0, 64 * M, 8, 0),
                (2 * M, 3 * M + 2 * K4, 8, 0),
                (16 * M, 3 * K4, 8, 0),
                (32 * M, 2 * K4, 8, 0),
            ],
            "{v}"
        );
        // The ripas region issues no populate; the three data regions one call each.
        let pops = populate_calls(&m);
        assert_eq!(pops.len(), 3, "{v}");
        assert!(pops
            .iter()
            .all(|c| c.request == populate_nr(v) && c.errno.is_none()));
        // The first call, byte by byte.
        let src = img.measured.as_slice().as_ptr() as u64;
        let mut want = Vec::new();
        want.extend_from_slice(&(2 * M).to_le_bytes()); // base
        want.extend_from_slice(&(3 * M + 2 * K4).to_le_bytes()); // size
        want.extend_from_slice(&src.to_le_bytes()); // source_uaddr: the plan's own buffer
        want.extend_from_slice(&1u32.to_le_bytes()); // flags: MEASURE
        want.extend_from_slice(&0u32.to_le_bytes()); // reserved
        assert_eq!(pops[0].bytes, want);
        // The unmeasured call: flags 0, bounce-buffer source (page aligned, not the plan's:
        // v12 would copy the whole page holding an unaligned source).
        let c = &pops[1].bytes;
        assert_eq!((le(c, 0), le(c, 8)), (16 * M, 3 * K4));
        assert_eq!(le(c, 16) % K4, 0);
        assert_eq!(&c[24..32], &[0u8; 8]);
        check_ledger(&m, &img, HashAlgo::Sha256);
        for (i, rr) in report.regions.iter().enumerate().skip(1) {
            assert_eq!(rr.populated, m.populated_in(rr.gpa, rr.len), "region {i}");
            assert_eq!(rr.converted, rr.len, "region {i}");
        }
        // The kernel created the realm at the first populate with what configure set.
        assert_eq!(m.created.as_ref(), Some(&want_realm), "{v}");
        assert_eq!(m.state, ModelRealm::New);

        // The first KVM_RUN: RECs for both vCPUs (vCPU 0 runnable), RIPAS over the memslot's
        // unpopulated parts, activation.
        m.first_run().unwrap();
        assert_eq!(m.state, ModelRealm::Active);
        assert_eq!(m.recs, vec![boot_rec(), second_rec()]);
        let holes = [
            (0, 2 * M),
            (5 * M + 2 * K4, 16 * M),
            (16 * M + 3 * K4, 32 * M),
            (32 * M + 2 * K4, 64 * M),
        ];
        assert_eq!(m.ripas, holes.iter().copied().collect::<BTreeMap<_, _>>());
        let no_ripas = self::plan(&img, &img.unmeasured, false, &caps);
        let want_rim = if v.rmm_rules()[0] == RmmVersion::V1_0 {
            // RMM 1.0 rules (v12, and v13 on its own firmware branch, the model's default):
            // REALM_CREATE, DATA in populate order, the runnable REC, then RTT_INIT_RIPAS over
            // the holes.
            let mut d = RimDigest::new(&want_realm).unwrap();
            for (i, page) in img.measured_bytes.chunks(4096).enumerate() {
                d.data_granule_hashed(2 * M + i as u64 * K4, Some(&hash(HashAlgo::Sha256, page)));
            }
            for i in 0..3 {
                d.data_granule_hashed(16 * M + i * K4, None);
            }
            for i in 0..2 {
                d.data_granule_hashed(32 * M + i * K4, Some(&hash(HashAlgo::Sha256, &[0; 4096])));
            }
            d.rec(&boot_rec());
            d.rec(&second_rec());
            for (b, t) in holes {
                d.ripas_range(b, t).unwrap();
            }
            d.current()
        } else {
            // RMM 2.0 rules (v14): RTT_INIT_RIPAS is not measured.
            measure(&no_ripas, &want_realm, &[boot_rec(), second_rec()]).unwrap()
        };
        assert_eq!(m.rim().unwrap(), want_rim.to_vec(), "{v}");
    }
}

/// The RIM the model's RMM computes over a whole launch (configure, the driver's run, the first
/// `KVM_RUN`, in the order the kernel issues the RMI calls) is the RIM `measure_with_options`
/// gives for the same plan, the realm parameters `configure` was given and one `RecParams` per
/// vCPU in creation order, with `MeasureOptions::for_series` of the version and of each RMM rule
/// set its firmware may follow (`UapiVersion::rmm_rules`: v12 1.0; v13 1.0 on its own firmware
/// branch and 2.0 on TF-RMM from bdb07f46 on; v14 2.0). One memslot without SVE, and two
/// memslots (walked slot 3 first) with SVE vCPUs created with ids 2, 0, 1 (the runnable REC is
/// id 0's, the second created) and lowered watchpoints; the breakpoint count is the host's.
#[test]
fn model_rim_after_launch_equals_measure_for_the_series() {
    let img = image();
    let mut um = Vec::new();
    let r = unaligned(&mut um, &img.unmeasured);
    for v in RMI_VERSIONS {
        for &rmm in v.rmm_rules() {
            for two_slots in [false, true] {
                let mut m = model(v, realm(HashAlgo::Sha256));
                m.rmm = rmm;
                let mut want_realm = realm(HashAlgo::Sha256);
                assert_eq!(want_realm.num_bps, 6, "the model host's");
                want_realm.num_wps = 3;
                // (gpa, size) of the memslots in the order the kernel walks them.
                let walk: Vec<(u64, u64)> = if two_slots {
                    m.memslots.clear();
                    m.add_memslot(1, 0, 32 * M, true);
                    m.add_memslot(3, 32 * M, 32 * M, true);
                    m.vcpus.clear();
                    for id in [2, 0, 1] {
                        m.add_vcpu_with_id(id, true);
                    }
                    m.vcpus[1].pc = 2 * M;
                    m.vcpus[1].gprs[0] = 0x4000_0000;
                    m.vcpus[0].pc = 0x1234_5000;
                    want_realm.sve_vl = 256;
                    memslot_walk_order(&m.memslots)
                        .into_iter()
                        .map(|i| (m.memslots[i].gpa, m.memslots[i].size))
                        .collect()
                } else {
                    vec![(0, 64 * M)]
                };
                if two_slots {
                    assert_eq!(walk, vec![(32 * M, 32 * M), (0, 32 * M)]);
                }
                let vcpus: Vec<RecParams> = m
                    .vcpus
                    .iter()
                    .map(|c| RecParams {
                        pc: c.pc,
                        gprs: c.gprs,
                        runnable: c.id == 0,
                    })
                    .collect();
                let mut be = backend(&mut m, v, &want_realm);
                let mut b = PlanBuilder::new();
                for (gpa, size) in &walk {
                    b = b.zeros(*gpa, *size, Role::Ripas);
                }
                let plan = b
                    .source(2 * M, Role::Measured, img.measured.as_slice())
                    .source(16 * M, Role::Unmeasured, &um[r.clone()])
                    .zeros(32 * M, 2 * K4, Role::Measured)
                    .build(&be.caps(), &MemoryLayout::unbounded())
                    .unwrap();
                assert!(Driver::new(&mut be).run(&plan).unwrap().is_complete());
                assert_eq!(be.activate().unwrap(), Activation::OnFirstRun);
                drop(be);
                m.first_run().unwrap();
                assert_eq!(m.created.as_ref(), Some(&want_realm), "{v}");
                let runnable: Vec<bool> = m.recs.iter().map(|r| r.runnable).collect();
                let want_runnable = if two_slots {
                    vec![false, true, false]
                } else {
                    vec![true, false]
                };
                assert_eq!(runnable, want_runnable, "only vCPU id 0's REC is runnable");
                let opts = MeasureOptions::for_series(v, rmm);
                assert_eq!(opts.rmm, rmm);
                let want = measure_with_options(&plan, &want_realm, &vcpus, &opts).unwrap();
                assert_eq!(
                    m.rim().unwrap(),
                    want.to_vec(),
                    "{v}, RMM {rmm:?}, two memslots: {two_slots}"
                );
                // The other rules give another RIM: the comparison can fail.
                let other = MeasureOptions {
                    rmm: if rmm == RmmVersion::V1_0 {
                        RmmVersion::V2_0
                    } else {
                        RmmVersion::V1_0
                    },
                    ..opts
                };
                let wrong = measure_with_options(&plan, &want_realm, &vcpus, &other).unwrap();
                assert_ne!(m.rim().unwrap(), wrong.to_vec(), "{v}");
                // The first-created vCPU marked runnable instead (the old model) is wrong too.
                if two_slots {
                    let mut first = vcpus.clone();
                    for (i, rec) in first.iter_mut().enumerate() {
                        rec.runnable = i == 0;
                    }
                    let wrong = measure_with_options(&plan, &want_realm, &first, &opts).unwrap();
                    assert_ne!(m.rim().unwrap(), wrong.to_vec(), "{v}");
                }
            }
        }
    }
}

#[test]
fn populate_needs_private_memory() {
    for v in RMI_VERSIONS {
        let data = vec![3u8; 3 * K4 as usize];
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let plan = PlanBuilder::new()
            .source(M, Role::Measured, &data)
            .build(&be.caps(), &MemoryLayout::unbounded())
            .unwrap();
        // The caller claims to have converted, but only the first page is private.
        be.io_mut().set_private(M, K4).unwrap();
        let options = DriverOptions {
            conversion: ConversionPolicy::CallerConverted,
            ..Default::default()
        };
        let err = Driver::new(&mut be)
            .with_options(options)
            .run(&plan)
            .unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        // kvm_gmem_populate: the first page done, the second not private: progress returned,
        // then EINVAL with nothing done.
        assert_eq!(report.regions[0].populated, K4, "{v}");
        assert_eq!(stop.gpa, M + K4);
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{stop}")
        };
        assert_eq!((e.kind, e.errno), (ErrorKind::Failed, Some(libc::EINVAL)));
        assert!(e.detail.contains("private"), "{}", e.detail);
        drop(be);
        assert_eq!(m.populated_bytes(), K4);
        let errnos: Vec<_> = populate_calls(&m).iter().map(|c| c.errno).collect();
        assert_eq!(errnos, vec![None, Some(libc::EINVAL)]);
        // Resumed with the driver converting: completes, nothing twice.
        let mut be = resumed(&mut m, v);
        let report = Driver::new(&mut be).resume(&plan, &report).unwrap();
        assert!(report.is_complete());
        drop(be);
        assert_eq!(m.populated_bytes(), 3 * K4);
    }
}

#[test]
fn memslot_end_gives_partial_progress_then_resume() {
    for v in RMI_VERSIONS {
        let data = SourceBuf::new(4 * K4 as usize).unwrap();
        let mut m = model(v, realm(HashAlgo::Sha256));
        // Slot 0 ends two pages into the region; slot 1 is not guest_memfd.
        m.memslots = vec![
            ModelMemslot {
                slot: 0,
                gpa: 0,
                size: 2 * M + 2 * K4,
                gmem: true,
            },
            ModelMemslot {
                slot: 1,
                gpa: 2 * M + 2 * K4,
                size: 62 * M,
                gmem: false,
            },
        ];
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let plan = PlanBuilder::new()
            .source(2 * M, Role::Measured, data.as_slice())
            .build(&be.caps(), &MemoryLayout::unbounded())
            .unwrap();
        let err = Driver::new(&mut be).run(&plan).unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        assert_eq!(report.regions[0].populated, 2 * K4, "{v}");
        assert_eq!((stop.gpa, stop.len), (2 * M + 2 * K4, 2 * K4));
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{stop}")
        };
        assert_eq!(e.errno, Some(libc::EINVAL));
        drop(be);
        // The kernel stopped at the memslot's end (progress), then found no guest_memfd slot.
        let asks: Vec<(u64, u64, Option<i32>)> = populate_calls(&m)
            .iter()
            .map(|c| (le(&c.bytes, 0), le(&c.bytes, 8), c.errno))
            .collect();
        assert_eq!(
            asks,
            vec![
                (2 * M, 4 * K4, None),
                (2 * M + 2 * K4, 2 * K4, Some(libc::EINVAL))
            ]
        );
        // The VMM makes the second slot guest_memfd-backed; resume finishes in it.
        m.memslots[1].gmem = true;
        let mut be = resumed(&mut m, v);
        let report = Driver::new(&mut be).resume(&plan, &report).unwrap();
        assert!(report.is_complete());
        drop(be);
        assert_eq!(m.populated_in(2 * M, 4 * K4), 4 * K4);
        assert!(m.calls.iter().all(|c| c.errno != Some(libc::EEXIST)));
    }
}

#[test]
fn interruption_is_retried_from_where_it_stopped() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        // 10 granules then a signal (progress returned), then a signal before anything (EINTR).
        m.faults
            .extend([Fault::Signal { after: 10 }, Fault::Signal { after: 0 }]);
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let report = Driver::new(&mut be).run(&plan).unwrap();
        assert!(report.is_complete());
        assert_eq!(report.regions[0].calls, 3);
        assert_eq!(report.regions[0].retries, 1);
        drop(be);
        let pops = populate_calls(&m);
        let errnos: Vec<_> = pops.iter().map(|c| c.errno).collect();
        assert_eq!(&errnos[..3], &[None, Some(libc::EINTR), None]);
        // Each call asked for the rest, from where the previous one stopped.
        assert_eq!(le(&pops[1].bytes, 0), 2 * M + 10 * K4);
        assert_eq!(le(&pops[2].bytes, 0), 2 * M + 10 * K4);
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

#[test]
fn rmm_refusal_stops_exactly_and_resume_completes() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        let bad = 2 * M + 5 * K4;
        m.failing.insert(bad, 1 /* RMI_ERROR_INPUT */);
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let err = Driver::new(&mut be).run(&plan).unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        assert_eq!(stop.region, 0);
        assert_eq!(stop.gpa, bad);
        assert_eq!(stop.len, 3 * M + 2 * K4 - 5 * K4);
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{stop}")
        };
        assert_eq!(e.errno, Some(libc::ENXIO));
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.detail.contains("0x205000"), "{}", e.detail);
        assert_eq!(report.regions[0].populated, 5 * K4);
        drop(be);
        assert_eq!(m.populated_in(2 * M, 4 * M), 5 * K4);
        // The first call stopped before the failing granule with progress, the second failed
        // on it with none: the RMM saw it twice.
        assert_eq!(m.rmm_errors, vec![(bad, 1), (bad, 1)]);
        // If the RMM stops refusing (firmware's business), resume completes; the granule was
        // not marked prepared, so nothing is populated twice.
        m.failing.clear();
        let mut be = resumed(&mut m, v);
        let report = Driver::new(&mut be).resume(&plan, &report).unwrap();
        assert!(report.is_complete());
        drop(be);
        assert!(m.calls.iter().all(|c| c.errno != Some(libc::EEXIST)));
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

/// `KVM_ARM_RMI_POPULATE` arguments for the page at `gpa` from `src`, unmeasured.
fn one_page_at(gpa: u64, src: &[u8]) -> KvmArmRmiPopulate {
    KvmArmRmiPopulate {
        base: gpa,
        size: K4,
        source_uaddr: src.as_ptr() as u64,
        flags: 0,
        reserved: 0,
    }
}

/// Runs a one-region plan (`data` measured at `gpa`) to completion on `be`.
fn populate_all_at(be: &mut CcaBackend<'_, &mut KernelModel>, gpa: u64, data: &[u8]) {
    let plan = PlanBuilder::new()
        .source(gpa, Role::Measured, data)
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(be).run(&plan).unwrap().is_complete());
}

#[test]
fn ebusy_after_activation_is_a_final_stop() {
    for v in RMI_VERSIONS {
        let data = SourceBuf::new(2 * K4 as usize).unwrap();
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        populate_all_at(&mut be, M, data.as_slice());
        drop(be);
        m.first_run().unwrap();
        // A VMM that did not track the activation (a fresh backend) populates again.
        let second = PlanBuilder::new()
            .source(8 * M, Role::Unmeasured, data.as_slice())
            .build(&cca_backend::cca_caps(v), &MemoryLayout::unbounded())
            .unwrap();
        let mut be = resumed(&mut m, v);
        let err = Driver::new(&mut be).run(&second).unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{stop}")
        };
        // Not "busy, try again": no retry, an unrecoverable failure naming the activation.
        assert_eq!((e.kind, e.errno), (ErrorKind::Failed, Some(libc::EBUSY)));
        assert!(!e.kind.is_retryable());
        assert!(e.unrecoverable);
        assert!(e.detail.contains("already active"), "{}", e.detail);
        assert_eq!((report.regions[0].calls, report.retries()), (1, 0));
        assert_eq!(be.state(), cca_backend::RealmState::Active);
        // The driver refuses to resume the report, and the kernel is not asked again.
        let again = Driver::new(&mut be).resume(&second, &report).unwrap_err();
        assert!(matches!(again, RunError::Unrecoverable(_)), "{again}");
        assert!(again.to_string().contains("already active"), "{again}");
        // A fresh run on the same backend is refused by the backend itself, also for good.
        let err = Driver::new(&mut be).run(&second).unwrap_err();
        let stop = err.report().unwrap().stop.clone().unwrap();
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{stop}")
        };
        assert!(e.unrecoverable && e.errno.is_none(), "{e}");
        drop(be);
        let busy = populate_calls(&m)
            .iter()
            .filter(|c| c.errno == Some(libc::EBUSY))
            .count();
        assert_eq!(busy, 1);
        assert_eq!(m.populated_in(8 * M, 2 * K4), 0);
    }
}

#[test]
fn v14_needs_the_vcpus_configured_first() {
    let data = SourceBuf::new(K4 as usize).unwrap();
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V14, 249);
    let plan = PlanBuilder::new()
        .source(M, Role::Measured, data.as_slice())
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut be).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{stop}")
    };
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(
        e.detail
            .contains("v14 creates the realm at the first populate")
            && e.detail.contains("configure"),
        "{}",
        e.detail
    );
    drop(be);
    assert!(populate_calls(&m).is_empty());
    assert_eq!(m.state, ModelRealm::None);
    // Without vCPUs, configure itself refuses.
    let mut bare = KernelModel::new(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut bare, UapiVersion::V14, 249);
    let e = be.configure(&realm(HashAlgo::Sha256)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongState {
                op: "configure",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("no vCPUs"), "{e}");
    // configure twice is refused.
    let mut be = backend(&mut m, UapiVersion::V14, &realm(HashAlgo::Sha256));
    assert!(matches!(
        be.configure(&realm(HashAlgo::Sha256)),
        Err(Error::WrongState { .. })
    ));
}

#[test]
fn unfinalized_sve_vcpus_fail_the_first_populate() {
    // v13 (configure optional): the kernel's realm_init_sve_param refuses to create the realm
    // while an SVE vCPU is not finalized; configure, then resume.
    let data = SourceBuf::new(K4 as usize).unwrap();
    let mut m = model(UapiVersion::V13, realm(HashAlgo::Sha256));
    m.vcpus.clear();
    m.add_vcpus(2, true);
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V13, 248);
    let plan = PlanBuilder::new()
        .source(M, Role::Measured, data.as_slice())
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut be).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let StopCause::Backend(e) = &report.stop.as_ref().unwrap().cause else {
        panic!()
    };
    assert_eq!(e.errno, Some(libc::EINVAL));
    assert!(e.detail.contains("SVE vCPU"), "{}", e.detail);
    assert_eq!(be.io().state, ModelRealm::None);
    let mut r = realm(HashAlgo::Sha256);
    r.sve_vl = 256;
    be.configure(&r).unwrap();
    assert!(Driver::new(&mut be)
        .resume(&plan, &report)
        .unwrap()
        .is_complete());
    drop(be);
    assert_eq!(m.created.as_ref().map(|c| c.sve_vl), Some(256));
}

#[test]
fn configure_applies_debug_and_sve_to_the_vcpus() {
    let v = UapiVersion::V14;
    let mut m = model(v, realm(HashAlgo::Sha256));
    m.vcpus.clear();
    m.add_vcpus(2, true); // host offers vq 1..=4 (512-bit vectors)
    let mut r = realm(HashAlgo::Sha256);
    r.sve_vl = 256;
    r.num_wps = 3;
    let mut be = backend(&mut m, v, &r);
    assert_eq!(be.configured(), Some(&r));
    let data = SourceBuf::new(K4 as usize).unwrap();
    let plan = PlanBuilder::new()
        .source(M, Role::Measured, data.as_slice())
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(&mut be).run(&plan).unwrap().is_complete());
    drop(be);
    // REALM_CREATE got exactly the configured parameters.
    assert_eq!(m.created.as_ref(), Some(&r));
    // SVE_VLS written with vq 1 and 2 (bits 0-1 of the 512-bit map), then finalized.
    let vls: Vec<_> = m
        .calls
        .iter()
        .filter(|c| c.request == 0x4010_AEAC && le(&c.bytes, 0) == 0x6060_0000_0015_FFFF)
        .collect();
    assert_eq!(vls.len(), 2);
    let mut want = 0x6060_0000_0015_FFFFu64.to_le_bytes().to_vec();
    want.push(0b11);
    want.resize(8 + 64, 0);
    assert_eq!(vls[0].bytes, want);
    let fins: Vec<_> = m
        .calls
        .iter()
        .filter(|c| c.request == 0x4004_AEC2)
        .map(|c| (c.vcpu, c.bytes.clone(), c.errno))
        .collect();
    assert_eq!(
        fins,
        vec![
            (Some(0), 4i32.to_le_bytes().to_vec(), None),
            (Some(1), 4i32.to_le_bytes().to_vec(), None)
        ]
    );
    // After creation the ID register is immutable (EBUSY in the kernel, set_id_reg).
    let mut b = [0u8; 8];
    m.vcpu_get_one_reg(0, uapi::KVM_REG_ID_AA64DFR0_EL1, &mut b)
        .unwrap();
    assert_eq!(
        m.vcpu_set_one_reg(0, uapi::KVM_REG_ID_AA64DFR0_EL1, &0x6u64.to_le_bytes()),
        Err(libc::EBUSY)
    );
}

#[test]
fn configure_refuses_what_the_kernel_cannot_take() {
    for v in RMI_VERSIONS {
        let try_with = |f: &dyn Fn(&mut RealmParams), sve: bool| {
            let mut m = model(v, realm(HashAlgo::Sha256));
            if sve {
                m.vcpus.clear();
                m.add_vcpus(1, true);
            }
            let mut r = realm(HashAlgo::Sha256);
            f(&mut r);
            let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
            be.configure(&r).unwrap_err()
        };
        assert_eq!(
            try_with(&|r| r.hash = HashAlgo::Sha512, false),
            Error::NotOffered {
                what: "the measurement hash algorithm",
                version: v
            }
        );
        assert!(matches!(
            try_with(&|r| r.rpv[0] = 1, false),
            Error::NotOffered {
                what: "the realm personalization value",
                ..
            }
        ));
        assert!(matches!(
            try_with(&|r| r.pmu_counters = Some(4), false),
            Error::NotOffered {
                what: "the PMU counter count",
                ..
            }
        ));
        // The model host has 6 breakpoints and 4 watchpoints: breakpoints cannot change (the
        // kernel refuses any change of BRPs), watchpoints can only be lowered.
        for bps in [2, 4, 7] {
            let e = try_with(&|r| r.num_bps = bps, false);
            assert!(
                matches!(
                    e,
                    Error::VcpuParam {
                        vcpu: 0,
                        field: "num_bps",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("has 6 breakpoints"), "{e}");
        }
        let e = try_with(&|r| r.num_bps = 7, false);
        assert!(
            matches!(
                e,
                Error::VcpuParam {
                    vcpu: 0,
                    field: "num_bps",
                    value: 7,
                    ..
                }
            ),
            "{e}"
        );
        let e = try_with(&|r| r.num_wps = 5, false);
        assert!(
            matches!(
                e,
                Error::VcpuParam {
                    field: "num_wps",
                    ..
                }
            ),
            "{e}"
        );
        // SVE asked of a vCPU without it, SVE off on a vCPU with it, a length the host lacks.
        let e = try_with(&|r| r.sve_vl = 256, false);
        assert!(e.to_string().contains("without KVM_ARM_VCPU_SVE"), "{e}");
        let e = try_with(&|_| {}, true);
        assert!(
            e.to_string().contains("initialised with KVM_ARM_VCPU_SVE"),
            "{e}"
        );
        let e = try_with(&|r| r.sve_vl = 640, true);
        assert!(e.to_string().contains("does not offer"), "{e}");
        // Invalid parameters are refused before any ioctl.
        let e = try_with(&|r| r.num_bps = 1, false);
        assert!(
            matches!(
                e,
                Error::InvalidParam {
                    field: "num_bps",
                    ..
                }
            ),
            "{e}"
        );
    }
}

/// Mainline `arch/arm64/kvm/sys_regs.c` (6.12 through 7.3): `ID_AA64DFR0_EL1`'s writable mask
/// leaves out `BRPs` and `CTX_CMPs` ("just prevent changes to BRPs and CTX_CMPs altogether"), so
/// `arm64_check_features` refuses any change of them (`EINVAL`); `WRPs` may be lowered. The
/// model refuses as the kernel does, and `configure` never writes another breakpoint count: the
/// default `RealmParams` (2 breakpoints) is refused by name on a host with 6, before any write.
#[test]
fn the_kernel_refuses_any_change_of_brps_and_ctx_cmps() {
    use cca_backend::testing::MODEL_HOST_DFR0 as HOST;
    for v in RMI_VERSIONS {
        let mut m = model(v, realm(HashAlgo::Sha256));
        let id = uapi::KVM_REG_ID_AA64DFR0_EL1;
        let with = |shift: u32, f: u64| (HOST & !(0xf << shift)) | (f << shift);
        for val in [
            with(uapi::DFR0_BRPS_SHIFT, 3),     // fewer breakpoints
            with(uapi::DFR0_CTX_CMPS_SHIFT, 0), // fewer context-aware ones
            with(uapi::DFR0_BRPS_SHIFT, 7),     // more
            with(uapi::DFR0_WRPS_SHIFT, 5),     // more watchpoints than the host
            with(uapi::DFR0_WRPS_SHIFT, 0),     // WRPs 0 (v14 39/44)
        ] {
            assert_eq!(
                m.vcpu_set_one_reg(0, id, &val.to_le_bytes()),
                Err(libc::EINVAL),
                "{v}: {val:#x}"
            );
        }
        assert_eq!(m.dfr0, HOST);
        // Lowering WRPs alone is taken.
        let lowered = with(uapi::DFR0_WRPS_SHIFT, 1);
        assert_eq!(m.vcpu_set_one_reg(0, id, &lowered.to_le_bytes()), Ok(()));
        assert_eq!(m.dfr0, lowered);
        // The default RealmParams: refused by configure, nothing written.
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let e = be
            .configure(&RealmParams::new(HashAlgo::Sha256, 40))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::VcpuParam {
                    field: "num_bps",
                    value: 2,
                    ..
                }
            ),
            "{e}"
        );
        drop(be);
        assert!(m.calls.iter().all(|c| c.request != uapi::KVM_SET_ONE_REG));
        // The host's count (read from the register) is what configure takes and the realm gets.
        let mut r = RealmParams::new(HashAlgo::Sha256, 40);
        r.set_debug_from_id_aa64dfr0(HOST);
        assert_eq!((r.num_bps, r.num_wps), (6, 4));
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        be.configure(&r).unwrap();
        drop(be);
        assert_eq!(m.dfr0, HOST);
    }
}

#[test]
fn vcpu_ioctl_failures_name_the_vcpu() {
    let mut m = model(UapiVersion::V12, realm(HashAlgo::Sha256));
    // vCPU 1 finalized SVE already: the SVE_VLS write is refused (EPERM, set_sve_vls).
    m.vcpus.clear();
    m.add_vcpus(2, true);
    m.vcpu_finalize(1, uapi::KVM_ARM_VCPU_SVE).unwrap();
    assert_eq!(m.vcpu_finalize(1, uapi::KVM_ARM_VCPU_SVE), Err(libc::EPERM));
    assert_eq!(m.vcpu_finalize(1, 3), Err(libc::EINVAL));
    let mut r = realm(HashAlgo::Sha256);
    r.sve_vl = 512;
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V12, 247);
    let e = be.configure(&r).unwrap_err();
    assert_eq!(
        e,
        Error::VcpuIoctl {
            vcpu: 1,
            op: "KVM_SET_ONE_REG(KVM_REG_ARM64_SVE_VLS)",
            errno: libc::EPERM
        }
    );
    assert!(be.configured().is_none());
}

#[test]
fn wrong_request_numbers_and_non_realm_vms_answer_as_arm64() {
    let data = SourceBuf::new(K4 as usize).unwrap();
    // A v14 kernel asked with v12's number, a v12 kernel with v13's: arm64's
    // kvm_arch_vm_ioctl default, EINVAL.
    for (kernel, spoken) in [
        (UapiVersion::V14, UapiVersion::V12),
        (UapiVersion::V12, UapiVersion::V13),
    ] {
        let mut m = model(kernel, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, spoken, &realm(HashAlgo::Sha256));
        let p = be.make_private(M, K4);
        assert!(p.result.is_ok());
        let p = be.populate(&ChunkRequest {
            region: 0,
            gpa: M,
            len: K4,
            role: Role::Measured,
            source: ChunkSource::Bytes(data.as_slice()),
        });
        let e = p.result.unwrap_err();
        assert_eq!((p.done, e.errno), (0, Some(libc::EINVAL)));
        assert!(e.detail.contains("KVM_ARM_RMI_POPULATE"), "{}", e.detail);
        drop(be);
        assert_eq!(m.state, ModelRealm::None, "nothing created");
    }
    // A VM that is not a realm: v12 EPERM, v13/v14 ENXIO; and no private memory (EINVAL).
    for (v, errno) in [
        (UapiVersion::V12, libc::EPERM),
        (UapiVersion::V13, libc::ENXIO),
        (UapiVersion::V14, libc::ENXIO),
    ] {
        let mut m = model(v, realm(HashAlgo::Sha256));
        m.is_realm = false;
        let mut args = KvmArmRmiPopulate {
            base: M,
            size: K4,
            source_uaddr: data.as_slice().as_ptr() as u64,
            flags: 0,
            reserved: 0,
        };
        assert_eq!(
            m.rmi_populate(v.populate_request(), &mut args),
            Err(errno),
            "{v}"
        );
        assert_eq!(m.set_private(M, K4), Err(libc::EINVAL));
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let p = be.make_private(M, K4);
        let e = p.result.unwrap_err();
        assert_eq!(e.errno, Some(libc::EINVAL));
        assert!(e
            .detail
            .contains("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [0x100000..+0x1000)"));
    }
}

#[test]
fn kernel_argument_checks() {
    for v in RMI_VERSIONS {
        let data = SourceBuf::new(2 * K4 as usize).unwrap();
        let src = data.as_slice().as_ptr() as u64;
        let mut m = model(v, realm(HashAlgo::Sha256));
        m.set_private(0, 64 * M).unwrap();
        let nr = v.populate_request();
        assert_eq!(nr.number(), populate_nr(v));
        let call = |m: &mut KernelModel, base, size, src, flags, reserved| {
            let mut a = KvmArmRmiPopulate {
                base,
                size,
                source_uaddr: src,
                flags,
                reserved,
            };
            m.rmi_populate(nr, &mut a).map(|r| (r, a))
        };
        assert_eq!(call(&mut m, M, K4, src, 0, 1), Err(libc::EINVAL));
        assert_eq!(call(&mut m, M, K4, src, 2, 0), Err(libc::EINVAL));
        assert_eq!(call(&mut m, M + 1, K4, src, 0, 0), Err(libc::EINVAL));
        assert_eq!(call(&mut m, M, K4 + 1, src, 0, 0), Err(libc::EINVAL));
        // From v13 the source must be page aligned; v12 does not check it.
        let unaligned = call(&mut m, M, K4, src + 1, 0, 0);
        if v == UapiVersion::V12 {
            assert_eq!(
                unaligned,
                Ok((
                    K4 as i32,
                    KvmArmRmiPopulate {
                        base: M,
                        size: K4,
                        source_uaddr: src + 1,
                        flags: 0,
                        reserved: 0
                    }
                ))
            );
        } else {
            assert_eq!(unaligned, Err(libc::EINVAL));
        }
        // The realm exists from the first call that passed the argument checks (v12's
        // unaligned one; none yet on v13/v14).
        let want = if v == UapiVersion::V12 {
            ModelRealm::New
        } else {
            ModelRealm::None
        };
        assert_eq!(m.state, want);
        // No page: EINVAL (kvm_gmem_populate's npages <= 0); outside any memslot: EINVAL.
        assert_eq!(call(&mut m, 2 * M, 0, src, 0, 0), Err(libc::EINVAL));
        assert_eq!(call(&mut m, 128 * M, K4, src, 0, 0), Err(libc::EINVAL));
        // In/out (v13/v14) or bytes returned (v12).
        let r = call(&mut m, 2 * M, 2 * K4, src, 1, 0).unwrap();
        if v == UapiVersion::V12 {
            assert_eq!(r.0, 2 * K4 as i32);
            assert_eq!((r.1.base, r.1.size), (2 * M, 2 * K4));
        } else {
            assert_eq!(r.0, 0);
            assert_eq!(
                (r.1.base, r.1.size, r.1.source_uaddr),
                (2 * M + 2 * K4, 0, src + 2 * K4)
            );
        }
        // Already populated: EEXIST on v12 (kvm_gmem_populate's "already prepared" check);
        // ENXIO on v13/v14, whose base has no such check (realm_data_map_init re-delegates).
        let again = if v == UapiVersion::V12 {
            libc::EEXIST
        } else {
            libc::ENXIO
        };
        assert_eq!(call(&mut m, 2 * M, K4, src, 0, 0), Err(again), "{v}");
        // KVM_SET_MEMORY_ATTRIBUTES argument checks.
        assert_eq!(m.set_private(M, 0), Err(libc::EINVAL));
        assert_eq!(m.set_private(M + 1, K4), Err(libc::EINVAL));
        assert_eq!(m.set_private(u64::MAX - K4 + 1, 2 * K4), Err(libc::EINVAL));
    }
}

#[test]
fn v12_first_run_initialises_ripas_in_memslot_walk_order() {
    // kvm_for_each_memslot walks the id hash: hash_32(id, 7) = (id * 0x61C88647) >> 25, so
    // slot 1 lands in bucket 48 and slot 3 in bucket 18 (3 * 0x61C88647 = 0x2_5599_2D5 mod
    // 2^32 = 0x2559_92D5, >> 25 = 18): slot 3 is walked first.
    let slots = [
        ModelMemslot {
            slot: 1,
            gpa: 0,
            size: 16 * M,
            gmem: true,
        },
        ModelMemslot {
            slot: 3,
            gpa: 16 * M,
            size: 16 * M,
            gmem: true,
        },
    ];
    assert_eq!(memslot_walk_order(&slots), vec![1, 0]);
    for v in RMI_VERSIONS {
        let data = SourceBuf::new(K4 as usize).unwrap();
        let mut m = model(v, realm(HashAlgo::Sha256));
        m.memslots = slots.to_vec();
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let plan = PlanBuilder::new()
            .source(M, Role::Unmeasured, data.as_slice())
            .build(&be.caps(), &MemoryLayout::unbounded())
            .unwrap();
        assert!(Driver::new(&mut be).run(&plan).unwrap().is_complete());
        drop(be);
        m.first_run().unwrap();
        let mut d = RimDigest::new(&realm(HashAlgo::Sha256)).unwrap();
        d.data_granule_hashed(M, None);
        d.rec(&boot_rec());
        d.rec(&second_rec());
        if v.rmm_rules()[0] == RmmVersion::V1_0 {
            // RMM 1.0 rules (v12; v13's own firmware branch, the model's default for v13)
            // measure RTT_INIT_RIPAS: slot 3 first, then slot 1 around the data.
            for (b, t) in [(16 * M, 32 * M), (0, M), (M + K4, 16 * M)] {
                d.ripas_range(b, t).unwrap();
            }
        }
        assert_eq!(m.rim().unwrap(), d.current().to_vec(), "{v}");
        // Running again is a no-op (state >= ACTIVE); populate is EBUSY from now on.
        m.first_run().unwrap();
        let mut a = one_page_at(2 * M, data.as_slice());
        assert_eq!(
            m.rmi_populate(v.populate_request(), &mut a),
            Err(libc::EBUSY)
        );
    }
}

/// A realm needs an in-kernel vGIC. `kvm_activate_realm` refuses the first `KVM_RUN` of a VM
/// without one (`EOPNOTSUPP`): v12 11/46 after `realm_ensure_created` and after marking the
/// realm dead, so the realm is dead for good; the later form checks first, and the realm
/// stays populatable. The backend, told there is none (`CcaIoctl::in_kernel_vgic`), refuses
/// `activate` before the VMM gets to `KVM_RUN`.
#[test]
fn a_realm_needs_an_in_kernel_vgic() {
    let data = SourceBuf::new(K4 as usize).unwrap();
    for v in RMI_VERSIONS {
        let mut m = model(v, realm(HashAlgo::Sha256));
        m.vgic = false;
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        populate_all_at(&mut be, M, data.as_slice());
        let e = be.activate().unwrap_err();
        assert!(matches!(e, Error::WrongState { op: "activate", .. }), "{e}");
        assert!(e.to_string().contains("in-kernel vGIC"), "{e}");
        assert_eq!(
            be.state(),
            cca_backend::RealmState::New,
            "still populatable"
        );
        drop(be);
        // A VMM that runs anyway: EOPNOTSUPP.
        assert_eq!(m.first_run(), Err(libc::EOPNOTSUPP), "{v}");
        let mut a = one_page_at(2 * M, data.as_slice());
        m.set_private(2 * M, K4).unwrap();
        if v == UapiVersion::V12 {
            // Dead for good: the vGIC added later does not help, populate is ENXIO.
            assert_eq!(m.state, ModelRealm::Dead);
            m.vgic = true;
            assert_eq!(m.first_run(), Ok(()));
            assert_eq!(m.state, ModelRealm::Dead);
            assert_eq!(
                m.rmi_populate(v.populate_request(), &mut a),
                Err(libc::ENXIO)
            );
        } else {
            // Checked before anything: still new; with the vGIC the launch goes on.
            assert_eq!(m.state, ModelRealm::New);
            assert!(m.rmi_populate(v.populate_request(), &mut a).is_ok());
            m.vgic = true;
            assert_eq!(m.first_run(), Ok(()));
            assert_eq!(m.state, ModelRealm::Active);
        }
    }
}

/// A run-time RIPAS change reaches the VMM as `KVM_EXIT_MEMORY_FAULT` (v12 16/46
/// `rec_exit_ripas_change`: flags `KVM_MEMORY_EXIT_FLAG_PRIVATE` = 0x8 for RAM, gpa = base,
/// size = top - base); `RipasChange` decodes exactly that, and a range outside the protected
/// half never reaches the VMM (`EINVAL`). Only a running (active) realm exits so.
#[test]
fn a_runtime_ripas_change_reaches_the_vmm_as_a_memory_fault() {
    use cca_backend::{Ripas, RipasChange};
    let mut m = model(UapiVersion::V12, realm(HashAlgo::Sha256));
    assert_eq!(
        m.ripas_change_exit(0, K4, true),
        Err(libc::EINVAL),
        "not active"
    );
    m.first_run().unwrap();
    let [flags, gpa, size] = m.ripas_change_exit(M, 3 * M, true).unwrap();
    assert_eq!((flags, gpa, size), (0x8, M, 2 * M));
    assert_eq!(
        RipasChange::from_memory_fault(flags, gpa, size).unwrap(),
        RipasChange {
            gpa: M,
            size: 2 * M,
            ripas: Ripas::Ram
        }
    );
    let [flags, gpa, size] = m.ripas_change_exit(M, M + K4, false).unwrap();
    assert_eq!(
        RipasChange::from_memory_fault(flags, gpa, size)
            .unwrap()
            .ripas,
        Ripas::Empty
    );
    // 40-bit IPA: the protected half ends at 1 << 39.
    let top = 1u64 << 39;
    assert_eq!(
        m.ripas_change_exit(top - K4, top + K4, true),
        Err(libc::EINVAL)
    );
    assert!(m.ripas_change_exit(top - K4, top, true).is_ok());
}

#[test]
fn first_run_failures_leave_the_realm_dead() {
    for v in RMI_VERSIONS {
        let mut m = model(v, realm(HashAlgo::Sha256));
        // kvm_create_rec refuses a vCPU without PSCI 0.2; the realm was marked dead first.
        m.vcpus[1].psci_0_2 = false;
        assert_eq!(m.first_run(), Err(libc::EINVAL));
        assert_eq!(m.state, ModelRealm::Dead);
        // Dead realms are not revived (>= ACTIVE check) and refuse populate with ENXIO.
        assert_eq!(m.first_run(), Ok(()));
        let mut a = KvmArmRmiPopulate {
            base: M,
            size: K4,
            source_uaddr: K4,
            flags: 0,
            reserved: 0,
        };
        assert_eq!(
            m.rmi_populate(v.populate_request(), &mut a),
            Err(libc::ENXIO)
        );
    }
    // Creation at the first run fails like at the first populate.
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    m.vcpus.clear();
    m.add_vcpus(1, true);
    assert_eq!(m.first_run(), Err(libc::EINVAL));
    assert_eq!(m.state, ModelRealm::None);
}

#[test]
fn a_granule_is_never_populated_twice() {
    let data = vec![1u8; 8192];
    for v in RMI_VERSIONS {
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        assert!(be.make_private(0x10_0000, 8192).result.is_ok());
        let chunk = ChunkRequest {
            region: 0,
            gpa: 0x10_0000,
            len: 8192,
            role: Role::Measured,
            source: ChunkSource::Bytes(&data),
        };
        assert_eq!(be.populate(&chunk).done, 8192);
        let again = be.populate(&chunk);
        assert_eq!(again.done, 0);
        let e = again.result.unwrap_err();
        // v12: EEXIST; v13/v14: ENXIO (realm_data_map_init delegates the granule again, which
        // fails), which the backend names among its causes.
        if v == UapiVersion::V12 {
            assert_eq!(e.errno, Some(libc::EEXIST));
            assert!(e.detail.contains("already populated"), "{}", e.detail);
        } else {
            assert_eq!(e.errno, Some(libc::ENXIO));
            assert!(
                e.detail.contains("already populated (realm_data_map_init"),
                "{}",
                e.detail
            );
        }
        assert!(e.detail.contains("[0x100000..+0x2000)"), "{}", e.detail);
    }
}

/// Not the model: a kernel that answers what no version of the series answers, to check the
/// backend does not believe it.
struct Liar {
    advance: u64,
}

impl CcaIoctl for Liar {
    fn rmi_populate(
        &mut self,
        _: PopulateRequest,
        args: &mut KvmArmRmiPopulate,
    ) -> Result<i32, i32> {
        args.base += self.advance; // base advanced, size not
        Ok(0)
    }
    fn set_private(&mut self, _: u64, _: u64) -> Result<(), i32> {
        Ok(())
    }
}

#[test]
fn impossible_answers_are_errors_and_no_progress_is_not_spun_on() {
    let data = SourceBuf::new(8192).unwrap();
    let mut be = CcaBackend::with_version(Liar { advance: 4096 }, UapiVersion::V13, 248);
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0,
        len: 8192,
        role: Role::Unmeasured,
        source: ChunkSource::Bytes(data.as_slice()),
    });
    assert_eq!(p.done, 0);
    assert!(p.result.unwrap_err().detail.contains("not progress"));
    // Success without progress (no series version does it): the driver stops after two.
    let mut be = CcaBackend::with_version(Liar { advance: 0 }, UapiVersion::V13, 248);
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, data.as_slice())
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut be).run(&plan).unwrap_err();
    let report = err.report().unwrap();
    assert!(matches!(
        report.stop.as_ref().unwrap().cause,
        StopCause::NoProgress { attempts: 2 }
    ));
}

#[test]
fn in_place_is_refused_unless_staged() {
    let v = UapiVersion::V14;
    let be = CcaBackend::with_version(model(v, realm(HashAlgo::Sha256)), v, 249);
    let err = PlanBuilder::new()
        .in_place(0x1000, 0x2000, Role::Measured)
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap_err();
    assert!(matches!(
        err,
        PlanError::InPlaceUnsupported { region: 0, .. }
    ));

    // Opted in: the backend copies the in-place bytes into its own source buffer first.
    let guest = pattern(0x3000, 5);
    let read = |gpa: u64, buf: &mut [u8]| -> Result<(), String> {
        let off = (gpa - 0x1000) as usize;
        let src = guest.get(off..off + buf.len()).ok_or("outside the image")?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let mut m = model(v, realm(HashAlgo::Sha256));
    let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256)).stage_in_place(Box::new(read));
    assert!(be.caps().in_place);
    let plan = PlanBuilder::new()
        .in_place(0x1000, 0x3000, Role::Measured)
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(&mut be).run(&plan).unwrap().is_complete());
    drop(be);
    for (i, page) in guest.chunks(4096).enumerate() {
        let g = m.ledger[&(0x1000 + i as u64 * K4)];
        assert_eq!(g.content, Some(hash(HashAlgo::Sha256, page)));
    }
    let rim = measure_with(&plan, &realm(HashAlgo::Sha256), &[], Some(&read)).unwrap();
    assert_eq!(m.rim().unwrap(), rim.to_vec());
    // Without a reader, measuring in-place content is refused, naming the region.
    let e = measure(&plan, &realm(HashAlgo::Sha256), &[]).unwrap_err();
    assert!(e.to_string().contains("region 0 [0x1000..+0x3000)"), "{e}");
    // Without a stager the backend refuses the chunk.
    let mut m = model(v, realm(HashAlgo::Sha256));
    let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0x1000,
        len: 0x1000,
        role: Role::Measured,
        source: ChunkSource::InPlace,
    });
    assert_eq!(p.result.unwrap_err().kind, ErrorKind::Unsupported);
}

#[test]
fn refused_roles_reach_no_ioctl() {
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = backend(&mut m, UapiVersion::V14, &realm(HashAlgo::Sha256));
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0,
        len: 4096,
        role: Role::Zero,
        source: ChunkSource::Zero,
    });
    assert_eq!(p.result.unwrap_err().kind, ErrorKind::Unsupported);
    assert_eq!(be.page_type(Role::Zero), "refused");
    drop(be);
    assert!(populate_calls(&m).is_empty());
}

#[test]
fn populate_struct_matches_kernel_abi_bytes() {
    let args = KvmArmRmiPopulate {
        base: 0x8000_0000,
        size: 0x20_0000,
        source_uaddr: 0x7f00_0000_0000,
        flags: uapi::KVM_ARM_RMI_POPULATE_FLAGS_MEASURE,
        reserved: 0,
    };
    assert_eq!(
        args.to_bytes(),
        [
            0x00, 0x00, 0x00, 0x80, 0, 0, 0, 0, // base
            0x00, 0x00, 0x20, 0x00, 0, 0, 0, 0, // size
            0x00, 0x00, 0x00, 0x00, 0x00, 0x7f, 0, 0, // source_uaddr
            1, 0, 0, 0, // flags
            0, 0, 0, 0, // reserved
        ]
    );
}

#[test]
fn run_error_is_typed_for_mismatched_caps() {
    // A plan validated against the verifier's CCA_CAPS runs on a backend without staging.
    let data = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, &data)
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = backend(&mut m, UapiVersion::V14, &realm(HashAlgo::Sha256))
        .stage_in_place(Box::new(|_, _| Ok(())));
    assert!(matches!(
        Driver::new(&mut be).run(&plan),
        Err(RunError::CapsMismatch { .. })
    ));
}

#[test]
fn retries_exhausted_stop_then_resume() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        // Progress, then more interruptions in a row than the driver accepts.
        m.faults.extend([
            Fault::Signal { after: 3 },
            Fault::Signal { after: 0 },
            Fault::Signal { after: 0 },
            Fault::Signal { after: 0 },
        ]);
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let options = DriverOptions {
            max_retries: 2,
            ..Default::default()
        };
        let err = Driver::new(&mut be)
            .with_options(options.clone())
            .run(&plan)
            .unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        assert_eq!(stop.phase, Phase::Populate);
        let StopCause::RetriesExhausted { attempts: 3, last } = &stop.cause else {
            panic!("{stop}")
        };
        assert_eq!(last.errno, Some(libc::EINTR));
        assert_eq!(stop.gpa, 2 * M + 3 * K4);
        assert_eq!(report.regions[0].populated, 3 * K4);
        drop(be);
        assert_eq!(m.populated_bytes(), 3 * K4);
        let mut be = resumed(&mut m, v);
        let report = Driver::new(&mut be)
            .with_options(options)
            .resume(&plan, &report)
            .unwrap();
        assert!(report.is_complete());
        drop(be);
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

#[test]
fn declared_caps() {
    use cc_populate::{Conversion, RoleSet};
    let c = cca_backend::CCA_CAPS;
    assert!(c.check().is_ok());
    assert_eq!(c.granule, 4096);
    assert_eq!(c.max_chunk, 1 << 30);
    assert_eq!(c.cut_alignment(), 1 << 30);
    assert!(!c.in_place);
    // kvm_gmem_populate needs the range private first.
    assert_eq!(c.conversion, Conversion::BeforePopulate);
    assert_eq!(
        c.roles,
        [Role::Measured, Role::Unmeasured, Role::Ripas]
            .into_iter()
            .collect::<RoleSet>()
    );
    for v in RMI_VERSIONS {
        let be = CcaBackend::with_version(model(v, realm(HashAlgo::Sha256)), v, v.series_cap());
        assert_eq!(be.caps(), c);
        assert_eq!(be.page_type(Role::Ripas), "RTT_INIT_RIPAS");
        assert_eq!(be.version(), v);
    }
}
