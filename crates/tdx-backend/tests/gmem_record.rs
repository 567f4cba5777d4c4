//! The real ioctl layer converts through the VM's guest_memfd, not around it: after the backend
//! makes a range private, the handle's record (`GuestMemfd::private_ranges`) has it, and a range
//! bound to none of the layer's guest_memfds is refused (a bare `KVM_SET_MEMORY_ATTRIBUTES`
//! would take it, and the record would not know). Needs a software-protected VM with private
//! memory attributes and guest_memfd: the lab kernel (lab/tests.txt).

use cc_populate::testing as testing_cc;
use gmem::testing::{self, Need};
use gmem::{GmemFlags, GuestMemfd};
use tdx_backend::{KvmTdx, TdxBackend, TdxIoctl};

const PAGE: u64 = 4096;
const GPA: u64 = 0x10_0000;

fn make_private_goes_through_the_guest_memfd_and_its_record() {
    let (_kvm, vm) = testing::protected_vm();
    let mut g = GuestMemfd::create(&vm, 16 * PAGE, GmemFlags::empty()).unwrap();
    // GPA [GPA, GPA + 8 pages) is file [4 pages, 12 pages).
    let _slot = g.bind(0, GPA, 4 * PAGE, 8 * PAGE).unwrap();
    let mut td = TdxBackend::new(KvmTdx::new(&vm).with_guest_memfd(&mut g));

    testing_cc::check_make_private_through_gmem(&mut td, GPA);
    drop(td);
    testing_cc::check_recorded_private(&g);
}

fn without_its_guest_memfd_the_layer_converts_nothing() {
    let (_kvm, vm) = testing::default_vm();
    let mut io = KvmTdx::new(&vm);
    assert_eq!(io.set_private(GPA, PAGE), Err(libc::EINVAL));
}

fn main() -> std::process::ExitCode {
    testing::run(vec![
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
