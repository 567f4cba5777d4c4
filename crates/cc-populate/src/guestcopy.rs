//! A backend for VMs whose private memory the host cannot write: the software-protected x86 VM
//! type (`KVM_X86_SW_PROTECTED_VM`), or any VM with private guest_memfd memory and no populate
//! ioctl.
//!
//! On such a VM a private page is served from guest_memfd, the host cannot map it (touching it
//! through guest_memfd's mmap is `SIGBUS`), and no firmware copies data in for the host. So the
//! backend does what platform firmware does, from a separate source and from inside the VM's
//! protection boundary: it declares [`Conversion::BeforePopulate`], so the
//! [`Driver`](crate::Driver) converts each region to private (here through
//! [`GuestMemfd::set_private`], `KVM_SET_MEMORY_ATTRIBUTES`) before populating it, then it hands
//! each chunk's bytes to a [`GuestWriter`]: something that runs inside the VM (a vCPU copying
//! from a shared staging area) and writes them to the private pages. Zero content needs no copy:
//! the backend punches the range out of guest_memfd, and the kernel clears a fresh guest_memfd
//! page before the guest first sees it (Linux 6.12: when the folio is prepared; 7.3: when
//! `kvm_gmem_get_pfn` finds it not up to date).
//!
//! The backend refuses to populate a range it has not converted itself, with an error naming the
//! range: a write through the guest to a shared GPA would land in the memslot's shared backing,
//! where the host could read it. (guest_memfd's own record cannot tell: on the VM-attributes path
//! a file created without `INIT_SHARED` is private to the *host* from the start, whatever the
//! guest-physical attributes say, and the kernel has no call that reads the attributes back.)
//!
//! ```no_run
//! use cc_populate::guestcopy::{GuestCopyBackend, GuestWriter};
//! use cc_populate::{Backend, BackendError, Driver, PlanBuilder, Role};
//! use gmem::{GmemFlags, GuestMemfd};
//!
//! /// Writes through a vCPU of the VM (e.g. guest-check's `CheckGuest::write_through_guest`).
//! struct InGuest;
//! impl GuestWriter for InGuest {
//!     fn max_write(&self) -> u64 {
//!         1 << 20
//!     }
//!     fn write_private(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), BackendError> {
//!         // Stage `bytes` in shared memory, run the guest's copy to `gpa`.
//!         # let _ = (gpa, bytes);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = kvm.create_vm_with_type(1)?; // KVM_X86_SW_PROTECTED_VM
//! let mut gmem = GuestMemfd::create(&vm, 8 << 20, GmemFlags::empty())?;
//! let _slot = gmem.bind(0, 0, 0, 8 << 20)?;
//!
//! let mut backend = GuestCopyBackend::new(InGuest);
//! backend.add_memslot(0, 0, &mut gmem, 0, 8 << 20);
//! let image = vec![0x90u8; 2 << 20];
//! let plan = PlanBuilder::new()
//!     .source(0x20_0000, Role::Measured, &image)
//!     .zero(0x40_0000, 0x10_0000)
//!     .build(&backend.caps(), &backend.layout()?)?;
//! let report = Driver::new(&mut backend).run(&plan)?;
//! assert_eq!(report.regions[0].converted, 2 << 20);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use gmem::GuestMemfd;

use crate::backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind,
    Populated, PAGE_SIZE,
};
use crate::plain::{gmem_err, layout_of};
use crate::plan::MemoryLayout;
use crate::{PlanError, Role, RoleSet};

/// Writes bytes into guest memory from inside the VM's protection boundary (a vCPU of the VM
/// copying from shared memory, or platform firmware), where the host itself cannot.
pub trait GuestWriter {
    /// The most bytes one [`write_private`](GuestWriter::write_private) call takes (e.g. the size
    /// of the shared staging area). The backend rounds it down to whole 4 KiB pages (at least one).
    fn max_write(&self) -> u64;

    /// Writes `bytes` (at most [`max_write`](GuestWriter::max_write)) at guest-physical `gpa`.
    /// On an error, the destination may be partly written; the backend reports none of it done.
    fn write_private(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), BackendError>;
}

impl<W: GuestWriter + ?Sized> GuestWriter for &mut W {
    fn max_write(&self) -> u64 {
        (**self).max_write()
    }
    fn write_private(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), BackendError> {
        (**self).write_private(gpa, bytes)
    }
}

