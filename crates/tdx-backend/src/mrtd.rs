//! MRTD, the TD's build-time measurement, computed offline.
//!
//! The TDX module keeps MRTD as one running SHA-384 over fixed-format records (Intel TDX Module
//! ABI specification, TDH.MEM.PAGE.ADD and TDH.MR.EXTEND), finalized by TDH.MR.FINALIZE:
//!
//! - TDH.MEM.PAGE.ADD extends one 128-byte buffer: bytes 0..12 the ASCII `MEM.PAGE.ADD`,
//!   bytes 16..24 the page's GPA (little endian), every other byte zero.
//! - TDH.MR.EXTEND extends three 128-byte buffers: the first holds the ASCII `MR.EXTEND` at
//!   0..9 and the chunk's GPA at 16..24 (zero elsewhere), the other two the chunk's 256 bytes.
//!   KVM extends a measured page as 16 such chunks, in address order, right after adding it.
//!
//! Records are whole SHA-384 blocks, so the hasher never buffers a partial block: a page's 16
//! extend records go to the hasher as one 6 KiB run built in a reused buffer (headers written
//! once, the GPA and 256 data bytes per chunk copied in). The hash is `cc-hash`'s SHA-384, the
//! fastest single stream measured (with the `openssl` feature the system's libcrypto; see the
//! crate README).

use cc_hash::Sha384;

use crate::PAGE_SIZE;

/// Size of one MRTD extension buffer (one SHA-384 block).
pub const RECORD_SIZE: usize = 128;
/// Bytes of page content one TDH.MR.EXTEND measures.
pub const EXTEND_CHUNK: usize = 256;
/// TDH.MR.EXTEND calls per 4 KiB page.
pub const CHUNKS_PER_PAGE: usize = PAGE_SIZE as usize / EXTEND_CHUNK;
/// The ASCII tag of a TDH.MEM.PAGE.ADD record.
pub const PAGE_ADD_TAG: &[u8; 12] = b"MEM.PAGE.ADD";
/// The ASCII tag of a TDH.MR.EXTEND record.
pub const MR_EXTEND_TAG: &[u8; 9] = b"MR.EXTEND";
/// Offset of the GPA in both records.
pub const GPA_OFFSET: usize = 16;

const EXTEND_RECORD: usize = RECORD_SIZE + EXTEND_CHUNK;
const PAGE_RUN: usize = EXTEND_RECORD * CHUNKS_PER_PAGE;

/// An MRTD being computed, record by record, in the order the TDX module would see them.
///
/// ```
/// use tdx_backend::Mrtd;
/// let mut m = Mrtd::new();
/// let page = [0x90u8; 4096];
/// m.page_add(0xffff_f000);            // TDH.MEM.PAGE.ADD
/// m.extend_page(0xffff_f000, &page);  // 16 x TDH.MR.EXTEND
/// m.page_add(0x10_0000);              // an unmeasured page
/// let mrtd: [u8; 48] = m.finish();
/// assert_ne!(mrtd, [0u8; 48]);
/// ```
#[derive(Clone)]
pub struct Mrtd {
    ctx: Sha384,
    run: Box<[u8; PAGE_RUN]>,
    pages_added: u64,
    chunks_extended: u64,
    /// Every record, in order, when tracing ([`Mrtd::traced`]).
    trace: Option<Vec<MrtdRecord>>,
}

/// What one MRTD record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MrtdStep {
    /// TDH.MEM.PAGE.ADD of the page at `gpa`.
    PageAdd,
    /// TDH.MR.EXTEND of the 256-byte chunk at `gpa`; `chunk` is the chunk's SHA-384 (not a
    /// field of the record: the record holds the 256 bytes themselves).
    MrExtend {
        /// SHA-384 of the chunk's 256 bytes.
        chunk: [u8; 48],
    },
}

/// One record of an MRTD, as [`Mrtd::traced`] keeps them: the step and the MRTD as TDH.MR.FINALIZE
/// would return it right after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrtdRecord {
    /// The record's GPA field.
    pub gpa: u64,
    /// Which record.
    pub step: MrtdStep,
    /// The MRTD finalized after this record.
    pub mrtd: [u8; 48],
}

impl std::fmt::Debug for Mrtd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mrtd")
            .field("pages_added", &self.pages_added)
            .field("chunks_extended", &self.chunks_extended)
            .finish()
    }
}

impl Default for Mrtd {
    fn default() -> Self {
        Self::new()
    }
}

impl Mrtd {
    /// The MRTD of a freshly initialized TD (nothing added yet).
    pub fn new() -> Self {
        let mut run = Box::new([0u8; PAGE_RUN]);
        for c in 0..CHUNKS_PER_PAGE {
            let at = c * EXTEND_RECORD;
            run[at..at + MR_EXTEND_TAG.len()].copy_from_slice(MR_EXTEND_TAG);
        }
        Mrtd {
            ctx: Sha384::new(),
            run,
            pages_added: 0,
            chunks_extended: 0,
            trace: None,
        }
    }

    /// Keeps every record from now on ([`records`](Self::records)), with the MRTD after each:
    /// the trace of a launch, step by step. Each traced record finalizes a copy of the hash,
    /// so a traced MRTD is slower; the value is the same.
    ///
    /// ```
    /// use tdx_backend::{Mrtd, MrtdStep};
    /// let mut m = Mrtd::new().traced();
    /// m.page_add(0xffff_f000);
    /// m.extend_page(0xffff_f000, &[0x90u8; 4096]);
    /// let r = m.records();
    /// assert_eq!(r.len(), 17);
    /// assert_eq!((r[0].gpa, r[0].step), (0xffff_f000, MrtdStep::PageAdd));
    /// assert_eq!(r[16].gpa, 0xffff_f000 + 15 * 256);
    /// assert_eq!(r[16].mrtd, m.current());
    /// ```
    pub fn traced(mut self) -> Self {
        self.trace.get_or_insert_with(Vec::new);
        self
    }

