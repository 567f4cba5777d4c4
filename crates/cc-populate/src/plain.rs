//! A backend for plain (non-confidential) VMs whose memory is guest_memfd.
//!
//! Populating copies source bytes into the shared view of guest_memfd, leaves in-place content
//! where it is, and punches (or zero-fills) zero regions. It is what a VMM moving all guest memory
//! to guest_memfd needs, and the end-to-end proof of the engine on a KVM without confidential VM
//! types.
//!
//! Copies are as fast as the machine allows: each step's mapping is populated writable
//! (`MADV_POPULATE_WRITE`, which allocates the pages in the file) so the copy takes no page
//! faults, and large calls are split across threads (by default one per core).
//!
//! ```no_run
//! use cc_populate::plain::PlainBackend;
//! use cc_populate::{Backend, Driver, PlanBuilder, Role};
//! use gmem::{GmemFlags, GuestMemfd};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! let gmem = GuestMemfd::create(&vm, 64 << 20, GmemFlags::MMAP | GmemFlags::INIT_SHARED)?;
//! let _slot = gmem.bind(0, 0, 0, 64 << 20)?;
//!
//! let mut backend = PlainBackend::new();
//! backend.add_memslot(0, 0, &gmem, 0, 64 << 20)?;
//! let kernel = std::fs::read("bzImage")?;
//! let mut padded = kernel.clone();
//! padded.resize(kernel.len().div_ceil(4096) * 4096, 0);
//! let plan = PlanBuilder::new()
//!     .source(0x20_0000, Role::Measured, &padded)
//!     .build(&backend.caps(), &backend.layout()?)?;
//! let report = Driver::new(&mut backend).run(&plan)?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use gmem::{GuestMemfd, SharedView};

use crate::backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind, Populated,
};
use crate::plan::{MemoryLayout, Memslot};
use crate::{PlanError, Role, RoleSet};

/// What the plain backend does with zero content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroMode {
    /// Punch a hole: the pages read as zeros and use no memory until touched (the default).
    #[default]
    Punch,
    /// Write zeros through the shared view (the pages are allocated).
    Write,
}

struct Slot<'g> {
    slot: u32,
    gpa: u64,
    len: u64,
    offset: u64,
    gmem: &'g GuestMemfd,
    view: SharedView<'g>,
}

/// A backend that populates guest_memfd-backed memory of a non-confidential VM through its
/// shared mapping. Register each memslot's guest_memfd range with
/// [`add_memslot`](PlainBackend::add_memslot); the plan must lie within them.
pub struct PlainBackend<'g> {
    slots: Vec<Slot<'g>>,
    threads: usize,
    step: u64,
    max_chunk: u64,
    zero_mode: ZeroMode,
    roles: RoleSet,
}

impl Default for PlainBackend<'_> {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn gmem_err(e: gmem::Error, what: &str) -> BackendError {
    let errno = match &e {
        gmem::Error::Kvm { source, .. } => Some(source.errno()),
        gmem::Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(n) => BackendError::from_errno(n, format!("{what}: {e}")),
        None => BackendError::new(ErrorKind::Failed, format!("{what}: {e}")),
    }
}

/// The layout of memslots given as `(slot, gpa, len)`.
pub(crate) fn layout_of(
    slots: impl Iterator<Item = (u32, u64, u64)>,
) -> Result<MemoryLayout, PlanError> {
    let slots: Vec<Memslot> = slots
        .map(|(slot, gpa, size)| Memslot { slot, gpa, size })
        .collect();
    MemoryLayout::new(&slots)
}

