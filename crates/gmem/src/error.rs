//! The crate's [`Error`] type.

use crate::GmemFlags;

/// Everything this crate can refuse or fail with. Each variant names the range it concerns.
///
/// Refusals found by checking the input (all variants except [`Error::Kvm`], [`Error::Io`] and
/// [`Error::Mmap`]) are reported before any system call: nothing has changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The KVM behind the VM fd has no `KVM_CREATE_GUEST_MEMFD` (`KVM_CAP_GUEST_MEMFD` is 0).
    #[error("guest_memfd of {size:#x} bytes: KVM_CAP_GUEST_MEMFD is not offered by this VM")]
    GuestMemfdUnsupported {
        /// Requested size.
        size: u64,
    },
    /// A guest_memfd size of zero, or one that is not a multiple of the page size.
    #[error(
        "guest_memfd size {size:#x}: must be a non-zero multiple of the page size {page_size:#x}"
    )]
    InvalidSize {
        /// Requested size.
        size: u64,
        /// The host page size.
        page_size: u64,
    },
    /// Flags that `KVM_CAP_GUEST_MEMFD_FLAGS` did not offer.
    #[error("guest_memfd of {size:#x} bytes: flags {requested} not offered by this VM (offered: {offered})")]
    FlagsNotOffered {
        /// Requested size.
        size: u64,
        /// The requested flags that were not offered.
        requested: GmemFlags,
        /// What the VM offers.
        offered: GmemFlags,
    },
    /// A zero-length range.
    #[error("range [{offset:#x}, +0): empty range")]
    EmptyRange {
        /// Start of the range.
        offset: u64,
    },
    /// `offset + len` overflows `u64`.
    #[error("range [{offset:#x}, +{len:#x}): offset + length overflows")]
    RangeOverflow {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
    },
    /// The range ends past the end of what it lies in (the file, or a view).
    #[error("range [{offset:#x}, +{len:#x}): ends past the end ({size:#x})")]
    OutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the file or view.
        size: u64,
    },
    /// Offset or length is not a multiple of the page size.
    #[error("range [{offset:#x}, +{len:#x}): not aligned to the page size {page_size:#x}")]
    Unaligned {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The required alignment.
        page_size: u64,
    },
    /// The guest_memfd was created without `MMAP` (or, on a VM without the per-guest_memfd
    /// conversion path, without `INIT_SHARED`), so the host cannot map it.
    #[error("range [{offset:#x}, +{len:#x}): guest_memfd created with flags {flags}, not mappable by the host")]
    NotMappable {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The file's flags.
        flags: GmemFlags,
    },
    /// The range contains pages converted to private.
    #[error("range [{offset:#x}, +{len:#x}): contains private pages from {first_private:#x}")]
    Private {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// First private byte offset in the range.
        first_private: u64,
    },
    /// Conversion between shared and private is not available on this VM.
    #[error("converting [{offset:#x}, +{len:#x}) to {to}: not supported: {reason}")]
    ConversionUnsupported {
        /// Start of the range (file offset).
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The requested state.
        to: crate::MemoryState,
        /// Why.
        reason: &'static str,
    },
    /// The range (or part of it) is not bound to a memslot, so it has no guest-physical address
    /// for `KVM_SET_MEMORY_ATTRIBUTES`.
    #[error("range [{offset:#x}, +{len:#x}): offset {unbound:#x} is not bound to any memslot")]
    NotBound {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// First unbound offset.
        unbound: u64,
    },
    /// A guest-physical range (or part of it, or an empty or overflowing one) that no memslot of
    /// the guest_memfd(s) asked covers, so it has no file offset to convert.
    #[error("GPA range [{gpa:#x}, +{len:#x}): address {unbound:#x} is not bound to a memslot of this guest_memfd")]
    GpaNotBound {
        /// Start of the range.
        gpa: u64,
        /// Length of the range.
        len: u64,
        /// First address not covered.
        unbound: u64,
    },
    /// The file range is already bound to a memslot.
    #[error("range [{offset:#x}, +{len:#x}): already bound to memslot {slot}")]
    AlreadyBound {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The slot it is bound to.
        slot: u32,
    },
    /// The slot's guest-physical range overlaps another memslot (`other` is `None` when the
    /// kernel reported it, `EEXIST`, for a slot this crate did not create).
    #[error("memslot {slot} at GPA [{gpa:#x}, +{len:#x}): overlaps memslot {}", other.map_or_else(|| "(unknown to this handle)".to_string(), |s| s.to_string()))]
    SlotOverlap {
        /// The slot asked for.
        slot: u32,
        /// Its guest-physical start.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The overlapping slot, when known.
        other: Option<u32>,
    },
    /// The slot id is already used by a binding of this guest_memfd.
    #[error("memslot {slot} at GPA [{gpa:#x}, +{len:#x}): slot id already in use")]
    SlotInUse {
        /// The slot asked for.
        slot: u32,
        /// Its guest-physical start.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The shared backing given to [`GuestMemfd::bind_with_shared`](crate::GuestMemfd::bind_with_shared)
    /// cannot serve the slot.
    #[error("memslot {slot} at GPA [{gpa:#x}, +{len:#x}): shared backing refused: {reason}")]
    SharedBacking {
        /// The slot asked for.
        slot: u32,
        /// Its guest-physical start (the backing's start address).
        gpa: u64,
        /// The length of the bound file range.
        len: u64,
        /// Why.
        reason: &'static str,
    },
    /// `KVM_PRE_FAULT_MEMORY` stopped: `[gpa, gpa + done)` was mapped, `gpa + done` failed.
    #[error("KVM_PRE_FAULT_MEMORY on GPA [{gpa:#x}, +{len:#x}): {done:#x} bytes mapped, then {:#x} failed: {source}", gpa.wrapping_add(*done))]
    PreFault {
        /// Start of the range asked for.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Bytes from `gpa` that the kernel mapped before the failure.
        done: u64,
        /// The errno for the page at `gpa + done`.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// The fd given to [`GuestMemfd::adopt`](crate::GuestMemfd::adopt) is not a guest_memfd.
    #[error("fd {fd} is not a guest_memfd (it is {found})")]
    NotGuestMemfd {
        /// The fd.
        fd: i32,
        /// What `/proc/self/fd` names it.
        found: String,
    },
    /// A version of the in-place conversion series this crate does not speak.
    #[error("version v{version} of the guest_memfd in-place conversion series is not supported: {reason}")]
    UnsupportedSeries {
        /// The series version asked for (`v<N>`).
        version: u32,
        /// Why.
        reason: &'static str,
    },
    /// A conversion the kernel failed or refused part-way (the per-guest_memfd path,
    /// `KVM_SET_MEMORY_ATTRIBUTES2`). Each call is all-or-nothing, so the failing call changed
    /// nothing; the calls before it (for runs of the request in file order) did convert, and
    /// `recorded_private` is what the handle now records as private inside the request, which is
    /// what the kernel holds.
    #[error(
        "converting [{offset:#x}, +{len:#x}) to {to} through {path}: the call for \
         [{call_offset:#x}, +{call_len:#x}) failed after {attempts} attempt(s){}: {source}; \
         {done:#x} bytes of the request were converted before it; the handle records private \
         in the request: {}",
        error_offset.map_or_else(String::new, |o| format!(" at offset {o:#x}")),
        ranges(recorded_private)
    )]
    Conversion {
        /// The path the conversion went through.
        path: crate::ConversionPath,
        /// Start of the requested range (file offset).
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// The requested state.
        to: crate::MemoryState,
        /// Start of the failing call's range.
        call_offset: u64,
        /// Length of the failing call's range.
        call_len: u64,
        /// The kernel's `error_offset` (for `EAGAIN`: the first page still in use; for `ENOMEM`:
        /// the call's start), when the errno sets it and it lies in the call's range.
        error_offset: Option<u64>,
        /// How many times the failing call was issued (`EAGAIN` is retried a bounded number of
        /// times).
        attempts: u32,
        /// Bytes of the request converted by earlier calls.
        done: u64,
        /// The ranges the handle records as private inside the request, after the failure.
        recorded_private: Vec<(u64, u64)>,
        /// The errno of the last attempt.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// A KVM ioctl failed.
    #[error("{op} on [{offset:#x}, +{len:#x}): {source}")]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// Start of the range (file offset or GPA, as the ioctl takes it).
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// A file system call (`fallocate`, `madvise`, `fcntl`) failed.
    #[error("{op} on [{offset:#x}, +{len:#x}): {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `mmap` failed.
    #[error("mmap of [{offset:#x}, +{len:#x}): {source}")]
    Mmap {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
}

impl Error {
    /// The errno that stands for this error where an interface reports only one (such as a
    /// platform backend's ioctl layer): the kernel's for [`Error::Kvm`] and [`Error::Io`],
    /// `EINVAL` for a refusal of the input.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Kvm { source, .. } | Error::Conversion { source, .. } => source.errno(),
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EINVAL,
        }
    }
}

/// `[a, b) [c, d)` for a message, or `none`.
fn ranges(r: &[(u64, u64)]) -> String {
    if r.is_empty() {
        return "none".to_string();
    }
    r.iter()
        .map(|(s, e)| format!("[{s:#x}, {e:#x})"))
        .collect::<Vec<_>>()
        .join(" ")
}
