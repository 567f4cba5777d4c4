// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A tiny KVM guest that proves guest memory holds exactly what was populated.
//!
//! [`CheckGuest`] runs a vCPU of the caller's VM over a list of guest-physical ranges
//! ([`CheckRange`]); for each range it computes [`checksum`] over the range's little-endian `u64`
//! words, each mixed with its guest-physical address, and reports the result through an MMIO exit.
//! The host computes the same function over the bytes it meant to put at that address and
//! compares: changed bytes and bytes at the wrong place both mismatch (see [`checksum`] for what
//! is certain, what is probable and what is not detected).
//!
//! The guest runs at CPL 3 in 64-bit mode with identity paging, because paravirtual KVMs such as
//! the one on the project's machines run CPL 3 code natively but emulate CPL 0 code one instruction
//! at a time (see the README). The guest's code, page tables, stack and range table live in a
//! *scratch area*: a 2 MiB-aligned window of [`SCRATCH_SIZE`] guest-physical bytes that the caller
//! keeps free of memslots. This crate puts an anonymous-memory memslot over its first
//! [`SCRATCH_SLOT_SIZE`] bytes; the rest stays unbacked and receives the reports.
//!
//! # Example
//!
//! ```no_run
//! use guest_check::{checksum, CheckGuest, CheckRange};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = kvm.create_vm()?;
//!
//! // The caller's memory: 2 MiB of page-aligned anonymous memory at GPA 0, filled with known bytes.
//! let len = 2 << 20;
//! // SAFETY (of this example): a fresh anonymous mapping, checked below.
//! let host = unsafe {
//!     libc::mmap(
//!         std::ptr::null_mut(),
//!         len,
//!         libc::PROT_READ | libc::PROT_WRITE,
//!         libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
//!         -1,
//!         0,
//!     )
//! };
//! assert_ne!(host, libc::MAP_FAILED);
//! // SAFETY (of this example): `host` maps `len` bytes, never unmapped while `vm` lives.
//! let data = unsafe { std::slice::from_raw_parts_mut(host.cast::<u8>(), len) };
//! for (i, b) in data.iter_mut().enumerate() {
//!     *b = (i * 7) as u8;
//! }
//! // SAFETY (of this example): the mapping outlives the VM.
//! unsafe {
//!     vm.set_user_memory_region(kvm_bindings::kvm_userspace_memory_region {
//!         slot: 0,
//!         flags: 0,
//!         guest_phys_addr: 0,
//!         memory_size: len as u64,
//!         userspace_addr: host as u64,
//!     })?;
//! }
//!
//! // Slot 1 and the scratch area at 1 GiB belong to the check guest.
//! let mut guest = CheckGuest::new(&vm, 1, 1 << 30)?;
//! let sums = guest.run(&[CheckRange::new(0, len as u64), CheckRange::new(0x1000, 8)])?;
//! assert_eq!(sums, vec![checksum(0, data)?, checksum(0x1000, &data[0x1000..0x1008])?]);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod code;
mod layout;

