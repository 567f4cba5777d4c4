//! SNP in-place populate through `cc_populate::Driver`, on the model of a kernel carrying the
//! in-place conversion series v8 (`KernelModel::series_v8`, patch 22/46), end to end: the image
//! written through gmem's shared view of the guest_memfd, converted by gmem over its per-file
//! path (gmem's `SeriesModel` of v8's `KVM_SET_MEMORY_ATTRIBUTES2`), populated with `uaddr` 0 in
//! whole 2 MiB units. The expected digests come from `sev_backend::measure` over the test's own
//! copy of the bytes (the model computes its digest with its own code and `sha2`); the expected
//! errnos are written out from the patch text and the kernels cited in `testing`.

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use cc_populate::{
    ConversionPolicy, Driver, DriverOptions, ErrorKind, InPlaceOutcome, MemoryLayout, Plan,
    PlanBuilder, Role, StopCause,
};
use gmem::testing::SeriesModel;
use gmem::{GmemFlags, GmemSeries, GuestMemfd};
use sev_backend::testing::{KernelModel, Step};
use sev_backend::uapi::KVM_SEV_SNP_LAUNCH_UPDATE;
use sev_backend::{
    measure, InPlaceMode, InitParams, KernelVersion, LaunchConfig, MeasureOptions, SeriesKernel,
    SevCmd, SevIoctl, SnpBackend, StartParams,
};

const MIB: u64 = 1 << 20;
/// The guest_memfd: 16 MiB bound at GPA 0.
const SIZE: u64 = 16 * MIB;
/// The in-place firmware image: 4 MiB at 4 MiB (2 MiB-aligned).
const FW: u64 = 4 * MIB;
const FW_LEN: u64 = 4 * MIB;
/// A small unaligned in-place region.
const SMALL: u64 = 10 * MIB + 0x3000;
const SMALL_LEN: u64 = 0x2000;

fn image(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i >> 12) as u8 ^ (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A series-v8 guest_memfd (created INIT_SHARED, so all shared) with `fw` and `small` written
/// through its shared view, and gmem's model of the series' ioctl (a clone to inspect).
fn written_gmem(fw: &[u8], small: &[u8]) -> (GuestMemfd, SeriesModel) {
    let series = SeriesModel::new(GmemSeries::V8, SIZE, true);
    let g = GuestMemfd::with_model(
        SIZE,
        GmemFlags::MMAP | GmemFlags::INIT_SHARED,
        GmemSeries::V8,
        Box::new(series.clone()),
    )
    .unwrap();
    g.map_shared(FW, FW_LEN).unwrap().write_at(0, fw).unwrap();
    g.map_shared(SMALL & !0xfff, SMALL_LEN)
        .unwrap()
        .write_at(0, small)
        .unwrap();
    (g, series)
}

fn kernel_config() -> LaunchConfig {
    LaunchConfig {
        in_place: InPlaceMode::Kernel,
        ..LaunchConfig::default()
    }
}

fn started(model: KernelModel) -> SnpBackend<KernelModel> {
    let mut b = SnpBackend::with_ioctl(model, kernel_config());
    b.init(&InitParams::default()).unwrap();
    b.create_vcpu(0).unwrap();
    b.start(&StartParams::default()).unwrap();
    b
}

/// In-place firmware, a source region, a zero CPUID-free tail: the plan in its given order.
fn plan<'a>(b: &SnpBackend<KernelModel>, separate: &'a [u8]) -> Plan<'a> {
    PlanBuilder::new()
        .in_place(FW, FW_LEN, Role::Measured)
        .source(12 * MIB, Role::Measured, separate)
        .in_place(SMALL, SMALL_LEN, Role::Measured)
        .zeros(14 * MIB, 0x1000, Role::Secrets)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap()
}

