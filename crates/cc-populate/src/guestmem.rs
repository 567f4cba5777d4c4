//! A source in the VMM's own guest memory: the bytes at a guest-physical address of a vm-memory
//! `GuestMemoryBackend` (such as `GuestMemoryMmap`), which is how QEMU, Cloud Hypervisor and
//! OpenVMM populate (copying from the shared mapping at the same address).

use std::fmt;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// What a [`GuestSource`] needs of the VMM's guest memory: an object-safe view of a vm-memory
/// `GuestMemoryBackend` (implemented for every one that is `Sync`).
pub trait GuestMemorySource: Sync {
    /// Copies the bytes at guest-physical `gpa .. gpa + buf.len()` into `buf`, through
    /// vm-memory's `VolatileSlice`s (a volatile `memcpy`; no `&[u8]` of guest memory is made).
    fn copy_out(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String>;

    /// The file mapped at `gpa`, if the region holding it maps one: its fd (borrowed from the
    /// region) and the file offset of `gpa`.
    fn file_at(&self, gpa: u64) -> Option<(i32, u64)>;
}

impl<M: GuestMemoryBackend + Sync> GuestMemorySource for M {
    fn copy_out(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut at = 0usize;
        for slice in self.get_slices(GuestAddress(gpa), buf.len()) {
            let slice = slice
                .map_err(|e| format!("guest memory at {:#x}: {e}", gpa.wrapping_add(at as u64)))?;
            let part = buf
                .get_mut(at..at + slice.len())
                .ok_or_else(|| format!("guest memory at {gpa:#x}: slices longer than asked"))?;
            slice.copy_to(part);
            at += slice.len();
        }
        if at != buf.len() {
            return Err(format!(
                "guest memory [{gpa:#x}, +{:#x}): only {at:#x} bytes are mapped",
                buf.len()
            ));
        }
        Ok(())
    }

    fn file_at(&self, gpa: u64) -> Option<(i32, u64)> {
        use std::os::fd::AsRawFd;
        let region = self.find_region(GuestAddress(gpa))?;
        let file = region.file_offset()?;
        let MemoryRegionAddress(in_region) = region.to_region_addr(GuestAddress(gpa))?;
        Some((file.file().as_raw_fd(), file.start() + in_region))
    }
}

/// The bytes of a region, read from the VMM's guest memory at `at` (usually the region's own
/// guest-physical address) as each chunk is populated: never copied whole, only chunk by chunk
/// (at most 2 MiB at a time) into the driver's bounce buffer that the backend's call reads.
///
/// Where the VMM's memory at the region's own address *is* the guest_memfd (in place) and the
/// platform makes memory private before populating, its bytes cannot be read once private: on a
/// backend whose kernel populates in place from a zero source
/// ([`InPlacePopulate::ZeroSource`](crate::InPlacePopulate::ZeroSource)) the driver populates
/// the region where it lies (reported as in place); on any other it stops with
/// [`StopCause::SourceUnreadable`](crate::StopCause::SourceUnreadable) saying what it found,
/// before reading.
///
/// ```
/// use cc_populate::testing::LedgerBackend;
/// use cc_populate::{Driver, GuestSource, MemoryLayout, PlanBuilder, Role};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?;
/// mem.write_slice(b"kernel", GuestAddress(0x1000))?;
/// let mut backend = LedgerBackend::new(2 << 20);
/// backend.keep_sources = true;
/// let plan = PlanBuilder::new()
///     .guest(0x1000, 0x2000, Role::Measured, GuestSource::new(&mem, 0x1000))
///     .build(&backend.caps, &MemoryLayout::unbounded())?;
/// let report = Driver::new(&mut backend).run(&plan)?;
/// assert!(report.is_complete());
/// assert_eq!(&backend.kept_at(0x1000, 6).unwrap(), b"kernel");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct GuestSource<'a> {
    memory: &'a dyn GuestMemorySource,
    at: u64,
}

impl<'a> GuestSource<'a> {
    /// The bytes at guest-physical `at` of `memory`.
    pub fn new(memory: &'a dyn GuestMemorySource, at: u64) -> GuestSource<'a> {
        GuestSource { memory, at }
    }

    /// Where the bytes are read from.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The guest_memfd file offset the source's byte at `offset` maps, when the VMM's memory
    /// there is a mapping of a guest_memfd (the kernel names its file `[kvm-gmem]`: 6.12
    /// `kvm_gmem_create`, 7.3 `__kvm_gmem_create`), i.e. in-place memory.
    pub fn guest_memfd_offset(&self, offset: u64) -> Option<u64> {
        let gpa = self.at.checked_add(offset)?;
        let (fd, file_offset) = self.memory.file_at(gpa)?;
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        link.to_string_lossy()
            .contains("[kvm-gmem]")
            .then_some(file_offset)
    }

    /// Copies `buf.len()` bytes from `offset` into the source, refusing (before reading) memory
    /// that is a mapping of a guest_memfd when `private_before_populate`: the platform makes
    /// the destination private before populating, and where the VMM's memory *is* the
    /// guest_memfd (in-place conversion) its pages are then private, which the host cannot
    /// read (the kernel faults host access to private guest_memfd pages: 7.3
    /// `kvm_gmem_fault_user_mapping`; series v8 patch 01/46 the same per page). Such content is
    /// populated in place ([`Content::InPlace`](crate::Content::InPlace)), not copied.
    pub(crate) fn read(
        &self,
        offset: u64,
        buf: &mut [u8],
        private_before_populate: bool,
    ) -> Result<(), String> {
        let gpa = self
            .at
            .checked_add(offset)
            .ok_or_else(|| format!("source address {:#x} + {offset:#x} overflows", self.at))?;
        if private_before_populate {
            if let Some(file_offset) = self.guest_memfd_offset(offset) {
                return Err(format!(
                    "the source at GPA {gpa:#x} is the guest_memfd itself (file offset \
                     {file_offset:#x}), which this platform makes private before populating: \
                     the host cannot read private guest_memfd pages (the kernel raises \
                     SIGBUS), and this backend's kernel does not populate in place from a \
                     zero source (Backend::in_place_populate); populate it in place instead"
                ));
            }
        }
        self.memory.copy_out(gpa, buf)
    }
}

impl fmt::Debug for GuestSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestSource(at {:#x})", self.at)
    }
}
