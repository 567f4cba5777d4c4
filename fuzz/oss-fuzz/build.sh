#!/bin/bash -eu
# OSS-Fuzz build script for cc-populate: builds every cargo-fuzz target of fuzz/ (all that
# `cargo fuzz list` names) with the sanitizer and flags OSS-Fuzz sets, and ships each target's
# checked-in seeds and regression inputs as its seed corpus. Runs inside the base-builder-rust
# image ($SRC, $OUT and the nightly toolchain are provided there); also usable locally with SRC
# and OUT set.
cd "$SRC/cc-populate/fuzz"

cargo fuzz build -O --debug-assertions

bin=target/x86_64-unknown-linux-gnu/release
for target in $(cargo fuzz list); do
    cp "$bin/$target" "$OUT/"
    # The seeds and every input that once crashed the target (regressions/<target>-*).
    inputs=()
    for f in corpus/"$target"/seed-* regressions/"$target"-*; do
        if [ -f "$f" ]; then inputs+=("$f"); fi
    done
    if [ "${#inputs[@]}" -gt 0 ]; then
        zip -jq "$OUT/${target}_seed_corpus.zip" "${inputs[@]}"
    fi
done

# The image parsers need inputs of a few pages to reach the metadata.
for target in fuzz_sev_ovmf fuzz_tdvf fuzz_igvm; do
    printf '[libfuzzer]\nmax_len = 65536\n' >"$OUT/$target.options"
done
