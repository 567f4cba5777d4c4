//! TDX module SEAMCALL status codes, as KVM reports them in `kvm_tdx_cmd::hw_error`.
//!
//! Values read from the kernel's headers: in Linux 6.18.2 `arch/x86/kvm/vmx/tdx_errno.h`, in
//! 7.3.4 `arch/x86/include/asm/shared/tdx_errno.h` (the same codes, moved, plus
//! `TDX_SYS_BUSY`); `TDX_RND_NO_ENTROPY` is in `arch/x86/include/asm/tdx.h` in both. The
//! status class is the upper 32 bits; the lower 32 bits carry operand details (e.g. which
//! operand was busy), so names are matched on the upper half.

/// Mask of the status part of a SEAMCALL return (the upper 32 bits).
pub const TDX_SEAMCALL_STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// `TDX_SUCCESS`.
pub const TDX_SUCCESS: u64 = 0;
/// `TDX_NON_RECOVERABLE_VCPU`.
pub const TDX_NON_RECOVERABLE_VCPU: u64 = 0x4000_0001_0000_0000;
/// `TDX_NON_RECOVERABLE_TD`.
pub const TDX_NON_RECOVERABLE_TD: u64 = 0x4000_0002_0000_0000;
/// `TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE`: TDH.VP.ENTER found the vCPU's APIC in a mode
/// the TD cannot run with (`arch/x86/kvm/vmx/tdx.c: tdx_to_vmx_exit_reason` lets it through
/// as an exit, 6.18.2 and 7.3.4).
pub const TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE: u64 = 0x6000_0007_0000_0000;
/// `TDX_INTERRUPTED_RESUMABLE`.
pub const TDX_INTERRUPTED_RESUMABLE: u64 = 0x8000_0003_0000_0000;
/// `TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE`.
pub const TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE: u64 = 0x6000_0005_0000_0000;
/// `TDX_SYS_BUSY`: a global TDX module resource is busy (only in Linux 7.3.4's header,
/// `arch/x86/include/asm/shared/tdx_errno.h`; the module can return it under either kernel).
pub const TDX_SYS_BUSY: u64 = 0x8000_0202_0000_0000;
/// `TDX_OPERAND_INVALID`.
pub const TDX_OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
/// `TDX_OPERAND_BUSY`: another SEAMCALL holds a resource; retry.
pub const TDX_OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
/// `TDX_PREVIOUS_TLB_EPOCH_BUSY`.
pub const TDX_PREVIOUS_TLB_EPOCH_BUSY: u64 = 0x8000_0201_0000_0000;
/// `TDX_RND_NO_ENTROPY`: RDRAND/RDSEED ran dry (e.g. in TDH.MNG.CREATE); retry.
pub const TDX_RND_NO_ENTROPY: u64 = 0x8000_0203_0000_0000;
/// `TDX_PAGE_METADATA_INCORRECT`.
pub const TDX_PAGE_METADATA_INCORRECT: u64 = 0xC000_0300_0000_0000;
/// `TDX_VCPU_NOT_ASSOCIATED`.
pub const TDX_VCPU_NOT_ASSOCIATED: u64 = 0x8000_0702_0000_0000;
/// `TDX_KEY_GENERATION_FAILED`.
pub const TDX_KEY_GENERATION_FAILED: u64 = 0x8000_0800_0000_0000;
/// `TDX_KEY_STATE_INCORRECT`.
pub const TDX_KEY_STATE_INCORRECT: u64 = 0xC000_0811_0000_0000;
/// `TDX_KEY_CONFIGURED`.
pub const TDX_KEY_CONFIGURED: u64 = 0x0000_0815_0000_0000;
/// `TDX_NO_HKID_READY_TO_WBCACHE`.
pub const TDX_NO_HKID_READY_TO_WBCACHE: u64 = 0x0000_0821_0000_0000;
/// `TDX_FLUSHVP_NOT_DONE`.
pub const TDX_FLUSHVP_NOT_DONE: u64 = 0x8000_0824_0000_0000;
/// `TDX_EPT_WALK_FAILED`.
pub const TDX_EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;
/// `TDX_EPT_ENTRY_STATE_INCORRECT`.
pub const TDX_EPT_ENTRY_STATE_INCORRECT: u64 = 0xC000_0B0D_0000_0000;
/// `TDX_METADATA_FIELD_NOT_READABLE`.
pub const TDX_METADATA_FIELD_NOT_READABLE: u64 = 0xC000_0C02_0000_0000;

