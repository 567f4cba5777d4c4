//! The ioctl layer: a small trait over `KVM_MEMORY_ENCRYPT_OP` (VM and vCPU forms) and
//! `KVM_SET_MEMORY_ATTRIBUTES`, with the real implementation on KVM file descriptors.
//!
//! Tests substitute an in-process model of the kernel (`testing::TdxModel`, feature `test-utils`).

use std::os::fd::{AsRawFd, RawFd};

use gmem::{ConversionPath, GmemSeries, GuestMemfd, MemoryState};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_CAP_SPLIT_IRQCHIP,
    KVM_CAP_SYNC_REGS, KVM_CAP_VM_TYPES, KVM_MEMORY_ENCRYPT_OP, KVM_TDX_CAPABILITIES,
    KVM_TDX_GET_CPUID, KVM_TDX_INIT_MEM_REGION, KVM_TDX_INIT_VM, KVM_X86_DEFAULT_VM,
    KVM_X86_TDX_VM,
};
use crate::Error;

/// `KVM_CAP_USER_MEMORY` (include/uapi/linux/kvm.h), the capability [`KvmTdx`] asks to see
/// whether the VM is dead.
const KVM_CAP_USER_MEMORY: u32 = 3;

/// Bytes before the CPUID entries in `struct kvm_tdx_capabilities`.
pub const CAPS_HEADER: usize = 2048;
/// Bytes before the CPUID entries in `struct kvm_tdx_init_vm`.
pub const INIT_VM_HEADER: usize = 256;
/// Size of the `struct kvm_cpuid2` header.
pub const CPUID2_HEADER: usize = 8;
/// Size of one `struct kvm_cpuid_entry2`.
pub const CPUID_ENTRY: usize = 40;

/// The TDX ioctls the backend issues. Each returns the errno on failure; the kernel's
/// write-backs (`hw_error`, the advanced `kvm_tdx_init_mem_region`, output payloads) are in
/// the arguments either way.
pub trait TdxIoctl {
    /// VM-scoped `KVM_MEMORY_ENCRYPT_OP`. With a `payload`, `cmd.data` points at it (the
    /// sub-command's struct, read and/or written by the kernel); without one, `cmd.data` is an
    /// immediate.
    fn vm_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32>;

    /// vCPU-scoped `KVM_MEMORY_ENCRYPT_OP` (e.g. `KVM_TDX_INIT_VCPU`, whose `data` is the
    /// initial RCX, an immediate).
    fn vcpu_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32>;

    /// `KVM_TDX_INIT_MEM_REGION` on the vCPU: `cmd.data` points at `region`, whose
    /// `source_addr` is the start of `source` (at least `nr_pages` pages long). The kernel
    /// advances `region` as it goes and writes it back, also on error.
    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32>;

    /// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` over `gpa..gpa+len`.
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32>;

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` on the VM fd, reserving `nr_ioapic_pins` I/O
    /// APIC pins for userspace. A TD's vCPUs need it (`arch/x86/kvm/vmx/tdx.c:
    /// tdx_vcpu_create`, Linux 6.18.2).
    ///
    /// The default answers `ENOTTY`, for layers that only stand in for populate.
    fn enable_split_irqchip(&mut self, nr_ioapic_pins: u64) -> Result<(), i32> {
        let _ = nr_ioapic_pins;
        Err(libc::ENOTTY)
    }

