//! The expected launch digest of a whole SNP launch from one call: firmware pages (or their
//! precomputed digest), metadata sections under the VMM's policy, the kernel hashes of a
//! measured direct boot, an SVSM, and the VMSAs KVM measures last.

#[cfg(feature = "kvm")]
use cc_populate::Plan;

#[cfg(feature = "kvm")]
use crate::chain::measure_plan_into;
use crate::chain::{LaunchDigest, PageRecord};
use crate::digest::{PageType, DIGEST_LEN};
use crate::hash::sha384;
use crate::ovmf::{
    check_regions, measure_regions, parse_ovmf, plan_ovmf_with, PlannedRegion, SectionPolicy,
};
use crate::sev_hashes::{kernel_hashes_section, HashesAreaError, SevHashes};
use crate::svsm::plan_svsm;
use crate::uapi::SNP_VMSA_GPA;
use crate::vmsa::{snp_vmsas, svsm_vmsas, VcpuConfig, VmsaError, Vmsas};
use crate::Error;

/// Why a launch cannot be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The firmware (or SVSM) image, or the plan made of it, is refused.
    #[error(transparent)]
    Image(#[from] Error),
    /// The VMSAs cannot be made.
    #[error(transparent)]
    Vmsa(#[from] VmsaError),
    /// The firmware has no usable place for the kernel hashes.
    #[error(transparent)]
    Hashes(#[from] HashesAreaError),
    /// The planned regions do not make a valid plan (they overlap, say).
    #[error("the planned regions are not a valid plan: {0}")]
    Plan(String),
    /// Options that do not go together.
    #[error("{0}")]
    Options(&'static str),
}

/// An SVSM under the firmware.
#[derive(Clone, Copy, Debug)]
pub struct SvsmLaunch<'a> {
    /// The SVSM image.
    pub image: &'a [u8],
    /// Size of the OVMF variable store between the firmware and the SVSM.
    pub vars_size: u64,
}

/// Everything that decides an SNP launch's digest (what `sev-snp-measure` takes).
#[derive(Clone, Debug, Default)]
pub struct SnpLaunch<'a> {
    /// The OVMF image (its metadata is always read).
    pub firmware: &'a [u8],
    /// The digest after the firmware's pages, given instead of hashing them
    /// (`--snp-ovmf-hash`).
    pub firmware_digest: Option<[u8; DIGEST_LEN]>,
    /// How metadata sections are populated (`None`: the policy of the vCPUs' VMM, or QEMU's).
    pub policy: Option<SectionPolicy>,
    /// The vCPUs whose VMSAs are measured last (`None`: no synthesized VMSAs).
    pub vcpus: Option<VcpuConfig>,
    /// VMSA pages made elsewhere, measured last (with `vcpus: None`).
    pub vmsa_pages: Vec<&'a [u8]>,
    /// The hashes of a measured direct boot.
    pub kernel: Option<SevHashes>,
    /// An SVSM (QEMU only; no kernel hashes, no precomputed firmware digest).
    pub svsm: Option<SvsmLaunch<'a>>,
    /// Threads for content hashes (0: the machine's parallelism).
    pub threads: usize,
    /// Keep every record ([`LaunchMeasurement::trace`]).
    pub trace: bool,
}

/// What [`measure_snp_launch`] computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchMeasurement {
    /// The launch digest.
    pub digest: [u8; DIGEST_LEN],
    /// The digest after the firmware image's pages alone (`sev-snp-measure --mode
    /// snp:ovmf-hash`).
    pub firmware_digest: [u8; DIGEST_LEN],
    /// The regions measured, in order: `(gpa, len, page type, what)`.
    pub regions: Vec<(u64, u64, PageType, String)>,
    /// The synthesized VMSAs (for `--dump-vmsa`).
    pub vmsas: Option<Vmsas>,
    /// Every `PAGE_INFO` record in order, when [`SnpLaunch::trace`] asked for them (after the
    /// given firmware digest, when [`SnpLaunch::firmware_digest`] replaced the image's pages).
    pub trace: Vec<PageRecord>,
}

