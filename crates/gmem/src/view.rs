//! [`SharedView`]: the host's `MAP_SHARED` mapping of a shared range.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use vm_memory::volatile_memory::{Error as VolatileError, VolatileMemory, VolatileSlice};
use vm_memory::{
    AtomicAccess, Bytes, MemoryRegionAddress, MmapRegion, ReadVolatile, WriteVolatile,
};

use crate::range::page_size;
use crate::{Error, GuestMemfd};

/// A `MAP_SHARED` mapping of a shared, page-aligned range of a [`GuestMemfd`], unmapped on drop.
///
/// It borrows the handle, so the handle cannot [`convert`](GuestMemfd::convert) a range to
/// private while the view lives. All access goes through `&self` with shared-memory semantics
/// (like vm-memory: the guest may access the same memory concurrently): copies are volatile-safe
/// `memcpy`s through vm-memory's `VolatileSlice`, never Rust references into guest memory.
///
/// Offsets taken by the methods are relative to the start of the view.
///
/// For vm-memory: the view implements [`Bytes<MemoryRegionAddress>`], and
/// [`as_volatile_slice`](Self::as_volatile_slice) gives a `VolatileSlice` (which implements
/// `Bytes<usize>`). For a `GuestRegionMmap`, see [`GuestMemfd::into_guest_region`].
pub struct SharedView<'g> {
    region: MmapRegion<()>,
    offset: u64,
    len: u64,
    _gmem: PhantomData<&'g GuestMemfd>,
}

impl fmt::Debug for SharedView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedView")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("addr", &self.region.as_ptr())
            .finish()
    }
}

/// Zeroes used by [`SharedView::fill_zero`].
static ZEROS: [u8; 16384] = [0; 16384];

