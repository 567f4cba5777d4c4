//! The ioctl layer: typed `KVM_MEMORY_ENCRYPT_OP` commands behind a small trait, so that tests
//! can capture the exact bytes sent and drive the backend through a model of the kernel.

use std::borrow::Borrow;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use gmem::{GuestMemfd, MemoryState};
use kvm_ioctls::{VcpuFd, VmFd};

use crate::kernel::{KernelChoice, KernelVersion, SeriesKernel};

use crate::uapi::{
    kvm_sev_cmd, kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start,
    kvm_sev_snp_launch_update, KVM_SEV_INIT2, KVM_SEV_SNP_LAUNCH_FINISH, KVM_SEV_SNP_LAUNCH_START,
    KVM_SEV_SNP_LAUNCH_UPDATE, KVM_SEV_SNP_PAGE_TYPE_CPUID,
};

/// The source buffer a `KVM_SEV_SNP_LAUNCH_UPDATE` points its `uaddr` into (the kernel reads
/// it, and writes a corrected CPUID table back into it). The real ioctl uses only `uaddr`; the
/// slice is there so that a model of the kernel can follow `uaddr` without raw pointers.
#[derive(Debug)]
pub enum UpdateSource<'a> {
    /// A caller's buffer the kernel only reads.
    Shared(&'a [u8]),
    /// A bounce buffer the backend owns, which the kernel may write (the CPUID page).
    Bounce(&'a mut [u8]),
}

impl UpdateSource<'_> {
    /// The buffer.
    pub fn bytes(&self) -> &[u8] {
        match self {
            UpdateSource::Shared(b) => b,
            UpdateSource::Bounce(b) => b,
        }
    }
}

/// One `KVM_MEMORY_ENCRYPT_OP` command with its parameters.
#[derive(Debug)]
pub enum SevCmd<'a> {
    /// `KVM_SEV_INIT2`.
    Init2(&'a mut kvm_sev_init),
    /// `KVM_SEV_SNP_LAUNCH_START`.
    LaunchStart(&'a mut kvm_sev_snp_launch_start),
    /// `KVM_SEV_SNP_LAUNCH_UPDATE`; the kernel advances `gfn_start`, `uaddr` and `len` on
    /// partial progress.
    LaunchUpdate {
        /// The parameters.
        params: &'a mut kvm_sev_snp_launch_update,
        /// The buffer `params.uaddr` points into (`None` for `ZERO` pages and in-place content).
        source: Option<UpdateSource<'a>>,
    },
    /// `KVM_SEV_SNP_LAUNCH_FINISH`.
    LaunchFinish(&'a mut kvm_sev_snp_launch_finish),
}

/// The parameter structs of [`SevCmd`]: `repr(C)` bindgen structs of integer fields only,
/// every padding byte an explicit field (`uapi`'s tests pin each size to the sum of its
/// fields), so none has a byte that is not initialised.
///
/// # Safety
/// Only for types of that kind: [`pod_bytes`] reads every byte of a value.
unsafe trait NoPadding: Copy {}
// SAFETY: integer fields only, its padding explicit `padN` fields; size and offsets pinned in
// `uapi` tests.
unsafe impl NoPadding for kvm_sev_init {}
// SAFETY: as above.
unsafe impl NoPadding for kvm_sev_snp_launch_start {}
// SAFETY: as above.
unsafe impl NoPadding for kvm_sev_snp_launch_update {}
// SAFETY: as above.
unsafe impl NoPadding for kvm_sev_snp_launch_finish {}

/// A parameter struct's bytes.
fn pod_bytes<T: NoPadding>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is valid for reads of `size_of::<T>()` bytes, and `T: NoPadding` says every
    // one of them is initialised (a type with padding cannot implement it), so viewing them as
    // `u8` is sound. The slice does not outlive `v`.
    let s = unsafe {
        std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    s.to_vec()
}

impl SevCmd<'_> {
    /// The command id (`enum sev_cmd_id`).
    pub fn id(&self) -> u32 {
        match self {
            SevCmd::Init2(_) => KVM_SEV_INIT2,
            SevCmd::LaunchStart(_) => KVM_SEV_SNP_LAUNCH_START,
            SevCmd::LaunchUpdate { .. } => KVM_SEV_SNP_LAUNCH_UPDATE,
            SevCmd::LaunchFinish(_) => KVM_SEV_SNP_LAUNCH_FINISH,
        }
    }

    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            SevCmd::Init2(_) => "KVM_SEV_INIT2",
            SevCmd::LaunchStart(_) => "KVM_SEV_SNP_LAUNCH_START",
            SevCmd::LaunchUpdate { .. } => "KVM_SEV_SNP_LAUNCH_UPDATE",
            SevCmd::LaunchFinish(_) => "KVM_SEV_SNP_LAUNCH_FINISH",
        }
    }

    /// The parameter struct's bytes, exactly as the kernel reads them.
    pub fn params_bytes(&self) -> Vec<u8> {
        match self {
            SevCmd::Init2(p) => pod_bytes(&**p),
            SevCmd::LaunchStart(p) => pod_bytes(&**p),
            SevCmd::LaunchUpdate { params, .. } => pod_bytes(&**params),
            SevCmd::LaunchFinish(p) => pod_bytes(&**p),
        }
    }

    /// The address of the parameter struct (`kvm_sev_cmd.data`).
    pub fn data_addr(&mut self) -> u64 {
        match self {
            SevCmd::Init2(p) => std::ptr::from_mut(*p) as u64,
            SevCmd::LaunchStart(p) => std::ptr::from_mut(*p) as u64,
            SevCmd::LaunchUpdate { params, .. } => std::ptr::from_mut(*params) as u64,
            SevCmd::LaunchFinish(p) => std::ptr::from_mut(*p) as u64,
        }
    }
}

