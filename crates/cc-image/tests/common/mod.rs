//! IGVM files built with the `igvm` crate's own types, for the tests.

#![allow(dead_code)]

use igvm::snp_defs::SevVmsa;
use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_VHS_PARAMETER,
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM,
};

pub const SNP: u32 = 1;
pub const TDX: u32 = 2;
pub const BOTH: u32 = SNP | TDX;

/// xorshift64*: a small seeded generator, so every run builds the same files.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn platforms() -> Vec<IgvmPlatformHeader> {
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

pub fn inits() -> Vec<IgvmInitializationHeader> {
    vec![IgvmInitializationHeader::GuestPolicy {
        policy: 0x30000,
        compatibility_mask: SNP,
    }]
}

pub fn page(
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

pub fn vmsa(gpa: u64, vp_index: u16, rip: u64) -> IgvmDirectiveHeader {
    // SAFETY: SevVmsa derives zerocopy::FromZeros in the igvm crate: all-zero bytes are a
    // valid value.
    let mut v: Box<SevVmsa> = Box::new(unsafe { std::mem::zeroed() });
    v.rip = rip;
    v.rsp = rip ^ 0x5555;
    v.cr0 = 0x11;
    IgvmDirectiveHeader::SnpVpContext {
        gpa,
        compatibility_mask: SNP,
        vp_index,
        vmsa: v,
    }
}

pub fn serialize(directives: Vec<IgvmDirectiveHeader>) -> Vec<u8> {
    let file =
        IgvmFile::new(IgvmRevision::V1, platforms(), inits(), directives).expect("valid file");
    let mut out = Vec::new();
    file.serialize(&mut out).expect("serializes");
    out
}

/// The reference digests (`igvm::measurement`) of a serialized file, as parsed back.
pub fn reference(bytes: &[u8], mask: u32) -> [u8; 48] {
    let file = IgvmFile::new_from_binary(bytes, None).expect("parses");
    if mask == SNP {
        igvm::measurement::generate_snp_measurement(file.initializations(), file.directives(), mask)
            .expect("reference SNP measurement")
    } else {
        igvm::measurement::generate_tdx_measurement(file.directives(), mask)
            .expect("reference TDX measurement")
    }
}

pub struct Options {
    /// VP contexts anywhere (else only at the end, in vCPU order, at the KVM address).
    pub vmsas_anywhere: bool,
}

/// A random multi-platform file: page data of random flags, types, sizes and masks, secrets and
/// CPUID pages (SNP), parameter areas with usages and inserts, and SNP VP contexts.
pub fn random_file(rng: &mut Rng, opts: &Options) -> Vec<IgvmDirectiveHeader> {
    let mut out = Vec::new();
    // Distinct page numbers, handed out in a random walk so runs of consecutive pages occur.
    let mut next_page = 0x100 + rng.below(0x100);
    let mut take = |rng: &mut Rng, n: u64| {
        if rng.chance(30) {
            next_page += 1 + rng.below(64);
        }
        let p = next_page;
        next_page += n;
        p * 4096
    };
    // igvm 0.5 refuses (InvalidFixedHeader) a file whose file-data section is empty, though
    // its serializer writes such files: every file carries at least one page of data.
    let first = take(rng, 1);
    out.push(page(
        first,
        BOTH,
        IgvmPageDataFlags::new(),
        IgvmPageDataType::NORMAL,
        rng.bytes(4096),
    ));
    let n = rng.below(40);
    let mut area = 0u32;
    let mut vp = 0u16;
    for _ in 0..n {
        let mask = [SNP, TDX, BOTH, BOTH][rng.below(4) as usize];
        match rng.below(12) {
            0..=6 => {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => 1 + rng.below(4095) as usize,
                    _ => 4096,
                };
                let flags = IgvmPageDataFlags::new()
                    .with_unmeasured(rng.chance(25))
                    .with_shared(rng.chance(8));
                let run = 1 + rng.below(4);
                let gpa = take(rng, run);
                for k in 0..run {
                    out.push(page(
                        gpa + k * 4096,
                        mask,
                        flags,
                        IgvmPageDataType::NORMAL,
                        rng.bytes(len),
                    ));
                }
            }
            7 => {
                let gpa = take(rng, 1);
                out.push(page(
                    gpa,
                    SNP,
                    IgvmPageDataFlags::new(),
                    IgvmPageDataType::SECRETS,
                    Vec::new(),
                ));
            }
            8 => {
                let gpa = take(rng, 1);
                let ty = if rng.chance(50) {
                    IgvmPageDataType::CPUID_DATA
                } else {
                    IgvmPageDataType::CPUID_XF
                };
                let len = 64 * rng.below(64) as usize;
                out.push(page(gpa, SNP, IgvmPageDataFlags::new(), ty, rng.bytes(len)));
            }
            9 | 10 => {
                let pages = 1 + rng.below(3);
                let init_len = rng.below(pages * 4096) as usize;
                let init = if rng.chance(50) {
                    rng.bytes(init_len)
                } else {
                    Vec::new()
                };
                out.push(IgvmDirectiveHeader::ParameterArea {
                    number_of_bytes: pages * 4096,
                    parameter_area_index: area,
                    initial_data: init,
                });
                out.push(IgvmDirectiveHeader::MemoryMap(IGVM_VHS_PARAMETER {
                    parameter_area_index: area,
                    byte_offset: 0,
                }));
                out.push(IgvmDirectiveHeader::ParameterInsert(
                    IGVM_VHS_PARAMETER_INSERT {
                        gpa: take(rng, pages),
                        compatibility_mask: mask,
                        parameter_area_index: area,
                    },
                ));
                area += 1;
            }
            _ if opts.vmsas_anywhere => {
                let gpa = take(rng, 1);
                out.push(vmsa(gpa, vp, rng.next()));
                vp += 1;
            }
            _ => {}
        }
    }
    if !opts.vmsas_anywhere {
        for v in 0..rng.below(4) as u16 {
            out.push(vmsa(0xffff_ffff_f000, v, rng.next()));
        }
    }
    out
}