    /// `KVM_CREATE_VCPU(id)` on the VM fd; the layer keeps the vCPU and reaches it by `id`
    /// from then on ([`vcpu_op_on`](Self::vcpu_op_on), [`set_cpuid`](Self::set_cpuid)).
    ///
    /// The default answers `ENOTTY`, for layers that only stand in for populate.
    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        let _ = id;
        Err(libc::ENOTTY)
    }

    /// `KVM_SET_CPUID2` on vCPU `vcpu` with `entries`.
    ///
    /// The default answers `ENOTTY`, for layers that only stand in for populate.
    fn set_cpuid(&mut self, vcpu: u64, entries: &[kvm_cpuid_entry2]) -> Result<(), i32> {
        let _ = (vcpu, entries);
        Err(libc::ENOTTY)
    }

    /// vCPU-scoped `KVM_MEMORY_ENCRYPT_OP` on vCPU `vcpu` (e.g. `KVM_TDX_INIT_VCPU`).
    ///
    /// The default sends it on the layer's one vCPU ([`vcpu_op`](Self::vcpu_op)), for layers
    /// with a single vCPU.
    fn vcpu_op_on(
        &mut self,
        vcpu: u64,
        cmd: &mut kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        let _ = vcpu;
        self.vcpu_op(cmd, payload)
    }

    /// Whether the layer has a vCPU fd to send a vCPU command on: vCPU `id`, or (`None`) the
    /// one the commands that name no vCPU go to. The backend asks before every vCPU command,
    /// so a missing fd is [`Error::NoVcpu`](crate::Error::NoVcpu), never an `EBADF` passed off
    /// as the kernel's answer.
    ///
    /// The default says yes, for layers that stand in for a TD with its vCPUs.
    fn has_vcpu(&self, vcpu: Option<u64>) -> bool {
        let _ = vcpu;
        true
    }

    /// Whether the VM is dead (`kvm->vm_dead`: a `KVM_BUG_ON`/`TDX_BUG_ON` fired, after which
    /// `virt/kvm/kvm_main.c: kvm_vm_ioctl` answers every ioctl with `EIO`). The backend asks
    /// after an `EIO` from `KVM_TDX_INIT_MEM_REGION`, to tell a dead VM from a page left in a
    /// known state.
    ///
    /// The default says no, for layers that stand in for a live TD.
    fn vm_dead(&mut self) -> bool {
        false
    }

    /// The in-place conversion series the kernel carries, if any, with its module parameter
    /// ([`SeriesKernel`]). The default is `None`: no released kernel carries the series.
    fn series(&self) -> Option<SeriesKernel> {
        None
    }

    /// Whether `KVM_TDX_INIT_MEM_REGION` with `source_addr` 0 adds each page from its own
    /// contents (what was written through the guest_memfd's shared mapping before conversion):
    /// only a kernel with the series and `kvm.gmem_in_place_conversion` on (v8 patch 23/46,
    /// `arch/x86/kvm/vmx/tdx.c: tdx_gmem_post_populate`), which the default answers from
    /// [`series`](Self::series). Elsewhere `source_addr` 0 is `EINVAL` at the ioctl (7.3.4
    /// `tdx_vcpu_init_mem_region`), `EFAULT` from the pin (6.18.2), or `EOPNOTSUPP` (series v8
    /// with the module parameter off: `tdx_gmem_post_populate`).
    fn in_place_populate(&self) -> bool {
        self.series().is_some_and(SeriesKernel::populates_in_place)
    }

    /// `KVM_CHECK_EXTENSION(cap)` on the VM fd. [`check_td`] asks `KVM_CAP_VM_TYPES` and
    /// `KVM_CAP_SYNC_REGS` before the backend sends its first TDX command.
    ///
    /// The default answers as the VM fd of a TD on a TDX host does in Linux 6.18
    /// (`arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension`: the VM types
    /// `KVM_X86_DEFAULT_VM | KVM_X86_TDX_VM`, no sync regs, 0 for anything else), for layers
    /// that stand in for a TD; [`KvmTdx`] asks the kernel.
    fn vm_check_extension(&mut self, cap: u32) -> i32 {
        match cap {
            KVM_CAP_VM_TYPES => (1 << KVM_X86_DEFAULT_VM) | (1 << KVM_X86_TDX_VM),
            _ => 0,
        }
    }
}

