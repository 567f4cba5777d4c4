//! The check guest on the real /dev/kvm, over plain anonymous-memory memslots.

use gmem::testing::Need;
use guest_check::{
    checksum, CheckGuest, CheckRange, CopyRange, Error, GuestStop, RangeProblem, SCRATCH_SIZE,
    SCRATCH_SLOT_SIZE,
};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use std::time::Instant;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A VM whose memslots `0..n` are anonymous memory filled with [`pattern`]. Field order matters:
/// the VM (and so its memslots) goes before the memory.
struct TestVm {
    vm: VmFd,
    mem: GuestMemoryMmap,
}

impl TestVm {
    /// Memslot `i` covers `slots[i]` = (GPA, length).
    fn new(kvm: &Kvm, slots: &[(u64, u64)]) -> TestVm {
        let ranges: Vec<_> = slots
            .iter()
            .map(|&(gpa, len)| (GuestAddress(gpa), len as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).expect("anonymous guest memory");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        for (slot, &(gpa, len)) in slots.iter().enumerate() {
            let data: Vec<u8> = (gpa..gpa + len).map(pattern).collect();
            mem.write_slice(&data, GuestAddress(gpa)).expect("fill");
            let host = mem
                .get_host_address(GuestAddress(gpa))
                .expect("host address");
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: host as u64,
            };
            // SAFETY: `host..host + len` is one region of `mem`, which `TestVm` drops only after
            // the VM fd (field order).
            unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
        }
        TestVm { vm, mem }
    }

    /// The host's checksums of `ranges` (which may span adjacent memslots).
    fn expected(&self, ranges: &[CheckRange]) -> Vec<u64> {
        ranges
            .iter()
            .map(|r| {
                let mut bytes = vec![0u8; r.len as usize];
                self.mem
                    .read_slice(&mut bytes, GuestAddress(r.gpa))
                    .expect("range in test memory");
                checksum(r.gpa, &bytes).expect("multiple of 8")
            })
            .collect()
    }
}

/// A byte pattern with no short period, so shifted or swapped data differs.
fn pattern(gpa: u64) -> u8 {
    let x = gpa.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ (gpa >> 12) as u8
}

fn guest_checksums_equal_host_checksums() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 4 * MIB)]);
    let ranges = [
        CheckRange::new(0, 4 * MIB),
        CheckRange::new(0x1000, 8),
        // Unaligned start, crossing the 2 MiB page boundary.
        CheckRange::new(2 * MIB - 0x1003, 0x2000),
        CheckRange::new(4 * MIB - 8, 8),
    ];
    let want = t.expected(&ranges);
    let mut guest = CheckGuest::new(&t.vm, 1, GIB).expect("CheckGuest::new");
    assert_eq!(guest.run(&ranges).expect("run"), want);
    // An empty list finishes at once.
    assert_eq!(guest.run(&[]).expect("empty run"), Vec::<u64>::new());
}

fn one_changed_byte_changes_the_checksum() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 2 * MIB)]);
    let range = [CheckRange::new(0, 2 * MIB)];
    let before_host = t.expected(&range);
    let mut guest = CheckGuest::new(&t.vm, 1, 2 * MIB).expect("CheckGuest::new");
    let before = guest.run(&range).expect("first run");
    assert_eq!(before, before_host);

    // One byte in the middle, changed through the host mapping; the same guest runs again.
    let at = GuestAddress(0x12_3457);
    let byte: u8 = t.mem.read_obj(at).expect("read byte");
    t.mem.write_obj(byte ^ 0x10, at).expect("write byte");
    let after = guest.run(&range).expect("second run");
    assert_ne!(after, before);
    assert_eq!(after, t.expected(&range));
}

