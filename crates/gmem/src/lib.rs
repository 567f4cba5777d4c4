//! A safe, owned handle on one KVM guest_memfd.
//!
//! What a VMM needs to own one guest_memfd:
//! - [`Capabilities`]: what the VM offers (guest_memfd, its flags, memory attributes, VM types),
//!   a plain struct with a one-line `Display` for logs;
//! - [`GuestMemfd::create`]: size and [`GmemFlags`], refusing with a typed [`Error`] what the
//!   kernel did not offer, before asking it; the handle owns the fd;
//! - [`GuestMemfd::map_shared`]: a [`SharedView`], the host's `MAP_SHARED` mapping of a range,
//!   with `memcpy`-speed reads and writes and vm-memory's `Bytes`; or
//!   [`GuestMemfd::into_guest_region`] for a vm-memory `GuestRegionMmap`;
//! - [`GuestMemfd::allocate`] / [`GuestMemfd::punch_hole`];
//! - [`GuestMemfd::adopt`]: a guest_memfd the VMM created, owned or borrowed ([`Adopted`]), with
//!   memslots the VMM keeps told by [`GuestMemfd::record_memslot`];
//! - [`GuestMemfd::bind`]: a [`Memslot`] (`KVM_SET_USER_MEMORY_REGION2` with
//!   `KVM_MEM_GUEST_MEMFD`), deleted on drop;
//! - [`GuestMemfd::bind_with_shared`]: a memslot whose shared pages come from a region the VMM
//!   owns and whose private pages from the guest_memfd (VMs with private memory);
//! - [`GuestMemfd::convert`]: shared <-> private through the VM's [`ConversionPath`] (VM-wide
//!   `KVM_SET_MEMORY_ATTRIBUTES`, or per guest_memfd `KVM_SET_MEMORY_ATTRIBUTES2` as the in-place
//!   conversion series [`GmemSeries`] defines it), or [`Error::ConversionUnsupported`] where
//!   there is none;
//! - [`MemoryFault`]: a `KVM_EXIT_MEMORY_FAULT` decoded; [`pre_fault_memory`]:
//!   `KVM_PRE_FAULT_MEMORY` to the end of a range, or how far it got.
//!
//! # Invariant
//! A range converted to private cannot still be written through a live shared view by safe code:
//! views borrow the handle and conversion takes `&mut`, the handle refuses to map private ranges,
//! a memslot's mapping is never exposed, and a vm-memory region consumes the handle. See
//! [`GuestMemfd`] and [`Memslot`] for the reasoning.
//!
//! Every bad input (zero or unaligned sizes, ranges past the end, `offset + len` overflow, flags
//! not offered, overlapping slots) gets an [`Error`] naming the range, and changes nothing.
//!
//! # Example
//! ```no_run
//! use gmem::{Capabilities, GmemFlags, GuestMemfd};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! println!("{}", Capabilities::probe(&vm));
//!
//! let gmem = GuestMemfd::create(&vm, 2 << 20, GmemFlags::MMAP | GmemFlags::INIT_SHARED)?;
//! let view = gmem.map_shared(0, 2 << 20)?;
//! view.populate_write(0, 4096)?;
//! view.write_at(0x10, b"hello")?;
//! let mut back = [0u8; 5];
//! view.read_at(0x10, &mut back)?;
//! assert_eq!(&back, b"hello");
//!
//! // Guest-physical 0..2 MiB is now this file; the slot is deleted when `slot` drops.
//! let slot = gmem.bind(0, 0, 0, 2 << 20)?;
//! # drop(slot);
//! # Ok(())
//! # }
//! ```
//!
//! Tests that need KVM name the capabilities they need and run under `testing::run` (feature
//! `test-utils`), which reports a test whose needs the kernel lacks as skipped, with the reason.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adopt;
mod by_gpa;
mod caps;
mod error;
mod fault;
mod flags;
mod gmem;
mod memslot;
#[cfg(feature = "test-utils")]
mod model;
mod range;
mod series;
// Test support (the harness for KVM tests): only with the `test-utils` feature.
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;
pub mod uapi;
mod view;

pub use adopt::{Adopted, AdoptedState};
pub use by_gpa::convert_gpa_range;
pub use caps::Capabilities;
pub use error::Error;
pub use fault::{pre_fault_memory, MemoryFault};
pub use flags::GmemFlags;
pub use gmem::{ConversionPath, GuestMemfd, MemoryState, EAGAIN_ATTEMPTS};
pub use memslot::Memslot;
pub use range::page_size;
pub use series::{AttributesIoctl, GmemSeries, KernelAttributes};
pub use view::SharedView;
