//! Adopting a guest_memfd the VMM created, and the memslots the VMM manages.
//!
//! A VMM that already creates its guest_memfd, maps it for its devices and sets its memslots
//! can hand gmem the file ([`GuestMemfd::adopt`]) and tell it about its memslots
//! ([`GuestMemfd::record_memslot`]) without giving up any of them: gmem then converts, maps
//! views and tracks private ranges, while the VMM's fd, mappings and memslots stay the VMM's.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use kvm_ioctls::VmFd;

use crate::gmem::{check_file, dup_vm_fd, initial_private, Binding};
#[cfg(test)]
use crate::range::page_size;
use crate::range::{check_pages, RangeSet};
use crate::{Capabilities, Error, GmemFlags, GuestMemfd};

/// The guest_memfd handed to [`GuestMemfd::adopt`], and who keeps it.
#[derive(Debug)]
pub enum Adopted<'fd> {
    /// gmem takes the fd: it is closed when the handle and every [`Memslot`](crate::Memslot)
    /// bound through it are gone.
    Owned(OwnedFd),
    /// The VMM keeps its fd and closes it when it likes: gmem works on its own duplicate
    /// (`F_DUPFD_CLOEXEC`, the same open file), which it closes; neither closes the other's.
    Borrowed(BorrowedFd<'fd>),
}

/// What the kernel treats as private in an adopted guest_memfd, as the VMM knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptedState {
    /// Nothing was converted since `KVM_CREATE_GUEST_MEMFD`: what [`GuestMemfd::create`] would
    /// record for the same flags on this VM.
    AsCreated,
    /// These page-aligned file ranges `[start, end)` are private, the rest shared. On the
    /// per-guest_memfd path the file holds this state itself; on the VM-attributes path it is
    /// the state of the guest-physical addresses the ranges are bound at.
    Private(Vec<(u64, u64)>),
}

/// `readlink /proc/self/fd/<fd>`, or why it could not be read.
fn fd_link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("(readlink /proc/self/fd/{fd}: {e})"))
}

/// Whether `link` names a guest_memfd: the kernel names its file `[kvm-gmem]` (6.12
/// `kvm_gmem_create`, an anon inode file, `anon_inode:[kvm-gmem]`; 7.3 `__kvm_gmem_create`,
/// `alloc_file_pseudo` with the same name).
fn is_guest_memfd_link(link: &str) -> bool {
    link.contains("[kvm-gmem]")
}

/// The private record for `state` over a file of `size` bytes, or the first bad range.
fn record_of(
    state: &AdoptedState,
    as_created: impl FnOnce() -> RangeSet,
    size: u64,
) -> Result<RangeSet, Error> {
    match state {
        AdoptedState::AsCreated => Ok(as_created()),
        AdoptedState::Private(ranges) => {
            let mut set = RangeSet::default();
            for &(start, end) in ranges {
                let len = end.checked_sub(start).ok_or(Error::RangeOverflow {
                    offset: start,
                    len: 0,
                })?;
                check_pages(start, len, size)?;
                set.insert(start, end);
            }
            Ok(set)
        }
    }
}

impl GuestMemfd {
    /// Adopts a guest_memfd the VMM created on `vm`, made with `flags`, whose private ranges
    /// are `state`; `caps` are `vm`'s (from [`Capabilities::probe`] or
    /// [`Capabilities::probe_series`]: the conversion path is chosen from them as for
    /// [`create_with`](Self::create_with)).
    ///
    /// Refused before anything is kept: a file that is not a guest_memfd
    /// ([`Error::NotGuestMemfd`], from what `/proc/self/fd` names it), no guest_memfd on the VM,
    /// flags the VM does not offer, a size (from `fstat`) of zero or not a page multiple, a
    /// private range that is empty, unaligned or past the end. The flags and the state cannot be
    /// read back from the kernel: the record follows what the VMM says, and a wrong record makes
    /// the kernel refuse a conversion or a view fault (`SIGBUS`) where the kernel holds a page
    /// private. The file must belong to `vm` (the kernel refuses binding another VM's file).
    ///
    /// Memslots the VMM creates itself are told with [`record_memslot`](Self::record_memslot);
    /// gmem never owns their mappings.
    ///
    /// ```no_run
    /// use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    /// use gmem::{Adopted, AdoptedState, Capabilities, GmemFlags, GuestMemfd};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kvm = kvm_ioctls::Kvm::new()?;
    /// let vm = kvm.create_vm()?;
    /// // The VMM's own guest_memfd.
    /// let flags = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
    /// let raw = vm.create_guest_memfd(kvm_bindings::kvm_create_guest_memfd {
    ///     size: 2 << 20,
    ///     flags: flags.bits(),
    ///     ..Default::default()
    /// })?;
    /// // SAFETY: a new fd that nothing else owns.
    /// let vmm_fd = unsafe { OwnedFd::from_raw_fd(raw) };
    /// let caps = Capabilities::probe(&vm);
    /// let gmem = GuestMemfd::adopt(&vm, &caps, Adopted::Borrowed(vmm_fd.as_fd()), flags,
    ///     AdoptedState::AsCreated)?;
    /// gmem.map_shared(0, 4096)?.write_at(0, b"hello")?;
    /// drop(gmem); // the VMM's fd stays open
    /// # Ok(())
    /// # }
    /// ```
    pub fn adopt(
        vm: &VmFd,
        caps: &Capabilities,
        fd: Adopted<'_>,
        flags: GmemFlags,
        state: AdoptedState,
    ) -> Result<GuestMemfd, Error> {
        let raw = match &fd {
            Adopted::Owned(o) => o.as_raw_fd(),
            Adopted::Borrowed(b) => b.as_raw_fd(),
        };
        let link = fd_link(raw);
        if !is_guest_memfd_link(&link) {
            return Err(Error::NotGuestMemfd {
                fd: raw,
                found: link,
            });
        }
        let size = match &fd {
            Adopted::Owned(o) => o.as_fd_stat(),
            Adopted::Borrowed(b) => b.as_fd_stat(),
        }?;
        check_file(caps, size, flags)?;
        let conversion = caps.conversion_path();
        let private = record_of(&state, || initial_private(conversion, flags, size), size)?;
        let vm_dup = dup_vm_fd(vm, size)?;
        let owned = match fd {
            Adopted::Owned(o) => o,
            Adopted::Borrowed(b) => b.try_clone_to_owned().map_err(|source| Error::Io {
                op: "fcntl(F_DUPFD_CLOEXEC) of the guest_memfd",
                offset: 0,
                len: size,
                source,
            })?,
        };
        Ok(GuestMemfd::from_parts(
            owned, vm_dup, size, flags, private, conversion,
        ))
    }