/// Builds the `struct kvm_sev_cmd` for `cmd` on the SEV device `sev_fd`.
pub fn sev_cmd(cmd: &mut SevCmd<'_>, sev_fd: u32) -> kvm_sev_cmd {
    kvm_sev_cmd {
        id: cmd.id(),
        pad0: 0,
        data: cmd.data_addr(),
        error: 0,
        sev_fd,
    }
}

/// How a command failed: the ioctl's errno and the firmware status the kernel left in
/// `kvm_sev_cmd.error` (0 when the firmware was not reached, or not told).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevIoctlError {
    /// The errno.
    pub errno: i32,
    /// The firmware status code.
    pub fw_error: u32,
}

/// The ioctls an SNP launch issues.
pub trait SevIoctl {
    /// Issues `KVM_MEMORY_ENCRYPT_OP` with `cmd`. The kernel may update the parameters (it does
    /// for `LaunchUpdate` on progress).
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError>;

    /// Makes `gpa..gpa+len` private (`KVM_SET_MEMORY_ATTRIBUTES` with
    /// `KVM_MEMORY_ATTRIBUTE_PRIVATE`). Returns the errno on failure. [`KvmSevIoctl`] converts
    /// through the guest_memfd the range is bound to, so that handle records it.
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32>;

    /// The in-place conversion series the kernel carries, if any, with its module parameter
    /// ([`SeriesKernel`]). The default is `None`: no released kernel carries the series.
    fn series(&self) -> Option<SeriesKernel> {
        None
    }

    /// Whether the kernel populates in place: `KVM_SEV_SNP_LAUNCH_UPDATE` with `uaddr = 0` for
    /// content pages encrypts and measures the bytes already in the (private) page. Only a
    /// kernel with the in-place conversion series and `kvm.gmem_in_place_conversion` on does
    /// (v8 patch 22/46, `arch/x86/kvm/svm/sev.c: sev_gmem_post_populate`;
    /// [`SeriesKernel::populates_in_place`]), which the default answers from
    /// [`series`](Self::series). Without it: Linux 6.18.2's `sev_gmem_post_populate` warns
    /// (`WARN_ON_ONCE`) and fails the page with `-EINVAL`, which `snp_launch_update` reports as
    /// `EIO` with firmware status 0; 7.3.4's `snp_launch_update` refuses `uaddr` 0 with `EINVAL`
    /// before any page; series v8 with the module parameter off fails the page with `-EINVAL`
    /// (no warning), reported as `EIO` with status 0.
    fn in_place_populate(&self) -> bool {
        self.series().is_some_and(SeriesKernel::populates_in_place)
    }

    /// The kernel whose rules this layer follows (the backend checks parameters before the
    /// ioctl by them). The default is the newest known.
    fn kernel(&self) -> KernelVersion {
        KernelVersion::default()
    }

    /// `KVM_CREATE_VCPU(id)` on the VM fd. The layer keeps the vCPU; nothing in the SNP launch
    /// names a vCPU fd (`LAUNCH_FINISH` measures every vCPU the VM has: `arch/x86/kvm/svm/sev.c:
    /// snp_launch_update_vmsa`). The default answers `ENOTTY`, for layers that only stand in for
    /// populate.
    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        let _ = id;
        Err(libc::ENOTTY)
    }

    /// Whether the VM is alive, asked after an `EIO` with firmware status 0: a VM killed by
    /// `KVM_BUG` answers `EIO` to every ioctl (`virt/kvm/kvm_main.c: kvm_vm_ioctl`), which a
    /// retry cannot mend. `None`: cannot tell (the default).
    fn vm_alive(&mut self) -> Option<bool> {
        None
    }
}

