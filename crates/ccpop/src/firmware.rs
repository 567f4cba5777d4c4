//! `ccpop plan` and `ccpop measure` for firmware images: every platform decision is the
//! backend crate's (its planner, its measurement); this module reads files, picks options and
//! prints.

use std::borrow::Cow;
use std::path::Path;

use cc_populate::{Content, MemoryLayout, Plan, PlanBuilder, RegionSpec, Role};

use crate::error::Error;

/// A plan with a name per region, for printing.
pub struct NamedPlan<'a> {
    /// The platform (`snp`, `tdx`, `cca`).
    pub platform: &'static str,
    /// The plan.
    pub plan: Plan<'a>,
    /// One name per region.
    pub names: Vec<String>,
}

/// Reads a whole file; a missing or unreadable file is one line naming it.
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A platform library's refusal of `path`'s content, as one line naming the file.
fn refused(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Platform(format!("{}: {e}", path.display()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SEV-SNP options.
#[derive(Clone, Debug)]
pub struct SnpOptions {
    /// The section policy's name (`qemu`, `unmeasured`).
    pub section_policy: String,
    /// Only the image pages (no metadata sections).
    pub firmware_only: bool,
}

fn section_policy(name: &str) -> Result<sev_backend::SectionPolicy, Error> {
    sev_backend::SectionPolicy::by_name(name).ok_or_else(|| {
        Error::Usage(format!(
            "--section-policy {name}: unknown (known: qemu, unmeasured)"
        ))
    })
}

/// The QEMU-style SNP plan of an OVMF image: the image ending at 4 GiB, then its SEV metadata
/// sections ([`sev_backend::plan_ovmf`]).
pub fn snp_plan<'a>(
    path: &Path,
    image: &'a [u8],
    opts: &SnpOptions,
) -> Result<NamedPlan<'a>, Error> {
    let policy = section_policy(&opts.section_policy)?;
    let mut regions = sev_backend::plan_ovmf(image, policy).map_err(|e| refused(path, e))?;
    if opts.firmware_only {
        regions.truncate(1);
    }
    let mut builder = PlanBuilder::with_capacity(regions.len());
    let mut names = Vec::with_capacity(regions.len());
    for r in &regions {
        builder.push(r.to_spec());
        names.push(r.what.clone());
    }
    let plan = builder
        .build(&sev_backend::verifier_caps(), &MemoryLayout::unbounded())
        .map_err(|e| refused(path, e))?;
    Ok(NamedPlan {
        platform: "snp",
        plan,
        names,
    })
}

/// The SNP launch digest of `plan` followed by one VMSA page per file, in order.
pub fn snp_measure(plan: &NamedPlan<'_>, vmsas: &[std::path::PathBuf]) -> Result<String, Error> {
    let pages: Vec<(&Path, Vec<u8>)> = vmsas
        .iter()
        .map(|p| Ok((p.as_path(), read(p)?)))
        .collect::<Result<_, Error>>()?;
    for (path, page) in &pages {
        if page.len() != sev_backend::PAGE {
            return Err(Error::Usage(format!(
                "{}: a VMSA file must be exactly {} bytes (one page), this one has {}",
                path.display(),
                sev_backend::PAGE,
                page.len()
            )));
        }
    }
    let vmsa: Vec<sev_backend::VmsaPage<'_>> = pages
        .iter()
        .map(|(_, p)| sev_backend::VmsaPage::kvm(p))
        .collect();
    let digest = sev_backend::measure(&plan.plan, &vmsa, &sev_backend::MeasureOptions::default())
        .map_err(|e| Error::Platform(e.to_string()))?;
    Ok(hex(&digest))
}

/// TDX options.
#[derive(Clone, Copy, Debug)]
pub struct TdxOptions {
    /// Leave PAGE_AUG sections to the guest instead of adding them as QEMU does.
    pub page_aug_leave_for_guest: bool,
}

fn tdvf_options(opts: &TdxOptions) -> tdx_backend::tdvf::PlanOptions<'static> {
    tdx_backend::tdvf::PlanOptions {
        page_aug: if opts.page_aug_leave_for_guest {
            tdx_backend::tdvf::PageAugPolicy::LeaveForGuest
        } else {
            tdx_backend::tdvf::PageAugPolicy::AddLikeQemu
        },
        td_hob: None,
    }
}

/// The TDX plan of a TDVF image: its TDX metadata sections ([`tdx_backend::tdvf::plan_regions`]).
pub fn tdx_plan<'a>(
    path: &Path,
    image: &'a [u8],
    opts: &TdxOptions,
) -> Result<NamedPlan<'a>, Error> {
    let regions = tdx_backend::tdvf::plan_regions(image, &tdvf_options(opts))
        .map_err(|e| refused(path, e))?;
    let mut builder = PlanBuilder::with_capacity(regions.len());
    let mut names = Vec::with_capacity(regions.len());
    for r in regions {
        names.push(format!(
            "section {} {}",
            r.section,
            r.info.section_type.name()
        ));
        builder.push(r.spec);
    }
    let plan = builder
        .build(&tdx_backend::TDX_CAPS, &MemoryLayout::unbounded())
        .map_err(|e| refused(path, e))?;
    Ok(NamedPlan {
        platform: "tdx",
        plan,
        names,
    })
}

