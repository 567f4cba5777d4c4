//! The SEV-SNP launch: probing, the commands around populate, and the `cc-populate` backend.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::OpenOptions;

use cc_populate::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind,
    InPlacePopulate, Populated, Role, RoleSet, HUGE_2M,
};
use kvm_ioctls::Kvm;

use crate::cpuid::{cpuid_diff, parse_cpuid_table, LeafDiff};
use crate::digest::{PageType, PAGE};
use crate::error::{fw_error_name, SEV_RET_INVALID_PARAM};
use crate::ioctl::{KvmSevIoctl, SevCmd, SevIoctl, SevIoctlError, UpdateSource};
use crate::kernel::{KernelNote, KernelVersion};
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
/// firmware's corrected table back into the source page (`arch/x86/kvm/svm/sev.c:
/// sev_gmem_post_populate`, Linux 6.18.2), and the backend compares it with what it sent: on
/// the first page of a call the rejection is an `EIO` with `SEV_RET_INVALID_PARAM`; on a later
/// page the call *succeeds* with the pages before it and the status is lost, so the changed
/// source page is the only sign. Either way the difference per leaf is recorded
/// ([`SnpBackend::cpuid_corrections`]) and the policy applied; the firmware's table is never
/// sent without [`CpuidPolicy::UseFirmwareValues`].
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
    /// The kernel populates in place: the driver converts the region, then `LAUNCH_UPDATE`
    /// gets `uaddr = 0` and the firmware encrypts and measures what the private page holds
    /// (in-place conversion series v8 patch 22/46, [`SeriesKernel`](crate::SeriesKernel)).
    /// Whether the running kernel can is answered per run ([`SevIoctl::in_place_populate`],
    /// through [`Backend::in_place_populate`]): where it cannot (Linux 6.12, 6.18, 7.3; the
    /// series with its module parameter off), the driver stops before converting anything, or
    /// copies the content to a separate source first where the caller allowed it
    /// (`cc_populate::DriverOptions::in_place_fallback`).
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
    /// How many times in a row a `LAUNCH_UPDATE` answered `EIO` with firmware status 0 at the
    /// same page is retried (reported to the driver as an interruption) before it is a hard
    /// failure. Linux 6.18.2 answers a signal before the first page this way, but also a page
    /// populated already or not private, a bad source, a dead PSP or a dead VM, none of which
    /// a retry mends: keep this small. Default 2.
    pub max_eio_zero_retries: u32,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            cpuid: CpuidPolicy::Fail,
            in_place: InPlaceMode::Unsupported,
            max_chunk: HUGE_2M,
            max_eio_zero_retries: 2,
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
/// SNP guest policy: debugging allowed.
pub const SNP_POLICY_DEBUG: u64 = 1 << 19;
/// SNP guest policy: single socket only.
pub const SNP_POLICY_SINGLE_SOCKET: u64 = 1 << 20;
/// The policy bits Linux 6.18.2 accepts (`SNP_POLICY_MASK_VALID` in `arch/x86/kvm/svm/sev.c`):
/// ABI minor and major (bits 0-15), SMT, the must-be-one bit 17, DEBUG, SINGLE_SOCKET.
pub const SNP_POLICY_MASK_VALID: u64 =
    0xffff | SNP_POLICY_SMT | SNP_POLICY_RESERVED_MBO | SNP_POLICY_DEBUG | SNP_POLICY_SINGLE_SOCKET;
/// The VMSA features Linux 6.18.2 can offer an SNP guest at most (`sev_supported_vmsa_features`
/// in `arch/x86/kvm/svm/sev.c: sev_hardware_setup`): `SVM_SEV_FEAT_DEBUG_SWAP` (bit 5) and
/// `SVM_SEV_FEAT_SECURE_TSC` (bit 9); the host decides which of them it has.
pub const SNP_VMSA_FEATURES_KNOWN: u64 = 1 << 5 | 1 << 9;

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
    /// `KVM_SEV_SNP_LAUNCH_FINISH` failed: Linux 6.18.2 measures the VMSAs before anything
    /// else can fail, so the launch cannot be finished; tear the VM down.
    Unrecoverable,
}

