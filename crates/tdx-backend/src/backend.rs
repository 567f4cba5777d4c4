//! The TD launch sequence around populate, and the `cc-populate` [`Backend`] for TDX.

use std::borrow::Cow;

use cc_populate::{Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Populated, Role};

use crate::ioctl::{TdxIoctl, CAPS_HEADER, CPUID2_HEADER, CPUID_ENTRY, INIT_VM_HEADER};
use crate::measure::{page_op, TDX_CAPS};
use crate::uapi::{
    kvm_cpuid_entry2, kvm_tdx_cmd, kvm_tdx_init_mem_region, KVM_TDX_CAPABILITIES,
    KVM_TDX_FINALIZE_VM, KVM_TDX_INIT_MEM_REGION, KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM,
    KVM_TDX_MEASURE_MEMORY_REGION,
};
use crate::{status, Error, PAGE_SIZE};

/// Size of the page-aligned bounce buffer used for sources that are not page aligned (the
/// kernel requires `source_addr` to be), and of the zero source for zero content.
pub const BOUNCE_SIZE: usize = 2 << 20;

/// What `KVM_TDX_CAPABILITIES` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TdxCapabilities {
    /// TD attributes that may be set.
    pub supported_attrs: u64,
    /// XFAM bits that may be set.
    pub supported_xfam: u64,
    /// TDG.VP.VMCALL leaves handled in the kernel (R11 form).
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// TDG.VP.VMCALL leaves forwarded to userspace (R11 form).
    pub user_tdvmcallinfo_1_r11: u64,
    /// TDG.VP.VMCALL leaves handled in the kernel (R12 form).
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// TDG.VP.VMCALL leaves forwarded to userspace (R12 form).
    pub user_tdvmcallinfo_1_r12: u64,
    /// The configurable CPUID bits.
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

/// The parameters of `KVM_TDX_INIT_VM` (TD_PARAMS as KVM exposes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdParams {
    /// TD attributes (e.g. bit 28 `SEPT_VE_DISABLE`).
    pub attributes: u64,
    /// XFAM: the extended features the TD may use.
    pub xfam: u64,
    /// MRCONFIGID: 48 bytes of VMM-chosen configuration identity, reported in the TD quote.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// The CPUID configuration (the configurable bits from [`TdxCapabilities::cpuid`]).
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

impl Default for TdParams {
    fn default() -> Self {
        TdParams {
            attributes: 0,
            xfam: 0,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid: Vec::new(),
        }
    }
}

impl TdParams {
    /// The exact `struct kvm_tdx_init_vm` bytes (with its CPUID entries) the ioctl gets.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; INIT_VM_HEADER + CPUID2_HEADER + self.cpuid.len() * CPUID_ENTRY];
        b[0..8].copy_from_slice(&self.attributes.to_le_bytes());
        b[8..16].copy_from_slice(&self.xfam.to_le_bytes());
        b[16..64].copy_from_slice(&self.mrconfigid);
        b[64..112].copy_from_slice(&self.mrowner);
        b[112..160].copy_from_slice(&self.mrownerconfig);
        // 160..256 reserved, zero.
        b[256..260].copy_from_slice(&(self.cpuid.len() as u32).to_le_bytes());
        for (i, e) in self.cpuid.iter().enumerate() {
            put_entry(
                &mut b[INIT_VM_HEADER + CPUID2_HEADER + i * CPUID_ENTRY..],
                e,
            );
        }
        b
    }
}

fn put_entry(b: &mut [u8], e: &kvm_cpuid_entry2) {
    let words = [
        e.function,
        e.index,
        e.flags,
        e.eax,
        e.ebx,
        e.ecx,
        e.edx,
        e.padding[0],
        e.padding[1],
        e.padding[2],
    ];
    for (w, out) in words.iter().zip(b.chunks_exact_mut(4)) {
        out.copy_from_slice(&w.to_le_bytes());
    }
}

fn get_entry(b: &[u8]) -> Option<kvm_cpuid_entry2> {
    let w = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    Some(kvm_cpuid_entry2 {
        function: w(0)?,
        index: w(1)?,
        flags: w(2)?,
        eax: w(3)?,
        ebx: w(4)?,
        ecx: w(5)?,
        edx: w(6)?,
        padding: [w(7)?, w(8)?, w(9)?],
    })
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Meaning of an errno from `KVM_TDX_INIT_MEM_REGION`, as the kernel's TDX code produces it.
pub fn init_mem_region_errno_meaning(errno: i32) -> &'static str {
    match errno {
        libc::EINTR => "interrupted by a signal (the region was written back: resume from it)",
        libc::EAGAIN => "the private mapping changed under KVM; retry",
        libc::EBUSY => "the TDX module was busy; retry",
        libc::EIO => "TDH.MEM.PAGE.ADD or TDH.MR.EXTEND failed in the TDX module",
        libc::EEXIST => "the page was already populated (never populate a page twice)",
        libc::EFAULT => "the source could not be read, or the page is not private to TDX",
        libc::EINVAL => {
            "invalid request (vCPU not initialized, TD finalized, bad flags, misaligned or non-private range)"
        }
        libc::ENOMEM => "the source page could not be pinned",
        _ => "unexpected error",
    }
}

struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + PAGE_SIZE as usize];
        let off = buf.as_ptr().align_offset(PAGE_SIZE as usize);
        Aligned { buf, off, len }
    }
    fn get(&self, n: usize) -> &[u8] {
        &self.buf[self.off..self.off + n.min(self.len)]
    }
    fn fill(&mut self, src: &[u8]) -> &[u8] {
        let n = src.len().min(self.len);
        self.buf[self.off..self.off + n].copy_from_slice(&src[..n]);
        &self.buf[self.off..self.off + n]
    }
}

/// A TD being launched: the typed launch steps (capabilities, init VM, init vCPU, finalize) and
/// the `cc-populate` [`Backend`] that populates through `KVM_TDX_INIT_MEM_REGION`.
///
/// Launch order (Documentation/virt/kvm/x86/intel-tdx.rst): `KVM_CREATE_VM(KVM_X86_TDX_VM)` ->
/// [`capabilities`](Self::capabilities) -> [`init_vm`](Self::init_vm) -> `KVM_CREATE_VCPU` ->
/// [`init_vcpu`](Self::init_vcpu) (plus `KVM_SET_CPUID2`/`KVM_SET_MSRS`) -> populate (the
/// driver: make private, then `KVM_TDX_INIT_MEM_REGION`) -> [`finalize`](Self::finalize).
pub struct TdxBackend<I> {
    ioctl: I,
    bounce: Option<Aligned>,
    zero: Option<Aligned>,
    finalized: bool,
}

impl<I: TdxIoctl> TdxBackend<I> {
    /// A backend issuing its ioctls through `ioctl` (a [`KvmTdx`](crate::KvmTdx) on a real TD).
    pub fn new(ioctl: I) -> Self {
        TdxBackend {
            ioctl,
            bounce: None,
            zero: None,
            finalized: false,
        }
    }

    /// The ioctl layer.
    pub fn ioctl(&self) -> &I {
        &self.ioctl
    }

    /// The ioctl layer, mutably.
    pub fn ioctl_mut(&mut self) -> &mut I {
        &mut self.ioctl
    }

    /// Gives the ioctl layer back.
    pub fn into_ioctl(self) -> I {
        self.ioctl
    }

    fn vm_cmd(
        &mut self,
        op: &'static str,
        id: u32,
        data: u64,
        payload: Option<&mut [u8]>,
    ) -> Result<kvm_tdx_cmd, Error> {
        let mut cmd = kvm_tdx_cmd {
            id,
            flags: 0,
            data,
            hw_error: 0,
        };
        self.ioctl
            .vm_op(&mut cmd, payload)
            .map_err(|errno| Error::ioctl(op, errno, cmd.hw_error, ""))?;
        Ok(cmd)
    }

