//! [`Memslot`]: a range of a guest_memfd bound to guest-physical memory.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region2;
use vm_memory::{GuestMemoryRegion, GuestRegionMmap, MmapRegion};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::gmem::{Binding, Shared};
use crate::range::{check_pages, page_size};
use crate::{uapi, Error, GmemFlags, GuestMemfd};

/// A range of a guest_memfd bound to a memslot with `KVM_SET_USER_MEMORY_REGION2`
/// (`KVM_MEM_GUEST_MEMFD`); unbound (the slot deleted) on drop or by [`Memslot::unbind`].
///
/// # The `userspace_addr` mapping
/// KVM reads and writes guest memory through the slot's `userspace_addr` (for instance when it
/// emulates an instruction, as the paravirtual KVM of our test machine does for all CPL 0 code),
/// so the mapping that address names must stay mapped for as long as the slot exists, or KVM
/// would access whatever the process maps there next. The `Memslot` therefore owns that mapping:
/// - for a file created with `MMAP`, a `MAP_SHARED` mapping of the bound file range (KVM and
///   the host see the same pages as a [`SharedView`](crate::SharedView) does);
/// - otherwise, an anonymous mapping of the same length (the slot's shared backing; the file
///   holds the private pages), which nothing but the guest can write;
/// - with [`GuestMemfd::bind_with_shared`], a region the caller made and shares with the slot
///   (an `Arc<GuestRegionMmap>`): the slot keeps its own reference, so the mapping stays mapped
///   while the slot exists, however the caller's references are dropped.
///
/// The mapping is only unmapped after the slot was deleted; if deleting fails, the mapping is
/// leaked rather than unmapped. It is never handed to safe code (only its address is reported),
/// so nothing can write a private page through it.
///
/// The `Memslot` holds its own reference to the file and to the VM, so it does not borrow the
/// [`GuestMemfd`]: the handle can still [`convert`](GuestMemfd::convert) ranges, which the
/// VM-attributes path needs the binding for.
#[derive(Debug)]
pub struct Memslot {
    shared: Arc<Shared>,
    binding: Binding,
    userspace_addr: u64,
    /// `None` once unbound (or leaked after a failed unbind).
    mapping: Option<Backing>,
}

/// What is mapped at a slot's `userspace_addr`.
#[derive(Debug)]
enum Backing {
    /// Made by [`GuestMemfd::bind`] and never handed out.
    Own(MmapRegion<()>),
    /// The caller's shared backing ([`GuestMemfd::bind_with_shared`]).
    Caller(Arc<GuestRegionMmap<()>>),
}

impl Backing {
    fn addr(&self) -> u64 {
        match self {
            Backing::Own(m) => m.as_ptr() as u64,
            Backing::Caller(r) => r.as_ptr() as u64,
        }
    }
}

impl GuestMemfd {
    /// Binds `[offset, offset + len)` of the file to memslot `slot` at guest-physical `gpa`.
    ///
    /// Refused before any ioctl: a range that is empty, unaligned, past the end or overflowing; an
    /// unaligned or overflowing `gpa`; a slot id, file range or guest-physical range already used
    /// by a binding of this handle. The kernel's `EEXIST` (overlap with a memslot this handle does
    /// not know) becomes [`Error::SlotOverlap`]; in every refusal the VM is unchanged.
    ///
    /// The slot's shared backing (`userspace_addr`, what KVM maps for a page whose attribute is
    /// shared): for a file created with `MMAP`, the file itself (Linux 7.3 marks the slot
    /// `KVM_MEMSLOT_GMEM_ONLY` and faults shared pages from the guest_memfd as well); otherwise
    /// an anonymous mapping that only the guest can write. For shared pages with content the
    /// VMM provides, on a VM with private memory, see [`bind_with_shared`](Self::bind_with_shared).
    pub fn bind(&self, slot: u32, gpa: u64, offset: u64, len: u64) -> Result<Memslot, Error> {
        let mut bindings = self.check_binding(slot, gpa, offset, len)?;
        let mapping = if self.flags().contains(GmemFlags::MMAP) {
            self.shared.map(offset, len)?
        } else {
            let size = usize::try_from(len).map_err(|_| Error::RangeOverflow { offset, len })?;
            MmapRegion::new(size).map_err(|source| Error::Mmap {
                offset,
                len,
                source,
            })?
        };
        self.finish_bind(&mut bindings, slot, gpa, offset, len, Backing::Own(mapping))
    }