use kvm_bindings::{
    kvm_mp_state, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, kvm_vcpu_events,
    KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::fmt;
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use crate::layout::{
    CODE_OFFSET, COPY_CODE_OFFSET, DONE_OFFSET, PAGE_2M, PML4_OFFSET, REPORT_OFFSET,
    STACK_TOP_OFFSET, TABLE_OFFSET,
};

/// Guest-physical bytes the caller reserves for the check guest (6 MiB): a memslot of
/// [`SCRATCH_SLOT_SIZE`] bytes that this crate creates, then 2 MiB that no memslot may cover (the
/// report address lives there).
pub const SCRATCH_SIZE: u64 = layout::SCRATCH_SIZE;
/// Bytes of the memslot this crate creates at the start of the scratch area (4 MiB).
pub const SCRATCH_SLOT_SIZE: u64 = layout::SLOT_SIZE;
/// Required alignment of the scratch area's guest-physical address (2 MiB).
pub const SCRATCH_ALIGN: u64 = PAGE_2M;
/// Most ranges one [`CheckGuest::run`] accepts (the range table's capacity).
pub const MAX_RANGES: usize = layout::MAX_RANGES;
/// Most copies one [`CheckGuest::copy`] accepts (the copy table's capacity).
pub const MAX_COPIES: usize = layout::MAX_COPIES;
/// Highest guest-physical address (exclusive) the page tables can map: 512 GiB. The real limit of
/// a [`CheckGuest`] may be lower, see [`CheckGuest::map_limit`].
pub const MAX_MAPPED_GPA: u64 = layout::MAX_MAP;
/// The vCPU id [`CheckGuest::new`] uses.
pub const DEFAULT_VCPU_ID: u64 = 0;

/// Code segment selector: GDT index 3, RPL 3.
const CS_SELECTOR: u16 = 0x1b;
/// Data and stack segment selector: GDT index 4, RPL 3.
const DS_SELECTOR: u16 = 0x23;
/// CR0: protection enable, extension type, numeric error, write protect, paging.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
/// CR4: physical address extension (required for long mode).
const CR4_PAE: u64 = 1 << 5;
/// EFER: long mode enable and long mode active.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS: bit 1 is reserved and always set; interrupts off.
const RFLAGS_RESERVED: u64 = 1 << 1;
/// Most exits [`CheckGuest`] answers while it lets KVM finish a stopped instruction before a new
/// run (each answers one access of an emulated `rep movsb`; `EBUSY` when exceeded).
const MAX_PENDING_EXITS: usize = 1 << 16;
/// MAXPHYADDR the CPU assumes when CPUID leaf 0x8000_0008 is absent.
const DEFAULT_PHYS_BITS: u32 = 36;

/// Errors of this crate. Every refusal names the range (or byte length) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`checksum`] was given a byte length that is not a multiple of 8.
    #[error("cannot checksum {len} bytes: the length is not a multiple of 8")]
    LengthNotMultipleOf8 {
        /// The byte length given.
        len: usize,
    },
    /// A range given to [`CheckGuest::run`] was refused before the guest ran.
    #[error("range {index} (GPA {gpa:#x}, length {len:#x}) refused: {reason}")]
    InvalidRange {
        /// Position of the range in the list.
        index: usize,
        /// Its first guest-physical address.
        gpa: u64,
        /// Its length in bytes.
        len: u64,
        /// Why.
        reason: RangeProblem,
    },
    /// A copy given to [`CheckGuest::copy`] was refused before the guest ran.
    #[error("copy {index} ({len:#x} bytes from GPA {src:#x} to GPA {dst:#x}) refused: {reason}")]
    InvalidCopy {
        /// Position of the copy in the list.
        index: usize,
        /// Source guest-physical address.
        src: u64,
        /// Destination guest-physical address.
        dst: u64,
        /// Length in bytes.
        len: u64,
        /// Why.
        reason: RangeProblem,
    },
    /// More copies than the copy table holds.
    #[error("{count} copies given, at most {max} fit in one run")]
    TooManyCopies {
        /// Copies given.
        count: usize,
        /// [`MAX_COPIES`].
        max: usize,
    },
    /// The guest stopped before it finished its copies: the first `done` were made.
    #[error(
        "copy guest stopped after {done} of {total} copies{}{}: {stop}",
        fmt_copy(copy),
        fmt_rip(rip)
    )]
    CopyStopped {
        /// What happened.
        stop: GuestStop,
        /// Guest RIP after the exit, where KVM could tell.
        rip: Option<u64>,
        /// The copy being made when it stopped.
        copy: Option<CopyRange>,
        /// Copies completed.
        done: usize,
        /// Copies in the run.
        total: usize,
    },
    /// [`CheckGuest::add_staging`] refused the staging area.
    #[error("staging area at GPA {gpa:#x}, length {len:#x} refused: {reason}")]
    InvalidStaging {
        /// Its GPA.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Why.
        reason: String,
    },
    /// [`CheckGuest::write_through_guest`] was called before [`CheckGuest::add_staging`].
    #[error(
        "cannot write {len:#x} bytes at GPA {gpa:#x} through the guest: no staging area was added"
    )]
    NoStaging {
        /// Destination GPA.
        gpa: u64,
        /// Bytes asked for.
        len: u64,
    },
    /// [`CheckGuest::write_through_guest`] stopped part-way: the first `written` bytes of the
    /// destination hold the new bytes.
    #[error(
        "writing {len:#x} bytes at GPA {gpa:#x} through the guest stopped after {written:#x} bytes"
    )]
    WriteStopped {
        /// Destination GPA.
        gpa: u64,
        /// Bytes asked for.
        len: u64,
        /// Bytes written from the start.
        written: u64,
        /// What stopped it.
        #[source]
        source: Box<Error>,
    },
    /// More ranges than the range table holds.
    #[error("{count} ranges given, at most {max} fit in one run")]
    TooManyRanges {
        /// Ranges given.
        count: usize,
        /// [`MAX_RANGES`].
        max: usize,
    },
    /// The scratch area's GPA is not 2 MiB-aligned.
    #[error("scratch area GPA {gpa:#x} is not aligned to {SCRATCH_ALIGN:#x}")]
    ScratchMisaligned {
        /// The GPA given.
        gpa: u64,
    },
    /// The scratch area (GPA + [`SCRATCH_SIZE`]) does not fit below the mappable limit.
    #[error("scratch area GPA {gpa:#x}, length {SCRATCH_SIZE:#x} ends above the mappable limit {limit:#x}")]
    ScratchOutsideMap {
        /// The GPA given.
        gpa: u64,
        /// The limit: the lower of [`MAX_MAPPED_GPA`] and the guest's physical address width.
        limit: u64,
    },
    /// Opening `/dev/kvm` (to read the supported CPUID) failed.
    #[error("cannot open /dev/kvm to read the supported CPUID")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// Mapping the scratch memory on the host failed.
    #[error("cannot map {len:#x} bytes of anonymous memory for the scratch memslot")]
    MapScratch {
        /// Bytes asked for.
        len: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `KVM_SET_USER_MEMORY_REGION` for the scratch memslot failed (e.g. the slot id is in use or
    /// the range overlaps another memslot).
    #[error("cannot set memslot {slot} at GPA {gpa:#x}, length {len:#x} for the scratch area")]
    SetMemslot {
        /// The slot id.
        slot: u32,
        /// Its GPA.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Creating the vCPU failed (e.g. the id is in use).
    #[error("cannot create vCPU {id}")]
    CreateVcpu {
        /// The vCPU id.
        id: u64,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A vCPU state ioctl failed.
    #[error("{ioctl} on the check vCPU failed")]
    VcpuSetup {
        /// Which ioctl.
        ioctl: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The guest stopped before it finished: `results` holds the checksums of the ranges it
    /// completed, `range` the one it was working on (if any).
    #[error(
        "check guest stopped after {} of {total} ranges{}{}: {stop}",
        results.len(),
        fmt_range(range),
        fmt_rip(rip)
    )]
    GuestStopped {
        /// What happened.
        stop: GuestStop,
        /// Guest RIP after the exit, where KVM could tell.
        rip: Option<u64>,
        /// The range being checked when it stopped.
        range: Option<CheckRange>,
        /// Number of ranges in the run.
        total: usize,
        /// Checksums of the ranges completed before it stopped, in order.
        results: Vec<u64>,
    },
}

fn fmt_range(range: &Option<CheckRange>) -> String {
    match range {
        Some(r) => format!(" (while checking GPA {:#x}, length {:#x})", r.gpa, r.len),
        None => String::new(),
    }
}

fn fmt_copy(copy: &Option<CopyRange>) -> String {
    match copy {
        Some(c) => format!(
            " (while copying {:#x} bytes from GPA {:#x} to GPA {:#x})",
            c.len, c.src, c.dst
        ),
        None => String::new(),
    }
}

fn fmt_rip(rip: &Option<u64>) -> String {
    match rip {
        Some(rip) => format!(" at RIP {rip:#x}"),
        None => String::new(),
    }
}

/// Why a range was refused before the guest ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeProblem {
    /// The length is 0.
    Empty,
    /// The length is not a multiple of 8.
    LengthNotMultipleOf8,
    /// GPA + length overflows `u64`.
    Overflow,
    /// The range ends above the highest address the page tables map.
    AboveMapLimit {
        /// The limit (exclusive).
        limit: u64,
    },
    /// The range overlaps the check guest's own scratch area.
    OverlapsScratch {
        /// Scratch area GPA.
        scratch_gpa: u64,
    },
    /// A copy's source and destination overlap.
    SourceOverlapsDestination,
}

impl fmt::Display for RangeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeProblem::Empty => write!(f, "the length is 0"),
            RangeProblem::LengthNotMultipleOf8 => write!(f, "the length is not a multiple of 8"),
            RangeProblem::Overflow => write!(f, "GPA + length overflows 64 bits"),
            RangeProblem::AboveMapLimit { limit } => {
                write!(f, "it ends above the mappable limit {limit:#x}")
            }
            RangeProblem::OverlapsScratch { scratch_gpa } => write!(
                f,
                "it overlaps the check guest's scratch area at GPA {scratch_gpa:#x}, length {SCRATCH_SIZE:#x}"
            ),
            RangeProblem::SourceOverlapsDestination => {
                write!(f, "its source and destination overlap")
            }
        }
    }
}

/// How the guest stopped when it did not finish.
#[derive(Debug)]
pub enum GuestStop {
    /// `KVM_EXIT_SHUTDOWN`: the vCPU faulted (with no IDT, any exception becomes a triple fault),
    /// e.g. a page fault on an address the page tables do not map. kvm_amd has already reset
    /// the vCPU when it reports this (`svm.c: shutdown_interception`), so the stop's `rip` is
    /// then the reset vector, 0xfff0, not the faulting instruction.
    Shutdown,
    /// `KVM_EXIT_INTERNAL_ERROR` with KVM's suberror code (1 = emulation failure).
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    FailEntry {
        /// `hardware_entry_failure_reason`.
        reason: u64,
        /// Host CPU.
        cpu: u32,
    },
    /// The guest read a GPA no memslot covers (`KVM_EXIT_MMIO`, read): the range is not backed by
    /// memory.
    UnbackedRead {
        /// The GPA read.
        gpa: u64,
        /// Bytes read.
        len: usize,
    },
    /// The guest wrote somewhere other than the report address or completion record, or wrote the
    /// wrong size.
    UnexpectedWrite {
        /// The GPA written.
        gpa: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// The guest reported more results than ranges.
    ExtraResult {
        /// The surplus value.
        value: u64,
    },
    /// The completion record does not match the number of results seen.
    BadCompletion {
        /// Ranges the guest says it checked.
        reported: u64,
    },
    /// `KVM_RUN` itself failed (other than `EINTR`/`EAGAIN`, which are retried).
    RunFailed(kvm_ioctls::Error),
    /// Any other exit, as `kvm-ioctls` describes it.
    OtherExit(String),
}

impl fmt::Display for GuestStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestStop::Shutdown => write!(f, "KVM_EXIT_SHUTDOWN (the guest faulted)"),
            GuestStop::InternalError { suberror } => {
                write!(f, "KVM_EXIT_INTERNAL_ERROR, suberror {suberror}")
            }
            GuestStop::FailEntry { reason, cpu } => write!(
                f,
                "KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x} on host CPU {cpu}"
            ),
            GuestStop::UnbackedRead { gpa, len } => write!(
                f,
                "read of {len} bytes at GPA {gpa:#x}, which no memslot covers"
            ),
            GuestStop::UnexpectedWrite { gpa, data } => {
                write!(f, "unexpected MMIO write of {data:02x?} to GPA {gpa:#x}")
            }
            GuestStop::ExtraResult { value } => {
                write!(f, "a result ({value:#x}) beyond the last range")
            }
            GuestStop::BadCompletion { reported } => {
                write!(f, "completion record says {reported} ranges were checked")
            }
            GuestStop::RunFailed(e) => write!(f, "KVM_RUN failed: {e}"),
            GuestStop::OtherExit(exit) => write!(f, "unexpected exit {exit}"),
        }
    }
}

