//! IGVM files read with the `igvm` crate into a launch image for SEV-SNP or TDX.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};

use cc_populate::Role;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm_defs::{IgvmPageDataType, IgvmPlatformType};

use crate::image::{
    ImageRegion, LaunchImage, Origin, ParameterUse, RequiredMemory, SharedPage, SnpIdBlock, SnpVmsa,
};
use crate::{Error, Platform};

const PAGE: u64 = 4096;

/// The largest parameter area this crate inserts (areas hold tables such as a memory map).
pub const MAX_PARAMETER_AREA: u64 = 64 << 20;

/// Where SNP VMSA pages are measured in the launch sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VmsaPlacement {
    /// After every other page, in vCPU order (boot vCPU first), as KVM measures them at
    /// `KVM_SEV_SNP_LAUNCH_FINISH`. What a launch through `sev-backend` produces.
    #[default]
    KvmLast,
    /// Where the file's directives place each VP context, as the IGVM reference
    /// implementation (the `igvm` crate's `measurement` module) measures them.
    FileOrder,
}

/// The address SNP VMSA pages are measured at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VmsaGpa {
    /// `0xffff_ffff_f000`, the address KVM gives every VMSA page it launches
    /// (`INITIAL_VMSA_GPA`), whatever the file's VP context header says.
    #[default]
    Kvm,
    /// The GPA of the file's VP context header, as the IGVM reference implementation measures.
    File,
}

/// What an SEV-SNP launch makes of an IGVM page-data directive that carries no bytes (a
/// measured page of `NORMAL` data type; unmeasured, secrets and CPUID pages are not affected).
///
/// The IGVM reference implementation (`igvm::measurement`) measures such a page as a
/// `PAGE_TYPE_NORMAL` page of zeros; Cloud Hypervisor (commit `982934fba0cd`) sends it to
/// `KVM_SEV_SNP_LAUNCH_UPDATE` as `PAGE_TYPE_ZERO`, which the kernel accepts and the firmware
/// measures as a ZERO page. The two launch digests differ at exactly those pages. The choice is
/// the VMM's: it goes into the plan (the page's role: `measured` with zero bytes, or `zero`)
/// and so into the measurement computed from that plan.
///
/// On TDX the policy has no effect: TDX has no page type that the module zeroes and measures
/// (a page added without `TDH.MR.EXTEND` is not measured at all), so empty pages stay measured
/// pages of zeros, as in the reference implementation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EmptyPages {
    /// A measured page of zeros (`PAGE_TYPE_NORMAL`, role `measured`), as the reference
    /// implementation measures it.
    #[default]
    NormalZeros,
    /// A ZERO page (`PAGE_TYPE_ZERO`, role `zero`), as Cloud Hypervisor populates it.
    ZeroPage,
}

/// How an IGVM file's launch is measured where the IGVM reference implementation and a KVM
/// launch differ. The two agree when the file's SNP VP contexts are its last directives, in
/// vCPU order, at GPA `0xffff_ffff_f000` (and always on TDX), and empty pages are
/// [`EmptyPages::NormalZeros`].
///
/// Not a policy but worth knowing: KVM measures the VMSA it builds from the vCPU's register
/// state (`sev_es_sync_vmsa`), so the file's VMSA bytes are only what is measured if the VMM
/// sets exactly that state; this crate measures the file's bytes. KVM also measures one VMSA
/// page per vCPU: for vCPUs beyond the file's VP contexts, add their pages with
/// [`LaunchImage::push_vmsa`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IgvmPolicy {
    /// Where VMSA pages go in the sequence.
    pub vmsa_placement: VmsaPlacement,
    /// Which address they are measured at.
    pub vmsa_gpa: VmsaGpa,
    /// What a page-data directive without bytes becomes (SEV-SNP).
    pub empty_pages: EmptyPages,
}