/// The regions do not make one plan (overlap, alignment): [`MeasureError::Plan`].
fn plan_error(e: Error) -> MeasureError {
    MeasureError::Plan(e.to_string())
}

/// Adds `count` VMSA records of `page` (hashed once).
fn add_vmsas(ld: &mut LaunchDigest, vmsas: &Vmsas) {
    for (page, n) in vmsas.distinct() {
        let h = sha384(page);
        for _ in 0..n {
            ld.update_record(SNP_VMSA_GPA, PageType::Vmsa, &h);
        }
    }
}

/// The expected launch digest of `launch`, VMSAs included. The firmware's pages are hashed on
/// every core; each distinct VMSA page is hashed once.
///
/// ```no_run
/// use sev_backend::{measure_snp_launch, SevHashes, SnpLaunch, VcpuConfig, VcpuType, VmmType};
///
/// let firmware = std::fs::read("OVMF.amdsev.fd")?;
/// let kernel = std::fs::read("vmlinuz")?;
/// let launch = SnpLaunch {
///     firmware: &firmware,
///     vcpus: Some(VcpuConfig {
///         count: 4,
///         signature: VcpuType::by_name("EPYC-Genoa").unwrap().signature(),
///         vmm: VmmType::Qemu,
///         guest_features: 0x1,
///     }),
///     kernel: Some(SevHashes::new(&kernel, None, Some("console=ttyS0"))),
///     ..SnpLaunch::default()
/// };
/// let m = measure_snp_launch(&launch)?;
/// println!("{:02x?}", m.digest);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn measure_snp_launch(launch: &SnpLaunch<'_>) -> Result<LaunchMeasurement, MeasureError> {
    let start = |ld: LaunchDigest| {
        let ld = if launch.threads > 0 {
            ld.with_threads(launch.threads)
        } else {
            ld
        };
        if launch.trace {
            ld.traced()
        } else {
            ld
        }
    };
    let mut ld = start(LaunchDigest::new());
    if launch.vcpus.is_some() && !launch.vmsa_pages.is_empty() {
        return Err(MeasureError::Options(
            "synthesized VMSAs and VMSA pages made elsewhere do not go together",
        ));
    }
    if let Some(svsm) = launch.svsm {
        if launch.kernel.is_some() || launch.firmware_digest.is_some() {
            return Err(MeasureError::Options(
                "an SVSM launch takes no kernel hashes and no precomputed firmware digest",
            ));
        }
        let plan = plan_svsm(launch.firmware, svsm.image, svsm.vars_size)?;
        let regions = plan.regions;
        measure_regions(&mut ld, &regions).map_err(plan_error)?;
        let firmware_digest = LaunchDigest::new()
            .update_then_digest(regions[0].gpa, launch.firmware)
            .map_err(MeasureError::Image)?;
        let vmsas = match launch.vcpus {
            Some(c) => Some(svsm_vmsas(c.count, c.signature, plan.entry)?),
            None => None,
        };
        return finish(ld, firmware_digest, &regions, vmsas, &launch.vmsa_pages);
    }
    let parsed = parse_ovmf(launch.firmware)?;
    let hashes = match &launch.kernel {
        Some(h) => Some(kernel_hashes_section(&parsed, h)?.1),
        None => None,
    };
    let vmm_policy = SectionPolicy::for_vmm(launch.vcpus.unwrap_or_default().vmm);
    let policy = launch.policy.unwrap_or(vmm_policy);
    let regions = plan_ovmf_with(launch.firmware, policy, hashes.as_deref())?;
    // Check the whole launch as one plan (no overlaps), then measure it, from the given
    // firmware digest when there is one.
    check_regions(&regions).map_err(plan_error)?;
    let firmware_digest = match launch.firmware_digest {
        Some(seed) => {
            ld = start(LaunchDigest::from_digest(seed));
            measure_regions(&mut ld, &regions[1..])?;
            seed
        }
        None => {
            measure_regions(&mut ld, &regions[..1])?;
            let after_image = ld.digest();
            measure_regions(&mut ld, &regions[1..])?;
            after_image
        }
    };
    let vmsas = match &launch.vcpus {
        Some(c) => Some(snp_vmsas(c, parsed.sev_es_reset_eip())?),
        None => None,
    };
    finish(ld, firmware_digest, &regions, vmsas, &launch.vmsa_pages)
}

