//! Intel TDX for [`cc_populate`]: the TD launch ioctls through KVM, and MRTD computed offline
//! from the same plan.
//!
//! - [`TdxBackend`] runs the launch steps (`KVM_TDX_CAPABILITIES`, `KVM_TDX_INIT_VM`, the
//!   split irqchip, `KVM_CREATE_VCPU`, `KVM_SET_CPUID2`, `KVM_TDX_INIT_VCPU`,
//!   `KVM_TDX_FINALIZE_VM`) in the order Linux 6.18.2 and 7.3.4 enforce, refusing a step out of order
//!   with a typed error naming the missing step ([`Error::StepMissing`], [`Error::TooLate`]),
//!   builds `INIT_VM`'s CPUID from the host's ([`init_vm_cpuid`]), and implements
//!   [`cc_populate::Backend`]:
//!   ranges are made private first, then added with `KVM_TDX_INIT_MEM_REGION` (with
//!   `KVM_TDX_MEASURE_MEMORY_REGION` for measured roles), from a separate, page-aligned source
//!   (TDX cannot encrypt in place). Partial progress is read from the region the kernel writes
//!   back, so an interrupted run resumes exactly where the kernel stopped; a failed page add or
//!   measure is unrecoverable (in 6.18 and 7.3, differently: [`Kernel`]) and stops with
//!   [`Unrecoverable`], which lists the
//!   pages in the TD.
//! - Before its first TDX command the backend checks that the VM is a TD ([`check_td`]).
//! - Every behaviour relied on is traced to Linux 6.18.2 and 7.3.4 (`arch/x86/kvm/vmx/tdx.c`,
//!   `virt/kvm/guest_memfd.c`): see the Kernel conformance table in the crate's README.
//! - The ioctls go through the [`TdxIoctl`] trait: [`KvmTdx`] issues them on real VM/vCPU fds,
//!   `testing::TdxModel` (feature `test-utils`) follows the kernel's code for tests, per
//!   release ([`Kernel::from_release`] picks the one the host runs).
//! - [`Mrtd`] computes MRTD record by record; [`measure_plan`] computes it for a
//!   [`cc_populate::Plan`], through the same role mapping ([`page_op`]) the backend uses.
//! - [`tdvf`] parses a TDVF image's TDX metadata and plans its sections
//!   ([`tdvf::plan_regions`], [`tdvf::measure`]), with the PAGE_AUG disagreement between tools
//!   as a named policy ([`tdvf::PageAugPolicy`]).
//!
//! Features: `kvm` (the backend and its KVM crates) and `measure` (MRTD, through cc-hash), both
//! on by default; either builds alone (see the crate's README).
//!
//! Never run on TDX hardware here: the machine this was built on has no TDX, so the ioctl path
//! is tested against the model and [`probe`] is tested to refuse on the real `/dev/kvm`.
//!
//! ```
//! use cc_populate::{Driver, MemoryLayout, PlanBuilder, Role};
//! use tdx_backend::testing::TdxModel;
//! use tdx_backend::uapi::SPLIT_IRQCHIP_IOAPIC_PINS;
//! use tdx_backend::{init_vm_cpuid, measure_plan, TdParams, TdxBackend, TDX_CAPS};
//!
//! let firmware = vec![0x90u8; 16 << 10];
//! let plan = PlanBuilder::new()
//!     .source(0xffff_c000, Role::Measured, &firmware)
//!     .zero(0x80_0000, 8 << 10)
//!     .build(&TDX_CAPS, &MemoryLayout::unbounded())?;
//!
//! // A real VMM passes `KvmTdx::new(&vm)` (see the README); here the kernel model stands in,
//! // and `TdxModel::host_cpuid()` for the host's KVM_GET_SUPPORTED_CPUID.
//! let host = TdxModel::host_cpuid();
//! let mut td = TdxBackend::new(TdxModel::new());
//! let caps = td.capabilities()?;
//! let cpuid = init_vm_cpuid(&host, &caps.cpuid, 48)?;
//! td.init_vm(&TdParams { cpuid, ..Default::default() })?;
//! td.enable_split_irqchip(SPLIT_IRQCHIP_IOAPIC_PINS)?;
//! for id in 0..2 {
//!     td.create_vcpu(id)?;
//!     td.set_cpuid(id, &host)?; // with CPUID.1:ECX.x2APIC, before INIT_VCPU
//!     td.init_vcpu(id, 0x80_0000)?;
//! }
//! let report = Driver::new(&mut td).run(&plan)?;
//! assert!(report.is_complete());
//! td.finalize()?;
//! assert_eq!(td.ioctl().mrtd(), Some(measure_plan(&plan)?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "kvm")]
mod backend;
#[cfg(feature = "kvm")]
mod ioctl;
mod kernel;
#[cfg(feature = "kvm")]
mod measure;
#[cfg(feature = "measure")]
mod mrtd;
pub mod quote;

