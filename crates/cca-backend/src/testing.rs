//! An in-process model of the CCA series' populate behaviour, for tests without CCA hardware.
//!
//! [`KernelModel`] implements [`CcaIoctl`] the way the series documents and implements it, per
//! version:
//!
//! - v13/v14 `KVM_ARM_RMI_POPULATE`: `-EINVAL` for a non-zero `reserved`, unknown flags, an
//!   unaligned or wrapping range, an unaligned or null source, or a range reaching the unprotected
//!   half of the IPA space; the realm is created on the first call; `-EBUSY` once active; then
//!   granule by granule like `kvm_gmem_populate`: it stops early (at a pending signal, at the
//!   model's per-call limit, at a failing granule) and returns the granules done if any, the
//!   error only when none were done (`-EINTR` for a signal, `-EEXIST` for a granule already
//!   populated, `-ENXIO` for an RMM failure, `-EAGAIN` when busy). Progress is written back
//!   into the struct (`base`, `size`, `source_uaddr` advanced) and 0 returned.
//! - v12: the same, but the struct is left alone and the bytes done are returned.
//! - v11 and earlier (`KVM_ENABLE_CAP`): CONFIG_REALM / CREATE_REALM / INIT_RIPAS_REALM /
//!   POPULATE_REALM (from the shared alias, all or nothing as far as the caller can tell: on a
//!   failure the granules before it stay populated and nothing says so) / ACTIVATE_REALM.
//!
//! The model keeps its own ledger of populated granules and computes the RIM as the RMM would
//! (in the order it saw the operations), so tests can compare the driver's report and the
//! offline [`measure`](crate::measure) with it. The RMM's status of a failure is kept in
//! [`KernelModel::rmm_errors`] (the series does not pass it to userspace).

use std::collections::{BTreeMap, VecDeque};

use crate::ioctl::{CcaIoctl, RmeArg, UapiVersion};
use crate::measure::{hash, Measurement, Rim, RimDigest};
use crate::params::{HashAlgo, RealmParams, RecParams};
use crate::uapi::{self, KvmArmRmiPopulate};

const PAGE: u64 = 4096;

/// A fault injected into the next populate call (popped one per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A signal becomes pending after this many granules of the call.
    Signal {
        /// Granules done before it.
        after: u64,
    },
    /// The call returns `-EAGAIN` before doing anything.
    Busy,
    /// The call "succeeds" without progress (a kernel bug a caller must not spin on).
    NoProgress,
}

/// The model's state of the realm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelRealm {
    /// Not created.
    None,
    /// Created (REALM_NEW).
    New,
    /// Activated.
    Active,
}

/// One populated granule in the model's ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granule {
    /// Whether DATA_CREATE measured it.
    pub measured: bool,
    /// The hash of its content (with the realm's algorithm), when the model read it.
    pub content: Option<Measurement>,
}

/// One ioctl the model received, with the exact bytes of its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The ioctl request number (`KVM_ARM_RMI_POPULATE_*` or `KVM_ENABLE_CAP`).
    pub request: u64,
    /// For `KVM_ENABLE_CAP`: `(cap, args[0])`.
    pub enable_cap: Option<(u32, u64)>,
    /// The argument struct's bytes as sent.
    pub bytes: Vec<u8>,
    /// The errno returned, or `None` on success.
    pub errno: Option<i32>,
}

/// The kernel model. Construct it with the realm parameters the RMM will see.
#[derive(Debug)]
pub struct KernelModel {
    /// The version it speaks.
    pub version: UapiVersion,
    /// The capability number it answers to.
    pub cap: u32,
    /// The realm's parameters (for the RMM's RIM and the protected-range check).
    pub realm: RealmParams,
    /// The realm's state.
    pub state: ModelRealm,
    /// Faults for the next populate calls.
    pub faults: VecDeque<Fault>,
    /// Granules whose DATA_CREATE the RMM fails, with the RMI status code it returns.
    pub failing: BTreeMap<u64, u64>,
    /// At most this many granules per populate call (the kernel may stop early at will).
    pub max_granules_per_call: u64,
    /// Every populated granule by address.
    pub ledger: BTreeMap<u64, Granule>,
    /// DATA_CREATE order: every granule address in the order it was populated.
    pub order: Vec<u64>,
    /// Granules whose RIPAS was initialised to RAM (explicitly, v11 and earlier).
    pub ripas: BTreeMap<u64, u64>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// RMM failures seen: `(granule address, RMI status)`.
    pub rmm_errors: Vec<(u64, u64)>,
    /// The shared alias of guest memory (v11 and earlier populate from it), by granule.
    pub shared: BTreeMap<u64, Vec<u8>>,
    /// The realm's hash algorithm as configured (v11 and earlier) or assumed.
    pub hash: HashAlgo,
    /// The realm personalization value as configured.
    pub rpv: [u8; 64],
    rim: Option<RimDigest>,
    read_sources: bool,
}

