//! The `cc-populate` backend for Arm CCA realms, and the launch steps around populate.

use std::borrow::Cow;

use cc_populate::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Content, Conversion, ErrorKind,
    Plan, Populated, Role, RoleSet, SourceBuf, HUGE_1G, HUGE_2M, PAGE_SIZE,
};

use crate::ioctl::{CcaIoctl, Probe};
use crate::params::{HashAlgo, RealmParams};
use crate::uapi::{self, KvmArmRmiPopulate, KVM_ARM_RMI_POPULATE_FLAGS_MEASURE};
use crate::version::UapiVersion;
use crate::Error;

/// What the CCA backend declares (series v12 to v14): 4 KiB
/// granules, chunks up to 1 GiB kept hugepage-aligned, no in-place content (granule delegation
/// destroys it), memory made private before populate (`kvm_gmem_populate` refuses pages that
/// are not `KVM_MEMORY_ATTRIBUTE_PRIVATE`), and the roles `measured`, `unmeasured` and `ripas`
/// (`zero`, `secrets` and `cpuid` are refused).
///
/// A verifier validates a plan against it with `MemoryLayout::unbounded()`. A backend built with
/// [`CcaBackend::stage_in_place`] declares `in_place: true` instead.
pub const CCA_CAPS: BackendCaps = BackendCaps {
    granule: PAGE_SIZE,
    max_chunk: HUGE_1G,
    hugepage_chunks: true,
    in_place: false,
    conversion: Conversion::BeforePopulate,
    roles: RoleSet::EMPTY
        .with(Role::Measured)
        .with(Role::Unmeasured)
        .with(Role::Ripas),
};

/// The caps a backend speaking `version` declares (without in-place staging): [`CCA_CAPS`] for
/// every supported version.
pub fn cca_caps(version: UapiVersion) -> BackendCaps {
    let _ = version;
    CCA_CAPS
}

/// Why Arm CCA cannot populate content in place, whatever the kernel's guest_memfd offers
/// (in-place conversion included): the series' populate (v12 20/46
/// `realm_create_protected_data_page`, v13/v14 `realm_data_map_init`) delegates each destination
/// granule to the realm (`RMI_GRANULE_DELEGATE`: the granule leaves the host's physical address
/// space, its contents destroyed for the host) and then has the RMM copy the data into it from a
/// source granule that stays the host's (`RMI_DATA_CREATE`'s `src`), so the source must be a
/// separate page.
pub const IN_PLACE_REFUSED: &str = "RMI_GRANULE_DELEGATE hands the destination granule to the \
    realm and destroys its contents for the host, and RMI_DATA_CREATE copies from a separate \
    source granule: content written in place cannot be kept; give it as a source, or opt in to \
    staging it into one (CcaBackend::stage_in_place)";

/// Bytes copied through the bounce buffer per populate call, when the source cannot be handed to
/// the kernel as it is (not page aligned, zeros, or staged in-place content).
pub const BOUNCE_SIZE: usize = HUGE_2M as usize;

/// Where a realm is in its launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealmState {
    /// Not created yet (the kernel creates it on the first populate).
    NotCreated,
    /// Created, being populated.
    New,
    /// Activated on the first `KVM_RUN`. The kernel answers every later populate with `EBUSY`,
    /// for good.
    Active,
}

/// What [`CcaBackend::activate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The kernel activates the realm on the first `KVM_RUN`: nothing to issue.
    OnFirstRun,
}

/// Reads content written in place (in the shared view of guest memory) at a guest-physical
/// address into a buffer, for staging it through a source buffer. `Send`, so the backend holding
/// it can move to another thread (a VMM's VM object is shared between threads).
pub type InPlaceStager<'s> = Box<dyn FnMut(u64, &mut [u8]) -> Result<(), String> + Send + 's>;