const NAMES: &[(u64, &str)] = &[
    (TDX_SUCCESS, "TDX_SUCCESS"),
    (TDX_NON_RECOVERABLE_VCPU, "TDX_NON_RECOVERABLE_VCPU"),
    (TDX_NON_RECOVERABLE_TD, "TDX_NON_RECOVERABLE_TD"),
    (
        TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE,
        "TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE",
    ),
    (TDX_INTERRUPTED_RESUMABLE, "TDX_INTERRUPTED_RESUMABLE"),
    (TDX_SYS_BUSY, "TDX_SYS_BUSY"),
    (
        TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE,
        "TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE",
    ),
    (TDX_OPERAND_INVALID, "TDX_OPERAND_INVALID"),
    (TDX_OPERAND_BUSY, "TDX_OPERAND_BUSY"),
    (TDX_PREVIOUS_TLB_EPOCH_BUSY, "TDX_PREVIOUS_TLB_EPOCH_BUSY"),
    (TDX_RND_NO_ENTROPY, "TDX_RND_NO_ENTROPY"),
    (TDX_PAGE_METADATA_INCORRECT, "TDX_PAGE_METADATA_INCORRECT"),
    (TDX_VCPU_NOT_ASSOCIATED, "TDX_VCPU_NOT_ASSOCIATED"),
    (TDX_KEY_GENERATION_FAILED, "TDX_KEY_GENERATION_FAILED"),
    (TDX_KEY_STATE_INCORRECT, "TDX_KEY_STATE_INCORRECT"),
    (TDX_KEY_CONFIGURED, "TDX_KEY_CONFIGURED"),
    (TDX_NO_HKID_READY_TO_WBCACHE, "TDX_NO_HKID_READY_TO_WBCACHE"),
    (TDX_FLUSHVP_NOT_DONE, "TDX_FLUSHVP_NOT_DONE"),
    (TDX_EPT_WALK_FAILED, "TDX_EPT_WALK_FAILED"),
    (
        TDX_EPT_ENTRY_STATE_INCORRECT,
        "TDX_EPT_ENTRY_STATE_INCORRECT",
    ),
    (
        TDX_METADATA_FIELD_NOT_READABLE,
        "TDX_METADATA_FIELD_NOT_READABLE",
    ),
];

/// The name of a SEAMCALL status (matched on its upper 32 bits), or `"TDX_UNKNOWN_STATUS"`.
///
/// ```
/// assert_eq!(tdx_backend::status::name(0x8000_0200_0000_0092), "TDX_OPERAND_BUSY");
/// assert_eq!(tdx_backend::status::name(0x1234_5678_0000_0000), "TDX_UNKNOWN_STATUS");
/// ```
pub fn name(code: u64) -> &'static str {
    let class = code & TDX_SEAMCALL_STATUS_MASK;
    NAMES
        .iter()
        .find(|(c, _)| *c == class)
        .map(|(_, n)| *n)
        .unwrap_or("TDX_UNKNOWN_STATUS")
}

