#!/usr/bin/env python3
"""Checks test skips against what the kernel offers, probed independently of the crates.

A test that needs something (gmem::testing::Need) and does not get it is reported skipped with a
line `SKIPPED [<id>] <test>: ...`. A skip is a defect when the kernel it ran on offers <id>, or,
for a file or tool id (`file:<path>`, `python:<module>`, `script:<name>`, `tool:<program>`), when
this host has it: checked here independently of the crates.

    python3 lab/skipcheck.py SKIP_LOG      # probe this host's /dev/kvm, check the log's skips
    python3 lab/skipcheck.py --offers ID   # exit 0 when this host offers ID

report.py uses `offered` with the capabilities the lab's runner printed from inside the lab kernel.
Capability numbers and ioctls are from include/uapi/linux/kvm.h (6.12 to 7.3 agree on these).
"""
import fcntl
import os
import re
import subprocess
import sys

KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
SKIP = re.compile(r"^SKIPPED \[([^\]]+)\] (\S+)")


def probe_host():
    """The capabilities of this host's KVM, as the lab runner names them (-1: not asked)."""
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return {"kvm": 0, "error": str(e)}
    try:
        try:
            vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        except OSError:
            return {"kvm": 0, "error": "KVM_CREATE_VM"}
        caps = {"kvm": 1}
        try:
            caps["guest_memfd"] = fcntl.ioctl(vm, KVM_CHECK_EXTENSION, 234)
            caps["guest_memfd_flags"] = fcntl.ioctl(vm, KVM_CHECK_EXTENSION, 244)
            caps["user_memory2"] = fcntl.ioctl(vm, KVM_CHECK_EXTENSION, 231)
            caps["vm_types"] = fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, 235)
        finally:
            os.close(vm)
        caps["memory_attributes_private"] = -1
        caps["pre_fault_memory"] = -1
        if caps["vm_types"] > 0 and caps["vm_types"] & 2:
            try:
                pvm = fcntl.ioctl(kvm, KVM_CREATE_VM, 1)
            except OSError:
                pvm = None
            if pvm is not None:
                try:
                    caps["memory_attributes_private"] = fcntl.ioctl(pvm, KVM_CHECK_EXTENSION, 233)
                    caps["pre_fault_memory"] = fcntl.ioctl(pvm, KVM_CHECK_EXTENSION, 236)
                finally:
                    os.close(pvm)
        return caps
    finally:
        os.close(kvm)


def runs(argv):
    """Whether `argv` runs and exits 0."""
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


def offered(need, caps):
    """Whether a kernel with `caps` offers the need named `need` (a skip id)."""
    g = lambda k: int(caps.get(k, -1))
    if need == "kvm":
        return g("kvm") == 1
    if need == "guest_memfd":
        return g("guest_memfd") > 0
    if need == "guest_memfd_shared":
        return g("guest_memfd") > 0 and g("guest_memfd_flags") >= 0 and g("guest_memfd_flags") & 3 == 3
    if need == "no_guest_memfd_shared":
        return not offered("guest_memfd_shared", caps)
    if need == "no_snp_vm":
        # A KVM without KVM_X86_SNP_VM (4) in KVM_CAP_VM_TYPES.
        return g("kvm") == 1 and not (g("vm_types") > 0 and g("vm_types") & (1 << 4))
    if need == "user_memory2":
        return g("user_memory2") > 0
    if need == "sw_protected_vm":
        return g("vm_types") > 0 and g("vm_types") & 2 != 0
    if need == "memory_attributes_private":
        return g("memory_attributes_private") > 0 and g("memory_attributes_private") & 8 != 0
    if need == "pre_fault_memory":
        return g("pre_fault_memory") > 0
    if need.startswith("file:"):
        return os.path.exists(need[5:])
    if need.startswith("python:"):
        # A Python module the test imports through `python3` (e.g. sev-snp-measure's).
        return runs(["python3", "-c", "import " + need[7:]])
    if need.startswith("script:"):
        # A console script pip installed for the `python3` on PATH (where its sysconfig puts
        # scripts), as the tests look for it.
        where = "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(" \
                "sysconfig.get_path('scripts'), sys.argv[1])))"
        return runs(["python3", "-c", where, need[7:]])
    if need.startswith("tool:"):
        # A program the test runs: it is offered where `<program> --version` succeeds.
        return runs([need[5:], "--version"])
    # An id this checker does not know is a defect in itself: report it as offered.
    return True


def wrong_skips(lines, caps):
    """The skip lines whose need the kernel offers."""
    bad = []
    for line in lines:
        m = SKIP.match(line.strip())
        if m and offered(m.group(1), caps):
            bad.append(line.strip())
    return bad


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--offers":
        caps = probe_host()
        ok = offered(sys.argv[2], caps)
        print(f"host KVM {'offers' if ok else 'lacks'} {sys.argv[2]}: "
              + " ".join(f"{k}={v}" for k, v in caps.items()))
        sys.exit(0 if ok else 1)
    if len(sys.argv) != 2:
        sys.exit("usage: skipcheck.py SKIP_LOG | skipcheck.py --offers ID")
    lines = open(sys.argv[1]).read().splitlines() if os.path.exists(sys.argv[1]) else []
    caps = probe_host()
    print("host KVM: " + " ".join(f"{k}={v}" for k, v in caps.items()))
    skipped = [l for l in lines if SKIP.match(l.strip())]
    bad = wrong_skips(lines, caps)
    ids = sorted({SKIP.match(l.strip()).group(1) for l in skipped})
    print(f"{len(skipped)} skips ({', '.join(ids) or 'none'}); {len(bad)} for something this host offers")
    for l in bad:
        print("  offered, yet skipped: " + l)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