/// A reader of what the test wrote through the shared view (its own copies).
fn shared_view<'a>(
    fw: &'a [u8],
    small: &'a [u8],
) -> impl Fn(u64, &mut [u8]) -> Result<(), String> + 'a {
    move |gpa, buf| {
        let (base, bytes) = if gpa >= SMALL {
            (SMALL, small)
        } else {
            (FW, fw)
        };
        let off = (gpa - base) as usize;
        buf.copy_from_slice(&bytes[off..off + buf.len()]);
        Ok(())
    }
}

/// The offline digest of `plan`, reading in-place content from the test's own copies.
fn expected(plan: &Plan<'_>, fw: &[u8], small: &[u8]) -> [u8; 48] {
    let reader = shared_view(fw, small);
    let opts = MeasureOptions {
        reader: Some(&reader),
        ..Default::default()
    };
    measure(plan, &[], &opts).unwrap()
}

/// (gpa, uaddr, len) of every LAUNCH_UPDATE the model received.
fn updates(m: &KernelModel) -> Vec<(u64, u64, u64)> {
    let u = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    m.calls
        .iter()
        .filter(|c| c.id == KVM_SEV_SNP_LAUNCH_UPDATE)
        .map(|c| (u(&c.params, 0) * 4096, u(&c.params, 8), u(&c.params, 16)))
        .collect()
}

fn assert_clean(m: &KernelModel) {
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert!(m.not_private.is_empty() && m.twice.is_empty());
}

#[test]
fn written_shared_converted_by_gmem_populated_in_place_matches_the_offline_digest() {
    let (fw, small, separate) = (image(FW_LEN, 1), image(SMALL_LEN, 2), image(0x3000, 3));
    let (g, series) = written_gmem(&fw, &small);
    let mut model = KernelModel::series_v8(true);
    model.add_guest_memfd(g, 0, 0, SIZE).unwrap();
    let mut b = started(model);
    assert_eq!(b.ioctl().series(), Some(SeriesKernel::v8(true)));
    let plan = plan(&b, &separate);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());

    // The report says which regions were populated in place.
    let outcomes: Vec<_> = report.regions.iter().map(|r| r.in_place).collect();
    assert_eq!(
        outcomes,
        [
            Some(InPlaceOutcome::InPlace {
                whole_2m_units: true
            }),
            None,
            Some(InPlaceOutcome::InPlace {
                whole_2m_units: false
            }),
            None,
        ]
    );
    let m = b.ioctl();
    assert_clean(m);
    // The firmware image went in two whole 2 MiB units with uaddr 0, the small region with
    // uaddr 0, the separate source with its own address.
    let u = updates(m);
    assert_eq!(
        u.iter()
            .filter(|c| c.1 == 0 && c.0 < 8 * MIB)
            .map(|c| (c.0, c.2))
            .collect::<Vec<_>>(),
        [(FW, 2 * MIB), (FW + 2 * MIB, 2 * MIB)]
    );
    assert!(u
        .iter()
        .any(|c| c.0 == SMALL && c.1 == 0 && c.2 == SMALL_LEN));
    assert!(u.iter().any(|c| c.0 == 12 * MIB && c.1 != 0));
    // The conversions went through gmem's per-guest_memfd path (the series' ioctl), and the
    // handle records them.
    assert!(series.is_private(FW) && series.is_private(FW + FW_LEN - 4096));
    assert!(series.is_private(SMALL & !0xfff) && !series.is_private(0));
    assert!(series
        .calls()
        .iter()
        .any(|&(off, size, attr)| (off, size, attr) == (FW, FW_LEN, 1 << 3)));
    let recorded = m.guest_memfd(0).unwrap().private_ranges();
    assert!(recorded.contains(&(FW, FW + FW_LEN)), "{recorded:x?}");
    // The pages measured are the bytes written through the shared view.
    let fw_pages: Vec<u8> = m
        .ledger
        .iter()
        .filter(|(gpa, _, _)| (FW..FW + FW_LEN).contains(gpa))
        .flat_map(|(_, _, c)| c.clone())
        .collect();
    assert_eq!(fw_pages, fw);
    assert_eq!(m.launch_digest(), expected(&plan, &fw, &small));
}