impl<'g> SharedView<'g> {
    pub(crate) fn new(region: MmapRegion<()>, offset: u64, len: u64) -> SharedView<'g> {
        SharedView {
            region,
            offset,
            len,
            _gmem: PhantomData,
        }
    }

    /// Offset of the view in the guest_memfd.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the view in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always `false`: a view is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole view as a vm-memory `VolatileSlice` (which implements `Bytes<usize>`).
    pub fn as_volatile_slice(&self) -> VolatileSlice<'_, ()> {
        self.region.as_volatile_slice()
    }

    /// Checks `[at, at + len)` lies in the view (an empty range at the end is allowed) and
    /// returns the slice for it.
    fn slice(&self, at: u64, len: u64) -> Result<VolatileSlice<'_, ()>, Error> {
        let oob = Error::OutOfBounds {
            offset: at,
            len,
            size: self.len,
        };
        let end = at
            .checked_add(len)
            .ok_or(Error::RangeOverflow { offset: at, len })?;
        if end > self.len {
            return Err(oob);
        }
        // In bounds of the mapping, whose length is a usize: both conversions succeed.
        match (usize::try_from(at), usize::try_from(len)) {
            (Ok(a), Ok(l)) => self.region.get_slice(a, l).map_err(|_| oob),
            _ => Err(oob),
        }
    }

    /// Copies `data` into the view at `offset_in_view` (a `memcpy`).
    pub fn write_at(&self, offset_in_view: u64, data: &[u8]) -> Result<(), Error> {
        let s = self.slice(offset_in_view, data.len() as u64)?;
        s.copy_from(data);
        Ok(())
    }

    /// Fills `buf` from the view at `offset_in_view` (a `memcpy`).
    pub fn read_at(&self, offset_in_view: u64, buf: &mut [u8]) -> Result<(), Error> {
        let s = self.slice(offset_in_view, buf.len() as u64)?;
        s.copy_to(buf);
        Ok(())
    }

    /// Writes `len` zero bytes at `offset_in_view`.
    pub fn fill_zero(&self, offset_in_view: u64, len: u64) -> Result<(), Error> {
        let s = self.slice(offset_in_view, len)?;
        let mut at = 0;
        while at < s.len() {
            let n = (s.len() - at).min(ZEROS.len());
            // `at + n <= s.len()`, so the subslice exists.
            if let Ok(part) = s.subslice(at, n) {
                part.copy_from(&ZEROS[..n]);
            }
            at += n;
        }
        Ok(())
    }

    /// `madvise(MADV_POPULATE_WRITE)` over the pages covering `[offset_in_view, +len)`: allocates
    /// and maps them writable now, so a following copy takes no page faults.
    pub fn populate_write(&self, offset_in_view: u64, len: u64) -> Result<(), Error> {
        let s = self.slice(offset_in_view, len)?;
        if len == 0 {
            return Ok(());
        }
        let page = page_size() as usize;
        let base = self.region.as_ptr() as usize;
        let start = s.ptr_guard().as_ptr() as usize;
        // The view starts page-aligned, so rounding down stays inside it; rounding up the end
        // stays inside too since the view's length is a whole number of pages.
        let lo = start - (start - base) % page;
        let hi = (start + s.len()).div_ceil(page) * page;
        // SAFETY: [lo, hi) lies within the mapping owned by `self.region` (see above);
        // MADV_POPULATE_WRITE only faults its pages in and does not change their contents.
        let ret =
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_POPULATE_WRITE) };
        if ret != 0 {
            return Err(Error::Io {
                op: "madvise(MADV_POPULATE_WRITE)",
                offset: self.offset + offset_in_view,
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

fn addr(a: MemoryRegionAddress) -> Result<usize, VolatileError> {
    usize::try_from(a.0).map_err(|_| VolatileError::OutOfBounds { addr: usize::MAX })
}

impl Bytes<MemoryRegionAddress> for SharedView<'_> {
    type E = VolatileError;

    fn write(&self, buf: &[u8], a: MemoryRegionAddress) -> Result<usize, Self::E> {
        self.as_volatile_slice().write(buf, addr(a)?)
    }

    fn read(&self, buf: &mut [u8], a: MemoryRegionAddress) -> Result<usize, Self::E> {
        self.as_volatile_slice().read(buf, addr(a)?)
    }

    fn write_slice(&self, buf: &[u8], a: MemoryRegionAddress) -> Result<(), Self::E> {
        self.as_volatile_slice().write_slice(buf, addr(a)?)
    }

    fn read_slice(&self, buf: &mut [u8], a: MemoryRegionAddress) -> Result<(), Self::E> {
        self.as_volatile_slice().read_slice(buf, addr(a)?)
    }

    fn read_volatile_from<F: ReadVolatile>(
        &self,
        a: MemoryRegionAddress,
        src: &mut F,
        count: usize,
    ) -> Result<usize, Self::E> {
        self.as_volatile_slice()
            .read_volatile_from(addr(a)?, src, count)
    }

    fn read_exact_volatile_from<F: ReadVolatile>(
        &self,
        a: MemoryRegionAddress,
        src: &mut F,
        count: usize,
    ) -> Result<(), Self::E> {
        self.as_volatile_slice()
            .read_exact_volatile_from(addr(a)?, src, count)
    }

    fn write_volatile_to<F: WriteVolatile>(
        &self,
        a: MemoryRegionAddress,
        dst: &mut F,
        count: usize,
    ) -> Result<usize, Self::E> {
        self.as_volatile_slice()
            .write_volatile_to(addr(a)?, dst, count)
    }

    fn write_all_volatile_to<F: WriteVolatile>(
        &self,
        a: MemoryRegionAddress,
        dst: &mut F,
        count: usize,
    ) -> Result<(), Self::E> {
        self.as_volatile_slice()
            .write_all_volatile_to(addr(a)?, dst, count)
    }

    fn store<T: AtomicAccess>(
        &self,
        val: T,
        a: MemoryRegionAddress,
        order: Ordering,
    ) -> Result<(), Self::E> {
        self.as_volatile_slice().store(val, addr(a)?, order)
    }

    fn load<T: AtomicAccess>(&self, a: MemoryRegionAddress, order: Ordering) -> Result<T, Self::E> {
        self.as_volatile_slice().load(addr(a)?, order)
    }
}
