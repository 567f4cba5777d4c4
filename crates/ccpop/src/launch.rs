//! `--igvm FILE` and `--plan FILE`: launch images read by `cc-image`, planned and measured by
//! it (and through it by the platform backends).

use std::path::Path;

use cc_image::{LaunchImage, Platform as ImagePlatform};
use cc_populate::MemoryLayout;

use crate::error::Error;
use crate::firmware::NamedPlan;

/// A cc-image refusal of `path`, as one line naming the file once.
fn refused(path: &Path, e: cc_image::Error) -> Error {
    let msg = e.to_string();
    let name = path.display().to_string();
    if msg.starts_with(&name) {
        Error::Platform(msg)
    } else {
        Error::Platform(format!("{name}: {msg}"))
    }
}

/// The IGVM policies `--igvm-policy` takes, by name: where SNP VMSAs are measured, and what a
/// measured page the file gives no bytes for becomes (cc-image's `EmptyPages`).
pub const IGVM_POLICIES: [(&str, cc_image::IgvmPolicy); 3] = [
    // VMSAs after every page at KVM's VMSA address; empty pages NORMAL pages of zeros.
    ("kvm", cc_image::IgvmPolicy::KVM),
    // VMSAs in file order at the file's address; empty pages NORMAL pages of zeros.
    ("reference", cc_image::IgvmPolicy::REFERENCE),
    // As `kvm`, and empty pages ZERO pages (PAGE_TYPE_ZERO), as Cloud Hypervisor sends them.
    ("cloud-hypervisor", cc_image::IgvmPolicy::CLOUD_HYPERVISOR),
];

/// The IGVM policy named `name` (one of [`IGVM_POLICIES`]).
pub fn igvm_policy(name: &str) -> Result<cc_image::IgvmPolicy, Error> {
    IGVM_POLICIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            let known: Vec<&str> = IGVM_POLICIES.iter().map(|(n, _)| *n).collect();
            Error::Usage(format!(
                "--igvm-policy {name}: unknown (known: {})",
                known.join(", ")
            ))
        })
}

/// Reads an IGVM file for `platform` (`snp` or `tdx`).
pub fn load_igvm(path: &Path, platform: &str, policy: &str) -> Result<LaunchImage, Error> {
    let policy = igvm_policy(policy)?;
    let platform: ImagePlatform = platform
        .parse()
        .map_err(|e: cc_image::Error| Error::Usage(e.to_string()))?;
    let bytes = crate::firmware::read(path)?;
    cc_image::load_igvm_with(&bytes, platform, policy).map_err(|e| refused(path, e))
}

/// Reads a plan file; when `platform` is given, the file must be for it.
pub fn load_plan(path: &Path, platform: Option<&str>) -> Result<LaunchImage, Error> {
    let image = cc_image::load_plan_file(path).map_err(|e| refused(path, e))?;
    if let Some(want) = platform {
        if image.platform().name() != want {
            return Err(Error::Usage(format!(
                "{}: the plan is for platform {}, not {want}",
                path.display(),
                image.platform()
            )));
        }
    }
    Ok(image)
}

/// The image's plan, validated against its platform's declared capabilities (no VM: an
/// unbounded memory layout), with each region named by where it came from.
pub fn plan<'a>(path: &Path, image: &'a LaunchImage) -> Result<NamedPlan<'a>, Error> {
    let platform = image.platform();
    let plan = image
        .plan(&platform.caps(), &MemoryLayout::unbounded())
        .map_err(|e| refused(path, e))?;
    Ok(NamedPlan {
        platform: platform.name(),
        plan,
        names: image
            .regions()
            .iter()
            .map(|r| r.origin().to_string())
            .collect(),
        offsets: vec![None; image.regions().len()],
    })
}

/// The image's launch measurement in lower-case hex.
pub fn measure(path: &Path, image: &LaunchImage) -> Result<String, Error> {
    let digest = image.measure().map_err(|e| refused(path, e))?;
    Ok(cc_image::hex(&digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_by_name() {
        assert_eq!(igvm_policy("kvm").unwrap(), cc_image::IgvmPolicy::KVM);
        assert_eq!(
            igvm_policy("reference").unwrap(),
            cc_image::IgvmPolicy::REFERENCE
        );
        // Cloud Hypervisor: KVM's VMSA placement, empty pages as ZERO pages.
        let ch = igvm_policy("cloud-hypervisor").unwrap();
        assert_eq!(ch, cc_image::IgvmPolicy::CLOUD_HYPERVISOR);
        assert_eq!(ch.empty_pages, cc_image::EmptyPages::ZeroPage);
        assert_eq!(ch.vmsa_placement, cc_image::IgvmPolicy::KVM.vmsa_placement);
        assert!(igvm_policy("qemu")
            .unwrap_err()
            .to_string()
            .contains("known: kvm, reference, cloud-hypervisor"));
    }
}
