//! TDX quotes (versions 4 and 5), read (not verified) and checked against an expected TD.
//!
//! Layout (Intel TDX DCAP Quoting Library API, appendix "Quote Format"): a 48-byte header
//! (`version` u16 at 0, `att_key_type` u16 at 2, `tee_type` u32 at 4, 0x81 for TDX), then the
//! TD report body, directly in version 4, after a 6-byte descriptor (`type` u16: 2 for a TDX
//! 1.0 body of 584 bytes, 3 for a TDX 1.5 body of 648; `size` u32) in version 5. In the body:
//! `TEE_TCB_SVN` at 0, `MRSEAM` 16, `MRSIGNERSEAM` 64, `SEAMATTRIBUTES` 112, `TDATTRIBUTES`
//! 120, `XFAM` 128, `MRTD` 136, `MRCONFIGID` 184, `MROWNER` 232, `MROWNERCONFIG` 280,
//! `RTMR0..3` 328, `REPORTDATA` 520. The signature data after the body, and the PCK
//! certificate chain in it, are **not** verified here: a verifier checks them first (for
//! example with Intel's QVL or the `dcap-qvl` crate), then asks this module whether the quote
//! describes the TD it expected.
//!
//! ```
//! use tdx_backend::quote::{ExpectedTd, Quote};
//!
//! let mut q = vec![0u8; 48 + 584];
//! q[0] = 4; // version
//! q[4] = 0x81; // TDX
//! q[48 + 136..48 + 184].copy_from_slice(&[0xab; 48]); // MRTD
//! let quote = Quote::parse(&q)?;
//! assert_eq!(quote.check(&ExpectedTd::new([0xab; 48])), Ok(()));
//! assert_eq!(quote.check(&ExpectedTd::new([0; 48])).unwrap_err().field, "MRTD");
//! # Ok::<(), tdx_backend::Error>(())
//! ```

use std::fmt;

use crate::Error;

/// Size of the quote header.
pub const HEADER_SIZE: usize = 48;
/// Size of a TDX 1.0 TD report body.
pub const BODY_SIZE_TDX10: usize = 584;
/// Size of a TDX 1.5 TD report body.
pub const BODY_SIZE_TDX15: usize = 648;
/// `tee_type` of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;

/// What a quote says about its TD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The quote version (4 or 5).
    pub version: u16,
    /// The body's TDX version: 1.0 (`10`) or 1.5 (`15`).
    pub body_version: u8,
    /// `TDATTRIBUTES`.
    pub td_attributes: u64,
    /// `XFAM`.
    pub xfam: u64,
    /// `MRTD`: the TD's build-time measurement.
    pub mrtd: [u8; 48],
    /// `MRCONFIGID`.
    pub mr_config_id: [u8; 48],
    /// `MROWNER`.
    pub mr_owner: [u8; 48],
    /// `MROWNERCONFIG`.
    pub mr_owner_config: [u8; 48],
    /// `RTMR0..3`.
    pub rtmr: [[u8; 48]; 4],
    /// `REPORTDATA`.
    pub report_data: [u8; 64],
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn refused(reason: String) -> Error {
    Error::Quote { reason }
}

