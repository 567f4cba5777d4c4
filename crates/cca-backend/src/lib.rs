//! Arm CCA realms for `cc-populate`: the launch ioctls of the CCA KVM series, and the Realm
//! Initial Measurement (RIM) computed offline from the same plan.
//!
//! - [`probe`] says whether this machine's KVM runs realms (a typed [`Error::NotSupported`]
//!   otherwise): the version's capability number, confirmed by creating a VM of its realm type
//!   (mainline reuses the numbers, not the type bit).
//! - [`CcaBackend`] implements [`cc_populate::Backend`] over a [`CcaIoctl`] layer
//!   ([`KvmCcaIoctl`] on a VM fd and its vCPU fds, or `testing::KernelModel` (feature `test-utils`)), speaking the
//!   series version the caller selects ([`UapiVersion`]: v14 and v13 in/out populate, v12
//!   bytes-returned populate, both after `KVM_SET_MEMORY_ATTRIBUTES`; v9 was dropped), with
//!   the launch steps around populate ([`CcaBackend::configure`], [`CcaBackend::activate`]).
//! - [`measure`] computes the RIM of a plan for a realm's [`RealmParams`] and [`RecParams`]
//!   (SHA-256 and SHA-512) under the RMM 1.0 or 2.0 rules ([`RmmVersion`]) in the launch
//!   order of the series ([`MeasureOrder`], through [`measure_with_options`]), via
//!   [`RimDigest`], which can also be driven record by record; [`ripas_split`] gives the RTT
//!   entries RIPAS initialisation is measured as.
//!
//! Populating a realm on v14 (the VM fd, memslots and vCPUs are the VMM's). The order matters:
//! the kernel creates the realm at the first populate and reads its SVE and debug parameters
//! from the vCPUs then, so every vCPU exists and is configured (finalized) before the run;
//! the realm is activated, and can no longer be populated, at the first `KVM_RUN`, which
//! needs an in-kernel vGIC (without one v12 leaves the realm dead). The breakpoint count is the
//! host's: the kernel refuses any change of `ID_AA64DFR0_EL1.BRPs`.
//!
//! ```no_run
//! use cc_populate::{Driver, MemoryLayout, Memslot, PlanBuilder, Role};
//! use cca_backend::{probe, CcaBackend, HashAlgo, KvmCcaIoctl, RealmParams, UapiVersion, CCA_CAPS};
//!
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let found = probe(&kvm, UapiVersion::V14)?;
//! // 1. The realm VM: bit 30 of the machine type on v14 (bit 8 up to v13).
//! let vm = kvm.create_vm_with_type(UapiVersion::V14.realm_vm_type(40))?;
//! // 2. guest_memfd memslots (KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD).
//! let mut ram = gmem::GuestMemfd::create(&vm, 1 << 30, gmem::GmemFlags::empty())?;
//! let _slot = ram.bind(0, 0, 0, 1 << 30)?;
//! // 3. Every vCPU, KVM_ARM_VCPU_INIT with PSCI 0.2 (and SVE if the realm has it).
//! let vcpus = vec![vm.create_vcpu(0)?, vm.create_vcpu(1)?];
//! // 4. The in-kernel vGIC (GICv3), initialised (KVM_DEV_ARM_VGIC_CTRL_INIT) before KVM_RUN.
//! let mut gic = kvm_bindings::kvm_create_device {
//!     type_: kvm_bindings::kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
//!     fd: 0,
//!     flags: 0,
//! };
//! let vgic = vm.create_device(&mut gic)?;
//! let layout = MemoryLayout::new(&[Memslot { slot: 0, gpa: 0, size: 1 << 30 }])?;
//! let firmware = std::fs::read("QEMU_EFI.fd")?;
//! let plan = PlanBuilder::new()
//!     .zeros(0, 1 << 30, Role::Ripas)
//!     .source(0, Role::Measured, &firmware)
//!     .build(&CCA_CAPS, &layout)?;
//! let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
//! // The breakpoint count is the host's (the kernel refuses to change it); watchpoints may be
//! // lowered.
//! let mut b = [0u8; 8];
//! vcpus[0].get_one_reg(cca_backend::uapi::KVM_REG_ID_AA64DFR0_EL1, &mut b)?;
//! realm.set_debug_from_id_aa64dfr0(u64::from_le_bytes(b));
//! realm.num_wps = 2;
//! // Conversions go through `ram`, so its record of what is private stays true.
//! let io = KvmCcaIoctl::new(&vm)
//!     .with_vcpus(&vcpus)
//!     .with_vgic(&vgic)
//!     .with_guest_memfd(&mut ram);
//! let mut backend = CcaBackend::new(io, &found);
//! // 5. Debug counts and SVE length onto the vCPUs (and SVE finalized).
//! backend.configure(&realm)?;
//! // 6. Made private (KVM_SET_MEMORY_ATTRIBUTES), then populated; resumable after a stop.
//! let report = Driver::new(&mut backend).run(&plan)?;
//! assert!(report.is_complete());
//! // 7. Nothing to issue: the first KVM_RUN activates the realm (refused here without a vGIC).
//! backend.activate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The expected RIM of the same launch, for a verifier (no KVM needed): the same plan and
//! realm parameters, one [`RecParams`] per vCPU in creation order (only vCPU id 0 runnable: the
//! kernel creates the RECs so), measured in the series' order under the rules of the RMM the
//! host's firmware follows ([`MeasureOptions::for_series`]; the rules are the firmware
//! build's, [`UapiVersion::rmm_rules`]):
//!
//! ```
//! use cc_populate::{MemoryLayout, PlanBuilder, Role};
//! use cca_backend::{
//!     measure_with_options, HashAlgo, MeasureOptions, RealmParams, RecParams, RmmVersion,
//!     UapiVersion, CCA_CAPS,
//! };
//!
//! let firmware = vec![0x14u8; 64 << 10];
//! let plan = PlanBuilder::new()
//!     .zeros(0, 1 << 30, Role::Ripas)
//!     .source(0, Role::Measured, &firmware)
//!     .build(&CCA_CAPS, &MemoryLayout::unbounded())?;
//! let mut realm = RealmParams::new(HashAlgo::Sha256, 40);
//! realm.set_debug_from_id_aa64dfr0(0x0030_5006); // as read from the host's vCPU
//! let vcpus = [
//!     RecParams { pc: 0, gprs: [0; 8], runnable: true },
//!     RecParams { pc: 0, gprs: [0; 8], runnable: false },
//! ];
//! let rim = measure_with_options(&plan, &realm, &vcpus, &MeasureOptions::for_series(UapiVersion::V14, RmmVersion::V2_0))?;
//! println!("RIM {rim}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The launch through KVM (feature `kvm`): the cc-populate backend and the ioctl layer.
#[cfg(feature = "kvm")]
mod backend;
mod error;
mod exit;
#[cfg(feature = "kvm")]
mod ioctl;
// The RIM (feature `measure`); measuring a cc-populate plan also needs `kvm` (cc-populate).
#[cfg(feature = "measure")]
mod measure;
mod params;
mod ripas;
#[cfg(feature = "token")]
pub mod token;
mod version;

