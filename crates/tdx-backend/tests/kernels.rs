//! Kernel releases as data: which release is followed, and each behaviour that differs between
//! Linux 6.18.2 and 7.3.4, with one test per release. The expected answers are read from the
//! kernels' code (cited at each test), not from the backend.

use cc_populate::{
    ConversionPolicy, Driver, DriverOptions, MemoryLayout, Plan, PlanBuilder, Role, RunError,
    StopCause,
};
use tdx_backend::testing::{Event, TdxModel};
use tdx_backend::uapi::{kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_TDX_INIT_MEM_REGION};
use tdx_backend::{
    init_mem_region_errno_meaning_on, measure_plan, Error, Kernel, PageState, TdxBackend, TdxIoctl,
    TDX_CAPS,
};

const PAGE: u64 = 4096;
const RCX: u64 = 0x0080_9000;

fn launched(kernel: Kernel) -> TdxBackend<TdxModel> {
    let mut td = TdxBackend::new(TdxModel::on(kernel)).with_kernel(kernel);
    td.capabilities().unwrap();
    td.init_vm(&TdxModel::minimal_params()).unwrap();
    td.enable_split_irqchip(24).unwrap();
    td.create_vcpu(0).unwrap();
    td.set_cpuid(0, &TdxModel::minimal_vcpu_cpuid()).unwrap();
    td.init_vcpu(0, RCX).unwrap();
    td
}

fn plan(fw: &[u8]) -> Plan<'_> {
    PlanBuilder::new()
        .source(0x10_0000, Role::Measured, fw)
        .build(&TDX_CAPS, &MemoryLayout::unbounded())
        .unwrap()
}

/// A page-aligned page of bytes, inside `buf`.
fn aligned_page(buf: &[u8]) -> &[u8] {
    let off = buf.as_ptr().align_offset(PAGE as usize);
    &buf[off..off + PAGE as usize]
}

fn init_mem_region(model: &mut TdxModel, gpa: u64, source_addr: u64, src: &[u8]) -> i32 {
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_MEM_REGION,
        ..Default::default()
    };
    let mut region = kvm_tdx_init_mem_region {
        source_addr,
        gpa,
        nr_pages: 1,
    };
    match model.init_mem_region(&mut cmd, &mut region, src) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// One page added at `gpa` from a page-aligned source of its own: the errno (0 = added).
fn add_page(model: &mut TdxModel, gpa: u64) -> i32 {
    let buf = vec![7u8; 2 * PAGE as usize];
    let src = aligned_page(&buf);
    init_mem_region(model, gpa, src.as_ptr() as u64, src)
}

#[test]
fn releases_map_to_the_code_read() {
    let pick = |r: &str| Kernel::from_release(r).map(|c| (c.kernel, c.assumed.is_some()));
    assert_eq!(pick("6.18.2").unwrap(), (Kernel::V6_18, false));
    assert_eq!(pick("6.18.44-fc-v1272").unwrap(), (Kernel::V6_18, false));
    assert_eq!(pick("7.3.4+bpo-amd64").unwrap(), (Kernel::V7_3, false));
    assert_eq!(pick("7.3.0-rc7").unwrap(), (Kernel::V7_3, false));
    // Newer than any release read: the newest, said once through `assumed`.
    let newer = Kernel::from_release("8.1.0-amd64").unwrap();
    assert_eq!(newer.kernel, Kernel::V7_3);
    assert_eq!(
        newer.assumed.unwrap().to_string(),
        "Linux 8.1.0-amd64 is newer than the newest release this crate has read; following Linux 7.3.4's TDX rules"
    );
    assert_eq!(pick("7.10.1").unwrap(), (Kernel::V7_3, true));
}

