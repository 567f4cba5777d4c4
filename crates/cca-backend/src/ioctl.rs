//! The ioctl layer: series versions, capability discovery, and the trait every CCA ioctl goes
//! through (the real one on a VM fd, or a model in tests).

use std::fmt;

use crate::uapi::{
    self, ArmRmeConfig, ArmRmeInitRipas, ArmRmePopulateRealm, KvmArmRmiPopulate,
    KVM_CAP_ARM_RME_V9, KVM_CAP_ARM_RMI_V12, KVM_CAP_ARM_RMI_V13, KVM_CAP_ARM_RMI_V14,
};
use crate::Error;

/// Which version of the Arm CCA KVM series' user ABI to speak. Deployed kernels carry different
/// versions, so the caller selects one; [`UapiVersion::default`] is the newest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UapiVersion {
    /// v11 and earlier: `KVM_ENABLE_CAP(KVM_CAP_ARM_RME)` sub-commands (CONFIG_REALM,
    /// CREATE_REALM, INIT_RIPAS_REALM, POPULATE_REALM from the memslot's shared alias,
    /// ACTIVATE_REALM). Populate reports no partial progress.
    EnableCap,
    /// v12: `KVM_ARM_RMI_POPULATE` (`_IOW`) returning the bytes populated; realm created on
    /// first populate and activated on first `KVM_RUN`; no RIPAS or configuration calls.
    V12,
    /// v13: as v14 (a different capability number).
    V13,
    /// v14: `KVM_ARM_RMI_POPULATE` (`_IOWR`) with an in/out struct the kernel advances, 0 on
    /// success; the destination is set to RIPAS RAM implicitly.
    #[default]
    V14,
}

impl UapiVersion {
    /// The version a kernel series number (`v<N>`) speaks, if this crate knows it.
    pub fn from_series(n: u32) -> Option<UapiVersion> {
        match n {
            5..=11 => Some(UapiVersion::EnableCap),
            12 => Some(UapiVersion::V12),
            13 => Some(UapiVersion::V13),
            14 => Some(UapiVersion::V14),
            _ => None,
        }
    }

    /// The capability number the version's patches give, used when the kernel does not export
    /// the live one ([`uapi::KVM_CAP_ARM_RMI_SYSFS`]). For [`UapiVersion::EnableCap`] this is the
    /// v9 number; v10 and v11 differ: pass theirs to [`probe_with`].
    pub fn series_cap(self) -> u32 {
        match self {
            UapiVersion::EnableCap => KVM_CAP_ARM_RME_V9,
            UapiVersion::V12 => KVM_CAP_ARM_RMI_V12,
            UapiVersion::V13 => KVM_CAP_ARM_RMI_V13,
            UapiVersion::V14 => KVM_CAP_ARM_RMI_V14,
        }
    }

    /// Whether the populate struct is in/out (v13 and later).
    pub fn populate_in_out(self) -> bool {
        matches!(self, UapiVersion::V13 | UapiVersion::V14)
    }

    /// The `KVM_ARM_RMI_POPULATE` request number (`None` for [`UapiVersion::EnableCap`]).
    pub fn populate_request(self) -> Option<u64> {
        match self {
            UapiVersion::EnableCap => None,
            UapiVersion::V12 => Some(uapi::KVM_ARM_RMI_POPULATE_V12),
            UapiVersion::V13 | UapiVersion::V14 => Some(uapi::KVM_ARM_RMI_POPULATE_V13),
        }
    }
}

impl fmt::Display for UapiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UapiVersion::EnableCap => "v11-and-earlier (KVM_ENABLE_CAP)",
            UapiVersion::V12 => "v12",
            UapiVersion::V13 => "v13",
            UapiVersion::V14 => "v14",
        })
    }
}

