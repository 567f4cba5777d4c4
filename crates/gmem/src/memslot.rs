//! [`Memslot`]: a range of a guest_memfd bound to guest-physical memory.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region2;
use vm_memory::MmapRegion;
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
///   holds the private pages).
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
    mapping: Option<MmapRegion<()>>,
}

impl GuestMemfd {
    /// Binds `[offset, offset + len)` of the file to memslot `slot` at guest-physical `gpa`.
    ///
    /// Refused before any ioctl: a range that is empty, unaligned, past the end or overflowing; an
    /// unaligned or overflowing `gpa`; a slot id, file range or guest-physical range already used
    /// by a binding of this handle. The kernel's `EEXIST` (overlap with a memslot this handle does
    /// not know) becomes [`Error::SlotOverlap`]; in every refusal the VM is unchanged.
    pub fn bind(&self, slot: u32, gpa: u64, offset: u64, len: u64) -> Result<Memslot, Error> {
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
        let shared = &self.shared;
        let mut bindings = shared.bindings();
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
        let mapping = if self.flags().contains(GmemFlags::MMAP) {
            shared.map(offset, len)?
        } else {
            let size = usize::try_from(len).map_err(|_| Error::RangeOverflow { offset, len })?;
            MmapRegion::new(size).map_err(|source| Error::Mmap {
                offset,
                len,
                source,
            })?
        };
        let userspace_addr = mapping.as_ptr() as u64;
        let binding = Binding {
            slot,
            gpa,
            offset,
            len,
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
        drop(bindings);
        Ok(Memslot {
            shared: Arc::clone(shared),
            binding,
            userspace_addr,
            mapping: Some(mapping),
        })
    }
}

/// Issues `KVM_SET_USER_MEMORY_REGION2` for `binding` with `memory_size` (0 deletes the slot).
fn set_region(
    shared: &Shared,
    binding: &Binding,
    memory_size: u64,
    userspace_addr: u64,
) -> Result<(), errno::Error> {
    use std::os::fd::AsRawFd;
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
