//! The interface a platform implements: what it declares, and the call that populates one chunk.

use std::borrow::Cow;
use std::fmt;

use crate::{Role, RoleSet};

/// 4 KiB, the base page size of every platform here.
pub const PAGE_SIZE: u64 = 4096;
/// 2 MiB, the first hugepage size.
pub const HUGE_2M: u64 = 2 << 20;
/// 1 GiB, the second hugepage size.
pub const HUGE_1G: u64 = 1 << 30;

/// How guest memory becomes private around populate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Conversion {
    /// Nothing is private: a plain (non-confidential) guest_memfd VM.
    NotNeeded,
    /// The range must be private before the populate call (SNP, TDX): the driver asks the backend
    /// to convert each region first, unless the caller already did
    /// ([`ConversionPolicy::CallerConverted`](crate::ConversionPolicy::CallerConverted)).
    BeforePopulate,
    /// The populate call makes the range private itself (Arm CCA delegates granules as it goes).
    ByPopulate,
}

/// How a [`Conversion::BeforePopulate`] backend populates content that is already in place
/// ([`Content::InPlace`](crate::Content::InPlace): written through the shared view of
/// guest_memfd before the run), as the running kernel allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum InPlacePopulate {
    /// The backend handles in-place chunks its own way (e.g. copying them out before the
    /// conversion): the driver converts and hands it [`ChunkSource::InPlace`] as before.
    #[default]
    Backend,
    /// The kernel populates the pages where they are, from a zero source (SNP
    /// `KVM_SEV_SNP_LAUNCH_UPDATE` with `uaddr` 0, TDX `KVM_TDX_INIT_MEM_REGION` with
    /// `source_addr` 0), the pages already private (in-place conversion series v8, patches
    /// 22/46 and 23/46). The driver converts the region, then hands [`ChunkSource::InPlace`]
    /// chunks that keep a 2 MiB-aligned region in whole 2 MiB units.
    ZeroSource,
    /// The running kernel cannot populate in place (no in-place conversion: SNP answers `EIO`,
    /// TDX `EOPNOTSUPP`). The driver copies the content out to a separate source before
    /// converting, only where the caller allowed it
    /// ([`DriverOptions::in_place_fallback`](crate::DriverOptions::in_place_fallback) and a
    /// reader, [`Driver::with_in_place_reader`](crate::Driver::with_in_place_reader)); else it
    /// stops before converting anything.
    Unavailable,
}

/// What a backend declares about its platform. The plan is validated against it and the driver
/// follows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BackendCaps {
    /// The platform's page granule in bytes (a power of two, at least 4 KiB): every region's
    /// address and length must be a multiple of it.
    pub granule: u64,
    /// The largest chunk one populate call takes, in bytes (a multiple of `granule`).
    pub max_chunk: u64,
    /// Whether chunking keeps 2 MiB / 1 GiB aligned spans whole (cutting only at the largest
    /// hugepage boundary that fits in `max_chunk`), so the backend can map them as hugepages.
    pub hugepage_chunks: bool,
    /// Whether the platform can populate content already written in place in the shared view of
    /// guest_memfd ([`Content::InPlace`](crate::Content::InPlace)).
    pub in_place: bool,
    /// How memory becomes private.
    pub conversion: Conversion,
    /// The roles the platform understands.
    pub roles: RoleSet,
}

impl BackendCaps {
    /// Checks the declaration itself: granule a power of two of at least 4 KiB, `max_chunk` a
    /// non-zero multiple of it.
    pub fn check(&self) -> Result<(), String> {
        if !self.granule.is_power_of_two() || self.granule < PAGE_SIZE {
            return Err(format!(
                "granule {:#x} is not a power of two >= 4 KiB",
                self.granule
            ));
        }
        if self.max_chunk == 0 || !self.max_chunk.is_multiple_of(self.granule) {
            return Err(format!(
                "max_chunk {:#x} is not a non-zero multiple of the granule {:#x}",
                self.max_chunk, self.granule
            ));
        }
        Ok(())
    }

