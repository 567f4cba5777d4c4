//! The SNP launch digest, computed offline: the chained SHA-384 over each page's `PAGE_INFO`
//! (SNP firmware ABI, `SNP_LAUNCH_UPDATE`).
//!
//! For every page the firmware builds the 112-byte `PAGE_INFO`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 48 | `DIGEST_CUR`: the launch digest so far (zeros at the start) |
//! | 0x30 | 48 | `CONTENTS`: SHA-384 of the page for `NORMAL` and `VMSA` pages, zeros otherwise |
//! | 0x60 | 2 | `LENGTH` = 0x70 |
//! | 0x62 | 1 | `PAGE_TYPE` |
//! | 0x63 | 1 | `IMI_PAGE` (0) |
//! | 0x64 | 1 | `VMPL3_PERMS` (0) |
//! | 0x65 | 1 | `VMPL2_PERMS` (0) |
//! | 0x66 | 1 | `VMPL1_PERMS` (0) |
//! | 0x67 | 1 | reserved |
//! | 0x68 | 8 | `GPA` |
//!
//! and the new digest is SHA-384 of it. The content hashes are independent per page, so
//! [`LaunchDigest::update_pages`] computes them on every core and keeps only the chain serial.

#[cfg(feature = "kvm")]
use cc_populate::Role;

/// 4 KiB: SNP measures base pages.
pub const PAGE: usize = 4096;
/// Size of `PAGE_INFO`.
pub const PAGE_INFO_LEN: usize = 0x70;
/// Size of a SHA-384 digest.
pub const DIGEST_LEN: usize = 48;

/// An SNP page type (the firmware's `PAGE_TYPE`, which `KVM_SEV_SNP_LAUNCH_UPDATE` passes on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageType {
    /// Content copied in and measured.
    Normal = 1,
    /// A vCPU's save area, measured (KVM launches these itself at `SNP_LAUNCH_FINISH`).
    Vmsa = 2,
    /// Zeros, recorded without content.
    Zero = 3,
    /// Content copied in, recorded without content.
    Unmeasured = 4,
    /// The secrets page, filled by the firmware.
    Secrets = 5,
    /// The CPUID page, checked by the firmware.
    Cpuid = 6,
}

impl PageType {
    /// Every page type, by number.
    pub const ALL: [PageType; 6] = [
        PageType::Normal,
        PageType::Vmsa,
        PageType::Zero,
        PageType::Unmeasured,
        PageType::Secrets,
        PageType::Cpuid,
    ];

    /// The type's number.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type with this number.
    pub fn from_code(code: u8) -> Option<PageType> {
        PageType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The firmware's name (`PAGE_TYPE_NORMAL`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PageType::Normal => "PAGE_TYPE_NORMAL",
            PageType::Vmsa => "PAGE_TYPE_VMSA",
            PageType::Zero => "PAGE_TYPE_ZERO",
            PageType::Unmeasured => "PAGE_TYPE_UNMEASURED",
            PageType::Secrets => "PAGE_TYPE_SECRETS",
            PageType::Cpuid => "PAGE_TYPE_CPUID",
        }
    }

    /// Whether `PAGE_INFO.CONTENTS` is the page's hash (`NORMAL`, `VMSA`) rather than zeros.
    pub fn measures_contents(self) -> bool {
        matches!(self, PageType::Normal | PageType::Vmsa)
    }

    /// The page type a plan role is populated (and measured) as: the one mapping both the
    /// backend and the offline digest use. `Ripas` (Arm CCA) has none.
    #[cfg(feature = "kvm")]
    pub fn for_role(role: Role) -> Option<PageType> {
        match role {
            Role::Measured => Some(PageType::Normal),
            Role::Unmeasured => Some(PageType::Unmeasured),
            Role::Zero => Some(PageType::Zero),
            Role::Secrets => Some(PageType::Secrets),
            Role::Cpuid => Some(PageType::Cpuid),
            _ => None,
        }
    }
}

impl PageType {
    /// The plan role populated as this page type (the inverse of [`for_role`](Self::for_role));
    /// `Vmsa` has none (KVM populates VMSAs itself).
    #[cfg(feature = "kvm")]
    pub fn role(self) -> Option<Role> {
        match self {
            PageType::Normal => Some(Role::Measured),
            PageType::Unmeasured => Some(Role::Unmeasured),
            PageType::Zero => Some(Role::Zero),
            PageType::Secrets => Some(Role::Secrets),
            PageType::Cpuid => Some(Role::Cpuid),
            PageType::Vmsa => None,
        }
    }
}

/// Builds one `PAGE_INFO` record (see the module docs for the layout).
pub fn page_info(
    digest_cur: &[u8; DIGEST_LEN],
    contents: &[u8; DIGEST_LEN],
    page_type: PageType,
    gpa: u64,
) -> [u8; PAGE_INFO_LEN] {
    let mut r = [0u8; PAGE_INFO_LEN];
    r[..48].copy_from_slice(digest_cur);
    r[48..96].copy_from_slice(contents);
    r[96..98].copy_from_slice(&(PAGE_INFO_LEN as u16).to_le_bytes());
    r[98] = page_type.code();
    // IMI_PAGE, VMPL3..VMPL1 permissions and the reserved byte stay 0.
    r[104..112].copy_from_slice(&gpa.to_le_bytes());
    r
}
