//! The `cc-populate` backend for Arm CCA realms, and the launch steps around populate.

use std::borrow::Cow;

use cc_populate::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind,
    Populated, Role, RoleSet, SourceBuf, HUGE_1G, HUGE_2M, PAGE_SIZE,
};

use crate::ioctl::{CcaIoctl, Probe, RmeArg, UapiVersion};
use crate::params::{HashAlgo, RealmParams};
use crate::uapi::{
    self, ArmRmeConfig, ArmRmeInitRipas, ArmRmePopulateRealm, KvmArmRmiPopulate,
    KVM_ARM_RME_POPULATE_FLAGS_MEASURE, KVM_ARM_RMI_POPULATE_FLAGS_MEASURE,
};
use crate::Error;

/// What the CCA backend declares for the series' current form (v12 to v14, the default): 4 KiB
/// granules, chunks up to 1 GiB kept hugepage-aligned, no in-place content (granule delegation
/// destroys it), memory made private before populate (`kvm_gmem_populate` refuses pages that
/// are not `KVM_MEMORY_ATTRIBUTE_PRIVATE`), and the roles `measured`, `unmeasured` and `ripas`
/// (`zero`, `secrets` and `cpuid` are refused).
///
/// A verifier validates a plan against it with `MemoryLayout::unbounded()`. A backend built with
/// [`CcaBackend::stage_in_place`] declares `in_place: true` instead; one speaking v9 declares
/// [`CCA_CAPS_V9`].
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

/// [`CCA_CAPS`] for [`UapiVersion::EnableCap`] (v9): POPULATE_REALM delegates the granules
/// itself, so the driver converts nothing (`Conversion::ByPopulate`).
pub const CCA_CAPS_V9: BackendCaps = BackendCaps {
    conversion: Conversion::ByPopulate,
    ..CCA_CAPS
};

/// The caps a backend speaking `version` declares (without in-place staging).
pub fn cca_caps(version: UapiVersion) -> BackendCaps {
    if version.gmem_populate() {
        CCA_CAPS
    } else {
        CCA_CAPS_V9
    }
}

/// Bytes copied through the bounce buffer per populate call, when the source cannot be handed to
/// the kernel as it is (not page aligned, zeros, or staged in-place content).
pub const BOUNCE_SIZE: usize = HUGE_2M as usize;

/// Where a realm is in its launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealmState {
    /// Not created yet (v12 and later create it on the first populate).
    NotCreated,
    /// Created, being populated.
    New,
    /// Activated (explicitly for v9; v12 and later on the first `KVM_RUN`). From v12 on the
    /// kernel answers every later populate with `EBUSY`, for good.
    Active,
}

/// What [`CcaBackend::activate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// ACTIVATE_REALM was issued.
    Activated,
    /// The kernel activates the realm on the first `KVM_RUN` (v12 and later): nothing to issue.
    OnFirstRun,
}

/// Reads content written in place (in the shared view of guest memory) at a guest-physical
/// address into a buffer, for staging it through a source buffer.
pub type InPlaceStager<'s> = Box<dyn FnMut(u64, &mut [u8]) -> Result<(), String> + 's>;

/// The Arm CCA backend: populates plan chunks through the selected series version's ioctls and
/// runs the launch steps around them.
///
/// Role policy (named, as VMMs differ): `measured` = DATA_CREATE with content measured
/// (`KVM_ARM_RMI_POPULATE_FLAGS_MEASURE`), `unmeasured` = DATA_CREATE without, `ripas` = RIPAS
/// RAM with no content: INIT_RIPAS_REALM for v9; from v12 on no call is issued (the range is
/// only made private), as the kernel itself initialises RIPAS RAM over every guest_memfd
/// memslot at the first `KVM_RUN`, and the region is reported done.
///
/// Launch order from v12 on (the kernel creates the realm at the first populate and reads the
/// SVE and debug parameters from the vCPUs then): create the VM with
/// [`UapiVersion::realm_vm_type`], the guest_memfd memslots and every vCPU
/// (`KVM_ARM_VCPU_INIT` with PSCI 0.2, and SVE when the realm has it), then
/// [`CcaBackend::configure`] (required for v14), then the driver's run, then `KVM_RUN`.
pub struct CcaBackend<'s, I> {
    io: I,
    version: UapiVersion,
    cap: u32,
    state: RealmState,
    configured: Option<RealmParams>,
    bounce: Option<SourceBuf>,
    stager: Option<InPlaceStager<'s>>,
}