impl LaunchState {
    fn name(self) -> &'static str {
        match self {
            LaunchState::Created => "created (before KVM_SEV_INIT2)",
            LaunchState::Initialized => "initialised (before KVM_SEV_SNP_LAUNCH_START)",
            LaunchState::Started => "started",
            LaunchState::Finished => "finished",
            LaunchState::Unrecoverable => "unrecoverable (KVM_SEV_SNP_LAUNCH_FINISH failed)",
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
    /// The whole source page as the kernel left it ([`CpuidPolicy::ReportOnly`]): the
    /// firmware's table, or ours when the kernel wrote nothing back.
    pub firmware_page: Option<Vec<u8>>,
    /// A note when either table did not parse, or the page came back unchanged (then `diff`
    /// is empty).
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
/// snp.create_vcpu(0)?; // after INIT2; LAUNCH_FINISH measures every vCPU's VMSA
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
    shared_view: Option<Box<dyn InPlaceReader + Send + Sync>>,
    /// Copies of in-place content taken before conversion: start GPA -> bytes.
    copies: BTreeMap<u64, Vec<u8>>,
    corrections: Vec<CpuidCorrection>,
    /// The page of the last `EIO` with firmware status 0 and how many in a row.
    eio_zero: Option<(u64, u32)>,
    /// vCPUs the VM has (created through the backend, or given at attach).
    vcpus: u32,
    /// What choosing the kernel version said (once), for the caller to log.
    kernel_note: Option<KernelNote>,
}

/// Where a launch the VMM started stands, for [`SnpBackend::attach`]: given, not replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachState {
    /// How far the VMM got: [`LaunchState::Initialized`] after its `KVM_SEV_INIT2`,
    /// [`LaunchState::Started`] after its `KVM_SEV_SNP_LAUNCH_START`.
    pub state: LaunchState,
    /// The vCPUs it created (after `KVM_SEV_INIT2`).
    pub vcpus: u32,
}

impl<I> std::fmt::Debug for SnpBackend<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpBackend")
            .field("state", &self.state)
            .field("config", &self.config)
            .field("copies", &self.copies.len())
            .field("corrections", &self.corrections)
            .field("vcpus", &self.vcpus)
            .field("kernel_note", &self.kernel_note)
            .finish()
    }
}

impl SnpBackend<KvmSevIoctl<'_>> {
    /// Probes this KVM ([`probe`]), creates an SNP VM and opens the SEV device. Fails with
    /// [`Error::NotSupported`] where SNP is not available, and with
    /// [`Error::UnsupportedKernel`] on a kernel older than 6.12. The rules followed are the
    /// running kernel's ([`KernelVersion::running`]; what the choice says is
    /// [`kernel_note`](SnpBackend::kernel_note)). Create the guest_memfds on `ioctl().vm()`,
    /// bind them, and hand each to [`KvmSevIoctl::add_guest_memfd`] (through `ioctl_mut()`)
    /// before populating.
    pub fn create(kvm: &Kvm, config: LaunchConfig) -> Result<Self, Error> {
        probe(kvm)?;
        let choice = KernelVersion::running()?;
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
        let mut b = SnpBackend::with_ioctl(
            KvmSevIoctl::new(vm, sev).with_kernel(choice.version),
            config,
        );
        b.kernel_note = Some(choice.note);
        Ok(b)
    }
}

/// A page-aligned bounce buffer, made without `unsafe`: a `Vec` one page longer than needed,
/// used from its first page boundary. Linux 6.18.2 copies the source with `copy_from_user`
/// from any address (`sev.c: sev_gmem_post_populate`); the backend still hands it whole pages,
/// so that each source page is one user page (as the CPUID write-back lands in it).
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

/// What `EIO` with firmware status 0 from `KVM_SEV_SNP_LAUNCH_UPDATE` can mean (Linux 6.18.2).
const EIO_ZERO_MEANS: &str = "arch/x86/kvm/svm/sev.c: snp_launch_update turns every failure of virt/kvm/guest_memfd.c: kvm_gmem_populate before the first page into EIO, and status 0 means no firmware status: a pending signal (EINTR), the page already populated (EEXIST) or not private (EINVAL), uaddr 0 or a source the kernel cannot read (sev_gmem_post_populate: EINVAL, EFAULT), an RMP entry not in its initial shared state or one RMPUPDATE refuses (sev_gmem_post_populate: EEXIST, EINVAL), a guest_memfd binding error or a folio that cannot be allocated or is poisoned (__kvm_gmem_get_pfn: EFAULT, EIO, ENOMEM, EHWPOISON), a PSP time-out or a dead PSP (drivers/crypto/ccp/sev-dev.c: __sev_do_cmd_locked: ETIMEDOUT, then EBUSY for every command), or a VM killed by KVM_BUG (virt/kvm/kvm_main.c: kvm_vm_ioctl answers EIO)";