fn finish(
    mut ld: LaunchDigest,
    firmware_digest: [u8; DIGEST_LEN],
    regions: &[PlannedRegion<'_>],
    vmsas: Option<Vmsas>,
    pages: &[&[u8]],
) -> Result<LaunchMeasurement, MeasureError> {
    if let Some(v) = &vmsas {
        add_vmsas(&mut ld, v);
    }
    for p in pages {
        ld.update_vmsa(SNP_VMSA_GPA, p)?;
    }
    Ok(LaunchMeasurement {
        trace: ld.take_records(),
        digest: ld.digest(),
        firmware_digest,
        regions: regions
            .iter()
            .map(|r| (r.gpa, r.len, r.page_type, r.what.clone()))
            .collect(),
        vmsas,
    })
}

impl LaunchDigest {
    fn update_then_digest(mut self, gpa: u64, image: &[u8]) -> Result<[u8; DIGEST_LEN], Error> {
        self.update_pages(gpa, PageType::Normal, Some(image), image.len() as u64)?;
        Ok(self.digest())
    }
}

/// The expected digest of a launch a VMM populates through this crate: `plan` in its order
/// (through [`PageType::for_role`], as [`crate::SnpBackend`] populates it), then the VMSAs
/// KVM measures at `KVM_SEV_SNP_LAUNCH_FINISH` for `vcpus`, the APs starting at
/// `ap_reset_eip` (the firmware's SEV-ES reset block, [`crate::OvmfImage::sev_es_reset_eip`]).
///
/// ```
/// use cc_populate::{MemoryLayout, PlanBuilder, Role};
/// use sev_backend::{measure_with_vcpus, verifier_caps, VcpuConfig, VmmType};
///
/// let firmware = vec![0xf4u8; 8192];
/// let plan = PlanBuilder::new()
///     .source(0xffff_e000, Role::Measured, &firmware)
///     .zeros(0x80_d000, 4096, Role::Secrets)
///     .build(&verifier_caps(), &MemoryLayout::unbounded())?;
/// let vcpus = VcpuConfig { count: 2, signature: 0x00a0_0f11, vmm: VmmType::Qemu, guest_features: 1 };
/// let digest = measure_with_vcpus(&plan, &vcpus, Some(0xffff_e004))?;
/// assert_eq!(digest.len(), 48);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "kvm")]
pub fn measure_with_vcpus(
    plan: &Plan<'_>,
    vcpus: &VcpuConfig,
    ap_reset_eip: Option<u32>,
) -> Result<[u8; DIGEST_LEN], MeasureError> {
    let vmsas = snp_vmsas(vcpus, ap_reset_eip)?;
    let mut ld = LaunchDigest::new();
    measure_plan_into(&mut ld, plan, None)?;
    add_vmsas(&mut ld, &vmsas);
    Ok(ld.digest())
}

/// Parses a hex SHA-384 digest (96 digits, either case, an optional `0x`).
pub fn parse_digest(hex: &str) -> Result<[u8; DIGEST_LEN], String> {
    let h = hex.strip_prefix("0x").unwrap_or(hex);
    if h.len() != 2 * DIGEST_LEN {
        return Err(format!(
            "{} hex digits, a SHA-384 digest has {}",
            h.len(),
            2 * DIGEST_LEN
        ));
    }
    let mut out = [0u8; DIGEST_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h
            .get(2 * i..2 * i + 2)
            .and_then(|d| u8::from_str_radix(d, 16).ok())
            .ok_or_else(|| format!("{:?} is not hex", h.get(2 * i..2 * i + 2).unwrap_or("")))?;
    }
    Ok(out)
}
