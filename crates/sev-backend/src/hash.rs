//! The hashes the measurement uses, in one place: SHA-384 for the launch digest, SHA-256 for
//! the kernel hashes table of measured direct boot. Both are `sha2` 0.10, chosen over `ring`
//! 0.17 for speed. SHA-384 is measured by `cargo bench -p sev-backend --bench digest` (bare hash
//! of the bytes and SHA-384 per 4 KiB page, the digest's hot loop); on this project's machine
//! `sha2` was 3-5% ahead in every interleaved run (see the crate README). SHA-256 runs on the
//! SHA-NI instructions where the CPU has them (`sha2`'s runtime detection), as fast as the
//! alternatives measured in `measurement-limits.md`. The kernel model in `testing` and the
//! tests' hand-derived vectors hash with `ring`, so that neither shares this code path.

use sha2::Digest;

/// SHA-384 of `data`.
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    sha2::Sha384::digest(data).into()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// SHA-256 of everything `r` yields, read through a small reused buffer (the input is never
/// held whole in memory). Reading in a second thread to overlap the copy out of the page cache
/// with hashing was measured and gained nothing on two cores.
pub(crate) fn sha256_reader(mut r: impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(h.finalize().into()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_sha256_equals_the_one_shot_hash() {
        for len in [0, 1, (256 << 10) - 1, 256 << 10, (3 << 20) + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            let streamed = sha256_reader(&data[..]).unwrap();
            let one_shot = ring::digest::digest(&ring::digest::SHA256, &data);
            assert_eq!(&streamed[..], one_shot.as_ref(), "{len} bytes");
            assert_eq!(streamed, sha256(&data));
        }
        let failing = std::io::Read::chain(&[1u8; 10][..], FailingReader);
        assert!(sha256_reader(failing).is_err());
    }

    struct FailingReader;

    impl std::io::Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
}