/// Multiplier that turns a word's guest-physical address into the key XORed into the word
/// (the 64-bit golden-ratio constant, odd so that distinct addresses give distinct keys).
pub const POSITION_KEY: u64 = 0x9e37_79b9_7f4a_7c15;
/// First multiplier of [`mix`] (MurmurHash3's 64-bit finalizer).
pub const MIX_K1: u64 = 0xff51_afd7_ed55_8ccd;
/// Second multiplier of [`mix`] (MurmurHash3's 64-bit finalizer).
pub const MIX_K2: u64 = 0xc4ce_b9fe_1a85_ec53;
/// Shift of each xorshift step of [`mix`].
pub const MIX_SHIFT: u32 = 33;

/// The multiply-xorshift mixer applied to each word: `x ^= x >> 33; x *= MIX_K1; x ^= x >> 33;
/// x *= MIX_K2; x ^= x >> 33` (wrapping multiplications), MurmurHash3's 64-bit finalizer.
///
/// It is a bijection of `u64` (each step is invertible: an xorshift by at least half the width,
/// and a multiplication by an odd constant), and every input bit affects every output bit.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> MIX_SHIFT;
    x = x.wrapping_mul(MIX_K1);
    x ^= x >> MIX_SHIFT;
    x = x.wrapping_mul(MIX_K2);
    x ^= x >> MIX_SHIFT;
    x
}

/// The function the guest computes over the range at guest-physical `gpa` holding `bytes`.
///
/// With `w[i]` the little-endian `u64` words of `bytes` and `p[i] = gpa + 8 * i` their
/// guest-physical addresses, all arithmetic modulo 2^64:
///
/// ```text
/// checksum(gpa, bytes) = sum over i of mix(w[i] ^ (p[i] * POSITION_KEY))
/// ```
///
/// Each word is mixed with its own address, so the same bytes at another address give another
/// value, and [`mix`] is non-linear, so no combination of changes cancels by arithmetic
/// structure the way it can in a weighted sum. The sum makes the result additive over
/// consecutive pieces: `checksum(gpa, a ++ b) == checksum(gpa, a) + checksum(gpa + a.len(), b)`.
///
/// # What a mismatch-free comparison proves, and what it does not
/// The host computes the expected value from the bytes it meant to put at `gpa`; the guest
/// computes the value of the bytes that are there.
/// - **Certain:** a range in which exactly one 8-byte word differs always mismatches (one bit, one
///   byte, one word): for a fixed address the term is a bijection of the word, and no other term
///   changes.
/// - **Two or more words differ** (data populated at a wrong offset, swapped pages or regions,
///   data shifted by a few bytes, a neighbour's write running over, a stale page): the change goes
///   unnoticed only if the differences of the changed terms sum to 0 modulo 2^64. For a fixed,
///   public function there is no proof of a bound; treating `mix` as a random permutation, a
///   given wrong content passes with probability about 2^-64 per range, whatever its structure,
///   as long as the error was not chosen with knowledge of this function (a bug, not an
///   adversary). The blind spots of a linear checksum (two pages with equal word sums swapped,
///   bit 63 flipped in two words an even distance apart, `+d, -2d, +d` on three consecutive words)
///   are not special here; the crate's tests check each of them.
/// - **Not detected:** changes made by someone who knows this function. `mix` and the key are
///   public and invertible, so a second content with the same checksum is computed in a few
///   operations (change one word, then solve for another:
///   `w'[j] = mix^-1(t) ^ (p[j] * POSITION_KEY)`). This is a test oracle, not a MAC or a
///   cryptographic hash; protecting a confidential guest's image against a malicious host is the
///   platform's launch measurement's job. Bytes outside the ranges compared are not checked at
///   all. The one structure that cancels exactly: a content whose mixer inputs
///   `w[i] ^ (p[i] * POSITION_KEY)` are a permutation of the intended ones (the sum does not see
///   order). A word moved from `p` to `q` keeps its input only if it is also XORed with the
///   difference of the two keys, which data does not do by accident unless it is built from
///   addresses times `POSITION_KEY`.
///
/// Refuses a length that is not a multiple of 8. Addresses wrap modulo 2^64 (the guest refuses
/// ranges that overflow before it runs).
pub fn checksum(gpa: u64, bytes: &[u8]) -> Result<u64, Error> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::LengthNotMultipleOf8 { len: bytes.len() });
    }
    let mut key = gpa.wrapping_mul(POSITION_KEY);
    let step = POSITION_KEY.wrapping_mul(8);
    let mut sum = 0u64;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        sum = sum.wrapping_add(mix(u64::from_le_bytes(word) ^ key));
        key = key.wrapping_add(step);
    }
    Ok(sum)
}

/// A guest-physical range to checksum: `len` bytes (a non-zero multiple of 8) from `gpa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckRange {
    /// First guest-physical address (any alignment).
    pub gpa: u64,
    /// Length in bytes: non-zero, a multiple of 8.
    pub len: u64,
}

impl CheckRange {
    /// A range of `len` bytes from `gpa`.
    pub fn new(gpa: u64, len: u64) -> CheckRange {
        CheckRange { gpa, len }
    }
}

/// A copy the guest makes: `len` bytes (non-zero, any alignment) from guest-physical `src` to
/// guest-physical `dst`; the two ranges must not overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyRange {
    /// Source guest-physical address.
    pub src: u64,
    /// Destination guest-physical address.
    pub dst: u64,
    /// Length in bytes.
    pub len: u64,
}

impl CopyRange {
    /// A copy of `len` bytes from `src` to `dst`.
    pub fn new(src: u64, dst: u64, len: u64) -> CopyRange {
        CopyRange { src, dst, len }
    }
}

/// What is wrong with `len` bytes at `gpa` as a range the guest touches: empty, overflowing,
/// above the map limit, or over the scratch area.
fn span_problem(gpa: u64, len: u64, scratch_gpa: u64, map_limit: u64) -> Option<RangeProblem> {
    if len == 0 {
        return Some(RangeProblem::Empty);
    }
    let Some(end) = gpa.checked_add(len) else {
        return Some(RangeProblem::Overflow);
    };
    if end > map_limit {
        return Some(RangeProblem::AboveMapLimit { limit: map_limit });
    }
    let scratch_end = scratch_gpa.saturating_add(SCRATCH_SIZE);
    if gpa < scratch_end && scratch_gpa < end {
        return Some(RangeProblem::OverlapsScratch { scratch_gpa });
    }
    None
}