/// The SEV-SNP launch digest of an IGVM file without VP contexts, computed here: the file as
/// the igvm crate parses it, each page sent to `sev_backend::LaunchDigest` with the page type
/// written out below (the rules of cc-image's documentation, not its code). `zero_empty`: a
/// measured page without bytes is a ZERO page (else a NORMAL page of zeros). `replaced`:
/// pages whose bytes the caller replaced (measured pages become NORMAL pages of those bytes;
/// the other types do not measure contents).
pub fn snp_by_hand(bytes: &[u8], zero_empty: bool, replaced: &[(u64, &[u8])]) -> [u8; 48] {
    use sev_backend::{LaunchDigest, PageType};
    let file = IgvmFile::new_from_binary(bytes, None).unwrap();
    let mut ld = LaunchDigest::new();
    let zeros = [0u8; 4096];
    for h in file.directives() {
        if h.compatibility_mask().is_some_and(|m| m & SNP == 0) {
            continue;
        }
        match h {
            IgvmDirectiveHeader::PageData {
                gpa,
                flags,
                data_type,
                data,
                ..
            } => {
                if flags.shared() {
                    continue;
                }
                let mut page = data.clone();
                page.resize(4096, 0);
                let new = replaced.iter().find(|(g, _)| g == gpa).map(|(_, b)| *b);
                let (ty, content) = match *data_type {
                    IgvmPageDataType::SECRETS => (PageType::Secrets, None),
                    IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF => {
                        (PageType::Cpuid, None)
                    }
                    _ if flags.unmeasured() => (PageType::Unmeasured, None),
                    _ if new.is_some() => (PageType::Normal, new),
                    _ if data.is_empty() && zero_empty => (PageType::Zero, None),
                    _ if data.is_empty() => (PageType::Normal, Some(&zeros[..])),
                    _ => (PageType::Normal, Some(&page[..])),
                };
                ld.update_page(*gpa, ty, content).unwrap();
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let file_area = file.directives().iter().find_map(|d| match d {
                    IgvmDirectiveHeader::ParameterArea {
                        number_of_bytes,
                        parameter_area_index,
                        ..
                    } if *parameter_area_index == p.parameter_area_index => Some(*number_of_bytes),
                    _ => None,
                });
                let pages = file_area.unwrap() / 4096;
                for k in 0..pages {
                    ld.update_page(p.gpa + k * 4096, PageType::Unmeasured, None)
                        .unwrap();
                }
            }
            IgvmDirectiveHeader::SnpVpContext { .. } => {
                panic!("snp_by_hand does not measure VP contexts")
            }
            _ => {}
        }
    }
    ld.digest()
}
