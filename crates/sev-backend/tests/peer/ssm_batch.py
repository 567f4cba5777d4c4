#!/usr/bin/env python3
"""Runs sev-snp-measure (the PyPI package `sev-snp-measure`, module `sevsnpmeasure`) over many
cases in one process, so that the tests compare against the peer itself without paying its
interpreter start per case.

stdin: a JSON list of cases; stdout: a JSON list of results, one per case, in order.
A case: {"ovmf": path, "vcpus": n, "vmm": "QEMU"|"ec2"|"gce",
         "type": CPU type name | "fms": [family, model, stepping] | "sig": int | none,
         "features": int, "kernel": path|null, "initrd": path|null, "append": str|null,
         "ovmf_hash": hex|null, "svsm": path|null, "vars_size": int,
         "vmsas": bool (also return the hex of every VMSA page),
         "ovmf_only": bool (the firmware pages' digest alone),
         "seed": bool (start from the peer's own firmware digest, as --snp-ovmf-hash),
         "svsm_fcw_fix": bool (from here on, give SVSM VMSAs the kernel's X87_FCW)}
A result: {"digest": hex, "vmsas": [hex, ...]} or {"error": "..."}.

Two things can be changed in the peer: `svsm_fcw_fix` (see `_fix_svsm_fcw`), and the SHA-256 of a kernel/initrd/command line triple is
computed once per triple and reused (the same bytes, hashed by the peer's own code), so the
matrix does not hash the same 14 MB kernel thousands of times.
"""

import json
import sys

from sevsnpmeasure import guest, sev_hashes, vcpu_types
from sevsnpmeasure.ovmf import OVMF, SVSM
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType
from sevsnpmeasure.vmsa import VMSA, VMSA_SVSM

_orig_init = sev_hashes.SevHashes.__init__
_memo = {}


def _memo_init(self, kernel, initrd, append):
    key = (kernel, initrd, append)
    if key not in _memo:
        _orig_init(self, kernel, initrd, append)
        _memo[key] = (self.kernel_hash, self.initrd_hash, self.cmdline_hash)
    self.kernel_hash, self.initrd_hash, self.cmdline_hash = _memo[key]


sev_hashes.SevHashes.__init__ = _memo_init


_seeds = {}


def seed(path):
    if path not in _seeds:
        _seeds[path] = guest.calc_snp_ovmf_hash(path).hex()
    return _seeds[path]


def signature(c):
    if c.get("type") is not None:
        return vcpu_types.CPU_SIGS[c["type"]]
    if c.get("fms") is not None:
        return vcpu_types.cpu_sig(*c["fms"])
    return c.get("sig")


def run(c):
    vmm = VMMType[c.get("vmm", "QEMU")]
    if c.get("ovmf_only"):
        return {"digest": seed(c["ovmf"])}
    if c.get("seed"):
        c["ovmf_hash"] = seed(c["ovmf"])
    c["sig"] = signature(c)
    if c.get("svsm_fcw_fix"):
        _fix_svsm_fcw()
    svsm = c.get("svsm")
    mode = SevMode.SEV_SNP_SVSM if svsm else SevMode.SEV_SNP
    ld = guest.calc_launch_digest(
        mode, c["vcpus"], c.get("sig"), c["ovmf"], c.get("kernel"), c.get("initrd"),
        c.get("append"), c.get("features", 1), c.get("ovmf_hash") or "", vmm, False,
        svsm or "", c.get("vars_size", 0))
    out = {"digest": ld.hex()}
    if c.get("vmsas"):
        if svsm:
            ovmf = OVMF(c["ovmf"])
            s = SVSM(svsm, end_at=ovmf.gpa() - c.get("vars_size", 0))
            pages = VMSA_SVSM(s.sev_es_reset_eip(), c.get("sig")).pages(c["vcpus"])
        else:
            ovmf = OVMF(c["ovmf"])
            pages = VMSA(SevMode.SEV_SNP, ovmf.sev_es_reset_eip(), c.get("sig"),
                         c.get("features", 1), vmm).pages(c["vcpus"])
        out["vmsas"] = [p.hex() for p in pages]
    return out


def _fix_svsm_fcw():
    """The kernel's value for the SVSM VMSA's X87_FCW (see svsm_vmsas in sev-backend): the
    peer's VMSA_SVSM passes 0x37f as `fcw`, a name that is not a field, leaving it 0."""
    if getattr(VMSA_SVSM, "_fcw_fixed", False):
        return
    build = VMSA_SVSM.build_save_area

    def fixed(*a, **k):
        area = build(*a, **k)
        area.x87_fcw = 0x37f
        return area

    VMSA_SVSM.build_save_area = staticmethod(fixed)
    VMSA_SVSM._fcw_fixed = True


def main():
    results = []
    for c in json.load(sys.stdin):
        try:
            results.append(run(c))
        except Exception as e:  # the peer's refusals are results too
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
