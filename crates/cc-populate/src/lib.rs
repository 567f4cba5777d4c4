//! Platform-neutral population of a confidential VM's initial image into `guest_memfd`.
//!
//! A VMM describes the initial memory as a [`Plan`]: guest-physical regions, each with its
//! [`Content`] (bytes from a source, already written in place in the shared view of guest_memfd,
//! or zeros) and its [`Role`] (measured, unmeasured, zero, or a platform role such as the SNP
//! CPUID page). The [`PlanBuilder`] validates the regions once against what the platform's
//! [`Backend`] declares ([`BackendCaps`]) and the VM's memslots ([`MemoryLayout`]); every refusal
//! is a [`PlanError`] naming the region. The plan keeps the order regions were given in: every
//! platform's launch measurement is a running hash over the populate calls, so order is part of
//! the result (overlaps are checked through a sorted index).
//!
//! The [`Driver`] then runs the plan against a backend: it cuts regions into chunks the backend
//! takes (keeping aligned 2 MiB / 1 GiB spans whole, see [`Plan::chunks`]), converts memory to
//! private where the platform needs it, retries interrupted calls from where they stopped (with a
//! bound, and a guard against calls that succeed without progress), never populates a byte
//! twice, releases sources as they land when asked, and returns a [`Report`] of exactly what was
//! done, also when it stops part-way ([`RunError::Stopped`]). A stopped run resumes from its
//! report ([`Driver::resume`]): only from the newest report of that plan's run, once, and never
//! after a stop whose extent is unknown ([`ResumeRefusal`]).
//!
//! The [`plain`] module's backend populates ordinary (non-confidential) guest_memfd VMs through
//! the shared mapping; the [`guestcopy`] module's backend populates private memory the host
//! cannot write (software-protected VMs) by converting it first and having something inside the
//! VM copy the bytes in; the platform backends (SEV-SNP, TDX, Arm CCA) live in their own crates.
//!
//! The example drives a scripted backend from the `testing` module (feature `test-utils`):
//!
//! ```
//! use cc_populate::testing::{Answer, LedgerBackend};
//! use cc_populate::{Driver, ErrorKind, MemoryLayout, PlanBuilder, Role, RunError};
//!
//! let mut backend = LedgerBackend::new(2 << 20);
//! // The second call is interrupted after one page, the third fails hard.
//! backend.script.extend([Answer::ALL, Answer::fail(1, ErrorKind::Interrupted), Answer::fail(0, ErrorKind::Failed)]);
//! let image = vec![1u8; 4 << 20];
//! let plan = PlanBuilder::new()
//!     .source(0, Role::Measured, &image)
//!     .build(&backend.caps, &MemoryLayout::unbounded())?;
//! let mut driver = Driver::new(&mut backend);
//! let err = driver.run(&plan).unwrap_err();
//! let report = err.report().unwrap();
//! assert_eq!(report.regions[0].populated, (2 << 20) + 4096);
//! assert_eq!(report.stop.as_ref().unwrap().gpa, (2 << 20) + 4096);
//! // Resume: the rest is populated, nothing twice.
//! let report = driver.resume(&plan, report)?;
//! assert!(report.is_complete());
//! assert!(backend.twice.is_empty());
//! assert_eq!(backend.populated_bytes(), 4 << 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod driver;
mod guestmem;
mod plan;
mod role;
mod source;

pub mod guestcopy;
pub mod plain;
// Test support (a scripted, recording backend): only with the `test-utils` feature.
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;

pub use backend::{
    Backend, BackendCaps, BackendError, ChunkRequest, ChunkSource, Conversion, ErrorKind,
    InPlacePopulate, PlatformCode, Populated, HUGE_1G, HUGE_2M, PAGE_SIZE,
};
pub use driver::{
    ConversionPolicy, Driver, DriverOptions, InPlaceOutcome, Observer, Phase, RegionReport,
    RegionState, Report, ResumeRefusal, RunError, RunId, Stop, StopCause,
};
pub use guestmem::{GuestMemorySource, GuestSource};
pub use plan::{
    Chunks, Content, ContentError, ContentKind, InPlaceReader, MemoryLayout, Memslot, Plan,
    PlanBuilder, PlanError, Region, RegionBytes, RegionSpec,
};
pub use role::{Role, RoleSet};
pub use source::SourceBuf;