pub mod status;
pub mod tdvf;
// Test support (a model of the kernel's TDX commands): only with the `test-utils` feature.
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;
pub mod uapi;

#[cfg(feature = "kvm")]
pub use backend::{
    init_mem_region_errno_meaning, init_mem_region_errno_meaning_on, init_vm_cpuid, AddedRange,
    LaunchStep, PageState, TdParams, TdState, TdxBackend, TdxCapabilities, Unrecoverable,
    VcpuState, BOUNCE_SIZE, INIT_VM_ATTEMPTS,
};
#[cfg(feature = "kvm")]
pub use ioctl::{check_td, create_td_vm, probe, KvmTdx, SeriesKernel, TdxIoctl};
pub use kernel::{Assumed, Kernel, KernelChoice};
#[cfg(all(feature = "kvm", feature = "measure"))]
pub use measure::{
    measure_plan, measure_plan_into, measure_plan_with, ExtendOrder, MeasureOptions,
};
#[cfg(feature = "kvm")]
pub use measure::{page_op, PageOp, TDX_CAPS};
#[cfg(feature = "measure")]
pub use mrtd::{Mrtd, MrtdRecord, MrtdStep, CHUNKS_PER_PAGE, EXTEND_CHUNK, RECORD_SIZE};

/// The TDX page size.
pub const PAGE_SIZE: u64 = 4096;

#[cfg(feature = "kvm")]
const _: () = assert!(PAGE_SIZE == cc_populate::PAGE_SIZE);