impl KernelModel {
    /// A model of `version` for a realm with `realm`'s parameters.
    pub fn new(version: UapiVersion, realm: RealmParams) -> Self {
        KernelModel {
            version,
            cap: version.series_cap(),
            hash: realm.hash,
            rpv: [0; 64],
            realm,
            state: ModelRealm::None,
            faults: VecDeque::new(),
            failing: BTreeMap::new(),
            max_granules_per_call: u64::MAX,
            ledger: BTreeMap::new(),
            order: Vec::new(),
            ripas: BTreeMap::new(),
            calls: Vec::new(),
            rmm_errors: Vec::new(),
            shared: BTreeMap::new(),
            rim: None,
            read_sources: false,
        }
    }

    /// Lets the model read the source of `KVM_ARM_RMI_POPULATE` calls to hash their content.
    ///
    /// # Safety
    ///
    /// Every `source_uaddr` given to this model's [`CcaIoctl::rmi_populate`] from now on must
    /// point at `size` readable bytes that stay valid and unmodified for the call, as
    /// [`CcaBackend`](crate::CcaBackend) guarantees.
    pub unsafe fn read_sources(&mut self) {
        self.read_sources = true;
    }

    /// The RIM as the modelled RMM computed it so far (after `recs` are added with
    /// [`KernelModel::create_rec`]), or `None` before the realm exists.
    pub fn rim(&self) -> Option<Rim> {
        self.rim.as_ref().map(RimDigest::current)
    }

    /// Models RMI_REC_CREATE of a REC (done through vCPU ioctls the model does not cover).
    pub fn create_rec(&mut self, rec: &RecParams) {
        if let Some(r) = self.rim.as_mut() {
            r.rec(rec);
        }
    }

    /// Bytes populated in all.
    pub fn populated_bytes(&self) -> u64 {
        self.ledger.len() as u64 * PAGE
    }

    /// Bytes populated inside `[gpa, gpa + len)`.
    pub fn populated_in(&self, gpa: u64, len: u64) -> u64 {
        self.ledger.range(gpa..gpa.saturating_add(len)).count() as u64 * PAGE
    }

    fn create(&mut self) {
        let mut realm = self.realm.clone();
        realm.hash = self.hash;
        self.rim = RimDigest::new(&realm).ok();
        self.state = ModelRealm::New;
    }

    /// DATA_CREATE of granules from `gpa`, `content(i)` giving granule `i`'s bytes. Returns
    /// granules done and the error that stopped it (errno).
    fn data_create(
        &mut self,
        gpa: u64,
        granules: u64,
        measured: bool,
        signal_after: Option<u64>,
        content: &dyn Fn(u64) -> Option<Vec<u8>>,
    ) -> (u64, Option<i32>) {
        let limit = granules.min(self.max_granules_per_call.max(1));
        for i in 0..limit {
            if signal_after == Some(i) {
                return (i, Some(libc::EINTR));
            }
            let at = gpa + i * PAGE;
            if self.ledger.contains_key(&at) {
                return (i, Some(libc::EEXIST));
            }
            if let Some(status) = self.failing.get(&at) {
                self.rmm_errors.push((at, *status));
                return (i, Some(libc::ENXIO));
            }
            let bytes = content(i);
            let h = bytes.as_deref().map(|b| hash(self.hash, b));
            if let Some(r) = self.rim.as_mut() {
                match (measured, h.as_ref()) {
                    (true, Some(h)) => r.data_granule_hashed(at, Some(h)),
                    (true, None) => {}
                    (false, _) => r.data_granule_hashed(at, None),
                }
            }
            self.ledger.insert(
                at,
                Granule {
                    measured,
                    content: h,
                },
            );
            self.order.push(at);
        }
        (limit, None)
    }