fn ranges_across_memslots_are_reported_in_order() {
    let kvm = gmem::testing::kvm();
    // Two adjacent memslots, and a third above 64 GiB: mapping it needs the guest's MAXPHYADDR
    // from the CPUID (with none, KVM assumes 36 bits and the guest faults).
    let high = 100 * GIB + 6 * MIB;
    let t = TestVm::new(&kvm, &[(0, 2 * MIB), (2 * MIB, 4 * MIB), (high, 2 * MIB)]);
    let mut guest = CheckGuest::new(&t.vm, 3, 16 * GIB).expect("CheckGuest::new");
    assert!(
        guest.map_limit() > high + 2 * MIB,
        "map limit {:#x}",
        guest.map_limit()
    );

    // Not in GPA order: the results must follow the given order.
    let ranges = [
        CheckRange::new(high + 0x100, MIB),
        CheckRange::new(2 * MIB - 0x800, 0x1000), // spans slots 0 and 1
        CheckRange::new(0, 2 * MIB),
        CheckRange::new(3 * MIB, 3 * MIB),
        CheckRange::new(high, 2 * MIB),
    ];
    let want = t.expected(&ranges);
    let got = guest.run(&ranges).expect("run");
    assert_eq!(got, want);
    // Every result distinct: the data differs per slot, so no range can stand in for another.
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len());
}

fn sixty_four_mib_at_native_speed() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 64 * MIB)]);
    let range = [CheckRange::new(0, 64 * MIB)];
    let mut guest = CheckGuest::new(&t.vm, 1, GIB).expect("CheckGuest::new");
    let host_start = Instant::now();
    let want = t.expected(&range);
    let host_time = host_start.elapsed();
    for round in 0..2 {
        let start = Instant::now();
        let got = guest.run(&range).expect("run");
        let guest_time = start.elapsed();
        assert_eq!(got, want);
        println!(
            "64 MiB checksum, round {round}: guest (CPL 3, through KVM_RUN) {guest_time:?}, host {host_time:?}"
        );
    }
}

fn unbacked_range_stops_the_guest_with_partial_results() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 2 * MIB)]);
    let good = CheckRange::new(0x100, 0x1000);
    // Starts in slot 0, runs off its end into GPAs no memslot covers.
    let runs_off = CheckRange::new(2 * MIB - 16, 32);
    let want = t.expected(&[good]);
    let mut guest = CheckGuest::new(&t.vm, 1, GIB).expect("CheckGuest::new");
    match guest.run(&[good, runs_off, good]) {
        Err(Error::GuestStopped {
            stop: GuestStop::UnbackedRead { gpa, len },
            rip,
            range,
            total,
            results,
        }) => {
            assert_eq!(gpa, 2 * MIB, "the first unbacked word");
            assert_eq!(len, 8);
            assert_eq!(range, Some(runs_off));
            assert_eq!(total, 3);
            assert_eq!(results, want);
            let rip = rip.expect("RIP readable after an MMIO exit");
            assert!(
                (GIB..GIB + SCRATCH_SLOT_SIZE).contains(&rip),
                "RIP {rip:#x} in the guest code"
            );
        }
        other => panic!("expected an unbacked read, got {other:?}"),
    }
    // The guest is still usable.
    assert_eq!(guest.run(&[good]).expect("run after a stop"), want);
}

fn bad_ranges_are_refused_before_running() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 2 * MIB)]);
    let scratch = 4 * GIB;
    let mut guest = CheckGuest::new(&t.vm, 1, scratch).expect("CheckGuest::new");
    let limit = guest.map_limit();
    let cases = [
        (CheckRange::new(0, 12), RangeProblem::LengthNotMultipleOf8),
        (CheckRange::new(0, 0), RangeProblem::Empty),
        (CheckRange::new(u64::MAX - 7, 16), RangeProblem::Overflow),
        (
            CheckRange::new(limit, 8),
            RangeProblem::AboveMapLimit { limit },
        ),
        (
            CheckRange::new(scratch + SCRATCH_SIZE - 8, 8),
            RangeProblem::OverlapsScratch {
                scratch_gpa: scratch,
            },
        ),
    ];
    for (bad, want) in cases {
        // A valid first range: nothing at all may run (it would be an unbacked read here).
        match guest.run(&[CheckRange::new(0, 8), bad]) {
            Err(Error::InvalidRange {
                index,
                gpa,
                len,
                reason,
            }) => {
                assert_eq!((index, gpa, len, reason), (1, bad.gpa, bad.len, want));
            }
            other => panic!("{bad:?}: expected a refusal, got {other:?}"),
        }
    }
}

