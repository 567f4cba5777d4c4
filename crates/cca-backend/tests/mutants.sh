#!/usr/bin/env bash
# Mutants of src/measure.rs and src/params.rs that the model's own RMM (src/testing/rmm.rs, no
# code shared with them) must catch (issue 22, item 3): each mutant is applied to the source,
# `model_rim_after_launch_equals_measure_for_the_series` is run, and it must FAIL; the source
# is restored afterwards (also on interruption). Run from anywhere:
#   bash crates/cca-backend/tests/mutants.sh
# Uses CARGO_TARGET_DIR when set. Exits non-zero if a mutant survives or does not apply.
set -euo pipefail
cd "$(dirname "$0")/.."
backup="$(mktemp -d)"
cp src/measure.rs src/params.rs "$backup/"
restore() { cp "$backup/measure.rs" src/measure.rs; cp "$backup/params.rs" src/params.rs; rm -rf "$backup"; }
trap restore EXIT

# file | sed expression | what it breaks
mutants=(
    "src/measure.rs|s/d\[0x58..0x60\].copy_from_slice(&RMI_MEASURE_CONTENT.to_le_bytes());/d[0x58..0x60].copy_from_slice(\&0u64.to_le_bytes());/|DATA descriptor: measure flag flipped to 0"
    "src/measure.rs|s/d\[0x50..0x58\].copy_from_slice(&ipa.to_le_bytes());/d[0x50..0x58].copy_from_slice(\&(ipa ^ 0x1000).to_le_bytes());/|DATA descriptor: wrong IPA"
    "src/measure.rs|s/if !rec.runnable {/if rec.runnable \&\& false {/|REC: non-runnable RECs measured"
    "src/measure.rs|s/d\[0x58..0x60\].copy_from_slice(&top.to_le_bytes());/d[0x58..0x60].copy_from_slice(\&(top - 0x1000).to_le_bytes());/|RIPAS descriptor: wrong top"
    "src/params.rs|s/p\[o::NUM_BPS\] = self.num_bps - 1;/p[o::NUM_BPS] = self.num_bps;/|REALM_CREATE: num_bps not minus one"
)
survived=0
for m in "${mutants[@]}"; do
    IFS='|' read -r file expr what <<<"$m"
    cp "$backup/$(basename "$file")" "$file"
    sed -i "$expr" "$file"
    if cmp -s "$file" "$backup/$(basename "$file")"; then
        echo "mutant did not apply: $what" >&2
        exit 1
    fi
    out="$(cargo test -p cca-backend --test backend_model -- --exact \
        model_rim_after_launch_equals_measure_for_the_series 2>&1)" && rc=0 || rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "SURVIVED: $what"
        survived=1
    elif grep -q "test result: FAILED" <<<"$out" && grep -q "panicked" <<<"$out"; then
        echo "caught:   $what"
    else
        # Not a failing test (a build error, say): the mutant proves nothing.
        echo "mutant did not build or run: $what" >&2
        tail -20 <<<"$out" >&2
        exit 1
    fi
    cp "$backup/$(basename "$file")" "$file"
done
exit "$survived"
