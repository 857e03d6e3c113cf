#!/bin/sh
# Build xapsd for one Rust target and make all its packages.
#
#   packaging/build.sh <rust-target> <out-dir>
#
# Writes <out-dir>/xapsd (static, stripped), <out-dir>/openwrt/*.ipk and
# *.apk, and <out-dir>/alpine/*.apk where Alpine has the architecture.
#
# Needs cargo-zigbuild and zig (pip install ziglang cargo-zigbuild); MIPS
# and armv7 also a nightly toolchain with rust-src, for -Zbuild-std.
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default: ./target)
#   XAPSD_BINARY       package this binary instead of building one
#   XAPSD_FEATURES     cargo features (default: the crate's defaults)
#   XAPSD_NIGHTLY      toolchain for -Zbuild-std (default: nightly)
set -eu

usage() {
	echo "usage: $0 <rust-target> <out-dir>" >&2
	exit 2
}

[ $# -eq 2 ] || usage
target="$1"
out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/.." && pwd)"
nightly="${XAPSD_NIGHTLY:-nightly}"

# toolchain, -Zbuild-std or not, extra rustflags
case "$target" in
x86_64-unknown-linux-musl | aarch64-unknown-linux-musl)
	toolchain=stable
	build_std=""
	rustflags=""
	;;
armv7-unknown-linux-musleabihf)
	# rustup ships std for it, but not every mirror does; building std
	# works everywhere.
	toolchain="$nightly"
	build_std="-Zbuild-std=std,panic_abort"
	rustflags="-C link-self-contained=no"
	;;
mipsel-unknown-linux-musl | mips-unknown-linux-musl)
	# Tier 3 since Rust 1.72: no std from rustup. Soft-float, and not
	# static unless asked.
	toolchain="$nightly"
	build_std="-Zbuild-std=std,panic_abort"
	rustflags="-C target-feature=+crt-static -C link-self-contained=no"
	;;
*)
	echo "$0: unsupported target $target" >&2
	usage
	;;
esac

mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -n "${XAPSD_BINARY:-}" ]; then
	binary="$XAPSD_BINARY"
else
	target_dir="${CARGO_TARGET_DIR:-$top/target}"
	# CARGO_TARGET_<TRIPLE>_RUSTFLAGS reaches only this target, not
	# build scripts or proc-macros built for the host.
	flags_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
	if [ -n "$rustflags" ]; then
		eval "export $flags_var=\"\${$flags_var:+\$$flags_var }\$rustflags\""
	fi

	set -- cargo "+$toolchain" zigbuild --release --locked --target "$target"
	[ -z "$build_std" ] || set -- "$@" "$build_std"
	[ -z "${XAPSD_FEATURES:-}" ] || set -- "$@" --features "$XAPSD_FEATURES"
	echo "+ CARGO_TARGET_DIR=$target_dir $*" >&2
	(cd "$top" && CARGO_TARGET_DIR="$target_dir" "$@")
	binary="$target_dir/$target/release/xapsd"
fi

cp "$binary" "$out/xapsd"
chmod 0755 "$out/xapsd"

python3 "$here/mkpkg.py" --target "$target" --binary "$out/xapsd" --out "$out"
