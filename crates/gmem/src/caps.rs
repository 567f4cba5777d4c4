//! [`Capabilities`]: what the KVM behind a `Kvm` or `VmFd` offers for guest_memfd.

use std::fmt;

use kvm_ioctls::{Kvm, VmFd};

use crate::{uapi, ConversionPath, GmemFlags};

/// The guest_memfd-related capabilities of a KVM, as `KVM_CHECK_EXTENSION` answers them.
///
/// Probe a VM fd ([`Capabilities::probe`]) rather than `/dev/kvm` where you can: several answers
/// depend on the VM type (e.g. memory attributes exist only on VM types with private memory, and
/// `INIT_SHARED` only on VM types without it). `Display` gives one line fit for a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `KVM_CAP_GUEST_MEMFD`: `KVM_CREATE_GUEST_MEMFD` exists.
    pub guest_memfd: bool,
    /// `KVM_CAP_GUEST_MEMFD_FLAGS`: the flags `KVM_CREATE_GUEST_MEMFD` accepts.
    pub guest_memfd_flags: GmemFlags,
    /// `KVM_CAP_MEMORY_ATTRIBUTES`: the attributes `KVM_SET_MEMORY_ATTRIBUTES` accepts (0: none).
    pub memory_attributes: u64,
    /// `KVM_CAP_VM_TYPES`: bit `n` set means VM type `n` is accepted by `KVM_CREATE_VM`.
    pub vm_types: u64,
    /// `KVM_CAP_USER_MEMORY2`: `KVM_SET_USER_MEMORY_REGION2` exists.
    pub user_memory2: bool,
    /// `KVM_CAP_PRE_FAULT_MEMORY`: `KVM_PRE_FAULT_MEMORY` exists.
    pub pre_fault_memory: bool,
    /// `KVM_CAP_NR_MEMSLOTS`: memslots per address space (0 if not reported).
    pub nr_memslots: u32,
}

fn answer(v: i32) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Capabilities {
    fn from_check(check: impl Fn(u32) -> i32) -> Capabilities {
        let guest_memfd = check(uapi::KVM_CAP_GUEST_MEMFD) > 0;
        Capabilities {
            guest_memfd,
            guest_memfd_flags: if guest_memfd {
                GmemFlags::from_bits(answer(check(uapi::KVM_CAP_GUEST_MEMFD_FLAGS)))
            } else {
                GmemFlags::empty()
            },
            memory_attributes: answer(check(uapi::KVM_CAP_MEMORY_ATTRIBUTES)),
            vm_types: answer(check(uapi::KVM_CAP_VM_TYPES)),
            user_memory2: check(uapi::KVM_CAP_USER_MEMORY2) > 0,
            pre_fault_memory: check(uapi::KVM_CAP_PRE_FAULT_MEMORY) > 0,
            nr_memslots: u32::try_from(check(uapi::KVM_CAP_NR_MEMSLOTS)).unwrap_or(0),
        }
    }

    /// Probes a VM fd (the answers that matter for that VM).
    pub fn probe(vm: &VmFd) -> Capabilities {
        Self::from_check(|cap| vm.check_extension_raw(cap.into()))
    }

    /// Probes `/dev/kvm` (answers for the default VM type).
    pub fn probe_kvm(kvm: &Kvm) -> Capabilities {
        Self::from_check(|cap| kvm.check_extension_raw(cap.into()))
    }

    /// Whether `KVM_CREATE_VM` accepts `vm_type` (per `KVM_CAP_VM_TYPES`).
    pub fn supports_vm_type(&self, vm_type: u32) -> bool {
        vm_type < 64 && self.vm_types & (1u64 << vm_type) != 0
    }

    /// How shared<->private conversion would be done on this VM, if at all.
    ///
    /// Today: [`ConversionPath::VmAttributes`] when `KVM_SET_MEMORY_ATTRIBUTES` accepts
    /// `KVM_MEMORY_ATTRIBUTE_PRIVATE`, else `None`.
    pub fn conversion_path(&self) -> Option<ConversionPath> {
        (self.memory_attributes & uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE != 0)
            .then_some(ConversionPath::VmAttributes)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest_memfd={} guest_memfd_flags={} memory_attributes={:#x} vm_types={:#x} \
             user_memory2={} pre_fault_memory={} nr_memslots={} conversion={}",
            self.guest_memfd,
            self.guest_memfd_flags,
            self.memory_attributes,
            self.vm_types,
            self.user_memory2,
            self.pre_fault_memory,
            self.nr_memslots,
            match self.conversion_path() {
                Some(p) => p.to_string(),
                None => "none".to_string(),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_check_reads_each_capability() {
        // Answers as a 6.18 KVM with private memory would give them (built by hand).
        let c = Capabilities::from_check(|cap| match cap {
            234 => 1,
            244 => 1,
            233 => 8,
            235 => 0b10011,
            231 => 1,
            236 => 1,
            10 => 32764,
            _ => 0,
        });
        assert!(c.guest_memfd);
        assert_eq!(c.guest_memfd_flags, GmemFlags::MMAP);
        assert_eq!(c.memory_attributes, 8);
        assert!(c.supports_vm_type(0) && c.supports_vm_type(4) && !c.supports_vm_type(2));
        assert!(!c.supports_vm_type(200));
        assert!(c.user_memory2 && c.pre_fault_memory);
        assert_eq!(c.nr_memslots, 32764);
        assert_eq!(c.conversion_path(), Some(ConversionPath::VmAttributes));
        assert!(c
            .to_string()
            .contains("conversion=KVM_SET_MEMORY_ATTRIBUTES"));
    }

    #[test]
    fn negative_answers_and_no_guest_memfd_give_empty_flags() {
        let c = Capabilities::from_check(|cap| if cap == 244 { 3 } else { -1 });
        assert!(!c.guest_memfd);
        assert!(c.guest_memfd_flags.is_empty());
        assert_eq!(c.memory_attributes, 0);
        assert_eq!(c.conversion_path(), None);
        assert!(c.to_string().contains("conversion=none"));
    }
}