/// Checks, before any TDX command, that the VM behind `io` is a TD.
///
/// `KVM_MEMORY_ENCRYPT_OP` means what the host's vendor module makes of it: on an AMD host
/// with SEV, command 0 (`KVM_TDX_CAPABILITIES`) is `KVM_SEV_INIT`
/// (`arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl`), which would turn an ordinary VM into an
/// SEV VM and "succeed". So (Linux 6.18, `arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension`):
///
/// - `KVM_CAP_VM_TYPES` must include `KVM_X86_TDX_VM` (only an Intel host with TDX enabled
///   says so; there `vt_mem_enc_ioctl` refuses non-TDs with `ENOTTY`), else
///   [`Error::NotSupported`];
/// - `KVM_CAP_SYNC_REGS` on the VM fd must be 0: `kvm_sync_valid_fields` answers 0 only for a
///   VM with protected state, which on such a host only a TD has (`tdx_vm_init`), else
///   [`Error::NotATd`].
///
/// ```
/// use tdx_backend::testing::{Host, TdxModel};
/// assert!(tdx_backend::check_td(&mut TdxModel::new()).is_ok());
/// let mut ordinary = TdxModel::ordinary_vm(Host::AmdSev);
/// let e = tdx_backend::check_td(&mut ordinary).unwrap_err();
/// assert!(e.to_string().contains("KVM_SEV_INIT"), "{e}");
/// assert!(ordinary.calls.is_empty(), "no TDX command was sent");
/// ```
pub fn check_td<I: TdxIoctl + ?Sized>(io: &mut I) -> Result<(), Error> {
    let types = io.vm_check_extension(KVM_CAP_VM_TYPES);
    if types <= 0 || types & (1 << KVM_X86_TDX_VM) == 0 {
        return Err(Error::NotSupported {
            reason: format!(
                "KVM_CAP_VM_TYPES on the VM fd is {types:#x}, without bit {KVM_X86_TDX_VM} (KVM_X86_TDX_VM): no TD can exist here, and KVM_MEMORY_ENCRYPT_OP may mean something else (command 0 is KVM_SEV_INIT on an AMD host with SEV); no TDX command was sent"
            ),
        });
    }
    let sync = io.vm_check_extension(KVM_CAP_SYNC_REGS);
    if sync != 0 {
        return Err(Error::NotATd {
            reason: format!(
                "KVM_CAP_SYNC_REGS on the VM fd is {sync:#x}: the VM has no protected state, so it was not created as KVM_X86_TDX_VM; no TDX command was sent"
            ),
        });
    }
    Ok(())
}

impl<T: TdxIoctl + ?Sized> TdxIoctl for &mut T {
    fn vm_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        (**self).vm_op(cmd, payload)
    }
    fn vcpu_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        (**self).vcpu_op(cmd, payload)
    }
    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        (**self).init_mem_region(cmd, region, source)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        (**self).set_private(gpa, len)
    }
    fn enable_split_irqchip(&mut self, nr_ioapic_pins: u64) -> Result<(), i32> {
        (**self).enable_split_irqchip(nr_ioapic_pins)
    }
    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        (**self).create_vcpu(id)
    }
    fn set_cpuid(&mut self, vcpu: u64, entries: &[kvm_cpuid_entry2]) -> Result<(), i32> {
        (**self).set_cpuid(vcpu, entries)
    }
    fn vcpu_op_on(
        &mut self,
        vcpu: u64,
        cmd: &mut kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        (**self).vcpu_op_on(vcpu, cmd, payload)
    }
    fn has_vcpu(&self, vcpu: Option<u64>) -> bool {
        (**self).has_vcpu(vcpu)
    }
    fn vm_dead(&mut self) -> bool {
        (**self).vm_dead()
    }
    fn vm_check_extension(&mut self, cap: u32) -> i32 {
        (**self).vm_check_extension(cap)
    }
    fn series(&self) -> Option<SeriesKernel> {
        (**self).series()
    }
    fn in_place_populate(&self) -> bool {
        (**self).in_place_populate()
    }
}

