//! AMD SEV-SNP for [`cc_populate`]: the launch through KVM, and its launch digest computed
//! offline from the same plan.
//!
//! - [`SnpBackend`]: the launch sequence (`KVM_SEV_INIT2`, `KVM_SEV_SNP_LAUNCH_START`, populate
//!   through `KVM_SEV_SNP_LAUNCH_UPDATE`, `KVM_SEV_SNP_LAUNCH_FINISH`, all through
//!   `KVM_MEMORY_ENCRYPT_OP`) and the [`cc_populate::Backend`] that maps plan roles to SNP page
//!   types ([`PageType::for_role`]), makes ranges private first, follows the kernel's partial
//!   progress, retries `EIO` with firmware status 0 a bounded number of times and names its
//!   many meanings, and handles a rejected CPUID page by an explicit [`CpuidPolicy`] (also
//!   when the kernel reports the rejection as success).
//! - [`LaunchDigest`] / [`measure`]: the chained SHA-384 over each page's `PAGE_INFO`, as the
//!   firmware computes it, through the same role mapping, plus VMSA pages.
//! - [`parse_ovmf`] / [`plan_ovmf`]: an OVMF image's SEV metadata and the plan a QEMU-style VMM
//!   populates from it, under a named [`SectionPolicy`].
//! - [`measure_snp_launch`]: a whole launch from one call, as `sev-snp-measure` computes it:
//!   the VMSAs of N vCPUs for QEMU, EC2 or GCE ([`snp_vmsas`]), the kernel hashes table of a
//!   measured direct boot ([`SevHashes`]), a precomputed firmware digest, a COCONUT-SVSM
//!   ([`plan_svsm`]); [`measure_with_vcpus`] adds the VMSAs to a plan a VMM populates.
//! - `testing` (feature `test-utils`): an in-process model of the SNP launch commands of Linux
//!   6.12, 6.18 and 7.3 ([`KernelVersion`], chosen from the running kernel for the real ioctls),
//!   and of a kernel with the in-place conversion series v8 ([`SeriesKernel`]: `uaddr` 0
//!   populates a private page where it lies), each behaviour cited to its kernel function and
//!   version or patch. The in-place path follows the posted series and has not run on a kernel.
//! - [`KvmSevIoctl`] owns or borrows ([`KvmSevRef`]) the VM fd and `/dev/sev`;
//!   [`SnpBackend::attach`] takes over a launch the VMM started; `examples/launch.rs` is the
//!   whole launch.
//!
//! Never verified on SEV-SNP hardware: the ioctl path is tested through `testing`'s model,
//! and the real `/dev/kvm` of a machine without SNP is tested to refuse with
//! [`Error::NotSupported`].
//!
//! ```
//! use cc_populate::{MemoryLayout, PlanBuilder, Role};
//! use sev_backend::{measure, verifier_caps, LaunchDigest, MeasureOptions, PageType};
//!
//! // The digest of a plan ...
//! let image = vec![0xf4u8; 4096];
//! let plan = PlanBuilder::new()
//!     .source(0xffff_f000, Role::Measured, &image)
//!     .zeros(0x80_e000, 4096, Role::Cpuid)
//!     .build(&verifier_caps(), &MemoryLayout::unbounded())?;
//! let digest = measure(&plan, &[], &MeasureOptions::default())?;
//!
//! // ... is the chain of its pages' records.
//! let mut ld = LaunchDigest::new();
//! ld.update_page(0xffff_f000, PageType::Normal, Some(&image))?;
//! ld.update_page(0x80_e000, PageType::Cpuid, None)?;
//! assert_eq!(ld.digest(), digest);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `kvm` (default): the launch through KVM ([`SnpBackend`], [`KvmSevIoctl`],
//!   [`KernelVersion`]) and everything that takes a `cc_populate` plan. Needs no hashing crate:
//!   a populate-only build is `--no-default-features --features kvm`.
//! - `measure` (default): the offline launch digest ([`LaunchDigest`], [`measure_snp_launch`],
//!   [`measure_ovmf`], [`measure_regions`], [`SevHashes`]). Needs no KVM crate and no
//!   `cc-populate`: a verifier's build is `--no-default-features --features measure`. With both,
//!   [`measure`] takes a `cc_populate::Plan`.
//! - `test-utils`: the `testing` model (implies `kvm`). `openssl`, `bench`: see `Cargo.toml`.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "measure")]
mod chain;
mod cpuid;
mod digest;
mod error;
#[cfg(feature = "measure")]
mod hash;
#[cfg(feature = "id-block")]
pub mod id_block;
#[cfg(feature = "kvm")]
mod ioctl;
#[cfg(feature = "kvm")]
mod kernel;
#[cfg(feature = "kvm")]
mod launch;
mod ovmf;
pub mod report;
#[cfg(feature = "measure")]
mod sev_hashes;
#[cfg(feature = "measure")]
mod snp_launch;
mod svsm;
mod vcpu_types;
mod vmsa;

