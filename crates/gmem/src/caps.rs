//! [`Capabilities`]: what the KVM behind a `Kvm` or `VmFd` offers for guest_memfd.

use std::fmt;

use kvm_ioctls::{Kvm, VmFd};

use crate::{uapi, ConversionPath, GmemFlags, GmemSeries};

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
    /// The version of the guest_memfd in-place conversion series whose capability number was
    /// asked ([`Capabilities::probe_series`]); `None` when it was not asked (the number is not
    /// mainline's, see [`GmemSeries`]).
    pub gmem_series: Option<GmemSeries>,
    /// `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` under that version's number: the attributes
    /// `KVM_SET_MEMORY_ATTRIBUTES2` on a guest_memfd accepts (0: none, or not asked).
    pub guest_memfd_attributes: u64,
}

fn answer(v: i32) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Capabilities {
    fn from_check(check: impl Fn(u32) -> i32) -> Capabilities {
        Self::from_answers(check, None)
    }

    /// The capabilities `check` answers (`KVM_CHECK_EXTENSION` by number), asking also the
    /// number `series` gives `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` when one is given: what
    /// [`probe`](Self::probe) and [`probe_series`](Self::probe_series) do with a VM fd, for a
    /// model of a kernel.
    pub fn from_answers(check: impl Fn(u32) -> i32, series: Option<GmemSeries>) -> Capabilities {
        let guest_memfd = check(uapi::KVM_CAP_GUEST_MEMFD) > 0;
        let guest_memfd_attributes = match series {
            Some(s) if guest_memfd => answer(check(s.cap_guest_memfd_memory_attributes())),
            _ => 0,
        };
        Capabilities {
            gmem_series: series,
            guest_memfd_attributes,
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

    /// Probes a VM fd as [`probe`](Self::probe) does, and also the capability number `series`
    /// gives `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES`, so [`conversion_path`](Self::conversion_path)
    /// can choose the per-guest_memfd path.
    ///
    /// On Linux 7.3 (no series) the v8 number, 250, is `KVM_CAP_PPC_COMPAT_CAPS`, which x86
    /// answers 0 for; a positive answer is only taken for the series when it is exactly
    /// `KVM_MEMORY_ATTRIBUTE_PRIVATE` and the VM-wide attributes then offer no PRIVATE (what v8
    /// patch 17/46 answers: `kvm_vm_ioctl_check_extension_generic`,
    /// `kvm_supported_vm_mem_attributes`).
    pub fn probe_series(vm: &VmFd, series: GmemSeries) -> Capabilities {
        Self::from_answers(|cap| vm.check_extension_raw(cap.into()), Some(series))
    }

    /// Probes `/dev/kvm` (answers for the default VM type).
    pub fn probe_kvm(kvm: &Kvm) -> Capabilities {
        Self::from_check(|cap| kvm.check_extension_raw(cap.into()))
    }

    /// Whether `KVM_CREATE_VM` accepts `vm_type` (per `KVM_CAP_VM_TYPES`).
    pub fn supports_vm_type(&self, vm_type: u32) -> bool {
        vm_type < 64 && self.vm_types & (1u64 << vm_type) != 0
    }

    /// How shared<->private conversion would be done on this VM, if at all:
    /// - [`ConversionPath::GuestMemfdAttributes`] when a series version was probed and its
    ///   `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` answers exactly `KVM_MEMORY_ATTRIBUTE_PRIVATE`
    ///   while `KVM_CAP_MEMORY_ATTRIBUTES` offers no PRIVATE (series v8 with
    ///   `kvm.gmem_in_place_conversion` on, the default unless the kernel was built with
    ///   `CONFIG_KVM_VM_MEMORY_ATTRIBUTES`: patch 24/46);
    /// - else [`ConversionPath::VmAttributes`] when `KVM_SET_MEMORY_ATTRIBUTES` accepts
    ///   `KVM_MEMORY_ATTRIBUTE_PRIVATE` (with the module parameter off, v8 answers 0 for the
    ///   per-guest_memfd capability and `ENOTTY` for its ioctl);
    /// - else `None`.
    ///
    /// ```
    /// use gmem::{Capabilities, ConversionPath, GmemSeries};
    /// // A v8 kernel with the module parameter on, as patch 17/46 answers (numbers from it).
    /// let on = Capabilities::from_answers(
    ///     |cap| match cap { 234 => 1, 250 => 8, _ => 0 },
    ///     Some(GmemSeries::V8),
    /// );
    /// assert_eq!(on.conversion_path(), Some(ConversionPath::GuestMemfdAttributes(GmemSeries::V8)));
    /// // Module parameter off: the VM-wide attributes offer PRIVATE, the per-file cap nothing.
    /// let off = Capabilities::from_answers(
    ///     |cap| match cap { 234 => 1, 233 => 8, _ => 0 },
    ///     Some(GmemSeries::V8),
    /// );
    /// assert_eq!(off.conversion_path(), Some(ConversionPath::VmAttributes));
    /// ```
    pub fn conversion_path(&self) -> Option<ConversionPath> {
        let private = uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE;
        if let Some(series) = self.gmem_series {
            if self.guest_memfd_attributes == private && self.memory_attributes & private == 0 {
                return Some(ConversionPath::GuestMemfdAttributes(series));
            }
        }
        (self.memory_attributes & private != 0).then_some(ConversionPath::VmAttributes)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest_memfd={} guest_memfd_flags={} memory_attributes={:#x} vm_types={:#x} \
             user_memory2={} pre_fault_memory={} nr_memslots={} gmem_attributes={} conversion={}",
            self.guest_memfd,
            self.guest_memfd_flags,
            self.memory_attributes,
            self.vm_types,
            self.user_memory2,
            self.pre_fault_memory,
            self.nr_memslots,
            match self.gmem_series {
                Some(s) => format!("{:#x} (series {s})", self.guest_memfd_attributes),
                None => "not asked".to_string(),
            },
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
    fn series_capability_chooses_the_per_file_path_only_when_consistent() {
        let v8 = Some(GmemSeries::V8);
        // Answers written out from v8 patch 17/46: with the module parameter on, cap 250
        // answers KVM_MEMORY_ATTRIBUTE_PRIVATE and KVM_CAP_MEMORY_ATTRIBUTES (233) answers 0.
        let on = Capabilities::from_answers(
            |c| match c {
                234 => 1,
                250 => 8,
                _ => 0,
            },
            v8,
        );
        assert_eq!(on.guest_memfd_attributes, 8);
        assert_eq!(
            on.conversion_path(),
            Some(ConversionPath::GuestMemfdAttributes(GmemSeries::V8))
        );
        assert!(
            on.to_string().contains("gmem_attributes=0x8 (series v8)"),
            "{on}"
        );
        assert!(on
            .to_string()
            .contains("conversion=KVM_SET_MEMORY_ATTRIBUTES2 (in-place conversion series v8)"));
        // Not asked: cap 250 is never read (7.3 gives it to KVM_CAP_PPC_COMPAT_CAPS).
        let unasked = Capabilities::from_answers(
            |c| match c {
                234 => 1,
                250 => 8,
                _ => 0,
            },
            None,
        );
        assert_eq!(unasked.guest_memfd_attributes, 0);
        assert_eq!(unasked.conversion_path(), None);
        assert!(unasked.to_string().contains("gmem_attributes=not asked"));
        // An answer that is not the series' (other bits), or both caps claiming PRIVATE: the
        // number means something else on this kernel; the VM-wide path stays.
        let odd = Capabilities::from_answers(
            |c| match c {
                234 => 1,
                250 => 0x18,
                233 => 8,
                _ => 0,
            },
            v8,
        );
        assert_eq!(odd.conversion_path(), Some(ConversionPath::VmAttributes));
        let both = Capabilities::from_answers(
            |c| match c {
                234 => 1,
                250 => 8,
                233 => 8,
                _ => 0,
            },
            v8,
        );
        assert_eq!(both.conversion_path(), Some(ConversionPath::VmAttributes));
        // No guest_memfd: the series' capability is not asked.
        let none = Capabilities::from_answers(|c| if c == 250 { 8 } else { 0 }, v8);
        assert_eq!(none.guest_memfd_attributes, 0);
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
