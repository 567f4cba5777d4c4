//! The backend driven by the cc-populate driver through the model of the CCA series
//! (`testing::KernelModel`, which cites the patches it follows): exact bytes sent, exact reports
//! against the model's ledger, private memory, memslot ends, interruption, RMM errors, the
//! launch order and the end of population at the first `KVM_RUN`, per series version.

use std::collections::BTreeMap;

use cc_populate::{
    Backend, ChunkRequest, ChunkSource, ConversionPolicy, Driver, DriverOptions, ErrorKind,
    MemoryLayout, Phase, Plan, PlanBuilder, PlanError, Role, RunError, SourceBuf, StopCause,
};
use cca_backend::testing::{memslot_walk_order, Fault, KernelModel, ModelMemslot, ModelRealm};
use cca_backend::uapi::{self, KvmArmRmiPopulate};
use cca_backend::{
    hash, measure, measure_with, measure_with_options, Activation, CcaBackend, CcaIoctl, Error,
    HashAlgo, MeasureOptions, RealmParams, RecParams, RimDigest, RmmVersion, UapiVersion,
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

fn realm(hash: HashAlgo) -> RealmParams {
    RealmParams::new(hash, 40)
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
        want_realm.num_bps = 4;
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, v, &want_realm);
        let plan = plan(&img, &um[r], true, &be.caps());
        let report = Driver::new(&mut be).run(&plan).unwrap();
        assert!(report.is_complete(), "{v}: {report}");
        assert_eq!(be.activate().unwrap(), Activation::OnFirstRun);
        let caps = be.caps();
        drop(be);

        // configure: per vCPU, ID_AA64DFR0_EL1 read, written with BRPs = 3, WRPs = 1 and
        // CTX_CMPs = 1 kept (the model host: 0x6 | 5 << 12 | 3 << 20 | 1 << 28), then SVE_VLS
        // read (ENOENT: no SVE).
        let dfr0 = 0x6u64 | (3 << 12) | (1 << 20) | (1 << 28);
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
        let want_rim = if v == UapiVersion::V12 {
            // RMM 1.0 (v12): REALM_CREATE, DATA in populate order, the runnable REC, then
            // RTT_INIT_RIPAS over the holes.
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
            // RMM 2.0 (v13/v14): RTT_INIT_RIPAS is not measured.
            measure(&no_ripas, &want_realm, &[boot_rec(), second_rec()]).unwrap()
        };
        assert_eq!(m.rim().unwrap(), want_rim, "{v}");
    }
}

