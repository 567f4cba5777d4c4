//! The backend against ioctl layers that misbehave in ways the model never does: write-backs
//! that are not a kernel's, and success with less than asked.

use cc_populate::{
    Backend, ChunkRequest, ChunkSource, Driver, ErrorKind, MemoryLayout, PlanBuilder, Role,
};
use tdx_backend::uapi::{kvm_tdx_cmd, kvm_tdx_init_mem_region};
use tdx_backend::{TdxBackend, TdxIoctl, TDX_CAPS};

/// Answers INIT_MEM_REGION with a scripted write-back, VM commands with `vm_answer`.
struct Fake {
    /// (pages to advance, gpa skew, result) per call.
    answers: Vec<(u64, u64, Result<(), i32>)>,
    calls: usize,
    vm_answer: Result<(), i32>,
    vm_calls: usize,
    private: Result<(), i32>,
}

impl Fake {
    fn new(answers: Vec<(u64, u64, Result<(), i32>)>) -> Self {
        Fake {
            answers,
            calls: 0,
            vm_answer: Ok(()),
            vm_calls: 0,
            private: Ok(()),
        }
    }
}

impl TdxIoctl for Fake {
    fn vm_op(&mut self, _: &mut kvm_tdx_cmd, _: Option<&mut [u8]>) -> Result<(), i32> {
        self.vm_calls += 1;
        self.vm_answer
    }
    fn vcpu_op(&mut self, _: &mut kvm_tdx_cmd, _: Option<&mut [u8]>) -> Result<(), i32> {
        Ok(())
    }
    fn init_mem_region(
        &mut self,
        _: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        _: &[u8],
    ) -> Result<(), i32> {
        let (pages, skew, r) =
            self.answers
                .get(self.calls)
                .copied()
                .unwrap_or((region.nr_pages, 0, Ok(())));
        self.calls += 1;
        region.gpa += pages * 4096 + skew;
        region.source_addr += pages * 4096;
        region.nr_pages -= pages.min(region.nr_pages);
        r
    }
    fn set_private(&mut self, _: u64, _: u64) -> Result<(), i32> {
        self.private
    }
}

#[test]
fn an_impossible_write_back_counts_nothing() {
    let mut td = TdxBackend::initialized(Fake::new(vec![(1, 8, Err(libc::EIO))]), &[0]);
    let data = vec![0u8; 2 * 4096];
    let p = td.populate(&ChunkRequest {
        region: 0,
        gpa: 0x1000,
        len: 0x2000,
        role: Role::Measured,
        source: ChunkSource::Bytes(&data),
    });
    assert_eq!(p.done, 0);
    let e = p.result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(e.detail.contains("impossible region"), "{}", e.detail);
    // Where it stopped is unknown, so no page state is claimed.
    assert!(!e.unrecoverable);
    assert!(td.unrecoverable().is_none());
}

#[test]
fn capabilities_e2big_is_a_hard_error_after_one_call() {
    // No 6.18 kernel answers E2BIG to 256 entries of room (a module reports at most 128):
    // a layer that does gets one call and a hard error, since the kernel would not say how
    // many entries it needs.
    let mut fake = Fake::new(Vec::new());
    fake.vm_answer = Err(libc::E2BIG);
    let mut td = TdxBackend::initialized(fake, &[0]);
    let e = td.capabilities().unwrap_err();
    let tdx_backend::Error::Ioctl { errno, detail, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*errno, libc::E2BIG);
    assert!(detail.contains("does not say how many"), "{detail}");
    assert_eq!(td.ioctl().vm_calls, 1);
}

#[test]
fn a_vm_command_refused_with_enotty_is_not_supported() {
    let mut fake = Fake::new(Vec::new());
    fake.vm_answer = Err(libc::ENOTTY);
    let mut td = TdxBackend::initialized(fake, &[0]);
    let e = td.capabilities().unwrap_err();
    assert!(
        matches!(e, tdx_backend::Error::NotSupported { .. }),
        "{e:?}"
    );
}

#[test]
fn success_with_less_than_asked_is_partial_progress_and_the_driver_continues() {
    let mut td = TdxBackend::initialized(Fake::new(vec![(1, 0, Ok(()))]), &[0]);
    let data = vec![0u8; 3 * 4096];
    let plan = PlanBuilder::new()
        .source(0x10_0000, Role::Unmeasured, &data)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let report = Driver::new(&mut td).run(&plan).unwrap();
    assert!(report.is_complete());
    assert_eq!(report.regions[0].calls, 2);
    assert_eq!(td.ioctl().calls, 2);
}

#[test]
fn chunks_the_backend_cannot_send_are_refused_before_any_ioctl() {
    let mut fake = Fake::new(Vec::new());
    // Through `&mut`: the forwarding impl, and the default `vm_check_extension` (a TD's).
    let mut td = TdxBackend::initialized(&mut fake, &[0]);
    let data = vec![0u8; 4096];
    let req = |role, source| ChunkRequest {
        region: 0,
        gpa: 0x1000,
        len: 0x2000,
        role,
        source,
    };
    let p = td.populate(&req(Role::Secrets, ChunkSource::Bytes(&data)));
    assert!(p
        .result
        .unwrap_err()
        .detail
        .contains("no TDX page operation"));
    assert_eq!(td.page_type(Role::Secrets), "none (not a TDX role)");
    assert_eq!(td.page_type(Role::Zero), "PAGE.ADD (zero source)");
    assert_eq!(td.page_type(Role::Unmeasured), "PAGE.ADD");
    let p = td.populate(&req(Role::Measured, ChunkSource::Bytes(&data)));
    assert!(p
        .result
        .unwrap_err()
        .detail
        .contains("fewer than the chunk"));
    let p = td.populate(&req(Role::Measured, ChunkSource::InPlace));
    let e = p.result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(
        e.detail.contains("cannot populate in place"),
        "{}",
        e.detail
    );
    assert_eq!(td.ioctl().calls, 0);
    // Zero content goes through the zero source.
    let p = td.populate(&req(Role::Zero, ChunkSource::Zero));
    assert_eq!(p, cc_populate::Populated::all(0x2000));
    assert_eq!(td.ioctl().calls, 1);
    drop(td);
    assert_eq!(fake.calls, 1);
}

#[test]
fn a_refused_conversion_stops_before_populate() {
    let mut fake = Fake::new(Vec::new());
    fake.private = Err(libc::EINVAL);
    let mut td = TdxBackend::initialized(fake, &[0]);
    let data = vec![0u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x10_0000, Role::Measured, &data)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap();
    let err = Driver::new(&mut td).run(&plan).unwrap_err();
    let stop = err.report().unwrap().stop.clone().unwrap();
    assert_eq!(stop.phase, cc_populate::Phase::Convert);
    assert!(stop
        .to_string()
        .contains("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [0x100000..+0x1000)"));
    assert_eq!(td.into_ioctl().calls, 0);
}