/// The copy table the copy program reads: per copy `src`, `dst`, `len` as little-endian `u64`
/// ([`code::COPY_CODE`] loads them from `[rbx]`, `[rbx + 8]`, `[rbx + 16]`).
fn copy_table(copies: &[CopyRange]) -> Vec<u8> {
    copies
        .iter()
        .flat_map(|c| [c.src, c.dst, c.len])
        .flat_map(u64::to_le_bytes)
        .collect()
}

/// Checks every copy against the rules of [`CheckGuest::copy`].
fn validate_copies(copies: &[CopyRange], scratch_gpa: u64, map_limit: u64) -> Result<(), Error> {
    if copies.len() > MAX_COPIES {
        return Err(Error::TooManyCopies {
            count: copies.len(),
            max: MAX_COPIES,
        });
    }
    for (index, c) in copies.iter().enumerate() {
        let problem = span_problem(c.src, c.len, scratch_gpa, map_limit)
            .or_else(|| span_problem(c.dst, c.len, scratch_gpa, map_limit))
            .or_else(|| {
                // Both ends are known not to overflow here.
                (c.src < c.dst + c.len && c.dst < c.src + c.len)
                    .then_some(RangeProblem::SourceOverlapsDestination)
            });
        if let Some(reason) = problem {
            return Err(Error::InvalidCopy {
                index,
                src: c.src,
                dst: c.dst,
                len: c.len,
                reason,
            });
        }
    }
    Ok(())
}

/// Checks every range against the rules of [`CheckGuest::run`]; `map_limit` is the exclusive top
/// of the identity map.
fn validate(ranges: &[CheckRange], scratch_gpa: u64, map_limit: u64) -> Result<(), Error> {
    if ranges.len() > MAX_RANGES {
        return Err(Error::TooManyRanges {
            count: ranges.len(),
            max: MAX_RANGES,
        });
    }
    for (index, r) in ranges.iter().enumerate() {
        // The order of the checks: empty, partial word, overflow, map limit, scratch area.
        let problem = if r.len != 0 && r.len % 8 != 0 {
            Some(RangeProblem::LengthNotMultipleOf8)
        } else {
            span_problem(r.gpa, r.len, scratch_gpa, map_limit)
        };
        if let Some(reason) = problem {
            return Err(Error::InvalidRange {
                index,
                gpa: r.gpa,
                len: r.len,
                reason,
            });
        }
    }
    Ok(())
}

/// The guest's physical address width from the host-supported CPUID leaf 0x8000_0008.
fn phys_bits(cpuid: &kvm_bindings::CpuId) -> u32 {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008 && e.index == 0)
        .map(|e| e.eax & 0xff)
        .filter(|bits| (32..=64).contains(bits))
        .unwrap_or(DEFAULT_PHYS_BITS)
}

/// The exclusive top of the identity map for a guest with `phys_bits` of physical address.
fn map_limit(phys_bits: u32) -> u64 {
    MAX_MAPPED_GPA.min(1u64.checked_shl(phys_bits).unwrap_or(u64::MAX))
}

/// A check guest on one VM: its scratch memslot (removed on drop) and one vCPU.
///
/// Create it with [`CheckGuest::new`], then call [`CheckGuest::run`] as often as needed.
#[derive(Debug)]
pub struct CheckGuest<'vm> {
    vm: &'vm VmFd,
    vcpu: VcpuFd,
    /// The memslot's host memory (anonymous, private). `None` only during drop.
    scratch: Option<MmapRegion>,
    slot: u32,
    scratch_gpa: u64,
    map_limit: u64,
    /// The staging area of [`CheckGuest::write_through_guest`], once added.
    staging: Option<Staging>,
}

/// A memslot of anonymous memory the host writes and the guest copies from.
#[derive(Debug)]
struct Staging {
    region: MmapRegion,
    slot: u32,
    gpa: u64,
    len: u64,
}

/// Deletes memslot `slot` at `gpa` whose memory is `region`, then unmaps `region`; if KVM refuses
/// to delete it, the mapping is leaked so the guest never sees memory the host reused.
fn remove_memslot(vm: &VmFd, slot: u32, gpa: u64, region: MmapRegion) {
    let remove = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: 0,
        userspace_addr: region.as_ptr() as u64,
    };
    // SAFETY: a zero `memory_size` deletes the memslot; it makes KVM stop using the mapping
    // rather than start.
    let removed = unsafe { vm.set_user_memory_region(remove) };
    if removed.is_err() {
        // KVM may still point at the mapping: never hand that memory back to the host.
        std::mem::forget(region);
    }
    // Otherwise `region` is unmapped here, after the memslot is gone.
}