impl Quote {
    /// Reads a quote's header and TD report body (what follows, the signature data, is not
    /// read). Refuses a version other than 4 or 5, a TEE other than TDX, a v5 body type other
    /// than 2 or 3 or whose size disagrees with its type, and a quote too short for its body.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER_SIZE {
            return Err(refused(format!(
                "{} bytes; the header alone has {HEADER_SIZE}",
                bytes.len()
            )));
        }
        let version = u16::from_le_bytes(array(bytes, 0));
        let tee_type = u32::from_le_bytes(array(bytes, 4));
        if tee_type != TEE_TYPE_TDX {
            return Err(refused(format!(
                "tee_type {tee_type:#x}: not a TDX quote ({TEE_TYPE_TDX:#x})"
            )));
        }
        let (at, size, body_version) = match version {
            4 => (HEADER_SIZE, BODY_SIZE_TDX10, 10),
            5 => {
                if bytes.len() < HEADER_SIZE + 6 {
                    return Err(refused(format!(
                        "{} bytes; a version 5 quote's body descriptor ends at {}",
                        bytes.len(),
                        HEADER_SIZE + 6
                    )));
                }
                let ty = u16::from_le_bytes(array(bytes, HEADER_SIZE));
                let size = u32::from_le_bytes(array(bytes, HEADER_SIZE + 2)) as usize;
                let (want, body_version) = match ty {
                    2 => (BODY_SIZE_TDX10, 10),
                    3 => (BODY_SIZE_TDX15, 15),
                    t => {
                        return Err(refused(format!(
                            "body type {t}: not a TD report (2: TDX 1.0, 3: TDX 1.5)"
                        )))
                    }
                };
                if size != want {
                    return Err(refused(format!(
                        "body type {ty} has {want} bytes, the descriptor says {size}"
                    )));
                }
                (HEADER_SIZE + 6, size, body_version)
            }
            v => return Err(refused(format!("version {v}: only 4 and 5 are read"))),
        };
        if bytes.len() < at + size {
            return Err(refused(format!(
                "{} bytes; the TD report body ends at {}",
                bytes.len(),
                at + size
            )));
        }
        let b = &bytes[at..at + size];
        Ok(Quote {
            version,
            body_version,
            td_attributes: u64::from_le_bytes(array(b, 120)),
            xfam: u64::from_le_bytes(array(b, 128)),
            mrtd: array(b, 136),
            mr_config_id: array(b, 184),
            mr_owner: array(b, 232),
            mr_owner_config: array(b, 280),
            rtmr: [array(b, 328), array(b, 376), array(b, 424), array(b, 472)],
            report_data: array(b, 520),
        })
    }

    /// `Ok` when the quote describes `expected`; otherwise the first field that differs
    /// (`MRTD`, then `TDATTRIBUTES`, `XFAM`, `MRCONFIGID`).
    pub fn check(&self, expected: &ExpectedTd) -> Result<(), FieldMismatch> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        if self.mrtd != expected.mrtd {
            return Err(FieldMismatch {
                field: "MRTD",
                got: hex(&self.mrtd),
                want: hex(&expected.mrtd),
                hint: "the TD's initial memory or its order differs: trace both (`ccpop \
                       measure tdx ... --trace`) and `ccpop diff` them",
            });
        }
        let u64s = [
            (
                "TDATTRIBUTES",
                self.td_attributes,
                expected.td_attributes,
                "the VMM's KVM_TDX_INIT_VM attributes",
            ),
            (
                "XFAM",
                self.xfam,
                expected.xfam,
                "the XFAM KVM_TDX_INIT_VM derived from the CPUID it was given",
            ),
        ];
        for (field, got, want, hint) in u64s {
            if let Some(want) = want {
                if got != want {
                    return Err(FieldMismatch {
                        field,
                        got: format!("{got:#x}"),
                        want: format!("{want:#x}"),
                        hint,
                    });
                }
            }
        }
        if let Some(want) = expected.mr_config_id {
            if self.mr_config_id != want {
                return Err(FieldMismatch {
                    field: "MRCONFIGID",
                    got: hex(&self.mr_config_id),
                    want: hex(&want),
                    hint: "the VMM's mrconfigid at KVM_TDX_INIT_VM",
                });
            }
        }
        Ok(())
    }
}

/// The TD a verifier expects: MRTD, and each other field it cares about (`None`: not
/// checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTd {
    /// MRTD (`ccpop measure tdx`, [`crate::measure_plan`]).
    pub mrtd: [u8; 48],
    /// `TDATTRIBUTES`.
    pub td_attributes: Option<u64>,
    /// `XFAM`.
    pub xfam: Option<u64>,
    /// `MRCONFIGID`.
    pub mr_config_id: Option<[u8; 48]>,
}

impl ExpectedTd {
    /// Only MRTD is checked.
    pub fn new(mrtd: [u8; 48]) -> Self {
        ExpectedTd {
            mrtd,
            td_attributes: None,
            xfam: None,
            mr_config_id: None,
        }
    }
}

/// The first quote field that differs from the expected TD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMismatch {
    /// The field's name in the quote format.
    pub field: &'static str,
    /// What the quote has (hex).
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
            "{}: the quote has {}, expected {} ({})",
            self.field, self.got, self.want, self.hint
        )
    }
}