    fn rmi(&mut self, request: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        let expected = self.version.populate_request().ok_or(libc::ENOTTY)?;
        if request != expected {
            return Err(libc::ENOTTY);
        }
        let in_out = self.version.populate_in_out();
        let end = args.base.checked_add(args.size);
        if args.reserved != 0
            || args.flags & !uapi::KVM_ARM_RMI_POPULATE_FLAGS_MEASURE != 0
            || args.base % PAGE != 0
            || args.size % PAGE != 0
            || end.is_none()
            || (in_out && (args.source_uaddr % PAGE != 0 || args.source_uaddr == 0))
            || end.is_some_and(|e| e > self.realm.protected_limit())
        {
            return Err(libc::EINVAL);
        }
        match self.state {
            ModelRealm::None => self.create(),
            ModelRealm::New => {}
            ModelRealm::Active => return Err(libc::EBUSY),
        }
        let fault = self.faults.pop_front();
        match fault {
            Some(Fault::Busy) => return Err(libc::EAGAIN),
            Some(Fault::NoProgress) => return Ok(0),
            _ => {}
        }
        if args.size == 0 {
            return Ok(0);
        }
        let signal_after = match fault {
            Some(Fault::Signal { after }) => Some(after),
            _ => None,
        };
        let src = args.source_uaddr;
        let read = self.read_sources;
        let content = move |i: u64| -> Option<Vec<u8>> {
            if !read {
                return None;
            }
            // SAFETY: `read_sources` was enabled through its unsafe setter, whose caller
            // guaranteed that `source_uaddr` points at `size` readable bytes for this call;
            // `i < size / 4096`.
            let s =
                unsafe { std::slice::from_raw_parts((src + i * PAGE) as *const u8, PAGE as usize) };
            Some(s.to_vec())
        };
        let measured = args.flags & uapi::KVM_ARM_RMI_POPULATE_FLAGS_MEASURE != 0;
        let (done, error) = self.data_create(
            args.base,
            args.size / PAGE,
            measured,
            signal_after,
            &content,
        );
        if done == 0 {
            if let Some(e) = error {
                return Err(e);
            }
        }
        let bytes = done * PAGE;
        if in_out {
            args.base += bytes;
            args.size -= bytes;
            args.source_uaddr += bytes;
            Ok(0)
        } else {
            Ok(bytes as i32)
        }
    }

