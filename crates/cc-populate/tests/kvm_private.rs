//! The driver on a software-protected VM: each region converted to private, then populated from
//! inside the VM (guest-check's copy program, through a shared staging memslot), and checked from
//! inside the VM (guest-check's checksum program) against the plan's bytes. The memslot's shared
//! backing is filled with the host's junk first and must still hold it afterwards.

use cc_populate::guestcopy::{GuestCopyBackend, GuestWriter};
use cc_populate::{
    Backend, BackendError, ConversionPolicy, Driver, DriverOptions, ErrorKind, Phase, Plan,
    PlanBuilder, Role, RunError, StopCause,
};
use gmem::testing::Need;
use gmem::{GmemFlags, GuestMemfd, Memslot};
use guest_check::{checksum, CheckGuest, CheckRange};
use kvm_ioctls::VmFd;

const MIB: u64 = 1 << 20;
/// The guest_memfd memslot: GPA 0..8 MiB.
const MEM: u64 = 8 * MIB;
/// The check guest's scratch area.
const SCRATCH_GPA: u64 = 1 << 30;
/// The staging memslot the guest copies from (smaller than a 2 MiB chunk, so chunks take
/// several copies).
const STAGING_GPA: u64 = 512 * MIB;
const STAGING_LEN: u64 = MIB;
/// The byte the host writes all over the shared backing.
const JUNK: u8 = 0xee;

/// How the test's writer misbehaves, for the negative tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tamper {
    None,
    /// Flip bit 0 of the byte at this GPA as it is written.
    FlipByteAt(u64),
    /// Report success for writes starting in `[start, end)` without writing them.
    SkipFrom(u64, u64),
}

/// guest-check's check guest as the backend's writer: stage in shared memory, copy in the guest.
struct InGuest<'vm> {
    guest: CheckGuest<'vm>,
    tamper: Tamper,
    writes: u64,
}

impl GuestWriter for InGuest<'_> {
    fn max_write(&self) -> u64 {
        STAGING_LEN
    }

    fn write_private(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), BackendError> {
        self.writes += 1;
        let mut bytes = bytes.to_vec();
        match self.tamper {
            Tamper::None => {}
            Tamper::FlipByteAt(at) => {
                if let Some(b) = at
                    .checked_sub(gpa)
                    .and_then(|i| bytes.get_mut(usize::try_from(i).ok()?))
                {
                    *b ^= 1;
                }
            }
            Tamper::SkipFrom(start, end) => {
                if (start..end).contains(&gpa) {
                    return Ok(());
                }
            }
        }
        self.guest
            .write_through_guest(gpa, &bytes)
            .map_err(|e| BackendError::new(ErrorKind::Failed, e.to_string()))
    }
}

/// A byte pattern with no short period, different per region (`salt`).
fn pattern(len: u64, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + (i >> 12) * 7) as u8) ^ salt)
        .collect()
}

/// A software-protected VM with a guest_memfd memslot over GPA 0..8 MiB whose shared backing the
/// host has filled with [`JUNK`], and a check guest with a staging area.
struct Setup {
    // Field order: the memslot and the guest go before the guest_memfd and the VM.
    slot: Memslot,
    gmem: GuestMemfd,
    vm: VmFd,
    _kvm: kvm_ioctls::Kvm,
}

impl Setup {
    fn new() -> Setup {
        let (kvm, vm) = gmem::testing::protected_vm();
        // No MMAP flag: on 7.3 an mmap-able guest_memfd makes the memslot guest_memfd-only
        // (KVM_MEMSLOT_GMEM_ONLY: shared GPAs are served from the file too, and the host cannot
        // fault its private pages), and 6.12 offers no flags at all. Without it the slot's
        // shared backing is gmem's anonymous mapping at `userspace_addr`.
        let gmem =
            GuestMemfd::create(&vm, MEM, GmemFlags::empty()).expect("KVM_CREATE_GUEST_MEMFD");
        let slot = gmem.bind(0, 0, 0, MEM).expect("bind");
        // SAFETY: gmem documents `userspace_addr` as the memslot's shared backing, an anonymous
        // mapping of `MEM` bytes that the `Memslot` owns and keeps mapped while it lives (it is
        // alive here, and `Setup` drops it first). Nothing else holds a reference into it, and no
        // vCPU runs while the host writes it.
        unsafe {
            std::ptr::write_bytes(slot.userspace_addr() as *mut u8, JUNK, MEM as usize);
        }
        Setup {
            slot,
            gmem,
            vm,
            _kvm: kvm,
        }
    }

    /// The shared backing as the host sees it.
    fn shared_backing(&self) -> Vec<u8> {
        let mut out = vec![0u8; MEM as usize];
        // SAFETY: as in `new`: the memslot's own mapping of `MEM` bytes, alive while `self.slot`
        // is; only read here, while no vCPU runs.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot.userspace_addr() as *const u8,
                out.as_mut_ptr(),
                MEM as usize,
            );
        }
        out
    }
}