/// Everything this crate refuses or fails with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This KVM (or this VM) has no TDX.
    #[error("TDX not supported by this KVM: {reason}")]
    NotSupported {
        /// What the probe found.
        reason: String,
    },
    /// The host has TDX, but this VM was not created as a TD ([`check_td`]); no TDX command
    /// was sent.
    #[error("this VM is not a TD: {reason}")]
    NotATd {
        /// What the check found.
        reason: String,
    },
    #[cfg(feature = "kvm")]
    /// A populate failure the kernel cannot recover from: the TD can neither take that page
    /// again nor be finalized with the measurement the plan expects. Says which pages are in
    /// the TD. See [`Unrecoverable`].
    #[error("{0}")]
    Unrecoverable(Box<Unrecoverable>),
    #[cfg(feature = "kvm")]
    /// A launch step refused before any ioctl: a step it needs has not been done through this
    /// backend ([`TdxBackend`] documents the order and the kernel rule behind each guard).
    #[error("{step} refused before any ioctl: {missing} must come first ({why})")]
    StepMissing {
        /// The step refused.
        step: LaunchStep,
        /// The step that must come first.
        missing: LaunchStep,
        /// The kernel's rule, with its file, function and version.
        why: &'static str,
    },
    #[cfg(feature = "kvm")]
    /// A launch step refused before any ioctl: it cannot come after a step already done.
    #[error("{step} refused before any ioctl: not after {done} ({why})")]
    TooLate {
        /// The step refused.
        step: LaunchStep,
        /// The step already done that rules it out.
        done: LaunchStep,
        /// The kernel's rule, with its file, function and version.
        why: &'static str,
    },
    /// A kernel release this crate does not follow ([`Kernel::from_release`]).
    #[error("Linux {release:?}: {reason}")]
    KernelUnsupported {
        /// The release string.
        release: String,
        /// Why it is refused.
        reason: String,
    },
    #[cfg(feature = "kvm")]
    /// A vCPU command with no vCPU fd to send it on (none created through the layer, none
    /// lent, or not the id asked); refused before any ioctl.
    #[error("{step} refused before any ioctl: no vCPU fd to send it on ({reason})")]
    NoVcpu {
        /// The step refused.
        step: LaunchStep,
        /// What is missing.
        reason: String,
    },
    /// A TDX ioctl failed.
    #[error("{op} failed: errno {errno} ({}){}{}", std::io::Error::from_raw_os_error(*errno), hw_error_text(*hw_error), detail_text(detail))]
    Ioctl {
        /// The sub-command.
        op: &'static str,
        /// The errno.
        errno: i32,
        /// The TDX module status KVM reported in `hw_error` (0 = none).
        hw_error: u64,
        /// More context.
        detail: String,
    },
    #[cfg(feature = "kvm")]
    /// A plan region whose role TDX has no page operation for.
    #[error("region {region} [{gpa:#x}..+{len:#x}): role {role} has no TDX page operation")]
    RoleUnsupported {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The role.
        role: cc_populate::Role,
    },
    /// A plan region whose content cannot be measured.
    #[error("region {region} [{gpa:#x}..+{len:#x}): cannot measure: {reason}")]
    Content {
        /// Region index.
        region: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Why.
        reason: String,
    },
    /// `KVM_TDX_INIT_VM` parameters Linux 6.18.2 refuses for every host
    /// (`arch/x86/kvm/vmx/tdx.c: setup_tdparams`); refused before the ioctl.
    #[error("KVM_TDX_INIT_VM: CPUID {field} = {value:#x}: {reason}")]
    InvalidParam {
        /// The CPUID leaf and field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The kernel's rule, with its function.
        reason: String,
    },
    /// The image is not a TDVF image (no OVMF GUID table footer, no TDX metadata GUID).
    #[error("not a TDVF image: {reason}")]
    NotTdvf {
        /// What is missing.
        reason: String,
    },
    /// The TDVF metadata is malformed.
    #[error("TDVF metadata at image offset {offset:#x}: {reason}")]
    TdvfMetadata {
        /// Image offset of the offending structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A TDVF section is malformed or cannot be planned.
    #[error("TDVF section {index} ({kind}, GPA {gpa:#x}, size {size:#x}): {reason}")]
    TdvfSection {
        /// Section index in the metadata.
        index: usize,
        /// Its type name.
        kind: String,
        /// Its guest-physical address.
        gpa: u64,
        /// Its memory size.
        size: u64,
        /// What is wrong.
        reason: String,
    },
    #[cfg(feature = "kvm")]
    /// A plan built from a TDVF image was refused.
    #[error("the TDVF plan was refused: {0}")]
    Plan(#[from] cc_populate::PlanError),
    /// A TDX quote that does not parse.
    #[error("TDX quote: {reason}")]
    Quote {
        /// Why.
        reason: String,
    },
}

impl Error {
    #[cfg(feature = "kvm")]
    fn ioctl(op: &'static str, errno: i32, hw_error: u64, detail: &str) -> Error {
        Error::Ioctl {
            op,
            errno,
            hw_error,
            detail: detail.to_string(),
        }
    }
}

fn hw_error_text(hw: u64) -> String {
    if hw == 0 {
        String::new()
    } else {
        format!(
            ", TDX module status {} ({hw:#x}): {}",
            status::name(hw),
            status::meaning(hw)
        )
    }
}

fn detail_text(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
