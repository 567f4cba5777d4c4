//! The launch digest chain (feature `measure`): [`LaunchDigest`], and [`measure`] of a
//! cc-populate plan (with feature `kvm` too).

use std::sync::OnceLock;

#[cfg(feature = "kvm")]
use cc_populate::{Content, InPlaceReader, Plan};

use crate::digest::{page_info, PageType, DIGEST_LEN, PAGE};
use crate::hash::{sha384, sha384_pages};
use crate::uapi::SNP_VMSA_GPA;
use crate::Error;

fn zero_page_hash() -> &'static [u8; DIGEST_LEN] {
    static H: OnceLock<[u8; DIGEST_LEN]> = OnceLock::new();
    H.get_or_init(|| sha384(&[0u8; PAGE]))
}

/// Hashes `data` page by page into `out` (one digest per 4 KiB page), on up to `threads`
/// threads.
pub(crate) fn hash_pages(data: &[u8], out: &mut [[u8; DIGEST_LEN]], threads: usize) {
    let pages = out.len();
    let threads = threads.clamp(1, pages.max(1));
    if threads == 1 || pages < 64 {
        sha384_pages(data, out);
        return;
    }
    let per = pages.div_ceil(threads);
    std::thread::scope(|s| {
        for (o, d) in out.chunks_mut(per).zip(data.chunks(per * PAGE)) {
            s.spawn(move || sha384_pages(d, o));
        }
    });
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The SNP launch digest, updated record by record in launch order.
///
/// ```
/// use sev_backend::{LaunchDigest, PageType};
///
/// let mut ld = LaunchDigest::new();
/// ld.update_page(0xffff_f000, PageType::Normal, Some(&[0x90u8; 4096]))?;
/// ld.update_page(0x80_0000, PageType::Zero, None)?;
/// ld.update_page(0x80_d000, PageType::Secrets, None)?;
/// assert_eq!(ld.pages(), 3);
/// let digest: [u8; 48] = ld.digest();
/// # let _ = digest;
/// # Ok::<(), sev_backend::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LaunchDigest {
    cur: [u8; DIGEST_LEN],
    pages: u64,
    threads: usize,
    /// Pages per batch of content hashes in `update_pages`.
    batch_pages: usize,
    /// Every record, in order, when tracing ([`LaunchDigest::traced`]).
    trace: Option<Vec<PageRecord>>,
}

/// One `PAGE_INFO` record of a launch digest, as [`LaunchDigest::traced`] keeps them: what the
/// firmware hashed into the digest at this step, and the digest after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRecord {
    /// The page's guest-physical address (`GPA` field).
    pub gpa: u64,
    /// Its page type (`PAGE_TYPE` field).
    pub page_type: PageType,
    /// The `CONTENTS` field: the page's SHA-384 for `NORMAL` and `VMSA`, zeros otherwise.
    pub contents: [u8; DIGEST_LEN],
    /// The launch digest after this record.
    pub digest: [u8; DIGEST_LEN],
}

/// Two digests are equal when they have recorded the same number of pages to the same value
/// (how many threads they hash on does not matter).
impl PartialEq for LaunchDigest {
    fn eq(&self, other: &Self) -> bool {
        self.cur == other.cur && self.pages == other.pages
    }
}

impl Eq for LaunchDigest {}

impl Default for LaunchDigest {
    fn default() -> Self {
        LaunchDigest::new()
    }
}

impl LaunchDigest {
    /// A digest at the start of a launch (48 zero bytes).
    pub fn new() -> Self {
        LaunchDigest::from_digest([0; DIGEST_LEN])
    }

    /// A digest continuing from `cur`.
    pub fn from_digest(cur: [u8; DIGEST_LEN]) -> Self {
        LaunchDigest {
            cur,
            pages: 0,
            threads: default_threads(),
            batch_pages: 512,
            trace: None,
        }
    }

    /// Keeps every record from now on ([`records`](Self::records)): the trace of a launch,
    /// step by step, for finding where two launches part.
    ///
    /// ```
    /// use sev_backend::{LaunchDigest, PageType};
    ///
    /// let mut ld = LaunchDigest::new().traced();
    /// ld.update_page(0x1000, PageType::Normal, Some(&[0x90u8; 4096]))?;
    /// ld.update_page(0x2000, PageType::Zero, None)?;
    /// let r = ld.records();
    /// assert_eq!((r[1].gpa, r[1].page_type), (0x2000, PageType::Zero));
    /// assert_eq!(r[1].digest, ld.digest());
    /// # Ok::<(), sev_backend::Error>(())
    /// ```
    pub fn traced(mut self) -> Self {
        self.trace.get_or_insert_with(Vec::new);
        self
    }

