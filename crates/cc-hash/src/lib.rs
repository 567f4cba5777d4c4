// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The SHA-256, SHA-384 and SHA-512 that cc-populate's launch measurements use.
//!
//! Two things, each chosen by measurement (`cargo bench -p cc-hash`, figures in the README):
//!
//! - **One stream**: [`sha256`], [`sha384`], [`sha512`] and the streaming [`Sha256`],
//!   [`Sha384`], [`Sha512`] use the fastest single-stream implementation measured on the
//!   project's machine among `sha2` (with and without its `asm` kernels), `ring` and
//!   `aws-lc-rs`.
//! - **Many equal-length messages** ([`sha256_many`], [`sha384_many`], [`sha512_many`]), such as
//!   the 4 KiB pages whose content hashes an SEV-SNP launch digest or an Arm CCA RIM chains:
//!   on a CPU with AVX-512 (F and BW, detected at run time) they are hashed side by side, one
//!   message per vector lane (8 lanes of SHA-384/512, 16 of SHA-256), which is several times
//!   the throughput of one stream per core. Without AVX-512, or for the messages left over
//!   after the last full group of lanes, each message is hashed as one stream.
//!
//! ```
//! use cc_hash::{sha384, sha384_many, PAGE_SIZE};
//!
//! let pages = vec![0x5au8; 20 * PAGE_SIZE];
//! let mut digests = vec![[0u8; 48]; 20];
//! sha384_many(&pages, PAGE_SIZE, &mut digests)?;
//! assert!(digests.iter().all(|d| *d == sha384(&pages[..PAGE_SIZE])));
//! # Ok::<(), cc_hash::Error>(())
//! ```

#![deny(missing_docs)]

#[cfg(feature = "bench-utils")]
pub mod bench;
// The constants serve the x86_64 multi-buffer kernels (and the bench).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod consts;
#[cfg(target_arch = "x86_64")]
mod mb;
mod stream;

pub use stream::{sha256, sha384, sha512, Sha256, Sha384, Sha512, SINGLE_STREAM};

/// The page size of every platform this workspace measures for.
pub const PAGE_SIZE: usize = 4096;

/// A refusal of a `*_many` call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `data` is not `count` messages of `len` bytes.
    #[error(
        "{data_len} bytes of input are not {count} messages of {len} bytes (one per digest slot)"
    )]
    Layout {
        /// Bytes of input given.
        data_len: usize,
        /// Length of each message.
        len: usize,
        /// Digest slots given, so messages expected.
        count: usize,
    },
}

/// The hash algorithms of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256 (FIPS 180-4).
    Sha256,
    /// SHA-384 (FIPS 180-4).
    Sha384,
    /// SHA-512 (FIPS 180-4).
    Sha512,
}

impl Algorithm {
    /// Digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// How many messages [`sha256_many`] / [`sha384_many`] / [`sha512_many`] hash side by side
    /// on this CPU (1 without AVX-512).
    ///
    /// ```
    /// use cc_hash::Algorithm;
    /// let lanes = Algorithm::Sha384.lanes();
    /// assert!(lanes == 1 || lanes == 8);
    /// ```
    pub fn lanes(self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if mb::available() {
            return match self {
                Algorithm::Sha256 => mb::LANES256,
                Algorithm::Sha384 | Algorithm::Sha512 => mb::LANES512,
            };
        }
        1
    }
}

fn check_layout(data: &[u8], len: usize, count: usize) -> Result<(), Error> {
    match len.checked_mul(count) {
        Some(n) if n == data.len() => Ok(()),
        _ => Err(Error::Layout {
            data_len: data.len(),
            len,
            count,
        }),
    }
}

/// SHA-256 of each of the `out.len()` messages of `len` bytes laid out back to back in `data`
/// (`out[i]` gets the digest of `data[i * len..(i + 1) * len]`), several at a time in vector
/// lanes where the CPU allows (see [`Algorithm::lanes`]).
///
/// Refuses (`Error::Layout`) unless `data.len() == len * out.len()`.
///
/// ```
/// let mut d = [[0u8; 32]; 2];
/// cc_hash::sha256_many(b"abcabc", 3, &mut d)?;
/// assert_eq!(d[1], cc_hash::sha256(b"abc"));
/// # Ok::<(), cc_hash::Error>(())
/// ```
pub fn sha256_many(data: &[u8], len: usize, out: &mut [[u8; 32]]) -> Result<(), Error> {
    check_layout(data, len, out.len())?;
    // Only the x86_64 multi-buffer kernels advance it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if mb::available() {
        // SAFETY: the CPU has AVX-512 F and BW (checked just above), the features the kernel is
        // compiled for; its memory accesses are bounds-checked slices.
        done = unsafe { mb::sha256_x16(&consts::IV256, data, len, out.as_flattened_mut()) };
    }
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        *o = sha256(&data[i * len..(i + 1) * len]);
    }
    Ok(())
}

/// SHA-384 of each of the `out.len()` messages of `len` bytes laid out back to back in `data`;
/// see [`sha256_many`].
///
/// ```
/// let mut d = [[0u8; 48]; 2];
/// cc_hash::sha384_many(b"abcabc", 3, &mut d)?;
/// assert_eq!(d[1], cc_hash::sha384(b"abc"));
/// # Ok::<(), cc_hash::Error>(())
/// ```
pub fn sha384_many(data: &[u8], len: usize, out: &mut [[u8; 48]]) -> Result<(), Error> {
    check_layout(data, len, out.len())?;
    // Only the x86_64 multi-buffer kernels advance it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if mb::available() {
        // SAFETY: the CPU has AVX-512 F and BW (checked just above), the features the kernel is
        // compiled for; its memory accesses are bounds-checked slices.
        done = unsafe { mb::sha512_family(&consts::IV384, data, len, out.as_flattened_mut(), 48) };
    }
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        *o = sha384(&data[i * len..(i + 1) * len]);
    }
    Ok(())
}

/// SHA-512 of each of the `out.len()` messages of `len` bytes laid out back to back in `data`;
/// see [`sha256_many`].
///
/// ```
/// let mut d = [[0u8; 64]; 2];
/// cc_hash::sha512_many(b"abcabc", 3, &mut d)?;
/// assert_eq!(d[1], cc_hash::sha512(b"abc"));
/// # Ok::<(), cc_hash::Error>(())
/// ```
pub fn sha512_many(data: &[u8], len: usize, out: &mut [[u8; 64]]) -> Result<(), Error> {
    check_layout(data, len, out.len())?;
    // Only the x86_64 multi-buffer kernels advance it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if mb::available() {
        // SAFETY: the CPU has AVX-512 F and BW (checked just above), the features the kernel is
        // compiled for; its memory accesses are bounds-checked slices.
        done = unsafe { mb::sha512_family(&consts::IV512, data, len, out.as_flattened_mut(), 64) };
    }
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        *o = sha512(&data[i * len..(i + 1) * len]);
    }
    Ok(())
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