struct Slot<'g> {
    slot: u32,
    gpa: u64,
    len: u64,
    offset: u64,
    gmem: &'g mut GuestMemfd,
}

/// A [`Conversion::BeforePopulate`] backend that populates private guest_memfd memory through a
/// [`GuestWriter`]. Register each memslot with [`add_memslot`](GuestCopyBackend::add_memslot).
pub struct GuestCopyBackend<'g, W> {
    writer: W,
    slots: Vec<Slot<'g>>,
    /// Guest-physical ranges `[start, end)` this backend converted to private, sorted, disjoint.
    converted: Vec<(u64, u64)>,
    max_chunk: u64,
    roles: RoleSet,
}

impl<'g, W: GuestWriter> GuestCopyBackend<'g, W> {
    /// A backend writing through `writer`, with no memslots, 2 MiB calls and the common roles.
    pub fn new(writer: W) -> Self {
        GuestCopyBackend {
            writer,
            slots: Vec::new(),
            converted: Vec::new(),
            max_chunk: 2 << 20,
            roles: RoleSet::COMMON,
        }
    }

    /// The largest call, in bytes (rounded down to 4 KiB, at least 4 KiB).
    pub fn with_max_chunk(mut self, max_chunk: u64) -> Self {
        self.max_chunk = (max_chunk & !(PAGE_SIZE - 1)).max(PAGE_SIZE);
        self
    }

    /// Also accept platform roles, populating their content like any other.
    pub fn with_roles(mut self, roles: RoleSet) -> Self {
        self.roles = roles;
        self
    }

    /// Registers guest-physical `gpa..gpa+len` as the range of `gmem` from `offset` that memslot
    /// `slot` binds ([`GuestMemfd::bind`]). The backend converts through `gmem`, so it borrows it
    /// mutably: one guest_memfd per registered memslot. Ranges the handle refuses (past its end,
    /// unaligned, not bound) are refused when the driver converts them, naming the range.
    pub fn add_memslot(
        &mut self,
        slot: u32,
        gpa: u64,
        gmem: &'g mut GuestMemfd,
        offset: u64,
        len: u64,
    ) {
        self.slots.push(Slot {
            slot,
            gpa,
            len,
            offset,
            gmem,
        });
        self.slots.sort_by_key(|s| s.gpa);
    }

    /// The memory layout of the registered memslots, for [`PlanBuilder::build`](crate::PlanBuilder::build).
    pub fn layout(&self) -> Result<MemoryLayout, PlanError> {
        layout_of(self.slots.iter().map(|s| (s.slot, s.gpa, s.len)))
    }

    /// The writer.
    pub fn writer(&self) -> &W {
        &self.writer
    }

    /// The writer, mutably.
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// Gives the writer back (and ends the borrows of the guest_memfds).
    pub fn into_writer(self) -> W {
        self.writer
    }

    /// The guest-physical ranges `[start, end)` this backend converted to private, in order.
    pub fn converted(&self) -> &[(u64, u64)] {
        &self.converted
    }

    /// Index of the slot holding `gpa`.
    fn slot_index(&self, gpa: u64) -> Option<usize> {
        let i = self
            .slots
            .partition_point(|s| s.gpa <= gpa)
            .checked_sub(1)?;
        let s = self.slots.get(i)?;
        (gpa - s.gpa < s.len).then_some(i)
    }

    fn is_converted(&self, gpa: u64, len: u64) -> bool {
        let end = gpa.saturating_add(len);
        self.converted.iter().any(|&(s, e)| s <= gpa && end <= e)
    }

    fn record_converted(&mut self, gpa: u64, end: u64) {
        let (mut start, mut end) = (gpa, end);
        self.converted.retain(|&(s, e)| {
            if e < start || end < s {
                return true;
            }
            start = start.min(s);
            end = end.max(e);
            false
        });
        let at = self.converted.partition_point(|&(s, _)| s < start);
        self.converted.insert(at, (start, end));
    }
}

fn refuse(what: String) -> Populated {
    Populated::failed(0, BackendError::new(ErrorKind::Failed, what))
}

