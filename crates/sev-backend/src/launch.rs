//! The SEV-SNP launch: probing, the commands around populate, and the `cc-populate` backend.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::OpenOptions;

use cc_populate::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind,
    Populated, Role, RoleSet, HUGE_2M,
};
use kvm_ioctls::Kvm;

use crate::cpuid::{cpuid_diff, parse_cpuid_table, LeafDiff};
use crate::digest::{PageType, PAGE};
use crate::error::{fw_error_name, SEV_RET_INVALID_PARAM};
use crate::ioctl::{KvmSevIoctl, SevCmd, SevIoctl, SevIoctlError, UpdateSource};
use crate::uapi::{
    kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update,
    KVM_CAP_VM_TYPES, KVM_SEV_SNP_FINISH_DATA_SIZE, KVM_SEV_SNP_ID_AUTH_SIZE,
    KVM_SEV_SNP_ID_BLOCK_SIZE, KVM_X86_SNP_VM,
};
use crate::Error;
use cc_populate::InPlaceReader;

/// The SEV firmware device the SNP commands go through.
pub const SEV_DEVICE: &str = "/dev/sev";

/// What the probe found on a kernel that can launch SNP guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnpSupport {
    /// `KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES)`: the VM types this KVM creates, as bits.
    pub vm_types: u32,
}

/// Checks that this KVM can create SNP VMs (`KVM_CAP_VM_TYPES` has bit `KVM_X86_SNP_VM`) and
/// that the SEV firmware device exists. Anything else is [`Error::NotSupported`], saying why.
pub fn probe(kvm: &Kvm) -> Result<SnpSupport, Error> {
    let types = kvm.check_extension_raw(libc::c_ulong::from(KVM_CAP_VM_TYPES));
    if types < 0 || types & (1 << KVM_X86_SNP_VM) == 0 {
        return Err(Error::NotSupported {
            reason: format!(
                "KVM_CAP_VM_TYPES is {types:#x}, without bit {KVM_X86_SNP_VM} (KVM_X86_SNP_VM)"
            ),
        });
    }
    if !std::path::Path::new(SEV_DEVICE).exists() {
        return Err(Error::NotSupported {
            reason: format!("{SEV_DEVICE} (the SEV firmware device) does not exist"),
        });
    }
    Ok(SnpSupport {
        vm_types: types as u32,
    })
}

/// How the backend handles a CPUID page the firmware rejects. The kernel then copies the
/// firmware's corrected table back into the source page; the difference per leaf is always
/// recorded ([`SnpBackend::cpuid_corrections`]) and named in the error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuidPolicy {
    /// Stop with an error carrying the per-leaf difference (what QEMU does).
    #[default]
    Fail,
    /// Populate the page again with the firmware's corrected table (once per page).
    UseFirmwareValues,
    /// Stop like `Fail`, and also keep the firmware's whole corrected table in the correction
    /// record, for a caller that wants to inspect it or build its own table from it.
    ReportOnly,
}

/// How content written in place (in the shared view of guest_memfd) is populated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InPlaceMode {
    /// Not supported: plans with in-place content are refused at validation.
    #[default]
    Unsupported,
    /// The kernel populates in place: `LAUNCH_UPDATE` with `uaddr = 0` (the in-place conversion
    /// series makes `uaddr` optional; not in a released kernel as of 6.18).
    Kernel,
    /// Fall back to a source buffer: the bytes are copied out of the shared view (through the
    /// reader given to [`SnpBackend::with_shared_view`]) just before the range is made private,
    /// and populated from that copy.
    CopyBeforeConversion,
}

/// How the backend is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// CPUID page rejections.
    pub cpuid: CpuidPolicy,
    /// In-place content.
    pub in_place: InPlaceMode,
    /// The largest chunk one `LAUNCH_UPDATE` is given (a multiple of 4 KiB). The default,
    /// 2 MiB, is the largest RMP page size: aligned 2 MiB spans stay whole (hugepage-backed
    /// guest_memfd), and a bounce buffer for an unaligned source never exceeds it.
    pub max_chunk: u64,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            cpuid: CpuidPolicy::Fail,
            in_place: InPlaceMode::Unsupported,
            max_chunk: HUGE_2M,
        }
    }
}

