//! The backend driven by the cc-populate driver through the in-process model of the CCA series:
//! exact bytes sent, exact reports against the model's ledger, partial progress, interruption,
//! RMM errors and resume, per version.

use std::collections::BTreeMap;

use cc_populate::{
    Backend, ChunkRequest, ChunkSource, Driver, ErrorKind, MemoryLayout, Plan, PlanBuilder,
    PlanError, Role, RunError, SourceBuf, StopCause,
};
use cca_backend::testing::{Fault, KernelModel, ModelRealm};
use cca_backend::uapi::{self, KvmArmRmiPopulate};
use cca_backend::{
    hash, measure, measure_with, Activation, CcaBackend, Error, HashAlgo, RealmParams, RecParams,
    UapiVersion,
};

const M: u64 = 1 << 20;
const K4: u64 = 4096;

fn realm(hash: HashAlgo) -> RealmParams {
    RealmParams::new(hash, 40)
}

fn model(version: UapiVersion, realm: RealmParams) -> KernelModel {
    let mut m = KernelModel::new(version, realm);
    // SAFETY: this model only receives calls from `CcaBackend`, which passes sources that are
    // live, readable buffers of the call's size (a borrowed chunk or its own bounce buffer).
    unsafe { m.read_sources() };
    m
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
    let start = if (buf.as_ptr() as usize + 1) % 4096 == 0 {
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
/// buffer, unmeasured 12 KiB at 16 MiB from an unaligned slice, measured zeros 8 KiB at 32 MiB.
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

fn boot_rec() -> RecParams {
    RecParams {
        pc: 2 * M,
        gprs: [0x4000_0000, 0, 0, 0, 0, 0, 0, 0],
        runnable: true,
    }
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

const RMI_VERSIONS: [UapiVersion; 3] = [UapiVersion::V12, UapiVersion::V13, UapiVersion::V14];

#[test]
fn full_run_exact_bytes_and_ledger() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut um = Vec::new();
        let r = unaligned(&mut um, &img.unmeasured);
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        be.configure(&realm(HashAlgo::Sha256)).unwrap();
        let plan = plan(&img, &um[r], true, &be.caps());
        let report = Driver::new(&mut be).run(&plan).unwrap();
        assert!(report.is_complete(), "{v}: {report}");
        assert_eq!(be.activate().unwrap(), Activation::OnFirstRun);
        let caps = be.caps();
        drop(be);
        // The ripas region issues nothing from v12 on; the three data regions one call each
        // (the unmeasured and zero regions through the bounce buffer, one piece each).
        assert_eq!(m.calls.len(), 3, "{v}");
        let request = if v == UapiVersion::V12 {
            0x4020_AED7
        } else {
            0xC020_AED7
        };
        assert!(m
            .calls
            .iter()
            .all(|c| c.request == request && c.errno.is_none()));
        // The first call, byte by byte.
        let src = img.measured.as_slice().as_ptr() as u64;
        let mut want = Vec::new();
        want.extend_from_slice(&(2 * M).to_le_bytes()); // base
        want.extend_from_slice(&(3 * M + 2 * K4).to_le_bytes()); // size
        want.extend_from_slice(&src.to_le_bytes()); // source_uaddr: the plan's own buffer
        want.extend_from_slice(&1u32.to_le_bytes()); // flags: MEASURE
        want.extend_from_slice(&0u32.to_le_bytes()); // reserved
        assert_eq!(m.calls[0].bytes, want);
        // The unmeasured call: flags 0, bounce-buffer source (page aligned, not the plan's).
        let c = &m.calls[1].bytes;
        assert_eq!(
            &c[0..16],
            &[(16 * M).to_le_bytes(), (3 * K4).to_le_bytes()].concat()[..]
        );
        assert_eq!(u64::from_le_bytes(c[16..24].try_into().unwrap()) % K4, 0);
        assert_eq!(&c[24..32], &[0u8; 8]);
        check_ledger(&m, &img, HashAlgo::Sha256);
        for (i, rr) in report.regions.iter().enumerate().skip(1) {
            assert_eq!(rr.populated, m.populated_in(rr.gpa, rr.len), "region {i}");
        }
        // The model's RMM measured what the offline model computes for the plan without the
        // (implicit, unmeasured here) ripas region.
        let no_ripas = self::plan(&img, &img.unmeasured, false, &caps);
        m.create_rec(&boot_rec());
        assert_eq!(
            m.rim().unwrap(),
            measure(&no_ripas, &realm(HashAlgo::Sha256), &[boot_rec()]).unwrap(),
            "{v}"
        );
    }
}

#[test]
fn partial_progress_is_followed_exactly() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        m.max_granules_per_call = 100;
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let report = Driver::new(&mut be).run(&plan).unwrap();
        assert!(report.is_complete());
        // 770 granules in calls of at most 100; 3 and 2 granules in one call each.
        assert_eq!(report.regions[0].calls, 8);
        assert_eq!(report.regions[1].calls, 1);
        assert_eq!(report.regions[2].calls, 1);
        assert_eq!(report.retries(), 0);
        // Each call asked for the rest, from where the previous one stopped.
        let asks: Vec<(u64, u64)> = m
            .calls
            .iter()
            .take(8)
            .map(|c| {
                (
                    u64::from_le_bytes(c.bytes[0..8].try_into().unwrap()),
                    u64::from_le_bytes(c.bytes[8..16].try_into().unwrap()),
                )
            })
            .collect();
        for (k, (base, size)) in asks.iter().enumerate() {
            assert_eq!(*base, 2 * M + 100 * K4 * k as u64, "{v}");
            assert_eq!(*size, 3 * M + 2 * K4 - 100 * K4 * k as u64, "{v}");
        }
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

#[test]
fn interruption_and_busy_are_retried() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        // 10 granules then a signal (progress returned), then a signal before anything (EINTR),
        // then busy (EAGAIN).
        m.faults.extend([
            Fault::Signal { after: 10 },
            Fault::Signal { after: 0 },
            Fault::Busy,
        ]);
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let report = Driver::new(&mut be).run(&plan).unwrap();
        assert!(report.is_complete());
        assert_eq!(report.regions[0].calls, 4);
        assert_eq!(report.regions[0].retries, 2);
        let errnos: Vec<_> = m.calls.iter().map(|c| c.errno).collect();
        assert_eq!(
            &errnos[..4],
            &[None, Some(libc::EINTR), Some(libc::EAGAIN), None]
        );
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

#[test]
fn rmm_error_stops_exactly_and_resume_completes() {
    for v in RMI_VERSIONS {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        let bad = 2 * M + 5 * K4;
        m.failing.insert(bad, 1 /* RMI_ERROR_INPUT */);
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
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
        assert_eq!(m.populated_in(2 * M, 4 * M), 5 * K4);
        // The first call stopped before the failing granule with progress, the second failed
        // on it with none: the RMM saw it twice.
        assert_eq!(m.rmm_errors, vec![(bad, 1), (bad, 1)]);
        // The RMM recovers: resume from the report; nothing is populated twice.
        m.failing.clear();
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let report = Driver::new(&mut be).resume(&plan, &report).unwrap();
        assert!(report.is_complete());
        assert!(m.calls.iter().all(|c| c.errno != Some(libc::EEXIST)));
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

#[test]
fn no_progress_is_not_spun_on() {
    for v in [UapiVersion::V13, UapiVersion::V14] {
        let img = image();
        let mut m = model(v, realm(HashAlgo::Sha256));
        m.faults.extend([Fault::NoProgress, Fault::NoProgress]);
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let err = Driver::new(&mut be).run(&plan).unwrap_err();
        let report = err.report().unwrap().clone();
        assert!(matches!(
            report.stop.as_ref().unwrap().cause,
            StopCause::NoProgress { attempts: 2 }
        ));
        assert_eq!(m.calls.len(), 2);
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        assert!(Driver::new(&mut be)
            .resume(&plan, &report)
            .unwrap()
            .is_complete());
        check_ledger(&m, &img, HashAlgo::Sha256);
    }
}

#[test]
fn a_granule_is_never_populated_twice() {
    let data = vec![1u8; 8192];
    for v in RMI_VERSIONS {
        let mut m = model(v, realm(HashAlgo::Sha256));
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
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

#[test]
fn kernel_reporting_impossible_progress_is_an_error() {
    struct Liar;
    impl cca_backend::CcaIoctl for Liar {
        fn rmi_populate(&mut self, _: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
            args.base += 4096; // advanced base, but not size
            Ok(0)
        }
        fn rme_enable_cap(
            &mut self,
            _: u32,
            _: u64,
            _: cca_backend::RmeArg<'_>,
        ) -> Result<(), i32> {
            Err(libc::ENOTTY)
        }
        fn write_shared_alias(&mut self, _: u64, _: &[u8]) -> Result<(), i32> {
            Err(libc::ENOTTY)
        }
    }
    let data = SourceBuf::new(8192).unwrap();
    let mut be = CcaBackend::with_version(Liar, UapiVersion::V14, 249);
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0,
        len: 8192,
        role: Role::Unmeasured,
        source: ChunkSource::Bytes(data.as_slice()),
    });
    assert_eq!(p.done, 0);
    assert!(p.result.unwrap_err().detail.contains("not progress"));
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
    // ...though the kernel did populate 3 granules of it before failing.
    assert_eq!(m.populated_in(2 * M, 4 * M), 2 * M + 3 * K4);
}

#[test]
fn legacy_needs_configure_first() {
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
}

#[test]
fn v12_and_later_offer_no_configuration() {
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V14, 249);
    assert_eq!(
        be.configure(&realm(HashAlgo::Sha512)),
        Err(Error::NotOffered {
            what: "the measurement hash algorithm",
            version: UapiVersion::V14
        })
    );
    let mut r = realm(HashAlgo::Sha256);
    r.rpv[0] = 1;
    assert!(matches!(be.configure(&r), Err(Error::NotOffered { .. })));
    assert!(be.configure(&realm(HashAlgo::Sha256)).is_ok());
    assert!(m.calls.is_empty());
}

#[test]
fn in_place_is_refused_unless_staged() {
    let be = CcaBackend::with_version(
        model(UapiVersion::V14, realm(HashAlgo::Sha256)),
        UapiVersion::V14,
        249,
    );
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
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be =
        CcaBackend::with_version(&mut m, UapiVersion::V14, 249).stage_in_place(Box::new(read));
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
}

#[test]
fn refused_roles_reach_no_ioctl() {
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V14, 249);
    let p = be.populate(&ChunkRequest {
        region: 0,
        gpa: 0,
        len: 4096,
        role: Role::Zero,
        source: ChunkSource::Zero,
    });
    assert_eq!(p.result.unwrap_err().kind, ErrorKind::Unsupported);
    assert!(m.calls.is_empty());
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
    let mut m = model(UapiVersion::V14, realm(HashAlgo::Sha256));
    let mut be = CcaBackend::with_version(&mut m, UapiVersion::V14, 249)
        .stage_in_place(Box::new(|_, _| Ok(())));
    let data = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0, Role::Measured, &data)
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .unwrap();
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
        // Progress, then more interruptions and busy answers in a row than the driver accepts.
        m.faults.extend([
            Fault::Signal { after: 3 },
            Fault::Signal { after: 0 },
            Fault::Busy,
            Fault::Signal { after: 0 },
        ]);
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let plan = plan(&img, &img.unmeasured, false, &be.caps());
        let options = cc_populate::DriverOptions {
            max_retries: 2,
            ..Default::default()
        };
        let err = Driver::new(&mut be)
            .with_options(options.clone())
            .run(&plan)
            .unwrap_err();
        let report = err.report().unwrap().clone();
        let stop = report.stop.clone().unwrap();
        let StopCause::RetriesExhausted { attempts: 3, last } = &stop.cause else {
            panic!("{stop}")
        };
        assert_eq!(last.errno, Some(libc::EINTR));
        assert_eq!(stop.gpa, 2 * M + 3 * K4);
        assert_eq!(report.regions[0].populated, 3 * K4);
        assert_eq!(m.populated_bytes(), 3 * K4);
        let mut be = CcaBackend::with_version(&mut m, v, v.series_cap());
        let report = Driver::new(&mut be)
            .with_options(options)
            .resume(&plan, &report)
            .unwrap();
        assert!(report.is_complete());
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
    assert_eq!(c.conversion, Conversion::ByPopulate);
    assert_eq!(
        c.roles,
        [Role::Measured, Role::Unmeasured, Role::Ripas]
            .into_iter()
            .collect::<RoleSet>()
    );
    let be = CcaBackend::with_version(
        model(UapiVersion::V12, realm(HashAlgo::Sha256)),
        UapiVersion::V12,
        247,
    );
    assert_eq!(be.caps(), c);
    assert_eq!(be.page_type(Role::Ripas), "RTT_INIT_RIPAS");
}