fn check_guest(vm: &VmFd) -> CheckGuest<'_> {
    let mut guest = CheckGuest::new(vm, 1, SCRATCH_GPA).expect("CheckGuest::new");
    guest
        .add_staging(2, STAGING_GPA, STAGING_LEN)
        .expect("staging memslot");
    guest
}

/// The checksums of the plan's regions, as the host computes them from the plan.
fn expected(plan: &Plan<'_>) -> Vec<u64> {
    plan.regions()
        .iter()
        .map(|r| {
            let bytes = r
                .source()
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| vec![0; r.len() as usize]);
            checksum(r.gpa(), &bytes).expect("whole words")
        })
        .collect()
}

fn ranges(plan: &Plan<'_>) -> Vec<CheckRange> {
    plan.regions()
        .iter()
        .map(|r| CheckRange::new(r.gpa(), r.len()))
        .collect()
}

/// The regions of the tests: measured bytes over a 2 MiB boundary, unmeasured bytes, a zero
/// region whose private pages held junk before, and measured zeros.
struct Images {
    measured: Vec<u8>,
    unmeasured: Vec<u8>,
}

const MEASURED_GPA: u64 = 0x1f_d000;
const UNMEASURED_GPA: u64 = 0x1000;
const ZERO_GPA: u64 = 0x50_0000;
const ZERO_LEN: u64 = 0x2_0000;

impl Images {
    fn new() -> Images {
        Images {
            measured: pattern(2 * MIB + 0x5000, 0x11),
            unmeasured: pattern(0x3000, 0x5a),
        }
    }

    fn plan(&self, backend: &impl Backend, layout: &cc_populate::MemoryLayout) -> Plan<'_> {
        PlanBuilder::new()
            .source(MEASURED_GPA, Role::Measured, &self.measured)
            .source(UNMEASURED_GPA, Role::Unmeasured, &self.unmeasured)
            .zero(ZERO_GPA, ZERO_LEN)
            .zeros(0x70_0000, 0x2000, Role::Measured)
            .build(&backend.caps(), layout)
            .expect("plan")
    }
}

/// The backend over the test's memslot, writing through `guest` with `tamper`.
fn backend<'g, 'vm>(
    gmem: &'g mut GuestMemfd,
    guest: CheckGuest<'vm>,
    tamper: Tamper,
) -> GuestCopyBackend<'g, InGuest<'vm>> {
    let mut backend = GuestCopyBackend::new(InGuest {
        guest,
        tamper,
        writes: 0,
    });
    backend.add_memslot(0, 0, gmem, 0, MEM);
    backend
}

/// Puts junk into the zero region's *private* pages before the run (through the guest), so the
/// run must really clear them.
fn dirty_zero_region(gmem: &mut GuestMemfd, guest: &mut CheckGuest<'_>) {
    // File offset = GPA: the memslot binds offset 0 at GPA 0.
    gmem.set_private(ZERO_GPA, ZERO_LEN).expect("convert");
    guest
        .write_through_guest(ZERO_GPA, &vec![0x77; ZERO_LEN as usize])
        .expect("dirty the private pages");
    let sum = guest
        .run(&[CheckRange::new(ZERO_GPA, ZERO_LEN)])
        .expect("check the dirt");
    assert_eq!(
        sum,
        [checksum(ZERO_GPA, &vec![0x77; ZERO_LEN as usize]).unwrap()]
    );
}

fn driver_converts_then_the_guest_populates_private_memory() {
    let mut s = Setup::new();
    let images = Images::new();
    let mut guest = check_guest(&s.vm);
    dirty_zero_region(&mut s.gmem, &mut guest);

    let mut backend = backend(&mut s.gmem, guest, Tamper::None);
    let layout = backend.layout().expect("layout");
    let plan = images.plan(&backend, &layout);
    let report = Driver::new(&mut backend).run(&plan).expect("run");
    println!("{report}");

    // The report: every region converted and populated, conversion once per region.
    assert!(report.is_complete(), "{report}");
    for (r, want) in report.regions.iter().zip(plan.regions()) {
        assert_eq!(
            (r.converted, r.populated),
            (want.len(), want.len()),
            "{r:?}"
        );
        assert_eq!(r.convert_calls, 1, "{r:?}");
    }
    // Chunks of at most 2 MiB, cut at the 2 MiB boundary: the measured region takes three calls
    // ([0x1fd000, 0x200000), 2 MiB, 0x2000); the others one each.
    assert_eq!(report.calls(), 3 + 1 + 1 + 1);
    assert_eq!(
        backend.converted(),
        &[
            (UNMEASURED_GPA, UNMEASURED_GPA + 0x3000),
            (MEASURED_GPA, MEASURED_GPA + images.measured.len() as u64),
            (ZERO_GPA, ZERO_GPA + ZERO_LEN),
            (0x70_0000, 0x70_2000),
        ]
    );
    let mut writer = backend.into_writer();
    // Bytes only (zeros are punched): 0x3000 in one write; the measured region's 2 MiB chunk in
    // two 1 MiB pieces, its edges one each.
    assert_eq!(writer.writes, 1 + 1 + 2 + 1);

    // Inside the guest, every private range holds the plan's bytes (the zero region was cleared).
    let want = expected(&plan);
    assert_eq!(writer.guest.run(&ranges(&plan)).expect("guest check"), want);

    // The host's view of the shared backing is its own junk, everywhere.
    let backing = s.shared_backing();
    assert!(
        backing.iter().all(|&b| b == JUNK),
        "the shared backing changed"
    );

    // Converted back to shared, the guest reads that junk at the same GPAs; converted to private
    // again, guest_memfd still holds the plan's bytes.
    let junk: Vec<u64> = plan
        .regions()
        .iter()
        .map(|r| checksum(r.gpa(), &vec![JUNK; r.len() as usize]).unwrap())
        .collect();
    for r in plan.regions() {
        s.gmem.set_shared(r.gpa(), r.len()).expect("to shared");
    }
    assert_eq!(
        writer.guest.run(&ranges(&plan)).expect("shared check"),
        junk
    );
    for r in plan.regions() {
        s.gmem.set_private(r.gpa(), r.len()).expect("to private");
    }
    assert_eq!(
        writer.guest.run(&ranges(&plan)).expect("private again"),
        want
    );
}