/// The capabilities of an SNP backend: 4 KiB granule, hugepage-aware chunks up to `max_chunk`,
/// conversion to private before populate, the common roles plus `Secrets` and `Cpuid`.
pub fn snp_caps(in_place: bool, max_chunk: u64) -> BackendCaps {
    BackendCaps {
        granule: PAGE as u64,
        max_chunk,
        hugepage_chunks: true,
        in_place,
        conversion: Conversion::BeforePopulate,
        roles: RoleSet::COMMON.with(Role::Secrets).with(Role::Cpuid),
    }
}

/// Capabilities for plans that are only measured (a verifier): those of the backend, with
/// in-place content allowed. Use with [`cc_populate::MemoryLayout::unbounded`].
pub fn verifier_caps() -> BackendCaps {
    snp_caps(true, HUGE_2M)
}

/// `KVM_SEV_INIT2` parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitParams {
    /// VMSA SEV features (`vmsa_features`).
    pub vmsa_features: u64,
    /// GHCB protocol version (0: KVM's default).
    pub ghcb_version: u16,
}

/// SNP guest policy: bit 17 is reserved and must be one.
pub const SNP_POLICY_RESERVED_MBO: u64 = 1 << 17;
/// SNP guest policy: SMT allowed.
pub const SNP_POLICY_SMT: u64 = 1 << 16;

/// `KVM_SEV_SNP_LAUNCH_START` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartParams {
    /// The guest policy.
    pub policy: u64,
    /// Guest OS visible workarounds (`gosvw`).
    pub gosvw: [u8; 16],
}

impl Default for StartParams {
    fn default() -> Self {
        StartParams {
            policy: SNP_POLICY_RESERVED_MBO | SNP_POLICY_SMT,
            gosvw: [0; 16],
        }
    }
}

/// `KVM_SEV_SNP_LAUNCH_FINISH` parameters.
#[derive(Clone, Copy, Debug, Default)]
pub struct FinishParams<'a> {
    /// The ID block (96 bytes), if any.
    pub id_block: Option<&'a [u8; KVM_SEV_SNP_ID_BLOCK_SIZE as usize]>,
    /// The ID authentication structure (4096 bytes); needs an ID block.
    pub id_auth: Option<&'a [u8; KVM_SEV_SNP_ID_AUTH_SIZE as usize]>,
    /// Whether `id_auth` carries an author key.
    pub auth_key: bool,
    /// Whether to disable the VCEK (sign with the VLEK only).
    pub vcek_disabled: bool,
    /// Host data placed in the attestation report.
    pub host_data: [u8; KVM_SEV_SNP_FINISH_DATA_SIZE as usize],
}

/// Where a launch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchState {
    /// VM created, `KVM_SEV_INIT2` not yet issued.
    Created,
    /// `KVM_SEV_INIT2` done.
    Initialized,
    /// `KVM_SEV_SNP_LAUNCH_START` done: populate now.
    Started,
    /// `KVM_SEV_SNP_LAUNCH_FINISH` done.
    Finished,
}

impl LaunchState {
    fn name(self) -> &'static str {
        match self {
            LaunchState::Created => "created (before KVM_SEV_INIT2)",
            LaunchState::Initialized => "initialised (before KVM_SEV_SNP_LAUNCH_START)",
            LaunchState::Started => "started",
            LaunchState::Finished => "finished",
        }
    }
}

/// A CPUID page the firmware rejected, and how it differed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidCorrection {
    /// The page's address.
    pub gpa: u64,
    /// The entries that differ (the VMM's values against the firmware's).
    pub diff: Vec<LeafDiff>,
    /// Whether the page was then populated with the firmware's table.
    pub applied: bool,
    /// The firmware's whole page ([`CpuidPolicy::ReportOnly`]).
    pub firmware_page: Option<Vec<u8>>,
    /// A note when either table did not parse (then `diff` is empty).
    pub note: Option<String>,
}