#[test]
fn releases_without_tdx_or_not_read_are_refused_by_name() {
    for old in ["6.12.118", "6.15.9", "5.15.0-generic"] {
        let e = Kernel::from_release(old).unwrap_err();
        assert!(
            matches!(&e, Error::KernelUnsupported { release, .. } if release == old),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("TDX host support begins in Linux 6.16"),
            "{e}"
        );
    }
    for between in ["6.16.1", "6.17.0", "6.19.3", "7.0.1", "7.1.5", "7.2.0"] {
        let e = Kernel::from_release(between).unwrap_err();
        assert!(e.to_string().contains("was not read"), "{between}: {e}");
    }
    for junk in ["", "linux", "6", "x.y"] {
        assert!(Kernel::from_release(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn the_running_kernel_is_read_from_uname() {
    // The release the kernel reports through procfs (an independent path to the same string).
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim();
    match (Kernel::running(), Kernel::from_release(release)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("uname and procfs disagree: {a:?} / {b:?}"),
    }
}

/// tdx_vcpu_init_mem_region: 7.3.4 refuses `!region.source_addr` with EINVAL; 6.18.2 does not
/// test it, and the pin of address 0 (get_user_pages_fast in tdx_gmem_post_populate) fails:
/// EFAULT.
#[test]
fn source_addr_zero_6_18_faults_at_the_pin() {
    let mut td = launched(Kernel::V6_18);
    let model = td.ioctl_mut();
    model.set_private(0x10_0000, PAGE).unwrap();
    let buf = vec![0u8; 2 * PAGE as usize];
    assert_eq!(
        init_mem_region(model, 0x10_0000, 0, aligned_page(&buf)),
        libc::EFAULT
    );
}

#[test]
fn source_addr_zero_7_3_is_einval_at_the_ioctl() {
    let mut td = launched(Kernel::V7_3);
    let model = td.ioctl_mut();
    model.set_private(0x10_0000, PAGE).unwrap();
    let buf = vec![0u8; 2 * PAGE as usize];
    assert_eq!(
        init_mem_region(model, 0x10_0000, 0, aligned_page(&buf)),
        libc::EINVAL
    );
    assert!(model.added.is_empty());
}

/// 6.18.2 kvm_gmem_populate: a prepared folio is EEXIST. 7.3.4 has no preparation check
/// (__kvm_gmem_populate); kvm_tdp_mmu_map_private_pfn finds the S-EPT entry present
/// (RET_PF_SPURIOUS) and answers EIO, the VM alive.
#[test]
fn a_page_populated_again_6_18_is_eexist() {
    let mut td = launched(Kernel::V6_18);
    let model = td.ioctl_mut();
    model.set_private(0x10_0000, PAGE).unwrap();
    assert_eq!(add_page(model, 0x10_0000), 0);
    assert_eq!(add_page(model, 0x10_0000), libc::EEXIST);
}

#[test]
fn a_page_populated_again_7_3_is_eio_and_the_vm_lives() {
    let mut td = launched(Kernel::V7_3);
    let model = td.ioctl_mut();
    model.set_private(0x10_0000, 2 * PAGE).unwrap();
    assert_eq!(add_page(model, 0x10_0000), 0);
    assert_eq!(add_page(model, 0x10_0000), libc::EIO);
    assert_eq!(model.twice, vec![0x10_0000]);
    // Not dead: the next page goes in.
    assert_eq!(add_page(model, 0x10_1000), 0);
}

/// Runs a two-page measured plan with `event` scripted, on `kernel`.
fn run_with(kernel: Kernel, event: Event) -> (TdxBackend<TdxModel>, Result<(), RunError>) {
    let fw = vec![0x5au8; 2 * PAGE as usize];
    let plan = plan(&fw);
    let mut td = launched(kernel);
    td.ioctl_mut().script.push_back(event);
    let r = Driver::new(&mut td).run(&plan).map(|_| ());
    (td, r)
}

/// The run stopped on an error the backend marked unrecoverable.
fn unrecoverable(r: Result<(), RunError>) -> RunError {
    let e = r.unwrap_err();
    let stop = e.report().and_then(|r| r.stop.as_ref()).unwrap();
    let StopCause::Backend(b) = &stop.cause else {
        panic!("{e}")
    };
    assert!(b.unrecoverable, "{e}");
    e
}

/// 6.18.2 tdx_gmem_post_populate: a busy TDH.MEM.PAGE.ADD is EBUSY, after kvm_tdp_map_page
/// pre-mapped the page: unrecoverable.
#[test]
fn a_busy_page_add_6_18_is_unrecoverable() {
    let (td, r) = run_with(Kernel::V6_18, Event::PageAddBusy { after_pages: 1 });
    unrecoverable(r);
    let u = td.unrecoverable().unwrap();
    assert_eq!(
        (u.errno, u.page_state),
        (libc::EBUSY, PageState::PreMappedNotAdded)
    );
    assert_eq!(td.ioctl().premapped(), 1);
}

/// 7.3.4 tdx_mem_page_add returns -EBUSY into the TDP MMU, which makes it RET_PF_RETRY, and
/// kvm_tdp_mmu_map_private_pfn loops: the caller never sees it, and MRTD is the plan's.
#[test]
fn a_busy_page_add_7_3_is_retried_inside_the_kernel() {
    let fw = vec![0x5au8; 2 * PAGE as usize];
    let (mut td, r) = run_with(Kernel::V7_3, Event::PageAddBusy { after_pages: 1 });
    r.unwrap();
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan(&fw)).unwrap()));
}

/// 6.18.2: a failed PAGE.ADD (EIO) leaves the page pre-mapped, the VM alive: finalize is
/// EINVAL (tdx_td_finalize: nr_premapped).
#[test]
fn a_failed_page_add_6_18_leaves_a_pre_mapped_page_and_the_vm_alive() {
    let (mut td, r) = run_with(Kernel::V6_18, Event::PageAddFailed { after_pages: 0 });
    unrecoverable(r);
    assert_eq!(
        td.unrecoverable().unwrap().page_state,
        PageState::NotAddedOrPartlyMeasured
    );
    let model = td.ioctl_mut();
    let mut cmd = kvm_tdx_cmd {
        id: 4, // KVM_TDX_FINALIZE_VM
        ..Default::default()
    };
    assert_eq!(model.vm_op(&mut cmd, None), Err(libc::EINVAL));
}

/// 7.3.4 tdx_mem_page_add: TDX_BUG_ON marks the VM bugged; every later ioctl is EIO
/// (virt/kvm/kvm_main.c: kvm_vm_ioctl, kvm->vm_dead).
#[test]
fn a_failed_page_add_7_3_kills_the_vm() {
    let (mut td, r) = run_with(Kernel::V7_3, Event::PageAddFailed { after_pages: 0 });
    let e = unrecoverable(r);
    assert!(e.to_string().contains("Linux 7.3.4"), "{e}");
    let u = td.unrecoverable().unwrap();
    assert_eq!((u.errno, u.page_state), (libc::EIO, PageState::VmDead));
    assert_eq!(td.ioctl().premapped(), 0);
    let model = td.ioctl_mut();
    let mut cmd = kvm_tdx_cmd {
        id: 4,
        ..Default::default()
    };
    assert_eq!(model.vm_op(&mut cmd, None), Err(libc::EIO));
}

/// 6.18.2 tdx_gmem_post_populate: a failed MR.EXTEND is EIO with the page added, partly
/// measured, and the VM alive: finalize would succeed with a wrong MRTD.
#[test]
fn a_failed_extend_6_18_leaves_the_vm_finalizable() {
    let (mut td, r) = run_with(
        Kernel::V6_18,
        Event::ExtendFailed {
            after_pages: 1,
            chunk: 3,
        },
    );
    unrecoverable(r);
    let model = td.ioctl_mut();
    assert_eq!(model.added.get(&0x10_1000).unwrap().chunks_extended, 3);
    let mut cmd = kvm_tdx_cmd {
        id: 4,
        ..Default::default()
    };
    assert_eq!(model.vm_op(&mut cmd, None), Ok(()));
}

/// 7.3.4 tdx_gmem_post_populate: TDX_BUG_ON_2 on TDH.MR.EXTEND, the VM dead.
#[test]
fn a_failed_extend_7_3_kills_the_vm() {
    let (mut td, r) = run_with(
        Kernel::V7_3,
        Event::ExtendFailed {
            after_pages: 1,
            chunk: 3,
        },
    );
    unrecoverable(r);
    let model = td.ioctl_mut();
    let mut cmd = kvm_tdx_cmd {
        id: 4,
        ..Default::default()
    };
    assert_eq!(model.vm_op(&mut cmd, None), Err(libc::EIO));
}

/// 6.18.2 kvm_tdp_map_page: a signal after a first fault attempt leaves the folio prepared;
/// the driver's retry of the EINTR meets EEXIST (kvm_gmem_populate), unrecoverable.
#[test]
fn a_signal_after_the_fault_6_18_makes_the_retry_see_eexist() {
    let (td, r) = run_with(Kernel::V6_18, Event::SignalAfterFault { after_pages: 1 });
    unrecoverable(r);
    let u = td.unrecoverable().unwrap();
    assert_eq!(
        (u.errno, u.page_state),
        (libc::EEXIST, PageState::AlreadyPrepared)
    );
}

/// 7.3.4 kvm_tdp_mmu_map_private_pfn: the signal is seen between attempts with nothing
/// mapped, and guest_memfd keeps no preparation state: the retry adds the page.
#[test]
fn a_signal_after_the_fault_7_3_is_retried_cleanly() {
    let fw = vec![0x5au8; 2 * PAGE as usize];
    let (mut td, r) = run_with(Kernel::V7_3, Event::SignalAfterFault { after_pages: 1 });
    r.unwrap();
    td.finalize().unwrap();
    assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan(&fw)).unwrap()));
}

