//! [`GuestMemfd`], the owned handle, and conversion between shared and private.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kvm_bindings::{kvm_create_guest_memfd, kvm_memory_attributes};
use kvm_ioctls::VmFd;
use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap, MmapRegion};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::range::{check_pages, page_size, RangeSet};
use crate::series::{AttributesIoctl, KernelAttributes};
use crate::uapi::kvm_memory_attributes2;
use crate::{uapi, Capabilities, Error, GmemFlags, GmemSeries, SharedView};

/// How many times one `KVM_SET_MEMORY_ATTRIBUTES2` call is issued while it answers `EAGAIN`
/// (pages still in use, series v8 `kvm_gmem_is_safe_for_conversion`) before the conversion is
/// reported as failed: the kernel already drains the per-CPU LRU batches once per call (v8
/// patch 18/46), so a reference that outlives a few attempts is a real user (a pin) the caller
/// must remove.
pub const EAGAIN_ATTEMPTS: u32 = 4;

/// How a VM converts guest memory between shared and private.
///
/// Chosen once, at [`GuestMemfd::create`], from the VM's capabilities; callers always convert
/// through [`GuestMemfd::convert`] with file offsets, whatever the path, so a new path is a new
/// variant here and not a change for callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConversionPath {
    /// VM-wide memory attributes: `KVM_SET_MEMORY_ATTRIBUTES` on the VM fd, over the
    /// guest-physical addresses the file range is bound to (so the range must be bound to
    /// memslots of this handle). The guest_memfd's own pages do not become host-mappable by
    /// this path: a shared GPA is backed by the memslot's `userspace_addr`.
    ///
    /// Used when `KVM_CAP_MEMORY_ATTRIBUTES` offers `KVM_MEMORY_ATTRIBUTE_PRIVATE` and the
    /// per-guest_memfd path is not offered.
    VmAttributes,
    /// Per-guest_memfd attributes: `KVM_SET_MEMORY_ATTRIBUTES2` on the **guest_memfd** fd, by
    /// file offset, as the in-place conversion series defines it (pinned per version,
    /// [`GmemSeries`]). The guest_memfd tracks which of its pages are private: a file created
    /// without `INIT_SHARED` starts all private, one with it all shared; the host can map (`MMAP`)
    /// and fault only shared pages (private ones `SIGBUS`); a conversion never touches contents.
    /// Chosen when the probed series' `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` answers
    /// `KVM_MEMORY_ATTRIBUTE_PRIVATE` (module parameter `kvm.gmem_in_place_conversion` on), see
    /// [`Capabilities::conversion_path`](crate::Capabilities::conversion_path).
    ///
    /// Follows the posted series (v8); it has not run on a kernel (no released kernel has it).
    GuestMemfdAttributes(GmemSeries),
}

impl fmt::Display for ConversionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConversionPath::VmAttributes => f.write_str("KVM_SET_MEMORY_ATTRIBUTES"),
            ConversionPath::GuestMemfdAttributes(series) => write!(
                f,
                "KVM_SET_MEMORY_ATTRIBUTES2 (in-place conversion series {series})"
            ),
        }
    }
}

/// The state a range is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryState {
    /// Accessible by the host.
    Shared,
    /// Private to the guest.
    Private,
}

impl fmt::Display for MemoryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryState::Shared => "shared",
            MemoryState::Private => "private",
        })
    }
}

/// One file range bound to a memslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) slot: u32,
    pub(crate) gpa: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    /// A memslot the VMM created and [`GuestMemfd::record_memslot`] recorded (no `Memslot`).
    pub(crate) external: bool,
}