#[test]
fn partial_progress_in_place_is_reported_and_resumed_to_the_same_digest() {
    let (fw, small, separate) = (image(FW_LEN, 4), image(SMALL_LEN, 5), image(0x3000, 6));
    let (g, _) = written_gmem(&fw, &small);
    let mut model = KernelModel::series_v8(true);
    model.add_guest_memfd(g, 0, 0, SIZE).unwrap();
    // First LAUNCH_UPDATE: three pages, then a firmware failure the kernel drops (the call
    // succeeds with partial progress); the next call fails at its first page: EIO with status.
    model.script.extend([
        Step::Firmware { after: 3, code: 7 },
        Step::Firmware { after: 0, code: 7 },
    ]);
    let mut b = started(model);
    let plan = plan(&b, &separate);
    let mut driver = Driver::new(&mut b);
    let err = driver.run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].populated, 3 * 4096);
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.gpa, FW + 3 * 4096);
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!((e.kind, e.errno), (ErrorKind::Failed, Some(libc::EIO)));
    let report = driver.resume(&plan, &report).unwrap();
    assert!(report.is_complete());
    let m = b.ioctl();
    assert_clean(m);
    // uaddr stayed 0 through the partial progress (patch 22/46: advanced only when given),
    // and the resumed calls finish the first unit, then the next whole unit.
    let fw_calls: Vec<(u64, u64)> = updates(m)
        .into_iter()
        .filter(|c| c.1 == 0 && c.0 < 8 * MIB)
        .map(|c| (c.0, c.2))
        .collect();
    assert_eq!(
        fw_calls,
        [
            (FW, 2 * MIB),
            (FW + 3 * 4096, 2 * MIB - 3 * 4096),
            (FW + 3 * 4096, 2 * MIB - 3 * 4096),
            (FW + 2 * MIB, 2 * MIB),
        ]
    );
    assert_eq!(m.populated_in(FW, FW_LEN), FW_LEN);
    assert_eq!(m.launch_digest(), expected(&plan, &fw, &small));
}

#[test]
fn without_the_module_parameter_the_run_stops_or_falls_back_as_allowed() {
    let (fw, small, separate) = (image(FW_LEN, 7), image(SMALL_LEN, 8), image(0x3000, 9));
    // Series v8, kvm.gmem_in_place_conversion off: gmem would not even choose the per-file
    // path; the kernel cannot populate in place.
    let mut b = started(KernelModel::series_v8(false));
    assert!(!b.ioctl().in_place_populate());
    let plan = plan(&b, &separate);
    let err = Driver::new(&mut b).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert_eq!(stop.gpa, FW);
    assert!(matches!(stop.cause, StopCause::InPlaceUnavailable(_)));
    assert!(b.ioctl().private.is_empty(), "nothing converted");

    // Allowed, with a reader of the shared view: copied out before conversion, populated from
    // the copy, and the report says so. Same digest.
    let reader = shared_view(&fw, &small);
    let options = DriverOptions {
        in_place_fallback: true,
        ..Default::default()
    };
    let report = Driver::new(&mut b)
        .with_options(options)
        .with_in_place_reader(&reader)
        .run(&plan)
        .unwrap();
    assert!(report.is_complete());
    assert_eq!(report.regions[0].in_place, Some(InPlaceOutcome::FellBack));
    assert_eq!(report.regions[2].in_place, Some(InPlaceOutcome::FellBack));
    let m = b.ioctl();
    assert_clean(m);
    assert!(updates(m).iter().all(|c| c.1 != 0 || c.0 == 14 * MIB));
    assert_eq!(m.launch_digest(), expected(&plan, &fw, &small));
}

