//! The hashes the measurement uses, in one place, all from `cc-hash`: SHA-384 for the launch
//! digest (the fastest single stream measured for the PAGE_INFO chain, and multi-buffer AVX-512
//! hashing, 8 pages per register, for page contents, which are independent per page) and
//! SHA-256 for the kernel hashes table of measured direct boot. The choice and its figures are
//! in the crate README (`cargo bench -p sev-backend --features bench`). The kernel model in
//! `testing` and the tests' hand-derived vectors hash with `sha2`, one page at a time, so that
//! neither shares this code path.

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

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    cc_hash::sha256(data)
}

/// SHA-256 of everything `r` yields, read through a small reused buffer (the input is never
/// held whole in memory). Reading in a second thread to overlap the copy out of the page cache
/// with hashing was measured and gained nothing on two cores.
pub(crate) fn sha256_reader(mut r: impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut h = cc_hash::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(h.finalize()),
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
            let one_shot = <sha2::Sha256 as sha2::Digest>::digest(&data);
            assert_eq!(&streamed[..], &one_shot[..], "{len} bytes");
            assert_eq!(streamed, sha256(&data));
        }
        let failing = std::io::Read::chain(&[1u8; 10][..], FailingReader);
        let e = sha256_reader(failing).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
        // An interrupted read is retried, not reported and not hashed as the end.
        let interrupted = std::io::Read::chain(InterruptedOnce(false), &b"abc"[..]);
        assert_eq!(sha256_reader(interrupted).unwrap(), sha256(b"abc"));
    }

    /// Answers EINTR once, then end of file.
    struct InterruptedOnce(bool);

    impl std::io::Read for InterruptedOnce {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                Ok(0)
            } else {
                Err(std::io::ErrorKind::Interrupted.into())
            }
        }
    }

    struct FailingReader;

    impl std::io::Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
}
