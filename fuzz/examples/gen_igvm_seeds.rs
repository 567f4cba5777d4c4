//! Writes the seed files of `fuzz_igvm` (`corpus/fuzz_igvm/seed-*`), built and serialized with
//! the `igvm` crate's own types. Run from `fuzz/`: `cargo run --example gen_igvm_seeds`.

use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_SUPPORTED_PLATFORM,
};

const SNP: u32 = 1;
const TDX: u32 = 2;

fn platforms() -> Vec<IgvmPlatformHeader> {
    vec![
        IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: SNP,
            highest_vtl: 0,
            platform_type: IgvmPlatformType::SEV_SNP,
            platform_version: igvm_defs::IGVM_SEV_SNP_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        }),
        IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: TDX,
            highest_vtl: 0,
            platform_type: IgvmPlatformType::TDX,
            platform_version: igvm_defs::IGVM_TDX_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        }),
    ]
}

fn page(
    gpa: u64,
    mask: u32,
    flags: IgvmPageDataFlags,
    ty: IgvmPageDataType,
    data: Vec<u8>,
) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: mask,
        flags,
        data_type: ty,
        data,
    }
}

fn write(
    name: &str,
    directives: Vec<IgvmDirectiveHeader>,
) -> Result<(), Box<dyn std::error::Error>> {
    let inits = vec![IgvmInitializationHeader::GuestPolicy {
        policy: 0x30000,
        compatibility_mask: SNP,
    }];
    let file = IgvmFile::new(IgvmRevision::V1, platforms(), inits, directives)?;
    let mut out = Vec::new();
    file.serialize(&mut out)?;
    std::fs::create_dir_all("corpus/fuzz_igvm")?;
    std::fs::write(format!("corpus/fuzz_igvm/seed-{name}"), &out)?;
    println!("seed-{name}: {} bytes", out.len());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plain = IgvmPageDataFlags::new();
    let unmeasured = IgvmPageDataFlags::new().with_unmeasured(true);
    let code: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    write(
        "snp-pages",
        vec![
            page(
                0xffff_f000,
                SNP,
                plain,
                IgvmPageDataType::NORMAL,
                code.clone(),
            ),
            page(0x80_0000, SNP, plain, IgvmPageDataType::NORMAL, Vec::new()),
            page(
                0x80_1000,
                SNP,
                unmeasured,
                IgvmPageDataType::NORMAL,
                Vec::new(),
            ),
            page(0x80_2000, SNP, plain, IgvmPageDataType::SECRETS, Vec::new()),
            page(
                0x80_3000,
                SNP,
                plain,
                IgvmPageDataType::CPUID_DATA,
                Vec::new(),
            ),
        ],
    )?;
    write(
        "both-platforms",
        vec![
            page(
                0xffff_f000,
                SNP | TDX,
                plain,
                IgvmPageDataType::NORMAL,
                code,
            ),
            page(0x10_0000, TDX, plain, IgvmPageDataType::NORMAL, Vec::new()),
            page(
                0x10_1000,
                TDX,
                unmeasured,
                IgvmPageDataType::NORMAL,
                Vec::new(),
            ),
            page(
                0x20_0000,
                SNP,
                IgvmPageDataFlags::new().with_is_2mb_page(true),
                IgvmPageDataType::NORMAL,
                Vec::new(),
            ),
        ],
    )?;
    Ok(())
}