fn err(errno: i32, detail: String) -> BackendError {
    BackendError::from_errno(errno, detail)
}

/// `(field, shift)` of a 4-bit `ID_AA64DFR0_EL1` field.
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
        self.stager = Some(stager);
        self
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

    fn enable_cap(&mut self, op: &'static str, sub: u64, arg: RmeArg<'_>) -> Result<(), Error> {
        self.io
            .rme_enable_cap(self.cap, sub, arg)
            .map_err(|errno| Error::Ioctl { op, errno })
    }

    /// Configures the realm before anything is populated.
    ///
    /// v9: CONFIG_REALM with the RPV and the hash algorithm, then CREATE_REALM.
    ///
    /// v12 and later have no configuration call: the kernel creates the realm at the first
    /// populate from what it finds then (v14 28/44 `realm_create_rd`, 39/44, 41/44). This sets
    /// it up on every vCPU the ioctl layer reaches (at least one is required):
    ///
    /// - `num_bps` / `num_wps`: `ID_AA64DFR0_EL1.BRPs` / `.WRPs` (count - 1), lowered from the
    ///   host's value with `KVM_SET_ONE_REG` (`CTX_CMPs` lowered to at most `BRPs`); more than
    ///   the host offers is refused ([`Error::VcpuParam`]).
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
    pub fn configure(&mut self, realm: &RealmParams) -> Result<(), Error> {
        realm.validate()?;
        if self.state != RealmState::NotCreated || self.configured.is_some() {
            return Err(Error::WrongState {
                op: "configure",
                reason: "the realm is already configured or created",
            });
        }
        if self.version != UapiVersion::EnableCap {
            if realm.rpv != [0; 64] {
                return Err(Error::NotOffered {
                    what: "the realm personalization value",
                    version: self.version,
                });
            }
            if realm.hash != HashAlgo::Sha256 {
                return Err(Error::NotOffered {
                    what: "the measurement hash algorithm",
                    version: self.version,
                });
            }
            if realm.pmu_counters.is_some() {
                return Err(Error::NotOffered {
                    what: "the PMU counter count",
                    version: self.version,
                });
            }
            let n = self.io.vcpu_count();
            if n == 0 {
                return Err(Error::WrongState {
                    op: "configure",
                    reason:
                        "no vCPUs: create and initialise every vCPU first (the kernel reads the \
                             realm's SVE and debug parameters from them when it creates the realm \
                             at the first populate)",
                });
            }
            for vcpu in 0..n {
                self.configure_vcpu(vcpu, realm)?;
            }
            self.configured = Some(realm.clone());
            return Ok(());
        }
        let mut rpv = ArmRmeConfig::rpv(&realm.rpv);
        self.enable_cap(
            "KVM_CAP_ARM_RME_CONFIG_REALM(RPV)",
            uapi::KVM_CAP_ARM_RME_CONFIG_REALM,
            RmeArg::Config(&mut rpv),
        )?;
        let algo = match realm.hash {
            HashAlgo::Sha256 => uapi::ARM_RME_CONFIG_HASH_ALGO_SHA256,
            HashAlgo::Sha512 => uapi::ARM_RME_CONFIG_HASH_ALGO_SHA512,
        };
        let mut hash = ArmRmeConfig::hash_algo(algo);
        self.enable_cap(
            "KVM_CAP_ARM_RME_CONFIG_REALM(HASH_ALGO)",
            uapi::KVM_CAP_ARM_RME_CONFIG_REALM,
            RmeArg::Config(&mut hash),
        )?;
        self.enable_cap(
            "KVM_CAP_ARM_RME_CREATE_REALM",
            uapi::KVM_CAP_ARM_RME_CREATE_REALM,
            RmeArg::None,
        )?;
        self.configured = Some(realm.clone());
        self.state = RealmState::New;
        Ok(())
    }

    /// Records that the vCPUs already carry `realm`, set up by an earlier backend on the same VM
    /// (for a VMM that resumes a run with a new backend). Issues nothing; v12 and later only.
    pub fn adopt(&mut self, realm: &RealmParams) -> Result<(), Error> {
        realm.validate()?;
        if !self.version.gmem_populate() {
            return Err(Error::NotOffered {
                what: "adopting a configuration",
                version: self.version,
            });
        }
        self.configured = Some(realm.clone());
        Ok(())
    }

    /// Sets the debug and SVE parameters of `realm` on one vCPU.
    fn configure_vcpu(&mut self, vcpu: usize, realm: &RealmParams) -> Result<(), Error> {
        let io_err = |op: &'static str| move |errno| Error::VcpuIoctl { vcpu, op, errno };
        // Breakpoints and watchpoints: ID_AA64DFR0_EL1 (v14 39/44).
        let mut b = [0u8; 8];
        self.io
            .vcpu_get_one_reg(vcpu, uapi::KVM_REG_ID_AA64DFR0_EL1, &mut b)
            .map_err(io_err("KVM_GET_ONE_REG(ID_AA64DFR0_EL1)"))?;
        let host = u64::from_le_bytes(b);
        let mut dfr0 = host;
        for (field, want, shift) in [
            ("num_bps", realm.num_bps, uapi::DFR0_BRPS_SHIFT),
            ("num_wps", realm.num_wps, uapi::DFR0_WRPS_SHIFT),
        ] {
            let offered = dfr0_field(host, shift) + 1;
            if u64::from(want) > offered {
                return Err(Error::VcpuParam {
                    vcpu,
                    field,
                    value: want.into(),
                    reason: format!(
                        "ID_AA64DFR0_EL1 ({host:#x}) offers {offered}; the count can only be lowered"
                    ),
                });
            }
            dfr0 = (dfr0 & !(0xf << shift)) | ((u64::from(want) - 1) << shift);
        }
        let bps = dfr0_field(dfr0, uapi::DFR0_BRPS_SHIFT);
        if dfr0_field(dfr0, uapi::DFR0_CTX_CMPS_SHIFT) > bps {
            // set_id_aa64dfr0_el1 (v14 39/44): CTX_CMPs is never greater than BRPs.
            dfr0 =
                (dfr0 & !(0xf << uapi::DFR0_CTX_CMPS_SHIFT)) | (bps << uapi::DFR0_CTX_CMPS_SHIFT);
        }
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

    /// Activates the realm once populated (and its RECs created): ACTIVATE_REALM for v9; from
    /// v12 on the kernel activates on the first `KVM_RUN` (creating the RECs and initialising
    /// RIPAS then), so nothing is issued and the backend counts the realm as active: populating
    /// after it is refused without asking the kernel (which would answer `EBUSY` for good).
    pub fn activate(&mut self) -> Result<Activation, Error> {
        if self.state == RealmState::Active {
            return Err(Error::WrongState {
                op: "activate",
                reason: "the realm is already active",
            });
        }
        if self.version != UapiVersion::EnableCap {
            self.state = RealmState::Active;
            return Ok(Activation::OnFirstRun);
        }
        if self.state != RealmState::New {
            return Err(Error::WrongState {
                op: "activate",
                reason: "the realm was not created (call configure first)",
            });
        }
        self.enable_cap(
            "KVM_CAP_ARM_RME_ACTIVATE_REALM",
            uapi::KVM_CAP_ARM_RME_ACTIVATE_REALM,
            RmeArg::None,
        )?;
        self.state = RealmState::Active;
        Ok(Activation::Activated)
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
                            format!("source of chunk at {:#x} is shorter than the chunk", chunk.gpa),
                        )
                    })?;
                    buf.copy_from_slice(from);
                }
                ChunkSource::Zero => buf.fill(0),
                ChunkSource::InPlace => match stager.as_mut() {
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
                                "in-place content at {gpa:#x}+{len:#x}: Arm CCA delegation destroys it; \
                                 give a source or opt in to staging"
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
        let Some(request) = self.version.populate_request() else {
            return Populated::failed(0, BackendError::new(ErrorKind::Failed, "no populate ioctl"));
        };
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

    /// The v9 sub-commands work only on a created realm that is not yet active: the refusal
    /// otherwise, for `what` at `gpa`. Once ACTIVATE_REALM is done nothing can be added to the
    /// realm any more, so that refusal is unrecoverable.
    fn legacy_refusal(&self, what: &str, gpa: u64) -> Option<Populated> {
        if self.state == RealmState::New {
            return None;
        }
        let e = BackendError::new(
            ErrorKind::Failed,
            format!("{what} {gpa:#x}: the realm must be created (configure) and not active"),
        );
        let active = self.state == RealmState::Active;
        Some(Populated::failed(
            0,
            if active { e.unrecoverable() } else { e },
        ))
    }

    fn populate_legacy(&mut self, chunk: &ChunkRequest<'_>, measured: bool) -> Populated {
        if let Some(refused) = self.legacy_refusal("populating", chunk.gpa) {
            return refused;
        }
        // The kernel reports no partial progress: issue one call per 2 MiB-aligned piece (its
        // own internal step) so that what is reported done is exact.
        let mut off = 0;
        while off < chunk.len {
            let gpa = chunk.gpa + off;
            let to_boundary = HUGE_2M - gpa % HUGE_2M;
            let n = (chunk.len - off).min(to_boundary).min(BOUNCE_SIZE as u64);
            let staged = match chunk.source {
                ChunkSource::Bytes(b) => b
                    .get(off as usize..(off + n) as usize)
                    .map(|s| self.io.write_shared_alias(gpa, s).map_err(|e| (e, "")))
                    .unwrap_or(Err((libc::EINVAL, "source shorter than the chunk"))),
                _ => match self.stage(chunk, off, n) {
                    Ok(_) => match self.bounce.as_ref() {
                        Some(b) => self
                            .io
                            .write_shared_alias(gpa, &b.as_slice()[..n as usize])
                            .map_err(|e| (e, "")),
                        None => Err((libc::ENOMEM, "no source buffer")),
                    },
                    Err(e) => return Populated::failed(off, e),
                },
            };
            if let Err((errno, why)) = staged {
                return Populated::failed(
                    off,
                    err(
                        errno,
                        format!("writing the shared alias at [{gpa:#x}..+{n:#x}) {why}"),
                    ),
                );
            }
            let mut args = ArmRmePopulateRealm {
                base: gpa,
                size: n,
                flags: if measured {
                    KVM_ARM_RME_POPULATE_FLAGS_MEASURE
                } else {
                    0
                },
                reserved: [0; 3],
            };
            if let Err(errno) = self.io.rme_enable_cap(
                self.cap,
                uapi::KVM_CAP_ARM_RME_POPULATE_REALM,
                RmeArg::Populate(&mut args),
            ) {
                // v9 reports no progress: granules of this piece may be populated, and a retry
                // or resume would populate them again. Unrecoverable: tear the realm down. Only
                // a missing ioctl (ENOTTY and the like) certainly did nothing.
                let e = err(
                    errno,
                    format!(
                        "KVM_CAP_ARM_RME_POPULATE_REALM of [{gpa:#x}..+{n:#x}) failed; this kernel \
                         version reports no progress, so granules of this range may be populated \
                         (tear the realm down rather than resume)"
                    ),
                );
                let unsupported = e.kind == ErrorKind::Unsupported;
                return Populated::failed(off, if unsupported { e } else { e.unrecoverable() });
            }
            off += n;
        }
        Populated::all(off)
    }

    fn init_ripas_legacy(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        if let Some(refused) = self.legacy_refusal("RIPAS init at", chunk.gpa) {
            return refused;
        }
        let mut args = ArmRmeInitRipas {
            base: chunk.gpa,
            size: chunk.len,
            reserved: [0; 2],
        };
        match self.io.rme_enable_cap(
            self.cap,
            uapi::KVM_CAP_ARM_RME_INIT_RIPAS_REALM,
            RmeArg::InitRipas(&mut args),
        ) {
            Ok(()) => Populated::all(chunk.len),
            Err(errno) => Populated::failed(
                0,
                err(
                    errno,
                    format!(
                        "KVM_CAP_ARM_RME_INIT_RIPAS_REALM of [{:#x}..+{:#x})",
                        chunk.gpa, chunk.len
                    ),
                ),
            ),
        }
    }
}

impl<I: CcaIoctl> Backend for CcaBackend<'_, I> {
    fn caps(&self) -> BackendCaps {
        BackendCaps {
            in_place: self.stager.is_some(),
            ..cca_caps(self.version)
        }
    }

    /// v12 and later: `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` over the range, as
    /// `kvm_gmem_populate` refuses (EINVAL) every page that is not private. v9 never gets here
    /// (its caps say `ByPopulate`).
    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        if !self.version.gmem_populate() {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "[{gpa:#x}..+{len:#x}): {} populates from the shared alias; nothing to convert",
                        self.version
                    ),
                ),
            );
        }
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
            Role::Ripas if self.version == UapiVersion::EnableCap => {
                return self.init_ripas_legacy(chunk)
            }
            // The kernel initialises RIPAS RAM over every guest_memfd memslot at the first
            // KVM_RUN from v12 on (v12 21/46, v13 25/48, v14 27/44): nothing to issue.
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
        if self.version == UapiVersion::EnableCap {
            self.populate_legacy(chunk, measured)
        } else {
            self.populate_rmi(chunk, measured)
        }
    }
}