/// What a SEAMCALL status means, in a few words (matched on its upper 32 bits).
///
/// ```
/// assert!(tdx_backend::status::meaning(0x8000_0200_0000_0092).contains("retry"));
/// ```
pub fn meaning(code: u64) -> &'static str {
    match code & TDX_SEAMCALL_STATUS_MASK {
        TDX_SUCCESS => "success",
        TDX_NON_RECOVERABLE_VCPU => "the vCPU is in an unrecoverable state",
        TDX_NON_RECOVERABLE_TD => "the TD is in an unrecoverable state and must be torn down",
        TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE => {
            "the TD is unrecoverable: a vCPU's APIC is in the wrong mode"
        }
        TDX_INTERRUPTED_RESUMABLE => "the SEAMCALL was interrupted and can be resumed",
        TDX_SYS_BUSY => "a global TDX module resource is busy; retry",
        TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE => {
            "the TD is unrecoverable and its memory inaccessible"
        }
        TDX_OPERAND_INVALID => "an operand is invalid (the low 32 bits name which)",
        TDX_OPERAND_BUSY => "an operand is locked by another operation; retry",
        TDX_PREVIOUS_TLB_EPOCH_BUSY => "a previous TLB tracking epoch is still active; retry",
        TDX_RND_NO_ENTROPY => "the CPU's random number generator ran dry; retry",
        TDX_PAGE_METADATA_INCORRECT => "the page's ownership metadata does not allow the operation",
        TDX_VCPU_NOT_ASSOCIATED => "the vCPU is not associated with this logical CPU",
        TDX_KEY_GENERATION_FAILED => "generating the TD's ephemeral key failed; retry",
        TDX_KEY_STATE_INCORRECT => "the TD's key is in the wrong state for the operation",
        TDX_KEY_CONFIGURED => "the TD's key is already configured",
        TDX_NO_HKID_READY_TO_WBCACHE => "no HKID is waiting for a cache write-back",
        TDX_FLUSHVP_NOT_DONE => "a vCPU was not flushed before the operation",
        TDX_EPT_WALK_FAILED => "the secure EPT walk failed (page not mapped at the expected level)",
        TDX_EPT_ENTRY_STATE_INCORRECT => {
            "the secure EPT entry is in the wrong state (e.g. already mapped)"
        }
        TDX_METADATA_FIELD_NOT_READABLE => "the metadata field cannot be read",
        _ => "a status this crate does not know",
    }
}

/// Whether the status says "busy, try again" (`TDX_OPERAND_BUSY`, `TDX_PREVIOUS_TLB_EPOCH_BUSY`,
/// `TDX_SYS_BUSY`, `TDX_RND_NO_ENTROPY`, `TDX_INTERRUPTED_RESUMABLE`).
pub fn is_retryable(code: u64) -> bool {
    matches!(
        code & TDX_SEAMCALL_STATUS_MASK,
        TDX_OPERAND_BUSY
            | TDX_PREVIOUS_TLB_EPOCH_BUSY
            | TDX_SYS_BUSY
            | TDX_RND_NO_ENTROPY
            | TDX_INTERRUPTED_RESUMABLE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_on_the_status_class() {
        assert_eq!(name(TDX_OPERAND_BUSY | 0x92), "TDX_OPERAND_BUSY");
        assert_eq!(name(0xC000_0100_0000_0001), "TDX_OPERAND_INVALID");
        assert_eq!(name(0x4000_0002_0000_0000), "TDX_NON_RECOVERABLE_TD");
        assert_eq!(name(0), "TDX_SUCCESS");
        assert!(is_retryable(0x8000_0200_0000_00a9));
        assert!(!is_retryable(TDX_OPERAND_INVALID));
        for (c, _) in NAMES {
            assert_ne!(meaning(*c), meaning(0x1234_5678_0000_0000));
        }
    }

    #[test]
    fn names_are_unique_and_classes_distinct() {
        let mut codes: Vec<u64> = NAMES.iter().map(|(c, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), NAMES.len());
        for (c, _) in NAMES {
            assert_eq!(c & !TDX_SEAMCALL_STATUS_MASK, 0);
        }
    }
}
