//! TDX in-place populate through `cc_populate::Driver`, on the model of a kernel carrying the
//! in-place conversion series v8 (`TdxModel::series_v8`, patch 23/46): the image written
//! through gmem's shared view of the guest_memfd, converted by gmem over its per-file path
//! (gmem's `SeriesModel`), added with `source_addr` 0 in whole 2 MiB units. The expected MRTD
//! is `measure_plan` of the same regions given as separate sources (the test's own copies);
//! the model extends MRTD from the pages as they were at conversion. Errnos are written out
//! from the patch text and 7.3.4.

use cc_populate::{
    Backend, Driver, DriverOptions, ErrorKind, InPlaceOutcome, MemoryLayout, PlanBuilder, Role,
    StopCause,
};
use gmem::testing::SeriesModel;
use gmem::{GmemFlags, GmemSeries, GuestMemfd};
use tdx_backend::testing::{Event, TdxModel};
use tdx_backend::{measure_plan, Kernel, SeriesKernel, TdxBackend, TdxIoctl, TDX_CAPS};

const MIB: u64 = 1 << 20;
const RCX: u64 = 0x0080_9000;
const SIZE: u64 = 16 * MIB;
/// The in-place firmware image: 4 MiB at 4 MiB (2 MiB-aligned), measured.
const FW: u64 = 4 * MIB;
const FW_LEN: u64 = 4 * MIB;
/// A separate-source region after it.
const DATA: u64 = 12 * MIB;

fn image(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i >> 12) as u8 ^ (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

fn written_gmem(fw: &[u8]) -> (GuestMemfd, SeriesModel) {
    let series = SeriesModel::new(GmemSeries::V8, SIZE, true);
    let g = GuestMemfd::with_model(
        SIZE,
        GmemFlags::MMAP | GmemFlags::INIT_SHARED,
        GmemSeries::V8,
        Box::new(series.clone()),
    )
    .unwrap();
    g.map_shared(FW, FW_LEN).unwrap().write_at(0, fw).unwrap();
    (g, series)
}

/// A TD on `model`, launched up to populate, offering in-place content.
fn launched(model: TdxModel) -> TdxBackend<TdxModel> {
    let mut td = TdxBackend::new(model)
        .with_kernel(Kernel::V7_3)
        .with_in_place(true);
    td.capabilities().unwrap();
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    td.enable_split_irqchip(24).unwrap();
    td.create_vcpu(0).unwrap();
    td.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    td.init_vcpu(0, RCX).unwrap();
    td
}

/// The expected MRTD: the same regions, in the same order, from separate sources.
fn expected(fw: &[u8], data: &[u8]) -> [u8; 48] {
    let plan = PlanBuilder::new()
        .source(FW, Role::Measured, fw)
        .source(DATA, Role::Measured, data)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    measure_plan(&plan).unwrap()
}

/// (gpa, source_addr, nr_pages) of every INIT_MEM_REGION, as the model recorded them.
fn regions(m: &TdxModel) -> Vec<(u64, u64, u64)> {
    m.calls
        .iter()
        .filter_map(|c| c.region)
        .map(|r| (r.gpa, r.source_addr, r.nr_pages))
        .collect()
}

#[test]
fn written_shared_converted_by_gmem_added_in_place_matches_the_offline_mrtd() {
    let (fw, data) = (image(FW_LEN, 1), image(0x3000, 2));
    let (g, series) = written_gmem(&fw);
    let mut model = TdxModel::series_v8(true);
    model.add_guest_memfd(g, 0, 0, SIZE).unwrap();
    let mut td = launched(model);
    assert_eq!(td.ioctl().series(), Some(SeriesKernel::v8(true)));
    let plan = PlanBuilder::new()
        .in_place(FW, FW_LEN, Role::Measured)
        .source(DATA, Role::Measured, &data)
        .build(&td.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut td).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(
        report.regions[0].in_place,
        Some(InPlaceOutcome::InPlace {
            whole_2m_units: true
        })
    );
    assert_eq!(report.regions[1].in_place, None);
    td.finalize().unwrap();
    let m = td.ioctl();
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    assert!(m.twice.is_empty());
    // One call of whole 2 MiB units (TDX takes up to 1 GiB a call) with source_addr 0, then
    // the separate source (recorded relative to its buffer, so look at the GPA).
    let r = regions(m);
    assert_eq!(r[0], (FW, 0, 1024));
    assert_eq!((r[1].0, r[1].2), (DATA, 3));
    assert!(series.is_private(FW) && series.is_private(FW + FW_LEN - 4096));
    assert_eq!(m.mrtd(), Some(expected(&fw, &data)));
}

#[test]
fn partial_progress_in_place_is_reported_and_resumed_to_the_same_mrtd() {
    let (fw, data) = (image(FW_LEN, 3), image(0x3000, 4));
    let (g, _) = written_gmem(&fw);
    let mut model = TdxModel::series_v8(true);
    model.add_guest_memfd(g, 0, 0, SIZE).unwrap();
    // A signal after three pages (EINTR, the region written back with them), then one before
    // any page: with no retries allowed, the run stops there.
    model.script.extend([
        Event::Signal { after_pages: 3 },
        Event::Signal { after_pages: 0 },
    ]);
    let mut td = launched(model);
    let plan = PlanBuilder::new()
        .in_place(FW, FW_LEN, Role::Measured)
        .source(DATA, Role::Measured, &data)
        .build(&td.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let options = DriverOptions {
        max_retries: 0,
        ..Default::default()
    };
    let mut driver = Driver::new(&mut td).with_options(options);
    let err = driver.run(&plan).unwrap_err();
    let report = err.report().unwrap().clone();
    assert_eq!(report.regions[0].populated, 3 * 4096);
    let stop = report.stop.clone().unwrap();
    assert_eq!(stop.gpa, FW + 3 * 4096);
    let StopCause::RetriesExhausted { last: e, .. } = &stop.cause else {
        panic!("{:?}", stop.cause)
    };
    assert_eq!(
        (e.kind, e.errno),
        (ErrorKind::Interrupted, Some(libc::EINTR))
    );
    let report = driver.resume(&plan, &report).unwrap();
    assert!(report.is_complete());
    td.finalize().unwrap();
    let m = td.ioctl();
    assert!(m.violations.is_empty() && m.twice.is_empty());
    // source_addr stayed 0 throughout (patch 23/46 advances it only when not 0).
    let fw_regions: Vec<_> = regions(m).into_iter().filter(|r| r.0 < DATA).collect();
    assert!(fw_regions.iter().all(|r| r.1 == 0), "{fw_regions:x?}");
    assert_eq!(fw_regions[0], (FW, 0, 1024));
    assert_eq!(fw_regions[1], (FW + 3 * 4096, 0, 1021));
    assert_eq!(m.populated_in(FW, FW_LEN), FW_LEN);
    assert_eq!(m.mrtd(), Some(expected(&fw, &data)));
}

#[test]
fn without_the_module_parameter_the_run_stops_before_converting() {
    let fw = image(FW_LEN, 5);
    let mut td = launched(TdxModel::series_v8(false));
    assert!(!td.ioctl().in_place_populate());
    let plan = PlanBuilder::new()
        .in_place(FW, FW_LEN, Role::Measured)
        .build(&td.caps(), &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert!(matches!(stop.cause, StopCause::InPlaceUnavailable(_)));
    assert!(!td.ioctl().is_private(FW), "nothing converted");
    // Allowed, with a reader of the shared view: added from a copy, same MRTD as sources.
    let reader = |gpa: u64, buf: &mut [u8]| -> Result<(), String> {
        let off = (gpa - FW) as usize;
        buf.copy_from_slice(&fw[off..off + buf.len()]);
        Ok(())
    };
    let options = DriverOptions {
        in_place_fallback: true,
        ..Default::default()
    };
    let report = Driver::new(&mut td)
        .with_options(options)
        .with_in_place_reader(&reader)
        .run(&plan)
        .unwrap();
    assert_eq!(report.regions[0].in_place, Some(InPlaceOutcome::FellBack));
    td.finalize().unwrap();
    let only_fw = PlanBuilder::new()
        .source(FW, Role::Measured, &fw)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&only_fw).unwrap()));
}