    /// The alignment at which chunks are cut: the largest hugepage size (1 GiB, 2 MiB) that fits
    /// in `max_chunk` when `hugepage_chunks` is set, else the granule.
    pub fn cut_alignment(&self) -> u64 {
        if self.hugepage_chunks {
            for h in [HUGE_1G, HUGE_2M] {
                if self.max_chunk >= h && h >= self.granule {
                    return h;
                }
            }
        }
        self.granule
    }
}

/// Where one chunk's bytes come from, as handed to [`Backend::populate`].
#[derive(Clone, Copy, Debug)]
pub enum ChunkSource<'s> {
    /// Copy (or have the firmware copy) these bytes; exactly the chunk's length.
    Bytes(&'s [u8]),
    /// The bytes are already in the shared view of guest_memfd at the chunk's address.
    InPlace,
    /// The chunk's content is zeros (for content-carrying roles the backend supplies a zero page
    /// as source; for `Zero` and `Ripas` roles there is no content at all).
    Zero,
}

/// One populate call's worth of a region.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRequest<'s> {
    /// Index of the region in the plan (its given order).
    pub region: usize,
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes (a multiple of the granule, at most `max_chunk`).
    pub len: u64,
    /// The region's role.
    pub role: Role,
    /// The chunk's content.
    pub source: ChunkSource<'s>,
}

/// How a backend call failed, as far as the driver's retry logic is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ErrorKind {
    /// Interrupted by a signal (`EINTR`): retried from where it stopped.
    Interrupted,
    /// Try again (`EAGAIN`, a busy platform): retried from where it stopped.
    Again,
    /// The kernel or platform does not offer this operation.
    Unsupported,
    /// A hard failure: the driver stops.
    Failed,
}

impl ErrorKind {
    /// Whether the driver retries this kind.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Interrupted | ErrorKind::Again)
    }
}

/// A platform's own error code (SNP firmware status, TDX module `hw_error`, RMM status).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlatformCode {
    /// The numeric code as the platform reports it.
    pub code: u64,
    /// Its name from the platform specification (e.g. `SEV_RET_INVALID_PARAM`).
    pub name: Cow<'static, str>,
}

impl fmt::Display for PlatformCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name, self.code)
    }
}

/// An error from a backend call, with everything the platform said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    /// What the driver should do about it.
    pub kind: ErrorKind,
    /// The ioctl's errno, when it came from one.
    pub errno: Option<i32>,
    /// The platform's own code, when it gave one.
    pub platform: Option<PlatformCode>,
    /// Free-form detail (which ioctl, what it was asked).
    pub detail: String,
    /// The platform is left in a state no retry or resume can fix (e.g. a TDX page that
    /// guest_memfd marked prepared but the TDX module never added): the driver stops whatever
    /// the `kind`, and [`Driver::resume`](crate::Driver::resume) refuses the report. Set with
    /// [`unrecoverable`](BackendError::unrecoverable).
    pub unrecoverable: bool,
}

