// Copyright The cc-populate Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Multi-buffer SHA-2 with AVX-512: independent messages of one length hashed side by side, one
//! message per lane of a 512-bit register (8 lanes of SHA-384/512's 64-bit words, 16 lanes of
//! SHA-256's 32-bit words).
//!
//! The round and message-schedule arithmetic is FIPS 180-4 section 6.2.2 / 6.4.2 done lane-wise:
//! rotations are `vprorq`/`vprord`, the three-input functions (Ch, Maj, the XOR of three
//! rotations) one `vpternlog` each. Message words are loaded one block row per lane and
//! transposed in registers (a butterfly transpose, `log2(lanes)` rounds of two-source
//! permutes), then byte-swapped to big endian.
//!
//! Everything here is `unsafe` only because the functions need the CPU features; the public
//! entry points in the crate root check them at run time and fall back to a single stream.

#![allow(clippy::many_single_char_names)]

use std::arch::x86_64::*;

use crate::consts::{K256, K512};

/// Whether this CPU can run the kernels (AVX-512 F for the arithmetic, BW for the byte shuffle).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Lanes of the SHA-512 kernel.
pub(crate) const LANES512: usize = 8;
/// Lanes of the SHA-256 kernel.
pub(crate) const LANES256: usize = 16;

/// Two-source permute indices of a butterfly transpose round of distance `d` over `n` elements:
/// the "low" output takes `a[k]` where bit `d` of `k` is clear and `b[k - d]` where it is set,
/// the "high" output `a[k + d]` and `b[k]`. Index `n + i` selects `b[i]`.
const fn butterfly<const N: usize>(d: usize, high: bool) -> [u32; N] {
    let mut idx = [0u32; N];
    let mut k = 0;
    while k < N {
        idx[k] = match (k & d == 0, high) {
            (true, false) => k,
            (false, false) => N + k - d,
            (true, true) => k + d,
            (false, true) => N + k,
        } as u32;
        k += 1;
    }
    idx
}

const fn widen<const N: usize>(a: [u32; N]) -> [u64; N] {
    let mut o = [0u64; N];
    let mut i = 0;
    while i < N {
        o[i] = a[i] as u64;
        i += 1;
    }
    o
}

/// `vpshufb` control that reverses the bytes of every 64-bit element.
const BSWAP64: [u8; 64] = {
    let mut m = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        m[i] = ((i & !7) + 7 - (i & 7)) as u8;
        i += 1;
    }
    m
};

/// `vpshufb` control that reverses the bytes of every 32-bit element.
const BSWAP32: [u8; 64] = {
    let mut m = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        m[i] = ((i & !3) + 3 - (i & 3)) as u8;
        i += 1;
    }
    m
};

const T64: [[u64; 8]; 6] = [
    widen(butterfly::<8>(1, false)),
    widen(butterfly::<8>(1, true)),
    widen(butterfly::<8>(2, false)),
    widen(butterfly::<8>(2, true)),
    widen(butterfly::<8>(4, false)),
    widen(butterfly::<8>(4, true)),
];

const T32: [[u32; 16]; 8] = [
    butterfly::<16>(1, false),
    butterfly::<16>(1, true),
    butterfly::<16>(2, false),
    butterfly::<16>(2, true),
    butterfly::<16>(4, false),
    butterfly::<16>(4, true),
    butterfly::<16>(8, false),
    butterfly::<16>(8, true),
];

/// Loads 64 bytes as a vector.
///
/// # Safety
/// `p` must be valid for reading 64 bytes; the CPU must have AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 64 readable bytes at `p`; `loadu` has no alignment need.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// Transposes 8 rows of 8 64-bit words in place (`r[i][k]` becomes `r[k][i]`).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose8(r: &mut [__m512i; 8]) {
    for (round, d) in [1usize, 2, 4].into_iter().enumerate() {
        // SAFETY: `T64` rows are 64 bytes each.
        let lo = unsafe { load(T64[2 * round].as_ptr().cast()) };
        // SAFETY: as above.
        let hi = unsafe { load(T64[2 * round + 1].as_ptr().cast()) };
        for i in 0..8 {
            if i & d == 0 {
                let (a, b) = (r[i], r[i + d]);
                r[i] = _mm512_permutex2var_epi64(a, lo, b);
                r[i + d] = _mm512_permutex2var_epi64(a, hi, b);
            }
        }
    }
}

