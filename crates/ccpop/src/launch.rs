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

/// The IGVM policy named `name`.
pub fn igvm_policy(name: &str) -> Result<cc_image::IgvmPolicy, Error> {
    match name {
        "kvm" => Ok(cc_image::IgvmPolicy::KVM),
        "reference" => Ok(cc_image::IgvmPolicy::REFERENCE),
        other => Err(Error::Usage(format!(
            "--igvm-policy {other}: unknown (known: kvm, reference)"
        ))),
    }
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
        assert!(igvm_policy("qemu")
            .unwrap_err()
            .to_string()
            .contains("known: kvm, reference"));
    }
}
