//! The SEV-SNP attestation report, read (not verified) and checked against an expected launch.
//!
//! The layout is the firmware's `ATTESTATION_REPORT` (SEV-SNP Firmware ABI specification,
//! "ATTESTATION_REPORT Structure"; 0x4A0 bytes, the signature over bytes 0x000..0x2A0 from
//! 0x2A0). Only the fields a launch decides are read. The signature and the VCEK certificate
//! chain are **not** verified here: a verifier checks them first (for example with the
//! `sev` crate and AMD's KDS), then asks this module whether the signed report describes the
//! launch it expected.
//!
//! ```
//! use sev_backend::report::{AttestationReport, ExpectedLaunch, REPORT_SIZE};
//!
//! let mut bytes = vec![0u8; REPORT_SIZE];
//! bytes[0] = 2; // VERSION
//! bytes[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes()); // POLICY
//! bytes[0x90..0xc0].copy_from_slice(&[0xab; 48]); // MEASUREMENT
//! let report = AttestationReport::parse(&bytes)?;
//! let expected = ExpectedLaunch { policy: Some(0x30000), ..ExpectedLaunch::new([0xab; 48]) };
//! assert_eq!(report.check(&expected), Ok(()));
//! let other = ExpectedLaunch::new([0xcd; 48]);
//! assert_eq!(report.check(&other).unwrap_err().field, "MEASUREMENT");
//! # Ok::<(), sev_backend::Error>(())
//! ```

use std::fmt;

use crate::{Error, DIGEST_LEN};

/// Size of an `ATTESTATION_REPORT`.
pub const REPORT_SIZE: usize = 0x4a0;

/// What a report says about its launch (the fields a VMM and its launch decide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationReport {
    /// `VERSION` (0x000).
    pub version: u32,
    /// `GUEST_SVN` (0x004), from the ID block.
    pub guest_svn: u32,
    /// `POLICY` (0x008): the guest policy given at `SNP_LAUNCH_START`.
    pub policy: u64,
    /// `FAMILY_ID` (0x010), from the ID block.
    pub family_id: [u8; 16],
    /// `IMAGE_ID` (0x020), from the ID block.
    pub image_id: [u8; 16],
    /// `VMPL` (0x030) of the request.
    pub vmpl: u32,
    /// `SIGNATURE_ALGO` (0x034): 1 is ECDSA P-384 with SHA-384.
    pub signature_algo: u32,
    /// Bit 0 of 0x048: `AUTHOR_KEY_EN`.
    pub author_key_en: bool,
    /// `REPORT_DATA` (0x050): the guest's 64 bytes.
    pub report_data: [u8; 64],
    /// `MEASUREMENT` (0x090): the launch digest.
    pub measurement: [u8; DIGEST_LEN],
    /// `HOST_DATA` (0x0C0), given at `SNP_LAUNCH_FINISH`.
    pub host_data: [u8; 32],
    /// `ID_KEY_DIGEST` (0x0E0): SHA-384 of the ID key that signed the ID block (zeros without
    /// one).
    pub id_key_digest: [u8; DIGEST_LEN],
    /// `AUTHOR_KEY_DIGEST` (0x110): SHA-384 of the author key (zeros without one).
    pub author_key_digest: [u8; DIGEST_LEN],
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl AttestationReport {
    /// Reads a report: `bytes` is the 0x4A0-byte `ATTESTATION_REPORT` (a longer buffer, such
    /// as the kernel's `snp_report_resp` payload after its 0x20-byte header, is read from its
    /// start). Refuses anything shorter.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < REPORT_SIZE {
            return Err(Error::Report {
                reason: format!(
                    "{} bytes; an ATTESTATION_REPORT has {REPORT_SIZE:#x}",
                    bytes.len()
                ),
            });
        }
        let u32_at = |at: usize| u32::from_le_bytes(array(bytes, at));
        Ok(AttestationReport {
            version: u32_at(0x000),
            guest_svn: u32_at(0x004),
            policy: u64::from_le_bytes(array(bytes, 0x008)),
            family_id: array(bytes, 0x010),
            image_id: array(bytes, 0x020),
            vmpl: u32_at(0x030),
            signature_algo: u32_at(0x034),
            author_key_en: u32_at(0x048) & 1 != 0,
            report_data: array(bytes, 0x050),
            measurement: array(bytes, 0x090),
            host_data: array(bytes, 0x0c0),
            id_key_digest: array(bytes, 0x0e0),
            author_key_digest: array(bytes, 0x110),
        })
    }

    /// `Ok` when the report describes `expected`; otherwise the first field, in the order
    /// [`ExpectedLaunch`] lists them, that differs.
    pub fn check(&self, expected: &ExpectedLaunch) -> Result<(), FieldMismatch> {
        let mismatch = |field: &'static str, got: String, want: String, hint: &'static str| {
            Err(FieldMismatch {
                field,
                got,
                want,
                hint,
            })
        };
        if self.measurement != expected.measurement {
            return mismatch(
                "MEASUREMENT",
                hex(&self.measurement),
                hex(&expected.measurement),
                "the launch differs: trace both launches (`ccpop measure snp ... --trace`) and \
                 `ccpop diff` them",
            );
        }
        if let Some(p) = expected.policy {
            if self.policy != p {
                return mismatch(
                    "POLICY",
                    format!("{:#x}", self.policy),
                    format!("{p:#x}"),
                    "the VMM gave another policy at SNP_LAUNCH_START",
                );
            }
        }
        let fields: [Field<'_>; 5] = [
            (
                "FAMILY_ID",
                &self.family_id,
                expected.family_id.as_ref().map(|v| &v[..]),
                "the ID block's FAMILY_ID (zeros without an ID block)",
            ),
            (
                "IMAGE_ID",
                &self.image_id,
                expected.image_id.as_ref().map(|v| &v[..]),
                "the ID block's IMAGE_ID (zeros without an ID block)",
            ),
            (
                "HOST_DATA",
                &self.host_data,
                expected.host_data.as_ref().map(|v| &v[..]),
                "the VMM's HOST_DATA at SNP_LAUNCH_FINISH",
            ),
            (
                "ID_KEY_DIGEST",
                &self.id_key_digest,
                expected.id_key_digest.as_ref().map(|v| &v[..]),
                "another ID key signed the ID block (zeros: the launch had no ID block)",
            ),
            (
                "AUTHOR_KEY_DIGEST",
                &self.author_key_digest,
                expected.author_key_digest.as_ref().map(|v| &v[..]),
                "another author key (zeros: AUTHOR_KEY_EN was off)",
            ),
        ];
        for (field, got, want, hint) in fields {
            if let Some(want) = want {
                if got != want {
                    return mismatch(field, hex(got), hex(want), hint);
                }
            }
        }
        Ok(())
    }
}

