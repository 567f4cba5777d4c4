//! The series versions the crate speaks and their `KVM_ARM_RMI_POPULATE` requests: plain data,
//! compiled without the KVM crates (the measurement-only build needs
//! [`UapiVersion::rmm_rules`]).

use std::fmt;

use crate::uapi::{self, KVM_CAP_ARM_RMI_V12, KVM_CAP_ARM_RMI_V13, KVM_CAP_ARM_RMI_V14};
use crate::{Error, RmmVersion};

/// Which version of the Arm CCA KVM series' user ABI to speak. Deployed kernels carry different
/// versions, so the caller selects one; [`UapiVersion::default`] is the newest. Only versions
/// whose numbers were read in their own patches and whose launch the crate follows whole are
/// offered; [`UapiVersion::from_series`] refuses the others by name. v9 (the
/// `KVM_ENABLE_CAP(KVM_CAP_ARM_RME)` form) was dropped: see [`UapiVersion::from_series`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UapiVersion {
    /// v12: `KVM_ARM_RMI_POPULATE` (`_IOW`) returning the bytes populated; realm created on
    /// first populate, RECs, RIPAS and activation on the first `KVM_RUN`.
    V12,
    /// v13: as v14 but capability 248 and the realm VM type at bit 8.
    V13,
    /// v14: `KVM_ARM_RMI_POPULATE` (`_IOWR`) with an in/out struct the kernel advances, 0 on
    /// success; realm VM type at bit 30.
    #[default]
    V14,
}

impl UapiVersion {
    /// The version a kernel series number (`v<N>`) speaks. Refused with
    /// [`Error::UnsupportedVersion`]: v9 (dropped: a 2025 series no current host runs, whose
    /// launch the crate never made whole: it created no REC, applied none of the debug, SVE and
    /// PMU parameters to the vCPUs, and its capability number 243 is mainline 6.18's
    /// `KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED`), versions whose capability number this crate
    /// could not read in their patches (v5 to v8, v10, v11), v15 and v16 (their patch text
    /// could not be read: nothing of them is implemented unverified), and anything else.
    ///
    /// ```
    /// use cca_backend::{Error, UapiVersion};
    /// assert_eq!(UapiVersion::from_series(14)?, UapiVersion::V14);
    /// assert!(matches!(UapiVersion::from_series(11), Err(Error::UnsupportedVersion { series: 11, .. })));
    /// assert!(matches!(UapiVersion::from_series(9), Err(Error::UnsupportedVersion { series: 9, .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_series(n: u32) -> Result<UapiVersion, Error> {
        match n {
            12 => Ok(UapiVersion::V12),
            13 => Ok(UapiVersion::V13),
            14 => Ok(UapiVersion::V14),
            9 => Err(Error::UnsupportedVersion {
                series: n,
                reason: "v9 (KVM_ENABLE_CAP, capability 243) was dropped: no current host runs \
                         it, its REC creation and vCPU parameters were never implemented, and \
                         mainline 6.18+ gives 243 to KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED",
            }),
            5..=8 | 10 | 11 => Err(Error::UnsupportedVersion {
                series: n,
                reason: "its capability number was not read in its patches",
            }),
            15 | 16 => Err(Error::UnsupportedVersion {
                series: n,
                reason: "the text of its patches (v15 2026-07-15, 37 patches; v16 2026-08-03, \
                         45 patches) could not be read, only their subjects: its capability \
                         number, VM type and memory model are not verified (see the README)",
            }),
            _ => Err(Error::UnsupportedVersion {
                series: n,
                reason: "this crate knows v12, v13 and v14 of the series",
            }),
        }
    }

    /// The capability number the version's own patches give (v12 247, v13 248, v14 249).
    pub fn series_cap(self) -> u32 {
        match self {
            UapiVersion::V12 => KVM_CAP_ARM_RMI_V12,
            UapiVersion::V13 => KVM_CAP_ARM_RMI_V13,
            UapiVersion::V14 => KVM_CAP_ARM_RMI_V14,
        }
    }

    /// Whether the populate struct is in/out (v13 and later).
    pub fn populate_in_out(self) -> bool {
        matches!(self, UapiVersion::V13 | UapiVersion::V14)
    }

    /// The `KVM_ARM_RMI_POPULATE` request this version speaks.
    pub fn populate_request(self) -> PopulateRequest {
        match self {
            UapiVersion::V12 => PopulateRequest::V12,
            UapiVersion::V13 | UapiVersion::V14 => PopulateRequest::V13,
        }
    }

    /// The RIM rule sets ([`RmmVersion`]) a firmware this series version runs on may follow,
    /// the one its firmware branch had first. Which one applies is a property of the firmware
    /// build, not of the series, so [`MeasureOptions::for_series`](crate::MeasureOptions::for_series)
    /// takes it as a separate choice:
    ///
    /// - v12 targets RMM 1.0 (its cover letter: "this series is still targetting RMM v1.0"):
    ///   RTT_INIT_RIPAS measured.
    /// - v13 targets an RMM 2.0 draft, but its firmware branch predates TF-RMM commit
    ///   `bdb07f46` (2026-04-28, "feat(runtime): align RMI_RTT_INIT_RIPAS to RMMv2.0"), which
    ///   stopped measuring RTT_INIT_RIPAS: a v13 host measures RIPAS ([`RmmVersion::V1_0`]
    ///   rules) on that branch, and not ([`RmmVersion::V2_0`]) on a TF-RMM from that commit on.
    /// - v14 targets RMM v2.0-bet1, whose TF-RMM runtime (read at `9a7f8ef4`) has no RIPAS
    ///   measurement.
    ///
    /// ```
    /// use cca_backend::{RmmVersion, UapiVersion};
    /// assert_eq!(UapiVersion::V12.rmm_rules(), &[RmmVersion::V1_0]);
    /// assert_eq!(UapiVersion::V13.rmm_rules(), &[RmmVersion::V1_0, RmmVersion::V2_0]);
    /// ```
    pub fn rmm_rules(self) -> &'static [RmmVersion] {
        match self {
            UapiVersion::V12 => &[RmmVersion::V1_0],
            UapiVersion::V13 => &[RmmVersion::V1_0, RmmVersion::V2_0],
            UapiVersion::V14 => &[RmmVersion::V2_0],
        }
    }

    /// The `KVM_CREATE_VM` machine type of a realm with `ipa_bits` of IPA space
    /// ([`uapi::realm_vm_type`]).
    pub fn realm_vm_type(self, ipa_bits: u8) -> u64 {
        uapi::realm_vm_type(self, ipa_bits)
    }
}