impl<'vm> CheckGuest<'vm> {
    /// Sets up a check guest on `vm` with vCPU id [`DEFAULT_VCPU_ID`]; see
    /// [`CheckGuest::with_vcpu_id`].
    pub fn new(
        vm: &'vm VmFd,
        scratch_slot: u32,
        scratch_gpa: u64,
    ) -> Result<CheckGuest<'vm>, Error> {
        CheckGuest::with_vcpu_id(vm, scratch_slot, scratch_gpa, DEFAULT_VCPU_ID)
    }

    /// Sets up a check guest on `vm`.
    ///
    /// `scratch_gpa` is a 2 MiB-aligned guest-physical address; `[scratch_gpa, scratch_gpa +
    /// SCRATCH_SIZE)` must be covered by none of the caller's memslots. The guest's code, page
    /// tables, stack and range table go in a memslot with id `scratch_slot` (anonymous memory)
    /// over the first [`SCRATCH_SLOT_SIZE`] bytes; the memslot is removed when the `CheckGuest` is
    /// dropped. The vCPU `vcpu_id` is created here, given the host-supported CPUID, and kept.
    ///
    /// The page tables identity-map every 2 MiB page below [`CheckGuest::map_limit`].
    pub fn with_vcpu_id(
        vm: &'vm VmFd,
        scratch_slot: u32,
        scratch_gpa: u64,
        vcpu_id: u64,
    ) -> Result<CheckGuest<'vm>, Error> {
        if !scratch_gpa.is_multiple_of(SCRATCH_ALIGN) {
            return Err(Error::ScratchMisaligned { gpa: scratch_gpa });
        }
        let kvm = Kvm::new().map_err(Error::OpenKvm)?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::SupportedCpuid)?;
        let map_limit = map_limit(phys_bits(&cpuid));
        if scratch_gpa
            .checked_add(SCRATCH_SIZE)
            .is_none_or(|end| end > map_limit)
        {
            return Err(Error::ScratchOutsideMap {
                gpa: scratch_gpa,
                limit: map_limit,
            });
        }

        let scratch =
            MmapRegion::<()>::new(SCRATCH_SLOT_SIZE as usize).map_err(|e| Error::MapScratch {
                len: SCRATCH_SLOT_SIZE,
                source: match e {
                    vm_memory::mmap::MmapRegionError::Mmap(io) => io,
                    other => std::io::Error::other(other.to_string()),
                },
            })?;
        // Everything below the range table: page tables, code, stack.
        let mut image = vec![0u8; TABLE_OFFSET as usize];
        layout::build_page_tables(&mut image, scratch_gpa, map_limit);
        let code_at = CODE_OFFSET as usize;
        image[code_at..code_at + code::GUEST_CODE.len()].copy_from_slice(&code::GUEST_CODE);
        let copy_at = COPY_CODE_OFFSET as usize;
        image[copy_at..copy_at + code::COPY_CODE.len()].copy_from_slice(&code::COPY_CODE);
        scratch.as_volatile_slice().copy_from(&image);

        let vcpu = vm
            .create_vcpu(vcpu_id)
            .map_err(|source| Error::CreateVcpu {
                id: vcpu_id,
                source,
            })?;
        vcpu.set_cpuid2(&cpuid).map_err(|source| Error::VcpuSetup {
            ioctl: "KVM_SET_CPUID2",
            source,
        })?;

        // The memslot goes in last: nothing fallible follows, so it never outlives `scratch`
        // without a `CheckGuest` whose drop removes it.
        let region = kvm_userspace_memory_region {
            slot: scratch_slot,
            flags: 0,
            guest_phys_addr: scratch_gpa,
            memory_size: SCRATCH_SLOT_SIZE,
            userspace_addr: scratch.as_ptr() as u64,
        };
        // SAFETY: `userspace_addr..+memory_size` is the live anonymous mapping `scratch`, which the
        // returned `CheckGuest` owns; its `Drop` removes this memslot before unmapping (and leaks
        // the mapping if removal fails), so the guest never sees memory the host reused.
        unsafe { vm.set_user_memory_region(region) }.map_err(|source| Error::SetMemslot {
            slot: scratch_slot,
            gpa: scratch_gpa,
            len: SCRATCH_SLOT_SIZE,
            source,
        })?;

        Ok(CheckGuest {
            vm,
            vcpu,
            scratch: Some(scratch),
            slot: scratch_slot,
            scratch_gpa,
            map_limit,
            staging: None,
        })
    }

    /// The exclusive top of the identity map: every range must end at or below it. The lower of
    /// [`MAX_MAPPED_GPA`] and `2^MAXPHYADDR` from the host-supported CPUID (36 bits if absent).
    pub fn map_limit(&self) -> u64 {
        self.map_limit
    }

    /// The scratch area's guest-physical address.
    pub fn scratch_gpa(&self) -> u64 {
        self.scratch_gpa
    }

    /// The guest-physical address the guest reports results to (no memslot covers it).
    pub fn report_gpa(&self) -> u64 {
        self.scratch_gpa + REPORT_OFFSET
    }

    /// Checksums every range in order on the vCPU and returns the results in order:
    /// `result[i] == checksum(ranges[i].gpa, bytes at ranges[i])`.
    ///
    /// Refused before running (typed [`Error::InvalidRange`] / [`Error::TooManyRanges`]): an empty
    /// range, a length that is not a multiple of 8, a range whose end overflows or lies above
    /// [`CheckGuest::map_limit`], a range overlapping the scratch area, more than [`MAX_RANGES`]
    /// ranges. A range over GPAs no memslot backs makes the guest stop with
    /// [`GuestStop::UnbackedRead`]; every stop is an [`Error::GuestStopped`] carrying the results
    /// so far. The guest can be run again after a stop.
    pub fn run(&mut self, ranges: &[CheckRange]) -> Result<Vec<u64>, Error> {
        validate(ranges, self.scratch_gpa, self.map_limit)?;
        self.finish_pending_exit()?;
        let table: Vec<u8> = ranges
            .iter()
            .flat_map(|r| [r.gpa, r.len])
            .flat_map(u64::to_le_bytes)
            .collect();
        self.write_table(&table).ok_or(Error::TooManyRanges {
            count: ranges.len(),
            max: MAX_RANGES,
        })?;
        self.set_entry_state(CODE_OFFSET, ranges.len() as u64)?;

        let report = self.report_gpa();
        let done = self.scratch_gpa + DONE_OFFSET;
        let mut results = Vec::with_capacity(ranges.len());
        loop {
            let stop = match self.next_store() {
                Ok((gpa, value)) if gpa == report => {
                    if results.len() < ranges.len() {
                        results.push(value);
                        continue;
                    }
                    GuestStop::ExtraResult { value }
                }
                Ok((gpa, reported)) if gpa == done => {
                    if reported == results.len() as u64 && results.len() == ranges.len() {
                        return Ok(results);
                    }
                    GuestStop::BadCompletion { reported }
                }
                Ok((gpa, value)) => GuestStop::UnexpectedWrite {
                    gpa,
                    data: value.to_le_bytes().to_vec(),
                },
                Err(stop) => stop,
            };
            return Err(Error::GuestStopped {
                stop,
                rip: self.vcpu.get_regs().ok().map(|r| r.rip),
                range: ranges.get(results.len()).copied(),
                total: ranges.len(),
                results,
            });
        }
    }

    /// Makes every copy in order on the vCPU, from inside the VM: for each [`CopyRange`] the
    /// guest copies `len` bytes from `src` to `dst` with `rep movsb` at CPL 3. Memory the host
    /// cannot write (private memory of a software-protected VM) is written this way.
    ///
    /// Refused before running (typed [`Error::InvalidCopy`] / [`Error::TooManyCopies`]): an empty
    /// copy, a source or destination whose end overflows, lies above [`CheckGuest::map_limit`] or
    /// overlaps the scratch area, overlapping source and destination, more than [`MAX_COPIES`]
    /// copies. A stop part-way is an [`Error::CopyStopped`] saying how many copies were made (the
    /// guest reports after each one); the copy it stopped in may be partly made.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kvm = kvm_ioctls::Kvm::new()?;
    /// # let vm = kvm.create_vm()?;
    /// let mut guest = guest_check::CheckGuest::new(&vm, 1, 1 << 30)?;
    /// // The caller's memory at GPA 0..2 MiB: copy its first page to its second, in the guest.
    /// guest.copy(&[guest_check::CopyRange::new(0, 0x1000, 0x1000)])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy(&mut self, copies: &[CopyRange]) -> Result<(), Error> {
        validate_copies(copies, self.scratch_gpa, self.map_limit)?;
        self.finish_pending_exit()?;
        self.write_table(&copy_table(copies))
            .ok_or(Error::TooManyCopies {
                count: copies.len(),
                max: MAX_COPIES,
            })?;
        self.set_entry_state(COPY_CODE_OFFSET, copies.len() as u64)?;

        let report = self.report_gpa();
        let done_gpa = self.scratch_gpa + DONE_OFFSET;
        let mut done = 0usize;
        loop {
            let stop = match self.next_store() {
                // The guest reports the count after each copy: exactly one more each time.
                Ok((gpa, value)) if gpa == report => {
                    if done < copies.len() && value == done as u64 + 1 {
                        done += 1;
                        continue;
                    }
                    GuestStop::ExtraResult { value }
                }
                Ok((gpa, reported)) if gpa == done_gpa => {
                    if reported == done as u64 && done == copies.len() {
                        return Ok(());
                    }
                    GuestStop::BadCompletion { reported }
                }
                Ok((gpa, value)) => GuestStop::UnexpectedWrite {
                    gpa,
                    data: value.to_le_bytes().to_vec(),
                },
                Err(stop) => stop,
            };
            return Err(Error::CopyStopped {
                stop,
                rip: self.vcpu.get_regs().ok().map(|r| r.rip),
                copy: copies.get(done).copied(),
                done,
                total: copies.len(),
            });
        }
    }

    /// Adds the staging area [`write_through_guest`](CheckGuest::write_through_guest) copies
    /// from: a memslot `slot` of `len` bytes of anonymous memory at guest-physical `gpa`, owned
    /// by this guest and removed when it is dropped.
    ///
    /// Refused ([`Error::InvalidStaging`]): `gpa` or `len` not a multiple of 4 KiB, `len` 0, the
    /// range overflowing, above [`CheckGuest::map_limit`] or over the scratch area, a second
    /// staging area; KVM's refusal (slot in use, overlap) is [`Error::SetMemslot`].
    pub fn add_staging(&mut self, slot: u32, gpa: u64, len: u64) -> Result<(), Error> {
        let refuse = |reason: String| Error::InvalidStaging { gpa, len, reason };
        if self.staging.is_some() {
            return Err(refuse("this guest already has a staging area".into()));
        }
        if !gpa.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            return Err(refuse("GPA and length must be multiples of 4 KiB".into()));
        }
        if let Some(problem) = span_problem(gpa, len, self.scratch_gpa, self.map_limit) {
            return Err(refuse(problem.to_string()));
        }
        let size = usize::try_from(len).map_err(|_| refuse("too long for this host".into()))?;
        let region = MmapRegion::<()>::new(size).map_err(|e| Error::MapScratch {
            len,
            source: match e {
                vm_memory::mmap::MmapRegionError::Mmap(io) => io,
                other => std::io::Error::other(other.to_string()),
            },
        })?;
        let set = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: `userspace_addr..+memory_size` is the live anonymous mapping `region`, which is
        // stored in `self.staging` right below; `Drop` removes this memslot before unmapping it
        // (and leaks the mapping if removal fails), so the guest never sees memory the host
        // reused.
        unsafe { self.vm.set_user_memory_region(set) }.map_err(|source| Error::SetMemslot {
            slot,
            gpa,
            len,
            source,
        })?;
        self.staging = Some(Staging {
            region,
            slot,
            gpa,
            len,
        });
        Ok(())
    }

    /// The staging area's guest-physical address and length, once added.
    pub fn staging(&self) -> Option<(u64, u64)> {
        self.staging.as_ref().map(|s| (s.gpa, s.len))
    }

    /// Puts `bytes` at guest-physical `gpa` from inside the VM: the host writes them to the
    /// staging area ([`add_staging`](CheckGuest::add_staging)), a piece at a time, and the guest
    /// copies each piece to its destination ([`copy`](CheckGuest::copy)). This is how memory the
    /// host cannot write, such as private memory of a software-protected VM, gets its content.
    ///
    /// Refused before anything is written: no staging area ([`Error::NoStaging`]), a destination
    /// overlapping the staging area or otherwise refused by [`copy`](CheckGuest::copy)
    /// ([`Error::InvalidCopy`]). A stop part-way is [`Error::WriteStopped`] with the bytes
    /// written from the start.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kvm = kvm_ioctls::Kvm::new()?;
    /// # let vm = kvm.create_vm()?;
    /// let mut guest = guest_check::CheckGuest::new(&vm, 1, 1 << 30)?;
    /// guest.add_staging(2, 1 << 29, 1 << 20)?;
    /// guest.write_through_guest(0x10_0000, b"written by the guest\0\0\0\0")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_through_guest(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        let len = bytes.len() as u64;
        let Some((staging_gpa, staging_len)) = self.staging() else {
            return Err(Error::NoStaging { gpa, len });
        };
        if bytes.is_empty() {
            return Ok(());
        }
        // The whole destination is checked first, as one copy from the staging area.
        let whole = CopyRange::new(staging_gpa, gpa, len);
        validate_copies(&[whole], self.scratch_gpa, self.map_limit)?;
        let mut written = 0u64;
        for piece in bytes.chunks(usize::try_from(staging_len).unwrap_or(usize::MAX)) {
            let n = piece.len() as u64;
            let staged = self
                .staging
                .as_ref()
                .is_some_and(|s| s.region.as_volatile_slice().write_slice(piece, 0).is_ok());
            let result = if staged {
                self.copy(&[CopyRange::new(staging_gpa, gpa + written, n)])
            } else {
                Err(Error::NoStaging { gpa, len })
            };
            if let Err(source) = result {
                return Err(Error::WriteStopped {
                    gpa,
                    len,
                    written,
                    source: Box::new(source),
                });
            }
            written += n;
        }
        Ok(())
    }

    /// Runs the vCPU until the guest stores 8 bytes to an address no memslot covers (the report
    /// address, the completion record, or elsewhere): that address and the value; or why it
    /// stopped otherwise.
    fn next_store(&mut self) -> Result<(u64, u64), GuestStop> {
        loop {
            return Err(match self.vcpu.run() {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => GuestStop::RunFailed(e),
                Ok(VcpuExit::MmioWrite(gpa, data)) if data.len() == 8 => {
                    return Ok((gpa, le_u64(data)))
                }
                Ok(VcpuExit::MmioWrite(gpa, data)) => GuestStop::UnexpectedWrite {
                    gpa,
                    data: data.to_vec(),
                },
                Ok(VcpuExit::MmioRead(gpa, data)) => GuestStop::UnbackedRead {
                    gpa,
                    len: data.len(),
                },
                Ok(VcpuExit::Shutdown) => GuestStop::Shutdown,
                Ok(VcpuExit::InternalError) => GuestStop::InternalError {
                    suberror: self.internal_suberror(),
                },
                Ok(VcpuExit::FailEntry(reason, cpu)) => GuestStop::FailEntry { reason, cpu },
                Ok(other) => GuestStop::OtherExit(format!("{other:?}")),
            });
        }
    }

    /// Lets KVM finish the instruction of the previous run's last exit without running guest code.
    ///
    /// KVM completes an MMIO access only on the next `KVM_RUN`, from state userspace cannot see or
    /// reset: a new run started with `KVM_SET_REGS` alone would first replay the old access (seen
    /// here: after an unbacked read, the next run reported that read again). `KVM_RUN` with
    /// `immediate_exit` set finishes pending work and returns `EINTR` before entering the guest.
    /// An emulated string instruction (the copy program's `rep movsb` over unbacked memory) goes
    /// on with its next access while it finishes, and that run returns another exit instead of
    /// `EINTR` (seen here: the next copy then faulted in the old `rep movsb`): such MMIO exits
    /// are answered (a read gets whatever the buffer holds) until KVM returns `EINTR` or another
    /// exit, at most [`MAX_PENDING_EXITS`] times; any other answer means nothing is pending.
    fn finish_pending_exit(&mut self) -> Result<(), Error> {
        self.vcpu.set_kvm_immediate_exit(1);
        let mut result = Err(kvm_ioctls::Error::new(libc::EBUSY));
        for _ in 0..MAX_PENDING_EXITS {
            match self.vcpu.run() {
                // The pending instruction's next access: answer it and let KVM go on.
                Ok(VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..)) => continue,
                // Nothing pending (or another stop, e.g. after a shutdown, which a new entry
                // state overrides).
                Ok(_) => {
                    result = Ok(());
                    break;
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    result = Ok(());
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.vcpu.set_kvm_immediate_exit(0);
        result.map_err(|source| Error::VcpuSetup {
            ioctl: "KVM_RUN (immediate_exit, to finish the previous exit)",
            source,
        })
    }

    /// `kvm_run.internal.suberror` after a `KVM_EXIT_INTERNAL_ERROR`.
    fn internal_suberror(&mut self) -> u32 {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only right after KVM_RUN returned exit reason KVM_EXIT_INTERNAL_ERROR, for
        // which the kernel fills the `internal` member of the exit union; reading a `u32` from it
        // is a plain load of initialised memory.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    /// Writes a range or copy table into the scratch memslot; `None` if it does not fit.
    fn write_table(&self, table: &[u8]) -> Option<()> {
        self.scratch.as_ref().and_then(|s| {
            s.as_volatile_slice()
                .write_slice(table, TABLE_OFFSET as usize)
                .ok()
        })
    }

    /// Puts the vCPU in 64-bit mode at CPL 3 at the program at `entry` (an offset in the
    /// scratch area) with a table of `count` entries.
    fn set_entry_state(&self, entry: u64, count: u64) -> Result<(), Error> {
        let mut sregs: kvm_sregs = self.vcpu.get_sregs().map_err(|source| Error::VcpuSetup {
            ioctl: "KVM_GET_SREGS",
            source,
        })?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: CS_SELECTOR,
            type_: 0xb, // execute/read, accessed
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment {
            selector: DS_SELECTOR,
            type_: 0x3, // read/write, accessed
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            base: 0,
            limit: 0x67,
            selector: 0,
            type_: 0xb, // busy 64-bit TSS
            present: 1,
            ..Default::default()
        };
        // No IDT: a fault in the check guest cannot be delivered and shuts it down. (Left as
        // reset makes it, base 0 and limit 0xffff, a fault would read gate descriptors from
        // whatever GPA 0 holds: the VMM's memory, or no memslot, where kvm_amd in 6.12 retries
        // the delivery forever and 7.3 reports KVM_INTERNAL_ERROR_DELIVERY_EV.)
        sregs.idt = kvm_bindings::kvm_dtable {
            base: 0,
            limit: 0,
            ..Default::default()
        };
        sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr3 = self.scratch_gpa + PML4_OFFSET;
        sregs.cr4 = CR4_PAE;
        sregs.efer = EFER_LME | EFER_LMA;
        self.vcpu
            .set_sregs(&sregs)
            .map_err(|source| Error::VcpuSetup {
                ioctl: "KVM_SET_SREGS",
                source,
            })?;

        let regs = kvm_regs {
            rip: self.scratch_gpa + entry,
            rsp: self.scratch_gpa + STACK_TOP_OFFSET,
            rsi: self.scratch_gpa + TABLE_OFFSET,
            rcx: count,
            rdi: self.report_gpa(),
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        };
        self.vcpu
            .set_regs(&regs)
            .map_err(|source| Error::VcpuSetup {
                ioctl: "KVM_SET_REGS",
                source,
            })?;
        // No event left over from a run that stopped in the middle of one: after a fault whose
        // delivery failed, kvm_amd keeps the exception queued (exit_int_info) and would deliver
        // it again at the next entry (seen on Linux 7.3: the next run never reached the code).
        self.vcpu
            .set_vcpu_events(&kvm_vcpu_events::default())
            .map_err(|source| Error::VcpuSetup {
                ioctl: "KVM_SET_VCPU_EVENTS",
                source,
            })?;
        // Runnable: after a shutdown, kvm_amd INITs the vCPU (svm.c: shutdown_interception ->
        // kvm_vcpu_reset), which can leave it waiting for a SIPI that never comes.
        self.vcpu
            .set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(|source| Error::VcpuSetup {
                ioctl: "KVM_SET_MP_STATE",
                source,
            })
    }
}

fn le_u64(data: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = data.len().min(8);
    word[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(word)
}

impl Drop for CheckGuest<'_> {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            remove_memslot(self.vm, staging.slot, staging.gpa, staging.region);
        }
        if let Some(scratch) = self.scratch.take() {
            remove_memslot(self.vm, self.slot, self.scratch_gpa, scratch);
        }
    }
}