/// 6.18.2 kvm_vm_ioctl_create_vcpu asks the arch (tdx_vcpu_create: EIO once runnable) before
/// looking the id up; 7.3.4 looks the id up first (EEXIST).
#[test]
fn an_id_taken_after_finalize_6_18_is_eio_7_3_is_eexist() {
    for (kernel, errno) in [(Kernel::V6_18, libc::EIO), (Kernel::V7_3, libc::EEXIST)] {
        let mut td = launched(kernel);
        td.finalize().unwrap();
        assert_eq!(td.ioctl_mut().create_vcpu(0), Err(errno), "{kernel}");
    }
}

#[test]
fn errno_meanings_name_each_release() {
    for errno in [libc::EBUSY, libc::EEXIST] {
        assert_eq!(
            init_mem_region_errno_meaning_on(Kernel::V7_3, errno),
            "an errno Linux 7.3 does not return for this command",
            "{errno}"
        );
        assert_ne!(
            init_mem_region_errno_meaning_on(Kernel::V6_18, errno),
            "an errno Linux 6.18 does not return for this command",
            "{errno}"
        );
    }
    assert!(
        init_mem_region_errno_meaning_on(Kernel::V7_3, libc::EINVAL).contains("source_addr of 0")
    );
    assert!(init_mem_region_errno_meaning_on(Kernel::V7_3, libc::EIO).contains("TDX_BUG_ON"));
}

