// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One-stream hashing, chosen per algorithm by measurement (figures in the crate README):
//!
//! - SHA-256: `ring` 0.17. Every candidate runs SHA-NI here and they are within noise of
//!   each other; `ring` is pure Rust plus assembly, no system library.
//! - SHA-384 and SHA-512 with the `openssl` feature: the system's libcrypto (OpenSSL 3, through
//!   the `openssl` crate), whose AVX2 SHA-512 kernel was the fastest single stream measured,
//!   about 1.4-1.5x `ring`, `sha2` and `aws-lc-rs`. Without the feature: `ring` 0.17.

/// Which implementation one-stream hashing uses, for reports and benches.
#[cfg(feature = "openssl")]
pub const SINGLE_STREAM: &str = "SHA-256: ring 0.17; SHA-384/512: system libcrypto (openssl 0.10)";
/// Which implementation one-stream hashing uses, for reports and benches.
#[cfg(not(feature = "openssl"))]
pub const SINGLE_STREAM: &str = "ring 0.17";

/// The `ring` implementation of one algorithm.
macro_rules! ring_backend {
    ($mod:ident, $alg:expr, $len:expr) => {
        mod $mod {
            use ring::digest;

            #[derive(Clone)]
            pub(crate) struct Ctx(digest::Context);

            impl Ctx {
                pub(crate) fn new() -> Self {
                    Ctx(digest::Context::new($alg))
                }
                pub(crate) fn update(&mut self, data: &[u8]) {
                    self.0.update(data);
                }
                pub(crate) fn finish(self) -> [u8; $len] {
                    let mut o = [0u8; $len];
                    o.copy_from_slice(self.0.finish().as_ref());
                    o
                }
            }

            pub(crate) fn oneshot(data: &[u8]) -> [u8; $len] {
                let mut o = [0u8; $len];
                o.copy_from_slice(digest::digest($alg, data).as_ref());
                o
            }
        }
    };
}

/// The system libcrypto implementation of one algorithm.
#[cfg(feature = "openssl")]
macro_rules! openssl_backend {
    ($mod:ident, $ty:ident, $len:expr) => {
        mod $mod {
            #[derive(Clone)]
            pub(crate) struct Ctx(openssl::sha::$ty);

            impl Ctx {
                pub(crate) fn new() -> Self {
                    Ctx(openssl::sha::$ty::new())
                }
                pub(crate) fn update(&mut self, data: &[u8]) {
                    self.0.update(data);
                }
                pub(crate) fn finish(self) -> [u8; $len] {
                    self.0.finish()
                }
            }

            /// Through the low-level context, not OpenSSL's one-shot `SHA384()`/`SHA512()`:
            /// OpenSSL 3 implements those with `EVP_Q_digest`, which fetches the algorithm on
            /// every call and costs several times the hash of a short record (measured: the
            /// bench's 112-byte rows).
            pub(crate) fn oneshot(data: &[u8]) -> [u8; $len] {
                let mut c = Ctx::new();
                c.update(data);
                c.finish()
            }
        }
    };
}

ring_backend!(b256, &ring::digest::SHA256, 32);
#[cfg(not(feature = "openssl"))]
ring_backend!(b384, &ring::digest::SHA384, 48);
#[cfg(not(feature = "openssl"))]
ring_backend!(b512, &ring::digest::SHA512, 64);
#[cfg(feature = "openssl")]
openssl_backend!(b384, Sha384, 48);
#[cfg(feature = "openssl")]
openssl_backend!(b512, Sha512, 64);

macro_rules! stream_hash {
    ($(#[$m:meta])* $name:ident, $oneshot:ident, $b:ident, $len:expr, $label:expr) => {
        $(#[$m])*
        #[derive(Clone)]
        pub struct $name($b::Ctx);

        impl $name {
            /// A hash of nothing yet.
            pub fn new() -> Self {
                $name($b::Ctx::new())
            }

            /// Appends `data` to the message.
            pub fn update(&mut self, data: &[u8]) {
                self.0.update(data);
            }

            /// The digest of everything appended.
            pub fn finalize(self) -> [u8; $len] {
                self.0.finish()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($label)
            }
        }

        #[doc = concat!($label, " of `data` in one call.")]
        pub fn $oneshot(data: &[u8]) -> [u8; $len] {
            $b::oneshot(data)
        }
    };
}

stream_hash!(
    /// A streaming SHA-256.
    ///
    /// ```
    /// let mut h = cc_hash::Sha256::new();
    /// h.update(b"ab");
    /// h.update(b"c");
    /// assert_eq!(h.finalize(), cc_hash::sha256(b"abc"));
    /// ```
    Sha256,
    sha256,
    b256,
    32,
    "SHA-256"
);
stream_hash!(
    /// A streaming SHA-384.
    ///
    /// ```
    /// let mut h = cc_hash::Sha384::new();
    /// h.update(b"ab");
    /// h.update(b"c");
    /// assert_eq!(h.finalize(), cc_hash::sha384(b"abc"));
    /// ```
    Sha384,
    sha384,
    b384,
    48,
    "SHA-384"
);
stream_hash!(
    /// A streaming SHA-512.
    ///
    /// ```
    /// let mut h = cc_hash::Sha512::new();
    /// h.update(b"ab");
    /// h.update(b"c");
    /// assert_eq!(h.finalize(), cc_hash::sha512(b"abc"));
    /// ```
    Sha512,
    sha512,
    b512,
    64,
    "SHA-512"
);
