//! Source buffers the engine may release once their content is populated.

use std::io::{self, Read};
use std::ptr::NonNull;

/// A page-aligned, anonymous, private memory buffer holding content to populate.
///
/// Unlike a borrowed slice, a `SourceBuf` belongs to the plan, so the driver can give its memory
/// back to the kernel (`madvise(MADV_DONTNEED)`) chunk by chunk as the content lands in guest
/// memory (see [`DriverOptions::release_sources`](crate::DriverOptions::release_sources)): the
/// initial image is then never held twice.
///
/// ```
/// use cc_populate::SourceBuf;
/// let mut buf = SourceBuf::new(8192).unwrap();
/// buf.as_mut_slice()[..5].copy_from_slice(b"hello");
/// assert_eq!(&buf.as_slice()[..5], b"hello");
/// assert_eq!(buf.len(), 8192);
/// ```
pub struct SourceBuf {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
}

// SAFETY: `SourceBuf` exclusively owns its private anonymous mapping; shared access only reads it
// (`as_slice`) and every mutation (`as_mut_slice`, `discard`) needs `&mut self`, exactly like a
// `Vec<u8>`, which is `Send + Sync`.
unsafe impl Send for SourceBuf {}
// SAFETY: see the `Send` impl above: `&SourceBuf` only allows reads.
unsafe impl Sync for SourceBuf {}

/// The host's page size in bytes.
pub(crate) fn host_page_size() -> u64 {
    page_size() as u64
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as usize
    } else {
        4096
    }
}

impl SourceBuf {
    /// A zero-filled buffer of `len` bytes (`len` may be 0).
    pub fn new(len: usize) -> io::Result<SourceBuf> {
        let ps = page_size();
        let map_len = len
            .checked_add(ps - 1)
            .map(|l| l & !(ps - 1))
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .max(ps);
        // SAFETY: an anonymous private mapping at an address chosen by the kernel; it aliases no
        // existing Rust object. The result is checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(SourceBuf { ptr, len, map_len })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> io::Result<SourceBuf> {
        let mut b = SourceBuf::new(data.len())?;
        b.as_mut_slice().copy_from_slice(data);
        Ok(b)
    }

    /// A buffer of `len` bytes filled from `reader`; fails if the reader ends early.
    pub fn from_reader<R: Read>(mut reader: R, len: usize) -> io::Result<SourceBuf> {
        let mut b = SourceBuf::new(len)?;
        reader.read_exact(b.as_mut_slice())?;
        Ok(b)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The content.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is page-aligned, non-null and valid for `map_len >= len` readable bytes
        // for the life of `self` (the mapping is only unmapped in `drop`); every byte is
        // initialised (an anonymous mapping starts zero-filled, `discard` leaves zero-fill pages,
        // and writes go through `as_mut_slice`); `len <= isize::MAX` (mmap succeeded for it);
        // and no `&mut` to it can exist while `&self` does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The content, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: valid, initialised and sized as argued in `as_slice`; `&mut self` makes this
        // the only reference to the mapping's bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Gives the whole pages inside `offset..offset+len` back to the kernel; they read as zeros
    /// afterwards. Partial pages at either end are kept. Returns the bytes released.
    pub fn discard(&mut self, offset: usize, len: usize) -> io::Result<usize> {
        let ps = page_size();
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let start = offset
            .checked_add(ps - 1)
            .map(|s| s & !(ps - 1))
            .unwrap_or(usize::MAX);
        // The last page may be released whole when the range reaches the end of the buffer:
        // the bytes past `len` belong to no one.
        let stop = if end == self.len {
            self.map_len.min(end + ps - 1) & !(ps - 1)
        } else {
            end & !(ps - 1)
        };
        if start >= stop {
            return Ok(0);
        }
        // SAFETY: `start..stop` is page-aligned and inside our own private anonymous mapping;
        // `&mut self` guarantees no slice of it is alive. MADV_DONTNEED on such a mapping only
        // replaces the pages with zero-fill-on-demand ones.
        let r = unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(start).cast(),
                stop - start,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((stop - start).min(self.len - start))
    }
}

impl Drop for SourceBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with exactly this address and length and is
        // unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
        }
    }
}

impl std::fmt::Debug for SourceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_pages(b: &SourceBuf) -> usize {
        let ps = page_size();
        let mut vec = vec![0u8; b.map_len / ps];
        // SAFETY: mincore reads the mapping's residency into `vec`, which has one byte per page.
        let r = unsafe { libc::mincore(b.ptr.as_ptr().cast(), b.map_len, vec.as_mut_ptr()) };
        assert_eq!(r, 0);
        vec.iter().filter(|v| **v & 1 != 0).count()
    }

    #[test]
    fn discard_releases_whole_pages_only() {
        let mut b = SourceBuf::new(4 * 4096 + 100).unwrap();
        b.as_mut_slice().fill(0xAB);
        assert_eq!(resident_pages(&b), 5);
        // Half a page in, to the middle of page 2: only page 1 is whole.
        assert_eq!(b.discard(2048, 2 * 4096).unwrap(), 4096);
        assert_eq!(resident_pages(&b), 4);
        assert!(b.as_slice()[4096..8192].iter().all(|v| *v == 0));
        assert_eq!(b.as_slice()[4095], 0xAB);
        assert_eq!(b.as_slice()[8192], 0xAB);
        // To the end: the partial last page goes too.
        assert_eq!(b.discard(3 * 4096, 4096 + 100).unwrap(), 4096 + 100);
        assert!(b.as_slice()[3 * 4096..].iter().all(|v| *v == 0));
        // Past the end, or overflowing: refused as invalid input, and nothing more is zeroed.
        let before = b.as_slice().to_vec();
        for (at, len) in [(0, b.len() + 1), (usize::MAX, 2)] {
            let e = b.discard(at, len).unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::InvalidInput,
                "{at:#x}+{len:#x}"
            );
        }
        assert_eq!(b.as_slice(), &before[..]);
    }

    #[test]
    fn from_reader_and_slice() {
        let data: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
        let b = SourceBuf::from_reader(&data[..], data.len()).unwrap();
        assert_eq!(b.as_slice(), &data[..]);
        // A reader that ends early: the read fails as io::Read::read_exact does.
        let e = SourceBuf::from_reader(&data[..10], 11).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let e = SourceBuf::new(0).unwrap();
        assert!(e.is_empty());
        assert_eq!(SourceBuf::from_slice(b"xy").unwrap().as_slice(), b"xy");
    }
}