/// The Arm CCA backend: populates plan chunks through the selected series version's ioctls and
/// runs the launch steps around them.
///
/// Role policy (named, as VMMs differ): `measured` = DATA_CREATE with content measured
/// (`KVM_ARM_RMI_POPULATE_FLAGS_MEASURE`), `unmeasured` = DATA_CREATE without, `ripas` = RIPAS
/// RAM with no content: no call is issued (the range is only made private), as the kernel
/// itself initialises RIPAS RAM over every guest_memfd memslot at the first `KVM_RUN`, and the
/// region is reported done.
///
/// Launch order (the kernel creates the realm at the first populate and reads the SVE and
/// debug parameters from the vCPUs then): create the VM with [`UapiVersion::realm_vm_type`],
/// the guest_memfd memslots, every vCPU (`KVM_ARM_VCPU_INIT` with PSCI 0.2, and SVE when the
/// realm has it; vCPU **id** 0 is the one runnable REC) and the in-kernel vGIC (created and
/// initialised: `kvm_activate_realm` refuses a realm without one at the first `KVM_RUN`, and
/// v12 leaves the realm dead then), then [`CcaBackend::configure`] (required for v14), then the
/// driver's run, then [`CcaBackend::activate`], then `KVM_RUN`.
pub struct CcaBackend<'s, I> {
    io: I,
    version: UapiVersion,
    cap: u32,
    state: RealmState,
    configured: Option<RealmParams>,
    bounce: Option<SourceBuf>,
    // In a mutex so that the backend is `Sync` with a `FnMut` in it: it is only ever reached
    // through `&mut self` (`Mutex::get_mut`, no locking).
    stager: Option<std::sync::Mutex<InPlaceStager<'s>>>,
}

fn err(errno: i32, detail: String) -> BackendError {
    BackendError::from_errno(errno, detail)
}

/// Refuses what no v12-v14 kernel takes from userspace ([`Error::NotOffered`]): a non-zero
/// RPV, SHA-512 (the kernel leaves `hash_algo` 0 = SHA-256) and PMU counters.
fn not_offered(realm: &RealmParams, version: UapiVersion) -> Result<(), Error> {
    let what = if realm.rpv != [0; 64] {
        "the realm personalization value"
    } else if realm.hash != HashAlgo::Sha256 {
        "the measurement hash algorithm"
    } else if realm.pmu_counters.is_some() {
        "the PMU counter count"
    } else {
        return Ok(());
    };
    Err(Error::NotOffered { what, version })
}

/// The 4-bit `ID_AA64DFR0_EL1` field at `shift`.
fn dfr0_field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

impl<'s, I: CcaIoctl> CcaBackend<'s, I> {
    /// A backend issuing `io`'s ioctls with the version and capability `probe` found.
    pub fn new(io: I, probe: &Probe) -> Self {
        Self::with_version(io, probe.version, probe.cap)
    }

    /// A backend for an explicitly selected version and capability number.
    pub fn with_version(io: I, version: UapiVersion, cap: u32) -> Self {
        CcaBackend {
            io,
            version,
            cap,
            state: RealmState::NotCreated,
            configured: None,
            bounce: None,
            stager: None,
        }
    }

    /// Opts in to in-place content: before populating, the backend reads it with `stager` into
    /// its own source buffer (delegation would destroy it where it is). The backend then
    /// declares `in_place: true`.
    pub fn stage_in_place(mut self, stager: InPlaceStager<'s>) -> Self {
        self.stager = Some(std::sync::Mutex::new(stager));
        self
    }