impl IgvmPolicy {
    /// What a KVM launch through this workspace's backends produces (the default).
    pub const KVM: IgvmPolicy = IgvmPolicy {
        vmsa_placement: VmsaPlacement::KvmLast,
        vmsa_gpa: VmsaGpa::Kvm,
        empty_pages: EmptyPages::NormalZeros,
    };
    /// What the IGVM reference implementation (`igvm::measurement`) computes.
    pub const REFERENCE: IgvmPolicy = IgvmPolicy {
        vmsa_placement: VmsaPlacement::FileOrder,
        vmsa_gpa: VmsaGpa::File,
        empty_pages: EmptyPages::NormalZeros,
    };
    /// What Cloud Hypervisor's KVM SEV-SNP launch does: [`KVM`](Self::KVM) with empty pages
    /// sent as ZERO pages.
    pub const CLOUD_HYPERVISOR: IgvmPolicy = IgvmPolicy::KVM.with_empty_pages(EmptyPages::ZeroPage);

    /// This policy with `empty_pages` instead of its own.
    ///
    /// ```
    /// use cc_image::{EmptyPages, IgvmPolicy};
    /// let p = IgvmPolicy::REFERENCE.with_empty_pages(EmptyPages::ZeroPage);
    /// assert_eq!(p.empty_pages, EmptyPages::ZeroPage);
    /// assert_eq!(p.vmsa_placement, IgvmPolicy::REFERENCE.vmsa_placement);
    /// ```
    pub const fn with_empty_pages(self, empty_pages: EmptyPages) -> IgvmPolicy {
        IgvmPolicy {
            empty_pages,
            ..self
        }
    }
}

/// Reads an IGVM file for `platform` (`Snp` or `Tdx`) under the default ([`IgvmPolicy::KVM`])
/// policy. See [`load_igvm_with`].
pub fn load_igvm(bytes: &[u8], platform: Platform) -> Result<LaunchImage, Error> {
    load_igvm_with(bytes, platform, IgvmPolicy::default())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Parses `bytes` with the `igvm` crate, containing its panics.
///
/// The `igvm` parser has panicking paths on malformed input; it is called inside
/// [`std::panic::catch_unwind`] so that a hostile file is an [`Error::IgvmPanic`], never a
/// panic in the caller (with `panic = "abort"` this containment does not apply). The default
/// panic hook still prints the parser's message to stderr.
pub fn parse_igvm(bytes: &[u8]) -> Result<IgvmFile, Error> {
    match panic::catch_unwind(AssertUnwindSafe(|| IgvmFile::new_from_binary(bytes, None))) {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => {
            // The igvm crate's messages keep their detail in the source chain.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            Err(Error::IgvmParse(msg))
        }
        Err(p) => Err(Error::IgvmPanic(panic_message(p.as_ref()))),
    }
}

fn kind(h: &IgvmDirectiveHeader) -> &'static str {
    match h {
        IgvmDirectiveHeader::PageData { .. } => "PageData",
        IgvmDirectiveHeader::ParameterArea { .. } => "ParameterArea",
        IgvmDirectiveHeader::VpCount(_) => "VpCount",
        IgvmDirectiveHeader::EnvironmentInfo(_) => "EnvironmentInfo",
        IgvmDirectiveHeader::Srat(_) => "Srat",
        IgvmDirectiveHeader::Madt(_) => "Madt",
        IgvmDirectiveHeader::Slit(_) => "Slit",
        IgvmDirectiveHeader::Pptt(_) => "Pptt",
        IgvmDirectiveHeader::MmioRanges(_) => "MmioRanges",
        IgvmDirectiveHeader::MemoryMap(_) => "MemoryMap",
        IgvmDirectiveHeader::CommandLine(_) => "CommandLine",
        IgvmDirectiveHeader::DeviceTree(_) => "DeviceTree",
        IgvmDirectiveHeader::RequiredMemory { .. } => "RequiredMemory",
        IgvmDirectiveHeader::SnpVpContext { .. } => "SnpVpContext",
        IgvmDirectiveHeader::X64NativeVpContext { .. } => "X64NativeVpContext",
        IgvmDirectiveHeader::X64VbsVpContext { .. } => "X64VbsVpContext",
        IgvmDirectiveHeader::AArch64VbsVpContext { .. } => "AArch64VbsVpContext",
        IgvmDirectiveHeader::AArch64CcaVpContext { .. } => "AArch64CcaVpContext",
        IgvmDirectiveHeader::ParameterInsert(_) => "ParameterInsert",
        IgvmDirectiveHeader::ErrorRange { .. } => "ErrorRange",
        IgvmDirectiveHeader::SnpIdBlock { .. } => "SnpIdBlock",
        IgvmDirectiveHeader::VbsMeasurement { .. } => "VbsMeasurement",
    }
}