/// The argument of a `KVM_ENABLE_CAP(KVM_CAP_ARM_RME)` sub-command (`args[1]`).
#[derive(Debug)]
pub enum RmeArg<'a> {
    /// No argument (CREATE_REALM, ACTIVATE_REALM).
    None,
    /// CONFIG_REALM.
    Config(&'a mut ArmRmeConfig),
    /// INIT_RIPAS_REALM.
    InitRipas(&'a mut ArmRmeInitRipas),
    /// POPULATE_REALM.
    Populate(&'a mut ArmRmePopulateRealm),
}

/// Every CCA ioctl the backend issues. The real implementation is [`KvmCcaIoctl`]; tests use a
/// model of the kernel (`testing::KernelModel`, feature `test-utils`).
///
/// Errors are the ioctl's errno (positive).
pub trait CcaIoctl {
    /// VM ioctl `KVM_ARM_RMI_POPULATE` with request number `request`; the ioctl's return value
    /// (bytes populated for v12, 0 from v13 on, when the kernel advanced `args`).
    fn rmi_populate(&mut self, request: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32>;

    /// `KVM_ENABLE_CAP` with `cap`, `args[0] = sub` and `args[1]` pointing at `arg`.
    fn rme_enable_cap(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32>;

    /// Writes `bytes` into the memslot's shared (userspace) alias at `gpa`: v11 and earlier
    /// populate from there.
    fn write_shared_alias(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), i32>;
}

impl<T: CcaIoctl + ?Sized> CcaIoctl for &mut T {
    fn rmi_populate(&mut self, request: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        (**self).rmi_populate(request, args)
    }
    fn rme_enable_cap(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32> {
        (**self).rme_enable_cap(cap, sub, arg)
    }
    fn write_shared_alias(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), i32> {
        (**self).write_shared_alias(gpa, bytes)
    }
}

/// Writes bytes into the shared alias of guest memory at a guest-physical address (the VMM's
/// mapping of the memslot's `userspace_addr`), for [`UapiVersion::EnableCap`] populate.
pub type SharedAliasWriter<'v> = Box<dyn FnMut(u64, &[u8]) -> std::io::Result<()> + 'v>;

/// The real ioctls, on a realm VM's fd. The ioctls are issued on arm64 hosts only; elsewhere
/// every call fails with `ENOTTY` without reaching the kernel (the numbers may mean something
/// else to another architecture's KVM).
pub struct KvmCcaIoctl<'v> {
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    vm: &'v kvm_ioctls::VmFd,
    shared: Option<SharedAliasWriter<'v>>,
}

impl<'v> KvmCcaIoctl<'v> {
    /// The ioctls of `vm`.
    pub fn new(vm: &'v kvm_ioctls::VmFd) -> Self {
        KvmCcaIoctl { vm, shared: None }
    }

    /// Sets how to write the memslot's shared alias (needed for [`UapiVersion::EnableCap`]).
    pub fn with_shared_alias(mut self, writer: SharedAliasWriter<'v>) -> Self {
        self.shared = Some(writer);
        self
    }
}

impl CcaIoctl for KvmCcaIoctl<'_> {
    fn rmi_populate(&mut self, request: u64, args: &mut KvmArmRmiPopulate) -> Result<i32, i32> {
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: `args` is a valid, exclusively borrowed `struct kvm_arm_rmi_populate`
            // (32 bytes, layout pinned in `uapi` tests) that outlives the call; the kernel reads
            // it and, from v13 on, writes the same 32 bytes back. `source_uaddr` points at memory
            // the caller keeps alive for the call (the backend's borrowed chunk or its bounce
            // buffer); the kernel only reads it.
            let ret = unsafe {
                vmm_sys_util::ioctl::ioctl_with_mut_ref(self.vm, request as libc::c_ulong, args)
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

    fn rme_enable_cap(&mut self, cap: u32, sub: u64, arg: RmeArg<'_>) -> Result<(), i32> {
        let ptr = match arg {
            RmeArg::None => 0,
            RmeArg::Config(c) => c as *mut ArmRmeConfig as u64,
            RmeArg::InitRipas(r) => r as *mut ArmRmeInitRipas as u64,
            RmeArg::Populate(p) => p as *mut ArmRmePopulateRealm as u64,
        };
        #[cfg(target_arch = "aarch64")]
        {
            let enable = kvm_bindings::kvm_enable_cap {
                cap,
                args: [sub, ptr, 0, 0],
                ..Default::default()
            };
            self.vm.enable_cap(&enable).map_err(|e| e.errno())
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = (cap, sub, ptr);
            Err(libc::ENOTTY)
        }
    }

    fn write_shared_alias(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), i32> {
        match self.shared.as_mut() {
            Some(w) => w(gpa, bytes).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
            None => Err(libc::EFAULT),
        }
    }
}

/// Where the capability number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapSource {
    /// The kernel's `kvm_cap_arm_rmi` module parameter.
    ModuleParam,
    /// The number the selected series version's patches give.
    SeriesNumber,
    /// Given by the caller.
    Caller,
}

/// What probing found: CCA realms are available through this capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The capability number (`KVM_CAP_ARM_RMI`, or `KVM_CAP_ARM_RME` for v11 and earlier).
    pub cap: u32,
    /// Where the number came from.
    pub cap_source: CapSource,
    /// The version the caller selected.
    pub version: UapiVersion,
}

/// Probes this machine's KVM for Arm CCA realm support speaking `version`.
///
/// The capability number is taken from the `kvm_cap_arm_rmi` module parameter when the kernel
/// exports it, else from the version's patches. On a host that is not arm64 nothing is asked of
/// the kernel (capability numbers of an out-of-tree series may mean something else there).
///
/// ```
/// # let Ok(kvm) = kvm_ioctls::Kvm::new() else { return };
/// match cca_backend::probe(&kvm, cca_backend::UapiVersion::V14) {
///     Ok(p) => println!("CCA realms via capability {}", p.cap),
///     Err(e) => println!("{e}"), // e.g. on x86_64: not supported
/// }
/// ```
pub fn probe(kvm: &kvm_ioctls::Kvm, version: UapiVersion) -> Result<Probe, Error> {
    let param = std::fs::read_to_string(uapi::KVM_CAP_ARM_RMI_SYSFS).ok();
    probe_with(
        &|cap| kvm.check_extension_raw(cap.into()),
        param.as_deref(),
        None,
        cfg!(target_arch = "aarch64"),
        version,
    )
}

/// [`probe`] with its inputs given: `check_extension` asks `KVM_CHECK_EXTENSION`, `module_param`
/// is the content of the `kvm_cap_arm_rmi` parameter (if the kernel has one), `cap` a number the
/// caller knows (taking precedence), `arm64` whether the host is arm64.
pub fn probe_with(
    check_extension: &dyn Fn(u32) -> i32,
    module_param: Option<&str>,
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
    let (cap, cap_source) = match (cap, module_param.map(str::trim)) {
        (Some(c), _) => (c, CapSource::Caller),
        (None, Some(p)) => match p.parse::<u32>() {
            Ok(c) => (c, CapSource::ModuleParam),
            Err(_) => {
                return Err(Error::NotSupported {
                    reason: format!(
                        "{} holds {p:?}, not a capability number",
                        uapi::KVM_CAP_ARM_RMI_SYSFS
                    ),
                })
            }
        },
        (None, None) => (version.series_cap(), CapSource::SeriesNumber),
    };
    match check_extension(cap) {
        r if r > 0 => Ok(Probe {
            cap,
            cap_source,
            version,
        }),
        r => Err(Error::NotSupported {
            reason: format!(
                "KVM_CHECK_EXTENSION({cap}) = {r} (capability number from {}; selected ABI {version})",
                match cap_source {
                    CapSource::ModuleParam => "the kvm_cap_arm_rmi module parameter",
                    CapSource::SeriesNumber => "the series patches",
                    CapSource::Caller => "the caller",
                }
            ),
        }),
    }
}