    /// Records a memslot the VMM created itself (with `KVM_SET_USER_MEMORY_REGION2`,
    /// `KVM_MEM_GUEST_MEMFD`): file range `[offset, offset + len)` bound to slot `slot` at
    /// guest-physical `gpa`. No ioctl is issued and gmem owns nothing of it (not its mapping,
    /// which the VMM's devices may use): it only lets conversions by guest-physical address
    /// ([`convert_gpa`](Self::convert_gpa), [`convert_gpa_range`](crate::convert_gpa_range))
    /// and the VM-attributes path find the addresses, and keeps [`bind`](Self::bind) from
    /// reusing the slot or its ranges.
    ///
    /// Refused, changing nothing, as `bind` refuses a range, address or slot (empty, unaligned,
    /// past the end, overflowing, already used by a binding of this handle). When the VMM
    /// deletes the slot it calls [`forget_memslot`](Self::forget_memslot).
    pub fn record_memslot(&self, slot: u32, gpa: u64, offset: u64, len: u64) -> Result<(), Error> {
        let mut bindings = self.check_binding(slot, gpa, offset, len)?;
        bindings.push(Binding {
            slot,
            gpa,
            offset,
            len,
            external: true,
        });
        Ok(())
    }

    /// Forgets a memslot recorded with [`record_memslot`](Self::record_memslot) (after the VMM
    /// deleted it); `false` if no such recorded slot exists. A slot made by [`bind`](Self::bind)
    /// is not touched: it is deleted when its [`Memslot`](crate::Memslot) drops.
    pub fn forget_memslot(&self, slot: u32) -> bool {
        let mut bindings = self.shared.bindings();
        let before = bindings.len();
        bindings.retain(|b| !(b.slot == slot && b.external));
        bindings.len() != before
    }
}

/// `fstat` of an fd: its size.
trait FdStat {
    fn as_fd_stat(&self) -> Result<u64, Error>;
}

impl<T: AsRawFd> FdStat for T {
    fn as_fd_stat(&self) -> Result<u64, Error> {
        // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the borrow of `self`; `st` is a valid, writable stat buffer
        // that lives across the call, which only writes it.
        let ret = unsafe { libc::fstat(self.as_raw_fd(), &mut st) };
        if ret != 0 {
            return Err(Error::Io {
                op: "fstat of the guest_memfd",
                offset: 0,
                len: 0,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(u64::try_from(st.st_size).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_memfd_links_are_recognised_by_the_kernels_name() {
        // 6.12: anon_inode_create_getfile("[kvm-gmem]"); 7.3: alloc_file_pseudo(.., "[kvm-gmem]").
        assert!(is_guest_memfd_link("anon_inode:[kvm-gmem]"));
        assert!(is_guest_memfd_link("/[kvm-gmem]"));
        assert!(!is_guest_memfd_link("/memfd:gmem-model (deleted)"));
        assert!(!is_guest_memfd_link("/dev/null"));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(fd_link(f.as_raw_fd()), "/dev/null");
        assert!(fd_link(-1).contains("readlink"));
    }

    #[test]
    fn a_stated_private_record_is_checked_against_the_file() {
        let p = page_size();
        let whole = || {
            let mut s = RangeSet::default();
            s.insert(0, 4 * p);
            s
        };
        let r = record_of(&AdoptedState::AsCreated, whole, 4 * p).unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 4 * p)]);
        let state = AdoptedState::Private(vec![(2 * p, 3 * p), (0, p)]);
        let r = record_of(&state, RangeSet::default, 4 * p).unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, p), (2 * p, 3 * p)]);
        for bad in [(p, p), (1, p), (3 * p, 5 * p), (2 * p, p)] {
            let state = AdoptedState::Private(vec![bad]);
            assert!(
                record_of(&state, RangeSet::default, 4 * p).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn fstat_reads_the_size() {
        let f = tempfile_of(12345);
        assert_eq!(f.as_fd_stat().unwrap(), 12345);
    }

    fn tempfile_of(len: u64) -> std::fs::File {
        // SAFETY: memfd_create takes a NUL-terminated name that lives across the call.
        let raw = unsafe { libc::memfd_create(c"adopt-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a new fd nothing else owns.
        let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        f.set_len(len).unwrap();
        f
    }
}
