//! The ioctl layer: series versions, capability discovery, and the trait every CCA ioctl goes
//! through (the real one on a VM fd, or a model in tests).

use crate::uapi::KvmArmRmiPopulate;
use crate::version::{PopulateRequest, UapiVersion};
use crate::Error;

/// Every CCA ioctl the backend issues. The real implementation is [`KvmCcaIoctl`]; tests use a
/// model of the kernel (`testing::KernelModel`, feature `test-utils`).
///
/// Errors are the ioctl's errno (positive). vCPUs are numbered in the order the VMM created
/// them (index 0 is the boot vCPU, the only runnable REC).
pub trait CcaIoctl {
    /// VM ioctl `KVM_ARM_RMI_POPULATE` as `request` numbers it; the ioctl's return value (bytes
    /// populated for v12, 0 from v13 on, when the kernel advanced `args`).
    fn rmi_populate(
        &mut self,
        request: PopulateRequest,
        args: &mut KvmArmRmiPopulate,
    ) -> Result<i32, i32>;

    /// VM ioctl `KVM_SET_MEMORY_ATTRIBUTES` with `KVM_MEMORY_ATTRIBUTE_PRIVATE` over
    /// `[gpa, gpa + len)`. The default refuses with `ENOTTY` (a layer that cannot convert).
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        let _ = (gpa, len);
        Err(libc::ENOTTY)
    }

    /// How many vCPUs the VM has (the ones this layer can reach). The default has none.
    fn vcpu_count(&self) -> usize {
        0
    }

    /// `KVM_GET_ONE_REG` of register `id` on vCPU `vcpu` into `value`. The default refuses
    /// with `ENOTTY`.
    fn vcpu_get_one_reg(&mut self, vcpu: usize, id: u64, value: &mut [u8]) -> Result<(), i32> {
        let _ = (vcpu, id, value);
        Err(libc::ENOTTY)
    }

    /// `KVM_SET_ONE_REG` of register `id` on vCPU `vcpu`. The default refuses with `ENOTTY`.
    fn vcpu_set_one_reg(&mut self, vcpu: usize, id: u64, value: &[u8]) -> Result<(), i32> {
        let _ = (vcpu, id, value);
        Err(libc::ENOTTY)
    }

    /// `KVM_ARM_VCPU_FINALIZE(feature)` on vCPU `vcpu`. The default refuses with `ENOTTY`.
    fn vcpu_finalize(&mut self, vcpu: usize, feature: i32) -> Result<(), i32> {
        let _ = (vcpu, feature);
        Err(libc::ENOTTY)
    }

    /// Whether the VM has an in-kernel vGIC, which `kvm_activate_realm` requires at the first
    /// `KVM_RUN`: `Some(false)` if it certainly has none, `None` if this layer cannot tell (the
    /// default).
    fn in_kernel_vgic(&self) -> Option<bool> {
        None
    }
}

impl<T: CcaIoctl + ?Sized> CcaIoctl for &mut T {
    fn rmi_populate(
        &mut self,
        request: PopulateRequest,
        args: &mut KvmArmRmiPopulate,
    ) -> Result<i32, i32> {
        (**self).rmi_populate(request, args)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        (**self).set_private(gpa, len)
    }
    fn vcpu_count(&self) -> usize {
        (**self).vcpu_count()
    }
    fn vcpu_get_one_reg(&mut self, vcpu: usize, id: u64, value: &mut [u8]) -> Result<(), i32> {
        (**self).vcpu_get_one_reg(vcpu, id, value)
    }
    fn vcpu_set_one_reg(&mut self, vcpu: usize, id: u64, value: &[u8]) -> Result<(), i32> {
        (**self).vcpu_set_one_reg(vcpu, id, value)
    }
    fn vcpu_finalize(&mut self, vcpu: usize, feature: i32) -> Result<(), i32> {
        (**self).vcpu_finalize(vcpu, feature)
    }
    fn in_kernel_vgic(&self) -> Option<bool> {
        (**self).in_kernel_vgic()
    }
}

/// The real ioctls, on a realm VM's fd and its vCPUs' fds. The CCA ioctls are issued on arm64
/// hosts only; elsewhere each fails with `ENOTTY` without reaching the kernel (the numbers may
/// mean something else to another architecture's KVM). Conversion to private
/// ([`set_private`](CcaIoctl::set_private)) goes through the realm's guest_memfd a range is
/// bound to ([`gmem::convert_gpa_range`], the generic `KVM_SET_MEMORY_ATTRIBUTES`), never around
/// it, so each handle's record of its private ranges stays true.
pub struct KvmCcaIoctl<'v> {
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    vm: &'v kvm_ioctls::VmFd,
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    vcpus: &'v [kvm_ioctls::VcpuFd],
    vgic: Option<&'v kvm_ioctls::DeviceFd>,
    gmems: Vec<&'v mut gmem::GuestMemfd>,
}

