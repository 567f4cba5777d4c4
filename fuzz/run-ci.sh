#!/usr/bin/env bash
# Bounded runs of every fuzz target, from the checked-in seeds, for CI.
#
# Works on a stable toolchain: cargo-fuzz needs `-Zsanitizer` & co., which stable rustc accepts
# with RUSTC_BOOTSTRAP=1 (see fuzz/README.md). First replays every committed crash input
# (regressions/<target>-<name>) against its target, then fuzzes. Fails on any crash, leak,
# timeout or OOM, and prints what was replayed and each target's executions.
#
#   FUZZ_SECONDS  per-target time (default 50: 12 targets, two at a time, about 5 min)
#   FUZZ_JOBS     targets run at once (default 2: the machine's cores)
#   FUZZ_TARGETS  space-separated subset (default: every target)
#   FUZZ_SANITIZER  address (default) or none
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

secs="${FUZZ_SECONDS:-50}"
jobs="${FUZZ_JOBS:-2}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$here/target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

# Cargo caches rustc's target-info probe in target/.rustc_info.json without keying it on
# RUSTC_BOOTSTRAP: a probe that once failed without it would keep failing. Drop the cache.
rm -f "$CARGO_TARGET_DIR/.rustc_info.json"

echo "fuzz: building ($(cargo fuzz --version), $(rustc --version), sanitizer $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer" --release --debug-assertions

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
bindir="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Replay every input that once crashed a target: regressions/<target>-<name>, each run once
# against its target (every target was built above). Any failure fails CI.
replayed=0
replay_failed=0
for f in "$here"/regressions/*; do
    name="$(basename "$f")"
    [ "$name" = README.md ] && continue
    t="${name%%-*}"
    if [ ! -x "$bindir/$t" ]; then
        echo "fuzz: replay $name: no target $t"
        replay_failed=$((replay_failed + 1))
        continue
    fi
    if "$bindir/$t" -runs=1 -timeout=10 -rss_limit_mb=2048 "$f" >"$work/replay.log" 2>&1; then
        echo "fuzz: replayed $name against $t: ok"
        replayed=$((replayed + 1))
    else
        echo "fuzz: replayed $name against $t: FAILED"
        grep -v '^#[0-9]' "$work/replay.log" | tail -40
        replay_failed=$((replay_failed + 1))
    fi
done
echo "fuzz: $replayed regression inputs replayed, $replay_failed failed"
if [ "$replay_failed" != 0 ]; then
    exit 1
fi

run_one() {
    local t="$1"
    mkdir -p "$work/$t" "$here/artifacts/$t"
    # New inputs go to the scratch dir; the seeds are only read.
    local rc=0 seeds=()
    if [ -d "$here/corpus/$t" ]; then seeds=("$here/corpus/$t"); fi
    "$bindir/$t" \
        -max_total_time="$secs" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$t/" \
        "$work/$t" "${seeds[@]}" >"$work/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$work/$t.rc"
}

running=0
for t in $targets; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

passed=0
failed=0
printf '%-22s %12s %10s %8s %s\n' target executions exec/s corpus result
for t in $targets; do
    rc="$(cat "$work/$t.rc" 2>/dev/null || echo 1)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)"
    speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" | tail -1)"
    units="$(find "$work/$t" -type f | wc -l)"
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        result=ok
    else
        failed=$((failed + 1))
        result="FAILED (exit $rc)"
    fi
    printf '%-22s %12s %10s %8s %s\n' "$t" "${execs:-?}" "${speed:-?}" "$units" "$result"
done
for t in $targets; do
    rc="$(cat "$work/$t.rc" 2>/dev/null || echo 1)"
    if [ "$rc" != 0 ]; then
        echo "---- $t: last lines of its log"
        grep -v '^#[0-9]' "$work/$t.log" | tail -40
        echo "---- artifacts: $(ls "$here/artifacts/$t" 2>/dev/null | tr '\n' ' ')"
        echo "---- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/<file>"
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