/// A layer that claims in-place populate whatever the kernel.
struct Claims(TdxModel);
impl TdxIoctl for Claims {
    fn vm_op(
        &mut self,
        cmd: &mut tdx_backend::uapi::kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        self.0.vm_op(cmd, payload)
    }
    fn vcpu_op(
        &mut self,
        cmd: &mut tdx_backend::uapi::kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        self.0.vcpu_op(cmd, payload)
    }
    fn init_mem_region(
        &mut self,
        cmd: &mut tdx_backend::uapi::kvm_tdx_cmd,
        region: &mut tdx_backend::uapi::kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        self.0.init_mem_region(cmd, region, source)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        self.0.set_private(gpa, len)
    }
    fn in_place_populate(&self) -> bool {
        true
    }
}

#[test]
fn source_addr_0_without_the_series_path_is_what_each_kernel_answers() {
    // Series v8, parameter off: tdx_gmem_post_populate -EOPNOTSUPP (after the page was found
    // private); 7.3.4: tdx_vcpu_init_mem_region refuses source_addr 0 with EINVAL.
    for (model, errno, kind) in [
        (
            TdxModel::series_v8(false),
            libc::EOPNOTSUPP,
            ErrorKind::Unsupported,
        ),
        (TdxModel::on(Kernel::V7_3), libc::EINVAL, ErrorKind::Failed),
    ] {
        let mut td = TdxBackend::initialized(Claims(model), &[0])
            .with_kernel(Kernel::V7_3)
            .with_in_place(true);
        // The model's own vCPU launch (the backend was told it was done).
        {
            let m = &mut td.ioctl_mut().0;
            let mut b = TdxBackend::new(&mut *m);
            b.capabilities().unwrap();
            b.init_vm(&TdxModel::minimal_params()).unwrap();
            b.enable_split_irqchip(24).unwrap();
            b.create_vcpu(0).unwrap();
            b.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
            b.init_vcpu(0, RCX).unwrap();
        }
        let plan = PlanBuilder::new()
            .in_place(2 * MIB, 2 * 4096, Role::Measured)
            .build(&td.caps(), &MemoryLayout::unbounded())
            .unwrap();
        let err = Driver::new(&mut td).run(&plan).unwrap_err();
        let stop = err.report().unwrap().stop.clone().unwrap();
        let StopCause::Backend(e) = &stop.cause else {
            panic!("{:?}", stop.cause)
        };
        assert_eq!((e.errno, e.kind), (Some(errno), kind), "{e}");
        let m = &td.ioctl().0;
        assert_eq!(m.populated_in(2 * MIB, 2 * 4096), 0);
        assert!(regions(m).iter().all(|r| r.1 == 0));
    }
}