/// What `EINVAL` from `KVM_SEV_SNP_LAUNCH_UPDATE` means (Linux 6.18.2).
const UPDATE_EINVAL_MEANS: &str = "arch/x86/kvm/svm/sev.c: snp_launch_update refuses before any page a launch not started, len 0 or not page-aligned, flags, a page type it does not take, and a start page outside a guest_memfd memslot";

/// What the CPUID comparison decided.
enum CpuidVerdict {
    /// Go on (nothing changed, or the firmware's table is to be sent).
    Go,
    /// Stop, with the summary of the difference.
    Stop(String),
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
            eio_zero: None,
            vcpus: 0,
            kernel_note: None,
        }
    }

    /// Attaches to a launch the VMM started itself through `ioctl` (which may borrow its VM fd
    /// and `/dev/sev`: [`crate::KvmSevRef`]): `at` says how far it got, and nothing is
    /// replayed. What that state forbids is still refused (a second `KVM_SEV_INIT2` or
    /// `LAUNCH_START`, vCPUs after `LAUNCH_FINISH`, ...). Refused: attaching at
    /// [`LaunchState::Created`] (use [`with_ioctl`](Self::with_ioctl)), at a finished or
    /// unrecoverable launch (nothing is left to do). The kernel's rules are the layer's
    /// ([`SevIoctl::kernel`]; [`KvmSevIoctl::for_running_kernel`] refuses a kernel older than
    /// 6.12).
    ///
    /// ```
    /// use sev_backend::testing::KernelModel;
    /// use sev_backend::{AttachState, Error, LaunchConfig, LaunchState, SnpBackend, StartParams};
    ///
    /// // The VMM issued KVM_SEV_INIT2 and LAUNCH_START itself (here, into the model).
    /// let mut vmm = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    /// vmm.init(&Default::default())?;
    /// vmm.start(&StartParams::default())?;
    /// let model = vmm.into_ioctl();
    /// let at = AttachState { state: LaunchState::Started, vcpus: 1 };
    /// let mut snp = SnpBackend::attach(model, LaunchConfig::default(), at)?;
    /// assert!(matches!(snp.start(&StartParams::default()), Err(Error::BadState { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn attach(ioctl: I, config: LaunchConfig, at: AttachState) -> Result<Self, Error> {
        let state = match at.state {
            LaunchState::Initialized | LaunchState::Started => None,
            LaunchState::Created => Some("created (nothing to attach to: use with_ioctl)"),
            LaunchState::Finished => Some("finished (nothing is left to do)"),
            LaunchState::Unrecoverable => Some("unrecoverable (tear the VM down)"),
        };
        if let Some(state) = state {
            return Err(Error::BadState {
                step: "attach",
                state,
            });
        }
        let mut b = SnpBackend::with_ioctl(ioctl, config);
        b.state = at.state;
        b.vcpus = at.vcpus;
        Ok(b)
    }

    /// What choosing the kernel version said, once: `Some` after [`SnpBackend::create`] (a
    /// release newer than every known one is [`KernelNote::NewerThanKnown`]); the caller logs
    /// it. `None` for a layer given by the caller, whose version is its own
    /// ([`SevIoctl::kernel`]).
    pub fn kernel_note(&self) -> Option<KernelNote> {
        self.kernel_note
    }

    /// The kernel whose rules are followed ([`SevIoctl::kernel`]).
    pub fn kernel(&self) -> KernelVersion {
        self.ioctl.kernel()
    }

    /// The vCPUs the VM has, as far as the backend knows.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// Creates vCPU `id` (`KVM_CREATE_VCPU`) through the ioctl layer. Only after
    /// `KVM_SEV_INIT2` and before `LAUNCH_FINISH`: before INIT2, a vCPU makes INIT2 fail
    /// (`arch/x86/kvm/svm/sev.c: __sev_guest_init`: `kvm->created_vcpus`, `EINVAL`) and gets no
    /// VMSA page (`sev_vcpu_create` allocates it only for an SEV-ES guest); after
    /// `LAUNCH_FINISH` its VMSA is never measured (`snp_launch_update_vmsa` runs only there),
    /// so it cannot run as a launched vCPU.
    pub fn create_vcpu(&mut self, id: u64) -> Result<(), Error> {
        match self.state {
            LaunchState::Created => {
                return Err(Error::MissingStep {
                    step: "KVM_CREATE_VCPU",
                    missing: "KVM_SEV_INIT2",
                    reason: "arch/x86/kvm/svm/sev.c: __sev_guest_init refuses a VM with vCPUs (EINVAL), and sev_vcpu_create gives a vCPU created before it no VMSA page".into(),
                })
            }
            LaunchState::Initialized | LaunchState::Started => {}
            _ => {
                return Err(Error::BadState {
                    step: "KVM_CREATE_VCPU",
                    state: "past KVM_SEV_SNP_LAUNCH_FINISH (arch/x86/kvm/svm/sev.c: snp_launch_update_vmsa measured the VMSAs there; a vCPU created now never is)",
                })
            }
        }
        self.ioctl.create_vcpu(id).map_err(|errno| Error::Os {
            op: format!("KVM_CREATE_VCPU({id})"),
            errno,
        })?;
        self.vcpus = self.vcpus.saturating_add(1);
        Ok(())
    }

    /// Records vCPUs the VMM created itself on the VM (after `KVM_SEV_INIT2`), so that
    /// [`finish`](Self::finish) knows they exist. Same states as [`create_vcpu`](Self::create_vcpu).
    pub fn vcpus_created(&mut self, n: u32) -> Result<(), Error> {
        match self.state {
            LaunchState::Initialized | LaunchState::Started => {
                self.vcpus = self.vcpus.saturating_add(n);
                Ok(())
            }
            LaunchState::Created => Err(Error::MissingStep {
                step: "KVM_CREATE_VCPU",
                missing: "KVM_SEV_INIT2",
                reason: "arch/x86/kvm/svm/sev.c: __sev_guest_init refuses a VM with vCPUs (EINVAL)".into(),
            }),
            _ => Err(Error::BadState {
                step: "KVM_CREATE_VCPU",
                state: "past KVM_SEV_SNP_LAUNCH_FINISH (arch/x86/kvm/svm/sev.c: snp_launch_update_vmsa measured the VMSAs there; a vCPU created now never is)",
            }),
        }
    }

    /// Sets the reader of the shared view that [`InPlaceMode::CopyBeforeConversion`] copies
    /// in-place content from.
    pub fn with_shared_view(mut self, reader: Box<dyn InPlaceReader + Send + Sync>) -> Self {
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

    /// Gives the ioctl layer back (with [`KvmSevIoctl`]: `into_parts()` gives the VM fd and
    /// the `/dev/sev` file, which must stay open while the VM lives; see its lifetime rule).
    pub fn into_ioctl(self) -> I {
        self.ioctl
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

    /// The backend's capabilities (as [`Backend::caps`]). In-place content is offered with
    /// [`InPlaceMode::CopyBeforeConversion`] and [`InPlaceMode::Kernel`]; with the latter,
    /// how it is populated is decided per run ([`Backend::in_place_populate`]).
    pub fn caps_now(&self) -> BackendCaps {
        let in_place = match self.config.in_place {
            InPlaceMode::Unsupported => false,
            InPlaceMode::Kernel | InPlaceMode::CopyBeforeConversion => true,
        };
        snp_caps(in_place, self.config.max_chunk)
    }

    fn expect(&self, want: LaunchState, step: &'static str) -> Result<(), Error> {
        if self.state == want {
            return Ok(());
        }
        // Behind: name the step that is missing (and why the kernel needs it).
        let missing = match (self.state, want) {
            (LaunchState::Created, _) => Some((
                "KVM_SEV_INIT2",
                "arch/x86/kvm/svm/sev.c: snp_launch_start and snp_launch_finish answer ENOTTY, snp_launch_update EINVAL, before the VM is an SNP guest",
            )),
            (LaunchState::Initialized, LaunchState::Started) => Some((
                "KVM_SEV_SNP_LAUNCH_START",
                "arch/x86/kvm/svm/sev.c: snp_launch_update and snp_launch_finish answer EINVAL without the guest context (sev->snp_context) LAUNCH_START creates",
            )),
            _ => None,
        };
        Err(match missing {
            Some((missing, reason)) => Error::MissingStep {
                step,
                missing,
                reason: reason.into(),
            },
            None => Error::BadState {
                step,
                state: self.state.name(),
            },
        })
    }

    /// `KVM_SEV_INIT2`. Refuses before the ioctl what `arch/x86/kvm/svm/sev.c:
    /// __sev_guest_init` (Linux 6.18.2) refuses for an SNP VM whatever the host: a GHCB version
    /// other than 0 (KVM's default, 2) or 2, and VMSA features 6.18 never offers (outside
    /// [`SNP_VMSA_FEATURES_KNOWN`]).
    pub fn init(&mut self, p: &InitParams) -> Result<(), Error> {
        self.expect(LaunchState::Created, "KVM_SEV_INIT2")?;
        let kernel = self.ioctl.kernel();
        let ghcb_ok = match p.ghcb_version {
            0 | 2 => true,
            1 => kernel.snp_ghcb_v1_allowed(),
            _ => false,
        };
        if !ghcb_ok {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_INIT2",
                field: "ghcb_version",
                value: u64::from(p.ghcb_version),
                reason: format!("arch/x86/kvm/svm/sev.c: __sev_guest_init ({kernel}) takes at most GHCB_VERSION_MAX (2){}: EINVAL", if kernel.snp_ghcb_v1_allowed() { "" } else { ", and an SNP guest at least 2 (0 means 2)" }),
            });
        }
        let known = kernel.vmsa_features_known();
        if p.vmsa_features & !known != 0 {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_INIT2",
                field: "vmsa_features",
                value: p.vmsa_features,
                reason: format!("arch/x86/kvm/svm/sev.c: __sev_guest_init ({kernel}) refuses features outside sev_supported_vmsa_features, which sev_hardware_setup makes at most {known:#x} (DEBUG_SWAP{}): EINVAL", if known & (1 << 9) != 0 { " | SECURE_TSC" } else { "" }),
            });
        }
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

    /// `KVM_SEV_SNP_LAUNCH_START`. Refuses before the ioctl a policy `arch/x86/kvm/svm/sev.c:
    /// snp_launch_start` (Linux 6.18.2) refuses: bits outside [`SNP_POLICY_MASK_VALID`], or
    /// [`SNP_POLICY_RESERVED_MBO`] clear.
    pub fn start(&mut self, p: &StartParams) -> Result<(), Error> {
        self.expect(LaunchState::Initialized, "KVM_SEV_SNP_LAUNCH_START")?;
        let kernel = self.ioctl.kernel();
        let mask = kernel.policy_mask();
        if p.policy & !mask != 0 {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_SNP_LAUNCH_START",
                field: "policy",
                value: p.policy,
                reason: format!("arch/x86/kvm/svm/sev.c: snp_launch_start ({kernel}) refuses bits outside {} ({mask:#x}): EINVAL", if kernel == KernelVersion::V7_3 { "KVM_SNP_POLICY_MASK_VALID, the most snp_supported_policy_bits can hold" } else { "SNP_POLICY_MASK_VALID" }),
            });
        }
        if kernel.policy_needs_smt_no_single_socket()
            && (p.policy & SNP_POLICY_SMT == 0 || p.policy & SNP_POLICY_SINGLE_SOCKET != 0)
        {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_SNP_LAUNCH_START",
                field: "policy",
                value: p.policy,
                reason: format!("arch/x86/kvm/svm/sev.c: snp_launch_start ({kernel}) requires SMT (bit 16) and refuses SINGLE_SOCKET (bit 20): EINVAL"),
            });
        }
        if p.policy & SNP_POLICY_RESERVED_MBO == 0 {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_SNP_LAUNCH_START",
                field: "policy",
                value: p.policy,
                reason: "arch/x86/kvm/svm/sev.c: snp_launch_start requires bit 17 (SNP_POLICY_MASK_RSVD_MBO): EINVAL".into(),
            });
        }
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
    ///
    /// In Linux 6.18.2 (`arch/x86/kvm/svm/sev.c: snp_launch_finish`) the VMSAs go to the
    /// firmware before the ID block is read, so a refusal there leaves a launch that cannot be
    /// finished. The backend therefore refuses before the ioctl an ID block without an ID
    /// authentication structure (the kernel: `EINVAL` from `psp_copy_user_blob`), and an ID
    /// authentication structure or author key without an ID block (the kernel ignores them);
    /// and any failure of the ioctl moves the launch to [`LaunchState::Unrecoverable`] with
    /// [`Error::Unrecoverable`].
    pub fn finish(&mut self, p: &FinishParams<'_>) -> Result<(), Error> {
        self.expect(LaunchState::Started, "KVM_SEV_SNP_LAUNCH_FINISH")?;
        if self.vcpus == 0 {
            return Err(Error::MissingStep {
                step: "KVM_SEV_SNP_LAUNCH_FINISH",
                missing: "KVM_CREATE_VCPU",
                reason: "arch/x86/kvm/svm/sev.c: snp_launch_finish measures the VMSA of every vCPU the VM has then (snp_launch_update_vmsa) and of none created later; a launch finished without vCPUs has no vCPU that can run (create them with create_vcpu, or record the VMM's with vcpus_created)".into(),
            });
        }
        if p.id_block.is_some() && p.id_auth.is_none() {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_SNP_LAUNCH_FINISH",
                field: "id_auth_uaddr",
                value: 0,
                reason: "an ID block needs its ID authentication structure: arch/x86/kvm/svm/sev.c: snp_launch_finish reads both when id_block_en is set, and drivers/crypto/ccp/sev-dev.c: psp_copy_user_blob refuses address 0 with EINVAL, after the VMSAs were measured".into(),
            });
        }
        if p.id_block.is_none() && (p.id_auth.is_some() || p.auth_key) {
            return Err(Error::InvalidParam {
                cmd: "KVM_SEV_SNP_LAUNCH_FINISH",
                field: if p.auth_key { "auth_key_en" } else { "id_auth_uaddr" },
                value: p.id_auth.map_or(u64::from(p.auth_key), |a| a.as_ptr() as u64),
                reason: "without an ID block, arch/x86/kvm/svm/sev.c: snp_launch_finish ignores the ID authentication structure and the author key".into(),
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
        if let Err(e) = self.ioctl.encrypt_op(SevCmd::LaunchFinish(&mut fin)) {
            self.state = LaunchState::Unrecoverable;
            let mut reason = String::from("arch/x86/kvm/svm/sev.c: snp_launch_finish (Linux 6.18.2) hands every vCPU's VMSA to the firmware (snp_launch_update_vmsa) before anything that can fail for parameters this backend sends, and a second LAUNCH_FINISH would hand them over again (or the VM is dead: virt/kvm/kvm_main.c: kvm_vm_ioctl answers EIO to everything); tear the VM down");
            if e.errno == libc::EINVAL && e.fw_error == 0 {
                reason.push_str("; EINVAL with status 0 here is sev_es_sync_vmsa refusing a vCPU with guest debugging (KVM_SET_GUEST_DEBUG) or DR7 bits set, after the VMSAs of the vCPUs before it were measured (none when it is vCPU 0)");
            }
            return Err(Error::Unrecoverable {
                cmd: "KVM_SEV_SNP_LAUNCH_FINISH",
                errno: e.errno,
                fw_code: e.fw_error,
                fw_name: fw_error_name(e.fw_error),
                reason,
            });
        }
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
                // The driver hands in-place chunks only where the kernel populates in place
                // (`Backend::in_place_populate`: ZeroSource); elsewhere `uaddr` 0 is what each
                // kernel answers (the model shows it), never a copy made here.
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
        let policy = self.config.cpuid;
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
            let what = format!(
                "KVM_SEV_SNP_LAUNCH_UPDATE of {} at GPA {at:#x} (+{:#x}, chunk {range})",
                ty.name(),
                before.len
            );
            match result {
                Ok(()) => {
                    let moved = before.len.wrapping_sub(p.len);
                    // ZERO pages: the kernel neither uses nor advances uaddr. In place (a
                    // content page sent with uaddr 0): it stays 0 (series v8 patch 22/46
                    // advances it only `if (src && type != ZERO)`).
                    let uaddr_ok = ty == PageType::Zero
                        || if before.uaddr == 0 {
                            p.uaddr == 0
                        } else {
                            p.uaddr == before.uaddr.wrapping_add(moved)
                        };
                    if p.len > before.len
                        || !moved.is_multiple_of(PAGE as u64)
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
                    if moved > 0 {
                        self.eio_zero = None;
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
                    // The call stopped early (a memslot's end, a signal, or a failing page
                    // whose error kvm_gmem_populate drops once pages were done). A CPUID page
                    // the firmware rejected is only visible as a changed source page.
                    if ty == PageType::Cpuid {
                        let next = p.gfn_start * PAGE as u64;
                        let off = ((p.gfn_start - first_gfn) * PAGE as u64) as usize;
                        let now = bounce.as_ref().map(Bounce::as_ref).unwrap_or(&[]);
                        let verdict = self.cpuid_verdict(
                            next,
                            page_at(original.as_deref(), off),
                            page_at(Some(now), off),
                            false,
                            &mut retried_cpuid,
                        );
                        if let CpuidVerdict::Stop(summary) = verdict {
                            return Populated::failed(
                                len - p.len,
                                BackendError::new(ErrorKind::Failed, format!(
                                    "KVM_SEV_SNP_LAUNCH_UPDATE of {} at GPA {next:#x}: the call succeeded with the pages before it, and the source page came back changed: arch/x86/kvm/svm/sev.c: sev_gmem_post_populate (Linux 6.18.2) writes the firmware's table there only when the firmware rejected it with SEV_RET_INVALID_PARAM (the status is dropped: kvm_gmem_populate returns the pages done); the firmware's table was not sent ({policy:?} policy): {summary}",
                                    ty.name()
                                ))
                                .with_platform(u64::from(SEV_RET_INVALID_PARAM), fw_error_name(SEV_RET_INVALID_PARAM)),
                            );
                        }
                    }
                }
                Err(e) => {
                    // On error the kernel does not copy the parameters back: `p` is unchanged.
                    p = before;
                    if ty == PageType::Cpuid
                        && e.errno == libc::EIO
                        && e.fw_error == SEV_RET_INVALID_PARAM
                    {
                        let off = ((before.gfn_start - first_gfn) * PAGE as u64) as usize;
                        let now = bounce.as_ref().map(Bounce::as_ref).unwrap_or(&[]);
                        let verdict = self.cpuid_verdict(
                            at,
                            page_at(original.as_deref(), off),
                            page_at(Some(now), off),
                            true,
                            &mut retried_cpuid,
                        );
                        match verdict {
                            CpuidVerdict::Go => continue,
                            CpuidVerdict::Stop(summary) => {
                                return Populated::failed(
                                    done,
                                    BackendError::from_errno(e.errno, format!(
                                        "{what}: the firmware rejected the CPUID table ({policy:?} policy): {summary}"
                                    ))
                                    .with_platform(u64::from(e.fw_error), fw_error_name(e.fw_error)),
                                );
                            }
                        }
                    }
                    if e.errno == libc::EIO
                        && e.fw_error == 0
                        && self.ioctl.vm_alive() == Some(false)
                    {
                        // virt/kvm/kvm_main.c: kvm_vm_ioctl answers EIO to everything on a VM
                        // KVM_BUG killed: not an interruption, and no page was done.
                        self.eio_zero = None;
                        let mut err = BackendError::new(
                            ErrorKind::Failed,
                            format!("{what}: EIO with firmware status 0, and the VM answers EIO to every ioctl: it is dead (virt/kvm/kvm_main.c: kvm_vm_ioctl, kvm->vm_dead set by KVM_BUG, e.g. arch/x86/kvm/svm/sev.c: snp_page_reclaim after a PSP failure); nothing was populated by this call; tear the VM down"),
                        );
                        err.errno = Some(e.errno);
                        return Populated::failed(done, err);
                    }
                    if e.errno == libc::EIO && e.fw_error == 0 {
                        let n = match self.eio_zero {
                            Some((g, n)) if g == at => n.saturating_add(1),
                            _ => 1,
                        };
                        let bound = self.config.max_eio_zero_retries;
                        let kind = if n > bound {
                            self.eio_zero = None;
                            ErrorKind::Failed
                        } else {
                            self.eio_zero = Some((at, n));
                            ErrorKind::Interrupted
                        };
                        let verdict = if kind == ErrorKind::Failed {
                            format!("giving up after {n} in a row (bound {bound} retries)")
                        } else {
                            format!("{n} in a row, retried as an interruption (bound {bound})")
                        };
                        let mut err = BackendError::new(
                            kind,
                            format!("{what}: EIO with firmware status 0 before any page, {verdict}: {EIO_ZERO_MEANS}"),
                        );
                        err.errno = Some(e.errno);
                        return Populated::failed(done, err);
                    }
                    let mut detail = what;
                    if e.errno == libc::EINVAL {
                        detail = format!("{detail}: {UPDATE_EINVAL_MEANS}");
                    }
                    let mut err = BackendError::from_errno(e.errno, detail);
                    if e.fw_error != 0 {
                        err = err.with_platform(u64::from(e.fw_error), fw_error_name(e.fw_error));
                    }
                    return Populated::failed(done, err);
                }
            }
        }
    }

    /// Compares the CPUID page `ours` (as sent) with `now` (the source page after the call)
    /// for the page at `gpa`, records the correction, and applies the policy. `status_seen`:
    /// the kernel returned `SEV_RET_INVALID_PARAM` (first page of a call); otherwise a changed
    /// page is the only sign of a rejection.
    fn cpuid_verdict(
        &mut self,
        gpa: u64,
        ours: &[u8],
        now: &[u8],
        status_seen: bool,
        retried: &mut Option<u64>,
    ) -> CpuidVerdict {
        let changed = ours != now;
        if !changed && !status_seen {
            return CpuidVerdict::Go;
        }
        let (diff, note) = if changed {
            match (parse_cpuid_table(ours), parse_cpuid_table(now)) {
                (Ok(a), Ok(b)) => (cpuid_diff(&a, &b), None),
                (a, b) => (
                    Vec::new(),
                    Some(format!(
                        "could not compare the tables: ours {:?}, firmware's {:?}",
                        a.err().map(|e| e.to_string()),
                        b.err().map(|e| e.to_string())
                    )),
                ),
            }
        } else {
            (
                Vec::new(),
                Some("the source page came back unchanged (arch/x86/kvm/svm/sev.c: sev_gmem_post_populate copies the firmware's table back only after snp_page_reclaim succeeded), so the firmware's values are unknown".to_string()),
            )
        };
        let policy = self.config.cpuid;
        let apply = policy == CpuidPolicy::UseFirmwareValues && changed && *retried != Some(gpa);
        let summary = describe_diff(&diff, note.as_deref());
        self.corrections.push(CpuidCorrection {
            gpa,
            diff,
            applied: apply,
            firmware_page: (policy == CpuidPolicy::ReportOnly).then(|| now.to_vec()),
            note,
        });
        if apply {
            *retried = Some(gpa);
            CpuidVerdict::Go
        } else {
            CpuidVerdict::Stop(summary)
        }
    }
}

/// The page at `off` of `buf` (empty when out of range).
fn page_at(buf: Option<&[u8]>, off: usize) -> &[u8] {
    buf.and_then(|b| b.get(off..off.checked_add(PAGE)?))
        .unwrap_or(&[])
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

    /// [`InPlaceMode::Kernel`]: [`InPlacePopulate::ZeroSource`] where the kernel populates in
    /// place ([`SevIoctl::in_place_populate`]), else [`InPlacePopulate::Unavailable`];
    /// otherwise the backend's own handling ([`InPlaceMode::CopyBeforeConversion`] copies the
    /// content out in [`Backend::make_private`]).
    fn in_place_populate(&self) -> InPlacePopulate {
        match self.config.in_place {
            InPlaceMode::Kernel if self.ioctl.in_place_populate() => InPlacePopulate::ZeroSource,
            InPlaceMode::Kernel => InPlacePopulate::Unavailable,
            _ => InPlacePopulate::Backend,
        }
    }
}