impl<T: SevIoctl + ?Sized> SevIoctl for &mut T {
    fn encrypt_op(&mut self, cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        (**self).encrypt_op(cmd)
    }
    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        (**self).set_private(gpa, len)
    }
    fn series(&self) -> Option<SeriesKernel> {
        (**self).series()
    }
    fn in_place_populate(&self) -> bool {
        (**self).in_place_populate()
    }
    fn kernel(&self) -> KernelVersion {
        (**self).kernel()
    }
    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        (**self).create_vcpu(id)
    }
    fn vm_alive(&mut self) -> Option<bool> {
        (**self).vm_alive()
    }
}

/// Checks that the kernel stays inside what `cmd` lends before a `KVM_SEV_SNP_LAUNCH_UPDATE`
/// reaches it: with a `uaddr` (not 0, in-place), `uaddr..uaddr+len` must lie inside the
/// command's source, and for a CPUID page that source must be writable
/// ([`UpdateSource::Bounce`]): when the firmware rejects a CPUID page, Linux 6.18.2 copies its
/// own table back over the source page (`arch/x86/kvm/svm/sev.c: sev_gmem_post_populate`,
/// `copy_to_user(src + i * PAGE_SIZE, ...)`). Anything else is `EINVAL` with no ioctl.
///
/// ```
/// use sev_backend::uapi::{kvm_sev_snp_launch_update, KVM_SEV_SNP_PAGE_TYPE_CPUID};
/// use sev_backend::{check_lent, SevCmd, UpdateSource};
///
/// let page = [0u8; 4096];
/// let mut p = kvm_sev_snp_launch_update {
///     uaddr: page.as_ptr() as u64,
///     len: 4096,
///     type_: KVM_SEV_SNP_PAGE_TYPE_CPUID as u8,
///     ..Default::default()
/// };
/// // A CPUID page the kernel could write into, lent read-only: refused.
/// let cmd = SevCmd::LaunchUpdate { params: &mut p, source: Some(UpdateSource::Shared(&page)) };
/// assert_eq!(check_lent(&cmd).unwrap_err().errno, libc::EINVAL);
/// ```
pub fn check_lent(cmd: &SevCmd<'_>) -> Result<(), SevIoctlError> {
    let refuse = Err(SevIoctlError {
        errno: libc::EINVAL,
        fw_error: 0,
    });
    let SevCmd::LaunchUpdate { params, source } = cmd else {
        return Ok(());
    };
    if params.uaddr == 0 {
        // In place: the kernel follows no user address.
        return Ok(());
    }
    let Some(source) = source else {
        return refuse;
    };
    if u32::from(params.type_) == KVM_SEV_SNP_PAGE_TYPE_CPUID
        && !matches!(source, UpdateSource::Bounce(_))
    {
        return refuse;
    }
    let b = source.bytes();
    let start = b.as_ptr() as u64;
    let inside = params.uaddr.checked_sub(start).is_some_and(|off| {
        off.checked_add(params.len)
            .is_some_and(|end| end <= b.len() as u64)
    });
    if inside {
        Ok(())
    } else {
        refuse
    }
}

/// The real ioctls, on an SNP VM fd and the SEV firmware device (`/dev/sev`), and the VM's
/// guest_memfds: [`set_private`](SevIoctl::set_private) converts through the one a range is
/// bound to ([`gmem::convert_gpa_range`]), never around it, so each handle's record of its
/// private ranges stays true.
///
/// **Owned or borrowed**, the caller's choice: `V` is the VM fd (`VmFd`, or `&VmFd` when the
/// VMM owns it, as `tdx-backend`'s `KvmTdx<'a>` and `cca-backend`'s `KvmCcaIoctl<'v>` take
/// it) and `S` the `/dev/sev` fd (`File`, or a [`BorrowedFd`] of the VMM's). [`KvmSevIoctl::new`]
/// takes either; [`KvmSevRef`] names the all-borrowed form.
///
/// **Lifetime rule**: Linux 6.12, 6.18 and 7.3 record the `/dev/sev` fd *number* at
/// `KVM_SEV_SNP_LAUNCH_START` (`arch/x86/kvm/svm/sev.c: snp_launch_start`, `sev->fd`) and issue
/// the guest's attestation requests through it for the VM's whole life (`snp_handle_guest_req`
/// -> `sev_issue_cmd`). Keep that fd open, and the number not reused, for as long as the VM
/// (its fd or any vCPU fd) lives. Owned, the layer hands the device back only together with
/// the VM fd ([`into_parts`](Self::into_parts), e.g. through
/// [`SnpBackend::into_ioctl`](crate::SnpBackend::into_ioctl) after `finish`), so a VMM that
/// keeps the VM keeps the device with it; dropping the layer closes both. Borrowed, the borrow
/// ends with the layer and the rule is the VMM's: keep the device open as long as the VM.
#[derive(Debug)]
pub struct KvmSevIoctl<'g, V = VmFd, S = File> {
    vm: V,
    sev: S,
    gmems: Vec<&'g mut GuestMemfd>,
    vcpus: Vec<VcpuFd>,
    kernel: KernelVersion,
}

