#!/usr/bin/env python3
"""Line coverage of the host's test run and the KVM lab's, together (called by .ci/run).

    coverage.py PROFILE_DIR HOST_BUILD_JSON CONFIG

PROFILE_DIR holds the .profraw files of both runs and `objects`, the lab's binaries (lab/run
writes both with CCPOP_LAB_COVERAGE); HOST_BUILD_JSON is cargo's --message-format=json of the
host build, naming its binaries. Merges the profiles with llvm-profdata, exports a summary with
llvm-cov over every binary (a line counts as covered if any run covered it), and compares the
line total with coverage_config.json's coverage_score, over the files it does not exclude.
"""
import glob
import json
import os
import subprocess
import sys

profdir, host_json, config_path = sys.argv[1:4]
config = json.load(open(config_path))
sysroot = subprocess.check_output(["rustc", "--print", "sysroot"], text=True).strip()
host = subprocess.check_output(["rustc", "-vV"], text=True)
triple = next(l.split(": ")[1] for l in host.splitlines() if l.startswith("host: "))
bindir = os.path.join(sysroot, "lib", "rustlib", triple, "bin")
profdata = os.path.join(bindir, "llvm-profdata")
llvm_cov = os.path.join(bindir, "llvm-cov")

objects = []
for line in open(host_json):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        objects.append(m["executable"])
lab_objects = os.path.join(profdir, "objects")
if os.path.exists(lab_objects):
    objects += [l.strip() for l in open(lab_objects) if l.strip()]
objects = sorted(set(o for o in objects if os.path.exists(o)))
raws = sorted(glob.glob(os.path.join(profdir, "*.profraw")) + glob.glob(os.path.join(profdir, "lab-*")))
lab_raws = [r for r in raws if os.path.basename(r).startswith("lab-")]
print(f"coverage: {len(raws)} profiles ({len(lab_raws)} from the lab), {len(objects)} binaries")
if not raws or not objects:
    sys.exit("coverage: nothing to report")
merged = os.path.join(profdir, "merged.profdata")
subprocess.check_call([profdata, "merge", "-sparse", "-o", merged] + raws)
ignore = r"(/\.cargo/registry/|/rustc/|/tests/|/examples/|/benches/|/lab/|/fuzz/)"
if config.get("exclude_path"):
    ignore = ignore[:-1] + "|" + config["exclude_path"] + ")"
args = [llvm_cov, "export", "-summary-only", "-instr-profile=" + merged,
        "-ignore-filename-regex=" + ignore, objects[0]]
for o in objects[1:]:
    args += ["-object", o]
out = subprocess.run(args, capture_output=True, text=True)
if out.returncode != 0:
    sys.exit("llvm-cov export failed: " + out.stderr[-2000:])
data = json.loads(out.stdout)["data"][0]
lines = data["totals"]["lines"]
got = lines["percent"]
want = float(config["coverage_score"])
print(f"line coverage: {got:.2f}% ({lines['covered']}/{lines['count']} lines, host and lab); required: {want}%")
for f in sorted(data["files"], key=lambda f: f["summary"]["lines"]["percent"])[:8]:
    l = f["summary"]["lines"]
    print(f"  {l['percent']:6.2f}% {l['covered']:5}/{l['count']:<5} {f['filename']}")
if got + 1e-9 < want:
    sys.exit(f"coverage {got:.2f}% is below coverage_score {want}%")
if got >= want + 1.0:
    print(f"note: coverage is above coverage_score; raise it to {int(got * 100) / 100}")