fn vmsa_bytes(vmsa: &igvm::snp_defs::SevVmsa) -> &[u8] {
    // SAFETY: `SevVmsa` is `#[repr(C)]` and derives `zerocopy::IntoBytes` in the igvm crate,
    // which zerocopy only allows for types without padding whose every byte is initialised;
    // the slice covers exactly the referenced value and lives no longer than the borrow.
    unsafe {
        std::slice::from_raw_parts(
            (vmsa as *const igvm::snp_defs::SevVmsa).cast::<u8>(),
            std::mem::size_of::<igvm::snp_defs::SevVmsa>(),
        )
    }
}

/// `ECDSA_SIG` (SEV-SNP firmware ABI): R at 0, S at 0x48, 72 bytes each, in a 0x200 field.
fn put_signature(page: &mut [u8], at: usize, sig: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE) {
    page[at..at + 72].copy_from_slice(&sig.r_comp);
    page[at + 0x48..at + 0x90].copy_from_slice(&sig.s_comp);
}

/// `ECDSA_PUB_KEY` (SEV-SNP firmware ABI): CURVE (u32) at 0, QX at 4 and QY at 0x4c, 72 bytes
/// each, in a 0x404 field. The IGVM structure's reserved word after the curve has no place.
fn put_key(page: &mut [u8], at: usize, key: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY) {
    page[at..at + 4].copy_from_slice(&key.curve.to_le_bytes());
    page[at + 4..at + 0x4c].copy_from_slice(&key.qx);
    page[at + 0x4c..at + 0x94].copy_from_slice(&key.qy);
}

/// The `ID_BLOCK` and `ID_AUTH_INFO` of an `SnpIdBlock` directive (see [`SnpIdBlock`]).
fn snp_id_block(
    h: &IgvmDirectiveHeader,
    header: usize,
    policy: u64,
) -> Result<Option<SnpIdBlock>, String> {
    let IgvmDirectiveHeader::SnpIdBlock {
        author_key_enabled,
        ld,
        family_id,
        image_id,
        version,
        guest_svn,
        id_key_algorithm,
        author_key_algorithm,
        id_key_signature,
        id_public_key,
        author_key_signature,
        author_public_key,
        ..
    } = h
    else {
        return Ok(None);
    };
    let author_key_enabled = match author_key_enabled {
        0 => false,
        1 => true,
        v => return Err(format!("author_key_enabled is {v}, not 0 or 1")),
    };
    let mut id_block = [0u8; SnpIdBlock::ID_BLOCK_LEN];
    id_block[..0x30].copy_from_slice(ld);
    id_block[0x30..0x40].copy_from_slice(family_id);
    id_block[0x40..0x50].copy_from_slice(image_id);
    id_block[0x50..0x54].copy_from_slice(&version.to_le_bytes());
    id_block[0x54..0x58].copy_from_slice(&guest_svn.to_le_bytes());
    id_block[0x58..0x60].copy_from_slice(&policy.to_le_bytes());
    let mut id_auth = Box::new([0u8; SnpIdBlock::ID_AUTH_LEN]);
    id_auth[..4].copy_from_slice(&id_key_algorithm.to_le_bytes());
    id_auth[4..8].copy_from_slice(&author_key_algorithm.to_le_bytes());
    put_signature(&mut id_auth[..], 0x40, id_key_signature);
    put_key(&mut id_auth[..], 0x240, id_public_key);
    put_signature(&mut id_auth[..], 0x680, author_key_signature);
    put_key(&mut id_auth[..], 0x880, author_public_key);
    Ok(Some(SnpIdBlock {
        id_block,
        id_auth,
        author_key_enabled,
        header,
    }))
}

struct Builder {
    image: LaunchImage,
    /// Whether a VMSA was placed after the last region (no page merges across it).
    vmsa_after_last: bool,
}