impl fmt::Display for UapiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UapiVersion::V12 => "v12",
            UapiVersion::V13 => "v13",
            UapiVersion::V14 => "v14",
        })
    }
}

/// A `KVM_ARM_RMI_POPULATE` request, as the series versions number it. The only request numbers
/// [`CcaIoctl::rmi_populate`](crate::CcaIoctl::rmi_populate) can be asked to issue: the crate never forwards a number a caller
/// made up (issue 22, item 5), so safe code cannot make [`KvmCcaIoctl`](crate::KvmCcaIoctl) issue an arbitrary
/// ioctl on the VM fd.
///
/// ```
/// use cca_backend::{PopulateRequest, UapiVersion};
/// assert_eq!(UapiVersion::V12.populate_request().number(), 0x4020_AED7);
/// assert_eq!(PopulateRequest::V13.number(), 0xC020_AED7);
/// ```
///
/// A number is not a request:
///
/// ```compile_fail
/// use cca_backend::{uapi::KvmArmRmiPopulate, CcaIoctl, KvmCcaIoctl};
/// fn forward(io: &mut KvmCcaIoctl<'_>) {
///     let mut args = KvmArmRmiPopulate::default();
///     let _ = io.rmi_populate(0xC008_AE67, &mut args); // any other VM ioctl: does not compile
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PopulateRequest {
    /// v12 06/46: `_IOW(KVMIO, 0xd7, struct kvm_arm_rmi_populate)`, returns the bytes done.
    V12,
    /// v13 11/48, v14 13/44: `_IOWR(KVMIO, 0xd7, struct kvm_arm_rmi_populate)`, in/out.
    V13,
}

impl PopulateRequest {
    /// The ioctl request number ([`uapi::KVM_ARM_RMI_POPULATE_V12`] or
    /// [`uapi::KVM_ARM_RMI_POPULATE_V13`]).
    pub fn number(self) -> u64 {
        match self {
            PopulateRequest::V12 => uapi::KVM_ARM_RMI_POPULATE_V12,
            PopulateRequest::V13 => uapi::KVM_ARM_RMI_POPULATE_V13,
        }
    }
}