impl<'v> KvmCcaIoctl<'v> {
    /// The ioctls of `vm` (no vCPUs: add them with [`KvmCcaIoctl::with_vcpus`]; conversions
    /// fail with `EINVAL` until [`with_guest_memfd`](Self::with_guest_memfd)).
    pub fn new(vm: &'v kvm_ioctls::VmFd) -> Self {
        KvmCcaIoctl {
            vm,
            vcpus: &[],
            vgic: None,
            gmems: Vec::new(),
        }
    }

    /// Converts the ranges bound to `gmem`'s memslots through it (a range bound to none of the
    /// added guest_memfds is refused with `EINVAL`). The handle stays borrowed while this layer
    /// lives: no shared view of it can be written meanwhile.
    pub fn with_guest_memfd(mut self, gmem: &'v mut gmem::GuestMemfd) -> Self {
        self.gmems.push(gmem);
        self
    }

    /// The VM's vCPUs, in creation order (index 0 boots). From v12 on the kernel reads the
    /// realm's SVE vector length and debug resources from them when it creates the realm (at
    /// the first populate), so [`CcaBackend::configure`](crate::CcaBackend::configure) sets
    /// them up through these fds.
    pub fn with_vcpus(mut self, vcpus: &'v [kvm_ioctls::VcpuFd]) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// The VM's in-kernel vGIC (the `KVM_CREATE_DEVICE` fd of `KVM_DEV_TYPE_ARM_VGIC_V3`),
    /// which a realm needs at the first `KVM_RUN`. Without it
    /// [`CcaIoctl::in_kernel_vgic`] says it cannot tell, and
    /// [`CcaBackend::activate`](crate::CcaBackend::activate) cannot check.
    pub fn with_vgic(mut self, vgic: &'v kvm_ioctls::DeviceFd) -> Self {
        self.vgic = Some(vgic);
        self
    }

    #[cfg(target_arch = "aarch64")]
    fn vcpu(&self, vcpu: usize) -> Result<&kvm_ioctls::VcpuFd, i32> {
        self.vcpus.get(vcpu).ok_or(libc::ENODEV)
    }
}

impl CcaIoctl for KvmCcaIoctl<'_> {
    fn rmi_populate(
        &mut self,
        request: PopulateRequest,
        args: &mut KvmArmRmiPopulate,
    ) -> Result<i32, i32> {
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: `args` is a valid, exclusively borrowed `struct kvm_arm_rmi_populate`
            // (32 bytes, layout pinned in `uapi` tests) that outlives the call; the kernel reads
            // it and, from v13 on, writes the same 32 bytes back. `source_uaddr` points at memory
            // the caller keeps alive for the call (the backend's borrowed chunk or its bounce
            // buffer); the kernel only reads it. The request is one of the two
            // `KVM_ARM_RMI_POPULATE` numbers (`PopulateRequest`), whose argument is that struct.
            let ret = unsafe {
                vmm_sys_util::ioctl::ioctl_with_mut_ref(
                    self.vm,
                    request.number() as libc::c_ulong,
                    args,
                )
            };
            if ret < 0 {
                return Err(vmm_sys_util::errno::Error::last().errno());
            }
            Ok(ret)
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (request, args);
            Err(libc::ENOTTY)
        }
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        gmem::convert_gpa_range(&mut self.gmems, gpa, len, gmem::MemoryState::Private)
            .map_err(|e| e.errno())
    }

    fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    fn in_kernel_vgic(&self) -> Option<bool> {
        self.vgic.map(|_| true)
    }

    fn vcpu_get_one_reg(&mut self, vcpu: usize, id: u64, value: &mut [u8]) -> Result<(), i32> {
        #[cfg(target_arch = "aarch64")]
        {
            self.vcpu(vcpu)?
                .get_one_reg(id, value)
                .map(|_| ())
                .map_err(|e| e.errno())
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (vcpu, id, value);
            Err(libc::ENOTTY)
        }
    }

    fn vcpu_set_one_reg(&mut self, vcpu: usize, id: u64, value: &[u8]) -> Result<(), i32> {
        #[cfg(target_arch = "aarch64")]
        {
            self.vcpu(vcpu)?
                .set_one_reg(id, value)
                .map(|_| ())
                .map_err(|e| e.errno())
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (vcpu, id, value);
            Err(libc::ENOTTY)
        }
    }

    fn vcpu_finalize(&mut self, vcpu: usize, feature: i32) -> Result<(), i32> {
        #[cfg(target_arch = "aarch64")]
        {
            self.vcpu(vcpu)?
                .vcpu_finalize(&feature)
                .map_err(|e| e.errno())
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (vcpu, feature);
            Err(libc::ENOTTY)
        }
    }
}

/// Where the capability number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapSource {
    /// The number the selected series version's patches give.
    SeriesNumber,
    /// Given by the caller (a kernel whose number the VMM knows better, e.g. a vendor tree).
    Caller,
}

/// What probing found: CCA realms are available through this capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The capability number (`KVM_CAP_ARM_RMI`).
    pub cap: u32,
    /// Where the number came from.
    pub cap_source: CapSource,
    /// The version the caller selected.
    pub version: UapiVersion,
}

