#!/usr/bin/env python3
"""Reads one lab boot's serial console and reports it (called by lab/run).

    report.py KERNEL CONSOLE_LOG EXPECTED QEMU_RC TOTALS

EXPECTED: `<package>/<test> <number of tests it lists>` per line. Appends `passed failed
skipped` to TOTALS. Exit 1 on any failure (see lab/run).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skipcheck  # noqa: E402

kernel, console, expected_path, qemu_rc, totals = sys.argv[1:6]
text = re.sub(r"\x1b\[[0-9;]*m", "", open(console, errors="replace").read().replace("\r", ""))
expected = {}
for line in open(expected_path):
    name, n = line.split()
    expected[name] = int(n)

problems = []
start = re.search(r"^@@LAB START (\S*)", text, re.M)
if not start:
    problems.append("the boot never reached the runner (no @@LAB START): last console lines:\n"
                    + "\n".join(text.splitlines()[-15:]))
release = start.group(1) if start else "?"
caps = {}
m = re.search(r"^@@LAB CAPS (.*)$", text, re.M)
if m:
    for kv in m.group(1).split():
        k, _, v = kv.partition("=")
        try:
            caps[k] = int(v)
        except ValueError:
            caps[k] = v
passed = failed = skipped = 0
blocks = re.findall(r"^@@LAB BEGIN (\S+)\n(.*?)^@@LAB END \1 rc=(\S+) secs=(\S+)", text, re.M | re.S)
seen = set()
for name, body, rc, secs in blocks:
    seen.add(name)
    if name == "ccpop-demo":
        lines = [l for l in body.splitlines() if l.strip()]
        if not skipcheck.offered("guest_memfd_shared", caps) and caps:
            # The demo needs the shared view: on a kernel without it, it must say so and exit 2.
            said = rc == "2" and lines and "needs guest_memfd with MMAP|INIT_SHARED" in lines[-1]
            print(f"  [{kernel}] ccpop demo: {'skipped, as it must be without the shared view' if said else 'FAILED (rc ' + rc + ')'}")
            if said:
                skipped += 1
            else:
                failed += 1
                problems.append("ccpop demo on a kernel without the shared view:\n" + "\n".join(lines[-10:]))
            continue
        ok = rc == "0" and lines and lines[-1].strip() == "verified"
        print(f"  [{kernel}] ccpop demo: {'verified' if ok else 'FAILED (rc ' + rc + ')'} in {secs} s")
        if ok:
            passed += 1
        else:
            failed += 1
            problems.append("ccpop demo did not print verified:\n" + "\n".join(lines[-10:]))
        continue
    # libtest's summary; the per-test lines can be interleaved with the tests' own output.
    summary = re.search(r"test result: \S+\. (\d+) passed; (\d+) failed; (\d+) ignored", body)
    p, f, i = (int(x) for x in summary.groups()) if summary else (0, 0, 0)
    if not summary:
        problems.append(f"{name}: no libtest summary line")
    for test in re.findall(r"^---- (\S+) ----$", body, re.M):
        print(f"  [{kernel}] {name} {test} ... FAILED")
    passed, failed, skipped = passed + p, failed + f, skipped + i
    want = expected.get(name)
    print(f"  [{kernel}] {name}: {p} passed, {f} failed, {i} skipped of {want} in {secs} s (rc {rc})")
    if want is not None and p + f + i < want:
        problems.append(f"{name}: {p + f + i} results for {want} tests packed")
    if rc != "0":
        problems.append(f"{name}: exit {rc}")
        if f == 0:
            failed += 1
            print(body[-3000:])
    if f:
        print("\n".join(l for l in body.splitlines()[-60:]))
for name in expected:
    if name not in seen:
        problems.append(f"{name}: never ran")
if "ccpop-demo" not in seen:
    problems.append("ccpop demo never ran")
if not re.search(r"^@@LAB DONE", text, re.M):
    problems.append("the runner never finished (hang or crash)")
if qemu_rc not in ("0",):
    problems.append(f"QEMU exited {qemu_rc}" + (" (time-out)" if qemu_rc in ("124", "137") else ""))
skips = [l[len("@@LAB SKIP "):] for l in text.splitlines() if l.startswith("@@LAB SKIP ")]
ids = sorted({skipcheck.SKIP.match(s).group(1) for s in skips if skipcheck.SKIP.match(s)})
for bad in skipcheck.wrong_skips(skips, caps):
    problems.append("skipped for something this kernel offers: " + bad)
print(f"  [{kernel}] kernel {release}: KVM {' '.join(f'{k}={v}' for k, v in caps.items())}")
print(f"  [{kernel}] skipped for: {', '.join(ids) or 'nothing'}")
for p in problems:
    print(f"  [{kernel}] PROBLEM: {p}")
print(f"kernel {kernel} ({release}): {passed} passed, {failed} failed, {skipped} skipped")
with open(totals, "a") as t:
    t.write(f"{passed} {failed + (1 if problems and not failed else 0)} {skipped}\n")
sys.exit(1 if problems else 0)