impl<'g> PlainBackend<'g> {
    /// A backend with no memslots, one copy thread per core, 64 MiB calls, zero regions punched,
    /// and the common roles (measured, unmeasured, zero).
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        PlainBackend {
            slots: Vec::new(),
            threads,
            step: 16 << 20,
            max_chunk: 64 << 20,
            zero_mode: ZeroMode::Punch,
            roles: RoleSet::COMMON,
        }
    }

    /// Copy threads per call (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The largest call, in bytes (rounded down to 4 KiB, at least 4 KiB).
    pub fn with_max_chunk(mut self, max_chunk: u64) -> Self {
        self.max_chunk = (max_chunk & !4095).max(4096);
        self
    }

    /// What to do with zero content.
    pub fn with_zero_mode(mut self, mode: ZeroMode) -> Self {
        self.zero_mode = mode;
        self
    }

    /// Also accept platform roles (secrets, CPUID, ...), populating their content like any other:
    /// for checking that a confidential plan's bytes land where they should on a plain VM.
    pub fn with_roles(mut self, roles: RoleSet) -> Self {
        self.roles = roles;
        self
    }

    /// Registers guest-physical `gpa..gpa+len` as backed by `gmem` from `offset` (the range a
    /// [`gmem::Memslot`] binds as `slot`). The handle must have been created with the `MMAP` flag
    /// and the range must be shared.
    pub fn add_memslot(
        &mut self,
        slot: u32,
        gpa: u64,
        gmem: &'g GuestMemfd,
        offset: u64,
        len: u64,
    ) -> Result<(), gmem::Error> {
        let view = gmem.map_shared(offset, len)?;
        self.slots.push(Slot {
            slot,
            gpa,
            len,
            offset,
            gmem,
            view,
        });
        self.slots.sort_by_key(|s| s.gpa);
        Ok(())
    }

    /// The memory layout of the registered memslots, for [`PlanBuilder::build`](crate::PlanBuilder::build).
    pub fn layout(&self) -> Result<MemoryLayout, PlanError> {
        layout_of(self.slots.iter().map(|s| (s.slot, s.gpa, s.len)))
    }

    fn slot_for(&self, gpa: u64, len: u64) -> Result<&Slot<'g>, BackendError> {
        let i = self.slots.partition_point(|s| s.gpa <= gpa);
        i.checked_sub(1)
            .and_then(|i| self.slots.get(i))
            .filter(|s| gpa - s.gpa < s.len && len <= s.len - (gpa - s.gpa))
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Failed,
                    format!("no registered memslot holds [{gpa:#x}..+{len:#x})"),
                )
            })
    }

    /// Copies `src` to `at` (offset in the slot) in steps: prefault, copy. Returns the
    /// bytes done from the start, and the error that stopped it.
    fn copy_part(
        slot: &Slot<'_>,
        at: u64,
        src: &[u8],
        step: u64,
    ) -> (u64, Result<(), BackendError>) {
        let mut done = 0u64;
        for piece in src.chunks(step as usize) {
            let off = at + done;
            let n = piece.len() as u64;
            // Prefaulting allocates the pages in the file (a separate fallocate first was
            // measured slower here: see the crate README), so the copy takes no page faults.
            let r = slot
                .view
                .populate_write(off, n)
                .map_err(|e| gmem_err(e, "MADV_POPULATE_WRITE"))
                .and_then(|_| {
                    slot.view
                        .write_at(off, piece)
                        .map_err(|e| gmem_err(e, "copy"))
                });
            if let Err(e) = r {
                return (done, Err(e));
            }
            done += n;
        }
        (done, Ok(()))
    }
}

impl Backend for PlainBackend<'_> {
    fn caps(&self) -> BackendCaps {
        BackendCaps {
            granule: 4096,
            max_chunk: self.max_chunk,
            hugepage_chunks: true,
            in_place: true,
            conversion: Conversion::NotNeeded,
            roles: self.roles,
        }
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Owned(format!("plain {role}"))
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let slot = match self.slot_for(chunk.gpa, chunk.len) {
            Ok(s) => s,
            Err(e) => return Populated::failed(0, e),
        };
        let at = chunk.gpa - slot.gpa;
        match chunk.source {
            ChunkSource::InPlace => Populated::all(chunk.len),
            ChunkSource::Zero => {
                let r = match self.zero_mode {
                    ZeroMode::Punch => slot
                        .gmem
                        .punch_hole(slot.offset + at, chunk.len)
                        .map_err(|e| gmem_err(e, "punch hole")),
                    ZeroMode::Write => slot
                        .view
                        .fill_zero(at, chunk.len)
                        .map_err(|e| gmem_err(e, "zero fill")),
                };
                match r {
                    Ok(()) => Populated::all(chunk.len),
                    Err(e) => Populated::failed(0, e),
                }
            }
            ChunkSource::Bytes(src) => {
                // Split across threads in whole pages; the report counts the prefix done.
                let parts = self.threads.min((src.len() / (1 << 20)).max(1));
                let per = (src.len().div_ceil(parts) + 4095) & !4095;
                let step = self.step;
                let results: Vec<(u64, Result<(), BackendError>)> = if parts == 1 {
                    vec![Self::copy_part(slot, at, src, step)]
                } else {
                    std::thread::scope(|s| {
                        let handles: Vec<_> = src
                            .chunks(per)
                            .enumerate()
                            .map(|(k, part)| {
                                let part_at = at + (k * per) as u64;
                                s.spawn(move || Self::copy_part(slot, part_at, part, step))
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    (
                                        0,
                                        Err(BackendError::new(
                                            ErrorKind::Failed,
                                            "copy thread panicked",
                                        )),
                                    )
                                })
                            })
                            .collect()
                    })
                };
                let mut done = 0u64;
                // Parts are contiguous: stop counting at the first that did not finish.
                for (n, r) in results {
                    done += n;
                    if let Err(e) = r {
                        return Populated::failed(done, e);
                    }
                }
                Populated::all(chunk.len)
            }
        }
    }
}