/// The RIM the model's RMM computes over a whole launch (configure, the driver's run, the first
/// `KVM_RUN`, in the order the kernel issues the RMI calls) is the RIM `measure_with_options`
/// gives for the same plan, the realm parameters `configure` was given and one `RecParams` per
/// vCPU, with `MeasureOptions::for_series` of the version: v12 RMM 1.0 in the `SeriesV12`
/// order, v13/v14 RMM 2.0 in the planned order. One memslot without SVE, and two memslots
/// (walked slot 3 first) with SVE vCPUs and lowered debug counts.
#[test]
fn model_rim_after_launch_equals_measure_for_the_series() {
    let img = image();
    let mut um = Vec::new();
    let r = unaligned(&mut um, &img.unmeasured);
    for v in RMI_VERSIONS {
        assert_eq!(
            MeasureOptions::for_series(v).rmm,
            if v == UapiVersion::V12 {
                RmmVersion::V1_0
            } else {
                RmmVersion::V2_0
            }
        );
        for two_slots in [false, true] {
            let mut m = model(v, realm(HashAlgo::Sha256));
            let mut want_realm = realm(HashAlgo::Sha256);
            want_realm.num_bps = 4;
            want_realm.num_wps = 3;
            // (gpa, size) of the memslots in the order the kernel walks them.
            let walk: Vec<(u64, u64)> = if two_slots {
                m.memslots.clear();
                m.add_memslot(1, 0, 32 * M, true);
                m.add_memslot(3, 32 * M, 32 * M, true);
                m.vcpus.clear();
                m.add_vcpus(3, true);
                m.vcpus[0].pc = 2 * M;
                m.vcpus[0].gprs[0] = 0x4000_0000;
                m.vcpus[2].pc = 0x1234_5000;
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
                .enumerate()
                .map(|(i, c)| RecParams {
                    pc: c.pc,
                    gprs: c.gprs,
                    runnable: i == 0,
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
            drop(be);
            m.first_run().unwrap();
            assert_eq!(m.created.as_ref(), Some(&want_realm), "{v}");
            let opts = MeasureOptions::for_series(v);
            let want = measure_with_options(&plan, &want_realm, &vcpus, &opts).unwrap();
            assert_eq!(m.rim().unwrap(), want, "{v}, two memslots: {two_slots}");
            // The other version's rules give another RIM: the comparison can fail.
            let other = MeasureOptions {
                rmm: if opts.rmm == RmmVersion::V1_0 {
                    RmmVersion::V2_0
                } else {
                    RmmVersion::V1_0
                },
                ..opts
            };
            let wrong = measure_with_options(&plan, &want_realm, &vcpus, &other).unwrap();
            assert_ne!(m.rim().unwrap(), wrong, "{v}");
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

#[test]
fn ebusy_after_activation_is_a_final_stop() {
    for v in RMI_VERSIONS {
        let data = SourceBuf::new(2 * K4 as usize).unwrap();
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = backend(&mut m, v, &realm(HashAlgo::Sha256));
        let first = PlanBuilder::new()
            .source(M, Role::Measured, data.as_slice())
            .build(&be.caps(), &MemoryLayout::unbounded())
            .unwrap();
        assert!(Driver::new(&mut be).run(&first).unwrap().is_complete());
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
    r.num_bps = 2;
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
        // The model host has 6 breakpoints and 4 watchpoints: only lowering is possible.
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
    // v9 has no such ioctl.
    let mut m = model(UapiVersion::EnableCap, realm(HashAlgo::Sha256));
    let mut args = KvmArmRmiPopulate::default();
    assert_eq!(m.rmi_populate(0xC020_AED7, &mut args), Err(libc::EINVAL));
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
        assert_eq!(m.rmi_populate(populate_nr(v), &mut args), Err(errno), "{v}");
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
        let nr = populate_nr(v);
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
        // Already populated: EEXIST.
        assert_eq!(call(&mut m, 2 * M, K4, src, 0, 0), Err(libc::EEXIST));
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
        if v == UapiVersion::V12 {
            // RMM 1.0 measures RTT_INIT_RIPAS: slot 3 first, then slot 1 around the data.
            for (b, t) in [(16 * M, 32 * M), (0, M), (M + K4, 16 * M)] {
                d.ripas_range(b, t).unwrap();
            }
        }
        assert_eq!(m.rim().unwrap(), d.current(), "{v}");
        // Running again is a no-op (state >= ACTIVE); populate is EBUSY from now on.
        m.first_run().unwrap();
        let mut a = KvmArmRmiPopulate {
            base: 2 * M,
            size: K4,
            source_uaddr: data.as_slice().as_ptr() as u64,
            flags: 0,
            reserved: 0,
        };
        assert_eq!(m.rmi_populate(populate_nr(v), &mut a), Err(libc::EBUSY));
    }
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
        assert_eq!(m.rmi_populate(populate_nr(v), &mut a), Err(libc::ENXIO));
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
        assert_eq!(e.errno, Some(libc::EEXIST));
        assert!(e.detail.contains("[0x100000..+0x2000)"), "{}", e.detail);
    }
}

/// Not the model: a kernel that answers what no version of the series answers, to check the
/// backend does not believe it.
struct Liar {
    advance: u64,
}

impl CcaIoctl for Liar {
    fn rmi_populate(&mut self, _: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        args.base += self.advance; // base advanced, size not
        Ok(0)
    }
    fn rme_enable_cap(&mut self, _: u32, _: u64, _: cca_backend::RmeArg<'_>) -> Result<(), i32> {
        Err(libc::ENOTTY)
    }
    fn write_shared_alias(&mut self, _: u64, _: &[u8]) -> Result<(), i32> {
        Err(libc::ENOTTY)
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
fn legacy_enable_cap_launch_bytes_and_rim() {
    let mut r = realm(HashAlgo::Sha512);
    r.rpv = [0x42; 64];
    let img = image();
    let mut m = model(UapiVersion::EnableCap, r.clone());
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::EnableCap, 243);
    be.configure(&r).unwrap();
    let plan = plan(&img, &img.unmeasured, true, &be.caps());
    let report = Driver::new(&mut be).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(be.activate().unwrap(), Activation::Activated);
    drop(be);
    assert_eq!(m.state, ModelRealm::Active);
    assert_eq!(m.rpv, [0x42; 64]);
    assert_eq!(m.hash, HashAlgo::Sha512);
    let subs: Vec<_> = m.calls.iter().map(|c| c.enable_cap.unwrap()).collect();
    assert_eq!(
        subs,
        vec![
            (243, 0), // CONFIG_REALM (RPV)
            (243, 0), // CONFIG_REALM (HASH_ALGO)
            (243, 1), // CREATE_REALM
            (243, 2), // INIT_RIPAS_REALM [0, 64 MiB)
            (243, 3), // POPULATE_REALM [2 MiB, 4 MiB)
            (243, 3), // POPULATE_REALM [4 MiB, 5 MiB + 8 KiB)
            (243, 3), // POPULATE_REALM unmeasured 12 KiB
            (243, 3), // POPULATE_REALM zeros 8 KiB
            (243, 4), // ACTIVATE_REALM
        ]
    );
    assert!(m
        .calls
        .iter()
        .all(|c| c.request == 0x4068_AEA3 && c.errno.is_none()));
    // CONFIG_REALM(HASH_ALGO): cfg = 1, hash_algo = 1 (SHA-512), the rest of the union zero.
    let mut want = vec![1, 0, 0, 0, 1, 0, 0, 0];
    want.resize(260, 0);
    assert_eq!(m.calls[1].bytes, want);
    // CONFIG_REALM(RPV): cfg = 0, the 64 RPV bytes.
    assert_eq!(&m.calls[0].bytes[..4], &[0, 0, 0, 0]);
    assert!(m.calls[0].bytes[4..68].iter().all(|b| *b == 0x42));
    // INIT_RIPAS_REALM: base 0, size 64 MiB, reserved zero.
    let mut want = 0u64.to_le_bytes().to_vec();
    want.extend_from_slice(&(64 * M).to_le_bytes());
    want.extend_from_slice(&[0; 16]);
    assert_eq!(m.calls[3].bytes, want);
    // POPULATE_REALM: base, size, flags = MEASURE, reserved zero.
    let mut want = (2 * M).to_le_bytes().to_vec();
    want.extend_from_slice(&(2 * M).to_le_bytes());
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(&[0; 12]);
    assert_eq!(m.calls[4].bytes, want);
    check_ledger(&m, &img, HashAlgo::Sha512);
    // This flow is RMM 1.0's: the model's RMM RIM is the offline RIM, ripas included.
    m.create_rec(&boot_rec());
    assert_eq!(m.rim().unwrap(), measure(&plan, &r, &[boot_rec()]).unwrap());
    let v9 = MeasureOptions::for_series(UapiVersion::EnableCap);
    let want = measure_with_options(&plan, &r, &[boot_rec()], &v9).unwrap();
    assert_eq!(m.rim().unwrap(), want);
    // v9 converts nothing, has no KVM_RUN step in the model, and no RMI populate ioctl.
    assert_eq!(m.first_run(), Ok(()));
    assert_eq!(m.set_private(0, K4), Err(libc::EINVAL));
}

#[test]
fn legacy_failure_says_the_range_may_be_populated() {
    let r = realm(HashAlgo::Sha256);
    let img = image();
    let mut m = model(UapiVersion::EnableCap, r.clone());
    m.failing.insert(4 * M + 3 * K4, 3);
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::EnableCap, 243);
    be.configure(&r).unwrap();
    let plan = plan(&img, &img.unmeasured, false, &be.caps());
    let err = Driver::new(&mut be).run(&plan).unwrap_err();
    let report = err.report().unwrap();
    let stop = report.stop.as_ref().unwrap();
    // The first 2 MiB piece is known done; the failing piece reports nothing...
    assert_eq!(report.regions[0].populated, 2 * M);
    assert_eq!(stop.gpa, 4 * M);
    let StopCause::Backend(e) = &stop.cause else {
        panic!()
    };
    assert!(e.detail.contains("may be populated"), "{}", e.detail);
    // A resume would populate those granules again: unrecoverable, and the driver refuses.
    assert!(e.unrecoverable);
    resume_is_refused(&mut be, &plan, report);
    drop(be);
    // ...though the kernel did populate 3 granules of it before failing.
    assert_eq!(m.populated_in(2 * M, 4 * M), 2 * M + 3 * K4);
}

fn resume_is_refused<B: Backend>(be: &mut B, plan: &Plan<'_>, report: &cc_populate::Report) {
    let calls = report.regions.iter().map(|r| r.calls).sum::<u64>();
    let again = Driver::new(be).resume(plan, report).unwrap_err();
    assert!(matches!(again, RunError::Unrecoverable(_)), "{again}");
    assert_eq!(
        again
            .report()
            .unwrap()
            .regions
            .iter()
            .map(|r| r.calls)
            .sum::<u64>(),
        calls
    );
}

/// v9: after ACTIVATE_REALM nothing can be added; a populate is refused by the backend for good
/// (unrecoverable), before configure it is an ordinary stop that configure then resume fixes.
#[test]
fn legacy_populate_after_activation_is_unrecoverable() {
    let r = realm(HashAlgo::Sha256);
    let data = SourceBuf::new(K4 as usize).unwrap();
    let mut m = model(UapiVersion::EnableCap, r.clone());
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::EnableCap, 243);
    let plan = PlanBuilder::new()
        .source(M, Role::Measured, data.as_slice())
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    // Not configured: a plain stop, resumable once configure has created the realm.
    let err = Driver::new(&mut be).run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    let StopCause::Backend(e) = &report.stop.as_ref().unwrap().cause else {
        panic!("{err}")
    };
    assert!(!e.unrecoverable, "{e}");
    be.configure(&r).unwrap();
    let done = Driver::new(&mut be).resume(&plan, &report).unwrap();
    assert!(done.is_complete(), "{done}");
    assert_eq!(be.activate().unwrap(), Activation::Activated);
    let more = PlanBuilder::new()
        .source(2 * M, Role::Measured, data.as_slice())
        .build(&be.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut be).run(&more).unwrap_err();
    let report = err.report().unwrap().clone();
    let StopCause::Backend(e) = &report.stop.as_ref().unwrap().cause else {
        panic!("{err}")
    };
    assert!(e.unrecoverable && e.detail.contains("not active"), "{e}");
    resume_is_refused(&mut be, &more, &report);
    drop(be);
    assert_eq!(m.populated_in(2 * M, K4), 0);
}

#[test]
fn legacy_needs_configure_first_and_converts_nothing() {
    let mut m = model(UapiVersion::EnableCap, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::EnableCap, 243);
    assert!(matches!(be.activate(), Err(Error::WrongState { .. })));
    let data = vec![0u8; 4096];
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0,
        len: 4096,
        role: Role::Measured,
        source: ChunkSource::Bytes(&data),
    });
    assert!(p.result.unwrap_err().detail.contains("configure"));
    let p = be.make_private(0, 4096);
    assert_eq!(p.result.unwrap_err().kind, ErrorKind::Unsupported);
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0,
        len: 4096,
        role: Role::Ripas,
        source: ChunkSource::Zero,
    });
    assert!(p.result.unwrap_err().detail.contains("RIPAS init"));
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
    assert_eq!(m.rim().unwrap(), rim);
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
    // A plan validated against the verifier's CCA_CAPS runs on a backend without staging; a
    // v12+ plan on a v9 backend (conversion differs) likewise.
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
    let mut m = model(UapiVersion::EnableCap, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::EnableCap, 243);
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
    // kvm_gmem_populate (v12+) needs the range private first; v9's POPULATE_REALM does it.
    assert_eq!(c.conversion, Conversion::BeforePopulate);
    assert_eq!(cca_backend::CCA_CAPS_V9.conversion, Conversion::ByPopulate);
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
    let be = CcaBackend::with_version(
        model(UapiVersion::EnableCap, realm(HashAlgo::Sha256)),
        UapiVersion::EnableCap,
        243,
    );
    assert_eq!(be.caps(), cca_backend::CCA_CAPS_V9);
}