/// The guest-physical pieces `(gpa, len)` of the file range `[offset, end)`, in file order, or
/// [`Error::NotBound`] naming the first offset no binding covers.
fn gpa_pieces(bindings: &[Binding], offset: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> {
    let mut bindings = bindings.to_vec();
    bindings.sort_by_key(|b| b.offset);
    let mut pieces = Vec::new();
    let mut at = offset;
    for b in bindings {
        let b_end = b.offset + b.len;
        if b_end <= at || b.offset >= end {
            continue;
        }
        if b.offset > at {
            break;
        }
        let piece_end = b_end.min(end);
        pieces.push((b.gpa + (at - b.offset), piece_end - at));
        at = piece_end;
        if at == end {
            return Ok(pieces);
        }
    }
    Err(Error::NotBound {
        offset,
        len: end - offset,
        unbound: at,
    })
}

/// What the kernel treats as private in a new file: nothing on the VM-attributes path (a VM's
/// attributes start shared: `kvm_get_memory_attributes`, include/linux/kvm_host.h, 6.12 and
/// 7.3); otherwise (per-guest_memfd attributes, or no conversion at all) the whole file unless
/// it was created `INIT_SHARED` (7.3 `kvm_gmem_is_private_mem`; series v8 patch 01/46
/// `kvm_gmem_init_inode`).
pub(crate) fn initial_private(
    conversion: Option<ConversionPath>,
    flags: GmemFlags,
    size: u64,
) -> RangeSet {
    let mut private = RangeSet::default();
    if conversion != Some(ConversionPath::VmAttributes) && !flags.contains(GmemFlags::INIT_SHARED) {
        private.insert(0, size);
    }
    private
}

/// The checks of a guest_memfd's size and flags against the VM's capabilities, before any
/// system call: `KVM_CAP_GUEST_MEMFD`, a non-zero page-multiple size, flags the VM offers.
pub(crate) fn check_file(caps: &Capabilities, size: u64, flags: GmemFlags) -> Result<(), Error> {
    if !caps.guest_memfd {
        return Err(Error::GuestMemfdUnsupported { size });
    }
    let page_size = page_size();
    if size == 0 || !size.is_multiple_of(page_size) {
        return Err(Error::InvalidSize { size, page_size });
    }
    let missing = flags.difference(caps.guest_memfd_flags);
    if !missing.is_empty() {
        return Err(Error::FlagsNotOffered {
            size,
            requested: missing,
            offered: caps.guest_memfd_flags,
        });
    }
    Ok(())
}

/// A duplicate of the VM fd (`F_DUPFD_CLOEXEC`), so the handle keeps its VM alive.
pub(crate) fn dup_vm_fd(vm: &VmFd, size: u64) -> Result<OwnedFd, Error> {
    // SAFETY: `vm` is borrowed for this whole call, so its fd stays open while borrowed here;
    // the borrow is only used to duplicate it.
    let vm_borrowed = unsafe { BorrowedFd::borrow_raw(vm.as_raw_fd()) };
    vm_borrowed
        .try_clone_to_owned()
        .map_err(|source| Error::Io {
            op: "fcntl(F_DUPFD_CLOEXEC) of the VM fd",
            offset: 0,
            len: size,
            source,
        })
}

/// What the handle and its memslots share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) fd: OwnedFd,
    /// A duplicate of the VM fd the file was created on: memslot and attribute ioctls go to the
    /// file's own VM, and the VM outlives every binding.
    pub(crate) vm: OwnedFd,
    pub(crate) size: u64,
    pub(crate) flags: GmemFlags,
    pub(crate) bindings: Mutex<Vec<Binding>>,
}

impl Shared {
    pub(crate) fn bindings(&self) -> MutexGuard<'_, Vec<Binding>> {
        // A panic while the lock was held cannot leave the Vec half-updated (every update is a
        // single push or retain), so a poisoned lock is safe to use.
        self.bindings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new `File` on the same open file description, for vm-memory's `FileOffset`.
    pub(crate) fn dup_file(&self, offset: u64, len: u64) -> Result<File, Error> {
        self.fd
            .try_clone()
            .map(File::from)
            .map_err(|source| Error::Io {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                offset,
                len,
                source,
            })
    }

    /// Maps `[offset, offset + len)` of the file `MAP_SHARED`, read/write.
    pub(crate) fn map(&self, offset: u64, len: u64) -> Result<MmapRegion<()>, Error> {
        let size = usize::try_from(len).map_err(|_| Error::OutOfBounds {
            offset,
            len,
            size: usize::MAX as u64,
        })?;
        let file = self.dup_file(offset, len)?;
        MmapRegion::from_file(FileOffset::new(file, offset), size).map_err(|source| Error::Mmap {
            offset,
            len,
            source,
        })
    }
}