fn scratch_area_setup_errors_and_teardown() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 2 * MIB)]);

    match CheckGuest::new(&t.vm, 1, GIB + 4096) {
        Err(Error::ScratchMisaligned { gpa }) => assert_eq!(gpa, GIB + 4096),
        other => panic!("expected misaligned, got {other:?}"),
    }
    // Overlapping the caller's memslot at GPA 0: KVM refuses the memslot.
    match CheckGuest::with_vcpu_id(&t.vm, 1, 0, 5) {
        Err(Error::SetMemslot { slot, gpa, len, .. }) => {
            assert_eq!((slot, gpa, len), (1, 0, SCRATCH_SLOT_SIZE))
        }
        other => panic!("expected a memslot error, got {other:?}"),
    }
    match CheckGuest::with_vcpu_id(&t.vm, 1, 1 << 62, 6) {
        Err(Error::ScratchOutsideMap { gpa, .. }) => assert_eq!(gpa, 1 << 62),
        other => panic!("expected outside map, got {other:?}"),
    }

    let range = [CheckRange::new(0, 2 * MIB)];
    let want = t.expected(&range);
    {
        let mut first = CheckGuest::with_vcpu_id(&t.vm, 1, GIB, 1).expect("first guest");
        assert_eq!(first.report_gpa(), GIB + SCRATCH_SLOT_SIZE);
        assert_eq!(first.run(&range).expect("first run"), want);
        // A second vCPU id cannot be taken twice.
        match CheckGuest::with_vcpu_id(&t.vm, 2, 2 * GIB, 1) {
            Err(Error::CreateVcpu { id, .. }) => assert_eq!(id, 1),
            other => panic!("expected a vCPU error, got {other:?}"),
        }
    }
    // Dropping the first guest removed its memslot: slot 1 at the same GPA is free again.
    let mut second = CheckGuest::with_vcpu_id(&t.vm, 1, GIB, 2).expect("slot reused after drop");
    assert_eq!(second.run(&range).expect("second run"), want);
}

fn memslot_without_host_access_is_a_typed_stop() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 2 * MIB), (2 * MIB, 2 * MIB)]);
    // Slot 1's host memory becomes PROT_NONE: KVM cannot fault it in for the guest.
    let sealed = t
        .mem
        .get_host_address(GuestAddress(2 * MIB))
        .expect("host address");
    // SAFETY: changes the protection of a region `t.mem` owns; nothing reads it from the host
    // afterwards, and unmapping ignores protection.
    let rc = unsafe { libc::mprotect(sealed.cast(), 2 * MIB as usize, libc::PROT_NONE) };
    assert_eq!(rc, 0, "mprotect");

    let good = CheckRange::new(0, 0x1000);
    let want = t.expected(&[good]);
    let mut guest = CheckGuest::new(&t.vm, 2, GIB).expect("CheckGuest::new");
    match guest.run(&[good, CheckRange::new(2 * MIB, 8)]) {
        Err(Error::GuestStopped {
            stop: GuestStop::RunFailed(errno),
            results,
            range,
            ..
        }) => {
            assert_eq!(errno.errno(), libc::EFAULT);
            assert_eq!(results, want);
            assert_eq!(range, Some(CheckRange::new(2 * MIB, 8)));
        }
        other => panic!("expected KVM_RUN to fail with EFAULT, got {other:?}"),
    }
    assert_eq!(guest.run(&[good]).expect("run after a stop"), want);
}

