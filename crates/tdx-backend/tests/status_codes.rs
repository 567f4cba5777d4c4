//! Every SEAMCALL status `status` names, against the kernel headers' values written out here
//! by hand (not taken from the crate): Linux 6.18.2 `arch/x86/kvm/vmx/tdx_errno.h` and 7.3.4
//! `arch/x86/include/asm/shared/tdx_errno.h` (`TDX_RND_NO_ENTROPY`: `arch/x86/include/asm/tdx.h`
//! in both).

use tdx_backend::status;

/// `arch/x86/kvm/vmx/tdx_errno.h`, Linux 6.18.2, every `#define` of a status code, in the
/// header's order.
const LINUX_6_18_2_TDX_ERRNO_H: &[(&str, u64)] = &[
    ("TDX_NON_RECOVERABLE_VCPU", 0x4000000100000000),
    ("TDX_NON_RECOVERABLE_TD", 0x4000000200000000),
    ("TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE", 0x6000000500000000),
    ("TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE", 0x6000000700000000),
    ("TDX_INTERRUPTED_RESUMABLE", 0x8000000300000000),
    ("TDX_OPERAND_INVALID", 0xC000010000000000),
    ("TDX_OPERAND_BUSY", 0x8000020000000000),
    ("TDX_PREVIOUS_TLB_EPOCH_BUSY", 0x8000020100000000),
    ("TDX_PAGE_METADATA_INCORRECT", 0xC000030000000000),
    ("TDX_VCPU_NOT_ASSOCIATED", 0x8000070200000000),
    ("TDX_KEY_GENERATION_FAILED", 0x8000080000000000),
    ("TDX_KEY_STATE_INCORRECT", 0xC000081100000000),
    ("TDX_KEY_CONFIGURED", 0x0000081500000000),
    ("TDX_NO_HKID_READY_TO_WBCACHE", 0x0000082100000000),
    ("TDX_FLUSHVP_NOT_DONE", 0x8000082400000000),
    ("TDX_EPT_WALK_FAILED", 0xC0000B0000000000),
    ("TDX_EPT_ENTRY_STATE_INCORRECT", 0xC0000B0D00000000),
    ("TDX_METADATA_FIELD_NOT_READABLE", 0xC0000C0200000000),
];

/// What 7.3.4's `arch/x86/include/asm/shared/tdx_errno.h` adds to the list above.
const LINUX_7_3_4_ADDS: &[(&str, u64)] = &[("TDX_SYS_BUSY", 0x8000020200000000)];

/// `arch/x86/include/asm/tdx.h` (6.18.2 and 7.3.4).
const ASM_TDX_H: &[(&str, u64)] = &[("TDX_RND_NO_ENTROPY", 0x8000020300000000)];

#[test]
fn every_header_code_has_its_name() {
    for (name, value) in LINUX_6_18_2_TDX_ERRNO_H
        .iter()
        .chain(LINUX_7_3_4_ADDS)
        .chain(ASM_TDX_H)
    {
        assert_eq!(status::name(*value), *name, "{value:#x}");
        // The operand detail in the low half does not change the name.
        assert_eq!(status::name(*value | 0x92), *name, "{value:#x} | 0x92");
        assert_ne!(
            status::meaning(*value),
            "a status this crate does not know",
            "{name}"
        );
    }
    assert_eq!(status::name(0), "TDX_SUCCESS");
    assert_eq!(status::TDX_SEAMCALL_STATUS_MASK, 0xFFFFFFFF00000000);
}

#[test]
fn the_constants_are_the_header_values() {
    let consts = [
        status::TDX_NON_RECOVERABLE_VCPU,
        status::TDX_NON_RECOVERABLE_TD,
        status::TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE,
        status::TDX_NON_RECOVERABLE_TD_WRONG_APIC_MODE,
        status::TDX_INTERRUPTED_RESUMABLE,
        status::TDX_OPERAND_INVALID,
        status::TDX_OPERAND_BUSY,
        status::TDX_PREVIOUS_TLB_EPOCH_BUSY,
        status::TDX_PAGE_METADATA_INCORRECT,
        status::TDX_VCPU_NOT_ASSOCIATED,
        status::TDX_KEY_GENERATION_FAILED,
        status::TDX_KEY_STATE_INCORRECT,
        status::TDX_KEY_CONFIGURED,
        status::TDX_NO_HKID_READY_TO_WBCACHE,
        status::TDX_FLUSHVP_NOT_DONE,
        status::TDX_EPT_WALK_FAILED,
        status::TDX_EPT_ENTRY_STATE_INCORRECT,
        status::TDX_METADATA_FIELD_NOT_READABLE,
    ];
    let header: Vec<u64> = LINUX_6_18_2_TDX_ERRNO_H.iter().map(|(_, v)| *v).collect();
    assert_eq!(consts.to_vec(), header);
    assert_eq!(status::TDX_SYS_BUSY, LINUX_7_3_4_ADDS[0].1);
    assert_eq!(status::TDX_RND_NO_ENTROPY, ASM_TDX_H[0].1);
}

#[test]
fn busy_codes_are_retryable_and_non_recoverable_ones_are_not() {
    for busy in [
        0x8000020000000000u64,
        0x8000020100000000,
        0x8000020200000000,
        0x8000020300000000,
    ] {
        assert!(status::is_retryable(busy | 0xa9), "{busy:#x}");
    }
    for fatal in [
        0x4000000100000000u64,
        0x4000000200000000,
        0x6000000500000000,
        0x6000000700000000,
        0xC000010000000000,
    ] {
        assert!(!status::is_retryable(fatal), "{fatal:#x}");
    }
}