/// An owned guest_memfd: the file, its size and flags, its memslot bindings, and which of its
/// pages are private.
///
/// Closing: the fd is closed when the handle and every [`Memslot`](crate::Memslot) bound from it
/// are dropped (the kernel keeps the memory while any memslot still uses it).
///
/// # The shared/private invariant
/// A range converted to private cannot be written through a live [`SharedView`] by safe code:
/// - a `SharedView` borrows the handle (`&self`) and [`convert`](Self::convert) needs `&mut self`,
///   so no view exists while a conversion runs;
/// - the handle records private ranges, and [`map_shared`](Self::map_shared) refuses a range
///   that contains any, and every range of a file created without `INIT_SHARED` (the kernel
///   never lets the host fault such a file's pages);
/// - a memslot's own mapping (its `userspace_addr`) is never handed to safe code; a shared
///   backing given to [`bind_with_shared`](Self::bind_with_shared) is separate memory, which
///   holds no private page;
/// - a vm-memory region ([`into_guest_region`](Self::into_guest_region)) consumes the handle, so
///   nothing can convert after it exists.
#[derive(Debug)]
pub struct GuestMemfd {
    pub(crate) shared: Arc<Shared>,
    private: RangeSet,
    conversion: Option<ConversionPath>,
    /// The `KVM_SET_MEMORY_ATTRIBUTES2` seam (the kernel, or a model in tests).
    attributes: Box<dyn AttributesIoctl>,
}

impl GuestMemfd {
    /// Creates a guest_memfd of `size` bytes on `vm` with `flags`.
    ///
    /// Refused before any ioctl: no `KVM_CAP_GUEST_MEMFD`, a size of zero or not a multiple of
    /// the page size, flags the VM does not offer (`KVM_CAP_GUEST_MEMFD_FLAGS`).
    pub fn create(vm: &VmFd, size: u64, flags: GmemFlags) -> Result<GuestMemfd, Error> {
        Self::create_with(vm, &Capabilities::probe(vm), size, flags)
    }

    /// As [`create`](Self::create), with capabilities already probed on `vm`.
    pub fn create_with(
        vm: &VmFd,
        caps: &Capabilities,
        size: u64,
        flags: GmemFlags,
    ) -> Result<GuestMemfd, Error> {
        check_file(caps, size, flags)?;
        let vm_dup = dup_vm_fd(vm, size)?;
        let arg = kvm_create_guest_memfd {
            size,
            flags: flags.bits(),
            ..Default::default()
        };
        let raw = vm.create_guest_memfd(arg).map_err(|source| Error::Kvm {
            op: "KVM_CREATE_GUEST_MEMFD",
            offset: 0,
            len: size,
            source,
        })?;
        // SAFETY: `raw` was just returned by KVM_CREATE_GUEST_MEMFD: an open fd that nothing else
        // owns, so the OwnedFd becomes its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // What the kernel treats as private at creation: see `initial_private`.
        let conversion = caps.conversion_path();
        let private = initial_private(conversion, flags, size);
        Ok(GuestMemfd::from_parts(
            fd, vm_dup, size, flags, private, conversion,
        ))
    }

    /// A handle on `fd` (a guest_memfd of `size` bytes made with `flags` on the VM `vm`
    /// duplicates), with the kernel's conversion path and private ranges as given.
    pub(crate) fn from_parts(
        fd: OwnedFd,
        vm: OwnedFd,
        size: u64,
        flags: GmemFlags,
        private: RangeSet,
        conversion: Option<ConversionPath>,
    ) -> GuestMemfd {
        GuestMemfd {
            shared: Arc::new(Shared {
                fd,
                vm,
                size,
                flags,
                bindings: Mutex::new(Vec::new()),
            }),
            private,
            conversion,
            attributes: Box::new(KernelAttributes),
        }
    }