impl<W: GuestWriter> Backend for GuestCopyBackend<'_, W> {
    fn caps(&self) -> BackendCaps {
        BackendCaps {
            granule: PAGE_SIZE,
            max_chunk: self.max_chunk,
            hugepage_chunks: true,
            in_place: false,
            conversion: Conversion::BeforePopulate,
            roles: self.roles,
        }
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Owned(format!("guest-copied {role}"))
    }

    /// Converts the part of `gpa..gpa+len` in the memslot holding `gpa` (plans keep each region in
    /// one memslot) through its guest_memfd.
    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        let Some(i) = self.slot_index(gpa) else {
            return refuse(format!(
                "no registered memslot holds [{gpa:#x}..+{len:#x}) to convert"
            ));
        };
        let s = &mut self.slots[i];
        let at = gpa - s.gpa;
        let n = len.min(s.len - at);
        if let Err(e) = s.gmem.set_private(s.offset + at, n) {
            return Populated::failed(0, gmem_err(e, "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)"));
        }
        self.record_converted(gpa, gpa + n);
        Populated::all(n)
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let (gpa, len) = (chunk.gpa, chunk.len);
        let slot = self
            .slot_index(gpa)
            .and_then(|i| self.slots.get(i))
            .filter(|s| len <= s.len - (gpa - s.gpa));
        let Some(slot) = slot else {
            return refuse(format!("no registered memslot holds [{gpa:#x}..+{len:#x})"));
        };
        if !self.is_converted(gpa, len) {
            return refuse(format!(
                "[{gpa:#x}..+{len:#x}) was not converted to private by this backend: writing it \
                 through the guest would put the data in the memslot's shared backing"
            ));
        }
        match chunk.source {
            ChunkSource::InPlace => Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "in-place content at [{gpa:#x}..+{len:#x}): the host cannot write private \
                         memory of this VM"
                    ),
                ),
            ),
            // A punched page is fresh: the kernel clears it before the guest sees it.
            ChunkSource::Zero => match slot.gmem.punch_hole(slot.offset + (gpa - slot.gpa), len) {
                Ok(()) => Populated::all(len),
                Err(e) => Populated::failed(0, gmem_err(e, "punch hole")),
            },
            ChunkSource::Bytes(src) => {
                let step = (self.writer.max_write() & !(PAGE_SIZE - 1)).max(PAGE_SIZE);
                let step = usize::try_from(step).unwrap_or(usize::MAX);
                let mut done = 0u64;
                for piece in src.chunks(step) {
                    if let Err(e) = self.writer.write_private(gpa + done, piece) {
                        return Populated::failed(done, e);
                    }
                    done += piece.len() as u64;
                }
                Populated::all(len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl GuestWriter for Nothing {
        fn max_write(&self) -> u64 {
            0
        }
        fn write_private(&mut self, _: u64, _: &[u8]) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[test]
    fn converted_ranges_merge() {
        let mut b = GuestCopyBackend::new(Nothing);
        b.record_converted(0x3000, 0x4000);
        b.record_converted(0x1000, 0x2000);
        assert_eq!(b.converted(), &[(0x1000, 0x2000), (0x3000, 0x4000)]);
        b.record_converted(0x2000, 0x3000);
        assert_eq!(b.converted(), &[(0x1000, 0x4000)]);
        b.record_converted(0x8000, 0x9000);
        b.record_converted(0x0, 0x10000);
        assert_eq!(b.converted(), &[(0x0, 0x10000)]);
        assert!(b.is_converted(0x5000, 0x1000));
        assert!(!b.is_converted(0xf000, 0x2000));
    }

    #[test]
    fn caps_ask_for_conversion_before_populate() {
        let b = GuestCopyBackend::new(Nothing).with_max_chunk(0x1234);
        let caps = b.caps();
        assert_eq!(caps.conversion, Conversion::BeforePopulate);
        assert!(!caps.in_place);
        assert_eq!(caps.max_chunk, 0x1000);
        assert!(caps.check().is_ok());
        assert_eq!(b.page_type(Role::Measured), "guest-copied measured");
    }

    #[test]
    fn unregistered_ranges_are_refused_naming_them() {
        let mut b = GuestCopyBackend::new(Nothing);
        let p = b.make_private(0x5000, 0x1000);
        assert_eq!(p.done, 0);
        let e = p.result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.detail.contains("[0x5000..+0x1000)"), "{e}");
        let chunk = ChunkRequest {
            region: 0,
            gpa: 0x5000,
            len: 0x1000,
            role: Role::Measured,
            source: ChunkSource::Zero,
        };
        let e = b.populate(&chunk).result.unwrap_err();
        assert!(e.detail.contains("[0x5000..+0x1000)"), "{e}");
    }
}
