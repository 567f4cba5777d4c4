//! The guest_memfd in-place conversion series (Ackerley Tng, "guest_memfd: In-place conversion
//! support"), pinned per posted version, and the ioctl seam its conversion goes through.
//!
//! The series adds a **guest_memfd** ioctl, `KVM_SET_MEMORY_ATTRIBUTES2`, that converts a file
//! range between shared and private by file offset, and makes the guest_memfd track which of
//! its pages are private. No released kernel carries it (Linux 7.3.4 has none of it:
//! `KVM_SET_MEMORY_ATTRIBUTES2`, `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` and
//! `gmem_in_place_conversion` appear nowhere in its `include/uapi/linux/kvm.h` or `virt/kvm/`).
//! This crate follows the posted patches of the versions [`GmemSeries`] names; the path has not
//! run on a kernel.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::raw::c_ulong;

use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

use crate::uapi::{self, kvm_memory_attributes2};
use crate::Error;

/// A version of the in-place conversion series whose user ABI this crate speaks. Numbers move
/// between versions and bases, so each one is pinned here, and a version this crate has not
/// read is refused by name ([`GmemSeries::from_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GmemSeries {
    /// v8, posted 2026-06-18 (46 patches, base kvm-x86/next `b7fbe9a1bf9e`), the newest version
    /// whose patch text is in the mailing-list archives.
    V8,
}

impl GmemSeries {
    /// The version a posted series number (`v<N>`) speaks, or [`Error::UnsupportedSeries`]
    /// naming it:
    /// - v1 to v7 (RFCs up to v5, then v6, v7): content modes came and went (v6 dropped them),
    ///   the capability and struct changed shape; no kernel to support runs them;
    /// - v9 and later (v13 was reported applied for 7.4): posted, but their patch text is not in
    ///   the archives this crate was checked against, and the merged capability number must
    ///   differ from v8's (mainline already uses 250);
    /// - anything else is not a version of the series.
    ///
    /// ```
    /// use gmem::{Error, GmemSeries};
    /// assert_eq!(GmemSeries::from_version(8)?, GmemSeries::V8);
    /// assert!(matches!(GmemSeries::from_version(13), Err(Error::UnsupportedSeries { version: 13, .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_version(version: u32) -> Result<GmemSeries, Error> {
        let reason = match version {
            8 => return Ok(GmemSeries::V8),
            1..=7 => {
                "an earlier version, whose ABI (content modes, capability, struct) v8 replaced; \
                 this crate speaks v8"
            }
            9..=13 => {
                "a later version whose patch text this crate was not checked against (its \
                 numbers may differ from v8's); this crate speaks v8"
            }
            _ => "not a posted version of the series; this crate speaks v8",
        };
        Err(Error::UnsupportedSeries { version, reason })
    }

    /// The series version number.
    pub fn version(self) -> u32 {
        match self {
            GmemSeries::V8 => 8,
        }
    }

    /// `KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES` as this version numbers it (v8: 250, patch 17/46).
    pub fn cap_guest_memfd_memory_attributes(self) -> u32 {
        match self {
            GmemSeries::V8 => uapi::KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES_V8,
        }
    }

    /// The `KVM_SET_MEMORY_ATTRIBUTES2` request number of this version (v8: `0xC080AED2`).
    pub fn set_memory_attributes2(self) -> c_ulong {
        match self {
            GmemSeries::V8 => uapi::KVM_SET_MEMORY_ATTRIBUTES2,
        }
    }

    /// Whether converting a range that is partly private already destroys the data of its
    /// private part (the known data-loss case of v8; a fix was posted on 2026-07-05, and whether
    /// a later version carries it could not be checked: their patch text is not in the
    /// archives). On such a version, [`GuestMemfd::convert`](crate::GuestMemfd::convert) never
    /// asks the kernel to convert a page that is already in the target state: it converts only
    /// the runs of the request whose state changes.
    pub fn partial_conversion_loses_data(self) -> bool {
        match self {
            GmemSeries::V8 => true,
        }
    }
}

impl fmt::Display for GmemSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.version())
    }
}

/// The one call of the per-guest_memfd conversion path, as a seam: the real ioctl
/// ([`KernelAttributes`]) or, in tests, a model of the series (`gmem::testing::SeriesModel`,
/// feature `test-utils`).
pub trait AttributesIoctl: fmt::Debug + Send + Sync {
    /// Issues `KVM_SET_MEMORY_ATTRIBUTES2` (request `request`) on the guest_memfd `fd` with
    /// `arg`, which the kernel may write back (`error_offset`). `Err` carries the errno.
    fn set_memory_attributes2(
        &mut self,
        fd: BorrowedFd<'_>,
        request: c_ulong,
        arg: &mut kvm_memory_attributes2,
    ) -> Result<(), errno::Error>;
}

/// The real `KVM_SET_MEMORY_ATTRIBUTES2`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelAttributes;

impl AttributesIoctl for KernelAttributes {
    fn set_memory_attributes2(
        &mut self,
        fd: BorrowedFd<'_>,
        request: c_ulong,
        arg: &mut kvm_memory_attributes2,
    ) -> Result<(), errno::Error> {
        // SAFETY: `fd` is an open fd borrowed for the call; `arg` is a valid, exclusively
        // borrowed kvm_memory_attributes2 of the 128 bytes the request number encodes, which the
        // kernel reads and may write back; it lives across the call.
        let ret = unsafe { ioctl_with_mut_ref(&fd.as_raw_fd(), request, arg) };
        if ret == 0 {
            Ok(())
        } else {
            Err(errno::Error::last())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned_and_others_refused_by_name() {
        let v8 = GmemSeries::from_version(8).unwrap();
        assert_eq!(v8.version(), 8);
        assert_eq!(v8.to_string(), "v8");
        // Written out from v8 patch 17/46 and 13/46.
        assert_eq!(v8.cap_guest_memfd_memory_attributes(), 250);
        assert_eq!(v8.set_memory_attributes2(), 0xC080_AED2);
        assert!(v8.partial_conversion_loses_data());
        for (n, word) in [
            (1, "earlier"),
            (7, "earlier"),
            (9, "later"),
            (13, "later"),
            (0, "not a posted"),
            (99, "not a posted"),
        ] {
            match GmemSeries::from_version(n) {
                Err(e @ Error::UnsupportedSeries { version, .. }) => {
                    assert_eq!(version, n);
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("v{n}")) && msg.contains(word),
                        "{msg}"
                    );
                }
                other => panic!("v{n}: {other:?}"),
            }
        }
    }
}
