//! What a region is for: the role decides how a platform treats its pages.

use std::fmt;

/// The role of a plan region: how the platform must treat its pages.
///
/// `Measured`, `Unmeasured` and `Zero` are common to every platform; the others are platform roles
/// that only a backend which declares them (in [`BackendCaps::roles`](crate::BackendCaps::roles))
/// accepts. Plan validation refuses a role the backend does not support, naming the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum Role {
    /// Content populated into private memory and added to the launch measurement.
    Measured,
    /// Content populated into private memory but not measured.
    Unmeasured,
    /// Private memory that starts as zeros (SNP `ZERO` pages, TDX pages added from a zero source).
    Zero,
    /// The SEV-SNP secrets page (filled by the firmware).
    Secrets,
    /// The SEV-SNP CPUID page (checked, and possibly corrected, by the firmware).
    Cpuid,
    /// Arm CCA: memory the realm sees as RAM (RIPAS RAM) with no populated content.
    Ripas,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 6] = [
        Role::Measured,
        Role::Unmeasured,
        Role::Zero,
        Role::Secrets,
        Role::Cpuid,
        Role::Ripas,
    ];

    /// The role's name as used in plan files and messages (`"measured"`, `"cpuid"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Measured => "measured",
            Role::Unmeasured => "unmeasured",
            Role::Zero => "zero",
            Role::Secrets => "secrets",
            Role::Cpuid => "cpuid",
            Role::Ripas => "ripas",
        }
    }

    /// Whether regions of this role carry content bytes (a source, in-place data or zeros that
    /// the platform copies). `Zero` and `Ripas` regions carry none.
    pub fn carries_content(self) -> bool {
        !matches!(self, Role::Zero | Role::Ripas)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Role`]s, as a backend declares the roles it supports.
///
/// ```
/// use cc_populate::{Role, RoleSet};
/// let set = RoleSet::COMMON.with(Role::Cpuid);
/// assert!(set.contains(Role::Measured) && set.contains(Role::Cpuid));
/// assert!(!set.contains(Role::Ripas));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RoleSet(u8);

impl RoleSet {
    /// No role at all.
    pub const EMPTY: RoleSet = RoleSet(0);
    /// `Measured`, `Unmeasured` and `Zero`: the roles every platform has.
    pub const COMMON: RoleSet = RoleSet(0b111);

    /// This set plus `role`.
    pub const fn with(self, role: Role) -> RoleSet {
        RoleSet(self.0 | (1 << (role as u8)))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        iter.into_iter().fold(RoleSet::EMPTY, RoleSet::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_set_membership() {
        let s: RoleSet = [Role::Zero, Role::Ripas].into_iter().collect();
        assert!(s.contains(Role::Zero));
        assert!(s.contains(Role::Ripas));
        assert!(!s.contains(Role::Measured));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Role::Zero, Role::Ripas]);
        assert_eq!(format!("{s:?}"), "{Zero, Ripas}");
        for r in Role::ALL {
            assert!(RoleSet::EMPTY.with(r).contains(r));
        }
        assert_eq!(
            RoleSet::COMMON.iter().collect::<Vec<_>>(),
            vec![Role::Measured, Role::Unmeasured, Role::Zero]
        );
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Role::ALL.len());
    }
}
