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

/// What the CCA backend declares: 4 KiB granules, chunks up to 1 GiB kept hugepage-aligned,
/// no in-place content (granule delegation destroys it), memory made private by populate itself,
/// and the roles `measured`, `unmeasured` and `ripas` (`zero`, `secrets` and `cpuid` are refused).
///
/// A verifier validates a plan against it with `MemoryLayout::unbounded()`. A backend built with
/// [`CcaBackend::stage_in_place`] declares `in_place: true` instead.
pub const CCA_CAPS: BackendCaps = BackendCaps {
    granule: PAGE_SIZE,
    max_chunk: HUGE_1G,
    hugepage_chunks: true,
    in_place: false,
    conversion: Conversion::ByPopulate,
    roles: RoleSet::EMPTY
        .with(Role::Measured)
        .with(Role::Unmeasured)
        .with(Role::Ripas),
};

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
    /// Activated (explicitly for v11 and earlier; v12 and later on the first `KVM_RUN`).
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
/// RAM with no content: INIT_RIPAS_REALM for v11 and earlier; for v12 and later no call is
/// issued, as the kernel itself sets RIPAS RAM (on every guest_memfd memslot at activation in
/// v12, on each populated range in v13/v14) and the region is reported done.
pub struct CcaBackend<'s, I> {
    io: I,
    version: UapiVersion,
    cap: u32,
    state: RealmState,
    bounce: Option<SourceBuf>,
    stager: Option<InPlaceStager<'s>>,
}

fn err(errno: i32, detail: String) -> BackendError {
    BackendError::from_errno(errno, detail)
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

    /// Configures and creates the realm, before anything is populated.
    ///
    /// v11 and earlier: CONFIG_REALM with the RPV and the hash algorithm, then CREATE_REALM.
    /// v12 and later offer no configuration (the realm is created on the first populate):
    /// a non-zero RPV or a SHA-512 hash is refused with [`Error::NotOffered`].
    ///
    /// The IPA width goes in the VM type (`uapi::realm_vm_type`); SVE, PMU and debug
    /// resources are set through the vCPUs (features and ID registers), not here.
    pub fn configure(&mut self, realm: &RealmParams) -> Result<(), Error> {
        realm.validate()?;
        if self.state != RealmState::NotCreated {
            return Err(Error::WrongState {
                op: "configure",
                reason: "the realm is already created",
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
        self.state = RealmState::New;
        Ok(())
    }

    /// Activates the realm once populated (and its RECs created): ACTIVATE_REALM for v11 and
    /// earlier; v12 and later activate on the first `KVM_RUN`.
    pub fn activate(&mut self) -> Result<Activation, Error> {
        if self.state == RealmState::Active {
            return Err(Error::WrongState {
                op: "activate",
                reason: "the realm is already active",
            });
        }
        if self.version != UapiVersion::EnableCap {
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
            Err(errno) => Populated::failed(0, err(errno, what("refused"))),
            Ok(ret) if self.version.populate_in_out() => {
                let done = len.wrapping_sub(args.size);
                let consistent = ret == 0
                    && args.size <= len
                    && done % PAGE_SIZE == 0
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
                if ret < 0 || done > len || done % PAGE_SIZE != 0 {
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
                    format!("populating {:#x}: the realm is already active", chunk.gpa),
                ),
            );
        }
        if let ChunkSource::Bytes(b) = chunk.source {
            if b.as_ptr() as u64 % PAGE_SIZE == 0 && b.len() as u64 == chunk.len {
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

    fn populate_legacy(&mut self, chunk: &ChunkRequest<'_>, measured: bool) -> Populated {
        if self.state != RealmState::New {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "populating {:#x}: the realm must be created (configure) and not active",
                        chunk.gpa
                    ),
                ),
            );
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
                return Populated::failed(
                    off,
                    err(
                        errno,
                        format!(
                            "KVM_CAP_ARM_RME_POPULATE_REALM of [{gpa:#x}..+{n:#x}) failed; this kernel \
                             version reports no progress, so granules of this range may be populated \
                             (tear the realm down rather than resume)"
                        ),
                    ),
                );
            }
            off += n;
        }
        Populated::all(off)
    }

    fn init_ripas_legacy(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        if self.state != RealmState::New {
            return Populated::failed(
                0,
                BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "RIPAS init at {:#x}: the realm must be created (configure) and not active",
                        chunk.gpa
                    ),
                ),
            );
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
            ..CCA_CAPS
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
            // The kernel sets RIPAS RAM itself from v12 on: nothing to issue.
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