/// An SEV-SNP launch through KVM and the `cc-populate` backend that populates it.
///
/// ```no_run
/// use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role};
/// use sev_backend::{FinishParams, InitParams, LaunchConfig, SnpBackend, StartParams};
///
/// let kvm = kvm_ioctls::Kvm::new()?;
/// let mut snp = SnpBackend::create(&kvm, LaunchConfig::default())?;
/// snp.init(&InitParams::default())?;
/// // ... memslots backed by guest_memfd on snp.ioctl().vm(), vCPUs ...
/// snp.start(&StartParams::default())?;
/// let firmware = std::fs::read("OVMF.fd")?;
/// let plan = PlanBuilder::new()
///     .source((1 << 32) - firmware.len() as u64, Role::Measured, &firmware)
///     .build(&snp.caps_now(), &MemoryLayout::unbounded())?;
/// let report = Driver::new(&mut snp).run(&plan)?;
/// assert!(report.is_complete());
/// snp.finish(&FinishParams::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SnpBackend<I> {
    ioctl: I,
    state: LaunchState,
    config: LaunchConfig,
    shared_view: Option<Box<dyn InPlaceReader>>,
    /// Copies of in-place content taken before conversion: start GPA -> bytes.
    copies: BTreeMap<u64, Vec<u8>>,
    corrections: Vec<CpuidCorrection>,
}

impl<I> std::fmt::Debug for SnpBackend<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpBackend")
            .field("state", &self.state)
            .field("config", &self.config)
            .field("copies", &self.copies.len())
            .field("corrections", &self.corrections)
            .finish()
    }
}

impl SnpBackend<KvmSevIoctl> {
    /// Probes this KVM ([`probe`]), creates an SNP VM and opens the SEV device. Fails with
    /// [`Error::NotSupported`] where SNP is not available.
    pub fn create(kvm: &Kvm, config: LaunchConfig) -> Result<Self, Error> {
        probe(kvm)?;
        let vm = kvm
            .create_vm_with_type(u64::from(KVM_X86_SNP_VM))
            .map_err(|e| Error::Os {
                op: "KVM_CREATE_VM(KVM_X86_SNP_VM)".into(),
                errno: e.errno(),
            })?;
        let sev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(SEV_DEVICE)
            .map_err(|e| Error::Os {
                op: format!("open({SEV_DEVICE})"),
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            })?;
        Ok(SnpBackend::with_ioctl(KvmSevIoctl::new(vm, sev), config))
    }
}

/// A page-aligned bounce buffer (newer kernels refuse an unaligned `uaddr`), made without
/// `unsafe`: a `Vec` one page longer than needed, used from its first page boundary.
struct Bounce {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Bounce {
    fn new(len: usize) -> Option<Bounce> {
        let buf = vec![0u8; len.checked_add(PAGE)?];
        let off = buf.as_ptr().align_offset(PAGE);
        (off < PAGE).then_some(Bounce { buf, off, len })
    }

    fn from(bytes: &[u8]) -> Option<Bounce> {
        let mut b = Bounce::new(bytes.len())?;
        b.as_mut().copy_from_slice(bytes);
        Some(b)
    }