/// 7.3.4: a page someone else added is EIO with the VM alive (RET_PF_SPURIOUS); the backend
/// asks the VM fd and says the page is already in the TD, not that the VM is dead.
#[test]
fn a_page_added_by_someone_else_7_3_is_already_in_the_td() {
    let fw = vec![0x5au8; 2 * PAGE as usize];
    let plan = plan(&fw);
    let mut td = launched(Kernel::V7_3);
    let model = td.ioctl_mut();
    model.set_private(0x10_0000, 2 * PAGE).unwrap();
    assert_eq!(add_page(model, 0x10_1000), 0);
    unrecoverable(Driver::new(&mut td).run(&plan).map(|_| ()));
    let u = td.unrecoverable().unwrap();
    assert_eq!(
        (u.errno, u.page, u.page_state),
        (libc::EIO, 0x10_1000, PageState::AlreadyInTd)
    );
    assert_eq!(u.bytes_in_td(), PAGE);
}

/// 6.18.2: a VM killed before the call (TDH.MR.FINALIZE failing other than busy is a
/// KVM_BUG_ON in tdx_td_finalize) answers INIT_MEM_REGION with EIO from kvm_vcpu_ioctl,
/// before anything: not a pre-mapped page.
#[test]
fn an_eio_from_a_dead_vm_6_18_is_not_a_pre_mapped_page() {
    let fw = vec![0x5au8; 2 * PAGE as usize];
    let plan = plan(&fw);
    let mut td = launched(Kernel::V6_18);
    td.ioctl_mut()
        .vm_faults
        .push_back(tdx_backend::testing::VmFault::FinalizeFailed(
            0xC000_0100_0000_0000,
        ));
    // The memory is made private first (after the VM dies, that ioctl is EIO too); the
    // kernel kills the VM in the failed finalize.
    td.ioctl_mut().set_private(0x10_0000, 2 * PAGE).unwrap();
    assert!(matches!(
        td.finalize(),
        Err(Error::Ioctl {
            op: "KVM_TDX_FINALIZE_VM",
            errno: libc::EIO,
            ..
        })
    ));
    let opts = DriverOptions {
        conversion: ConversionPolicy::CallerConverted,
        ..DriverOptions::default()
    };
    let r = Driver::new(&mut td).with_options(opts).run(&plan);
    unrecoverable(r.map(|_| ()));
    let u = td.unrecoverable().unwrap();
    assert_eq!((u.errno, u.page_state), (libc::EIO, PageState::VmDead));
    assert_eq!(td.ioctl().premapped(), 0);
}

/// A page not private with a source that cannot be pinned: 6.18.2 checks private first
/// (kvm_gmem_populate, then the pin in tdx_gmem_post_populate): EINVAL; 7.3.4 pins first
/// (kvm_gmem_populate, before __kvm_gmem_populate's private check): EFAULT.
#[test]
fn a_shared_page_with_a_bad_source_6_18_is_einval_7_3_is_efault() {
    for (kernel, errno) in [(Kernel::V6_18, libc::EINVAL), (Kernel::V7_3, libc::EFAULT)] {
        let mut td = launched(kernel);
        let model = td.ioctl_mut();
        let buf = vec![0u8; 2 * PAGE as usize];
        let src = aligned_page(&buf);
        // Half a page of source: the pin of the page fails.
        let half = &src[..PAGE as usize / 2];
        assert_eq!(
            init_mem_region(model, 0x10_0000, half.as_ptr() as u64, half),
            errno,
            "{kernel}"
        );
        assert!(model.added.is_empty());
    }
}
