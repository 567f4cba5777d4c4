//! Loading and measuring a large IGVM file, as ratios to a bare SHA-384 pass over the same
//! page bytes and to the IGVM reference implementation (`igvm::measurement`), all measured in
//! this run. Run with `cargo bench -p cc-image`.
//!
//! Limits (see /work/shared/spec/measurement-limits.md): SNP 0.91 of bare on one thread, 1.73
//! on two cores (content hashes run on every core in sev-backend); TDX 0.65 (one serial
//! stream). Loading copies each page once out of the parsed file.

use std::time::Instant;

use cc_image::{load_igvm, Platform};
use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_SUPPORTED_PLATFORM,
};
use sha2::{Digest, Sha384};

const PAGES: u64 = 16384; // 64 MiB

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let platform = |mask, ty, version| {
        IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: mask,
            highest_vtl: 0,
            platform_type: ty,
            platform_version: version,
            shared_gpa_boundary: 0,
        })
    };
    let mut x = 0x1234_5678_9abc_def1u64;
    let directives: Vec<IgvmDirectiveHeader> = (0..PAGES)
        .map(|p| {
            let data: Vec<u8> = (0..512)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect();
            IgvmDirectiveHeader::PageData {
                gpa: 0x10_0000 + p * 4096,
                compatibility_mask: 3,
                flags: IgvmPageDataFlags::new(),
                data_type: IgvmPageDataType::NORMAL,
                data,
            }
        })
        .collect();
    let file = IgvmFile::new(
        IgvmRevision::V1,
        vec![
            platform(
                1,
                IgvmPlatformType::SEV_SNP,
                igvm_defs::IGVM_SEV_SNP_PLATFORM_VERSION,
            ),
            platform(
                2,
                IgvmPlatformType::TDX,
                igvm_defs::IGVM_TDX_PLATFORM_VERSION,
            ),
        ],
        vec![IgvmInitializationHeader::GuestPolicy {
            policy: 0x30000,
            compatibility_mask: 1,
        }],
        directives,
    )
    .unwrap();
    let mut bytes = Vec::new();
    file.serialize(&mut bytes).unwrap();
    let parsed = IgvmFile::new_from_binary(&bytes, None).unwrap();
    let pages: Vec<u8> = parsed
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::PageData { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();

    let runs = 3;
    let bare = best(runs, || Sha384::digest(&pages));
    let parse = best(runs, || IgvmFile::new_from_binary(&bytes, None).unwrap());
    let snp_img = load_igvm(&bytes, Platform::Snp).unwrap();
    let tdx_img = load_igvm(&bytes, Platform::Tdx).unwrap();
    let load = best(runs, || load_igvm(&bytes, Platform::Snp).unwrap());
    let snp = best(runs, || snp_img.measure().unwrap());
    let tdx = best(runs, || tdx_img.measure().unwrap());
    let snp_ref = best(runs, || {
        igvm::measurement::generate_snp_measurement(
            parsed.initializations(),
            parsed.directives(),
            1,
        )
        .unwrap()
    });
    let tdx_ref = best(runs, || {
        igvm::measurement::generate_tdx_measurement(parsed.directives(), 2).unwrap()
    });
    // Same digests (checked outside the timings).
    let snp_want = igvm::measurement::generate_snp_measurement(
        parsed.initializations(),
        parsed.directives(),
        1,
    )
    .unwrap();
    let tdx_want = igvm::measurement::generate_tdx_measurement(parsed.directives(), 2).unwrap();
    assert_eq!(snp_img.measure().unwrap(), snp_want.to_vec());
    assert_eq!(tdx_img.measure().unwrap(), tdx_want.to_vec());

    let mib = (PAGES * 4096) as f64 / f64::from(1 << 20);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "IGVM file of {PAGES} measured 4 KiB pages ({mib:.0} MiB), {threads} cores, best of {runs}"
    );
    println!("bare SHA-384 over the pages: {:.0} MiB/s", mib / bare);
    println!("what                         | MiB/s | ratio to bare | ratio to reference | limit");
    println!(
        "igvm parse (reference cost)  | {:5.0} | {:13.2} |                  - | -",
        mib / parse,
        bare / parse
    );
    println!(
        "load_igvm (parse + regions)  | {:5.0} | {:13.2} |                  - | -",
        mib / load,
        bare / load
    );
    println!(
        "SNP measure (sev-backend)    | {:5.0} | {:13.2} | {:18.2} | 0.91 (1 core), 1.73 (2)",
        mib / snp,
        bare / snp,
        snp_ref / snp
    );
    println!(
        "SNP igvm::measurement        | {:5.0} | {:13.2} |               1.00 | -",
        mib / snp_ref,
        bare / snp_ref
    );
    println!(
        "TDX measure (tdx-backend)    | {:5.0} | {:13.2} | {:18.2} | 0.65",
        mib / tdx,
        bare / tdx,
        tdx_ref / tdx
    );
    println!(
        "TDX igvm::measurement        | {:5.0} | {:13.2} |               1.00 | -",
        mib / tdx_ref,
        bare / tdx_ref
    );
}