/// A host kernel carrying Ackerley Tng's in-place conversion series ("guest_memfd: In-place
/// conversion support"), as the posted patches of one version define it, and whether its
/// module parameter `kvm.gmem_in_place_conversion` is on: what decides whether
/// `KVM_TDX_INIT_MEM_REGION` adds pages from their own contents.
///
/// No released kernel carries the series (Linux 7.3.4 has none of it); this follows the patch
/// text and has not run on a kernel or on TDX hardware. What v8 (posted 2026-06-18, base
/// kvm-x86/next `b7fbe9a1bf9e`) does, patch 23/46 ("KVM: TDX: Make source page optional for
/// KVM_TDX_INIT_MEM_REGION", `arch/x86/kvm/vmx/tdx.c`):
/// - `tdx_vcpu_init_mem_region` of v8's base checks only that `source_addr` is page-aligned,
///   so 0 reaches `kvm_gmem_populate`, which pins no source (7.3.4's `!region.source_addr`
///   refusal came after v8; the review that proposed it, 2026-06-23, quotes the same base blob
///   `ffe9d0db58c5` patch 23/46 applies to);
/// - `tdx_gmem_post_populate`: no source page is `-EOPNOTSUPP` when the module parameter is
///   off; with it on, the page itself is the source of `TDH.MEM.PAGE.ADD` (and of
///   `TDH.MR.EXTEND` when measured);
/// - the region is written back as before, `source_addr` advanced only when not 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKernel {
    /// The posted version whose patches the kernel carries.
    pub series: GmemSeries,
    /// `kvm.gmem_in_place_conversion` (v8 patch 24/46). gmem's per-guest_memfd conversion
    /// path is chosen only where it is on.
    pub in_place_conversion: bool,
}

impl SeriesKernel {
    /// A kernel with series v8 and the module parameter as given.
    pub fn v8(in_place_conversion: bool) -> SeriesKernel {
        SeriesKernel {
            series: GmemSeries::V8,
            in_place_conversion,
        }
    }

    /// The series kernel whose per-guest_memfd conversion path gmem chose (that path exists
    /// only with the module parameter on); `None` for another path or none.
    pub fn from_conversion_path(path: Option<ConversionPath>) -> Option<SeriesKernel> {
        match path {
            Some(ConversionPath::GuestMemfdAttributes(series)) => Some(SeriesKernel {
                series,
                in_place_conversion: true,
            }),
            _ => None,
        }
    }

