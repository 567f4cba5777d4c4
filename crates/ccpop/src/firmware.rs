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
    /// Per region, the offset in the input file its bytes start at (`None`: not from the
    /// file).
    pub offsets: Vec<Option<u64>>,
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
    /// The section policy's name (`qemu`, `ec2`, `gce`, `unmeasured`).
    pub section_policy: String,
    /// Only the image pages (no metadata sections).
    pub firmware_only: bool,
}

fn section_policy(name: &str) -> Result<sev_backend::SectionPolicy, Error> {
    sev_backend::SectionPolicy::by_name(name).ok_or_else(|| {
        Error::Usage(format!(
            "--section-policy {name}: unknown (known: qemu, ec2, gce, unmeasured)"
        ))
    })
}

/// How the vCPU signature was given.
#[derive(Clone, Debug, Default)]
pub struct VcpuSigArgs {
    /// `--vcpu-type NAME`.
    pub vcpu_type: Option<String>,
    /// `--vcpu-sig VALUE`.
    pub vcpu_sig: Option<u64>,
    /// `--vcpu-family`, `--vcpu-model`, `--vcpu-stepping`.
    pub family: Option<u32>,
    /// Model.
    pub model: Option<u32>,
    /// Stepping.
    pub stepping: Option<u32>,
}

/// Everything `ccpop measure snp --firmware` takes beyond the image (the inputs of
/// `sev-snp-measure --mode snp`/`snp:svsm`).
#[derive(Clone, Debug, Default)]
pub struct SnpLaunchArgs {
    /// `--section-policy` (default: the VMM type's).
    pub section_policy: Option<String>,
    /// `--vcpus`.
    pub vcpus: Option<u32>,
    /// The signature.
    pub sig: VcpuSigArgs,
    /// `--vmm-type`.
    pub vmm_type: String,
    /// `--guest-features`.
    pub guest_features: Option<u64>,
    /// `--kernel`, `--initrd`, `--append`.
    pub kernel: Option<std::path::PathBuf>,
    /// Initrd.
    pub initrd: Option<std::path::PathBuf>,
    /// Command line.
    pub append: Option<String>,
    /// `--snp-ovmf-hash`.
    pub ovmf_hash: Option<String>,
    /// `--svsm`, `--vars-size`, `--vars-file`.
    pub svsm: Option<std::path::PathBuf>,
    /// Vars size.
    pub vars_size: Option<u64>,
    /// Vars file.
    pub vars_file: Option<std::path::PathBuf>,
    /// `--vmsa` files.
    pub vmsa: Vec<std::path::PathBuf>,
    /// Keep every record (`--trace`).
    pub trace: bool,
}

/// What `ccpop measure snp --firmware` computed.
pub struct SnpLaunchResult {
    /// The measurement.
    pub m: sev_backend::LaunchMeasurement,
    /// VMSA pages measured (synthesized or given).
    pub vmsa_pages: u32,
}

/// Reads a file a flag names; a missing or unreadable one is one line naming the flag.
fn read_flag(flag: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Usage(format!("{flag} {}: {e}", path.display())))
}

fn signature(a: &VcpuSigArgs, vmm: sev_backend::VmmType) -> Result<u32, Error> {
    let fms = [a.family, a.model, a.stepping];
    match (&a.vcpu_type, a.vcpu_sig, fms) {
        (Some(t), None, [None, None, None]) => sev_backend::VcpuType::by_name(t)
            .map(|t| t.signature())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--vcpu-type {t}: unknown vCPU type (known: {})",
                    sev_backend::VcpuType::names()
                ))
            }),
        (None, Some(s), [None, None, None]) => u32::try_from(s).map_err(|_| {
            Error::Usage(format!(
                "--vcpu-sig {s:#x}: does not fit in a 32-bit CPUID signature"
            ))
        }),
        (None, None, [Some(f), Some(m), Some(st)]) => sev_backend::cpu_signature(f, m, st)
            .map_err(|e| Error::Usage(format!("--vcpu-{}: {e}", e.field))),
        (None, None, [None, None, None]) if vmm != sev_backend::VmmType::Qemu => Ok(0),
        (None, None, [None, None, None]) => Err(Error::Usage(
            "--vcpus: QEMU's VMSAs need the vCPU signature: give --vcpu-type, --vcpu-sig or \
             --vcpu-family/--vcpu-model/--vcpu-stepping"
                .into(),
        )),
        (None, None, _) => Err(Error::Usage(
            "--vcpu-family, --vcpu-model and --vcpu-stepping go together".into(),
        )),
        _ => Err(Error::Usage(
            "give one of --vcpu-type, --vcpu-sig or --vcpu-family/--vcpu-model/--vcpu-stepping"
                .into(),
        )),
    }
}

