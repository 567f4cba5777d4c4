//! The crate's error type and the SEV firmware status names.

use std::borrow::Cow;

/// Everything this crate refuses or fails at. Every variant names the range or offset involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The running kernel cannot launch SEV-SNP guests.
    #[error("SNP not supported by this KVM: {reason}")]
    NotSupported {
        /// What the probe found.
        reason: String,
    },
    /// An ioctl or system call failed without a firmware status.
    #[error("{op} failed: errno {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Os {
        /// The operation (e.g. `KVM_CREATE_VM(KVM_X86_SNP_VM)`).
        op: String,
        /// The errno.
        errno: i32,
    },
    /// A `KVM_MEMORY_ENCRYPT_OP` command failed; `fw_code` is the firmware status the kernel
    /// returned in `kvm_sev_cmd.error` (`arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl` copies the
    /// command back after every command it dispatched, Linux 6.18.2), 0 when the firmware was
    /// not reached or gave no status.
    #[error("{cmd} failed: errno {errno} ({}), firmware status {fw_name} ({fw_code:#x})", std::io::Error::from_raw_os_error(*errno))]
    Command {
        /// The command (e.g. `KVM_SEV_SNP_LAUNCH_START`).
        cmd: &'static str,
        /// The errno.
        errno: i32,
        /// The firmware status code.
        fw_code: u32,
        /// Its name (`SEV_RET_*`).
        fw_name: Cow<'static, str>,
    },
    /// A parameter the kernel would refuse (or silently ignore), refused before the ioctl.
    /// `reason` names the Linux 6.18.2 function that checks it.
    #[error("{cmd}: {field} = {value:#x} refused: {reason}")]
    InvalidParam {
        /// The command (e.g. `KVM_SEV_SNP_LAUNCH_START`).
        cmd: &'static str,
        /// The parameter.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why, with the kernel function that checks it.
        reason: String,
    },
    /// [`InPlaceMode::Kernel`](crate::InPlaceMode::Kernel) asked of a kernel that does not
    /// advertise in-place populate. No longer returned: whether the kernel populates in place
    /// is decided per run (`cc_populate::Backend::in_place_populate`), and a run it cannot do
    /// stops before converting anything.
    #[error("in-place populate (LAUNCH_UPDATE with uaddr 0 for content pages) is not offered by this kernel: {reason}")]
    InPlaceUnsupported {
        /// What the kernel would do instead, and what would advertise it.
        reason: String,
    },
    /// A command failed in a way that leaves the launch unable to go on: the VM must be torn
    /// down.
    #[error("{cmd} failed: errno {errno} ({}), firmware status {fw_name} ({fw_code:#x}); the launch cannot go on: {reason}", std::io::Error::from_raw_os_error(*errno))]
    Unrecoverable {
        /// The command.
        cmd: &'static str,
        /// The errno.
        errno: i32,
        /// The firmware status code.
        fw_code: u32,
        /// Its name.
        fw_name: Cow<'static, str>,
        /// Why the launch cannot go on, with the kernel function that makes it so.
        reason: String,
    },
    /// A kernel release this crate does not follow (older than 6.12, or not a release number).
    #[error("kernel {release}: {reason}")]
    UnsupportedKernel {
        /// The release string.
        release: String,
        /// Why it is refused.
        reason: String,
    },
    /// A launch step asked for before a step the kernel (or the launch) needs first.
    #[error("{step} needs {missing} first: {reason}")]
    MissingStep {
        /// The step asked for.
        step: &'static str,
        /// The step that has to come first.
        missing: &'static str,
        /// Why, with the kernel function that makes it so.
        reason: String,
    },
    /// A launch step issued out of order.
    #[error("{step} is not allowed now: the launch is {state}")]
    BadState {
        /// The step asked for.
        step: &'static str,
        /// Where the launch is.
        state: &'static str,
    },
    /// A firmware image too short or too long for what it claims.
    #[error("firmware image: {what} at offset {offset:#x} (+{len:#x}) lies outside the {size:#x}-byte image")]
    ImageBounds {
        /// What was being read.
        what: &'static str,
        /// Its offset from the start of the image.
        offset: u64,
        /// Its length.
        len: u64,
        /// The image size.
        size: u64,
    },
    /// A firmware image whose structure is wrong.
    #[error("firmware image: {what} at offset {offset:#x}: {reason}")]
    ImageFormat {
        /// What was being read.
        what: &'static str,
        /// Its offset from the start of the image.
        offset: u64,
        /// Why it is refused.
        reason: String,
    },
    /// An SEV metadata section that cannot be planned.
    #[error("SEV metadata section {index} [{gpa:#x}..+{len:#x}) ({kind}): {reason}")]
    BadSection {
        /// Index in the metadata.
        index: usize,
        /// Its guest-physical address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Its kind.
        kind: String,
        /// Why it is refused.
        reason: String,
    },
    /// A page given to the launch digest that is not a page.
    #[error("launch digest: page at GPA {gpa:#x}: {reason}")]
    BadPage {
        /// The page's address.
        gpa: u64,
        /// Why it is refused.
        reason: String,
    },
    /// A region whose content cannot be had for measuring.
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
    /// A CPUID table that does not parse.
    #[error("SNP CPUID table: {reason}")]
    CpuidTable {
        /// Why.
        reason: String,
    },
    /// An attestation report that does not parse.
    #[error("SNP attestation report: {reason}")]
    Report {
        /// Why.
        reason: String,
    },
    /// An ID block or its key that cannot be used.
    #[error("SNP ID block: {reason}")]
    IdBlock {
        /// Why.
        reason: String,
    },
}