    /// The records kept since [`traced`](Self::traced) (empty when not tracing).
    pub fn records(&self) -> &[PageRecord] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// Takes the records kept so far, leaving tracing on with none kept.
    pub fn take_records(&mut self) -> Vec<PageRecord> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Limits the threads [`update_pages`](Self::update_pages) hashes page contents on (at
    /// least 1; the default is the machine's parallelism).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The digest so far.
    pub fn digest(&self) -> [u8; DIGEST_LEN] {
        self.cur
    }

    /// Pages recorded so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Records one page whose `CONTENTS` field is already known (the page's SHA-384 for
    /// `NORMAL`/`VMSA`, zeros for the other types). The low-level step every other update uses.
    pub fn update_record(&mut self, gpa: u64, page_type: PageType, contents: &[u8; DIGEST_LEN]) {
        self.cur = sha384(&page_info(&self.cur, contents, page_type, gpa));
        self.pages += 1;
        if let Some(t) = &mut self.trace {
            t.push(PageRecord {
                gpa,
                page_type,
                contents: *contents,
                digest: self.cur,
            });
        }
    }

    /// Records one page. `contents` is the page's 4096 bytes for `NORMAL` and `VMSA` pages
    /// (`None`: a page of zeros, as IGVM page data without bytes); it is ignored for the other
    /// types, which the firmware records without content. Refuses an unaligned `gpa` or
    /// contents that are not exactly one page.
    pub fn update_page(
        &mut self,
        gpa: u64,
        page_type: PageType,
        contents: Option<&[u8]>,
    ) -> Result<(), Error> {
        check_gpa(gpa, PAGE as u64)?;
        if let Some(c) = contents {
            if c.len() != PAGE {
                return Err(Error::BadPage {
                    gpa,
                    reason: format!("contents have {} bytes, a page has 4096", c.len()),
                });
            }
        }
        let h = match (page_type.measures_contents(), contents) {
            (false, _) => [0; DIGEST_LEN],
            (true, Some(c)) => sha384(c),
            (true, None) => *zero_page_hash(),
        };
        self.update_record(gpa, page_type, &h);
        Ok(())
    }

    /// Records a VMSA page at `gpa` ([`SNP_VMSA_GPA`] for the VMSAs KVM launches).
    pub fn update_vmsa(&mut self, gpa: u64, vmsa: &[u8]) -> Result<(), Error> {
        self.update_page(gpa, PageType::Vmsa, Some(vmsa))
    }

    /// Records `len` bytes of pages from `gpa` on, all of `page_type`, in address order.
    /// `data` is their content (exactly `len` bytes) for `NORMAL`/`VMSA` pages, `None` for
    /// zeros; content hashes are computed on every core, the chain stays serial.
    pub fn update_pages(
        &mut self,
        gpa: u64,
        page_type: PageType,
        data: Option<&[u8]>,
        len: u64,
    ) -> Result<(), Error> {
        check_gpa(gpa, len)?;
        if let Some(d) = data {
            if d.len() as u64 != len {
                return Err(Error::BadPage {
                    gpa,
                    reason: format!("{} bytes of content for a {len:#x}-byte range", d.len()),
                });
            }
        }
        let pages = len / PAGE as u64;
        match (page_type.measures_contents(), data) {
            (true, Some(d)) if self.threads == 1 => {
                let mut hashes = [[0u8; DIGEST_LEN]; 64];
                for (b, chunk) in d.chunks(hashes.len() * PAGE).enumerate() {
                    let hashes = &mut hashes[..chunk.len() / PAGE];
                    sha384_pages(chunk, hashes);
                    let base = gpa + (b * 64 * PAGE) as u64;
                    for (k, h) in hashes.iter().enumerate() {
                        self.update_record(base + (k * PAGE) as u64, page_type, h);
                    }
                }
            }
            (true, Some(d)) => self.update_pages_parallel(gpa, page_type, d),
            (measured, _) => {
                let h = if measured {
                    *zero_page_hash()
                } else {
                    [0; DIGEST_LEN]
                };
                for k in 0..pages {
                    self.update_record(gpa + k * PAGE as u64, page_type, &h);
                }
            }
        }
        Ok(())
    }
}

impl LaunchDigest {
    /// Content hashes of batch k+1 are computed on `threads` threads while this thread chains
    /// the records of batch k: the serial chain overlaps the parallel hashing.
    fn update_pages_parallel(&mut self, gpa: u64, page_type: PageType, data: &[u8]) {
        let (threads, batch) = (self.threads, self.batch_pages.max(1));
        let mut batches = data.chunks(batch * PAGE).enumerate();
        std::thread::scope(|s| {
            let mut ready: Option<(usize, Vec<[u8; DIGEST_LEN]>)> = None;
            loop {
                let job = batches.next().map(|(i, chunk)| {
                    s.spawn(move || {
                        let mut hashes = vec![[0u8; DIGEST_LEN]; chunk.len() / PAGE];
                        hash_pages(chunk, &mut hashes, threads);
                        (i, hashes)
                    })
                });
                if let Some((i, hashes)) = ready.take() {
                    let base = gpa + (i * batch * PAGE) as u64;
                    for (k, h) in hashes.iter().enumerate() {
                        self.update_record(base + (k * PAGE) as u64, page_type, h);
                    }
                }
                match job {
                    // A hashing thread cannot panic short of a bug; pass one on unchanged.
                    Some(j) => {
                        ready = Some(j.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    }
                    None => break,
                }
            }
        });
    }
}

fn check_gpa(gpa: u64, len: u64) -> Result<(), Error> {
    if !gpa.is_multiple_of(PAGE as u64) || !len.is_multiple_of(PAGE as u64) {
        return Err(Error::BadPage {
            gpa,
            reason: format!("address or length {len:#x} not a multiple of 4 KiB"),
        });
    }
    if gpa.checked_add(len).is_none() {
        return Err(Error::BadPage {
            gpa,
            reason: format!("range of {len:#x} bytes ends past 2^64"),
        });
    }
    Ok(())
}

/// A VMSA page measured after the plan's regions.
#[derive(Clone, Copy, Debug)]
pub struct VmsaPage<'a> {
    /// The address the firmware records ([`SNP_VMSA_GPA`] for KVM-launched vCPUs).
    pub gpa: u64,
    /// The page's 4096 bytes.
    pub page: &'a [u8],
}

impl<'a> VmsaPage<'a> {
    /// A VMSA at the address KVM launches it at ([`SNP_VMSA_GPA`]).
    pub fn kvm(page: &'a [u8]) -> Self {
        VmsaPage {
            gpa: SNP_VMSA_GPA,
            page,
        }
    }
}

/// How [`measure`] reads what it needs.
#[cfg(feature = "kvm")]
#[derive(Default)]
pub struct MeasureOptions<'r> {
    /// Reader for in-place content (required when the plan has any measured in-place region).
    pub reader: Option<&'r dyn InPlaceReader>,
    /// Threads for content hashes (0: the machine's parallelism).
    pub threads: usize,
}