    /// Binds `[offset, offset + len)` of the file to memslot `slot` at the guest-physical address
    /// of `shared`, with `shared` as the slot's shared backing (its `userspace_addr`): KVM maps a
    /// guest-physical page of the slot from the guest_memfd while the page's attribute is
    /// private, and from `shared` while it is shared (x86 `kvm_mmu_faultin_pfn` /
    /// `__kvm_mmu_faultin_pfn`, Linux 6.12 and 7.3). This is how a software-protected (or
    /// SEV-SNP / TDX) VM's memory is usually laid out: the VMM reads and writes the shared pages
    /// through `shared` (also a region of its `GuestMemoryMmap`), the guest's private pages live
    /// in the guest_memfd, and [`convert`](Self::convert) moves pages between the two.
    ///
    /// The slot keeps a clone of the `Arc`, so the mapping outlives the slot whatever the caller
    /// does with its own references (and is leaked, never unmapped, if deleting the slot fails).
    /// Writing to `shared` never writes a private page: those are in the guest_memfd.
    ///
    /// Refused before any ioctl, besides what [`bind`](Self::bind) refuses
    /// ([`Error::SharedBacking`]): `shared` does not start at `gpa` or is not exactly `len` bytes
    /// long; the file was created with `MMAP` (the kernel then serves the slot's shared pages
    /// from the guest_memfd too and ignores `userspace_addr` for the guest: 7.3
    /// `kvm_gmem_prepare_memory_region` marks such a slot `KVM_MEMSLOT_GMEM_ONLY`); `shared` is a
    /// mapping of this guest_memfd itself.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use gmem::{GmemFlags, GuestMemfd};
    /// use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// const KVM_X86_SW_PROTECTED_VM: u64 = 1;
    /// let kvm = kvm_ioctls::Kvm::new()?;
    /// let vm = kvm.create_vm_with_type(KVM_X86_SW_PROTECTED_VM)?;
    /// let size = 2 << 20;
    /// let mut gmem = GuestMemfd::create(&vm, size, GmemFlags::empty())?;
    /// // The shared half of guest-physical [0, 2 MiB): anonymous memory the VMM owns.
    /// let shared = Arc::new(
    ///     GuestRegionMmap::new(MmapRegion::new(size as usize)?, GuestAddress(0))
    ///         .ok_or("region")?,
    /// );
    /// let memory = GuestMemoryMmap::from_arc_regions(vec![Arc::clone(&shared)])?;
    /// let _slot = gmem.bind_with_shared(0, 0, size, shared)?;
    /// // The VMM writes shared pages through `memory`; the first page becomes private:
    /// gmem.set_private(0, 4096)?;
    /// # drop(memory);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind_with_shared(
        &self,
        slot: u32,
        offset: u64,
        len: u64,
        shared: Arc<GuestRegionMmap<()>>,
    ) -> Result<Memslot, Error> {
        let gpa = shared.start_addr().0;
        let refuse = |reason: &'static str| Error::SharedBacking {
            slot,
            gpa,
            len,
            reason,
        };
        if shared.len() != len {
            return Err(refuse(
                "the shared backing's length differs from the bound range's",
            ));
        }
        if self.flags().contains(GmemFlags::MMAP) {
            return Err(refuse(
                "the guest_memfd was created with MMAP: KVM serves the slot's shared pages from \
                 the guest_memfd itself (KVM_MEMSLOT_GMEM_ONLY) and would not use the backing",
            ));
        }
        if let Some(file) = shared.file_offset() {
            if same_file(file.file().as_raw_fd(), self.shared.fd.as_raw_fd()) {
                return Err(refuse("the shared backing maps this guest_memfd itself"));
            }
        }
        let mut bindings = self.check_binding(slot, gpa, offset, len)?;
        self.finish_bind(
            &mut bindings,
            slot,
            gpa,
            offset,
            len,
            Backing::Caller(shared),
        )
    }

    /// The checks of a new binding against the file and this handle's bindings, before any
    /// system call; the bindings stay locked until the binding is recorded.
    pub(crate) fn check_binding(
        &self,
        slot: u32,
        gpa: u64,
        offset: u64,
        len: u64,
    ) -> Result<std::sync::MutexGuard<'_, Vec<Binding>>, Error> {
        check_pages(offset, len, self.size())?;
        let page_size = page_size();
        let gpa_end = gpa
            .checked_add(len)
            .ok_or(Error::RangeOverflow { offset: gpa, len })?;
        if !gpa.is_multiple_of(page_size) {
            return Err(Error::Unaligned {
                offset: gpa,
                len,
                page_size,
            });
        }
        let bindings = self.shared.bindings();
        for b in bindings.iter() {
            if b.slot == slot {
                return Err(Error::SlotInUse { slot, gpa, len });
            }
            if b.offset < offset + len && offset < b.offset + b.len {
                return Err(Error::AlreadyBound {
                    offset,
                    len,
                    slot: b.slot,
                });
            }
            if b.gpa < gpa_end && gpa < b.gpa + b.len {
                return Err(Error::SlotOverlap {
                    slot,
                    gpa,
                    len,
                    other: Some(b.slot),
                });
            }
        }
        Ok(bindings)
    }

    /// Creates the slot over `mapping` and records the binding.
    fn finish_bind(
        &self,
        bindings: &mut Vec<Binding>,
        slot: u32,
        gpa: u64,
        offset: u64,
        len: u64,
        mapping: Backing,
    ) -> Result<Memslot, Error> {
        let shared = &self.shared;
        let userspace_addr = mapping.addr();
        let binding = Binding {
            slot,
            gpa,
            offset,
            len,
            external: false,
        };
        set_region(shared, &binding, len, userspace_addr).map_err(|source| {
            if source.errno() == libc::EEXIST {
                Error::SlotOverlap {
                    slot,
                    gpa,
                    len,
                    other: None,
                }
            } else {
                Error::Kvm {
                    op: "KVM_SET_USER_MEMORY_REGION2",
                    offset: gpa,
                    len,
                    source,
                }
            }
        })?;
        bindings.push(binding);
        Ok(Memslot {
            shared: Arc::clone(shared),
            binding,
            userspace_addr,
            mapping: Some(mapping),
        })
    }
}