/// A fault in the guest (here: `ud2`; the check guest has no IDT) shuts it down, a typed stop at
/// the faulting instruction, and the guest runs again afterwards. (With the IDT left as reset
/// makes it, over GPA 0 with no memslot, kvm_amd in 6.12 retried the #UD's delivery forever and
/// 7.3 reported `KVM_INTERNAL_ERROR_DELIVERY_EV`: seen in the lab.)
fn fault_in_the_guest_is_a_typed_stop() {
    let kvm = gmem::testing::kvm();
    let vm = kvm.create_vm().unwrap();
    let scratch_gpa = 1u64 << 30;
    let mut guest = CheckGuest::new(&vm, 0, scratch_gpa).unwrap();
    guest.patch_code_for_tests(Some(&[0x0f, 0x0b])); // ud2
    match guest.run(&[]) {
        Err(Error::GuestStopped {
            stop: GuestStop::Shutdown,
            rip,
            range: None,
            total: 0,
            results,
        }) => {
            assert!(results.is_empty());
            // #UD is a fault: RIP stays on the faulting instruction, where the paravirtual KVM
            // leaves it; kvm_amd has already INIT the vCPU when it reports the shutdown (svm.c:
            // shutdown_interception -> kvm_vcpu_reset, 6.12 and 7.3): RIP is the reset vector.
            assert!(
                rip == Some(guest.code_gpa_for_tests()) || rip == Some(0xfff0),
                "{rip:x?}"
            );
        }
        other => panic!("expected a shutdown, got {other:?}"),
    }
    guest.patch_code_for_tests(None);
    assert_eq!(guest.run(&[]).unwrap(), Vec::<u64>::new());
}

/// The copy program moves bytes inside the guest, in order, with any alignment and length.
fn guest_copies_land_where_asked() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 4 * MIB)]);
    let mut host = vec![0u8; (4 * MIB) as usize];
    t.mem.read_slice(&mut host, GuestAddress(0)).expect("read");
    let copies = [
        CopyRange::new(0, 2 * MIB, 0x1000),
        // Unaligned, odd length, crossing a 2 MiB page.
        CopyRange::new(0x3_0003, 2 * MIB - 0x7ff, 0x1001),
        // Later copies see earlier ones: this one reads what the first wrote.
        CopyRange::new(2 * MIB, 3 * MIB, 0x800),
    ];
    for c in copies {
        let (s, d, n) = (c.src as usize, c.dst as usize, c.len as usize);
        let piece = host[s..s + n].to_vec();
        host[d..d + n].copy_from_slice(&piece);
    }
    let mut guest = CheckGuest::new(&t.vm, 1, GIB).expect("CheckGuest::new");
    guest.copy(&copies).expect("copy");
    let mut after = vec![0u8; (4 * MIB) as usize];
    t.mem.read_slice(&mut after, GuestAddress(0)).expect("read");
    assert!(
        after == host,
        "guest memory differs from the host's model of the copies"
    );
    // The checksum program still runs on the same vCPU, and sees the copies.
    let range = [CheckRange::new(2 * MIB - 0x800, 0x2000)];
    assert_eq!(guest.run(&range).expect("run"), t.expected(&range));
    guest.copy(&[]).expect("no copies");
}

/// `write_through_guest` stages host bytes and has the guest copy them, in staging-sized pieces.
fn write_through_guest_in_pieces() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 4 * MIB)]);
    let mut guest = CheckGuest::new(&t.vm, 1, GIB).expect("CheckGuest::new");
    let bytes: Vec<u8> = (0..0x5800u32).map(|i| (i * 7 + 3) as u8).collect();
    match guest.write_through_guest(0x1000, &bytes) {
        Err(Error::NoStaging { gpa: 0x1000, len }) => assert_eq!(len, bytes.len() as u64),
        other => panic!("{other:?}"),
    }
    guest.add_staging(2, 8 * MIB, 0x2000).expect("staging");
    assert_eq!(guest.staging(), Some((8 * MIB, 0x2000)));
    assert!(matches!(
        guest.add_staging(3, 16 * MIB, 0x1000),
        Err(Error::InvalidStaging { .. })
    ));
    // Three pieces through an 8 KiB staging area.
    guest.write_through_guest(0x1_0008, &bytes).expect("write");
    let mut back = vec![0u8; bytes.len()];
    t.mem
        .read_slice(&mut back, GuestAddress(0x1_0008))
        .expect("read");
    assert!(back == bytes);
    // A destination over the staging area is refused before anything is written.
    match guest.write_through_guest(8 * MIB - 8, &[1; 16]) {
        Err(Error::InvalidCopy { reason, .. }) => {
            assert_eq!(reason, RangeProblem::SourceOverlapsDestination)
        }
        other => panic!("{other:?}"),
    }
}