    /// `KVM_TDX_CAPABILITIES`. On a VM that is not a TD, or a KVM without TDX, this is
    /// [`Error::NotSupported`].
    pub fn capabilities(&mut self) -> Result<TdxCapabilities, Error> {
        let mut room: usize = 256;
        for _ in 0..3 {
            let mut b = vec![0u8; CAPS_HEADER + CPUID2_HEADER + room * CPUID_ENTRY];
            b[CAPS_HEADER..CAPS_HEADER + 4].copy_from_slice(&(room as u32).to_le_bytes());
            let r = self.vm_cmd(
                "KVM_TDX_CAPABILITIES",
                KVM_TDX_CAPABILITIES,
                0,
                Some(&mut b),
            );
            let nent = u32::from_le_bytes([
                b[CAPS_HEADER],
                b[CAPS_HEADER + 1],
                b[CAPS_HEADER + 2],
                b[CAPS_HEADER + 3],
            ]) as usize;
            match r {
                Ok(_) => {
                    let entries = &b[CAPS_HEADER + CPUID2_HEADER..];
                    let cpuid = (0..nent.min(room))
                        .filter_map(|i| get_entry(&entries[i * CPUID_ENTRY..]))
                        .collect();
                    return Ok(TdxCapabilities {
                        supported_attrs: u64_at(&b, 0),
                        supported_xfam: u64_at(&b, 8),
                        kernel_tdvmcallinfo_1_r11: u64_at(&b, 16),
                        user_tdvmcallinfo_1_r11: u64_at(&b, 24),
                        kernel_tdvmcallinfo_1_r12: u64_at(&b, 32),
                        user_tdvmcallinfo_1_r12: u64_at(&b, 40),
                        cpuid,
                    });
                }
                Err(Error::Ioctl { errno, .. }) if errno == libc::E2BIG && nent > room => {
                    room = nent;
                }
                Err(Error::Ioctl { errno, .. })
                    if matches!(errno, libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) =>
                {
                    return Err(Error::NotSupported {
                        reason: format!(
                            "KVM_MEMORY_ENCRYPT_OP(KVM_TDX_CAPABILITIES) refused with errno {errno} ({}): not a TD, or no TDX in this KVM",
                            std::io::Error::from_raw_os_error(errno)
                        ),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::ioctl(
            "KVM_TDX_CAPABILITIES",
            libc::E2BIG,
            0,
            "the CPUID table kept growing",
        ))
    }

    /// `KVM_TDX_INIT_VM` with `params` (before any vCPU is created).
    pub fn init_vm(&mut self, params: &TdParams) -> Result<(), Error> {
        let mut b = params.to_bytes();
        self.vm_cmd("KVM_TDX_INIT_VM", KVM_TDX_INIT_VM, 0, Some(&mut b))
            .map(|_| ())
    }

    /// `KVM_TDX_INIT_VCPU` on the vCPU of the ioctl layer; `rcx` is the vCPU's initial RCX
    /// (TDVF expects the TD HOB's address there).
    pub fn init_vcpu(&mut self, rcx: u64) -> Result<(), Error> {
        let mut cmd = kvm_tdx_cmd {
            id: KVM_TDX_INIT_VCPU,
            flags: 0,
            data: rcx,
            hw_error: 0,
        };
        self.ioctl
            .vcpu_op(&mut cmd, None)
            .map_err(|errno| Error::ioctl("KVM_TDX_INIT_VCPU", errno, cmd.hw_error, ""))
    }

    /// `KVM_TDX_FINALIZE_VM` (TDH.MR.FINALIZE): MRTD is fixed, no page can be added after.
    pub fn finalize(&mut self) -> Result<(), Error> {
        self.vm_cmd("KVM_TDX_FINALIZE_VM", KVM_TDX_FINALIZE_VM, 0, None)?;
        self.finalized = true;
        self.release_buffers();
        Ok(())
    }

    /// Frees the bounce buffer and the zero source (2 MiB each, allocated on first use), e.g.
    /// once populate is done; they are allocated again if needed.
    pub fn release_buffers(&mut self) {
        self.bounce = None;
        self.zero = None;
    }

    /// Whether [`finalize`](Self::finalize) succeeded.
    pub fn is_finalized(&self) -> bool {
        self.finalized
    }
}

/// One `KVM_TDX_INIT_MEM_REGION` over `source` (page aligned, whole pages) at `gpa`.
/// Returns the bytes done, as the kernel wrote them back, and the error.
fn add_pages<I: TdxIoctl>(
    ioctl: &mut I,
    gpa: u64,
    source: &[u8],
    flags: u32,
) -> (u64, Result<(), BackendError>) {
    let nr = source.len() as u64 / PAGE_SIZE;
    let start = source.as_ptr() as u64;
    let mut region = kvm_tdx_init_mem_region {
        source_addr: start,
        gpa,
        nr_pages: nr,
    };
    let mut cmd = kvm_tdx_cmd {
        id: KVM_TDX_INIT_MEM_REGION,
        flags,
        data: 0,
        hw_error: 0,
    };
    let r = ioctl.init_mem_region(&mut cmd, &mut region, source);
    let what = if flags & KVM_TDX_MEASURE_MEMORY_REGION != 0 {
        "PAGE.ADD+MR.EXTEND"
    } else {
        "PAGE.ADD"
    };
    // The kernel advances all three fields together, one page at a time.
    let pages = nr.checked_sub(region.nr_pages);
    let consistent = pages.is_some_and(|p| {
        region.gpa == gpa.wrapping_add(p * PAGE_SIZE)
            && region.source_addr == start.wrapping_add(p * PAGE_SIZE)
    });
    let Some(pages) = pages.filter(|_| consistent) else {
        return (
            0,
            Err(BackendError::new(
                cc_populate::ErrorKind::Failed,
                format!(
                    "KVM_TDX_INIT_MEM_REGION [{gpa:#x}..+{:#x}) {what}: the kernel wrote back an impossible region (gpa {:#x}, nr_pages {}, source {:#x} from {start:#x}); nothing counted",
                    nr * PAGE_SIZE,
                    region.gpa,
                    region.nr_pages,
                    region.source_addr
                ),
            )),
        );
    };
    let done = pages * PAGE_SIZE;
    match r {
        Ok(()) => (done, Ok(())),
        Err(errno) => {
            let mut e = BackendError::from_errno(
                errno,
                format!(
                    "KVM_TDX_INIT_MEM_REGION [{gpa:#x}..+{:#x}) {what}: stopped at GPA {:#x} after {pages} page(s): {}",
                    nr * PAGE_SIZE,
                    gpa + done,
                    init_mem_region_errno_meaning(errno)
                ),
            );
            if cmd.hw_error != 0 {
                e.detail
                    .push_str(&format!("; TDX module: {}", status::meaning(cmd.hw_error)));
                e = e.with_platform(cmd.hw_error, status::name(cmd.hw_error));
                if status::is_retryable(cmd.hw_error) {
                    e.kind = cc_populate::ErrorKind::Again;
                }
            }
            (done, Err(e))
        }
    }
}

impl<I: TdxIoctl> Backend for TdxBackend<I> {
    fn caps(&self) -> BackendCaps {
        TDX_CAPS
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Borrowed(match (role, page_op(role)) {
            (Role::Zero, Some(_)) => "PAGE.ADD (zero source)",
            (_, Some(op)) if op.measure => "PAGE.ADD+MR.EXTEND",
            (_, Some(_)) => "PAGE.ADD",
            (_, None) => "none (not a TDX role)",
        })
    }

    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        match self.ioctl.set_private(gpa, len) {
            Ok(()) => Populated::all(len),
            Err(errno) => Populated::failed(
                0,
                BackendError::from_errno(
                    errno,
                    format!("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [{gpa:#x}..+{len:#x})"),
                ),
            ),
        }
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let fail =
            |done: u64, kind, msg: String| Populated::failed(done, BackendError::new(kind, msg));
        use cc_populate::ErrorKind;
        let Some(op) = page_op(chunk.role) else {
            return fail(
                0,
                ErrorKind::Failed,
                format!(
                    "[{:#x}..+{:#x}): role {} has no TDX page operation",
                    chunk.gpa, chunk.len, chunk.role
                ),
            );
        };
        if self.finalized {
            return fail(
                0,
                ErrorKind::Failed,
                format!(
                    "[{:#x}..+{:#x}): the TD is finalized, no page can be added",
                    chunk.gpa, chunk.len
                ),
            );
        }
        let flags = if op.measure {
            KVM_TDX_MEASURE_MEMORY_REGION
        } else {
            0
        };
        let mut done = 0u64;
        while done < chunk.len {
            let gpa = chunk.gpa + done;
            let rest = chunk.len - done;
            let (asked, (n, r)) = match chunk.source {
                ChunkSource::Bytes(b) => {
                    let Some(src) = b.get(done as usize..chunk.len as usize) else {
                        return fail(
                            done,
                            ErrorKind::Failed,
                            format!(
                                "[{gpa:#x}..+{rest:#x}): the source has {:#x} bytes, fewer than the chunk",
                                b.len()
                            ),
                        );
                    };
                    if (src.as_ptr() as u64) % PAGE_SIZE == 0 {
                        (rest, add_pages(&mut self.ioctl, gpa, src, flags))
                    } else {
                        // The kernel wants a page-aligned source: bounce it.
                        let bounce = self.bounce.get_or_insert_with(|| Aligned::new(BOUNCE_SIZE));
                        let src = bounce.fill(src);
                        (src.len() as u64, add_pages(&mut self.ioctl, gpa, src, flags))
                    }
                }
                ChunkSource::Zero => {
                    let zero = self.zero.get_or_insert_with(|| Aligned::new(BOUNCE_SIZE));
                    let src = zero.get(rest.min(BOUNCE_SIZE as u64) as usize);
                    (src.len() as u64, add_pages(&mut self.ioctl, gpa, src, flags))
                }
                ChunkSource::InPlace => {
                    return fail(
                        done,
                        ErrorKind::Unsupported,
                        format!(
                            "[{gpa:#x}..+{rest:#x}): TDX cannot populate in place (the module copies from a separate source page)"
                        ),
                    )
                }
            };
            done += n;
            if let Err(e) = r {
                return Populated::failed(done, e);
            }
            if n < asked {
                // Success with less than asked: report the progress; the driver calls again.
                return Populated {
                    done,
                    result: Ok(()),
                };
            }
        }
        Populated::all(chunk.len)
    }
}