/// Transposes 16 rows of 16 32-bit words in place (`r[i][k]` becomes `r[k][i]`).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512i; 16]) {
    for (round, d) in [1usize, 2, 4, 8].into_iter().enumerate() {
        // SAFETY: `T32` rows are 64 bytes each.
        let lo = unsafe { load(T32[2 * round].as_ptr().cast()) };
        // SAFETY: as above.
        let hi = unsafe { load(T32[2 * round + 1].as_ptr().cast()) };
        for i in 0..16 {
            if i & d == 0 {
                let (a, b) = (r[i], r[i + d]);
                r[i] = _mm512_permutex2var_epi32(a, lo, b);
                r[i + d] = _mm512_permutex2var_epi32(a, hi, b);
            }
        }
    }
}

/// Compresses `blocks` 128-byte blocks of 8 messages into `state` (`state[j]` holds word `j` of
/// every lane). Lane `l`'s blocks start at `data[l * stride..]`.
///
/// Panics (before touching memory) if `data` is too short for that layout.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn compress512_x8(state: &mut [__m512i; 8], data: &[u8], stride: usize, blocks: usize) {
    let need = (LANES512 - 1) * stride + blocks * 128;
    assert!(
        blocks == 0 || data.len() >= need,
        "multi-buffer input too short"
    );
    // SAFETY: `BSWAP64` is 64 bytes.
    let bswap = unsafe { load(BSWAP64.as_ptr()) };
    for b in 0..blocks {
        let mut w = [_mm512_setzero_si512(); 16];
        for half in 0..2 {
            let mut rows = [_mm512_setzero_si512(); 8];
            for (l, row) in rows.iter_mut().enumerate() {
                let at = l * stride + b * 128 + half * 64;
                // SAFETY: `at + 64 <= (LANES512 - 1) * stride + blocks * 128 <= data.len()`
                // (checked above), so the 64 bytes read are inside `data`.
                *row = unsafe { load(data.as_ptr().add(at)) };
            }
            transpose8(&mut rows);
            for (k, row) in rows.iter().enumerate() {
                w[half * 8 + k] = _mm512_shuffle_epi8(*row, bswap);
            }
        }
        let [mut a, mut bb, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for t in 0..80 {
            let wt = if t < 16 {
                w[t]
            } else {
                let w15 = w[(t - 15) & 15];
                let w2 = w[(t - 2) & 15];
                let s0 = _mm512_ternarylogic_epi64::<0x96>(
                    _mm512_ror_epi64::<1>(w15),
                    _mm512_ror_epi64::<8>(w15),
                    _mm512_srli_epi64::<7>(w15),
                );
                let s1 = _mm512_ternarylogic_epi64::<0x96>(
                    _mm512_ror_epi64::<19>(w2),
                    _mm512_ror_epi64::<61>(w2),
                    _mm512_srli_epi64::<6>(w2),
                );
                let v = _mm512_add_epi64(
                    _mm512_add_epi64(w[t & 15], s0),
                    _mm512_add_epi64(w[(t - 7) & 15], s1),
                );
                w[t & 15] = v;
                v
            };
            let s1 = _mm512_ternarylogic_epi64::<0x96>(
                _mm512_ror_epi64::<14>(e),
                _mm512_ror_epi64::<18>(e),
                _mm512_ror_epi64::<41>(e),
            );
            let ch = _mm512_ternarylogic_epi64::<0xca>(e, f, g);
            let kw = _mm512_add_epi64(wt, _mm512_set1_epi64(K512[t] as i64));
            let t1 = _mm512_add_epi64(_mm512_add_epi64(h, s1), _mm512_add_epi64(ch, kw));
            let s0 = _mm512_ternarylogic_epi64::<0x96>(
                _mm512_ror_epi64::<28>(a),
                _mm512_ror_epi64::<34>(a),
                _mm512_ror_epi64::<39>(a),
            );
            let maj = _mm512_ternarylogic_epi64::<0xe8>(a, bb, c);
            let t2 = _mm512_add_epi64(s0, maj);
            h = g;
            g = f;
            f = e;
            e = _mm512_add_epi64(d, t1);
            d = c;
            c = bb;
            bb = a;
            a = _mm512_add_epi64(t1, t2);
        }
        for (s, v) in state.iter_mut().zip([a, bb, c, d, e, f, g, h]) {
            *s = _mm512_add_epi64(*s, v);
        }
    }
}

