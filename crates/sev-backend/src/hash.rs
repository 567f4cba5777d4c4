//! The SHA-384 the digest uses. `ring` was chosen over `sha2` 0.10 for speed: see the crate
//! README's benchmark table (`cargo bench -p sev-backend` prints both).

/// SHA-384 of `data`.
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    let d = ring::digest::digest(&ring::digest::SHA384, data);
    let mut out = [0u8; 48];
    out.copy_from_slice(d.as_ref());
    out
}