/// The expected SNP launch digest of populating `plan` in its order, through the same
/// role-to-page-type mapping as the backend ([`PageType::for_role`]), then the `vmsas` in the
/// order given.
///
/// ```
/// use cc_populate::{MemoryLayout, PlanBuilder, Role};
/// use sev_backend::{measure, verifier_caps, MeasureOptions, VmsaPage};
///
/// let firmware = vec![0xccu8; 8192];
/// let plan = PlanBuilder::new()
///     .source(0xffff_e000, Role::Measured, &firmware)
///     .zero(0x80_0000, 0x9000)
///     .zeros(0x80_d000, 4096, Role::Secrets)
///     .build(&verifier_caps(), &MemoryLayout::unbounded())?;
/// let vmsa = [0u8; 4096];
/// let digest = measure(&plan, &[VmsaPage::kvm(&vmsa)], &MeasureOptions::default())?;
/// assert_eq!(digest.len(), 48);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "kvm")]
pub fn measure(
    plan: &Plan<'_>,
    vmsas: &[VmsaPage<'_>],
    opts: &MeasureOptions<'_>,
) -> Result<[u8; DIGEST_LEN], Error> {
    let mut ld = LaunchDigest::new();
    if opts.threads > 0 {
        ld = ld.with_threads(opts.threads);
    }
    measure_plan_into(&mut ld, plan, opts.reader)?;
    for v in vmsas {
        ld.update_vmsa(v.gpa, v.page)?;
    }
    Ok(ld.digest())
}

/// Adds `plan`'s regions, in order, to `ld` (for callers that interleave other records).
#[cfg(feature = "kvm")]
pub fn measure_plan_into(
    ld: &mut LaunchDigest,
    plan: &Plan<'_>,
    reader: Option<&dyn InPlaceReader>,
) -> Result<(), Error> {
    for (i, r) in plan.regions().iter().enumerate() {
        let err = |reason: String| Error::Content {
            region: i,
            gpa: r.gpa(),
            len: r.len(),
            reason,
        };
        let ty = PageType::for_role(r.role())
            .ok_or_else(|| err(format!("role {} has no SNP page type", r.role())))?;
        if !ty.measures_contents() {
            ld.update_pages(r.gpa(), ty, None, r.len())?;
            continue;
        }
        if r.released() > 0 {
            return Err(err("its source was released after populating".into()));
        }
        match r.content() {
            Content::Zero => ld.update_pages(r.gpa(), ty, None, r.len())?,
            Content::InPlace => {
                let reader = reader.ok_or_else(|| {
                    err("content is written in place and no reader was given".into())
                })?;
                let len = usize::try_from(r.len())
                    .map_err(|_| err("too large to read into memory".into()))?;
                let mut buf = vec![0u8; len];
                reader
                    .read_in_place(r.gpa(), &mut buf)
                    .map_err(|e| err(format!("reading in-place content failed: {e}")))?;
                ld.update_pages(r.gpa(), ty, Some(&buf), r.len())?;
            }
            _ => {
                let src = r
                    .source()
                    .ok_or_else(|| err("region has no source".into()))?;
                ld.update_pages(r.gpa(), ty, Some(src), r.len())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_type_numbers() {
        // SNP firmware ABI, SNP_LAUNCH_UPDATE PAGE_TYPE.
        let codes: Vec<u8> = PageType::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6]);
        for t in PageType::ALL {
            assert_eq!(PageType::from_code(t.code()), Some(t));
        }
        assert_eq!(PageType::from_code(0), None);
        assert_eq!(PageType::from_code(7), None);
        #[cfg(feature = "kvm")]
        assert_eq!(PageType::for_role(cc_populate::Role::Ripas), None);
    }

    #[test]
    fn refuses_bad_pages() {
        let mut ld = LaunchDigest::new();
        let refusal = |r: Result<(), Error>| match r {
            Err(Error::BadPage { gpa, reason }) => (gpa, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refusal(ld.update_page(0x1001, PageType::Zero, None)),
            (
                0x1001,
                "address or length 0x1000 not a multiple of 4 KiB".into()
            )
        );
        assert_eq!(
            refusal(ld.update_page(0x1000, PageType::Normal, Some(&[0; 100]))),
            (0x1000, "contents have 100 bytes, a page has 4096".into())
        );
        assert_eq!(
            refusal(ld.update_pages(0x1000, PageType::Normal, Some(&[0; 4096]), 8192)),
            (
                0x1000,
                "4096 bytes of content for a 0x2000-byte range".into()
            )
        );
        assert_eq!(
            refusal(ld.update_pages(u64::MAX - 4095, PageType::Zero, None, 8192)),
            (
                u64::MAX - 4095,
                "range of 0x2000 bytes ends past 2^64".into()
            )
        );
        // Nothing refused was measured: the digest is still the initial (all-zero) one.
        assert_eq!(ld.pages(), 0);
        assert_eq!(ld.digest(), [0u8; DIGEST_LEN]);
        assert_eq!(ld.digest(), [0; 48]);
    }

    #[test]
    fn batched_parallel_equals_page_by_page() {
        let data: Vec<u8> = (0..(300 * PAGE)).map(|i| (i * 7 % 251) as u8).collect();
        let mut a = LaunchDigest::new().with_threads(3);
        a.batch_pages = 70; // several batches, the last one short
        a.update_pages(0x10_0000, PageType::Normal, Some(&data), data.len() as u64)
            .unwrap();

        let mut b = LaunchDigest::new().with_threads(1);
        for (k, p) in data.chunks(PAGE).enumerate() {
            b.update_page(0x10_0000 + (k * PAGE) as u64, PageType::Normal, Some(p))
                .unwrap();
        }
        assert_eq!(a, b);
    }

    #[test]
    fn a_traced_digest_records_every_page_with_the_value_after_it() {
        let data: Vec<u8> = (0..(150 * PAGE)).map(|i| (i * 11 % 251) as u8).collect();
        // Batched and parallel, traced.
        let mut t = LaunchDigest::new().with_threads(3).traced();
        t.batch_pages = 40;
        t.update_pages(0x10_0000, PageType::Normal, Some(&data), data.len() as u64)
            .unwrap();
        t.update_pages(0x80_0000, PageType::Zero, None, 2 * PAGE as u64)
            .unwrap();
        // Page by page, untraced, keeping the value after each.
        let mut u = LaunchDigest::new().with_threads(1);
        let mut after = Vec::new();
        for (k, p) in data.chunks(PAGE).enumerate() {
            u.update_page(0x10_0000 + (k * PAGE) as u64, PageType::Normal, Some(p))
                .unwrap();
            after.push((0x10_0000 + (k * PAGE) as u64, sha384(p), u.digest()));
        }
        for k in 0..2u64 {
            u.update_page(0x80_0000 + k * PAGE as u64, PageType::Zero, None)
                .unwrap();
            after.push((0x80_0000 + k * PAGE as u64, [0; DIGEST_LEN], u.digest()));
        }
        assert_eq!(t, u);
        let got: Vec<_> = t
            .records()
            .iter()
            .map(|r| (r.gpa, r.contents, r.digest))
            .collect();
        assert_eq!(got, after);
        assert_eq!(t.take_records().len(), 152);
        assert!(t.records().is_empty());
        assert!(LaunchDigest::new().records().is_empty());
    }
}
