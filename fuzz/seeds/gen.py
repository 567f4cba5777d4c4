#!/usr/bin/env python3
"""Writes the seed images of the parser fuzz targets (fuzz/corpus/<target>/seed-*).

The images follow the layouts as documented (OVMF GUIDed table, SEV metadata, TDVF metadata,
SNP CPUID table); they are small (4 or 8 KiB) so libFuzzer's default max_len covers them.
Run from fuzz/: python3 seeds/gen.py
"""
import os
import struct
import uuid

FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
SEV_META = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc").bytes_le
TDX_META = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
OTHER = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454").bytes_le  # SEV hash table GUID


def table(size, entries):
    """An image of `size` bytes whose GUIDed table holds `entries` [(guid, data)], first entry
    nearest the footer."""
    img = bytearray(size)
    end = size - 50
    total = 18
    for guid, data in entries:
        n = len(data) + 18
        img[end - n:end - 18] = data
        img[end - 18:end - 16] = struct.pack("<H", n)
        img[end - 16:end] = guid
        end -= n
        total += n
    img[size - 50:size - 48] = struct.pack("<H", total)
    img[size - 48:size - 32] = FOOTER
    return img


def sev_image(size, sections, meta_at=0x100):
    img = table(size, [(OTHER, b"\0" * 8), (SEV_META, struct.pack("<I", size - meta_at))])
    body = struct.pack("<4sIII", b"ASEV", 16 + 12 * len(sections), 1, len(sections))
    for base, length, kind in sections:
        body += struct.pack("<III", base, length, kind)
    img[meta_at:meta_at + len(body)] = body
    return bytes(img)


def tdvf_image(size, sections, meta_at=0x200):
    img = table(size, [(TDX_META, struct.pack("<I", size - meta_at)), (OTHER, b"\0" * 4)])
    body = struct.pack("<4sIII", b"TDVF", 16 + 32 * len(sections), 1, len(sections))
    for off, raw, addr, msize, kind, attr in sections:
        body += struct.pack("<IIQQII", off, raw, addr, msize, kind, attr)
    img[meta_at:meta_at + len(body)] = body
    return bytes(img)


def cpuid(entries, pad=4096):
    b = struct.pack("<IIQ", len(entries), 0, 0)
    for leaf, sub, regs in entries:
        b += struct.pack("<IIQQIIIIQ", leaf, sub, 0, 0, *regs, 0)
    return (b + b"\0" * pad)[: max(pad, len(b))]


def write(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


write("fuzz_sev_ovmf", "qemu-like", sev_image(4096, [(0x80_0000, 0x1000, 1), (0x80_1000, 0x1000, 2), (0x80_2000, 0x1000, 3), (0x80_3000, 0x2000, 0x10)]))
write("fuzz_sev_ovmf", "svsm-unknown", sev_image(8192, [(0x80_0000, 0x1000, 4), (0x80_1000, 0x1000, 0x77)]))
write("fuzz_sev_ovmf", "no-metadata", bytes(table(4096, [(OTHER, b"abcd")])))
write("fuzz_tdvf", "bfv-temp", tdvf_image(4096, [(0, 4096, (1 << 32) - 4096, 4096, 0, 1), (0, 0, 0x80_0000, 0x2000, 3, 0)]))
write("fuzz_tdvf", "cfv-hob-aug", tdvf_image(8192, [(0, 4096, (1 << 32) - 8192, 4096, 1, 0), (4096, 4096, (1 << 32) - 4096, 4096, 0, 1), (0, 0, 0x81_0000, 0x1000, 2, 0), (0, 0, 0x90_0000, 0x10000, 4, 2)]))
write("fuzz_sev_cpuid", "two-leaves", b"\x10" + cpuid([(0, 0, (0x10, 0x68747541, 0x444D4163, 0x69746E65)), (0x8000001F, 0, (0x1, 0x2, 0x3, 0x4))], 256))
write("fuzz_sev_cpuid", "max-count", b"\x00" + cpuid([(i, i & 3, (i, i, i, i)) for i in range(64)], 16 + 48 * 64))
write("fuzz_sev_cpuid", "count-too-big", b"\x00" + struct.pack("<IIQ", 65, 0, 0) + b"\0" * 64)
