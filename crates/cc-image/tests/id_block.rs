//! SEV-SNP ID blocks: an IGVM `SnpIdBlock` directive read back as the firmware's `ID_BLOCK`
//! (96 bytes) and `ID_AUTH_INFO` (4096 bytes), the expected bytes written out here from the
//! SEV-SNP firmware ABI's layout; the refusals; and the result handed to
//! `KVM_SEV_SNP_LAUNCH_FINISH` through sev-backend's kernel model.

mod common;

use cc_image::{load_igvm, Platform, SnpIdBlock};
use common::*;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmRevision};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY,
    IGVM_VHS_SNP_ID_BLOCK_SIGNATURE,
};

/// 72 bytes `tag ^ i`: each field its own pattern, so a misplaced field shows.
fn comp(tag: u8) -> [u8; 72] {
    std::array::from_fn(|i| tag ^ i as u8)
}

fn id_block(mask: u32, author_key_enabled: u8) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: mask,
        author_key_enabled,
        reserved: [0xee; 3],
        ld: std::array::from_fn(|i| 0x40 ^ i as u8),
        family_id: std::array::from_fn(|i| 0xa0 ^ i as u8),
        image_id: std::array::from_fn(|i| 0xb0 ^ i as u8),
        version: 1,
        guest_svn: 0x0102_0304,
        id_key_algorithm: 1,
        author_key_algorithm: 0x0a0b_0c0d,
        id_key_signature: Box::new(IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: comp(0x11),
            s_comp: comp(0x22),
        }),
        id_public_key: Box::new(IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: 2,
            reserved: 0xdead_beef,
            qx: comp(0x33),
            qy: comp(0x44),
        }),
        author_key_signature: Box::new(IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: comp(0x55),
            s_comp: comp(0x66),
        }),
        author_public_key: Box::new(IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: 2,
            reserved: 0xfeed_f00d,
            qx: comp(0x77),
            qy: comp(0x88),
        }),
    }
}

fn first_page() -> IgvmDirectiveHeader {
    page(
        0x10_0000,
        BOTH,
        IgvmPageDataFlags::new(),
        IgvmPageDataType::NORMAL,
        vec![1; 4096],
    )
}

/// `bytes[at..]` = `what`.
fn put(bytes: &mut [u8], at: usize, what: &[u8]) {
    bytes[at..at + what.len()].copy_from_slice(what);
}

#[test]
fn the_directive_reads_back_as_id_block_and_id_auth_info() {
    let bytes = serialize(vec![first_page(), id_block(SNP, 1)]);
    let image = load_igvm(&bytes, Platform::Snp).unwrap();
    let got = image.snp_id_block().unwrap();

    // ID_BLOCK (SEV-SNP firmware ABI): LD 0x00 (48), FAMILY_ID 0x30 (16), IMAGE_ID 0x40 (16),
    // VERSION 0x50 (u32), GUEST_SVN 0x54 (u32), POLICY 0x58 (u64); 0x60 bytes.
    let mut want = [0u8; 0x60];
    let pattern = |tag: u8, n: usize| (0..n).map(|i| tag ^ i as u8).collect::<Vec<u8>>();
    put(&mut want, 0x00, &pattern(0x40, 48));
    put(&mut want, 0x30, &pattern(0xa0, 16));
    put(&mut want, 0x40, &pattern(0xb0, 16));
    put(&mut want, 0x50, &[1, 0, 0, 0]);
    put(&mut want, 0x54, &[0x04, 0x03, 0x02, 0x01]);
    // The file's guest policy (common::inits: 0x30000).
    put(&mut want, 0x58, &[0, 0, 3, 0, 0, 0, 0, 0]);
    assert_eq!(got.id_block, want);

    // ID_AUTH_INFO: ID_KEY_ALGO 0x000, AUTH_KEY_ALGO 0x004, ID_BLOCK_SIG 0x040 (R 72 bytes at
    // +0, S 72 bytes at +0x48), ID_KEY 0x240 (CURVE u32 at +0, QX at +4, QY at +0x4c),
    // ID_KEY_SIG 0x680, AUTHOR_KEY 0x880; 0x1000 bytes, the rest reserved (zero).
    let mut want = vec![0u8; 0x1000];
    put(&mut want, 0x000, &[1, 0, 0, 0]);
    put(&mut want, 0x004, &[0x0d, 0x0c, 0x0b, 0x0a]);
    put(&mut want, 0x040, &comp(0x11));
    put(&mut want, 0x040 + 0x48, &comp(0x22));
    put(&mut want, 0x240, &[2, 0, 0, 0]);
    put(&mut want, 0x244, &comp(0x33));
    put(&mut want, 0x240 + 0x4c, &comp(0x44));
    put(&mut want, 0x680, &comp(0x55));
    put(&mut want, 0x680 + 0x48, &comp(0x66));
    put(&mut want, 0x880, &[2, 0, 0, 0]);
    put(&mut want, 0x884, &comp(0x77));
    put(&mut want, 0x880 + 0x4c, &comp(0x88));
    assert_eq!(&got.id_auth[..], &want[..]);

    assert!(got.author_key_enabled);
    assert_eq!(got.header, 1);
    assert_eq!(got.ld(), std::array::from_fn(|i| 0x40 ^ i as u8));
    assert_eq!(got.policy(), 0x30000);
    assert_eq!(
        (SnpIdBlock::ID_BLOCK_LEN, SnpIdBlock::ID_AUTH_LEN),
        (96, 4096)
    );
    // The ID block does not change the plan or the measurement.
    let without = serialize(vec![first_page()]);
    assert_eq!(
        image.measure().unwrap(),
        load_igvm(&without, Platform::Snp)
            .unwrap()
            .measure()
            .unwrap()
    );
    assert!(load_igvm(&without, Platform::Snp)
        .unwrap()
        .snp_id_block()
        .is_none());

    let no_author = serialize(vec![first_page(), id_block(SNP, 0)]);
    let image = load_igvm(&no_author, Platform::Snp).unwrap();
    assert!(!image.snp_id_block().unwrap().author_key_enabled);
}

