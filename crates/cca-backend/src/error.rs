//! The crate's error type.

#[cfg(feature = "kvm")]
use cc_populate::Role;

use crate::UapiVersion;

/// Everything this crate refuses or fails at. Every variant about memory names the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A realm or REC parameter out of the range the RMM specification allows.
    #[error("realm parameter {field} = {value} is invalid: {reason}")]
    InvalidParam {
        /// The parameter's name (as in the plan file).
        field: &'static str,
        /// The value given.
        value: u64,
        /// What the specification allows.
        reason: &'static str,
    },
    /// A plan region outside the protected half of the realm's IPA space.
    #[error("region {region} [{gpa:#x}..+{len:#x}) is not in the protected IPA range [0..{limit:#x}) of a {ipa_bits}-bit realm")]
    OutsideProtectedIpa {
        /// Region index in the plan.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The first unprotected IPA (`2^(ipa_bits-1)`).
        limit: u64,
        /// The realm's IPA width.
        ipa_bits: u8,
    },
    /// A region whose role Arm CCA does not have (`zero`, `secrets`, `cpuid`). With the `kvm`
    /// feature (a cc-populate plan).
    #[cfg(feature = "kvm")]
    #[error("region {region} [{gpa:#x}..+{len:#x}): role {role} is refused on Arm CCA (only measured, unmeasured and ripas)")]
    RoleRefused {
        /// Region index in the plan.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The role.
        role: Role,
    },
    /// A RIPAS or data range that is empty, unaligned or outside the protected IPA range.
    #[error("range [{base:#x}..{top:#x}) is invalid: {reason}")]
    BadRange {
        /// Base IPA.
        base: u64,
        /// Top IPA (exclusive).
        top: u64,
        /// Why.
        reason: &'static str,
    },
    /// A region whose content is in place (written through the shared view of guest_memfd),
    /// which Arm CCA cannot populate where it lies: [`CcaBackend::refuse_in_place`](crate::CcaBackend::refuse_in_place).
    /// With the `kvm` feature (a cc-populate plan).
    #[cfg(feature = "kvm")]
    #[error(
        "region {region} [{gpa:#x}..+{len:#x}): in-place content refused on Arm CCA: {reason}"
    )]
    InPlaceRefused {
        /// Region index in the plan.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Why (delegation destroys a granule's contents; the source must be separate).
        reason: &'static str,
    },
    /// A region's in-place content was needed and could not be read.
    #[error("region {region} [{gpa:#x}..+{len:#x}): {reason}")]
    Content {
        /// Region index in the plan.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Why.
        reason: String,
    },
    /// This machine's KVM has no Arm CCA realm support.
    #[error("Arm CCA realms are not supported by this KVM: {reason}")]
    NotSupported {
        /// What probing found.
        reason: String,
    },
    /// The selected series version has no way to apply a setting.
    #[error("{what} cannot be set with the {version} CCA user ABI")]
    NotOffered {
        /// The setting.
        what: &'static str,
        /// The selected version.
        version: UapiVersion,
    },
    /// A launch step called out of order.
    #[error("{op} is not possible now: {reason}")]
    WrongState {
        /// The step.
        op: &'static str,
        /// Why not.
        reason: &'static str,
    },
    /// A launch ioctl failed.
    #[error("{op} failed: errno {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Ioctl {
        /// The ioctl (and sub-command).
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// A series version this crate does not speak.
    #[error("version v{series} of the Arm CCA KVM series is not supported: {reason}")]
    UnsupportedVersion {
        /// The series version (`v<N>`).
        series: u32,
        /// Why.
        reason: &'static str,
    },
    /// A vCPU ioctl of the launch failed.
    #[error("{op} on vCPU {vcpu} failed: errno {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    VcpuIoctl {
        /// The vCPU (creation order).
        vcpu: usize,
        /// The ioctl (and register).
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// A vCPU cannot carry the realm parameter asked for.
    #[error("vCPU {vcpu} cannot carry {field} = {value}: {reason}")]
    VcpuParam {
        /// The vCPU (creation order).
        vcpu: usize,
        /// The realm parameter.
        field: &'static str,
        /// The value asked for.
        value: u64,
        /// Why not (what the vCPU offers).
        reason: String,
    },
    /// A CCA attestation token whose realm claims cannot be read.
    #[error("CCA attestation token: {reason}")]
    Token {
        /// Why.
        reason: String,
    },
}
