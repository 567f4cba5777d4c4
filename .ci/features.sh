#!/usr/bin/env bash
# Feature-trimmed builds (issues 24 and 25): each platform's measurement without any KVM crate
# (what a verifier computing reference values depends on), populate without a hashing crate,
# and a one-platform cc-image without the other backends. Builds each configuration and shows
# its dependency tree; fails if a crate that must be absent is in it.
set -euo pipefail
cd "$(dirname "$0")/.."

kvm_crates='^(kvm-ioctls|kvm-bindings|vmm-sys-util|gmem|cc-populate) '
hash_crates='^(cc-hash|ring|openssl|openssl-sys|sha2|aws-lc-rs) '

# check PACKAGE FEATURES FORBIDDEN-REGEX WHAT
check() {
    local pkg="$1" features="$2" forbidden="$3" what="$4"
    printf '\n-- %s --no-default-features --features %s (%s)\n' "$pkg" "$features" "$what"
    cargo build -q -p "$pkg" --no-default-features --features "$features"
    local tree
    tree="$(cargo tree -q -p "$pkg" --no-default-features --features "$features" -e normal \
        --prefix none --no-dedupe | sort -u)"
    local found
    found="$(printf '%s\n' "$tree" | grep -E "$forbidden" || true)"
    if [ -n "$found" ]; then
        echo "$pkg with features $features must not depend on:" >&2
        echo "$found" >&2
        exit 1
    fi
    printf '%s\n' "$tree" | sed 's/^/   /'
}

for pkg in sev-backend tdx-backend cca-backend; do
    check "$pkg" measure "$kvm_crates" "measurement only: no KVM crate"
    check "$pkg" kvm "$hash_crates" "populate only: no hashing crate"
done
check cc-image snp,igvm '^(tdx-backend|cca-backend) ' "SNP only: no other backend"
check cc-image cca,json '^(tdx-backend|sev-backend|igvm) ' "CCA only: no other backend"
# The worked integration (issue 25): what a Cloud Hypervisor-like SNP VMM builds.
check vmm-example "" '^(tdx-backend|cca-backend|serde|serde_json) ' "an SNP VMM: no other backend, no serde"
echo
echo "feature-trimmed builds: all as required"