impl Builder {
    fn push_page(&mut self, header: usize, gpa: u64, role: Role, data: Option<Vec<u8>>) {
        if !self.vmsa_after_last {
            if let Some(last) = self.image.regions.last_mut() {
                let joins = last.role == role
                    && last.data.is_some() == data.is_some()
                    && last.end() == Some(gpa);
                if let Origin::IgvmPages { headers } = &mut last.origin {
                    if joins {
                        if let (Some(d), Some(new)) = (&mut last.data, &data) {
                            d.extend_from_slice(new);
                        }
                        last.size += PAGE;
                        headers.push(header);
                        return;
                    }
                }
            }
        }
        self.vmsa_after_last = false;
        self.image.regions.push(ImageRegion {
            gpa,
            size: PAGE,
            role,
            data,
            origin: Origin::IgvmPages {
                headers: vec![header],
            },
        });
    }
}

/// Pads `data` to one page; `None` when empty (a page of zeros).
fn page_of(data: &[u8]) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    let mut v = data.to_vec();
    v.resize(PAGE as usize, 0);
    Some(v)
}

/// Reads an IGVM file for `platform` (`Snp` or `Tdx`): the headers whose compatibility mask
/// includes the platform's (from its platform header) become the image's regions, in the
/// file's directive order (consecutive pages merged into one region):
///
/// - page data: measured pages as `measured` (no bytes: a page of zeros, or on SNP a `zero`
///   page under [`EmptyPages::ZeroPage`]), pages flagged
///   unmeasured as `unmeasured`; on SNP, secrets pages as `secrets` and CPUID pages
///   (`CPUID_DATA`, `CPUID_XF`) as `cpuid` with their bytes; on TDX the data type does not
///   matter (as in the reference implementation). Shared pages are not in the plan
///   ([`LaunchImage::shared_pages`]); 2 MiB pages are refused.
/// - parameter areas, where a parameter insert places them, as `unmeasured` regions holding
///   the area's initial data ([`LaunchImage::parameter_area_mut`] lets the VMM fill in the
///   parameters listed by [`LaunchImage::parameter_uses`]).
/// - SNP VP contexts as VMSA pages, placed and addressed as `policy` says.
/// - required-memory ranges are listed ([`LaunchImage::required_memory`]); error ranges and
///   VBS measurement headers do not change the plan.
/// - an SNP ID block is laid out for `LAUNCH_FINISH` ([`LaunchImage::snp_id_block`],
///   [`SnpIdBlock`]); it does not change the plan or the measurement.
///
/// Refused, naming the header: an SNP ID block on TDX, a second one, one whose
/// `author_key_enabled` is not 0 or 1 or without the file's SNP guest policy; other VP contexts (native x64, VBS, CCA: KVM sets TDX and SNP
/// vCPU state itself), 2 MiB pages, page data longer than a page, parameter areas that are
/// not whole pages or larger than [`MAX_PARAMETER_AREA`], ranges past 2^64, and overlapping
/// pages. Relocation headers are not applied: the file loads at its own addresses (as the
/// reference implementation measures it). The file is parsed by [`parse_igvm`] (panics
/// contained). A platform whose feature (`snp`, `tdx`) is off is [`Error::NotBuilt`].
pub fn load_igvm_with(
    bytes: &[u8],
    platform: Platform,
    policy: IgvmPolicy,
) -> Result<LaunchImage, Error> {
    let wanted = match platform {
        Platform::Snp => IgvmPlatformType::SEV_SNP,
        Platform::Tdx => IgvmPlatformType::TDX,
        p => return Err(Error::IgvmPlatform(p)),
    };
    if !platform.is_built() {
        return Err(Error::NotBuilt(platform));
    }
    let file = parse_igvm(bytes)?;
    let mask = file
        .platforms()
        .iter()
        .map(|p| match p {
            IgvmPlatformHeader::SupportedPlatform(info) => info,
        })
        .find(|info| info.platform_type == wanted)
        .map(|info| info.compatibility_mask)
        .ok_or(Error::IgvmNoPlatform(platform))?;
    let applies = |m: Option<u32>| m.is_none_or(|m| m & mask == mask);

    let mut b = Builder {
        image: LaunchImage::new(platform),
        vmsa_after_last: false,
    };
    for h in file.initializations() {
        if let IgvmInitializationHeader::GuestPolicy {
            policy,
            compatibility_mask,
        } = h
        {
            if platform == Platform::Snp && compatibility_mask & mask == mask {
                b.image.snp_policy = Some(*policy);
            }
        }
    }

    // Parameter areas: size, initial data.
    let mut areas: HashMap<u32, (u64, &[u8])> = HashMap::new();
    for (index, h) in file.directives().iter().enumerate() {
        let refuse = |reason: String| Error::IgvmHeader {
            section: "directive",
            index,
            kind: kind(h),
            reason,
        };
        if !applies(h.compatibility_mask()) {
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
                let gpa = *gpa;
                if flags.is_2mb_page() {
                    return Err(refuse(format!(
                        "2 MiB page at {gpa:#x}: not supported (give 4 KiB pages)"
                    )));
                }
                if gpa % PAGE != 0 || gpa.checked_add(PAGE).is_none() {
                    return Err(refuse(format!(
                        "page at {gpa:#x} is not aligned or ends past 2^64"
                    )));
                }
                if data.len() as u64 > PAGE {
                    return Err(refuse(format!(
                        "page at {gpa:#x} carries {} bytes, more than a page",
                        data.len()
                    )));
                }
                if flags.shared() {
                    b.image.shared.push(SharedPage {
                        gpa,
                        data: page_of(data).unwrap_or_else(|| vec![0; PAGE as usize]),
                        header: index,
                    });
                    continue;
                }
                let snp = platform == Platform::Snp;
                let (role, content) = match *data_type {
                    IgvmPageDataType::SECRETS if snp => (Role::Secrets, None),
                    IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF if snp => {
                        (Role::Cpuid, page_of(data))
                    }
                    _ if flags.unmeasured() => (Role::Unmeasured, page_of(data)),
                    _ if snp && data.is_empty() && policy.empty_pages == EmptyPages::ZeroPage => {
                        (Role::Zero, None)
                    }
                    _ => (Role::Measured, page_of(data)),
                };
                b.push_page(index, gpa, role, content);
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                areas.insert(
                    *parameter_area_index,
                    (*number_of_bytes, initial_data.as_slice()),
                );
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let area = p.parameter_area_index;
                let (size, init) = *areas
                    .get(&area)
                    .ok_or_else(|| refuse(format!("parameter area {area} was never declared")))?;
                if size == 0 || size % PAGE != 0 || size > MAX_PARAMETER_AREA {
                    return Err(refuse(format!(
                        "parameter area {area} has {size:#x} bytes: not whole pages, or more than {MAX_PARAMETER_AREA:#x}"
                    )));
                }
                if init.len() as u64 > size {
                    return Err(refuse(format!(
                        "parameter area {area}: {} bytes of initial data for a {size:#x}-byte area",
                        init.len()
                    )));
                }
                if p.gpa % PAGE != 0 || p.gpa.checked_add(size).is_none() {
                    return Err(refuse(format!(
                        "insert at {:#x} of {size:#x} bytes is not aligned or ends past 2^64",
                        p.gpa
                    )));
                }
                let data = (!init.is_empty()).then(|| {
                    let mut v = init.to_vec();
                    v.resize(size as usize, 0);
                    v
                });
                b.vmsa_after_last = false;
                b.image.regions.push(ImageRegion {
                    gpa: p.gpa,
                    size,
                    role: Role::Unmeasured,
                    data,
                    origin: Origin::IgvmParameterArea {
                        area,
                        header: index,
                    },
                });
            }
            IgvmDirectiveHeader::VpCount(p)
            | IgvmDirectiveHeader::EnvironmentInfo(p)
            | IgvmDirectiveHeader::Srat(p)
            | IgvmDirectiveHeader::Madt(p)
            | IgvmDirectiveHeader::Slit(p)
            | IgvmDirectiveHeader::Pptt(p)
            | IgvmDirectiveHeader::MmioRanges(p)
            | IgvmDirectiveHeader::MemoryMap(p)
            | IgvmDirectiveHeader::CommandLine(p)
            | IgvmDirectiveHeader::DeviceTree(p) => b.image.parameters.push(ParameterUse {
                kind: kind(h),
                area: p.parameter_area_index,
                byte_offset: p.byte_offset,
                header: index,
            }),
            IgvmDirectiveHeader::RequiredMemory {
                gpa,
                number_of_bytes,
                ..
            } => b.image.required.push(RequiredMemory {
                gpa: *gpa,
                size: u64::from(*number_of_bytes),
                header: index,
            }),
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                vp_index,
                vmsa,
                ..
            } => {
                if platform != Platform::Snp {
                    return Err(refuse(format!(
                        "an SNP VP context cannot apply to {platform}"
                    )));
                }
                let bytes = vmsa_bytes(vmsa);
                if bytes.len() as u64 > PAGE || gpa % PAGE != 0 {
                    return Err(refuse(format!(
                        "VMSA of {} bytes at {gpa:#x}: not one aligned page",
                        bytes.len()
                    )));
                }
                let mut page = Box::new([0u8; PAGE as usize]);
                page[..bytes.len()].copy_from_slice(bytes);
                b.image.vmsas.push(SnpVmsa {
                    gpa: match policy.vmsa_gpa {
                        VmsaGpa::Kvm => crate::DEFAULT_VMSA_GPA,
                        VmsaGpa::File => *gpa,
                    },
                    given_gpa: *gpa,
                    vp_index: Some(*vp_index),
                    header: Some(index),
                    page,
                    regions_before: b.image.regions.len(),
                });
                b.vmsa_after_last = true;
            }
            IgvmDirectiveHeader::X64NativeVpContext { .. }
            | IgvmDirectiveHeader::X64VbsVpContext { .. }
            | IgvmDirectiveHeader::AArch64VbsVpContext { .. }
            | IgvmDirectiveHeader::AArch64CcaVpContext { .. } => {
                return Err(refuse(format!(
                    "this VP context cannot be expressed for a KVM {platform} launch (KVM sets the vCPU state of confidential guests itself)"
                )));
            }
            IgvmDirectiveHeader::SnpIdBlock { .. } => {
                if platform != Platform::Snp {
                    return Err(refuse(format!(
                        "an SNP ID block cannot apply to {platform}"
                    )));
                }
                if let Some(first) = &b.image.snp_id_block {
                    return Err(refuse(format!(
                        "a second SNP ID block for the platform (the first is directive header {})",
                        first.header
                    )));
                }
                let policy = b.image.snp_policy.ok_or_else(|| {
                    refuse(
                        "the ID block's POLICY is the file's SNP guest policy, and the file gives none for the platform".into(),
                    )
                })?;
                b.image.snp_id_block = snp_id_block(h, index, policy).map_err(refuse)?;
            }
            IgvmDirectiveHeader::ErrorRange { .. } | IgvmDirectiveHeader::VbsMeasurement { .. } => {
            }
        }
    }
    if policy.vmsa_placement == VmsaPlacement::KvmLast {
        let n = b.image.regions.len();
        // Boot vCPU first, then the others in index order; a stable sort keeps the file's
        // order among equal indices.
        b.image.vmsas.sort_by_key(|v| v.vp_index);
        for v in &mut b.image.vmsas {
            v.regions_before = n;
        }
    }
    check_overlaps(&b.image)?;
    Ok(b.image)
}