    /// A handle whose conversions go to `model` instead of the kernel: a memfd of `size` bytes
    /// stands for the guest_memfd (so views map real memory) and its conversion path is the
    /// per-guest_memfd one of `series`. For tests of the conversion path against a model of the
    /// series (`gmem::testing::SeriesModel`); memslot calls on it fail (its "VM" is not one).
    #[cfg(feature = "test-utils")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
    pub fn with_model(
        size: u64,
        flags: GmemFlags,
        series: GmemSeries,
        model: Box<dyn AttributesIoctl>,
    ) -> Result<GuestMemfd, Error> {
        let page_size = page_size();
        if size == 0 || !size.is_multiple_of(page_size) {
            return Err(Error::InvalidSize { size, page_size });
        }
        let io = |op, source| Error::Io {
            op,
            offset: 0,
            len: size,
            source,
        };
        // SAFETY: memfd_create takes a NUL-terminated name that lives across the call and
        // returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(c"gmem-model".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` was just returned by memfd_create: an open fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd);
        file.set_len(size).map_err(|e| io("ftruncate", e))?;
        let fd = OwnedFd::from(file);
        let vm = fd
            .try_clone()
            .map_err(|e| io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        let conversion = Some(ConversionPath::GuestMemfdAttributes(series));
        Ok(GuestMemfd {
            shared: Arc::new(Shared {
                fd,
                vm,
                size,
                flags,
                bindings: Mutex::new(Vec::new()),
            }),
            private: initial_private(conversion, flags, size),
            conversion,
            attributes: model,
        })
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.shared.size
    }

    /// The flags it was created with.
    pub fn flags(&self) -> GmemFlags {
        self.shared.flags
    }

    /// How [`convert`](Self::convert) works on this file's VM, or `None` if it cannot.
    pub fn conversion_path(&self) -> Option<ConversionPath> {
        self.conversion
    }

    /// The file ranges `[start, end)` the kernel treats as private, in order, as this handle
    /// knows them.
    ///
    /// - On a VM with a [`ConversionPath`] (memory attributes, e.g. a software-protected VM):
    ///   the ranges converted to private through this handle, where the guest is given the
    ///   guest_memfd's pages. It starts empty (a VM's attributes start shared) and follows each
    ///   `KVM_SET_MEMORY_ATTRIBUTES` the kernel accepted.
    /// - On a VM without (the default x86 VM type): the whole file unless it was created
    ///   `INIT_SHARED`, the file's own state in the kernel.
    ///
    /// [`map_shared`](Self::map_shared) refuses any range that holds a private page.
    ///
    /// Attributes belong to guest-physical addresses, not to memslots: deleting a memslot leaves
    /// its GPAs' attributes as they were, and a new binding takes those of the GPAs it is bound
    /// at. The record stays with the file range; after binding a range anew elsewhere, convert
    /// it again to make record and kernel agree.
    pub fn private_ranges(&self) -> Vec<(u64, u64)> {
        self.private.iter().collect()
    }

    /// `fallocate(FALLOC_FL_KEEP_SIZE)`: allocates the pages of a page-aligned range.
    pub fn allocate(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.fallocate(
            "fallocate(KEEP_SIZE)",
            libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    /// `fallocate(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)`: frees the pages of a
    /// page-aligned range; they read back as zero.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.fallocate(
            "fallocate(KEEP_SIZE|PUNCH_HOLE)",
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE,
            offset,
            len,
        )
    }

    fn fallocate(&self, op: &'static str, mode: i32, offset: u64, len: u64) -> Result<(), Error> {
        check_pages(offset, len, self.size())?;
        let (off, l) = match (i64::try_from(offset), i64::try_from(len)) {
            (Ok(o), Ok(l)) => (o, l),
            _ => return Err(Error::RangeOverflow { offset, len }),
        };
        // SAFETY: fallocate takes no pointers; the fd is owned by this handle and open.
        let ret = unsafe { libc::fallocate(self.shared.fd.as_raw_fd(), mode, off, l) };
        if ret != 0 {
            return Err(Error::Io {
                op,
                offset,
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn check_host_accessible(&self, offset: u64, len: u64) -> Result<u64, Error> {
        let end = check_pages(offset, len, self.size())?;
        if !self.flags().contains(GmemFlags::MMAP) {
            return Err(Error::NotMappable {
                offset,
                len,
                flags: self.flags(),
            });
        }
        if let Some(first_private) = self.private.first_in(offset, end) {
            return Err(Error::Private {
                offset,
                len,
                first_private,
            });
        }
        // Without INIT_SHARED the kernel refuses every host fault on the file with SIGBUS,
        // whatever the VM's attributes say (7.3 virt/kvm/guest_memfd.c:
        // `kvm_gmem_fault_user_mapping` / `kvm_gmem_is_shared_mem`). With the per-guest_memfd
        // path the file's own attributes decide per page (series v8 patch 01/46
        // `kvm_gmem_fault_user_mapping`), and the record above follows them exactly (a file
        // without INIT_SHARED starts recorded all private).
        let per_file = matches!(
            self.conversion,
            Some(ConversionPath::GuestMemfdAttributes(_))
        );
        if !per_file && !self.flags().contains(GmemFlags::INIT_SHARED) {
            return Err(Error::NotMappable {
                offset,
                len,
                flags: self.flags(),
            });
        }
        Ok(end)
    }

    /// Maps a page-aligned range `MAP_SHARED` for the host to read and write.
    ///
    /// Refused when the file was created without `MMAP` or without `INIT_SHARED`, or the range
    /// holds private pages. The view borrows the handle, so the
    /// handle cannot convert while the view lives; it is unmapped on drop.
    pub fn map_shared(&self, offset: u64, len: u64) -> Result<SharedView<'_>, Error> {
        self.check_host_accessible(offset, len)?;
        let region = self.shared.map(offset, len)?;
        Ok(SharedView::new(region, offset, len))
    }

    /// Turns the handle into a vm-memory region at `guest_base` covering the whole file, for a
    /// VMM's `GuestMemoryMmap`.
    ///
    /// A `GuestRegionMmap` hands out writable access without borrowing anything, so it could
    /// outlive a conversion to private if the handle lived on. This consumes the handle: after
    /// it, nothing can convert this file (memslots already bound stay bound and cannot convert).
    /// Refused when any page is private or the file is not mappable.
    pub fn into_guest_region(self, guest_base: GuestAddress) -> Result<GuestRegionMmap<()>, Error> {
        let size = self.size();
        self.check_host_accessible(0, size)?;
        guest_base.0.checked_add(size).ok_or(Error::RangeOverflow {
            offset: guest_base.0,
            len: size,
        })?;
        let region = self.shared.map(0, size)?;
        GuestRegionMmap::new(region, guest_base).ok_or(Error::RangeOverflow {
            offset: guest_base.0,
            len: size,
        })
    }

    /// Converts a page-aligned file range to `to`.
    ///
    /// Needs `&mut self`: no [`SharedView`] of this handle is alive. Refused before any ioctl,
    /// with nothing changed: an empty, unaligned, out-of-bounds or overflowing range (the kernel
    /// would answer `EINVAL` for the first two: `kvm_vm_ioctl_set_mem_attributes`,
    /// virt/kvm/kvm_main.c, 6.12 and 7.3); [`Error::ConversionUnsupported`] where the VM has no
    /// conversion path (as with the default x86 VM type); [`Error::NotBound`] when part of the
    /// range is not bound to a memslot of this handle. The kernel itself sets attributes on any
    /// guest-physical range, memslot or not; this handle converts by file offset, and an
    /// unbound offset has no guest-physical address to convert.
    ///
    /// The range is converted one memslot at a time, in file order. The kernel converts each
    /// piece whole or not at all (it reserves its memory first: `kvm_vm_set_mem_attributes`,
    /// 6.12 and 7.3), so on a kernel error part-way the pieces before the failing one are
    /// converted and the rest is not; [`private_ranges`](Self::private_ranges) records exactly
    /// that, and the error names the failing piece's guest-physical range.
    ///
    /// ```no_run
    /// use gmem::{GmemFlags, GuestMemfd, MemoryState};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kvm = kvm_ioctls::Kvm::new()?;
    /// let vm = kvm.create_vm_with_type(1)?; // KVM_X86_SW_PROTECTED_VM
    /// let mut gmem = GuestMemfd::create(&vm, 1 << 20, GmemFlags::empty())?;
    /// let _slot = gmem.bind(0, 0x10_0000, 0, 1 << 20)?;
    /// gmem.convert(0, 0x4000, MemoryState::Private)?; // GPA [0x10_0000, +0x4000) private
    /// assert_eq!(gmem.private_ranges(), vec![(0, 0x4000)]);
    /// gmem.convert(0x1000, 0x1000, MemoryState::Shared)?;
    /// assert_eq!(gmem.private_ranges(), vec![(0, 0x1000), (0x2000, 0x4000)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn convert(&mut self, offset: u64, len: u64, to: MemoryState) -> Result<(), Error> {
        let end = check_pages(offset, len, self.size())?;
        let path = self.conversion.ok_or(Error::ConversionUnsupported {
            offset,
            len,
            to,
            reason:
                "KVM_CAP_MEMORY_ATTRIBUTES does not offer KVM_MEMORY_ATTRIBUTE_PRIVATE on this VM",
        })?;
        match path {
            ConversionPath::GuestMemfdAttributes(series) => {
                self.convert_in_file(series, offset, end, to)
            }
            ConversionPath::VmAttributes => {
                // Input checks first: an unbound range changes nothing.
                let pieces = self.gpa_pieces(offset, end)?;
                let mut at = offset;
                for &(gpa, piece_len) in &pieces {
                    self.set_vm_attributes(gpa, piece_len, to)?;
                    match to {
                        MemoryState::Private => self.private.insert(at, at + piece_len),
                        MemoryState::Shared => self.private.remove(at, at + piece_len),
                    }
                    at += piece_len;
                }
                Ok(())
            }
        }
    }

    /// The file offset of the guest-physical range `[gpa, gpa + len)`, which must lie in one
    /// binding of this handle; else [`Error::GpaNotBound`]. For instance to convert the page a
    /// [`MemoryFault`](crate::MemoryFault) names.
    pub fn offset_of_gpa(&self, gpa: u64, len: u64) -> Result<u64, Error> {
        gpa.checked_add(len)
            .ok_or(Error::RangeOverflow { offset: gpa, len })?;
        if len == 0 {
            return Err(Error::EmptyRange { offset: gpa });
        }
        // The one GPA-to-file walk (`gpa_offsets`); one piece means one binding holds it all.
        match self.gpa_offsets(gpa, len)?.as_slice() {
            [(offset, _)] => Ok(*offset),
            // Bound, but across memslots: no single binding covers the address after the first.
            pieces => Err(Error::GpaNotBound {
                gpa,
                len,
                unbound: gpa + pieces.first().map_or(0, |p| p.1),
            }),
        }
    }

    /// [`convert`](Self::convert) to private.
    pub fn set_private(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        self.convert(offset, len, MemoryState::Private)
    }

    /// [`convert`](Self::convert) to shared.
    pub fn set_shared(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        self.convert(offset, len, MemoryState::Shared)
    }

    /// The per-guest_memfd path: `KVM_SET_MEMORY_ATTRIBUTES2` once per run of `[offset, end)`
    /// whose recorded state differs from `to`, in file order. Pages already in the target state
    /// are never part of a call: on series v8 converting a partly-private range destroys the
    /// private part's data ([`GmemSeries::partial_conversion_loses_data`]), and the kernel would
    /// skip them anyway (v8 patch 16/46 returns early for a range already in the state).
    fn convert_in_file(
        &mut self,
        series: GmemSeries,
        offset: u64,
        end: u64,
        to: MemoryState,
    ) -> Result<(), Error> {
        let (runs, attributes) = match to {
            MemoryState::Private => (
                self.private.gaps_in(offset, end),
                uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE,
            ),
            MemoryState::Shared => (self.private.within(offset, end), 0),
        };
        let mut done = 0;
        for (start, stop) in runs {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let mut arg = kvm_memory_attributes2 {
                    offset: start,
                    size: stop - start,
                    attributes,
                    ..Default::default()
                };
                let result = self.attributes.set_memory_attributes2(
                    self.shared.fd.as_fd(),
                    series.set_memory_attributes2(),
                    &mut arg,
                );
                match result {
                    Ok(()) => {
                        match to {
                            MemoryState::Private => self.private.insert(start, stop),
                            MemoryState::Shared => self.private.remove(start, stop),
                        }
                        done += stop - start;
                        break;
                    }
                    Err(e) if e.errno() == libc::EAGAIN && attempts < EAGAIN_ATTEMPTS => {
                        std::thread::yield_now();
                    }
                    Err(source) => {
                        // v8 `kvm_gmem_set_attributes` writes error_offset back on the errors of
                        // `__kvm_gmem_set_attributes` (EAGAIN, ENOMEM) only; an answer outside
                        // the call's range is not reported as if it were true.
                        let error_offset = matches!(source.errno(), libc::EAGAIN | libc::ENOMEM)
                            .then_some(arg.error_offset)
                            .filter(|o| (start..stop).contains(o));
                        return Err(Error::Conversion {
                            path: ConversionPath::GuestMemfdAttributes(series),
                            offset,
                            len: end - offset,
                            to,
                            call_offset: start,
                            call_len: stop - start,
                            error_offset,
                            attempts,
                            done,
                            recorded_private: self.private.within(offset, end),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn gpa_pieces(&self, offset: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> {
        gpa_pieces(&self.shared.bindings(), offset, end)
    }

    fn set_vm_attributes(&self, gpa: u64, len: u64, to: MemoryState) -> Result<(), Error> {
        let attributes = match to {
            MemoryState::Private => uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE,
            MemoryState::Shared => 0,
        };
        let arg = kvm_memory_attributes {
            address: gpa,
            size: len,
            attributes,
            flags: 0,
        };
        // SAFETY: the VM fd is owned by `self.shared`; the kernel only reads `arg`, a valid
        // kvm_memory_attributes that lives across the call.
        let ret = unsafe { ioctl_with_ref(&self.shared.vm, uapi::KVM_SET_MEMORY_ATTRIBUTES, &arg) };
        if ret != 0 {
            return Err(Error::Kvm {
                op: "KVM_SET_MEMORY_ATTRIBUTES",
                offset: gpa,
                len,
                source: errno::Error::last(),
            });
        }
        Ok(())
    }
}

/// The guest_memfd's fd, e.g. for a platform's populate ioctl. What is done with it directly
/// (such as mapping it with another crate) is outside this handle's shared/private tracking.
impl AsRawFd for GuestMemfd {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.fd.as_raw_fd()
    }
}

/// See the `AsRawFd` impl: direct use of the fd is outside the handle's tracking.
impl AsFd for GuestMemfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(slot: u32, gpa: u64, offset: u64, len: u64) -> Binding {
        Binding {
            slot,
            gpa,
            offset,
            len,
            external: false,
        }
    }

    #[test]
    fn gpa_pieces_follow_bindings_in_file_order() {
        // File [0x0, 0x3000) at GPA 0x10_0000, [0x3000, 0x5000) at GPA 0x80_0000; given unsorted.
        let bs = [b(2, 0x80_0000, 0x3000, 0x2000), b(1, 0x10_0000, 0, 0x3000)];
        assert_eq!(
            gpa_pieces(&bs, 0x1000, 0x4000).unwrap(),
            [(0x10_1000, 0x2000), (0x80_0000, 0x1000)]
        );
        assert_eq!(
            gpa_pieces(&bs, 0x3000, 0x5000).unwrap(),
            [(0x80_0000, 0x2000)]
        );
        assert!(matches!(
            gpa_pieces(&bs, 0x4000, 0x6000),
            Err(Error::NotBound {
                unbound: 0x5000,
                ..
            })
        ));
        // A gap between bindings.
        let gap = [b(1, 0, 0, 0x1000), b(2, 0x2000, 0x2000, 0x1000)];
        assert!(matches!(
            gpa_pieces(&gap, 0, 0x3000),
            Err(Error::NotBound {
                unbound: 0x1000,
                ..
            })
        ));
        assert!(matches!(
            gpa_pieces(&[], 0, 0x1000),
            Err(Error::NotBound { unbound: 0, .. })
        ));
    }

    #[test]
    fn display_of_path_and_state() {
        assert_eq!(
            ConversionPath::VmAttributes.to_string(),
            "KVM_SET_MEMORY_ATTRIBUTES"
        );
        assert_eq!(
            ConversionPath::GuestMemfdAttributes(GmemSeries::V8).to_string(),
            "KVM_SET_MEMORY_ATTRIBUTES2 (in-place conversion series v8)"
        );
        assert_eq!(MemoryState::Private.to_string(), "private");
        assert_eq!(MemoryState::Shared.to_string(), "shared");
    }
}