/// Measures a whole SNP launch of the firmware at `path` as `sev-snp-measure` does; every
/// refusal is one line naming the flag. Reads everything first; writes nothing.
pub fn snp_launch(path: &Path, image: &[u8], a: &SnpLaunchArgs) -> Result<SnpLaunchResult, Error> {
    use sev_backend::{MeasureError, VmmType};
    let vmm: VmmType = a
        .vmm_type
        .parse()
        .map_err(|e| Error::Usage(format!("--vmm-type: {e}")))?;
    if a.initrd.is_some() && a.kernel.is_none() {
        return Err(Error::Usage("--initrd goes with --kernel".into()));
    }
    if a.append.is_some() && a.kernel.is_none() {
        return Err(Error::Usage("--append goes with --kernel".into()));
    }
    let vcpus = match a.vcpus {
        Some(0) => {
            return Err(Error::Usage(
                "--vcpus 0: a launch has at least one vCPU".into(),
            ))
        }
        Some(n) if n > sev_backend::MAX_VCPUS => {
            return Err(Error::Usage(format!(
                "--vcpus {n}: KVM allows at most {} vCPUs",
                sev_backend::MAX_VCPUS
            )))
        }
        Some(n) => Some(sev_backend::VcpuConfig {
            count: n,
            signature: signature(&a.sig, vmm)?,
            vmm,
            guest_features: a
                .guest_features
                .unwrap_or(sev_backend::SEV_FEATURE_SNP_ACTIVE),
        }),
        None => {
            if a.sig.vcpu_type.is_some() || a.sig.vcpu_sig.is_some() || a.sig.family.is_some() {
                return Err(Error::Usage(
                    "--vcpu-type/--vcpu-sig/--vcpu-family need --vcpus N".into(),
                ));
            }
            None
        }
    };
    if vcpus.is_some() && !a.vmsa.is_empty() {
        return Err(Error::Usage(
            "--vmsa gives VMSA pages made elsewhere; --vcpus synthesizes them: give one".into(),
        ));
    }
    let firmware_digest = match &a.ovmf_hash {
        Some(h) => Some(
            sev_backend::parse_digest(h)
                .map_err(|e| Error::Usage(format!("--snp-ovmf-hash: {e}")))?,
        ),
        None => None,
    };
    let policy = match &a.section_policy {
        Some(n) => Some(section_policy(n)?),
        None => None,
    };
    // SVSM: the image and the variable store's size.
    let svsm_image = match &a.svsm {
        Some(p) => Some(read_flag("--svsm", p)?),
        None => None,
    };
    let vars_size = match (&a.vars_file, a.vars_size) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "give one of --vars-size and --vars-file".into(),
            ))
        }
        (Some(f), None) => Some(
            std::fs::metadata(f)
                .map_err(|e| Error::Usage(format!("--vars-file {}: {e}", f.display())))?
                .len(),
        ),
        (None, s) => s,
    };
    if let Some(_img) = &svsm_image {
        if vars_size.is_none() {
            return Err(Error::Usage(
                "--svsm needs --vars-size N or --vars-file FILE".into(),
            ));
        }
        if a.kernel.is_some() || firmware_digest.is_some() || vmm != VmmType::Qemu {
            return Err(Error::Usage(
                "--svsm: an SVSM launch is QEMU's, without --kernel or --snp-ovmf-hash".into(),
            ));
        }
        if a.guest_features
            .is_some_and(|f| f != sev_backend::SEV_FEATURE_SNP_ACTIVE)
        {
            return Err(Error::Usage(
                "--guest-features: an SVSM launch's VMSAs have features 0x1".into(),
            ));
        }
    } else if vars_size.is_some() {
        return Err(Error::Usage(
            "--vars-size/--vars-file go with --svsm".into(),
        ));
    }
    // Measured direct boot: the kernel and initrd streamed through SHA-256 on two threads;
    // the command line checked against the kernel's setup header first.
    let kernel = match &a.kernel {
        Some(k) => {
            let mut header = Vec::with_capacity(4096);
            std::fs::File::open(k)
                .and_then(|f| {
                    std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut header)
                })
                .map_err(|e| Error::Usage(format!("--kernel {}: {e}", k.display())))?;
            if let (Some(max), Some(c)) = (sev_backend::kernel_cmdline_limit(&header), &a.append) {
                if c.len() > max {
                    return Err(Error::Usage(format!(
                        "--append: {} bytes, the kernel's setup header (cmdline_size) accepts at most {max}",
                        c.len()
                    )));
                }
            }
            Some(
                sev_backend::SevHashes::from_files(k, a.initrd.as_deref(), a.append.as_deref())
                    .map_err(|e| Error::Usage(format!("--{e}")))?,
            )
        }
        None => None,
    };
    let pages: Vec<(&Path, Vec<u8>)> = a
        .vmsa
        .iter()
        .map(|p| Ok((p.as_path(), read(p)?)))
        .collect::<Result<_, Error>>()?;
    for (p, page) in &pages {
        if page.len() != sev_backend::PAGE {
            return Err(Error::Usage(format!(
                "{}: a VMSA file must be exactly {} bytes (one page), this one has {}",
                p.display(),
                sev_backend::PAGE,
                page.len()
            )));
        }
    }
    let launch = sev_backend::SnpLaunch {
        firmware: image,
        firmware_digest,
        policy,
        vcpus,
        vmsa_pages: pages.iter().map(|(_, p)| &p[..]).collect(),
        kernel,
        svsm: match (&svsm_image, vars_size) {
            (Some(img), Some(vars_size)) => Some(sev_backend::SvsmLaunch {
                image: img,
                vars_size,
            }),
            _ => None,
        },
        threads: 0,
        trace: a.trace,
    };
    let m = sev_backend::measure_snp_launch(&launch).map_err(|e| match e {
        MeasureError::Hashes(e) => Error::Usage(format!("--kernel: {e}")),
        MeasureError::Vmsa(e) => Error::Usage(format!("--vcpus: {e}")),
        MeasureError::Image(e) if svsm_image.is_some() => {
            Error::Platform(format!("--svsm/--firmware: {e}"))
        }
        e => refused(path, e),
    })?;
    let vmsa_pages = m.vmsas.as_ref().map_or(pages.len() as u32, |v| v.count());
    Ok(SnpLaunchResult { m, vmsa_pages })
}

