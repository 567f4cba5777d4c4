//! The run-time RIPAS change a realm asks for, as it reaches the VMM.
//!
//! A realm changes the RIPAS of its memory at run time (`RSI_IPA_STATE_SET`: RAM to accept
//! memory, EMPTY to give it back, e.g. for shared buffers). The RMM exits to the host with
//! `RMI_EXIT_RIPAS_CHANGE`, and the series hands the request to the VMM: v12 16/46 "Handle realm
//! enter/exit", `rec_exit_ripas_change` (`arch/arm64/kvm/rmi-exit.c`) calls
//! `kvm_prepare_memory_fault_exit(vcpu, base, top - base, false, false, ripas == RMI_RAM)` and
//! returns `-EFAULT`, so `KVM_RUN` fails with `EFAULT` and `kvm_run.exit_reason` is
//! `KVM_EXIT_MEMORY_FAULT` (39, mainline `include/uapi/linux/kvm.h`) with `memory_fault.gpa` =
//! base, `.size` = top - base and `.flags` = `KVM_MEMORY_EXIT_FLAG_PRIVATE` (`1 << 3`) when the
//! realm asks for RAM, 0 for EMPTY. "Exit to VMM, the actual RIPAS change is done on next
//! entry": the VMM makes the range private (RAM) or shared (EMPTY) with
//! `KVM_SET_MEMORY_ATTRIBUTES` (through the guest_memfd that backs it, `gmem::convert_gpa_range`)
//! and runs the vCPU again; `kvm_rec_pre_enter` then completes the change in the RMM
//! (`kvm_complete_ripas_change`). A VMM that does not run the vCPU again rejects the change. A
//! range outside the protected half never reaches the VMM (`-EINVAL` from `KVM_RUN`, the REC
//! told `RIPAS_RESPONSE` reject).
//!
//! Read in v12's patch; v13 and v14 were not re-read for this exit (their memory model is
//! v12's: `KVM_SET_MEMORY_ATTRIBUTES` on the VM). kvm-ioctls decodes the exit as
//! `VcpuExit::MemoryFault { flags, gpa, size }`; [`RipasChange::from_memory_fault`] checks and
//! types it.

use crate::Error;

/// `KVM_EXIT_MEMORY_FAULT` (mainline `include/uapi/linux/kvm.h`, 6.8 on; 7.3 line 191).
pub const KVM_EXIT_MEMORY_FAULT: u32 = 39;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE` (mainline `include/uapi/linux/kvm.h`: `1ULL << 3`).
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;

/// The RIPAS a realm asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ripas {
    /// `RIPAS_RAM`: the range becomes private (`KVM_MEMORY_ATTRIBUTE_PRIVATE` set).
    Ram,
    /// `RIPAS_EMPTY`: the range becomes shared (the attribute cleared).
    Empty,
}

/// A run-time RIPAS change request, decoded from a `KVM_EXIT_MEMORY_FAULT` of a realm vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RipasChange {
    /// First guest-physical address (page aligned).
    pub gpa: u64,
    /// Bytes (page aligned, non-zero).
    pub size: u64,
    /// What the realm asks for.
    pub ripas: Ripas,
}

impl RipasChange {
    /// Decodes the `memory_fault` of a `KVM_EXIT_MEMORY_FAULT` (kvm-ioctls'
    /// `VcpuExit::MemoryFault { flags, gpa, size }`). Refused ([`Error::BadRange`], naming
    /// the range): flags other than `KVM_MEMORY_EXIT_FLAG_PRIVATE` (no series version sets
    /// another), an empty, wrapping or not page-aligned range.
    ///
    /// ```
    /// use cca_backend::{Ripas, RipasChange};
    /// // A realm accepting 2 MiB at 1 GiB: flags PRIVATE (1 << 3).
    /// let c = RipasChange::from_memory_fault(1 << 3, 0x4000_0000, 0x20_0000)?;
    /// assert_eq!(c.ripas, Ripas::Ram);
    /// // Then: gmem::convert_gpa_range(&mut gmems, c.gpa, c.size, gmem::MemoryState::Private)
    /// // and KVM_RUN again, which completes the change in the RMM.
    /// # Ok::<(), cca_backend::Error>(())
    /// ```
    pub fn from_memory_fault(flags: u64, gpa: u64, size: u64) -> Result<RipasChange, Error> {
        const PAGE: u64 = 4096;
        let bad = |reason| Error::BadRange {
            base: gpa,
            top: gpa.wrapping_add(size),
            reason,
        };
        if flags & !KVM_MEMORY_EXIT_FLAG_PRIVATE != 0 {
            return Err(bad(
                "KVM_EXIT_MEMORY_FAULT flags other than KVM_MEMORY_EXIT_FLAG_PRIVATE: not a \
                 RIPAS change of the CCA series",
            ));
        }
        if size == 0 {
            return Err(bad("a RIPAS change of no bytes"));
        }
        if gpa.checked_add(size).is_none() {
            return Err(bad("the range wraps"));
        }
        if !gpa.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(bad("not page aligned"));
        }
        Ok(RipasChange {
            gpa,
            size,
            ripas: if flags & KVM_MEMORY_EXIT_FLAG_PRIVATE != 0 {
                Ripas::Ram
            } else {
                Ripas::Empty
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_rec_exit_ripas_change_sets() {
        // kvm_prepare_memory_fault_exit(vcpu, base, top - base, false, false, ripas == RAM):
        // flags = KVM_MEMORY_EXIT_FLAG_PRIVATE (0x8) only when `private`.
        assert_eq!(
            RipasChange::from_memory_fault(0x8, 0x8000_0000, 0x1000).unwrap(),
            RipasChange {
                gpa: 0x8000_0000,
                size: 0x1000,
                ripas: Ripas::Ram
            }
        );
        assert_eq!(
            RipasChange::from_memory_fault(0, 0x20_0000, 0x20_0000)
                .unwrap()
                .ripas,
            Ripas::Empty
        );
        assert_eq!(KVM_EXIT_MEMORY_FAULT, 39);
    }

    #[test]
    fn refusals_name_the_range() {
        for (flags, gpa, size, why) in [
            (0x8 | 0x2, 0x1000, 0x1000, "flags"),
            (0x1, 0x1000, 0x1000, "flags"),
            (0x8, 0x1000, 0, "no bytes"),
            (0x8, u64::MAX - 0xfff, 0x2000, "wraps"),
            (0x8, 0x1800, 0x1000, "aligned"),
            (0, 0x1000, 0x800, "aligned"),
        ] {
            let e = RipasChange::from_memory_fault(flags, gpa, size).unwrap_err();
            let s = e.to_string();
            assert!(s.contains(&format!("[{gpa:#x}..")), "{s}");
            assert!(s.contains(why), "{s}");
        }
    }
}