/// Test support: the check guest's code, for a test that disassembles it (feature `test-utils`
/// only; not part of the API a VMM uses).
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub fn guest_code_for_tests() -> &'static [u8] {
    &code::GUEST_CODE
}

/// Test support: the copy program's bytes, for a test that disassembles them (feature
/// `test-utils` only; not part of the API a VMM uses).
#[cfg(feature = "test-utils")]
#[doc(hidden)]
pub fn copy_code_for_tests() -> &'static [u8] {
    &code::COPY_CODE
}

/// Test support: lets a test replace the check guest's first instructions (feature
/// `test-utils` only; not part of the API a VMM uses).
#[cfg(feature = "test-utils")]
#[doc(hidden)]
impl CheckGuest<'_> {
    /// Writes `bytes` over the start of the guest code, or with `None` puts the original back.
    pub fn patch_code_for_tests(&self, bytes: Option<&[u8]>) {
        let bytes = bytes.unwrap_or(&code::GUEST_CODE[..code::GUEST_CODE.len().min(16)]);
        if let Some(scratch) = self.scratch.as_ref() {
            let _ = scratch
                .as_volatile_slice()
                .write_slice(bytes, CODE_OFFSET as usize);
        }
    }

    /// The guest-physical address of the guest code's first instruction.
    pub fn code_gpa_for_tests(&self) -> u64 {
        self.scratch_gpa + CODE_OFFSET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_by_hand() {
        // 0 is a fixed point of every step.
        assert_eq!(mix(0), 0);
        // x = 1: x >> 33 = 0, so x = K1; then x ^= x >> 33, x *= K2, x ^= x >> 33.
        let x = MIX_K1;
        let x = (x ^ (x >> 33)).wrapping_mul(MIX_K2);
        assert_eq!(mix(1), x ^ (x >> 33));
    }

    #[test]
    fn checksum_by_hand() {
        // No words: the empty sum.
        assert_eq!(checksum(0x1000, &[]).unwrap(), 0);
        // One zero word at GPA 0: mix(0 ^ 0) = 0.
        assert_eq!(checksum(0, &[0; 8]).unwrap(), 0);
        // One zero word at GPA 8: mix(8 * POSITION_KEY).
        assert_eq!(
            checksum(8, &[0; 8]).unwrap(),
            mix(8u64.wrapping_mul(POSITION_KEY))
        );
        // Word 5 at GPA 0x10, word 7 at 0x18.
        let mut two = 5u64.to_le_bytes().to_vec();
        two.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            checksum(0x10, &two).unwrap(),
            mix(5 ^ 0x10u64.wrapping_mul(POSITION_KEY))
                .wrapping_add(mix(7 ^ 0x18u64.wrapping_mul(POSITION_KEY)))
        );
        // Little-endian: bytes 01 00 .. 00 is the word 1.
        let mut one = [0u8; 8];
        one[0] = 1;
        assert_eq!(checksum(0, &one).unwrap(), mix(1));
    }

    #[test]
    fn the_same_bytes_elsewhere_differ() {
        let bytes = [0x5au8; 64];
        let here = checksum(0x1000, &bytes).unwrap();
        assert_ne!(checksum(0x1008, &bytes).unwrap(), here);
        assert_ne!(checksum(0x2000, &bytes).unwrap(), here);
        // Zeros of different lengths differ.
        assert_ne!(
            checksum(0, &[0; 16]).unwrap(),
            checksum(0, &[0; 24]).unwrap()
        );
    }

    #[test]
    fn checksum_refuses_partial_words() {
        for len in [1usize, 7, 9, 15] {
            match checksum(0, &vec![0u8; len]) {
                Err(Error::LengthNotMultipleOf8 { len: l }) => assert_eq!(l, len),
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    const SCRATCH: u64 = 64 << 20;
    const LIMIT: u64 = 1 << 36;

    fn problem(ranges: &[CheckRange]) -> (usize, RangeProblem) {
        match validate(ranges, SCRATCH, LIMIT) {
            Err(Error::InvalidRange { index, reason, .. }) => (index, reason),
            other => panic!("{ranges:?}: {other:?}"),
        }
    }

    #[test]
    fn validation_refuses_bad_ranges() {
        let ok = CheckRange::new(0, 8);
        assert_eq!(
            problem(&[ok, CheckRange::new(0, 0)]),
            (1, RangeProblem::Empty)
        );
        assert_eq!(
            problem(&[CheckRange::new(8, 12)]),
            (0, RangeProblem::LengthNotMultipleOf8)
        );
        assert_eq!(
            problem(&[CheckRange::new(u64::MAX - 7, 16)]),
            (0, RangeProblem::Overflow)
        );
        assert_eq!(
            problem(&[CheckRange::new(LIMIT - 8, 16)]),
            (0, RangeProblem::AboveMapLimit { limit: LIMIT })
        );
        // Touching either end of the scratch area.
        for r in [
            CheckRange::new(SCRATCH - 8, 16),
            CheckRange::new(SCRATCH + SCRATCH_SIZE - 8, 8),
            CheckRange::new(SCRATCH + REPORT_OFFSET, 8),
        ] {
            assert_eq!(
                problem(&[ok, ok, r]),
                (
                    2,
                    RangeProblem::OverlapsScratch {
                        scratch_gpa: SCRATCH
                    }
                )
            );
        }
    }

    #[test]
    fn validation_accepts_edges() {
        let ranges = [
            CheckRange::new(SCRATCH - 8, 8),
            CheckRange::new(SCRATCH + SCRATCH_SIZE, 8),
            CheckRange::new(LIMIT - 8, 8),
            CheckRange::new(3, 16), // any alignment
        ];
        assert!(validate(&ranges, SCRATCH, LIMIT).is_ok());
        assert!(validate(&[], SCRATCH, LIMIT).is_ok());
    }

    #[test]
    fn copy_table_is_what_the_copy_program_reads() {
        let table = copy_table(&[
            CopyRange::new(0x1122, 0x3344, 0x10),
            CopyRange::new(7, 8, 9),
        ]);
        assert_eq!(table.len() as u64, 2 * layout::COPY_ENTRY);
        let word = |i: usize| u64::from_le_bytes(table[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(1), word(2)), (0x1122, 0x3344, 0x10));
        assert_eq!((word(3), word(4), word(5)), (7, 8, 9));
        // The program: mov rsi, [rbx]; mov rdi, [rbx + 8]; mov rcx, [rbx + 16]; add rbx, 24.
        assert_eq!(&code::COPY_CODE[0x12..0x15], &[0x48, 0x8b, 0x33]);
        assert_eq!(&code::COPY_CODE[0x15..0x19], &[0x48, 0x8b, 0x7b, 0x08]);
        assert_eq!(&code::COPY_CODE[0x19..0x1d], &[0x48, 0x8b, 0x4b, 0x10]);
        assert_eq!(u64::from(code::COPY_CODE[0x20]), layout::COPY_ENTRY);
    }

    #[test]
    fn copy_validation_names_the_copy() {
        let ok = CopyRange::new(0, 0x1000, 8);
        let problem = |c: CopyRange| match validate_copies(&[ok, c], SCRATCH, LIMIT) {
            Err(Error::InvalidCopy {
                index: 1, reason, ..
            }) => reason,
            other => panic!("{c:?}: {other:?}"),
        };
        assert_eq!(problem(CopyRange::new(0, 8, 0)), RangeProblem::Empty);
        assert_eq!(
            problem(CopyRange::new(0, u64::MAX - 3, 8)),
            RangeProblem::Overflow
        );
        assert_eq!(
            problem(CopyRange::new(LIMIT - 8, 0, 16)),
            RangeProblem::AboveMapLimit { limit: LIMIT }
        );
        assert_eq!(
            problem(CopyRange::new(0, SCRATCH + 8, 8)),
            RangeProblem::OverlapsScratch {
                scratch_gpa: SCRATCH
            }
        );
        assert_eq!(
            problem(CopyRange::new(0x100, 0x107, 8)),
            RangeProblem::SourceOverlapsDestination
        );
        // Touching is not overlapping; any alignment and length.
        assert!(validate_copies(
            &[
                CopyRange::new(0x100, 0x108, 8),
                CopyRange::new(3, 0x2001, 5)
            ],
            SCRATCH,
            LIMIT
        )
        .is_ok());
        let many = vec![ok; MAX_COPIES + 1];
        assert!(matches!(
            validate_copies(&many, SCRATCH, LIMIT),
            Err(Error::TooManyCopies { .. })
        ));
        assert!(validate_copies(&many[1..], SCRATCH, LIMIT).is_ok());
    }

    #[test]
    fn validation_refuses_too_many_ranges() {
        let ranges = vec![CheckRange::new(0, 8); MAX_RANGES + 1];
        match validate(&ranges, SCRATCH, LIMIT) {
            Err(Error::TooManyRanges { count, max }) => {
                assert_eq!((count, max), (MAX_RANGES + 1, MAX_RANGES))
            }
            other => panic!("{other:?}"),
        }
        assert!(validate(&ranges[1..], SCRATCH, LIMIT).is_ok());
    }

    #[test]
    fn errors_name_the_range() {
        let e = validate(&[CheckRange::new(0x1000, 12)], SCRATCH, LIMIT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "range 0 (GPA 0x1000, length 0xc) refused: the length is not a multiple of 8"
        );
        let e = Error::GuestStopped {
            stop: GuestStop::UnbackedRead {
                gpa: 0x5000,
                len: 8,
            },
            rip: Some(0x20_201e),
            range: Some(CheckRange::new(0x4000, 0x2000)),
            total: 3,
            results: vec![7],
        };
        assert_eq!(
            e.to_string(),
            "check guest stopped after 1 of 3 ranges (while checking GPA 0x4000, length 0x2000) \
             at RIP 0x20201e: read of 8 bytes at GPA 0x5000, which no memslot covers"
        );
    }

    #[test]
    fn phys_bits_reads_leaf_0x80000008() {
        let entry = |function, eax| kvm_bindings::kvm_cpuid_entry2 {
            function,
            eax,
            ..Default::default()
        };
        let cpuid =
            kvm_bindings::CpuId::from_entries(&[entry(0, 0x10), entry(0x8000_0008, 0x3030)])
                .unwrap();
        assert_eq!(phys_bits(&cpuid), 0x30);
        let cpuid = kvm_bindings::CpuId::from_entries(&[entry(0, 0x10)]).unwrap();
        assert_eq!(phys_bits(&cpuid), 36);
        assert_eq!(map_limit(36), 64 << 30);
        assert_eq!(map_limit(39), 512 << 30);
        assert_eq!(map_limit(48), MAX_MAPPED_GPA);
        assert_eq!(map_limit(64), MAX_MAPPED_GPA);
    }
}
