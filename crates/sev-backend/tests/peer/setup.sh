#!/usr/bin/env bash
# Sets up what the tests that compare with sev-snp-measure need, in DIR (default
# /tmp/ccpop-peer, the tests' default too; they read CCPOP_PEER_DIR):
# - sev-snp-measure 0.0.13 from PyPI (pip), the peer the SNP measurement is checked against;
# - DIR/vmlinuz: a real kernel image, from Debian's linux-image-cloud-amd64 (apt-get download);
# - DIR/initrd.img: a generated initrd (an uncompressed newc cpio archive, deterministic).
# Idempotent: what is there already is kept.
set -euo pipefail
dir="${1:-${CCPOP_PEER_DIR:-/tmp/ccpop-peer}}"
mkdir -p "$dir"

if ! python3 -c 'import sevsnpmeasure' 2>/dev/null; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    # A distribution's own Python refuses pip installs (PEP 668) unless told otherwise.
    python3 -m pip install -q 'sev-snp-measure==0.0.13' ||
        python3 -m pip install -q --break-system-packages 'sev-snp-measure==0.0.13'
fi
python3 -c 'import sevsnpmeasure'

if [ ! -s "$dir/vmlinuz" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
        apt-get update -qq
    fi
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
    (cd "$work" && apt-get download -qq "$pkg" 2>/dev/null)
    dpkg-deb -x "$work"/*.deb "$work/x"
    cp "$work"/x/boot/vmlinuz-* "$dir/vmlinuz.tmp"
    mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
    echo "$pkg" >"$dir/vmlinuz.package"
fi

if [ ! -s "$dir/initrd.img" ]; then
    python3 - "$dir/initrd.img" <<'PY'
import random, sys

def entry(name, data, mode):
    hdr = "070701" + "".join(f"{v:08x}" for v in (
        0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    out = hdr.encode() + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)

rng = random.Random(15)
files = [
    ("init", b"#!/bin/sh\necho measured direct boot\nexec /bin/sh\n", 0o100755),
    ("data.bin", bytes(rng.getrandbits(8) for _ in range(3 << 20)), 0o100644),
]
blob = b"".join(entry(n, d, m) for n, d, m in files) + entry("TRAILER!!!", b"", 0)
open(sys.argv[1], "wb").write(blob + b"\0" * (-len(blob) % 512))
PY
fi
ls -l "$dir"