/// Compresses `blocks` 64-byte blocks of 16 messages into `state` (`state[j]` holds word `j` of
/// every lane). Lane `l`'s blocks start at `data[l * stride..]`.
///
/// Panics (before touching memory) if `data` is too short for that layout.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn compress256_x16(state: &mut [__m512i; 8], data: &[u8], stride: usize, blocks: usize) {
    let need = (LANES256 - 1) * stride + blocks * 64;
    assert!(
        blocks == 0 || data.len() >= need,
        "multi-buffer input too short"
    );
    // SAFETY: `BSWAP32` is 64 bytes.
    let bswap = unsafe { load(BSWAP32.as_ptr()) };
    for b in 0..blocks {
        let mut w = [_mm512_setzero_si512(); 16];
        for (l, row) in w.iter_mut().enumerate() {
            let at = l * stride + b * 64;
            // SAFETY: `at + 64 <= (LANES256 - 1) * stride + blocks * 64 <= data.len()` (checked
            // above), so the 64 bytes read are inside `data`.
            *row = unsafe { load(data.as_ptr().add(at)) };
        }
        transpose16(&mut w);
        for v in w.iter_mut() {
            *v = _mm512_shuffle_epi8(*v, bswap);
        }
        let [mut a, mut bb, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for t in 0..64 {
            let wt = if t < 16 {
                w[t]
            } else {
                let w15 = w[(t - 15) & 15];
                let w2 = w[(t - 2) & 15];
                let s0 = _mm512_ternarylogic_epi32::<0x96>(
                    _mm512_ror_epi32::<7>(w15),
                    _mm512_ror_epi32::<18>(w15),
                    _mm512_srli_epi32::<3>(w15),
                );
                let s1 = _mm512_ternarylogic_epi32::<0x96>(
                    _mm512_ror_epi32::<17>(w2),
                    _mm512_ror_epi32::<19>(w2),
                    _mm512_srli_epi32::<10>(w2),
                );
                let v = _mm512_add_epi32(
                    _mm512_add_epi32(w[t & 15], s0),
                    _mm512_add_epi32(w[(t - 7) & 15], s1),
                );
                w[t & 15] = v;
                v
            };
            let s1 = _mm512_ternarylogic_epi32::<0x96>(
                _mm512_ror_epi32::<6>(e),
                _mm512_ror_epi32::<11>(e),
                _mm512_ror_epi32::<25>(e),
            );
            let ch = _mm512_ternarylogic_epi32::<0xca>(e, f, g);
            let kw = _mm512_add_epi32(wt, _mm512_set1_epi32(K256[t] as i32));
            let t1 = _mm512_add_epi32(_mm512_add_epi32(h, s1), _mm512_add_epi32(ch, kw));
            let s0 = _mm512_ternarylogic_epi32::<0x96>(
                _mm512_ror_epi32::<2>(a),
                _mm512_ror_epi32::<13>(a),
                _mm512_ror_epi32::<22>(a),
            );
            let maj = _mm512_ternarylogic_epi32::<0xe8>(a, bb, c);
            let t2 = _mm512_add_epi32(s0, maj);
            h = g;
            g = f;
            f = e;
            e = _mm512_add_epi32(d, t1);
            d = c;
            c = bb;
            bb = a;
            a = _mm512_add_epi32(t1, t2);
        }
        for (s, v) in state.iter_mut().zip([a, bb, c, d, e, f, g, h]) {
            *s = _mm512_add_epi32(*s, v);
        }
    }
}