/// The name of an SEV firmware status code (`sev_ret_code` in `include/uapi/linux/psp-sev.h`).
///
/// ```
/// assert_eq!(sev_backend::fw_error_name(0x16), "SEV_RET_INVALID_PARAM");
/// assert_eq!(sev_backend::fw_error_name(0x1e), "SEV_RET_UNKNOWN(0x1e)");
/// ```
pub fn fw_error_name(code: u32) -> Cow<'static, str> {
    let name = match code {
        0x00 => "SEV_RET_SUCCESS",
        0x01 => "SEV_RET_INVALID_PLATFORM_STATE",
        0x02 => "SEV_RET_INVALID_GUEST_STATE",
        0x03 => "SEV_RET_INVALID_CONFIG",
        0x04 => "SEV_RET_INVALID_LEN",
        0x05 => "SEV_RET_ALREADY_OWNED",
        0x06 => "SEV_RET_INVALID_CERTIFICATE",
        0x07 => "SEV_RET_POLICY_FAILURE",
        0x08 => "SEV_RET_INACTIVE",
        0x09 => "SEV_RET_INVALID_ADDRESS",
        0x0a => "SEV_RET_BAD_SIGNATURE",
        0x0b => "SEV_RET_BAD_MEASUREMENT",
        0x0c => "SEV_RET_ASID_OWNED",
        0x0d => "SEV_RET_INVALID_ASID",
        0x0e => "SEV_RET_WBINVD_REQUIRED",
        0x0f => "SEV_RET_DFFLUSH_REQUIRED",
        0x10 => "SEV_RET_INVALID_GUEST",
        0x11 => "SEV_RET_INVALID_COMMAND",
        0x12 => "SEV_RET_ACTIVE",
        0x13 => "SEV_RET_HWSEV_RET_PLATFORM",
        0x14 => "SEV_RET_HWSEV_RET_UNSAFE",
        0x15 => "SEV_RET_UNSUPPORTED",
        0x16 => "SEV_RET_INVALID_PARAM",
        0x17 => "SEV_RET_RESOURCE_LIMIT",
        0x18 => "SEV_RET_SECURE_DATA_INVALID",
        0x19 => "SEV_RET_INVALID_PAGE_SIZE",
        0x1a => "SEV_RET_INVALID_PAGE_STATE",
        0x1b => "SEV_RET_INVALID_MDATA_ENTRY",
        0x1c => "SEV_RET_INVALID_PAGE_OWNER",
        0x1d => "SEV_RET_AEAD_OFLOW",
        0x1f => "SEV_RET_EXIT_RING_BUFFER",
        0x20 => "SEV_RET_RMP_INIT_REQUIRED",
        0x21 => "SEV_RET_BAD_SVN",
        0x22 => "SEV_RET_BAD_VERSION",
        0x23 => "SEV_RET_SHUTDOWN_REQUIRED",
        0x24 => "SEV_RET_UPDATE_FAILED",
        0x25 => "SEV_RET_RESTORE_REQUIRED",
        0x26 => "SEV_RET_RMP_INITIALIZATION_FAILED",
        0x27 => "SEV_RET_INVALID_KEY",
        0xffff_ffff => "SEV_RET_NO_FW_CALL",
        _ => return Cow::Owned(format!("SEV_RET_UNKNOWN({code:#x})")),
    };
    Cow::Borrowed(name)
}

/// `SEV_RET_INVALID_PARAM`: among others, the firmware's answer to a CPUID table it rejects.
pub const SEV_RET_INVALID_PARAM: u32 = 0x16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_psp_sev_h() {
        // include/uapi/linux/psp-sev.h, sev_ret_code.
        assert_eq!(fw_error_name(0), "SEV_RET_SUCCESS");
        assert_eq!(fw_error_name(7), "SEV_RET_POLICY_FAILURE");
        assert_eq!(fw_error_name(0x15), "SEV_RET_UNSUPPORTED");
        assert_eq!(fw_error_name(0x19), "SEV_RET_INVALID_PAGE_SIZE");
        assert_eq!(fw_error_name(0x1c), "SEV_RET_INVALID_PAGE_OWNER");
        assert_eq!(fw_error_name(0x27), "SEV_RET_INVALID_KEY");
        assert_eq!(fw_error_name(u32::MAX), "SEV_RET_NO_FW_CALL");
        assert_eq!(fw_error_name(0x99), "SEV_RET_UNKNOWN(0x99)");
    }

    #[test]
    fn every_code_of_psp_sev_h_has_its_name() {
        // include/uapi/linux/psp-sev.h (Linux 6.18.2), sev_ret_code: 0x00-0x1d and 0x1f-0x27
        // are named, 0x1e is not; names are unique.
        let names: Vec<_> = (0..=0x28u32).map(fw_error_name).collect();
        for (code, name) in names.iter().enumerate() {
            let unknown = name.starts_with("SEV_RET_UNKNOWN");
            assert_eq!(unknown, code == 0x1e || code == 0x28, "{code:#x}: {name}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    #[test]
    fn messages_name_the_range() {
        let e = Error::BadSection {
            index: 2,
            gpa: 0x80d000,
            len: 0x800,
            kind: "SNP_SECRETS".into(),
            reason: "length is not a multiple of 4 KiB".into(),
        };
        assert_eq!(
            e.to_string(),
            "SEV metadata section 2 [0x80d000..+0x800) (SNP_SECRETS): length is not a multiple of 4 KiB"
        );
        let e = Error::Command {
            cmd: "KVM_SEV_SNP_LAUNCH_START",
            errno: libc::EIO,
            fw_code: 7,
            fw_name: fw_error_name(7),
        };
        assert!(
            e.to_string().contains("SEV_RET_POLICY_FAILURE (0x7)"),
            "{e}"
        );
    }
}