/// The directive header of the page at `gpa` inside region `r`.
fn header_at(r: &ImageRegion, gpa: u64) -> (usize, &'static str) {
    match &r.origin {
        Origin::IgvmPages { headers } => {
            let k = ((gpa - r.gpa) / PAGE) as usize;
            (
                headers
                    .get(k)
                    .or(headers.last())
                    .copied()
                    .unwrap_or_default(),
                "PageData",
            )
        }
        Origin::IgvmParameterArea { header, .. } => (*header, "ParameterInsert"),
        Origin::PlanFile { index } => (*index, "region"),
    }
}

fn check_overlaps(image: &LaunchImage) -> Result<(), Error> {
    let regions = &image.regions;
    let mut sorted: Vec<usize> = (0..regions.len()).collect();
    sorted.sort_by_key(|i| (regions[*i].gpa, *i));
    for w in sorted.windows(2) {
        let (a, b) = (&regions[w[0]], &regions[w[1]]);
        // Ends were checked not to overflow when the regions were made.
        if a.end().is_some_and(|end| end > b.gpa) {
            let (ha, _) = header_at(a, b.gpa);
            let (hb, kb) = header_at(b, b.gpa);
            let (later, kind, other) = if hb > ha { (hb, kb, ha) } else { (ha, kb, hb) };
            return Err(Error::IgvmHeader {
                section: "directive",
                index: later,
                kind,
                reason: format!(
                    "the page at {:#x} is also populated by directive header {other}",
                    b.gpa
                ),
            });
        }
    }
    Ok(())
}
