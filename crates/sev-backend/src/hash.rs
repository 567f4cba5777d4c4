//! The SHA-384 the digest uses, from `cc-hash`: the fastest single stream measured for the
//! PAGE_INFO chain, and multi-buffer (AVX-512, 8 pages per register) hashing for page contents,
//! which are independent per page. The choice and its figures are in the crate README
//! (`cargo bench -p sev-backend --features bench`). The kernel model in `testing` and the tests'
//! hand-derived vectors hash with `ring` one page at a time, so that neither shares this code
//! path.

/// SHA-384 of `data`.
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    cc_hash::sha384(data)
}

/// SHA-384 of each 4 KiB page of `data` into `out` (one digest per page, in order).
pub(crate) fn sha384_pages(data: &[u8], out: &mut [[u8; 48]]) {
    // The callers pass `out.len()` whole pages, so the layout check cannot fail; hash page by
    // page should it ever.
    if cc_hash::sha384_many(data, cc_hash::PAGE_SIZE, out).is_err() {
        for (o, p) in out.iter_mut().zip(data.chunks_exact(cc_hash::PAGE_SIZE)) {
            *o = sha384(p);
        }
    }
}