/// The ioctl layer on a VM fd and a `/dev/sev` fd the VMM owns and lends.
pub type KvmSevRef<'a> = KvmSevIoctl<'a, &'a VmFd, BorrowedFd<'a>>;

impl<'g, V: Borrow<VmFd>, S: AsFd> KvmSevIoctl<'g, V, S> {
    /// Wraps a VM created with `KVM_X86_SNP_VM` and the opened SEV device, owned or borrowed
    /// (no guest_memfds yet: add each with [`add_guest_memfd`](Self::add_guest_memfd)). The
    /// kernel's rules followed are the running kernel's ([`KernelVersion::running`]; the newest
    /// known when the release is refused, which [`SnpBackend::create`](crate::SnpBackend::create)
    /// and [`SnpBackend::attach`](crate::SnpBackend::attach) report instead); change them with
    /// [`with_kernel`](Self::with_kernel).
    ///
    /// ```no_run
    /// use std::os::fd::AsFd;
    /// use sev_backend::{KvmSevIoctl, KvmSevRef};
    ///
    /// // A VMM that owns its VM fd and /dev/sev lends both.
    /// let kvm = kvm_ioctls::Kvm::new()?;
    /// let vm = kvm.create_vm_with_type(4)?; // KVM_X86_SNP_VM
    /// let sev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/sev")?;
    /// let io: KvmSevRef<'_> = KvmSevIoctl::new(&vm, sev.as_fd());
    /// # drop(io);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(vm: V, sev: S) -> Self {
        KvmSevIoctl {
            vm,
            sev,
            gmems: Vec::new(),
            vcpus: Vec::new(),
            kernel: KernelVersion::running()
                .map(|c| c.version)
                .unwrap_or_default(),
        }
    }

    /// As [`new`](Self::new), and refuses a running kernel this crate does not follow (older
    /// than 6.12: [`Error::UnsupportedKernel`](crate::Error::UnsupportedKernel)); the choice
    /// comes back with it, its [`KernelNote`](crate::KernelNote) for the caller to log once.
    pub fn for_running_kernel(vm: V, sev: S) -> Result<(Self, KernelChoice), crate::Error> {
        let choice = KernelVersion::running()?;
        Ok((Self::new(vm, sev).with_kernel(choice.version), choice))
    }

    /// Follows `kernel`'s rules instead of the running kernel's.
    pub fn with_kernel(mut self, kernel: KernelVersion) -> Self {
        self.kernel = kernel;
        self
    }

    /// Converts the ranges bound to `gmem`'s memslots through it from now on (a range bound to
    /// none of the added guest_memfds is refused with `EINVAL`). The handle stays borrowed
    /// while this layer lives: no shared view of it can be written meanwhile.
    pub fn add_guest_memfd(&mut self, gmem: &'g mut GuestMemfd) {
        self.gmems.push(gmem);
    }

    /// The VM fd (for memslots and vCPUs).
    pub fn vm(&self) -> &VmFd {
        self.vm.borrow()
    }

    /// The SEV device the kernel issues this VM's firmware commands through (see the lifetime
    /// rule above).
    pub fn sev(&self) -> &S {
        &self.sev
    }

    /// The vCPUs this layer created ([`SevIoctl::create_vcpu`]), in creation order; take them
    /// with [`take_vcpus`](Self::take_vcpus) to run them.
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }

    /// Hands the created vCPUs over (to run them after `LAUNCH_FINISH`).
    pub fn take_vcpus(&mut self) -> Vec<VcpuFd> {
        std::mem::take(&mut self.vcpus)
    }

    /// Gives back the VM fd and the SEV device, together: keep the device open while the VM
    /// lives (see the lifetime rule above). Created vCPUs not taken are closed.
    pub fn into_parts(self) -> (V, S) {
        (self.vm, self.sev)
    }
}