#[test]
fn an_id_block_for_another_platform_is_not_read() {
    let bytes = serialize(vec![first_page(), id_block(TDX, 1)]);
    assert!(load_igvm(&bytes, Platform::Snp)
        .unwrap()
        .snp_id_block()
        .is_none());
}

fn refused(bytes: &[u8], platform: Platform) -> String {
    load_igvm(bytes, platform).unwrap_err().to_string()
}

#[test]
fn refusals_name_the_header() {
    let for_both = serialize(vec![first_page(), id_block(BOTH, 1)]);
    let want = if Platform::Tdx.is_built() {
        "IGVM directive header 1 (SnpIdBlock): an SNP ID block cannot apply to tdx"
    } else {
        "this cc-image was built without its `tdx` feature: tdx images cannot be loaded or measured"
    };
    assert_eq!(refused(&for_both, Platform::Tdx), want);
    let two = serialize(vec![id_block(SNP, 1), first_page(), id_block(SNP, 0)]);
    assert_eq!(
        refused(&two, Platform::Snp),
        "IGVM directive header 2 (SnpIdBlock): a second SNP ID block for the platform (the first is directive header 0)"
    );
    let bad = serialize(vec![first_page(), id_block(SNP, 2)]);
    assert_eq!(
        refused(&bad, Platform::Snp),
        "IGVM directive header 1 (SnpIdBlock): author_key_enabled is 2, not 0 or 1"
    );
    // A file without a guest policy.
    let file = IgvmFile::new(
        IgvmRevision::V1,
        platforms(),
        Vec::new(),
        vec![first_page(), id_block(SNP, 1)],
    )
    .unwrap();
    let mut no_policy = Vec::new();
    file.serialize(&mut no_policy).unwrap();
    assert_eq!(
        refused(&no_policy, Platform::Snp),
        "IGVM directive header 1 (SnpIdBlock): the ID block's POLICY is the file's SNP guest \
         policy, and the file gives none for the platform"
    );
}

/// The two structures and the flag are what `SnpBackend::finish` takes, and the kernel model
/// accepts the LAUNCH_FINISH they make.
#[test]
fn the_id_block_goes_to_launch_finish() {
    use cc_populate::{Driver, MemoryLayout};
    use sev_backend::testing::KernelModel;
    use sev_backend::{FinishParams, InitParams, LaunchConfig, SnpBackend, StartParams};

    let bytes = serialize(vec![first_page(), id_block(SNP, 1)]);
    let image = load_igvm(&bytes, Platform::Snp).unwrap();
    let id = image.snp_id_block().unwrap();
    let mut b = SnpBackend::with_ioctl(KernelModel::new(), LaunchConfig::default());
    b.init(&InitParams::default()).unwrap();
    // The launch needs a vCPU before LAUNCH_FINISH; the model measures no VMSA for it.
    b.create_vcpu(0).unwrap();
    b.start(&StartParams {
        policy: id.policy(),
        ..StartParams::default()
    })
    .unwrap();
    let plan = image
        .plan(&b.caps_now(), &MemoryLayout::unbounded())
        .unwrap();
    assert!(Driver::new(&mut b).run(&plan).unwrap().is_complete());
    b.finish(&FinishParams {
        id_block: Some(&id.id_block),
        id_auth: Some(&id.id_auth),
        auth_key: id.author_key_enabled,
        ..FinishParams::default()
    })
    .unwrap();
    assert_eq!(b.ioctl().launch_digest().to_vec(), image.measure().unwrap());
}