    /// Whether `source_addr` 0 adds pages from their own contents (v8 patch 23/46): only with
    /// the module parameter on.
    ///
    /// ```
    /// use tdx_backend::SeriesKernel;
    /// assert!(SeriesKernel::v8(true).populates_in_place());
    /// // Module parameter off: tdx_gmem_post_populate answers -EOPNOTSUPP.
    /// assert!(!SeriesKernel::v8(false).populates_in_place());
    /// ```
    pub fn populates_in_place(self) -> bool {
        match self.series {
            GmemSeries::V8 => self.in_place_conversion,
            // A version this crate has not read.
            _ => false,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The payload length a sub-command needs for the kernel to stay inside it, or `None` when the
/// sub-command is unknown here or takes an immediate.
fn needed_payload(id: u32, payload: &[u8]) -> Option<usize> {
    let with_entries = |header: usize| -> Option<usize> {
        let nent = u32_at(payload, header)? as usize;
        header
            .checked_add(CPUID2_HEADER)?
            .checked_add(nent.checked_mul(CPUID_ENTRY)?)
    };
    match id {
        KVM_TDX_CAPABILITIES => with_entries(CAPS_HEADER),
        KVM_TDX_INIT_VM => with_entries(INIT_VM_HEADER),
        KVM_TDX_GET_CPUID => with_entries(0),
        _ => None,
    }
}

/// The real ioctls, on a TD's VM fd, its vCPU fds, and the TD's guest_memfds.
///
/// vCPUs created through [`TdxIoctl::create_vcpu`] (what
/// [`TdxBackend::create_vcpu`](crate::TdxBackend::create_vcpu) calls) are owned here and
/// reached by id; a VMM takes them back to run them with [`vcpu`](Self::vcpu) or
/// [`into_vcpus`](Self::into_vcpus). A vCPU the VMM created itself can be lent with
/// [`with_vcpu`](Self::with_vcpu). Commands that name no vCPU (`KVM_TDX_INIT_MEM_REGION`,
/// [`TdxIoctl::vcpu_op`]) go to the lent vCPU, else to the first one created.
/// [`set_private`](TdxIoctl::set_private) converts through the guest_memfd a range is bound to
/// ([`gmem::convert_gpa_range`]), never around it, so each handle's record of its private
/// ranges stays true.
#[derive(Debug)]
pub struct KvmTdx<'a> {
    vm: &'a VmFd,
    lent: Option<&'a VcpuFd>,
    created: Vec<(u64, VcpuFd)>,
    gmems: Vec<&'a mut GuestMemfd>,
}

impl<'a> KvmTdx<'a> {
    /// Ioctls on `vm`, borrowed: the VMM keeps its `VmFd` and uses it again once this layer
    /// is dropped. vCPU sub-commands are refused until a vCPU is created or lent (the backend
    /// asks [`TdxIoctl::has_vcpu`] first and says [`Error::NoVcpu`]; called directly, this
    /// layer answers `EBADF` without an ioctl), conversions with `EINVAL` until
    /// [`with_guest_memfd`](Self::with_guest_memfd).
    pub fn new(vm: &'a VmFd) -> Self {
        KvmTdx {
            vm,
            lent: None,
            created: Vec::new(),
            gmems: Vec::new(),
        }
    }

    /// Converts the ranges bound to `gmem`'s memslots through it (a range bound to none of the
    /// added guest_memfds is refused with `EINVAL`). The handle stays borrowed while this layer
    /// lives: no shared view of it can be written meanwhile.
    pub fn with_guest_memfd(mut self, gmem: &'a mut GuestMemfd) -> Self {
        self.gmems.push(gmem);
        self
    }

    /// Uses `vcpu`, created by the caller, for the vCPU-scoped sub-commands that name no vCPU.
    pub fn with_vcpu(mut self, vcpu: &'a VcpuFd) -> Self {
        self.lent = Some(vcpu);
        self
    }

    /// The vCPU created with `id` through this layer.
    pub fn vcpu(&self, id: u64) -> Option<&VcpuFd> {
        self.created.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// Gives back the vCPUs created through this layer, with their ids, in creation order
    /// (e.g. after `KVM_TDX_FINALIZE_VM`, to run them).
    pub fn into_vcpus(self) -> Vec<(u64, VcpuFd)> {
        self.created
    }

    fn default_vcpu(&self) -> Result<&VcpuFd, i32> {
        self.lent
            .or_else(|| self.created.first().map(|(_, v)| v))
            .ok_or(libc::EBADF)
    }

    fn op(fd: RawFd, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        match payload {
            Some(p) => {
                // The kernel reads and writes through `data` up to a size it derives from the
                // sub-command and the payload's own `nent`: refuse payloads shorter than that.
                match needed_payload(cmd.id, p) {
                    Some(n) if n <= p.len() => {}
                    _ => return Err(libc::EINVAL),
                }
                cmd.data = p.as_mut_ptr() as u64;
            }
            None => {
                if matches!(
                    cmd.id,
                    KVM_TDX_CAPABILITIES | KVM_TDX_INIT_VM | KVM_TDX_GET_CPUID
                ) || cmd.id == KVM_TDX_INIT_MEM_REGION
                {
                    // These dereference `data`: never pass an immediate as a pointer.
                    return Err(libc::EINVAL);
                }
            }
        }
        encrypt_op(fd, cmd)
    }
}

fn encrypt_op<T>(fd: RawFd, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `fd` is a KVM VM or vCPU fd borrowed for this call; `arg` is a live, exclusively
    // borrowed `kvm_tdx_cmd` the kernel reads and writes (24 bytes). Any memory `data` points
    // at was checked by the caller to be at least as large as the sub-command makes the kernel
    // access, and stays borrowed for the duration of the call.
    let ret = unsafe { libc::ioctl(fd, KVM_MEMORY_ENCRYPT_OP as _, arg as *mut T) };
    if ret < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

impl TdxIoctl for KvmTdx<'_> {
    fn vm_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        Self::op(self.vm.as_raw_fd(), cmd, payload)
    }

    fn vcpu_op(&mut self, cmd: &mut kvm_tdx_cmd, payload: Option<&mut [u8]>) -> Result<(), i32> {
        let vcpu = self.default_vcpu()?;
        Self::op(vcpu.as_raw_fd(), cmd, payload)
    }

    fn vcpu_op_on(
        &mut self,
        vcpu: u64,
        cmd: &mut kvm_tdx_cmd,
        payload: Option<&mut [u8]>,
    ) -> Result<(), i32> {
        let fd = self.vcpu(vcpu).ok_or(libc::EBADF)?.as_raw_fd();
        Self::op(fd, cmd, payload)
    }

    fn enable_split_irqchip(&mut self, nr_ioapic_pins: u64) -> Result<(), i32> {
        let mut cap = kvm_bindings::kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            ..Default::default()
        };
        cap.args[0] = nr_ioapic_pins;
        self.vm.enable_cap(&cap).map_err(|e| e.errno())
    }

    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        let vcpu = self.vm.create_vcpu(id).map_err(|e| e.errno())?;
        self.created.push((id, vcpu));
        Ok(())
    }