/// MRTD of `plan`.
pub fn tdx_measure(plan: &NamedPlan<'_>) -> Result<String, Error> {
    let mrtd = tdx_backend::measure_plan(&plan.plan).map_err(|e| Error::Platform(e.to_string()))?;
    Ok(hex(&mrtd))
}

/// Arm CCA options for a firmware image (which carries no metadata to plan from).
#[derive(Clone, Debug)]
pub struct CcaOptions {
    /// Where the image is loaded (a 4 KiB-aligned IPA).
    pub load_gpa: Option<u64>,
    /// `sha256` or `sha512`.
    pub hash: String,
    /// IPA width.
    pub ipa_bits: u8,
    /// Breakpoints.
    pub num_bps: u8,
    /// Watchpoints.
    pub num_wps: u8,
    /// SVE vector length in bits (0: off).
    pub sve_vl: u16,
    /// PMU counters (`None`: no PMU).
    pub pmu_counters: Option<u8>,
    /// LPA2.
    pub lpa2: bool,
    /// The RMM whose rules measure the RIM.
    pub rmm: cca_backend::RmmVersion,
    /// The launch order.
    pub order: cca_backend::MeasureOrder,
}

/// The image padded with zeros to whole 4 KiB granules.
pub fn cca_padded(image: &[u8]) -> Cow<'_, [u8]> {
    let granule = cc_populate::PAGE_SIZE as usize;
    if image.len() % granule == 0 {
        Cow::Borrowed(image)
    } else {
        let mut v = image.to_vec();
        v.resize(image.len().div_ceil(granule) * granule, 0);
        Cow::Owned(v)
    }
}

/// The CCA plan of a firmware image: RIPAS RAM over the image's granules at `--load-gpa`, then
/// the image (zero-padded to 4 KiB) as measured data there.
pub fn cca_plan<'a>(
    path: &Path,
    padded: &'a [u8],
    opts: &CcaOptions,
) -> Result<NamedPlan<'a>, Error> {
    let gpa = opts.load_gpa.ok_or_else(|| {
        Error::Usage(
            "--platform cca --firmware needs --load-gpa GPA: a CCA firmware image carries no \
             metadata saying where it goes (or give the realm's layout with --plan FILE)"
                .into(),
        )
    })?;
    if padded.is_empty() {
        return Err(refused(path, "the firmware image is empty"));
    }
    let len = padded.len() as u64;
    let plan = PlanBuilder::new()
        .region(RegionSpec {
            gpa,
            len,
            role: Role::Ripas,
            content: Content::Zero,
        })
        .source(gpa, Role::Measured, padded)
        .build(&cca_backend::CCA_CAPS, &MemoryLayout::unbounded())
        .map_err(|e| refused(path, e))?;
    Ok(NamedPlan {
        platform: "cca",
        plan,
        names: vec!["RIPAS RAM".into(), "firmware image".into()],
    })
}

/// The realm parameters the options give, and the RIM of `plan` for that realm with one
/// runnable REC entering at `--load-gpa` with `x0..x7` zero, under the options' RMM version.
pub fn cca_measure(
    plan: &NamedPlan<'_>,
    opts: &CcaOptions,
) -> Result<(cca_backend::RealmParams, String), Error> {
    let hash = cca_backend::HashAlgo::from_name(&opts.hash).ok_or_else(|| {
        Error::Usage(format!(
            "--hash {}: unknown (known: sha256, sha512)",
            opts.hash
        ))
    })?;
    let mut realm = cca_backend::RealmParams::new(hash, opts.ipa_bits);
    realm.num_bps = opts.num_bps;
    realm.num_wps = opts.num_wps;
    realm.sve_vl = opts.sve_vl;
    realm.pmu_counters = opts.pmu_counters;
    realm.lpa2 = opts.lpa2;
    realm
        .validate()
        .map_err(|e| Error::Usage(format!("realm parameters: {e}")))?;
    let rec = cca_backend::RecParams {
        pc: opts.load_gpa.unwrap_or(0),
        gprs: [0; 8],
        runnable: true,
    };
    let how = cca_backend::MeasureOptions {
        rmm: opts.rmm,
        order: opts.order,
        ..Default::default()
    };
    let rim = cca_backend::measure_with_options(&plan.plan, &realm, &[rec], &how)
        .map_err(|e| Error::Platform(e.to_string()))?;
    Ok((realm, rim.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn cca_images_are_padded_to_granules() {
        assert!(matches!(cca_padded(&[1; 4096]), Cow::Borrowed(_)));
        let p = cca_padded(&[1; 5000]);
        assert_eq!(p.len(), 8192);
        assert_eq!(p[4999], 1);
        assert_eq!(p[5000], 0);
    }
}
