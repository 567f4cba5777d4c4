//! The SHA-384 the digest uses: `sha2` 0.10, chosen over `ring` 0.17 for speed. Both are
//! measured by `cargo bench -p sev-backend --bench digest` (bare hash of the bytes and SHA-384
//! per 4 KiB page, the digest's hot loop); on this project's machine `sha2` was 3-5% ahead in
//! every interleaved run (see the crate README). The kernel model in `testing` and the tests'
//! hand-derived vectors hash with `ring`, so that neither shares this code path.

use sha2::Digest;

/// SHA-384 of `data`.
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    sha2::Sha384::digest(data).into()
}