/// Standard base64 (RFC 4648, with padding), as `sev-snp-measure --output-format base64`.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    // The image is the first region (ending at 4 GiB); the metadata sections are not file
    // bytes.
    let offsets = (0..names.len()).map(|i| (i == 0).then_some(0)).collect();
    Ok(NamedPlan {
        platform: "snp",
        plan,
        names,
        offsets,
    })
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
    let mut offsets = Vec::with_capacity(regions.len());
    for r in regions {
        // A section with raw data is copied from the image at its data offset.
        offsets.push((r.info.raw_data_size > 0).then_some(u64::from(r.info.data_offset)));
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
        offsets,
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
    if image.len().is_multiple_of(granule) {
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
        offsets: vec![None, Some(0)],
    })
}

/// The realm parameters the options give, and the RIM of `plan` for that realm with one
/// runnable REC entering at `--load-gpa` with `x0..x7` zero, under the options' RMM version.
/// With the RIM's records when `trace` (empty otherwise).
pub fn cca_measure(
    plan: &NamedPlan<'_>,
    opts: &CcaOptions,
    trace: bool,
) -> Result<
    (
        cca_backend::RealmParams,
        String,
        Vec<cca_backend::RimRecord>,
    ),
    Error,
> {
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
    let platform = |e: cca_backend::Error| Error::Platform(e.to_string());
    if trace {
        let (rim, records) =
            cca_backend::measure_traced(&plan.plan, &realm, &[rec], &how).map_err(platform)?;
        return Ok((realm, rim.to_string(), records));
    }
    let rim =
        cca_backend::measure_with_options(&plan.plan, &realm, &[rec], &how).map_err(platform)?;
    Ok((realm, rim.to_string(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn base64_is_rfc4648() {
        // RFC 4648 section 10 test vectors.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
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