impl BackendError {
    /// An error of `kind` with a detail message.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        BackendError {
            kind,
            errno: None,
            platform: None,
            detail: detail.into(),
            unrecoverable: false,
        }
    }

    /// An error from an ioctl's errno: `EINTR` is [`ErrorKind::Interrupted`], `EAGAIN` and `EBUSY`
    /// [`ErrorKind::Again`], `ENOTTY`/`EOPNOTSUPP`/`ENOSYS` [`ErrorKind::Unsupported`], anything
    /// else [`ErrorKind::Failed`].
    pub fn from_errno(errno: i32, detail: impl Into<String>) -> Self {
        let kind = match errno {
            libc::EINTR => ErrorKind::Interrupted,
            libc::EAGAIN | libc::EBUSY => ErrorKind::Again,
            libc::ENOTTY | libc::EOPNOTSUPP | libc::ENOSYS => ErrorKind::Unsupported,
            _ => ErrorKind::Failed,
        };
        BackendError {
            kind,
            errno: Some(errno),
            platform: None,
            detail: detail.into(),
            unrecoverable: false,
        }
    }

    /// This error, marked unrecoverable: its kind becomes [`ErrorKind::Failed`] (never
    /// retried) and a report stopped by it cannot be resumed.
    ///
    /// ```
    /// use cc_populate::{BackendError, ErrorKind};
    /// let e = BackendError::from_errno(libc::EBUSY, "page half-added").unrecoverable();
    /// assert_eq!(e.kind, ErrorKind::Failed);
    /// assert!(e.unrecoverable);
    /// assert!(e.to_string().starts_with("unrecoverable"));
    /// ```
    pub fn unrecoverable(mut self) -> Self {
        self.kind = ErrorKind::Failed;
        self.unrecoverable = true;
        self
    }

    /// This error with the platform's code attached.
    pub fn with_platform(mut self, code: u64, name: impl Into<Cow<'static, str>>) -> Self {
        self.platform = Some(PlatformCode {
            code,
            name: name.into(),
        });
        self
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            _ if self.unrecoverable => "unrecoverable",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Again => "busy, try again",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::Failed => "failed",
        };
        write!(f, "{kind}")?;
        if let Some(e) = self.errno {
            write!(
                f,
                ", errno {} ({})",
                e,
                std::io::Error::from_raw_os_error(e)
            )?;
        }
        if let Some(p) = &self.platform {
            write!(f, ", platform error {p}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for BackendError {}

/// What one populate call did: `done` bytes from the chunk's start (a multiple of the granule, at
/// most the chunk's length), and whether it ended in an error. Both can be set at once: a kernel
/// that populated some pages and was then interrupted reports both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Populated {
    /// Bytes populated from the chunk's start.
    pub done: u64,
    /// `Ok` if the call ended without an error (possibly with `done < len`: partial progress).
    pub result: Result<(), BackendError>,
}

impl Populated {
    /// The whole chunk of `len` bytes was populated.
    pub fn all(len: u64) -> Self {
        Populated {
            done: len,
            result: Ok(()),
        }
    }

    /// `done` bytes, then `err`.
    pub fn failed(done: u64, err: BackendError) -> Self {
        Populated {
            done,
            result: Err(err),
        }
    }
}

/// A platform backend: declares its capabilities and populates one chunk per call.
///
/// The driver ([`Driver`](crate::Driver)) calls [`populate`](Backend::populate) with chunks of a
/// validated plan, in plan order, each chunk at most once per byte; after partial progress it calls
/// again with the remainder. A backend must report exactly what it did: the driver's report, and
/// a caller's decision to resume or tear down, rest on it.
pub trait Backend {
    /// What the platform takes. Must not change while a plan runs.
    fn caps(&self) -> BackendCaps;

    /// The platform's name for how it treats `role` (e.g. SNP `PAGE_TYPE_CPUID`), for messages.
    fn page_type(&self, role: Role) -> Cow<'static, str> {
        Cow::Borrowed(role.name())
    }

    /// Makes `gpa..gpa+len` private before it is populated (for
    /// [`Conversion::BeforePopulate`] platforms). Returns the bytes converted from `gpa` and the
    /// error, if any, like [`Populated`]. The default refuses: a backend declaring
    /// `BeforePopulate` must implement it.
    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        let _ = len;
        Populated::failed(
            0,
            BackendError::new(
                ErrorKind::Unsupported,
                format!("this backend cannot convert memory to private (at {gpa:#x})"),
            ),
        )
    }

    /// Populates one chunk.
    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated;

    /// How in-place content is populated on this backend's running kernel (only asked on
    /// [`Conversion::BeforePopulate`] platforms, for regions with in-place content). The
    /// default, [`InPlacePopulate::Backend`], keeps the backend's own handling.
    fn in_place_populate(&self) -> InPlacePopulate {
        InPlacePopulate::Backend
    }
}

