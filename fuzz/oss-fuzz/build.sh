#!/bin/bash -eu
# OSS-Fuzz build script for cc-populate: builds every cargo-fuzz target of fuzz/ with the
# sanitizer and flags OSS-Fuzz sets, and ships each target's checked-in seeds as its seed
# corpus. Runs inside the base-builder-rust image ($SRC, $OUT and the nightly toolchain are
# provided there); also usable locally with SRC and OUT set.
cd "$SRC/cc-populate/fuzz"

cargo fuzz build -O --debug-assertions

bin=target/x86_64-unknown-linux-gnu/release
for target in $(cargo fuzz list); do
    cp "$bin/$target" "$OUT/"
    if compgen -G "corpus/$target/seed-*" >/dev/null; then
        zip -jq "$OUT/${target}_seed_corpus.zip" corpus/"$target"/seed-*
    fi
done

# The image parsers need inputs of a few pages to reach the metadata.
for target in fuzz_sev_ovmf fuzz_tdvf fuzz_igvm; do
    printf '[libfuzzer]\nmax_len = 65536\n' >"$OUT/$target.options"
done
