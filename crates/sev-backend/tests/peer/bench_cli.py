#!/usr/bin/env python3
"""Wall time of `ccpop measure snp` against `sev-snp-measure --mode snp` for the same launch
(64 vCPUs, EPYC-Milan, a kernel, an initrd and a command line, on the AmdSev OVMF fixture),
measured in one run with the two commands interleaved; prints each one's median and best and
the ratio, and checks that both print the same digest.

Usage: bench_cli.py CCPOP_BINARY [RUNS] (after setup.sh; CCPOP_PEER_DIR as there).
The peer runs as its installed console script (not a pyenv shim), so that neither side pays a
wrapper the other does not.
"""

import os
import statistics
import subprocess
import sys
import sysconfig
import time

here = os.path.dirname(os.path.abspath(__file__))
ccpop = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 21
peer_dir = os.environ.get("CCPOP_PEER_DIR", "/tmp/ccpop-peer")
# sev-snp-measure's own fixture, kept beside the repository (never copied into it).
fixtures = os.environ.get("CCPOP_SSM_FIXTURES",
                          os.path.join(here, "..", "..", "..", "..", "..", "shared", "fixtures",
                                       "sev-snp-measure"))
ovmf = os.path.join(fixtures, "ovmf_AmdSev_suffix.bin")
ssm = os.path.join(sysconfig.get_path("scripts"), "sev-snp-measure")

launch = ["--ovmf", ovmf, "--vcpus", "64", "--vcpu-type", "EPYC-Milan",
          "--kernel", os.path.join(peer_dir, "vmlinuz"),
          "--initrd", os.path.join(peer_dir, "initrd.img"),
          "--append", "console=ttyS0 root=/dev/vda1 ro"]
cmds = {
    "ccpop measure snp": [ccpop, "measure", "snp"] + launch,
    "sev-snp-measure --mode snp": [ssm, "--mode", "snp"] + launch,
}

times = {k: [] for k in cmds}
digests = {}
for i in range(runs + 1):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        dt = time.perf_counter() - t
        digests[name] = out.strip().splitlines()[-1]
        if i > 0:  # the first round warms the page cache
            times[name].append(dt)

if len(set(digests.values())) != 1:
    sys.exit(f"digests differ: {digests}")
for name, ts in times.items():
    print(f"{name}: median {statistics.median(ts) * 1e3:.1f} ms, best {min(ts) * 1e3:.1f} ms "
          f"({runs} runs)")
ours, peer = (times[k] for k in cmds)
print(f"ratio ccpop / sev-snp-measure: median {statistics.median(ours) / statistics.median(peer):.3f}, "
      f"best {min(ours) / min(peer):.3f}")
print(f"digest (both): {digests['ccpop measure snp']}")