    /// Refuses a plan with in-place content ([`cc_populate::Content::InPlace`]) unless the
    /// backend stages it ([`stage_in_place`](Self::stage_in_place)), with
    /// [`Error::InPlaceRefused`] naming the first such region and why ([`IN_PLACE_REFUSED`]):
    /// the typed refusal to give a VMM before it converts or populates anything.
    ///
    /// ```
    /// use cc_populate::{MemoryLayout, PlanBuilder, Role};
    /// use cca_backend::{CcaBackend, Error, HashAlgo, RealmParams, UapiVersion, CCA_CAPS};
    /// # use cca_backend::testing::KernelModel;
    /// # let model = KernelModel::new(UapiVersion::V14, RealmParams::new(HashAlgo::Sha256, 40));
    /// let b = CcaBackend::with_version(model, UapiVersion::V14, UapiVersion::V14.series_cap());
    /// // A verifier's caps allow in-place content; the backend says why it cannot do it.
    /// let caps = cc_populate::BackendCaps { in_place: true, ..CCA_CAPS };
    /// let plan = PlanBuilder::new()
    ///     .in_place(0x8000_0000, 0x1000, Role::Measured)
    ///     .build(&caps, &MemoryLayout::unbounded())?;
    /// let e = b.refuse_in_place(&plan).unwrap_err();
    /// assert!(matches!(e, Error::InPlaceRefused { region: 0, gpa: 0x8000_0000, .. }));
    /// assert!(e.to_string().contains("RMI_GRANULE_DELEGATE"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refuse_in_place(&self, plan: &Plan<'_>) -> Result<(), Error> {
        if self.stager.is_some() {
            return Ok(());
        }
        match plan
            .regions()
            .iter()
            .enumerate()
            .find(|(_, r)| matches!(r.content(), Content::InPlace))
        {
            Some((region, r)) => Err(Error::InPlaceRefused {
                region,
                gpa: r.gpa(),
                len: r.len(),
                reason: IN_PLACE_REFUSED,
            }),
            None => Ok(()),
        }
    }

    /// The capability number the backend was built with (from [`Probe`]).
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// The selected version.
    pub fn version(&self) -> UapiVersion {
        self.version
    }

    /// Where the realm is.
    pub fn state(&self) -> RealmState {
        self.state
    }

    /// The realm parameters [`CcaBackend::configure`] applied, if it ran.
    pub fn configured(&self) -> Option<&RealmParams> {
        self.configured.as_ref()
    }

    /// The ioctl layer (e.g. a test model's ledger).
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The ioctl layer, mutably.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Configures the realm before anything is populated.
    ///
    /// The series has no configuration call: the kernel creates the realm at the first populate
    /// from what it finds then (v14 28/44 `realm_create_rd`, 39/44, 41/44). This sets it up on
    /// every vCPU the ioctl layer reaches (at least one is required), after reading each vCPU's
    /// `ID_AA64DFR0_EL1`:
    ///
    /// - `num_bps`: must equal the host's breakpoint count (`ID_AA64DFR0_EL1.BRPs` + 1).
    ///   Mainline refuses any change of `BRPs` and `CTX_CMPs` ("just prevent changes to BRPs and
    ///   CTX_CMPs altogether", `arch/arm64/kvm/sys_regs.c`: neither field is in the writable
    ///   mask of `ID_AA64DFR0_EL1`, so `arm64_check_features` answers `EINVAL`; 6.12 through 7.3,
    ///   and no series version changes it), so the backend writes both back unchanged and
    ///   refuses another count ([`Error::VcpuParam`]). Read it with
    ///   [`RealmParams::set_debug_from_id_aa64dfr0`]: the RIM measures the host's count.
    /// - `num_wps`: `ID_AA64DFR0_EL1.WRPs` (count - 1), lowered from the host's value with
    ///   `KVM_SET_ONE_REG` (a writable field, lower is safe); more than the host offers is
    ///   refused ([`Error::VcpuParam`]).
    /// - `sve_vl`: `KVM_REG_ARM64_SVE_VLS` limited to the lengths up to `sve_vl`, then
    ///   `KVM_ARM_VCPU_FINALIZE(SVE)`. A vCPU initialised without SVE while `sve_vl` is set, or
    ///   with SVE while it is 0, is refused; a length the host lacks is refused.
    ///
    /// Refused with [`Error::NotOffered`] because no v12-v14 kernel takes them from userspace: a
    /// non-zero RPV or SHA-512 (the kernel leaves `hash_algo` 0 = SHA-256 in the zeroed
    /// parameters), and PMU counters (v14 drops realm PMU support; v12/v13 read them from a
    /// vCPU PMU this backend does not set up). LPA2 is the host kernel's choice
    /// (`kvm_lpa2_is_enabled()`); the backend cannot apply it and the caller states it. The IPA
    /// width is the VM type's ([`UapiVersion::realm_vm_type`]).
    ///
    /// ```
    /// use cca_backend::testing::{KernelModel, MODEL_HOST_DFR0};
    /// use cca_backend::{CcaBackend, Error, HashAlgo, RealmParams, UapiVersion};
    ///
    /// let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    /// let mut model = KernelModel::new(UapiVersion::V14, realm.clone());
    /// model.add_vcpus(1, false);
    /// let mut backend = CcaBackend::with_version(&mut model, UapiVersion::V14, 249);
    /// // A breakpoint count other than the host's is refused before anything is written...
    /// realm.num_bps = 2;
    /// assert!(matches!(backend.configure(&realm), Err(Error::VcpuParam { field: "num_bps", .. })));
    /// // ...the host's (read from the vCPU's ID_AA64DFR0_EL1) is taken; watchpoints may be lowered.
    /// realm.set_debug_from_id_aa64dfr0(MODEL_HOST_DFR0);
    /// realm.num_wps = 2;
    /// backend.configure(&realm)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn configure(&mut self, realm: &RealmParams) -> Result<(), Error> {
        realm.validate()?;
        if self.state != RealmState::NotCreated || self.configured.is_some() {
            return Err(Error::WrongState {
                op: "configure",
                reason: "the realm is already configured or created",
            });
        }
        not_offered(realm, self.version)?;
        let n = self.io.vcpu_count();
        if n == 0 {
            return Err(Error::WrongState {
                op: "configure",
                reason: "no vCPUs: create and initialise every vCPU first (the kernel reads the \
                         realm's SVE and debug parameters from them when it creates the realm \
                         at the first populate)",
            });
        }
        for vcpu in 0..n {
            self.configure_vcpu(vcpu, realm)?;
        }
        self.configured = Some(realm.clone());
        Ok(())
    }

    /// Attaches to a realm whose setup the VMM issued itself through `io` (which borrows its
    /// fds: [`KvmCcaIoctl`](crate::KvmCcaIoctl)): `state` says how far it got and `realm` what
    /// its vCPUs carry (the VMM set `ID_AA64DFR0_EL1`, the SVE lengths and finalized them, or
    /// an earlier populate created the realm from them). Nothing is replayed: no register is
    /// read or written, and [`configure`](Self::configure) is refused from then on.
    ///
    /// - [`RealmState::NotCreated`]: the vCPUs are configured, nothing populated yet;
    /// - [`RealmState::New`]: the kernel created the realm at an earlier populate (the VMM's
    ///   or another backend's); populating goes on (a granule populated again is the kernel's
    ///   `EEXIST` on v12, `ENXIO` on v13/v14, so the plan should hold only what is left).
    ///
    /// Refused ([`Error::WrongState`]): [`RealmState::Active`] (the first `KVM_RUN` happened:
    /// nothing can be populated, for good); and `realm` as [`configure`](Self::configure)
    /// would refuse it for the version ([`Error::InvalidParam`], [`Error::NotOffered`]).
    ///
    /// ```
    /// use cc_populate::{Backend, Driver, MemoryLayout, PlanBuilder, Role, SourceBuf};
    /// use cca_backend::testing::{KernelModel, MODEL_HOST_DFR0};
    /// use cca_backend::{CcaBackend, Error, HashAlgo, RealmParams, RealmState, UapiVersion};
    ///
    /// let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
    /// realm.set_debug_from_id_aa64dfr0(MODEL_HOST_DFR0);
    /// let mut model = KernelModel::new(UapiVersion::V14, realm.clone());
    /// model.add_memslot(0, 0, 1 << 30, true);
    /// model.add_vcpus(1, false);
    /// // The VMM configured its vCPUs itself (here through a first backend, then dropped).
    /// CcaBackend::with_version(&mut model, UapiVersion::V14, 249).configure(&realm)?;
    /// let mut be = CcaBackend::attach(&mut model, UapiVersion::V14, 249, RealmState::NotCreated, &realm)?;
    /// assert!(matches!(be.configure(&realm), Err(Error::WrongState { .. })));
    /// let data = SourceBuf::new(4096)?;
    /// let plan = PlanBuilder::new()
    ///     .source(0x20_0000, Role::Measured, data.as_slice())
    ///     .build(&be.caps(), &MemoryLayout::unbounded())?;
    /// assert!(Driver::new(&mut be).run(&plan)?.is_complete());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach(
        io: I,
        version: UapiVersion,
        cap: u32,
        state: RealmState,
        realm: &RealmParams,
    ) -> Result<Self, Error> {
        if state == RealmState::Active {
            return Err(Error::WrongState {
                op: "attach",
                reason: "the realm is active (its first KVM_RUN happened): nothing can be \
                         populated any more",
            });
        }
        realm.validate()?;
        not_offered(realm, version)?;
        let mut b = Self::with_version(io, version, cap);
        b.state = state;
        b.configured = Some(realm.clone());
        Ok(b)
    }

    /// Records that the vCPUs already carry `realm`, set up by an earlier backend on the same VM
    /// (for a VMM that resumes a run with a new backend). Issues nothing.
    pub fn adopt(&mut self, realm: &RealmParams) -> Result<(), Error> {
        realm.validate()?;
        self.configured = Some(realm.clone());
        Ok(())
    }

    /// Sets the debug and SVE parameters of `realm` on one vCPU.
    fn configure_vcpu(&mut self, vcpu: usize, realm: &RealmParams) -> Result<(), Error> {
        let io_err = |op: &'static str| move |errno| Error::VcpuIoctl { vcpu, op, errno };
        // Breakpoints and watchpoints: ID_AA64DFR0_EL1 (v14 39/44), read first.
        let mut b = [0u8; 8];
        self.io
            .vcpu_get_one_reg(vcpu, uapi::KVM_REG_ID_AA64DFR0_EL1, &mut b)
            .map_err(io_err("KVM_GET_ONE_REG(ID_AA64DFR0_EL1)"))?;
        let host = u64::from_le_bytes(b);
        // BRPs (and CTX_CMPs) are not writable (mainline arch/arm64/kvm/sys_regs.c,
        // ID_FILTERED(ID_AA64DFR0_EL1, ...) writable mask, 6.12-7.3): the realm gets the host's.
        let host_bps = dfr0_field(host, uapi::DFR0_BRPS_SHIFT) + 1;
        if u64::from(realm.num_bps) != host_bps {
            return Err(Error::VcpuParam {
                vcpu,
                field: "num_bps",
                value: realm.num_bps.into(),
                reason: format!(
                    "ID_AA64DFR0_EL1 ({host:#x}) has {host_bps} breakpoints and the kernel refuses \
                     any change of BRPs or CTX_CMPs (sys_regs.c); give the host's count \
                     (RealmParams::set_debug_from_id_aa64dfr0)"
                ),
            });
        }
        let offered = dfr0_field(host, uapi::DFR0_WRPS_SHIFT) + 1;
        if u64::from(realm.num_wps) > offered {
            return Err(Error::VcpuParam {
                vcpu,
                field: "num_wps",
                value: realm.num_wps.into(),
                reason: format!(
                    "ID_AA64DFR0_EL1 ({host:#x}) offers {offered}; the count can only be lowered"
                ),
            });
        }
        let shift = uapi::DFR0_WRPS_SHIFT;
        let dfr0 = (host & !(0xf << shift)) | ((u64::from(realm.num_wps) - 1) << shift);
        self.io
            .vcpu_set_one_reg(vcpu, uapi::KVM_REG_ID_AA64DFR0_EL1, &dfr0.to_le_bytes())
            .map_err(io_err("KVM_SET_ONE_REG(ID_AA64DFR0_EL1)"))?;
        // SVE: KVM_REG_ARM64_SVE_VLS then finalize (v14 41/44 realm_init_sve_param).
        let mut vls = [0u8; 64];
        let has_sve = match self
            .io
            .vcpu_get_one_reg(vcpu, uapi::KVM_REG_ARM64_SVE_VLS, &mut vls)
        {
            Ok(()) => true,
            Err(libc::ENOENT) => false,
            Err(errno) => {
                return Err(Error::VcpuIoctl {
                    vcpu,
                    op: "KVM_GET_ONE_REG(KVM_REG_ARM64_SVE_VLS)",
                    errno,
                })
            }
        };
        match (realm.sve_vl, has_sve) {
            (0, false) => Ok(()),
            (0, true) => Err(Error::VcpuParam {
                vcpu,
                field: "sve_vl",
                value: 0,
                reason: "the vCPU was initialised with KVM_ARM_VCPU_SVE; the kernel would give \
                         the realm SVE"
                    .into(),
            }),
            (vl, false) => Err(Error::VcpuParam {
                vcpu,
                field: "sve_vl",
                value: vl.into(),
                reason: "the vCPU was initialised without KVM_ARM_VCPU_SVE".into(),
            }),
            (vl, true) => {
                let vq = usize::from(vl / 128);
                let bit = |v: &[u8; 64], q: usize| v[(q - 1) / 8] & (1 << ((q - 1) % 8)) != 0;
                if !bit(&vls, vq) {
                    return Err(Error::VcpuParam {
                        vcpu,
                        field: "sve_vl",
                        value: vl.into(),
                        reason:
                            "the host does not offer this vector length (KVM_REG_ARM64_SVE_VLS)"
                                .into(),
                    });
                }
                for q in vq + 1..=512 {
                    vls[(q - 1) / 8] &= !(1 << ((q - 1) % 8));
                }
                self.io
                    .vcpu_set_one_reg(vcpu, uapi::KVM_REG_ARM64_SVE_VLS, &vls)
                    .map_err(io_err("KVM_SET_ONE_REG(KVM_REG_ARM64_SVE_VLS)"))?;
                self.io
                    .vcpu_finalize(vcpu, uapi::KVM_ARM_VCPU_SVE)
                    .map_err(io_err("KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE)"))
            }
        }
    }

    /// Ends the launch on the backend's side once populated: the kernel activates the realm on
    /// the first `KVM_RUN` (`kvm_activate_realm`: creating the RECs and initialising RIPAS
    /// then), so nothing is issued and the backend counts the realm as active: populating after
    /// it is refused without asking the kernel (which would answer `EBUSY` for good).
    ///
    /// A realm needs an in-kernel vGIC: `kvm_activate_realm` answers the first `KVM_RUN` of a
    /// VM without one with `EOPNOTSUPP`, and on v12 (11/46) only after marking the realm dead,
    /// for good. When the ioctl layer can tell ([`CcaIoctl::in_kernel_vgic`]) and there is none,
    /// this refuses with [`Error::WrongState`] and the realm stays populatable.
    pub fn activate(&mut self) -> Result<Activation, Error> {
        if self.state == RealmState::Active {
            return Err(Error::WrongState {
                op: "activate",
                reason: "the realm is already active",
            });
        }
        if self.io.in_kernel_vgic() == Some(false) {
            return Err(Error::WrongState {
                op: "activate",
                reason: "the VM has no in-kernel vGIC: create and initialise one \
                         (KVM_CREATE_DEVICE, KVM_DEV_ARM_VGIC_CTRL_INIT) before the first KVM_RUN; \
                         without it kvm_activate_realm refuses the run (and v12 leaves the realm \
                         dead)",
            });
        }
        self.state = RealmState::Active;
        Ok(Activation::OnFirstRun)
    }

    fn bounce(&mut self) -> Result<&mut SourceBuf, BackendError> {
        if self.bounce.is_none() {
            let b = SourceBuf::new(BOUNCE_SIZE).map_err(|e| {
                BackendError::new(
                    ErrorKind::Failed,
                    format!("allocating the {BOUNCE_SIZE:#x}-byte source buffer: {e}"),
                )
            })?;
            self.bounce = Some(b);
        }
        self.bounce
            .as_mut()
            .ok_or_else(|| BackendError::new(ErrorKind::Failed, "no source buffer"))
    }

    /// Fills the bounce buffer with `len` bytes of the chunk from `off`, returns its address.
    fn stage(&mut self, chunk: &ChunkRequest<'_>, off: u64, len: u64) -> Result<u64, BackendError> {
        let gpa = chunk.gpa + off;
        let n = len as usize;
        let source = chunk.source;
        let mut stager = self.stager.take();
        let result = (|| {
            let buf = &mut self.bounce()?.as_mut_slice()[..n];
            match source {
                ChunkSource::Bytes(b) => {
                    let from = b.get(off as usize..off as usize + n).ok_or_else(|| {
                        BackendError::new(
                            ErrorKind::Failed,
                            format!(
                                "source of chunk at {:#x} is shorter than the chunk",
                                chunk.gpa
                            ),
                        )
                    })?;
                    buf.copy_from_slice(from);
                }
                ChunkSource::Zero => buf.fill(0),
                ChunkSource::InPlace => match stager.as_mut().map(|m| {
                    // Never locked, so never poisoned; a poisoned one still holds the stager.
                    m.get_mut().unwrap_or_else(|p| p.into_inner())
                }) {
                    Some(read) => read(gpa, buf).map_err(|e| {
                        BackendError::new(
                            ErrorKind::Failed,
                            format!("staging in-place content at {gpa:#x}+{len:#x}: {e}"),
                        )
                    })?,
                    None => {
                        return Err(BackendError::new(
                            ErrorKind::Unsupported,
                            format!(
                                "in-place content at {gpa:#x}+{len:#x} refused on Arm CCA: \
                                 {IN_PLACE_REFUSED}"
                            ),
                        ))
                    }
                },
            }
            Ok(buf.as_ptr() as u64)
        })();
        self.stager = stager;
        result
    }

    /// One `KVM_ARM_RMI_POPULATE` (v12 and later) of `len` bytes at `gpa` from `src`.
    fn rmi_populate(&mut self, gpa: u64, len: u64, src: u64, measured: bool) -> Populated {
        let request = self.version.populate_request();
        let mut args = KvmArmRmiPopulate {
            base: gpa,
            size: len,
            source_uaddr: src,
            flags: if measured {
                KVM_ARM_RMI_POPULATE_FLAGS_MEASURE
            } else {
                0
            },
            reserved: 0,
        };
        let what = |detail: &str| {
            format!(
                "KVM_ARM_RMI_POPULATE ({}) of [{gpa:#x}..+{len:#x}){}: {detail}",
                self.version,
                if measured { " measured" } else { "" }
            )
        };
        match self.io.rmi_populate(request, &mut args) {
            // realm_ensure_created (v12 22/46, v13 26/48, v14 28/44): once the realm is active
            // every populate is EBUSY, for good. Not a "busy, try again": unrecoverable (never
            // retried, and a report stopped by it cannot be resumed).
            Err(libc::EBUSY) => {
                self.state = RealmState::Active;
                Populated::failed(
                    0,
                    err(
                        libc::EBUSY,
                        what(
                            "EBUSY: the realm is already active (the first KVM_RUN activated it); \
                             the kernel refuses every populate from now on",
                        ),
                    )
                    .unrecoverable(),
                )
            }
            Err(libc::EINVAL) => Populated::failed(
                0,
                err(
                    libc::EINVAL,
                    what(
                        "EINVAL: the range must lie in a guest_memfd memslot and be private \
                         (KVM_SET_MEMORY_ATTRIBUTES) page by page (kvm_gmem_populate); before the \
                         realm exists, every SVE vCPU must also be finalized with one vector length",
                    ),
                ),
            ),
            // v13/v14 (on 7.0/7.1, whose kvm_gmem_populate has no "already prepared" check):
            // realm_data_map_init delegates the granule again, which fails for one already
            // populated, and answers -ENXIO, as for a granule the RMM refuses or a dead realm.
            Err(libc::ENXIO) if self.version.populate_in_out() => Populated::failed(
                0,
                err(
                    libc::ENXIO,
                    what(
                        "ENXIO: the RMM refused the granule's delegation or data mapping, the \
                         granule is already populated (realm_data_map_init delegates it again), \
                         or the realm is dead",
                    ),
                ),
            ),
            Err(libc::ENXIO) => Populated::failed(
                0,
                err(
                    libc::ENXIO,
                    what(
                        "ENXIO: the RMM refused the granule's delegation \
                         (realm_create_protected_data_page), or the realm is dead",
                    ),
                ),
            ),
            Err(libc::EEXIST) => Populated::failed(
                0,
                err(
                    libc::EEXIST,
                    what("EEXIST: the granule is already populated (kvm_gmem_populate)"),
                ),
            ),
            Err(errno) => Populated::failed(0, err(errno, what("refused"))),
            Ok(ret) if self.version.populate_in_out() => {
                let done = len.wrapping_sub(args.size);
                let consistent = ret == 0
                    && args.size <= len
                    && done.is_multiple_of(PAGE_SIZE)
                    && args.base == gpa.wrapping_add(done)
                    && args.source_uaddr == src.wrapping_add(done);
                if !consistent {
                    return Populated::failed(
                        0,
                        BackendError::new(
                            ErrorKind::Failed,
                            what(&format!(
                                "the kernel returned {ret} and left base {:#x} size {:#x} source {:#x}, \
                                 which is not progress from the request",
                                args.base, args.size, args.source_uaddr
                            )),
                        ),
                    );
                }
                self.state = RealmState::New;
                Populated::all(done)
            }
            Ok(ret) => {
                let done = ret as u64;
                if ret < 0 || done > len || !done.is_multiple_of(PAGE_SIZE) {
                    return Populated::failed(
                        0,
                        BackendError::new(
                            ErrorKind::Failed,
                            what(&format!("the kernel returned {ret} bytes, not possible")),
                        ),
                    );
                }
                self.state = RealmState::New;
                Populated::all(done)
            }
        }
    }

    fn populate_rmi(&mut self, chunk: &ChunkRequest<'_>, measured: bool) -> Populated {
        if self.state == RealmState::Active {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "populating [{:#x}..+{:#x}): the realm is already active; the kernel \
                         refuses populate after the first KVM_RUN (EBUSY)",
                        chunk.gpa, chunk.len
                    ),
                )
                .unrecoverable(),
            );
        }
        if self.version == UapiVersion::V14 && self.configured.is_none() {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "populating [{:#x}..+{:#x}): v14 creates the realm at the first populate \
                         and reads its SVE and debug parameters from the vCPUs then; create and \
                         initialise every vCPU and call configure first",
                        chunk.gpa, chunk.len
                    ),
                ),
            );
        }
        if let ChunkSource::Bytes(b) = chunk.source {
            if (b.as_ptr() as u64).is_multiple_of(PAGE_SIZE) && b.len() as u64 == chunk.len {
                return self.rmi_populate(chunk.gpa, chunk.len, b.as_ptr() as u64, measured);
            }
        }
        // Through the bounce buffer, piece by piece, while each piece completes.
        let mut off = 0;
        while off < chunk.len {
            let n = (chunk.len - off).min(BOUNCE_SIZE as u64);
            let src = match self.stage(chunk, off, n) {
                Ok(s) => s,
                Err(e) => return Populated::failed(off, e),
            };
            let p = self.rmi_populate(chunk.gpa + off, n, src, measured);
            off += p.done;
            if p.result.is_err() || p.done < n {
                return Populated {
                    done: off,
                    result: p.result,
                };
            }
        }
        Populated::all(off)
    }
}

