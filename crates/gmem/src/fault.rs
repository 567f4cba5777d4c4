//! The vCPU side of private memory: [`MemoryFault`], the exit a VMM gets when the guest touches
//! a page whose state KVM cannot map, and [`pre_fault_memory`] (`KVM_PRE_FAULT_MEMORY`).

use std::fmt;

use kvm_bindings::kvm_pre_fault_memory;
use kvm_ioctls::VcpuFd;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

use crate::range::page_size;
use crate::{uapi, Error, MemoryState};

/// A `KVM_EXIT_MEMORY_FAULT` (`KVM_RUN` failed with `EFAULT` or `EHWPOISON`, exit reason 39;
/// kvm-ioctls returns it as `VcpuExit::MemoryFault { flags, gpa, size }`), decoded.
///
/// On x86, KVM fills it in `kvm_mmu_prepare_memory_fault_exit` (arch/x86/kvm/mmu/mmu_internal.h,
/// 6.12 and 7.3): `gpa` is the faulting page's guest-physical address (page-aligned), `size` one
/// page, and `flags` has `KVM_MEMORY_EXIT_FLAG_PRIVATE` when the guest accessed the page as
/// private. It exits so when the access's state has no backing: a private access to a GPA whose
/// memslot has no guest_memfd or that has no memslot, a guest_memfd page it cannot get, or an
/// access whose private/shared state differs from the GPA's attribute.
///
/// ```
/// use gmem::{MemoryFault, MemoryState};
///
/// // As kvm_ioctls::VcpuExit::MemoryFault { flags, gpa, size } gives it.
/// let fault = MemoryFault::new(8, 0x8000, 4096);
/// assert_eq!(fault.accessed_as(), MemoryState::Private);
/// assert_eq!(fault.unknown_flags(), 0);
/// assert_eq!(fault.to_string(), "private access to GPA [0x8000, +0x1000)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryFault {
    /// Guest-physical address of the fault.
    pub gpa: u64,
    /// Size of the range it concerns.
    pub size: u64,
    /// The raw flags.
    pub flags: u64,
}

impl MemoryFault {
    /// From the fields of `kvm_run.memory_fault` (the order kvm-ioctls' `VcpuExit::MemoryFault`
    /// lists them in).
    pub fn new(flags: u64, gpa: u64, size: u64) -> MemoryFault {
        MemoryFault { gpa, size, flags }
    }

    /// The state the guest accessed the range as: private when the kernel set
    /// `KVM_MEMORY_EXIT_FLAG_PRIVATE`. A VMM that agrees with the guest converts the range to
    /// that state and runs the vCPU again.
    pub fn accessed_as(&self) -> MemoryState {
        if self.flags & uapi::KVM_MEMORY_EXIT_FLAG_PRIVATE != 0 {
            MemoryState::Private
        } else {
            MemoryState::Shared
        }
    }

    /// Flag bits this crate does not know (0 on Linux 6.12 to 7.3).
    pub fn unknown_flags(&self) -> u64 {
        self.flags & !uapi::KVM_MEMORY_EXIT_FLAG_PRIVATE
    }
}

impl fmt::Display for MemoryFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} access to GPA [{:#x}, +{:#x})",
            self.accessed_as(),
            self.gpa,
            self.size
        )?;
        if self.unknown_flags() != 0 {
            write!(f, " (unknown flags {:#x})", self.unknown_flags())?;
        }
        Ok(())
    }
}

/// How often in a row [`pre_fault_memory`] retries `EINTR` / `EAGAIN` without progress.
const RETRIES: u32 = 64;

/// `KVM_PRE_FAULT_MEMORY` on `vcpu` for guest-physical `[gpa, gpa + len)`: maps the range in
/// the VM's stage-2 page tables now, as the vCPU's first access would, with each page's current
/// private/shared attribute.
///
/// The kernel maps as much as it can and reports the rest (`kvm_vcpu_pre_fault_memory`,
/// virt/kvm/kvm_main.c, 6.12 and 7.3: success when at least one page was mapped, with `gpa` and
/// `size` moved past what was done); this calls it again until the range is done, and retries
/// `EINTR` (a pending signal) and `EAGAIN` (a memslot being changed) up to 64 times in a row.
///
/// Refused before the ioctl, as the kernel would with `EINVAL`: an empty, unaligned or
/// overflowing range. Any other failure is [`Error::PreFault`] with how far it got: `done`
/// bytes from `gpa` are mapped, and the page at `gpa + done` failed with the kernel's errno,
/// e.g. on x86 (`kvm_arch_vcpu_pre_fault_memory` / `kvm_tdp_page_prefault`, arch/x86/kvm/mmu/mmu.c
/// in 7.3, `kvm_tdp_map_page` in 6.12):
/// - `ENOENT`: no memslot at that GPA (the fault would be emulated MMIO);
/// - `EFAULT`: the GPA is private and has no guest_memfd to map it from;
/// - `EOPNOTSUPP`: the VM type does not allow pre-faulting (yet), or the MMU is not TDP.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kvm = kvm_ioctls::Kvm::new()?;
/// # let vm = kvm.create_vm()?;
/// let vcpu = vm.create_vcpu(0)?;
/// match gmem::pre_fault_memory(&vcpu, 0x10_0000, 0x20_0000) {
///     Ok(()) => {}
///     Err(gmem::Error::PreFault { done, source, .. }) => {
///         eprintln!("mapped {done:#x} bytes, then {source}");
///     }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(())
/// # }
/// ```
pub fn pre_fault_memory(vcpu: &VcpuFd, gpa: u64, len: u64) -> Result<(), Error> {
    pre_fault_loop(gpa, len, |range| {
        // SAFETY: `vcpu` is a borrowed, open vCPU fd; `range` is a valid kvm_pre_fault_memory
        // (64 bytes, the size the ioctl number encodes) that lives across the call, and the
        // kernel only reads and writes it.
        let ret = unsafe { ioctl_with_mut_ref(vcpu, uapi::KVM_PRE_FAULT_MEMORY, range) };
        if ret == 0 {
            Ok(())
        } else {
            Err(errno::Error::last())
        }
    })
}