impl<V: Borrow<VmFd>, S: AsFd> SevIoctl for KvmSevIoctl<'_, V, S> {
    fn encrypt_op(&mut self, mut cmd: SevCmd<'_>) -> Result<(), SevIoctlError> {
        check_lent(&cmd)?;
        let mut raw = sev_cmd(&mut cmd, self.sev.as_fd().as_raw_fd() as u32);
        // `raw.data` points into `cmd`'s parameter struct, which lives (mutably borrowed) until
        // the end of this function, and `uaddr` into the source it borrows (`check_lent`: the
        // whole range, writable where the kernel may write).
        self.vm
            .borrow()
            .encrypt_op_sev(&mut raw)
            .map_err(|e| SevIoctlError {
                errno: e.errno(),
                fw_error: raw.error,
            })
    }

    fn set_private(&mut self, gpa: u64, len: u64) -> Result<(), i32> {
        gmem::convert_gpa_range(&mut self.gmems, gpa, len, MemoryState::Private)
            .map_err(|e| e.errno())
    }

    fn kernel(&self) -> KernelVersion {
        self.kernel
    }

    /// The series kernel gmem found: the per-guest_memfd conversion path of the first added
    /// guest_memfd ([`SeriesKernel::from_conversion_path`]; that path is chosen only where
    /// `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` answers PRIVATE, the module parameter on).
    fn series(&self) -> Option<SeriesKernel> {
        let g = self.gmems.first()?;
        SeriesKernel::from_conversion_path(g.conversion_path())
    }

    fn create_vcpu(&mut self, id: u64) -> Result<(), i32> {
        let vcpu = self.vm.borrow().create_vcpu(id).map_err(|e| e.errno())?;
        self.vcpus.push(vcpu);
        Ok(())
    }

    fn vm_alive(&mut self) -> Option<bool> {
        // virt/kvm/kvm_main.c: kvm_vm_ioctl answers EIO to every ioctl of a dead VM before
        // looking at it; KVM_CHECK_EXTENSION on the VM fd answers a live one.
        let r = self
            .vm
            .borrow()
            .check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_USER_MEMORY));
        if r >= 0 {
            return Some(true);
        }
        let errno = std::io::Error::last_os_error().raw_os_error();
        (errno == Some(libc::EIO)).then_some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::KVM_SEV_SNP_PAGE_TYPE_NORMAL;

    fn update(uaddr: u64, len: u64, cpuid: bool) -> kvm_sev_snp_launch_update {
        kvm_sev_snp_launch_update {
            uaddr,
            len,
            type_: if cpuid {
                KVM_SEV_SNP_PAGE_TYPE_CPUID as u8
            } else {
                KVM_SEV_SNP_PAGE_TYPE_NORMAL as u8
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_kernel_only_gets_addresses_the_caller_lent() {
        let mut buf = vec![0u8; 2 * 4096];
        let at = buf.as_ptr() as u64;
        let check = |p: &mut kvm_sev_snp_launch_update, lent: Option<&[u8]>| {
            let source = lent.map(UpdateSource::Shared);
            check_lent(&SevCmd::LaunchUpdate { params: p, source }).map_err(|e| e.errno)
        };
        // In range, read-only, a normal page: fine; past the end, before the start, no source,
        // or a length that wraps: EINVAL.
        assert_eq!(check(&mut update(at, 8192, false), Some(&buf[..])), Ok(()));
        assert_eq!(
            check(&mut update(at + 4096, 8192, false), Some(&buf[..])),
            Err(libc::EINVAL)
        );
        assert_eq!(
            check(&mut update(at - 4096, 4096, false), Some(&buf[..])),
            Err(libc::EINVAL)
        );
        assert_eq!(check(&mut update(at, 4096, false), None), Err(libc::EINVAL));
        assert_eq!(
            check(&mut update(at, u64::MAX, false), Some(&buf[..])),
            Err(libc::EINVAL)
        );
        // A CPUID page lent read-only: the kernel may write into it, EINVAL.
        assert_eq!(
            check(&mut update(at, 4096, true), Some(&buf[..])),
            Err(libc::EINVAL)
        );
        // In place (uaddr 0): no address followed.
        assert_eq!(check(&mut update(0, 4096, true), None), Ok(()));
        // A CPUID page in a writable buffer: fine.
        let mut p = update(at, 4096, true);
        let cmd = SevCmd::LaunchUpdate {
            params: &mut p,
            source: Some(UpdateSource::Bounce(&mut buf[..4096])),
        };
        assert_eq!(check_lent(&cmd), Ok(()));
    }
}