// Test support (a model of the CCA series' ioctls): only with the `test-utils` feature.
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;
pub mod uapi;

#[cfg(feature = "kvm")]
pub use backend::{
    cca_caps, Activation, CcaBackend, InPlaceStager, RealmState, BOUNCE_SIZE, CCA_CAPS,
    IN_PLACE_REFUSED,
};
pub use error::Error;
pub use exit::{Ripas, RipasChange, KVM_EXIT_MEMORY_FAULT, KVM_MEMORY_EXIT_FLAG_PRIVATE};
#[cfg(feature = "kvm")]
pub use ioctl::{probe, probe_with, CapSource, CcaIoctl, KvmCcaIoctl, Probe, PROBE_IPA_BITS};
#[cfg(feature = "measure")]
pub use measure::{
    data_descriptor, hash, rec_descriptor, ripas_descriptor, MeasureOrder, Measurement, Rim,
    RimDigest, RimRecord, RimStep, DESCRIPTOR_SIZE, DESC_TYPE_DATA, DESC_TYPE_REC, DESC_TYPE_RIPAS,
    RMI_MEASURE_CONTENT,
};
// Measuring a plan, in the RMM version and launch order a RIM is measured under.
#[cfg(all(feature = "measure", feature = "kvm"))]
pub use measure::{measure, measure_traced, measure_with, measure_with_options, MeasureOptions};
pub use params::{
    realm_offsets, rec_offsets, HashAlgo, RealmParams, RecParams, REALM_FLAG_LPA2, REALM_FLAG_PMU,
    REALM_FLAG_SVE, REC_FLAG_RUNNABLE, RMI_PARAMS_SIZE,
};
pub use params::{
    RmmVersion, ID_AA64DFR0_EL1_BRPS_SHIFT, ID_AA64DFR0_EL1_WRPS_SHIFT, PMCR_EL0_N_SHIFT,
};
pub use ripas::{ripas_split, rtt_geometry, RipasSplit, RttGeometry, GRANULE};
pub use version::{PopulateRequest, UapiVersion};

#[cfg(all(doctest, feature = "kvm", feature = "measure"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