    /// The records kept since [`traced`](Self::traced) (empty when not tracing).
    pub fn records(&self) -> &[MrtdRecord] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// Takes the records kept so far, leaving tracing on with none kept.
    pub fn take_records(&mut self) -> Vec<MrtdRecord> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, gpa: u64, step: MrtdStep) {
        if self.trace.is_some() {
            let mrtd = self.current();
            if let Some(t) = &mut self.trace {
                t.push(MrtdRecord { gpa, step, mrtd });
            }
        }
    }

    /// TDH.MEM.PAGE.ADD of the page at `gpa`.
    pub fn page_add(&mut self, gpa: u64) {
        let mut rec = [0u8; RECORD_SIZE];
        rec[..PAGE_ADD_TAG.len()].copy_from_slice(PAGE_ADD_TAG);
        rec[GPA_OFFSET..GPA_OFFSET + 8].copy_from_slice(&gpa.to_le_bytes());
        self.ctx.update(&rec);
        self.pages_added += 1;
        self.record(gpa, MrtdStep::PageAdd);
    }

    /// One TDH.MR.EXTEND of the 256-byte chunk at `gpa`.
    pub fn extend(&mut self, gpa: u64, chunk: &[u8; EXTEND_CHUNK]) {
        let mut rec = [0u8; RECORD_SIZE];
        rec[..MR_EXTEND_TAG.len()].copy_from_slice(MR_EXTEND_TAG);
        rec[GPA_OFFSET..GPA_OFFSET + 8].copy_from_slice(&gpa.to_le_bytes());
        self.ctx.update(&rec);
        self.ctx.update(chunk);
        self.chunks_extended += 1;
        if self.trace.is_some() {
            let h = cc_hash::sha384(chunk);
            self.record(gpa, MrtdStep::MrExtend { chunk: h });
        }
    }

    /// The 16 TDH.MR.EXTEND calls that measure the 4 KiB page at `gpa` (as KVM issues them
    /// with `KVM_TDX_MEASURE_MEMORY_REGION`).
    pub fn extend_page(&mut self, gpa: u64, page: &[u8; PAGE_SIZE as usize]) {
        if self.trace.is_some() {
            // The same records, one at a time, so that each has its MRTD.
            for (c, data) in page.chunks_exact(EXTEND_CHUNK).enumerate() {
                if let Ok(chunk) = <&[u8; EXTEND_CHUNK]>::try_from(data) {
                    self.extend(gpa.wrapping_add((c * EXTEND_CHUNK) as u64), chunk);
                }
            }
            return;
        }
        for (c, data) in page.chunks_exact(EXTEND_CHUNK).enumerate() {
            let at = c * EXTEND_RECORD;
            let chunk_gpa = gpa.wrapping_add((c * EXTEND_CHUNK) as u64);
            self.run[at + GPA_OFFSET..at + GPA_OFFSET + 8]
                .copy_from_slice(&chunk_gpa.to_le_bytes());
            self.run[at + RECORD_SIZE..at + EXTEND_RECORD].copy_from_slice(data);
        }
        self.ctx.update(&self.run[..]);
        self.chunks_extended += CHUNKS_PER_PAGE as u64;
    }

    /// [`extend_page`](Mrtd::extend_page) of a page of zeros.
    pub fn extend_zero_page(&mut self, gpa: u64) {
        self.extend_page(gpa, &[0u8; PAGE_SIZE as usize]);
    }

    /// Pages added so far.
    pub fn pages_added(&self) -> u64 {
        self.pages_added
    }

    /// 256-byte chunks extended so far.
    pub fn chunks_extended(&self) -> u64 {
        self.chunks_extended
    }

    /// TDH.MR.FINALIZE: the 48-byte MRTD.
    pub fn finish(self) -> [u8; 48] {
        self.ctx.finalize()
    }

    /// The MRTD as it would be finalized now, without consuming the running state.
    pub fn current(&self) -> [u8; 48] {
        self.clone().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traced_mrtd_is_the_same_mrtd_with_a_value_per_record() {
        let page: Vec<u8> = (0..4096).map(|i| (i % 253) as u8).collect();
        let page: &[u8; 4096] = page.as_slice().try_into().unwrap();
        let run = |m: &mut Mrtd| {
            m.page_add(0x1000);
            m.extend_page(0x1000, page);
            m.page_add(0x2000);
        };
        let (mut t, mut u) = (Mrtd::new().traced(), Mrtd::new());
        run(&mut t);
        run(&mut u);
        assert_eq!(t.current(), u.current());
        let r = t.records();
        assert_eq!(r.len(), 18);
        // The value after each record is the MRTD of the records so far, one at a time.
        let mut step = Mrtd::new();
        step.page_add(0x1000);
        assert_eq!(r[0].mrtd, step.current());
        for (c, chunk) in page.chunks_exact(EXTEND_CHUNK).enumerate() {
            let gpa = 0x1000 + (c * EXTEND_CHUNK) as u64;
            step.extend(gpa, chunk.try_into().unwrap());
            assert_eq!((r[1 + c].gpa, r[1 + c].mrtd), (gpa, step.current()));
            let MrtdStep::MrExtend { chunk: h } = r[1 + c].step else {
                panic!("{:?}", r[1 + c]);
            };
            assert_eq!(h, <sha2::Sha384 as sha2::Digest>::digest(chunk)[..]);
        }
        assert_eq!((r[17].gpa, r[17].step), (0x2000, MrtdStep::PageAdd));
        assert_eq!(t.take_records().len(), 18);
        assert!(Mrtd::new().records().is_empty());
    }
}