// Test support (a model of the kernel's SNP commands): only with the `test-utils` feature.
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;
pub mod uapi;

#[cfg(all(feature = "measure", feature = "kvm"))]
pub use chain::{measure, measure_plan_into, MeasureOptions};
#[cfg(feature = "measure")]
pub use chain::{LaunchDigest, PageRecord, VmsaPage};
pub use cpuid::{
    cpuid_diff, parse_cpuid_table, snp_cpuid_table, CpuidLeaf, CpuidTable, LeafDiff,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
};
pub use digest::{page_info, PageType, DIGEST_LEN, PAGE, PAGE_INFO_LEN};
pub use error::{fw_error_name, Error, SEV_RET_INVALID_PARAM};
#[cfg(feature = "kvm")]
pub use ioctl::{
    check_lent, sev_cmd, KvmSevIoctl, KvmSevRef, SevCmd, SevIoctl, SevIoctlError, UpdateSource,
};
#[cfg(feature = "kvm")]
pub use kernel::{
    running_release, KernelChoice, KernelNote, KernelVersion, Release, SeriesKernel, KNOWN_KERNELS,
};
#[cfg(feature = "kvm")]
pub use launch::{
    probe, snp_caps, verifier_caps, AttachState, CpuidCorrection, CpuidPolicy, FinishParams,
    InPlaceMode, InitParams, LaunchConfig, LaunchState, SnpBackend, SnpSupport, StartParams,
    SEV_DEVICE, SNP_POLICY_DEBUG, SNP_POLICY_MASK_VALID, SNP_POLICY_RESERVED_MBO,
    SNP_POLICY_SINGLE_SOCKET, SNP_POLICY_SMT, SNP_VMSA_FEATURES_KNOWN,
};
pub use ovmf::{
    check_regions, parse_ovmf, plan_ovmf, plan_ovmf_with, Guid, GuidEntry, OvmfImage,
    PlannedRegion, SectionKind, SectionPolicy, SevMetadata, SevSection, FOUR_GIB,
    OVMF_TABLE_FOOTER_GUID, SEV_ES_RESET_BLOCK_GUID, SEV_METADATA_GUID, SEV_METADATA_SIGNATURE,
};
#[cfg(feature = "measure")]
pub use ovmf::{measure_ovmf, measure_regions};
#[cfg(feature = "measure")]
pub use sev_hashes::{
    hashes_area, kernel_cmdline_limit, kernel_hashes_section, BootFileError, HashesAreaError,
    SevHashes, MAX_KERNEL_HASHES_SECTION_LEN, SEV_CMDLINE_ENTRY_GUID, SEV_HASH_ENTRY_LEN,
    SEV_HASH_TABLE_HEADER_GUID, SEV_HASH_TABLE_LEN, SEV_HASH_TABLE_RV_GUID, SEV_INITRD_ENTRY_GUID,
    SEV_KERNEL_ENTRY_GUID, SEV_PADDED_HASH_TABLE_LEN,
};
#[cfg(all(feature = "measure", feature = "kvm"))]
pub use snp_launch::measure_with_vcpus;
#[cfg(feature = "measure")]
pub use snp_launch::{
    measure_snp_launch, parse_digest, LaunchMeasurement, MeasureError, SnpLaunch, SvsmLaunch,
};
pub use svsm::{plan_svsm, SvsmPlan, SVSM_INFO_GUID};
pub use vcpu_types::{
    cpu_signature, SignatureRange, VcpuType, MAX_FAMILY, MAX_MODEL, MAX_STEPPING, VCPU_TYPES,
};
pub use vmsa::{
    layout as vmsa_layout, snp_vmsas, svsm_vmsas, UnknownVmm, VcpuConfig, VmmType, VmsaError,
    Vmsas, BSP_RESET_EIP, MAX_VCPUS, SEV_FEATURE_DEBUG_SWAP, SEV_FEATURE_SNP_ACTIVE,
};
