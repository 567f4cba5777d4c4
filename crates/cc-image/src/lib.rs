//! Launch images in, measurements out: IGVM files and plan files as [`cc_populate`] plans,
//! measured per platform by the platform's backend crate.
//!
//! A VMM or a verifier holds a confidential VM's initial memory as an IGVM file
//! ([`load_igvm`]) or as the VMM's own layout written down in a plan file
//! ([`load_plan_file`]). Both become a [`LaunchImage`]: regions in populate (and measurement)
//! order, their page data owned by the image. [`LaunchImage::plan`] gives the
//! [`cc_populate::Plan`] a VMM populates with its backend; [`LaunchImage::measure`] gives the
//! launch measurement a verifier expects, computed by `sev-backend`, `tdx-backend` or
//! `cca-backend` from that same plan.
//!
//! A VMM populating an IGVM file's pages (here on a plain guest_memfd VM):
//!
//! ```no_run
//! # #[cfg(all(feature = "igvm", feature = "snp"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cc_image::{load_igvm, Platform};
//! use cc_populate::plain::PlainBackend;
//! use cc_populate::{Backend, Driver, RoleSet, Role};
//! use gmem::{GmemFlags, GuestMemfd};
//!
//! let image = load_igvm(&std::fs::read("guest.igvm")?, Platform::Snp)?;
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! let gmem = GuestMemfd::create(&vm, 1 << 32, GmemFlags::MMAP | GmemFlags::INIT_SHARED)?;
//! let _slot = gmem.bind(0, 0, 0, 1 << 32)?;
//! let mut backend = PlainBackend::new()
//!     .with_roles(RoleSet::COMMON.with(Role::Secrets).with(Role::Cpuid));
//! backend.add_memslot(0, 0, &gmem, 0, 1 << 32)?;
//! let plan = image.plan(&backend.caps(), &backend.layout()?)?;
//! let report = Driver::new(&mut backend).run(&plan)?;
//! assert!(report.is_complete());
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "igvm", feature = "snp")))] fn main() {}
//! ```
//!
//! A verifier computing the expected measurement of a plan file:
//!
//! ```
//! # #[cfg(all(feature = "json", feature = "tdx"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("cc-image-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("fw.bin"), vec![0x90u8; 8192])?;
//! std::fs::write(dir.join("plan.json"), r#"{
//!     "version": 1, "platform": "tdx",
//!     "regions": [
//!         { "gpa": "0xffffe000", "size": 8192, "role": "measured", "file": "fw.bin" },
//!         { "gpa": "0x800000", "size": "0x1000", "role": "zero" } ] }"#)?;
//! let image = cc_image::load_plan_file(&dir.join("plan.json"))?;
//! let mrtd = image.measure()?;
//! assert_eq!(cc_image::hex(&mrtd).len(), 96);
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "json", feature = "tdx")))] fn main() {}
//! ```
//!
//! # Plan files
//!
//! Version 1 (JSON; numbers are JSON integers or `"0x..."` hex strings, full 64-bit, never
//! read through floating point; paths are relative to the plan file's folder; unknown fields
//! are refused):
//!
//! ```text
//! { "version": 1,
//!   "platform": "plain" | "snp" | "tdx" | "cca",
//!   "regions": [ { "gpa": N, "size": N,
//!                  "role": "measured" | "unmeasured" | "zero" | "secrets" | "cpuid" | "ripas",
//!                  "file": "PATH", "file_offset": N } ],   // file: measured/unmeasured only
//!   "snp": { "vmsa": [ { "file": "PATH", "gpa": N } ] },  // gpa default 0xfffffffff000
//!   "cca": { "hash": "sha256" | "sha512", "ipa_bits": N, "lpa2": bool,
//!            "num_bps": N, "num_wps": N, "sve_vl": N, "pmu_counters": N | null,
//!            "recs": [ { "pc": N, "gprs": [N x 8], "runnable": bool } ],
//!            "rmm": "1.0" | "2.0" } }                    // rmm optional, default "1.0"
//! ```
//!
//! Regions are populated and measured in the order listed; they never overlap, except that a
//! CCA `ripas` region may contain whole data regions listed after it. Only the section of the
//! plan's own platform may be present. Roles per platform: SNP measured/unmeasured/zero/
//! secrets/cpuid as the page types of those names, VMSA pages after all regions; TDX measured
//! = PAGE.ADD + MR.EXTEND, unmeasured and zero = PAGE.ADD; CCA measured/unmeasured =
//! DATA_CREATE with/without content measurement, ripas = RTT_INIT_RIPAS (measured under RMM
//! 1.0, not under RMM 2.0: `cca.rmm` names the version, and a file without it keeps the RMM 1.0
//! meaning it had before the field existed; series v12 and earlier target RMM 1.0, v13 and v14
//! RMM 2.0). Every problem is one [`Error`] line naming the field (`regions[3].file`,
//! `cca.sve_vl`) or region.
//!
//! # IGVM files
//!
//! See [`load_igvm_with`] for how headers map to regions and what is refused, and
//! [`IgvmPolicy`] for where KVM and the IGVM reference implementation measure differently.
//! The `igvm` crate's parser is called behind [`std::panic::catch_unwind`] ([`parse_igvm`]).

//!
//! # Features
//!
//! All on by default; a VMM or verifier for one platform turns off the defaults and names
//! what it needs (`default-features = false, features = ["snp", "igvm"]`), and builds no
//! other platform's backend crate:
//!
//! | feature | what it adds | dependencies |
//! |---|---|---|
//! | `snp` | SEV-SNP images: launch digest, traces | `sev-backend` |
//! | `tdx` | TDX images: MRTD, traces | `tdx-backend` |
//! | `cca` | Arm CCA images: RIM, traces, [`CcaLaunch`] | `cca-backend` |
//! | `igvm` | [`load_igvm`] and its policies, for the platforms built | `igvm`, `igvm_defs` |
//! | `json` | plan files ([`load_plan_file`], [`planfile`], [`Num`]), JSON-lines traces | `serde`, `serde_json` |
//!
//! [`Platform`] names every platform in every build; loading or measuring one whose feature
//! is off is refused with [`Error::NotBuilt`] ([`Platform::is_built`] says beforehand).
//! [`Platform::caps`] exists when all three platforms are built; [`Platform::try_caps`]
//! always.

#![deny(missing_docs)]

mod error;
#[cfg(feature = "igvm")]
mod igvm;
mod image;
#[cfg(feature = "json")]
mod num;
#[cfg(feature = "json")]
pub mod planfile;
pub mod trace;

pub use error::Error;
#[cfg(feature = "igvm")]
pub use igvm::{
    load_igvm, load_igvm_with, parse_igvm, EmptyPages, IgvmPolicy, VmsaGpa, VmsaPlacement,
    MAX_PARAMETER_AREA,
};
#[cfg(feature = "cca")]
pub use image::CcaLaunch;
pub use image::{
    hex, CcaOptions, ImageRegion, LaunchImage, Origin, ParameterUse, Platform, RequiredMemory,
    SharedPage, SnpIdBlock, SnpVmsa, DEFAULT_VMSA_GPA,
};
#[cfg(feature = "json")]
pub use num::Num;
#[cfg(feature = "json")]
pub use planfile::{load_plan_file, load_plan_file_as, parse_plan, PLAN_FILE_VERSION};