    fn set_cpuid(&mut self, vcpu: u64, entries: &[kvm_cpuid_entry2]) -> Result<(), i32> {
        let fd = self.vcpu(vcpu).ok_or(libc::EBADF)?;
        let entries: Vec<kvm_bindings::kvm_cpuid_entry2> =
            entries.iter().map(|e| (*e).into()).collect();
        // More entries than a FAM struct holds: KVM_SET_CPUID2 would say E2BIG for more
        // than KVM_MAX_CPUID_ENTRIES anyway (kvm_vcpu_ioctl_set_cpuid2).
        let cpuid = kvm_bindings::CpuId::from_entries(&entries).map_err(|_| libc::E2BIG)?;
        fd.set_cpuid2(&cpuid).map_err(|e| e.errno())
    }

    fn init_mem_region(
        &mut self,
        cmd: &mut kvm_tdx_cmd,
        region: &mut kvm_tdx_init_mem_region,
        source: &[u8],
    ) -> Result<(), i32> {
        let vcpu = self.default_vcpu()?;
        let fits = region
            .nr_pages
            .checked_mul(crate::PAGE_SIZE)
            .is_some_and(|n| n <= source.len() as u64);
        // In place (series v8 patch 23/46): source_addr 0 and no source lent.
        let in_place = region.source_addr == 0 && source.is_empty();
        if cmd.id != KVM_TDX_INIT_MEM_REGION
            || !(in_place || (region.source_addr == source.as_ptr() as u64 && fits))
        {
            return Err(libc::EINVAL);
        }
        cmd.data = region as *mut kvm_tdx_init_mem_region as u64;
        encrypt_op(vcpu.as_raw_fd(), cmd)
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        gmem::convert_gpa_range(&mut self.gmems, gpa, len, MemoryState::Private)
            .map_err(|e| e.errno())
    }

    /// The series kernel gmem found: the conversion path of the first guest_memfd given
    /// ([`SeriesKernel::from_conversion_path`]).
    fn series(&self) -> Option<SeriesKernel> {
        let g = self.gmems.first()?;
        SeriesKernel::from_conversion_path(g.conversion_path())
    }

    fn has_vcpu(&self, vcpu: Option<u64>) -> bool {
        match vcpu {
            Some(id) => self.vcpu(id).is_some(),
            None => self.default_vcpu().is_ok(),
        }
    }

    fn vm_check_extension(&mut self, cap: u32) -> i32 {
        self.vm.check_extension_raw(libc::c_ulong::from(cap))
    }

