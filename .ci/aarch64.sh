#!/usr/bin/env bash
# cca-backend for aarch64 (issue 22, item 4): cross-compiled, linted and its tests run under
# qemu-user. The real ioctl paths (`KvmCcaIoctl`'s `#[cfg(target_arch = "aarch64")]` code) are
# compiled only for that target, so this is the one place they are built and linted.
# Run from anywhere: `bash .ci/aarch64.sh`. Installs what it needs on a fresh Debian machine
# (the Rust toolchain through rustup, and apt-get); uses CARGO_TARGET_DIR when set.
# Default features only: the `openssl` feature would need a cross OpenSSL, and the one
# dev-dependency that needs OpenSSL (cca-realm-measurements, tests/reference_rim.rs) is an
# x86_64-only dev-dependency (see crates/cca-backend/Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
target=aarch64-unknown-linux-gnu
start=$(date +%s)

step "install: rustup target $target, clippy"
rustup target add "$target" >/dev/null
rustup component add clippy >/dev/null 2>&1 || true

step "install: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user (apt-get)"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-dev-arm64-cross)
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[ -n "$qemu" ] || need+=(qemu-user-static)
if [ "${#need[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing ${need[*]} and no apt-get to install them" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64)"
fi

# The cross linker, and the tests run through qemu-user with the cross C library's loader.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$qemu -L /usr/aarch64-linux-gnu"
# C code built by dependencies' build scripts (ring).
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

step "cargo clippy -p cca-backend --target $target: all targets, the library, each feature alone"
cargo clippy -p cca-backend --target "$target" --all-targets -- \
    -D warnings -D clippy::undocumented_unsafe_blocks
cargo clippy -p cca-backend --target "$target" --lib -- \
    -D warnings -D clippy::undocumented_unsafe_blocks
# The feature-trimmed builds (issue 25): measurement only (no KVM crate), populate only (no
# hashing crate).
for features in measure kvm; do
    cargo clippy -p cca-backend --target "$target" --lib --no-default-features \
        --features "$features" -- -D warnings -D clippy::undocumented_unsafe_blocks
done

step "cargo test -p cca-backend --target $target (under $qemu)"
# Tests that need KVM are skipped by gmem::testing's harness with the reason (qemu-user does
# not forward KVM ioctls: KVM_CREATE_VM is ENOSYS); they run on real arm64 KVM only. Those
# skips are qemu-user's, not the host's: they stay out of the host's skip log, whose check
# would find KVM here and call them wrong.
# tests/reference_rim.rs compiles to nothing on aarch64 (its reference links OpenSSL).
unset CCPOP_KVM_SKIP_LOG
cargo test -p cca-backend --target "$target"

echo "aarch64: done in $(($(date +%s) - start)) s"