/// Whether two fds name the same file (same device and inode).
fn same_file(a: i32, b: i32) -> bool {
    let stat = |fd: i32| {
        // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable stat buffer that lives across the call; fstat only
        // writes it.
        let ret = unsafe { libc::fstat(fd, &mut st) };
        (ret == 0).then_some((st.st_dev, st.st_ino))
    };
    matches!((stat(a), stat(b)), (Some(x), Some(y)) if x == y)
}

/// Issues `KVM_SET_USER_MEMORY_REGION2` for `binding` with `memory_size` (0 deletes the slot).
fn set_region(
    shared: &Shared,
    binding: &Binding,
    memory_size: u64,
    userspace_addr: u64,
) -> Result<(), errno::Error> {
    let guest_memfd =
        u32::try_from(shared.fd.as_raw_fd()).map_err(|_| errno::Error::new(libc::EBADF))?;
    let region = kvm_userspace_memory_region2 {
        slot: binding.slot,
        flags: uapi::KVM_MEM_GUEST_MEMFD,
        guest_phys_addr: binding.gpa,
        memory_size,
        userspace_addr,
        guest_memfd_offset: binding.offset,
        guest_memfd,
        ..Default::default()
    };
    // SAFETY: the VM fd is owned by `shared`; the kernel only reads `region`, which lives across
    // the call. The hva range it names is a mapping owned by the `Memslot` being created or
    // deleted, which is unmapped only after the slot is deleted (see `Memslot::release`), so KVM
    // never accesses memory this process does not own as that mapping.
    let ret = unsafe { ioctl_with_ref(&shared.vm, uapi::KVM_SET_USER_MEMORY_REGION2, &region) };
    if ret == 0 {
        Ok(())
    } else {
        Err(errno::Error::last())
    }
}

impl Memslot {
    /// The memslot id.
    pub fn slot(&self) -> u32 {
        self.binding.slot
    }

    /// Guest-physical start.
    pub fn gpa(&self) -> u64 {
        self.binding.gpa
    }

    /// Offset in the guest_memfd.
    pub fn offset(&self) -> u64 {
        self.binding.offset
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.binding.len
    }

    /// Always `false`: a memslot is never empty.
    pub fn is_empty(&self) -> bool {
        self.binding.len == 0
    }

    /// The `userspace_addr` given to KVM (owned by this `Memslot`; for logs and debugging).
    pub fn userspace_addr(&self) -> u64 {
        self.userspace_addr
    }

    /// Deletes the memslot and unmaps its mapping, reporting a kernel error.
    ///
    /// On error the slot is still in the VM: the mapping is leaked (never unmapped) so KVM keeps
    /// a valid `userspace_addr`.
    pub fn unbind(mut self) -> Result<(), Error> {
        self.release()
    }

    fn release(&mut self) -> Result<(), Error> {
        let Some(mapping) = self.mapping.take() else {
            return Ok(());
        };
        match set_region(&self.shared, &self.binding, 0, self.userspace_addr) {
            Ok(()) => {
                let b = self.binding;
                self.shared.bindings().retain(|x| *x != b);
                drop(mapping);
                Ok(())
            }
            Err(source) => {
                std::mem::forget(mapping);
                Err(Error::Kvm {
                    op: "KVM_SET_USER_MEMORY_REGION2 (delete)",
                    offset: self.binding.gpa,
                    len: self.binding.len,
                    source,
                })
            }
        }
    }
}

impl Drop for Memslot {
    fn drop(&mut self) {
        // A failure leaves the slot in place with its mapping leaked (see `release`); there is no
        // caller to report it to.
        let _ = self.release();
    }
}