    fn as_ref(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

fn cmd_error(cmd: &'static str, e: SevIoctlError) -> Error {
    Error::Command {
        cmd,
        errno: e.errno,
        fw_code: e.fw_error,
        fw_name: fw_error_name(e.fw_error),
    }
}

impl<I: SevIoctl> SnpBackend<I> {
    /// A launch over any ioctl implementation (the real one, or a model in tests).
    pub fn with_ioctl(ioctl: I, config: LaunchConfig) -> Self {
        SnpBackend {
            ioctl,
            state: LaunchState::Created,
            config,
            shared_view: None,
            copies: BTreeMap::new(),
            corrections: Vec::new(),
        }
    }

    /// Sets the reader of the shared view that [`InPlaceMode::CopyBeforeConversion`] copies
    /// in-place content from.
    pub fn with_shared_view(mut self, reader: Box<dyn InPlaceReader>) -> Self {
        self.shared_view = Some(reader);
        self
    }

    /// The ioctl layer.
    pub fn ioctl(&self) -> &I {
        &self.ioctl
    }

    /// The ioctl layer, mutably.
    pub fn ioctl_mut(&mut self) -> &mut I {
        &mut self.ioctl
    }

    /// Where the launch is.
    pub fn state(&self) -> LaunchState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &LaunchConfig {
        &self.config
    }

    /// Changes the CPUID policy (e.g. before resuming a run stopped by a rejected table).
    pub fn set_cpuid_policy(&mut self, policy: CpuidPolicy) {
        self.config.cpuid = policy;
    }

    /// Every CPUID page the firmware rejected so far, with the per-leaf difference.
    pub fn cpuid_corrections(&self) -> &[CpuidCorrection] {
        &self.corrections
    }

    /// The backend's capabilities (as [`Backend::caps`]).
    pub fn caps_now(&self) -> BackendCaps {
        snp_caps(
            self.config.in_place != InPlaceMode::Unsupported,
            self.config.max_chunk,
        )
    }

    fn expect(&self, want: LaunchState, step: &'static str) -> Result<(), Error> {
        if self.state == want {
            Ok(())
        } else {
            Err(Error::BadState {
                step,
                state: self.state.name(),
            })
        }
    }

    /// `KVM_SEV_INIT2`.
    pub fn init(&mut self, p: &InitParams) -> Result<(), Error> {
        self.expect(LaunchState::Created, "KVM_SEV_INIT2")?;
        let mut init = kvm_sev_init {
            vmsa_features: p.vmsa_features,
            ghcb_version: p.ghcb_version,
            ..Default::default()
        };
        self.ioctl
            .encrypt_op(SevCmd::Init2(&mut init))
            .map_err(|e| cmd_error("KVM_SEV_INIT2", e))?;
        self.state = LaunchState::Initialized;
        Ok(())
    }

    /// `KVM_SEV_SNP_LAUNCH_START`.
    pub fn start(&mut self, p: &StartParams) -> Result<(), Error> {
        self.expect(LaunchState::Initialized, "KVM_SEV_SNP_LAUNCH_START")?;
        let mut start = kvm_sev_snp_launch_start {
            policy: p.policy,
            gosvw: p.gosvw,
            ..Default::default()
        };
        self.ioctl
            .encrypt_op(SevCmd::LaunchStart(&mut start))
            .map_err(|e| cmd_error("KVM_SEV_SNP_LAUNCH_START", e))?;
        self.state = LaunchState::Started;
        Ok(())
    }

    /// `KVM_SEV_SNP_LAUNCH_FINISH` (KVM measures the vCPUs' VMSAs here).
    pub fn finish(&mut self, p: &FinishParams<'_>) -> Result<(), Error> {
        self.expect(LaunchState::Started, "KVM_SEV_SNP_LAUNCH_FINISH")?;
        if p.id_auth.is_some() && p.id_block.is_none() {
            return Err(Error::BadState {
                step: "KVM_SEV_SNP_LAUNCH_FINISH with an ID auth structure",
                state: "without an ID block",
            });
        }
        let mut fin = kvm_sev_snp_launch_finish {
            id_block_uaddr: p.id_block.map_or(0, |b| b.as_ptr() as u64),
            id_auth_uaddr: p.id_auth.map_or(0, |b| b.as_ptr() as u64),
            id_block_en: u8::from(p.id_block.is_some()),
            auth_key_en: u8::from(p.auth_key),
            vcek_disabled: u8::from(p.vcek_disabled),
            host_data: p.host_data,
            ..Default::default()
        };
        self.ioctl
            .encrypt_op(SevCmd::LaunchFinish(&mut fin))
            .map_err(|e| cmd_error("KVM_SEV_SNP_LAUNCH_FINISH", e))?;
        self.state = LaunchState::Finished;
        Ok(())
    }

    fn copy_of(&self, gpa: u64, len: u64) -> Option<Vec<u8>> {
        let (start, bytes) = self.copies.range(..=gpa).next_back()?;
        let off = usize::try_from(gpa - start).ok()?;
        let end = off.checked_add(usize::try_from(len).ok()?)?;
        bytes.get(off..end).map(<[u8]>::to_vec)
    }

    fn update(&mut self, chunk: &ChunkRequest<'_>, ty: PageType) -> Populated {
        let (gpa, len) = (chunk.gpa, chunk.len);
        let range = format!("[{gpa:#x}..+{len:#x})");
        let fail = |kind, msg: String| Populated::failed(0, BackendError::new(kind, msg));
        let Ok(ulen) = usize::try_from(len) else {
            return fail(ErrorKind::Failed, format!("{range}: chunk too large"));
        };
        // Where the bytes come from: the caller's page-aligned buffer, a page-aligned bounce
        // buffer we own, or nothing (ZERO pages; in-place content the kernel populates where
        // it is).
        let mut bounce: Option<Bounce> = None;
        let mut shared: Option<&[u8]> = None;
        let in_place_copy = |s: &Self| {
            s.copy_of(gpa, len).ok_or_else(|| {
                format!("{range}: in-place content was not copied out of the shared view before conversion (this kernel cannot populate in place; give the backend a shared-view reader)")
            })
        };
        let owned: Option<Cow<'_, [u8]>> = match (ty, chunk.source) {
            (PageType::Zero, _) => None,
            // The CPUID page always goes through a bounce page: the kernel writes the
            // firmware's corrected table back into the source, and only when there is one.
            (PageType::Cpuid, ChunkSource::Bytes(b)) => Some(Cow::Owned(b.to_vec())),
            (PageType::Cpuid, ChunkSource::Zero) => Some(Cow::Owned(vec![0; ulen])),
            (PageType::Cpuid, ChunkSource::InPlace) => match self.copy_of(gpa, len) {
                Some(c) => Some(Cow::Owned(c)),
                None => {
                    return fail(
                        ErrorKind::Failed,
                        format!("{range}: the CPUID page needs a source page (the kernel writes the firmware's corrected table back only there) and its in-place content was not copied before conversion: give the table as bytes, or use InPlaceMode::CopyBeforeConversion with a shared-view reader"),
                    )
                }
            },
            // An aligned caller buffer is handed to the kernel as is; others are copied.
            (_, ChunkSource::Bytes(b)) if b.as_ptr().align_offset(PAGE) == 0 => {
                shared = Some(b);
                None
            }
            (_, ChunkSource::Bytes(b)) => Some(Cow::Borrowed(b)),
            (_, ChunkSource::Zero) => Some(Cow::Owned(vec![0; ulen])),
            (_, ChunkSource::InPlace) => match self.config.in_place {
                InPlaceMode::Kernel => None,
                InPlaceMode::CopyBeforeConversion => match in_place_copy(self) {
                    Ok(c) => Some(Cow::Owned(c)),
                    Err(e) => return fail(ErrorKind::Failed, e),
                },
                InPlaceMode::Unsupported => {
                    return fail(
                        ErrorKind::Unsupported,
                        format!("{range}: in-place content, and in-place population is off"),
                    )
                }
            },
        };
        if let Some(bytes) = owned {
            if bytes.len() != ulen {
                return fail(
                    ErrorKind::Failed,
                    format!("{range}: source has {} bytes", bytes.len()),
                );
            }
            match Bounce::from(&bytes) {
                Some(b) => bounce = Some(b),
                None => {
                    return fail(
                        ErrorKind::Failed,
                        format!("{range}: cannot allocate an aligned bounce buffer"),
                    )
                }
            }
        }
        if let Some(b) = shared {
            if b.len() != ulen {
                return fail(
                    ErrorKind::Failed,
                    format!("{range}: source has {} bytes", b.len()),
                );
            }
        }
        let original = if ty == PageType::Cpuid {
            bounce.as_ref().map(|b| b.as_ref().to_vec())
        } else {
            None
        };
        let mut p = kvm_sev_snp_launch_update {
            gfn_start: gpa / PAGE as u64,
            uaddr: shared
                .map(|b| b.as_ptr() as u64)
                .or(bounce.as_ref().map(|b| b.as_ref().as_ptr() as u64))
                .unwrap_or(0),
            len,
            type_: ty.code(),
            ..Default::default()
        };
        let first_gfn = p.gfn_start;
        let mut retried_cpuid: Option<u64> = None;
        loop {
            let before = p;
            let source = match (shared, bounce.as_mut().map(Bounce::as_mut)) {
                (Some(s), _) => Some(UpdateSource::Shared(s)),
                (None, Some(b)) => Some(UpdateSource::Bounce(b)),
                (None, None) => None,
            };
            let done = len - before.len;
            let at = before.gfn_start * PAGE as u64;
            let result = self.ioctl.encrypt_op(SevCmd::LaunchUpdate {
                params: &mut p,
                source,
            });
            match result {
                Ok(()) => {
                    let moved = before.len.wrapping_sub(p.len);
                    let uaddr_ok = before.uaddr == 0
                        || ty == PageType::Zero
                        || p.uaddr == before.uaddr.wrapping_add(moved);
                    if p.len > before.len
                        || moved % PAGE as u64 != 0
                        || p.gfn_start != before.gfn_start + moved / PAGE as u64
                        || !uaddr_ok
                    {
                        return Populated::failed(
                            done,
                            BackendError::new(
                                ErrorKind::Failed,
                                format!(
                                    "KVM_SEV_SNP_LAUNCH_UPDATE at GPA {at:#x}: the kernel reported impossible progress (gfn {:#x} -> {:#x}, len {:#x} -> {:#x}, uaddr {:#x} -> {:#x})",
                                    before.gfn_start, p.gfn_start, before.len, p.len, before.uaddr, p.uaddr
                                ),
                            ),
                        );
                    }
                    if p.len == 0 {
                        return Populated::all(len);
                    }
                    if moved == 0 {
                        // Success without progress: let the driver's no-progress guard decide.
                        return Populated {
                            done,
                            result: Ok(()),
                        };
                    }
                }
                Err(e) => {
                    // On error the kernel does not copy the parameters back: `p` is unchanged.
                    p = before;
                    let what = format!(
                        "KVM_SEV_SNP_LAUNCH_UPDATE of {} at GPA {at:#x} (+{:#x}, chunk {range})",
                        ty.name(),
                        before.len
                    );
                    if ty == PageType::Cpuid
                        && e.errno == libc::EIO
                        && e.fw_error == SEV_RET_INVALID_PARAM
                    {
                        let off = ((before.gfn_start - first_gfn) * PAGE as u64) as usize;
                        let ours = original
                            .as_deref()
                            .and_then(|o| o.get(off..off + PAGE))
                            .unwrap_or(&[]);
                        let theirs = bounce
                            .as_ref()
                            .and_then(|b| b.as_ref().get(off..off + PAGE))
                            .unwrap_or(&[]);
                        let (diff, note) =
                            match (parse_cpuid_table(ours), parse_cpuid_table(theirs)) {
                                (Ok(a), Ok(b)) => (cpuid_diff(&a, &b), None),
                                (a, b) => (
                                    Vec::new(),
                                    Some(format!(
                                        "could not compare the tables: ours {:?}, firmware's {:?}",
                                        a.err().map(|e| e.to_string()),
                                        b.err().map(|e| e.to_string())
                                    )),
                                ),
                            };
                        let retry = self.config.cpuid == CpuidPolicy::UseFirmwareValues
                            && retried_cpuid != Some(at);
                        let summary = describe_diff(&diff, note.as_deref());
                        self.corrections.push(CpuidCorrection {
                            gpa: at,
                            diff,
                            applied: retry,
                            firmware_page: (self.config.cpuid == CpuidPolicy::ReportOnly)
                                .then(|| theirs.to_vec()),
                            note,
                        });
                        if retry {
                            retried_cpuid = Some(at);
                            continue;
                        }
                        return Populated::failed(
                            done,
                            BackendError::from_errno(e.errno, format!(
                                "{what}: the firmware rejected the CPUID table ({:?} policy): {summary}",
                                self.config.cpuid
                            ))
                            .with_platform(u64::from(e.fw_error), fw_error_name(e.fw_error)),
                        );
                    }
                    if e.errno == libc::EIO && e.fw_error == 0 {
                        // The kernel flattens a populate that stopped before its first page
                        // (a pending signal, among others) to -EIO with no firmware status.
                        let mut err = BackendError::new(
                            ErrorKind::Interrupted,
                            format!("{what}: interrupted before any page was populated (EIO with firmware status 0; the kernel reports a page already populated or not private the same way, so a retry that keeps failing means one of those)"),
                        );
                        err.errno = Some(e.errno);
                        return Populated::failed(done, err);
                    }
                    let mut err = BackendError::from_errno(e.errno, what);
                    if e.fw_error != 0 {
                        err = err.with_platform(u64::from(e.fw_error), fw_error_name(e.fw_error));
                    }
                    return Populated::failed(done, err);
                }
            }
        }
    }
}

fn describe_diff(diff: &[LeafDiff], note: Option<&str>) -> String {
    if let Some(n) = note {
        return n.to_string();
    }
    if diff.is_empty() {
        return "no leaf differs".into();
    }
    let leaves: Vec<String> = diff.iter().map(ToString::to_string).collect();
    format!("{} leaves differ: {}", diff.len(), leaves.join("; "))
}

impl<I: SevIoctl> Backend for SnpBackend<I> {
    fn caps(&self) -> BackendCaps {
        self.caps_now()
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        match PageType::for_role(role) {
            Some(t) => Cow::Borrowed(t.name()),
            None => Cow::Borrowed("(no SNP page type)"),
        }
    }

    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        if self.config.in_place == InPlaceMode::CopyBeforeConversion {
            if let Some(reader) = &self.shared_view {
                let Ok(n) = usize::try_from(len) else {
                    return Populated::failed(
                        0,
                        BackendError::new(
                            ErrorKind::Failed,
                            format!("[{gpa:#x}..+{len:#x}): too large to copy"),
                        ),
                    );
                };
                let mut buf = vec![0u8; n];
                if let Err(e) = reader.read_in_place(gpa, &mut buf) {
                    return Populated::failed(
                        0,
                        BackendError::new(
                            ErrorKind::Failed,
                            format!("[{gpa:#x}..+{len:#x}): copying in-place content out of the shared view failed: {e}"),
                        ),
                    );
                }
                self.copies.insert(gpa, buf);
            }
        }
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
        if self.state != LaunchState::Started {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "populate [{:#x}..+{:#x}) while the launch is {}",
                        chunk.gpa,
                        chunk.len,
                        self.state.name()
                    ),
                ),
            );
        }
        let Some(ty) = PageType::for_role(chunk.role) else {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "[{:#x}..+{:#x}): role {} has no SNP page type",
                        chunk.gpa, chunk.len, chunk.role
                    ),
                ),
            );
        };
        let r = self.update(chunk, ty);
        if r.done == chunk.len && r.result.is_ok() {
            // The copy, if any, has done its job.
            if let Some((&start, bytes)) = self.copies.range(..=chunk.gpa).next_back() {
                if start + bytes.len() as u64 == chunk.gpa + chunk.len {
                    self.copies.remove(&start);
                }
            }
        }
        r
    }
}
