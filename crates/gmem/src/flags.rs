//! [`GmemFlags`], the `KVM_CREATE_GUEST_MEMFD` flags.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use crate::uapi;

/// Flags of `KVM_CREATE_GUEST_MEMFD` (`GUEST_MEMFD_FLAG_*`).
///
/// Unknown bits are kept (a newer kernel may offer them), shown as a hex remainder.
///
/// ```
/// use gmem::GmemFlags;
/// let f = GmemFlags::MMAP | GmemFlags::INIT_SHARED;
/// assert_eq!(f.bits(), 3);
/// assert!(f.contains(GmemFlags::MMAP));
/// assert_eq!(f.to_string(), "MMAP|INIT_SHARED");
/// assert_eq!(GmemFlags::empty().to_string(), "(none)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GmemFlags(u64);

impl GmemFlags {
    /// `GUEST_MEMFD_FLAG_MMAP`: the host may `mmap()` the file.
    pub const MMAP: GmemFlags = GmemFlags(uapi::GUEST_MEMFD_FLAG_MMAP);
    /// `GUEST_MEMFD_FLAG_INIT_SHARED`: memory starts shared with the host (needs `MMAP`).
    pub const INIT_SHARED: GmemFlags = GmemFlags(uapi::GUEST_MEMFD_FLAG_INIT_SHARED);

    const NAMED: [(GmemFlags, &'static str); 2] =
        [(Self::MMAP, "MMAP"), (Self::INIT_SHARED, "INIT_SHARED")];

    /// No flags.
    pub const fn empty() -> GmemFlags {
        GmemFlags(0)
    }

    /// Flags from raw bits, unknown bits included.
    pub const fn from_bits(bits: u64) -> GmemFlags {
        GmemFlags(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: GmemFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits of `self` that are not in `other`.
    pub const fn difference(self, other: GmemFlags) -> GmemFlags {
        GmemFlags(self.0 & !other.0)
    }
}

impl BitOr for GmemFlags {
    type Output = GmemFlags;
    fn bitor(self, rhs: GmemFlags) -> GmemFlags {
        GmemFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for GmemFlags {
    fn bitor_assign(&mut self, rhs: GmemFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for GmemFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("(none)");
        }
        let mut rest = self.0;
        let mut first = true;
        for (flag, name) in Self::NAMED {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GmemFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GmemFlags({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_flags_and_unknown_bits() {
        assert_eq!(GmemFlags::MMAP.to_string(), "MMAP");
        assert_eq!(GmemFlags::INIT_SHARED.to_string(), "INIT_SHARED");
        assert_eq!(GmemFlags::from_bits(0x8).to_string(), "0x8");
        assert_eq!(GmemFlags::from_bits(0x9).to_string(), "MMAP|0x8");
        assert_eq!(
            format!("{:?}", GmemFlags::from_bits(3)),
            "GmemFlags(MMAP|INIT_SHARED)"
        );
    }

    #[test]
    fn set_operations() {
        let mut f = GmemFlags::empty();
        assert!(f.is_empty());
        f |= GmemFlags::INIT_SHARED;
        assert!(!f.contains(GmemFlags::MMAP));
        assert!(f.contains(GmemFlags::empty()));
        let both = f | GmemFlags::MMAP;
        assert_eq!(both.difference(GmemFlags::MMAP), GmemFlags::INIT_SHARED);
        assert_eq!(GmemFlags::from_bits(0xc).difference(both).bits(), 0xc);
    }
}