    /// `KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY)` on the VM fd: `EIO` only from a dead VM.
    fn vm_dead(&mut self) -> bool {
        // SAFETY: `self.vm` is a live VM fd borrowed for the call; KVM_CHECK_EXTENSION takes
        // its argument by value (a capability number) and touches no memory of ours.
        let r = unsafe {
            libc::ioctl(
                self.vm.as_raw_fd(),
                crate::uapi::KVM_CHECK_EXTENSION as _,
                libc::c_ulong::from(KVM_CAP_USER_MEMORY),
            )
        };
        r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EIO)
    }
}

/// Checks that this KVM can create TDs: `KVM_CAP_VM_TYPES` must include `KVM_X86_TDX_VM`.
///
/// ```no_run
/// let kvm = kvm_ioctls::Kvm::new()?;
/// match tdx_backend::probe(&kvm) {
///     Ok(()) => println!("TDX available"),
///     Err(e) => println!("{e}"), // "TDX not supported by this KVM: ..."
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn probe(kvm: &Kvm) -> Result<(), Error> {
    let types = kvm.check_extension_raw(u64::from(KVM_CAP_VM_TYPES) as _);
    if types <= 0 {
        return Err(Error::NotSupported {
            reason: format!(
                "KVM_CAP_VM_TYPES ({KVM_CAP_VM_TYPES}) is {types}: no VM types beyond the default"
            ),
        });
    }
    if types & (1 << KVM_X86_TDX_VM) == 0 {
        return Err(Error::NotSupported {
            reason: format!(
                "KVM_CAP_VM_TYPES is {types:#x}, without bit {KVM_X86_TDX_VM} (KVM_X86_TDX_VM)"
            ),
        });
    }
    Ok(())
}

/// Creates a TD's VM fd (`KVM_CREATE_VM` with `KVM_X86_TDX_VM`) after [`probe`]; a refusal by
/// `KVM_CREATE_VM` itself is also reported as [`Error::NotSupported`].
pub fn create_td_vm(kvm: &Kvm) -> Result<VmFd, Error> {
    probe(kvm)?;
    kvm.create_vm_with_type(u64::from(KVM_X86_TDX_VM))
        .map_err(|e| Error::NotSupported {
            reason: format!("KVM_CREATE_VM(KVM_X86_TDX_VM) failed: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::{KVM_TDX_FINALIZE_VM, KVM_TDX_INIT_VCPU};

    #[test]
    fn the_series_kernel_follows_gmems_conversion_path() {
        let on = SeriesKernel::from_conversion_path(Some(ConversionPath::GuestMemfdAttributes(
            GmemSeries::V8,
        )));
        assert_eq!(on, Some(SeriesKernel::v8(true)));
        assert!(on.is_some_and(SeriesKernel::populates_in_place));
        assert_eq!(
            SeriesKernel::from_conversion_path(Some(ConversionPath::VmAttributes)),
            None
        );
        assert_eq!(SeriesKernel::from_conversion_path(None), None);
        assert!(!SeriesKernel::v8(false).populates_in_place());
    }

    #[test]
    fn payload_sizes_follow_nent() {
        let mut caps = vec![0u8; CAPS_HEADER + CPUID2_HEADER];
        assert_eq!(needed_payload(KVM_TDX_CAPABILITIES, &caps), Some(2056));
        caps[CAPS_HEADER..CAPS_HEADER + 4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            needed_payload(KVM_TDX_CAPABILITIES, &caps),
            Some(2056 + 120)
        );
        assert_eq!(needed_payload(KVM_TDX_INIT_VM, &[0u8; 264]), Some(264));
        assert_eq!(needed_payload(KVM_TDX_INIT_VM, &[0u8; 10]), None);
        assert_eq!(needed_payload(KVM_TDX_FINALIZE_VM, &[]), None);
        assert_eq!(needed_payload(KVM_TDX_INIT_VCPU, &[]), None);
    }
}
