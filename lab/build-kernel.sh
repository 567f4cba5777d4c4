#!/usr/bin/env bash
# Builds the lab kernel for one Debian kernel source package, cached by the package's version.
#   lab/build-kernel.sh DEB OUT_DIR
# DEB is a linux-source-X.Y .deb; OUT_DIR receives bzImage and .config. A second run with the same
# DEB and fragment finds OUT_DIR/bzImage and OUT_DIR/fragment.sha256 and returns at once.
set -euo pipefail
deb="$1"
out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
fragment="$here/kernel.config"
sum="$(sha256sum "$fragment" | cut -d' ' -f1)"
if [ -s "$out/bzImage" ] && [ "$(cat "$out/fragment.sha256" 2>/dev/null)" = "$sum" ]; then
    echo "lab: kernel cached: $out/bzImage"
    exit 0
fi
mkdir -p "$out"
work="$out/src"
rm -rf "$work" && mkdir -p "$work"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards '*/linux-source-*.tar.xz'
tarball="$(find "$work" -name 'linux-source-*.tar.xz' | head -n1)"
tar -xJf "$tarball" -C "$work"
rm -f "$tarball"
tree="$(find "$work" -maxdepth 1 -type d -name 'linux-source-*' | head -n1)"
[ -d "$tree" ] || { echo "lab: no source tree in $deb" >&2; exit 1; }
start=$(date +%s)
make -C "$tree" -s tinyconfig
"$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$fragment" >/dev/null
make -C "$tree" -s olddefconfig
# Every option of the fragment that olddefconfig dropped (a dependency missing) is an error,
# and so is a missing guest_memfd / memory-attribute option under either of its names.
fail=0
while IFS= read -r line; do
    case "$line" in
    CONFIG_*=y) grep -qx "$line" "$tree/.config" || { echo "lab: $line did not stick" >&2; fail=1; } ;;
    esac
done <"$fragment"
grep -Eq '^CONFIG_KVM_(GUEST_MEMFD|PRIVATE_MEM)=y' "$tree/.config" ||
    { echo "lab: neither KVM_GUEST_MEMFD nor KVM_PRIVATE_MEM is set" >&2; fail=1; }
grep -Eq '^CONFIG_KVM_(GENERIC_MEMORY_ATTRIBUTES|GENERIC_PRIVATE_MEM)=y' "$tree/.config" ||
    { echo "lab: no generic memory attributes option is set" >&2; fail=1; }
[ "$fail" = 0 ] || exit 1
make -C "$tree" -s -j"$(nproc)" bzImage
cp "$tree/arch/x86/boot/bzImage" "$tree/.config" "$out/"
echo "$sum" >"$out/fragment.sha256"
rm -rf "$work"
echo "lab: built $out/bzImage in $(( $(date +%s) - start )) s"
