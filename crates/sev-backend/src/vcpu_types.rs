//! vCPU signatures: the `CPUID Fn0000_0001_EAX` value (family, model, stepping) that QEMU puts
//! in `RDX` at reset, and so into each VMSA QEMU launches.
//!
//! The encoding (AMD CPUID specification, publication 25481, "CPUID Fn0000_0001_EAX Family,
//! Model, Stepping Identifiers"):
//!
//! | bits | field |
//! |---|---|
//! | 27:20 | extended family (family - 0xf when family > 0xf, else 0) |
//! | 19:16 | extended model (model >> 4) |
//! | 11:8 | base family (0xf when family > 0xf, else family) |
//! | 7:4 | base model (model & 0xf) |
//! | 3:0 | stepping |
//!
//! The named types are QEMU's EPYC models (`target/i386/cpu.c`, `builtin_x86_defs` and their
//! versions), the names `sev-snp-measure --vcpu-type` takes.

use std::fmt;

/// A vCPU type QEMU knows by name, with its family, model and stepping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuType {
    /// QEMU's name (`EPYC-Milan`, ...).
    pub name: &'static str,
    /// CPU family.
    pub family: u32,
    /// CPU model.
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
}

const fn t(name: &'static str, family: u32, model: u32, stepping: u32) -> VcpuType {
    VcpuType {
        name,
        family,
        model,
        stepping,
    }
}

/// Every named vCPU type, in QEMU's order.
pub const VCPU_TYPES: [VcpuType; 16] = [
    t("EPYC", 23, 1, 2),
    t("EPYC-v1", 23, 1, 2),
    t("EPYC-v2", 23, 1, 2),
    t("EPYC-IBPB", 23, 1, 2),
    t("EPYC-v3", 23, 1, 2),
    t("EPYC-v4", 23, 1, 2),
    t("EPYC-Rome", 23, 49, 0),
    t("EPYC-Rome-v1", 23, 49, 0),
    t("EPYC-Rome-v2", 23, 49, 0),
    t("EPYC-Rome-v3", 23, 49, 0),
    t("EPYC-Milan", 25, 1, 1),
    t("EPYC-Milan-v1", 25, 1, 1),
    t("EPYC-Milan-v2", 25, 1, 1),
    t("EPYC-Genoa", 25, 17, 0),
    t("EPYC-Genoa-v1", 25, 17, 0),
    t("EPYC-Turin", 26, 0, 0),
];

impl VcpuType {
    /// The type named `name` (ASCII case-insensitive).
    pub fn by_name(name: &str) -> Option<VcpuType> {
        VCPU_TYPES
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// Its signature.
    pub fn signature(&self) -> u32 {
        // The table's values all fit; `cpu_signature` cannot refuse them.
        cpu_signature(self.family, self.model, self.stepping).unwrap_or(0)
    }

    /// The names of every type, comma-separated (for messages).
    pub fn names() -> String {
        VCPU_TYPES.map(|t| t.name).join(", ")
    }
}

/// A family, model or stepping that the signature cannot hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureRange {
    /// `family`, `model` or `stepping`.
    pub field: &'static str,
    /// The value given.
    pub value: u32,
    /// The largest value that fits.
    pub max: u32,
}

impl fmt::Display for SignatureRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} does not fit in a CPUID signature (at most {})",
            self.field, self.value, self.max
        )
    }
}

impl std::error::Error for SignatureRange {}

/// Largest family: base family 0xf plus an 8-bit extended family.
pub const MAX_FAMILY: u32 = 0xf + 0xff;
/// Largest model: 4 bits of base model, 4 of extended model.
pub const MAX_MODEL: u32 = 0xff;
/// Largest stepping: 4 bits.
pub const MAX_STEPPING: u32 = 0xf;

/// The signature of `family`, `model`, `stepping`; refuses a value with bits the encoding has
/// no room for (rather than dropping them).
///
/// ```
/// use sev_backend::cpu_signature;
/// assert_eq!(cpu_signature(25, 1, 1), Ok(0x00a0_0f11)); // EPYC-Milan
/// assert!(cpu_signature(25, 256, 1).is_err());
/// ```
pub fn cpu_signature(family: u32, model: u32, stepping: u32) -> Result<u32, SignatureRange> {
    let check = |field, value, max| {
        if value > max {
            Err(SignatureRange { field, value, max })
        } else {
            Ok(())
        }
    };
    check("family", family, MAX_FAMILY)?;
    check("model", model, MAX_MODEL)?;
    check("stepping", stepping, MAX_STEPPING)?;
    let (base_family, ext_family) = if family > 0xf {
        (0xf, family - 0xf)
    } else {
        (family, 0)
    };
    Ok(ext_family << 20 | (model >> 4) << 16 | base_family << 8 | (model & 0xf) << 4 | stepping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_of_known_parts() {
        // EAX of CPUID 1 as these parts report it (AMD publication 25481's encoding):
        // Naples 0x00800f12, Rome 0x00830f10, Milan 0x00a00f11, Genoa 0x00a10f10,
        // Turin (family 1Ah) 0x00b00f00.
        let sig = |n: &str| VcpuType::by_name(n).unwrap().signature();
        assert_eq!(sig("EPYC"), 0x0080_0f12);
        assert_eq!(sig("epyc-rome"), 0x0083_0f10);
        assert_eq!(sig("EPYC-Milan-v2"), 0x00a0_0f11);
        assert_eq!(sig("EPYC-Genoa"), 0x00a1_0f10);
        assert_eq!(sig("EPYC-Turin"), 0x00b0_0f00);
        assert_eq!(VcpuType::by_name("EPYC-Foo"), None);
        assert_eq!(cpu_signature(6, 0x55, 7), Ok(0x0005_0657));
        assert_eq!(
            cpu_signature(MAX_FAMILY, MAX_MODEL, MAX_STEPPING),
            Ok(0x0fff_0fff)
        );
        assert_eq!(
            cpu_signature(MAX_FAMILY + 1, 0, 0),
            Err(SignatureRange {
                field: "family",
                value: MAX_FAMILY + 1,
                max: MAX_FAMILY
            })
        );
        assert_eq!(
            cpu_signature(0, MAX_MODEL + 1, 0),
            Err(SignatureRange {
                field: "model",
                value: MAX_MODEL + 1,
                max: MAX_MODEL
            })
        );
        assert_eq!(
            cpu_signature(0, 0, 16),
            Err(SignatureRange {
                field: "stepping",
                value: 16,
                max: 15
            })
        );
        assert!(VcpuType::names().starts_with("EPYC, EPYC-v1"));
    }
}