/// The loop of [`pre_fault_memory`] around `call`, one `KVM_PRE_FAULT_MEMORY`.
fn pre_fault_loop(
    gpa: u64,
    len: u64,
    mut call: impl FnMut(&mut kvm_pre_fault_memory) -> Result<(), errno::Error>,
) -> Result<(), Error> {
    let end = gpa
        .checked_add(len)
        .ok_or(Error::RangeOverflow { offset: gpa, len })?;
    if len == 0 {
        return Err(Error::EmptyRange { offset: gpa });
    }
    let page_size = page_size();
    if !gpa.is_multiple_of(page_size) || !len.is_multiple_of(page_size) {
        return Err(Error::Unaligned {
            offset: gpa,
            len,
            page_size,
        });
    }
    let mut at = gpa;
    let mut retries = 0;
    while at < end {
        let mut range = kvm_pre_fault_memory {
            gpa: at,
            size: end - at,
            ..Default::default()
        };
        let stopped = |source| Error::PreFault {
            gpa,
            len,
            done: at - gpa,
            source,
        };
        match call(&mut range) {
            Ok(()) => {
                // What the kernel says is left must be a suffix of what was asked.
                let left_ok = range.size < end - at
                    && range.gpa.checked_add(range.size) == Some(end)
                    && range.gpa > at;
                if !left_ok {
                    // Success without progress, or an answer outside the range: report it
                    // rather than loop (`kvm_vcpu_pre_fault_memory` returns 0 with nothing
                    // done only after a kernel warning).
                    return Err(stopped(errno::Error::new(libc::EIO)));
                }
                at = range.gpa;
                retries = 0;
            }
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) && retries < RETRIES => {
                retries += 1;
            }
            Err(e) => return Err(stopped(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;

    #[test]
    fn loops_on_partial_progress_and_retries() {
        // The kernel maps one page per call, and is interrupted once.
        let mut calls = Vec::new();
        let mut interrupted = false;
        pre_fault_loop(0x10_0000, 3 * P, |r| {
            calls.push((r.gpa, r.size));
            if r.gpa == 0x10_1000 && !interrupted {
                interrupted = true;
                return Err(errno::Error::new(libc::EINTR));
            }
            r.gpa += P;
            r.size -= P;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            calls,
            [
                (0x10_0000, 3 * P),
                (0x10_1000, 2 * P),
                (0x10_1000, 2 * P),
                (0x10_2000, P)
            ]
        );
    }

    #[test]
    fn reports_how_far_it_got() {
        // Two pages mapped, then ENOENT at the third.
        let e = pre_fault_loop(0x2000, 4 * P, |r| {
            if r.gpa >= 0x4000 {
                return Err(errno::Error::new(libc::ENOENT));
            }
            r.gpa = 0x4000;
            r.size = 0x2000;
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::PreFault { gpa: 0x2000, len, done: 0x2000, source }
                if *len == 4 * P && source.errno() == libc::ENOENT),
            "{e:?}"
        );
        assert!(e.to_string().contains("then 0x4000 failed"), "{e}");
    }

    #[test]
    fn gives_up_on_endless_eagain_and_on_no_progress() {
        let mut n = 0;
        let e = pre_fault_loop(0, P, |_| {
            n += 1;
            Err(errno::Error::new(libc::EAGAIN))
        })
        .unwrap_err();
        assert_eq!(n, RETRIES + 1);
        assert!(matches!(e, Error::PreFault { done: 0, .. }));
        // Success that moved nothing, and an answer past the end.
        for bad in [(0u64, P), (P, P)] {
            let e = pre_fault_loop(0, P, |r| {
                (r.gpa, r.size) = bad;
                Ok(())
            })
            .unwrap_err();
            assert!(
                matches!(&e, Error::PreFault { done: 0, source, .. } if source.errno() == libc::EIO),
                "{e:?}"
            );
        }
    }

    #[test]
    fn refuses_what_the_kernel_would_before_calling_it() {
        let never = |_: &mut kvm_pre_fault_memory| -> Result<(), errno::Error> {
            panic!("called the kernel")
        };
        assert!(matches!(
            pre_fault_loop(1, P, never),
            Err(Error::Unaligned { offset: 1, .. })
        ));
        assert!(matches!(
            pre_fault_loop(0, P + 1, never),
            Err(Error::Unaligned { .. })
        ));
        assert!(matches!(
            pre_fault_loop(P, 0, never),
            Err(Error::EmptyRange { offset: P })
        ));
        // gpa + size wrapping to exactly 0 is EINVAL in the kernel too.
        assert!(matches!(
            pre_fault_loop(u64::MAX - P + 1, P, never),
            Err(Error::RangeOverflow { .. })
        ));
    }

    #[test]
    fn memory_fault_decodes_flags() {
        let f = MemoryFault::new(8, 0x9000, P);
        assert_eq!(f.accessed_as(), MemoryState::Private);
        let s = MemoryFault::new(0, 0x9000, P);
        assert_eq!(s.accessed_as(), MemoryState::Shared);
        assert_eq!(s.to_string(), "shared access to GPA [0x9000, +0x1000)");
        let u = MemoryFault::new(0x18, 0, P);
        assert_eq!(u.unknown_flags(), 0x10);
        assert!(u.to_string().ends_with("(unknown flags 0x10)"));
    }
}