    fn legacy(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32> {
        if self.version != UapiVersion::EnableCap || cap != self.cap {
            return Err(libc::EINVAL);
        }
        match (sub, arg) {
            (uapi::KVM_CAP_ARM_RME_CONFIG_REALM, RmeArg::Config(c)) => {
                if self.state != ModelRealm::None {
                    return Err(libc::EBUSY);
                }
                match c.cfg {
                    uapi::ARM_RME_CONFIG_RPV => self.rpv.copy_from_slice(&c.data[..64]),
                    uapi::ARM_RME_CONFIG_HASH_ALGO => {
                        self.hash =
                            match u32::from_le_bytes([c.data[0], c.data[1], c.data[2], c.data[3]]) {
                                uapi::ARM_RME_CONFIG_HASH_ALGO_SHA256 => HashAlgo::Sha256,
                                uapi::ARM_RME_CONFIG_HASH_ALGO_SHA512 => HashAlgo::Sha512,
                                _ => return Err(libc::EINVAL),
                            }
                    }
                    _ => return Err(libc::EINVAL),
                }
                Ok(())
            }
            (uapi::KVM_CAP_ARM_RME_CREATE_REALM, RmeArg::None) => {
                if self.state != ModelRealm::None {
                    return Err(libc::EEXIST);
                }
                self.create();
                Ok(())
            }
            (uapi::KVM_CAP_ARM_RME_INIT_RIPAS_REALM, RmeArg::InitRipas(r)) => {
                if self.state != ModelRealm::New {
                    return Err(libc::EPERM);
                }
                let end = r.base.checked_add(r.size).ok_or(libc::EINVAL)?;
                if r.base % PAGE != 0 || r.size % PAGE != 0 || r.size == 0 {
                    return Err(libc::EINVAL);
                }
                if end > self.realm.protected_limit() {
                    return Err(libc::EINVAL);
                }
                // RMI_RTT_INIT_RIPAS needs entries with no data yet.
                if self.ledger.range(r.base..end).next().is_some() {
                    return Err(libc::EPERM);
                }
                if let Some(rim) = self.rim.as_mut() {
                    rim.ripas_range(r.base, end).map_err(|_| libc::EINVAL)?;
                }
                self.ripas.insert(r.base, end);
                Ok(())
            }
            (uapi::KVM_CAP_ARM_RME_POPULATE_REALM, RmeArg::Populate(p)) => {
                if self.state != ModelRealm::New {
                    return Err(libc::EPERM);
                }
                let end = p.base.checked_add(p.size).ok_or(libc::EINVAL)?;
                if p.base % PAGE != 0
                    || p.size % PAGE != 0
                    || p.flags & !uapi::KVM_ARM_RME_POPULATE_FLAGS_MEASURE != 0
                    || end > self.realm.protected_limit()
                {
                    return Err(libc::EINVAL);
                }
                let fault = self.faults.pop_front();
                if fault == Some(Fault::Busy) {
                    return Err(libc::EAGAIN);
                }
                let signal_after = match fault {
                    Some(Fault::Signal { after }) => Some(after),
                    _ => None,
                };
                let measured = p.flags & uapi::KVM_ARM_RME_POPULATE_FLAGS_MEASURE != 0;
                let shared = self.shared.clone();
                let base = p.base;
                let content = move |i: u64| -> Option<Vec<u8>> {
                    Some(
                        shared
                            .get(&(base + i * PAGE))
                            .cloned()
                            .unwrap_or_else(|| vec![0; PAGE as usize]),
                    )
                };
                let saved = self.max_granules_per_call;
                self.max_granules_per_call = u64::MAX;
                let (done, error) =
                    self.data_create(p.base, p.size / PAGE, measured, signal_after, &content);
                self.max_granules_per_call = saved;
                match error {
                    // The granules before the failure stay populated; the caller is not told.
                    Some(e) => Err(e),
                    None if done * PAGE == p.size => Ok(()),
                    None => Err(libc::EIO),
                }
            }
            (uapi::KVM_CAP_ARM_RME_ACTIVATE_REALM, RmeArg::None) => {
                if self.state != ModelRealm::New {
                    return Err(libc::EPERM);
                }
                self.state = ModelRealm::Active;
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }
}

fn arg_bytes(arg: &RmeArg<'_>) -> Vec<u8> {
    match arg {
        RmeArg::None => Vec::new(),
        RmeArg::Config(c) => {
            let mut v = c.cfg.to_le_bytes().to_vec();
            v.extend_from_slice(&c.data);
            v
        }
        RmeArg::InitRipas(r) => [r.base, r.size, r.reserved[0], r.reserved[1]]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        RmeArg::Populate(p) => {
            let mut v = Vec::with_capacity(32);
            v.extend_from_slice(&p.base.to_le_bytes());
            v.extend_from_slice(&p.size.to_le_bytes());
            v.extend_from_slice(&p.flags.to_le_bytes());
            for r in p.reserved {
                v.extend_from_slice(&r.to_le_bytes());
            }
            v
        }
    }
}

impl CcaIoctl for KernelModel {
    fn rmi_populate(&mut self, request: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        let bytes = args.to_bytes().to_vec();
        let r = self.rmi(request, args);
        self.calls.push(Call {
            request,
            enable_cap: None,
            bytes,
            errno: r.err(),
        });
        r
    }

    fn rme_enable_cap(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32> {
        let bytes = arg_bytes(&arg);
        let r = self.legacy(cap, sub, arg);
        self.calls.push(Call {
            request: uapi::KVM_ENABLE_CAP,
            enable_cap: Some((cap, sub)),
            bytes,
            errno: r.err(),
        });
        r
    }

    fn write_shared_alias(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), i32> {
        if gpa % PAGE != 0 || bytes.len() as u64 % PAGE != 0 {
            return Err(libc::EINVAL);
        }
        for (i, page) in bytes.chunks(PAGE as usize).enumerate() {
            self.shared.insert(gpa + i as u64 * PAGE, page.to_vec());
        }
        Ok(())
    }
}
