//! End to end on real KVM: a vCPU runs code written through the shared view of a
//! guest_memfd-backed memslot, reads data written there, and reports what it read by port I/O.

mod common;

use common::*;
use gmem::testing::Need;
use kvm_ioctls::VcpuExit;

/// Guest-physical layout (the memslot maps file offset 0 at GPA 0).
const CODE: u64 = 0x0;
const DATA: u64 = 0x1000;
const RESULT: u64 = 0x2000;
const PORT: u16 = 0x3f8;

/// Real-mode code, assembled by hand:
/// ```text
/// 0:  ba f8 03     mov dx, 0x3f8
/// 3:  be 00 10     mov si, 0x1000
/// 6:  b9 04 00     mov cx, 4
/// 9:  ac           lodsb              ; al = [ds:si++]
/// a:  04 01        add al, 1
/// c:  ee           out dx, al
/// d:  e2 fa        loop 9             ; 0xf - 6 = 9
/// f:  c6 06 00 20 77  mov byte [0x2000], 0x77
/// 14: f4           hlt
/// ```
const PROGRAM: [u8; 21] = [
    0xba, 0xf8, 0x03, 0xbe, 0x00, 0x10, 0xb9, 0x04, 0x00, 0xac, 0x04, 0x01, 0xee, 0xe2, 0xfa, 0xc6,
    0x06, 0x00, 0x20, 0x77, 0xf4,
];

fn vcpu_runs_code_and_reads_data_from_guest_memfd() {
    let (_kvm, vm) = vm();
    let size = 16 * PAGE;
    let g = shared_gmem(&vm, size);
    let view = g.map_shared(0, size).unwrap();
    view.write_at(CODE, &PROGRAM).unwrap();
    let data = [0x10u8, 0x7f, 0xfe, 0x41];
    view.write_at(DATA, &data).unwrap();
    let _slot = g.bind(0, 0, 0, size).unwrap();

    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    let mut out = Vec::new();
    let mut exits = 0;
    loop {
        exits += 1;
        assert!(exits < 100, "guest did not halt; got {out:?}");
        match vcpu.run().unwrap() {
            VcpuExit::IoOut(port, bytes) => {
                assert_eq!(port, PORT);
                out.extend_from_slice(bytes);
            }
            VcpuExit::Hlt => break,
            other => panic!("unexpected exit {other:?} after {out:?}"),
        }
    }
    // Each byte the guest read, plus one (computed here independently of the guest).
    let expect: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
    assert_eq!(out, expect);
    // The guest's own store is visible through the host's view of the same file.
    let mut r = [0u8; 1];
    view.read_at(RESULT, &mut r).unwrap();
    assert_eq!(r, [0x77]);
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![gmem::kvm_test!(
        vcpu_runs_code_and_reads_data_from_guest_memfd,
        Need::GuestMemfd,
        Need::UserMemory2,
        Need::SharedGuestMemfd
    )])
}