/// The IPA size of the throwaway realm VM [`probe`] creates to confirm the capability: 32 bits,
/// the smallest any arm64 KVM takes (`ARM64_MIN_PARANGE_BITS`, mainline `kvm_init_stage2_mmu`).
pub const PROBE_IPA_BITS: u8 = 32;

/// Probes this machine's KVM for Arm CCA realm support speaking `version`, in two steps that
/// must both succeed:
///
/// 1. `KVM_CHECK_EXTENSION` of the capability number `version`'s own patches give
///    ([`UapiVersion::series_cap`]) must answer more than 0;
/// 2. `KVM_CREATE_VM` with that version's realm machine type
///    ([`UapiVersion::realm_vm_type`] of [`PROBE_IPA_BITS`]) must succeed (the VM is closed at
///    once; the series creates nothing in the RMM before the first populate).
///
/// The second step is what makes the probe trustworthy: a capability number answers, but does
/// not say which series it belongs to, and mainline reuses the numbers the out-of-tree series
/// took. Mainline 6.18 gives 243 (v9's) to `KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED`; 7.3 gives
/// 247-249 (v12-v14's) to `KVM_CAP_S390_KEYOP`, `_VSIE_ESAMODE`, `_HPAGE_2G` and 251 (the
/// number OpenVMM uses for v15) to `KVM_CAP_ARM_PMU_V3_STRICT`, which arm64 answers
/// (`kvm_supports_guest_pmuv3()`, `arch/arm64/kvm/arm.c`). A kernel without the series refuses
/// the realm type bit: 7.3 `kvm_arch_init_vm` returns `-EINVAL` for any type bit outside
/// `KVM_VM_TYPE_ARM_MASK` (IPA size and the protected bit 31), 6.12 `kvm_init_stage2_mmu` for
/// any outside the IPA size; and a series version speaking another type bit (v14 moved it from
/// bit 8 to bit 30) refuses the other's. On a host that is not arm64 nothing is asked of the
/// kernel (the numbers may mean something else there).
///
/// ```
/// # let Ok(kvm) = kvm_ioctls::Kvm::new() else { return };
/// match cca_backend::probe(&kvm, cca_backend::UapiVersion::V14) {
///     Ok(p) => println!("CCA realms via capability {}", p.cap),
///     Err(e) => println!("{e}"), // e.g. on x86_64: not supported
/// }
/// ```
pub fn probe(kvm: &kvm_ioctls::Kvm, version: UapiVersion) -> Result<Probe, Error> {
    probe_with(
        &|cap| kvm.check_extension_raw(cap.into()),
        &|vm_type| {
            kvm.create_vm_with_type(vm_type)
                .map(drop)
                .map_err(|e| e.errno())
        },
        None,
        cfg!(target_arch = "aarch64"),
        version,
    )
}

/// [`probe`] with its inputs given: `check_extension` asks `KVM_CHECK_EXTENSION`, `create_vm`
/// issues `KVM_CREATE_VM` with a machine type (and closes the VM; `Err(errno)` on failure),
/// `cap` a number the caller knows (taking precedence over the series number), `arm64` whether
/// the host is arm64. A caller's number is confirmed by the realm VM type like the series'.
pub fn probe_with(
    check_extension: &dyn Fn(u32) -> i32,
    create_vm: &dyn Fn(u64) -> Result<(), i32>,
    cap: Option<u32>,
    arm64: bool,
    version: UapiVersion,
) -> Result<Probe, Error> {
    if !arm64 {
        return Err(Error::NotSupported {
            reason: format!(
                "this is a {} host; Arm CCA realms need an arm64 host running the CCA KVM series",
                std::env::consts::ARCH
            ),
        });
    }
    let (cap, cap_source) = match cap {
        Some(c) => (c, CapSource::Caller),
        None => (version.series_cap(), CapSource::SeriesNumber),
    };
    let from = match cap_source {
        CapSource::SeriesNumber => "the series patches",
        CapSource::Caller => "the caller",
    };
    let r = check_extension(cap);
    if r <= 0 {
        return Err(Error::NotSupported {
            reason: format!(
                "KVM_CHECK_EXTENSION({cap}) = {r} (capability number from {from}; selected ABI {version})"
            ),
        });
    }
    let vm_type = version.realm_vm_type(PROBE_IPA_BITS);
    if let Err(errno) = create_vm(vm_type) {
        return Err(Error::NotSupported {
            reason: format!(
                "KVM_CHECK_EXTENSION({cap}) = {r} (capability number from {from}) but \
                 KVM_CREATE_VM with the {version} realm type {vm_type:#x} failed with errno \
                 {errno}: capability {cap} is not the CCA series' on this kernel (mainline \
                 reuses the series' numbers, e.g. 7.3's 251 is KVM_CAP_ARM_PMU_V3_STRICT) or \
                 the kernel speaks another series version"
            ),
        });
    }
    Ok(Probe {
        cap,
        cap_source,
        version,
    })
}