/// Bad copies are refused before the guest runs, naming the copy; an unbacked source stops the
/// guest with the count of copies made.
fn bad_copies_are_refused_or_stop() {
    let kvm = gmem::testing::kvm();
    let t = TestVm::new(&kvm, &[(0, 2 * MIB)]);
    let mut guest = CheckGuest::new(&t.vm, 1, GIB).expect("CheckGuest::new");
    let refused = |guest: &mut CheckGuest<'_>, c: CopyRange| match guest
        .copy(&[CopyRange::new(0, 0x1000, 8), c])
    {
        Err(Error::InvalidCopy {
            index: 1, reason, ..
        }) => reason,
        other => panic!("{c:?}: {other:?}"),
    };
    assert_eq!(
        refused(&mut guest, CopyRange::new(0, 0x1000, 0)),
        RangeProblem::Empty
    );
    assert_eq!(
        refused(&mut guest, CopyRange::new(0x1000, 0x1800, 0x1000)),
        RangeProblem::SourceOverlapsDestination
    );
    assert_eq!(
        refused(&mut guest, CopyRange::new(u64::MAX - 7, 0, 16)),
        RangeProblem::Overflow
    );
    assert_eq!(
        refused(&mut guest, CopyRange::new(0, GIB + 8, 8)),
        RangeProblem::OverlapsScratch { scratch_gpa: GIB }
    );
    let e = guest
        .copy(&[CopyRange::new(0, 0x1000, 0), CopyRange::new(0, 8, 8)])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "copy 0 (0x0 bytes from GPA 0x0 to GPA 0x1000) refused: the length is 0"
    );
    // The second copy reads a GPA no memslot covers.
    match guest.copy(&[CopyRange::new(0, 0x1000, 8), CopyRange::new(4 * MIB, 0, 8)]) {
        Err(Error::CopyStopped {
            stop: GuestStop::UnbackedRead { gpa, .. },
            done: 1,
            total: 2,
            copy: Some(c),
            ..
        }) => {
            assert_eq!(gpa, 4 * MIB);
            assert_eq!(c, CopyRange::new(4 * MIB, 0, 8));
        }
        other => panic!("{other:?}"),
    }
    // The guest runs again after a stop.
    guest
        .copy(&[CopyRange::new(0, 0x1000, 8)])
        .expect("copy after a stop");
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(guest_checksums_equal_host_checksums, Need::Kvm),
        gmem::kvm_test!(one_changed_byte_changes_the_checksum, Need::Kvm),
        gmem::kvm_test!(ranges_across_memslots_are_reported_in_order, Need::Kvm),
        gmem::kvm_test!(sixty_four_mib_at_native_speed, Need::Kvm),
        gmem::kvm_test!(
            unbacked_range_stops_the_guest_with_partial_results,
            Need::Kvm
        ),
        gmem::kvm_test!(bad_ranges_are_refused_before_running, Need::Kvm),
        gmem::kvm_test!(scratch_area_setup_errors_and_teardown, Need::Kvm),
        gmem::kvm_test!(memslot_without_host_access_is_a_typed_stop, Need::Kvm),
        gmem::kvm_test!(fault_in_the_guest_is_a_typed_stop, Need::Kvm),
        gmem::kvm_test!(guest_copies_land_where_asked, Need::Kvm),
        gmem::kvm_test!(write_through_guest_in_pieces, Need::Kvm),
        gmem::kvm_test!(bad_copies_are_refused_or_stop, Need::Kvm),
    ])
}