/// Runs the plan with a writer that tampers as told; returns the guest's checksums and the
/// expected ones.
fn run_tampered(tamper: Tamper) -> (Vec<u64>, Vec<u64>) {
    let mut s = Setup::new();
    let images = Images::new();
    let mut backend = backend(&mut s.gmem, check_guest(&s.vm), tamper);
    let layout = backend.layout().expect("layout");
    let plan = images.plan(&backend, &layout);
    let report = Driver::new(&mut backend).run(&plan).expect("run");
    // The driver cannot tell: the report says all was populated.
    assert!(report.is_complete());
    let mut writer = backend.into_writer();
    let got = writer.guest.run(&ranges(&plan)).expect("guest check");
    (got, expected(&plan))
}

fn a_wrong_byte_is_caught_by_the_guest() {
    // One bit of the measured region, in its middle chunk.
    let (got, want) = run_tampered(Tamper::FlipByteAt(MEASURED_GPA + MIB + 0x123));
    assert_ne!(got[0], want[0], "the flipped byte went unnoticed");
    assert_eq!(&got[1..], &want[1..], "only the measured region differs");
}

fn a_skipped_populate_is_caught_by_the_guest() {
    // The unmeasured region's write is dropped: its private pages read as fresh zeros.
    let (got, want) = run_tampered(Tamper::SkipFrom(UNMEASURED_GPA, UNMEASURED_GPA + 0x3000));
    assert_ne!(got[1], want[1], "the skipped region went unnoticed");
    assert_eq!(got[1], checksum(UNMEASURED_GPA, &[0; 0x3000]).unwrap());
    assert_eq!(got[0], want[0]);
    assert_eq!(&got[2..], &want[2..]);
}

/// With `CallerConverted` and nothing converted, the backend refuses the first chunk, naming it,
/// and writes nothing.
fn an_unconverted_range_is_refused() {
    let mut s = Setup::new();
    let images = Images::new();
    let mut backend = backend(&mut s.gmem, check_guest(&s.vm), Tamper::None);
    let layout = backend.layout().expect("layout");
    let plan = images.plan(&backend, &layout);
    let options = DriverOptions {
        conversion: ConversionPolicy::CallerConverted,
        ..DriverOptions::default()
    };
    let err = Driver::new(&mut backend)
        .with_options(options)
        .run(&plan)
        .unwrap_err();
    let RunError::Stopped(report) = err else {
        panic!("{err}")
    };
    let stop = report.stop.as_ref().expect("a stop");
    assert_eq!(
        (stop.region, stop.gpa, stop.phase),
        (0, MEASURED_GPA, Phase::Populate)
    );
    let StopCause::Backend(e) = &stop.cause else {
        panic!("{stop}")
    };
    assert!(
        e.detail.contains(&format!("[{MEASURED_GPA:#x}..+0x3000)")),
        "{e}"
    );
    assert_eq!(report.bytes_populated(), 0);
    assert_eq!(backend.into_writer().writes, 0);
    assert!(s.shared_backing().iter().all(|&b| b == JUNK));
}

fn main() -> std::process::ExitCode {
    gmem::testing::run(vec![
        gmem::kvm_test!(
            driver_converts_then_the_guest_populates_private_memory,
            Need::SwProtectedVm,
            Need::PrivateAttributes
        ),
        gmem::kvm_test!(
            a_wrong_byte_is_caught_by_the_guest,
            Need::SwProtectedVm,
            Need::PrivateAttributes
        ),
        gmem::kvm_test!(
            a_skipped_populate_is_caught_by_the_guest,
            Need::SwProtectedVm,
            Need::PrivateAttributes
        ),
        gmem::kvm_test!(
            an_unconverted_range_is_refused,
            Need::SwProtectedVm,
            Need::PrivateAttributes
        ),
    ])
}