/// SHA-512 or SHA-384 (by `iv` and `out_len`) of `count = out.len() / out_len` messages of `len`
/// bytes each, laid out back to back in `data`, in groups of 8; returns how many messages it
/// hashed (a multiple of 8; the caller hashes the rest).
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn sha512_family(
    iv: &[u64; 8],
    data: &[u8],
    len: usize,
    out: &mut [u8],
    out_len: usize,
) -> usize {
    let count = out.len() / out_len;
    let groups = count / LANES512;
    let full = len / 128;
    let tail = len % 128;
    // The last one or two blocks of every lane: tail bytes, 0x80, zeros, 128-bit bit length.
    let last = if tail < 112 { 1 } else { 2 };
    let mut pad = [0u8; LANES512 * 256];
    for gi in 0..groups {
        let group = &data[gi * LANES512 * len..(gi + 1) * LANES512 * len];
        let mut state = [_mm512_setzero_si512(); 8];
        for (s, v) in state.iter_mut().zip(iv) {
            *s = _mm512_set1_epi64(*v as i64);
        }
        compress512_x8(&mut state, group, len, full);
        for l in 0..LANES512 {
            let p = &mut pad[l * 256..l * 256 + last * 128];
            p.fill(0);
            p[..tail].copy_from_slice(&group[l * len + full * 128..(l + 1) * len]);
            p[tail] = 0x80;
            p[last * 128 - 16..].copy_from_slice(&((len as u128) * 8).to_be_bytes());
        }
        compress512_x8(&mut state, &pad, 256, last);
        let mut words = [[0u64; 8]; 8];
        for (j, s) in state.iter().enumerate() {
            // SAFETY: `words[j]` is 64 writable bytes; `storeu` has no alignment need.
            unsafe { _mm512_storeu_si512(words[j].as_mut_ptr().cast(), *s) };
        }
        for l in 0..LANES512 {
            let o = &mut out[(gi * LANES512 + l) * out_len..(gi * LANES512 + l + 1) * out_len];
            for (j, chunk) in o.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&words[j][l].to_be_bytes()[..chunk.len()]);
            }
        }
    }
    groups * LANES512
}

/// SHA-256 of `out.len() / 32` messages of `len` bytes each, laid out back to back in `data`, in
/// groups of 16; returns how many messages it hashed (a multiple of 16; the caller hashes the
/// rest).
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn sha256_x16(iv: &[u32; 8], data: &[u8], len: usize, out: &mut [u8]) -> usize {
    let count = out.len() / 32;
    let groups = count / LANES256;
    let full = len / 64;
    let tail = len % 64;
    let last = if tail < 56 { 1 } else { 2 };
    let mut pad = [0u8; LANES256 * 128];
    for gi in 0..groups {
        let group = &data[gi * LANES256 * len..(gi + 1) * LANES256 * len];
        let mut state = [_mm512_setzero_si512(); 8];
        for (s, v) in state.iter_mut().zip(iv) {
            *s = _mm512_set1_epi32(*v as i32);
        }
        compress256_x16(&mut state, group, len, full);
        for l in 0..LANES256 {
            let p = &mut pad[l * 128..l * 128 + last * 64];
            p.fill(0);
            p[..tail].copy_from_slice(&group[l * len + full * 64..(l + 1) * len]);
            p[tail] = 0x80;
            p[last * 64 - 8..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
        }
        compress256_x16(&mut state, &pad, 128, last);
        let mut words = [[0u32; 16]; 8];
        for (j, s) in state.iter().enumerate() {
            // SAFETY: `words[j]` is 64 writable bytes; `storeu` has no alignment need.
            unsafe { _mm512_storeu_si512(words[j].as_mut_ptr().cast(), *s) };
        }
        for l in 0..LANES256 {
            let o = &mut out[(gi * LANES256 + l) * 32..(gi * LANES256 + l + 1) * 32];
            for (j, chunk) in o.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&words[j][l].to_be_bytes());
            }
        }
    }
    groups * LANES256
}