impl<I: CcaIoctl> Backend for CcaBackend<'_, I> {
    fn caps(&self) -> BackendCaps {
        BackendCaps {
            in_place: self.stager.is_some(),
            ..cca_caps(self.version)
        }
    }

    /// `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` over the range, as `kvm_gmem_populate` refuses
    /// (EINVAL) every page that is not private.
    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        match self.io.set_private(gpa, len) {
            Ok(()) => Populated::all(len),
            Err(errno) => Populated::failed(
                0,
                err(
                    errno,
                    format!("KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) [{gpa:#x}..+{len:#x})"),
                ),
            ),
        }
    }

    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Borrowed(match role {
            Role::Measured => "DATA_CREATE (measured)",
            Role::Unmeasured => "DATA_CREATE (unmeasured)",
            Role::Ripas => "RTT_INIT_RIPAS",
            _ => "refused",
        })
    }

    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        let measured = match chunk.role {
            Role::Measured => true,
            Role::Unmeasured => false,
            // The kernel initialises RIPAS RAM over every guest_memfd memslot at the first
            // KVM_RUN (v12 21/46, v13 25/48, v14 27/44): nothing to issue.
            Role::Ripas => return Populated::all(chunk.len),
            role => {
                return Populated::failed(
                    0,
                    BackendError::new(
                        ErrorKind::Unsupported,
                        format!(
                            "[{:#x}..+{:#x}): role {role} is refused on Arm CCA",
                            chunk.gpa, chunk.len
                        ),
                    ),
                )
            }
        };
        self.populate_rmi(chunk, measured)
    }
}
