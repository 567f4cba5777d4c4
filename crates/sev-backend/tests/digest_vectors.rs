//! The launch digest against vectors derived by hand from the SNP firmware ABI
//! (`SNP_LAUNCH_UPDATE`, PAGE_INFO), hashed with `sha2` (the crate measures with `cc-hash`).

use cc_populate::{MemoryLayout, PlanBuilder, Role};
use sev_backend::{measure, verifier_caps, LaunchDigest, MeasureOptions, PageType, VmsaPage};

/// PAGE_INFO built field by field from the ABI's table:
/// DIGEST_CUR[48] | CONTENTS[48] | LENGTH u16 = 0x70 | PAGE_TYPE u8 | IMI_PAGE u8 = 0 |
/// VMPL3_PERMS u8 = 0 | VMPL2_PERMS u8 = 0 | VMPL1_PERMS u8 = 0 | reserved u8 = 0 | GPA u64.
fn page_info_by_hand(cur: &[u8; 48], contents: &[u8; 48], page_type: u8, gpa: u64) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(cur); // DIGEST_CUR
    r.extend_from_slice(contents); // CONTENTS
    r.extend_from_slice(&0x70u16.to_le_bytes()); // LENGTH
    r.push(page_type); // PAGE_TYPE
    r.push(0); // IMI_PAGE
    r.push(0); // VMPL3_PERMS
    r.push(0); // VMPL2_PERMS
    r.push(0); // VMPL1_PERMS
    r.push(0); // reserved
    r.extend_from_slice(&gpa.to_le_bytes()); // GPA
    assert_eq!(r.len(), 0x70);
    r
}

fn extend(cur: [u8; 48], page_type: u8, gpa: u64, page: Option<&[u8]>) -> [u8; 48] {
    // CONTENTS: SHA-384 of the page for NORMAL (1) and VMSA (2), zero for the others.
    let contents: [u8; 48] = match (page_type, page) {
        (1 | 2, Some(p)) => sha384(p),
        _ => [0; 48],
    };
    sha384(&page_info_by_hand(&cur, &contents, page_type, gpa))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn one_zero_page_literal_vector() {
    // Computed independently (Python hashlib, struct.pack('<HBBBBBBQ', 0x70, 3, 0, 0, 0, 0, 0,
    // 0)) for one ZERO page at GPA 0 from a zero digest.
    let mut ld = LaunchDigest::new();
    ld.update_page(0, PageType::Zero, None).unwrap();
    assert_eq!(
        hex(&ld.digest()),
        "70c0ecaab9608f14ebf8ac6f0f07bcd8728f4e2ab30382b539b4de4de904ca9f8ebdf4b2cd3cd84dd996bd55dd794676"
    );
}

#[test]
fn one_page_of_each_type() {
    let normal: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let unmeasured = vec![0x5au8; 4096];
    let vmsa: Vec<u8> = (0..4096u32).map(|i| (i * 3 % 256) as u8).collect();

    let mut want = [0u8; 48];
    want = extend(want, 1, 0x1000, Some(&normal));
    want = extend(want, 3, 0x2000, None);
    want = extend(want, 4, 0x3000, Some(&unmeasured));
    want = extend(want, 5, 0x4000, None);
    want = extend(want, 6, 0x5000, None);
    want = extend(want, 1, 0x6000, Some(&[0u8; 4096])); // measured zeros: a NORMAL zero page
    want = extend(want, 2, 0xffff_ffff_f000, Some(&vmsa));

    // Through the incremental digest.
    let mut ld = LaunchDigest::new();
    ld.update_page(0x1000, PageType::Normal, Some(&normal))
        .unwrap();
    ld.update_page(0x2000, PageType::Zero, None).unwrap();
    ld.update_page(0x3000, PageType::Unmeasured, Some(&unmeasured))
        .unwrap();
    ld.update_page(0x4000, PageType::Secrets, None).unwrap();
    ld.update_page(0x5000, PageType::Cpuid, None).unwrap();
    ld.update_page(0x6000, PageType::Normal, None).unwrap();
    ld.update_vmsa(0xffff_ffff_f000, &vmsa).unwrap();
    assert_eq!(ld.pages(), 7);
    assert_eq!(hex(&ld.digest()), hex(&want));

    // Through a plan, with the backend's role mapping.
    let cpuid = vec![0x11u8; 4096];
    let plan = PlanBuilder::new()
        .source(0x1000, Role::Measured, &normal)
        .zero(0x2000, 4096)
        .source(0x3000, Role::Unmeasured, &unmeasured)
        .zeros(0x4000, 4096, Role::Secrets)
        .source(0x5000, Role::Cpuid, &cpuid)
        .zeros(0x6000, 4096, Role::Measured)
        .build(&verifier_caps(), &MemoryLayout::unbounded())
        .unwrap();
    let got = measure(&plan, &[VmsaPage::kvm(&vmsa)], &MeasureOptions::default()).unwrap();
    assert_eq!(hex(&got), hex(&want));

    // Order is part of the digest.
    let mut swapped = LaunchDigest::new();
    swapped.update_page(0x2000, PageType::Zero, None).unwrap();
    swapped
        .update_page(0x1000, PageType::Normal, Some(&normal))
        .unwrap();
    let mut first_two = [0u8; 48];
    first_two = extend(first_two, 1, 0x1000, Some(&normal));
    first_two = extend(first_two, 3, 0x2000, None);
    assert_ne!(swapped.digest(), first_two);
}

#[test]
fn multi_page_regions_and_in_place_reader() {
    struct Mem(Vec<u8>);
    impl cc_populate::InPlaceReader for Mem {
        fn read_in_place(&self, gpa: u64, buf: &mut [u8]) -> Result<(), String> {
            let off = (gpa - 0x10_0000) as usize;
            buf.copy_from_slice(self.0.get(off..off + buf.len()).ok_or("out of range")?);
            Ok(())
        }
    }
    let image: Vec<u8> = (0..(5 * 4096u32)).map(|i| (i / 7) as u8).collect();
    let mut want = [0u8; 48];
    for (k, p) in image.chunks(4096).enumerate() {
        want = extend(want, 1, 0x10_0000 + k as u64 * 4096, Some(p));
    }
    for k in 0..3u64 {
        want = extend(want, 3, 0x20_0000 + k * 4096, None);
    }
    let plan = PlanBuilder::new()
        .in_place(0x10_0000, image.len() as u64, Role::Measured)
        .zero(0x20_0000, 3 * 4096)
        .build(&verifier_caps(), &MemoryLayout::unbounded())
        .unwrap();
    let mem = Mem(image);
    let opts = MeasureOptions {
        reader: Some(&mem),
        threads: 2,
    };
    assert_eq!(measure(&plan, &[], &opts).unwrap(), want);
    // Without a reader the in-place region is refused, naming it.
    let err = measure(&plan, &[], &MeasureOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("region 0 [0x100000..+0x5000)"),
        "{err}"
    );
}

/// SHA-384 through `sha2` (the crate measures with `cc-hash`: `ring` or libcrypto for one
/// stream, its own AVX-512 kernels for page contents).
fn sha384(data: &[u8]) -> [u8; 48] {
    <sha2::Sha384 as sha2::Digest>::digest(data).into()
}