/// A layer that claims in-place populate whatever the kernel: what the kernels answer when
/// `uaddr` 0 reaches them anyway.
struct Claims(KernelModel);
impl SevIoctl for Claims {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), sev_backend::SevIoctlError> {
        self.0.encrypt_op(cmd)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        self.0.set_private(gpa, len)
    }
    fn in_place_populate(&self) -> bool {
        true
    }
    fn kernel(&self) -> KernelVersion {
        self.0.version
    }
}

#[test]
fn uaddr_0_without_the_series_path_is_what_each_kernel_answers() {
    // Series v8, module parameter off: sev_gmem_post_populate -EINVAL, no warning, reported
    // as EIO with status 0 before the first page (bounded retries, then a failure).
    // 7.3.4: snp_launch_update refuses uaddr 0 with EINVAL before any page.
    for (model, errno, calls) in [
        (KernelModel::series_v8(false), libc::EIO, 3),
        (
            KernelModel::for_version(KernelVersion::V7_3),
            libc::EINVAL,
            1,
        ),
    ] {
        let mut b = SnpBackend::with_ioctl(Claims(model), kernel_config());
        b.init(&InitParams::default()).unwrap();
        b.start(&StartParams::default()).unwrap();
        let plan = PlanBuilder::new()
            .in_place(2 * MIB, 2 * 4096, Role::Measured)
            .build(&b.caps_now(), &MemoryLayout::unbounded())
            .unwrap();
        let err = Driver::new(&mut b).run(&plan).unwrap_err();
        let stop = err.report().unwrap().stop.clone().unwrap();
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{:?}", stop.cause)
        };
        assert_eq!(e.errno, Some(errno), "{e}");
        let m = &b.ioctl().0;
        assert_eq!(updates(m).len(), calls);
        assert!(updates(m).iter().all(|c| c.1 == 0));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert!(m.ledger.is_empty());
    }
}

#[test]
fn in_place_pages_must_be_private_already() {
    let (fw, small) = (image(FW_LEN, 10), image(SMALL_LEN, 11));
    let (g, _) = written_gmem(&fw, &small);
    let mut model = KernelModel::series_v8(true);
    model.add_guest_memfd(g, 0, 0, SIZE).unwrap();
    let mut b = started(model);
    let plan = PlanBuilder::new()
        .in_place(FW, 2 * MIB, Role::Measured)
        .build(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    // The caller said it converted, but did not: the kernel finds the page shared.
    let options = DriverOptions {
        conversion: ConversionPolicy::CallerConverted,
        ..Default::default()
    };
    let err = Driver::new(&mut b)
        .with_options(options)
        .run(&plan)
        .unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!(e.errno, Some(libc::EIO));
    let m = b.ioctl();
    assert_eq!(m.not_private.first(), Some(&FW));
    assert!(m.ledger.is_empty());
}

#[test]
fn content_changed_after_conversion_is_a_violation_and_not_what_is_measured() {
    let (fw, small, separate) = (image(FW_LEN, 12), image(SMALL_LEN, 13), image(0x3000, 14));
    let (g, _) = written_gmem(&fw, &small);
    let mut model = KernelModel::series_v8(true);
    model.add_guest_memfd(g, 0, 0, SIZE).unwrap();
    model.set_private(FW, FW_LEN).unwrap();
    // Behind gmem's back (its views refuse a private range; a real guest_memfd SIGBUSes):
    // write into the converted file.
    let fd = model
        .guest_memfd(0)
        .unwrap()
        .as_fd()
        .try_clone_to_owned()
        .unwrap();
    std::fs::File::from(fd)
        .write_all_at(&[0xee; 16], FW)
        .unwrap();
    let mut b = started(model);
    let plan = plan(&b, &separate);
    let report = Driver::new(&mut b).run(&plan).unwrap();
    assert!(report.is_complete());
    let m = b.ioctl();
    assert_eq!(m.violations.len(), 1, "{:?}", m.violations);
    assert!(m.violations[0].contains("written after its conversion"));
    // What the page held at conversion was measured.
    assert_eq!(m.launch_digest(), expected(&plan, &fw, &small));
}