/// A report field: its name, the report's bytes, the expected bytes (if checked), a hint.
type Field<'a> = (&'static str, &'a [u8], Option<&'a [u8]>, &'static str);

/// The launch a verifier expects: the measurement, and each other field it cares about
/// (`None`: not checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedLaunch {
    /// The launch digest (`ccpop measure snp`, [`crate::measure`]).
    pub measurement: [u8; DIGEST_LEN],
    /// The guest policy.
    pub policy: Option<u64>,
    /// The ID block's family ID.
    pub family_id: Option<[u8; 16]>,
    /// The ID block's image ID.
    pub image_id: Option<[u8; 16]>,
    /// The host data.
    pub host_data: Option<[u8; 32]>,
    /// SHA-384 of the ID key's public key structure.
    pub id_key_digest: Option<[u8; DIGEST_LEN]>,
    /// SHA-384 of the author key's public key structure.
    pub author_key_digest: Option<[u8; DIGEST_LEN]>,
}

impl ExpectedLaunch {
    /// Only the measurement is checked.
    pub fn new(measurement: [u8; DIGEST_LEN]) -> Self {
        ExpectedLaunch {
            measurement,
            policy: None,
            family_id: None,
            image_id: None,
            host_data: None,
            id_key_digest: None,
            author_key_digest: None,
        }
    }
}

/// The first report field that differs from the expected launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMismatch {
    /// The field's name in the firmware specification.
    pub field: &'static str,
    /// What the report has (hex).
    pub got: String,
    /// What was expected (hex).
    pub want: String,
    /// What usually makes it differ.
    pub hint: &'static str,
}

impl fmt::Display for FieldMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the report has {}, expected {} ({})",
            self.field, self.got, self.want, self.hint
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
