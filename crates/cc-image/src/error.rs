//! The crate's error type.

use std::path::PathBuf;

use crate::Platform;

/// Everything this crate refuses or fails with. Every message is one line naming the plan-file
/// field or region, or the IGVM header, it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plan file is not JSON.
    #[cfg(feature = "json")]
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The plan file.
        path: PathBuf,
        /// The parser's message (with line and column).
        source: serde_json::Error,
    },
    /// A plan-file field is missing, of the wrong type, out of range, or not allowed.
    #[error("{}: {field}: {reason}", path.display())]
    Field {
        /// The plan file.
        path: PathBuf,
        /// The field, as a path (`regions[2]`, `cca.ipa_bits`, `snp.vmsa[0].file`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The plan file's regions were refused by plan validation (overlap, alignment, a role the
    /// platform lacks); the message names the region by its index in the file.
    #[error("{}: {source}", path.display())]
    PlanFile {
        /// The plan file.
        path: PathBuf,
        /// Why.
        source: cc_populate::PlanError,
    },
    /// A plan built from a loaded image was refused (e.g. against the caller's memory layout);
    /// regions are named by their index in [`LaunchImage::regions`](crate::LaunchImage::regions).
    #[error("plan refused: {0}")]
    Plan(#[from] cc_populate::PlanError),
    /// The platform named is not one of `plain`, `snp`, `tdx`, `cca`.
    #[error("unknown platform {0:?} (expected plain, snp, tdx or cca)")]
    UnknownPlatform(String),
    /// The platform asked for differs from the plan file's.
    #[error("{}: the plan is for platform {file}, not {requested}", path.display())]
    PlatformMismatch {
        /// The plan file.
        path: PathBuf,
        /// Its platform.
        file: Platform,
        /// The platform asked for.
        requested: Platform,
    },
    /// IGVM files are loaded for SEV-SNP or TDX only.
    #[error("IGVM files are loaded for platform snp or tdx, not {0}")]
    IgvmPlatform(Platform),
    /// The `igvm` crate refused the file.
    #[error("IGVM file refused by the igvm parser: {0}")]
    IgvmParse(String),
    /// The `igvm` crate's parser panicked on the file (contained at this crate's boundary).
    #[error("IGVM file refused: the igvm parser panicked on it ({0})")]
    IgvmPanic(String),
    /// The file has no platform header for the platform asked for.
    #[error("IGVM file has no {0} platform header")]
    IgvmNoPlatform(Platform),
    /// A header of the file that the plan cannot express, or that is malformed.
    #[error("IGVM {section} header {index} ({kind}): {reason}")]
    IgvmHeader {
        /// `directive` or `initialization`.
        section: &'static str,
        /// The header's index in that section of the file.
        index: usize,
        /// The header's type.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A platform without a launch measurement was asked for one.
    #[error("platform {0} has no launch measurement")]
    NoMeasurement(Platform),
    /// A CCA RIM was asked of an image that is not a CCA realm.
    #[error("the image is for platform {0}: it has no Arm CCA realm to measure")]
    NotCca(Platform),
    /// A VMSA page for a platform without them, or at an unaligned address.
    #[error(
        "cannot add a VMSA page at {gpa:#x} to a {platform} image (SEV-SNP only, 4 KiB aligned)"
    )]
    Vmsa {
        /// The image's platform.
        platform: Platform,
        /// The address given.
        gpa: u64,
    },
    /// Page contents the caller gave to replace an image's bytes were refused.
    #[error("cannot replace the contents of [{gpa:#x}..+{len:#x}): {reason}")]
    Replace {
        /// The first address given.
        gpa: u64,
        /// The number of bytes given.
        len: u64,
        /// Why.
        reason: String,
    },
    /// No parameter area with this index in the image.
    #[error("no IGVM parameter area with index {0} is inserted in this image")]
    NoParameterArea(u32),
    /// The platform's support is not in this build: its cargo feature is off.
    #[error("this cc-image was built without its `{0}` feature: {0} images cannot be loaded or measured")]
    NotBuilt(Platform),
    /// The SEV-SNP measurement failed.
    #[cfg(feature = "snp")]
    #[error("SEV-SNP measurement: {0}")]
    Snp(#[from] sev_backend::Error),
    /// The TDX measurement failed.
    #[cfg(feature = "tdx")]
    #[error("TDX measurement: {0}")]
    Tdx(#[from] tdx_backend::Error),
    /// The Arm CCA measurement failed.
    #[cfg(feature = "cca")]
    #[error("Arm CCA measurement: {0}")]
    Cca(#[from] cca_backend::Error),
}