impl<B: Backend + ?Sized> Backend for &mut B {
    fn caps(&self) -> BackendCaps {
        (**self).caps()
    }
    fn page_type(&self, role: Role) -> Cow<'static, str> {
        (**self).page_type(role)
    }
    fn make_private(&mut self, gpa: u64, len: u64) -> Populated {
        (**self).make_private(gpa, len)
    }
    fn populate(&mut self, chunk: &ChunkRequest<'_>) -> Populated {
        (**self).populate(chunk)
    }
    fn in_place_populate(&self) -> InPlacePopulate {
        (**self).in_place_populate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_chunk: u64, huge: bool) -> BackendCaps {
        BackendCaps {
            granule: PAGE_SIZE,
            max_chunk,
            hugepage_chunks: huge,
            in_place: false,
            conversion: Conversion::NotNeeded,
            roles: RoleSet::COMMON,
        }
    }

    #[test]
    fn cut_alignment_picks_largest_fitting_hugepage() {
        assert_eq!(caps(HUGE_1G * 4, true).cut_alignment(), HUGE_1G);
        assert_eq!(caps(HUGE_1G - PAGE_SIZE, true).cut_alignment(), HUGE_2M);
        assert_eq!(caps(HUGE_2M, true).cut_alignment(), HUGE_2M);
        assert_eq!(caps(HUGE_2M - PAGE_SIZE, true).cut_alignment(), PAGE_SIZE);
        assert_eq!(caps(HUGE_1G, false).cut_alignment(), PAGE_SIZE);
    }

    #[test]
    fn caps_check() {
        assert_eq!(caps(PAGE_SIZE, false).check(), Ok(()));
        let chunk =
            |c: u64| format!("max_chunk {c:#x} is not a non-zero multiple of the granule 0x1000");
        assert_eq!(caps(0, false).check(), Err(chunk(0)));
        assert_eq!(
            caps(PAGE_SIZE + 1, false).check(),
            Err(chunk(PAGE_SIZE + 1))
        );
        let mut c = caps(PAGE_SIZE, false);
        c.granule = 2048;
        let granule = |g: u64| format!("granule {g:#x} is not a power of two >= 4 KiB");
        assert_eq!(c.check(), Err(granule(2048)));
        c.granule = 3 * 4096;
        assert_eq!(c.check(), Err(granule(3 * 4096)));
        // A 2 MiB granule with a 2 MiB chunk is fine; a 1 MiB chunk is not a multiple of it.
        c.granule = HUGE_2M;
        c.max_chunk = HUGE_2M;
        assert_eq!(c.check(), Ok(()));
        c.max_chunk = HUGE_2M / 2;
        assert!(c.check().unwrap_err().contains("granule 0x200000"));
    }

    #[test]
    fn errno_mapping_and_display() {
        assert_eq!(
            BackendError::from_errno(libc::EINTR, "").kind,
            ErrorKind::Interrupted
        );
        assert_eq!(
            BackendError::from_errno(libc::EAGAIN, "").kind,
            ErrorKind::Again
        );
        assert_eq!(
            BackendError::from_errno(libc::EBUSY, "").kind,
            ErrorKind::Again
        );
        assert_eq!(
            BackendError::from_errno(libc::ENOTTY, "").kind,
            ErrorKind::Unsupported
        );
        assert_eq!(
            BackendError::from_errno(libc::EIO, "").kind,
            ErrorKind::Failed
        );
        let e = BackendError::from_errno(libc::EIO, "SNP_LAUNCH_UPDATE")
            .with_platform(0x16, "SEV_RET_INVALID_PARAM");
        let s = e.to_string();
        assert!(s.contains("errno 5"), "{s}");
        assert!(s.contains("SEV_RET_INVALID_PARAM (0x16)"), "{s}");
        assert!(s.contains("SNP_LAUNCH_UPDATE"), "{s}");
    }
}
