//! The real ioctl layer converts through the VM's guest_memfd, not around it: after the backend
//! makes a range private, the handle's record (`GuestMemfd::private_ranges`) has it, and a range
//! bound to none of the layer's guest_memfds is refused (a bare `KVM_SET_MEMORY_ATTRIBUTES`
//! would take it, and the record would not know). Needs a software-protected VM with private
//! memory attributes and guest_memfd: the lab kernel (lab/tests.txt).

use cc_populate::testing as testing_cc;
use gmem::testing::{self, Need};
use gmem::{GmemFlags, GuestMemfd};
use std::os::fd::AsFd;

use sev_backend::{KvmSevIoctl, KvmSevRef, LaunchConfig, SevIoctl, SnpBackend};

const PAGE: u64 = 4096;
const GPA: u64 = 0x10_0000;

fn dev_null() -> std::fs::File {
    std::fs::File::open("/dev/null").unwrap()
}

fn make_private_goes_through_the_guest_memfd_and_its_record() {
    let (_kvm, vm) = testing::protected_vm();
    let mut g = GuestMemfd::create(&vm, 16 * PAGE, GmemFlags::empty()).unwrap();
    // GPA [GPA, GPA + 8 pages) is file [4 pages, 12 pages).
    let _slot = g.bind(0, GPA, 4 * PAGE, 8 * PAGE).unwrap();
    let mut io = KvmSevIoctl::new(vm, dev_null());
    io.add_guest_memfd(&mut g);
    let mut snp = SnpBackend::with_ioctl(io, LaunchConfig::default());

    testing_cc::check_make_private_through_gmem(&mut snp, GPA);
    drop(snp);
    testing_cc::check_recorded_private(&g);
}

fn without_its_guest_memfd_the_layer_converts_nothing() {
    let (_kvm, vm) = testing::default_vm();
    let mut io = KvmSevIoctl::new(vm, dev_null());
    assert_eq!(io.set_private(GPA, PAGE), Err(libc::EINVAL));
}

/// A VMM that owns its VM fd, `/dev/sev` (here `/dev/null` standing in) and guest_memfd lends
/// them: the same conversion through the guest_memfd, and everything is the VMM's again after.
fn a_borrowed_layer_converts_through_the_guest_memfd_and_gives_everything_back() {
    let (_kvm, vm) = testing::protected_vm();
    let sev = dev_null();
    let mut g = GuestMemfd::create(&vm, 16 * PAGE, GmemFlags::empty()).unwrap();
    let _slot = g.bind(0, GPA, 4 * PAGE, 8 * PAGE).unwrap();
    let mut io: KvmSevRef<'_> = KvmSevIoctl::new(&vm, sev.as_fd());
    io.add_guest_memfd(&mut g);
    assert_eq!(io.vm_alive(), Some(true));
    let mut snp = SnpBackend::with_ioctl(io, LaunchConfig::default());
    testing_cc::check_make_private_through_gmem(&mut snp, GPA);
    drop(snp);
    testing_cc::check_recorded_private(&g);
    // The VM fd is the VMM's again, open and usable.
    assert!(vm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_USER_MEMORY)) > 0);
}

/// vCPUs the layer creates on a borrowed VM fd are handed over to the VMM.
fn the_layer_creates_vcpus_and_hands_them_over() {
    let (_kvm, vm) = testing::default_vm();
    let sev = dev_null();
    let mut io = KvmSevIoctl::new(&vm, sev.as_fd());
    io.create_vcpu(0).unwrap();
    io.create_vcpu(1).unwrap();
    // KVM_CREATE_VCPU of an id taken: virt/kvm/kvm_main.c: kvm_vm_ioctl_create_vcpu, EEXIST.
    assert_eq!(io.create_vcpu(1), Err(libc::EEXIST));
    let vcpus = io.take_vcpus();
    assert_eq!(vcpus.len(), 2);
    assert!(io.vcpus().is_empty());
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
        gmem::kvm_test!(
            a_borrowed_layer_converts_through_the_guest_memfd_and_gives_everything_back,
            Need::GuestMemfd,
            Need::UserMemory2,
            Need::PrivateAttributes
        ),
        gmem::kvm_test!(the_layer_creates_vcpus_and_hands_them_over, Need::Kvm),
        gmem::kvm_test!(
            make_private_goes_through_the_guest_memfd_and_its_record,
            Need::GuestMemfd,
            Need::UserMemory2,
            Need::PrivateAttributes
        ),
        gmem::kvm_test!(
            without_its_guest_memfd_the_layer_converts_nothing,
            Need::Kvm
        ),
    ])
}
