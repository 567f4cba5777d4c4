//! A worked integration: a VMM that owns its VM and launches an SEV-SNP guest from an IGVM
//! file through [`cc_image`], [`cc_populate`] and [`sev_backend`], lending them everything.
//!
//! The VMM ([`Vmm`]) owns, as a rust-vmm VMM does:
//! - its hypervisor layer `H` ([`SnpHypervisor`]): on KVM ([`KvmSnp`]) the VM fd, the
//!   `/dev/sev` fd, the guest_memfd and the vCPU fds, as plain fields;
//! - its guest memory, a vm-memory `GuestMemoryMmap` (the shared pages its devices use);
//! - its memslots, each backed by the guest_memfd.
//!
//! It issues `KVM_SEV_INIT2` and `LAUNCH_START` itself and creates its vCPUs, as part of its
//! VM setup; then cc-image reads the IGVM file ([`cc_image::load_igvm_with`], with the
//! caller's empty-page policy), the VMM writes the pages into its guest memory (as an IGVM
//! loader does), and sev-backend's [`SnpBackend::attach`](sev_backend::SnpBackend::attach)
//! takes over the launch the VMM started, through an ioctl layer that *borrows* the VM fd and
//! `/dev/sev` ([`sev_backend::KvmSevRef`]) and a guest_memfd handle adopted *borrowed*
//! ([`gmem::GuestMemfd::adopt`]) with the VMM's memslots recorded in it. cc-populate's driver
//! reads each region's bytes from the VMM's guest memory at its address
//! ([`cc_populate::GuestSource`]). Nothing of the crates' outlives the call that borrowed it.
//!
//! [`PopulatePath::PagePerCall`] is the same launch populated as Cloud Hypervisor does it,
//! one `KVM_SET_MEMORY_ATTRIBUTES` and one `LAUNCH_UPDATE` per 4 KiB page, for comparison.
//!
//! With the `model` feature, `ModelVm` puts sev-backend's model of the kernel's SEV-SNP
//! commands behind the same seam, so the launch runs without SEV-SNP hardware:
//!
//! ```
//! # #[cfg(feature = "model")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use vmm_example::{LaunchOptions, ModelVm, Vmm};
//!
//! let igvm = vmm_example::testing::sample_file(); // 1059 pages, built with the igvm crate
//! let mut vmm = Vmm::new(ModelVm::new(Default::default()), &[(0, 16 << 20)])?;
//! let report = vmm.launch_igvm(&igvm, &LaunchOptions::default())?;
//! assert!(report.digest_matches());
//! println!("{report}");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "model"))] fn main() {}
//! ```
//!
//! On a host without SEV-SNP, [`KvmSnp::create`] ends in
//! [`sev_backend::Error::NotSupported`] ([`Error::is_not_supported`]).

#![deny(missing_docs)]

mod error;
mod hypervisor;
#[cfg(feature = "model")]
pub mod testing;
mod vmm;

pub use error::Error;
#[cfg(feature = "model")]
pub use hypervisor::ModelVm;
pub use hypervisor::{KvmSnp, SnpHypervisor};
pub use vmm::{IoctlCounts, LaunchOptions, LaunchReport, PopulatePath, Vmm};
