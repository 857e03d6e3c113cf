#!/bin/sh
# Build xapsd for one Rust target and make all its packages.
#
#   packaging/build.sh <rust-target> <out-dir>
#
# (CI first runs `packaging/build.sh --compile-only T1 T2 ...`, which
# compiles the targets of each toolchain in one cargo run; the per-target
# call then finds the binary fresh and only packages it.)
#
# Writes <out-dir>/xapsd (static, stripped), <out-dir>/openwrt/*.ipk and
# *.apk, and where the distribution has the architecture <out-dir>/alpine/
# *.apk, <out-dir>/debian/*.deb, <out-dir>/synology/*.spk and the container
# image's layer <out-dir>/oci/xapsd-layer-<arch>.tar (packaging/build-oci.sh
# makes the image from the amd64 and arm64 ones).
#
# Needs cargo-zigbuild and zig (pip install ziglang cargo-zigbuild); MIPS
# and armv7 also a nightly toolchain with rust-src, for -Zbuild-std.
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default: ./target)
#   XAPSD_BINARY       package this binary instead of building one
#   XAPSD_FEATURES     cargo features on top of the appliance set (default:
#                      none; "apple-id pkcs12" gives the crate's full set)
#   XAPSD_NIGHTLY      toolchain for -Zbuild-std (default: nightly)
set -eu

usage() {
	echo "usage: $0 <rust-target> <out-dir>" >&2
	echo "       $0 --compile-only <rust-target>...   (compile only, no packages)" >&2
	exit 2
}

here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/.." && pwd)"
nightly="${XAPSD_NIGHTLY:-nightly}"
target_dir="${CARGO_TARGET_DIR:-$top/target}"

# Sets toolchain, build_std and rustflags for target $1.
settings() {
	case "$1" in
	x86_64-unknown-linux-musl | aarch64-unknown-linux-musl)
		toolchain=stable
		build_std=""
		rustflags=""
		;;
	armv7-unknown-linux-musleabihf)
		# rustup ships std for it, but not every mirror does; building
		# std works everywhere.
		toolchain="$nightly"
		build_std="-Zbuild-std=std,panic_abort"
		rustflags="-C link-self-contained=no"
		;;
	mipsel-unknown-linux-musl | mips-unknown-linux-musl)
		# Tier 3 since Rust 1.72: no std from rustup. Soft-float, and
		# not static unless asked.
		toolchain="$nightly"
		build_std="-Zbuild-std=std,panic_abort"
		rustflags="-C target-feature=+crt-static -C link-self-contained=no"
		;;
	*)
		echo "$0: unsupported target $1" >&2
		usage
		;;
	esac
}

# Compiles the given targets, which share a toolchain, in one cargo run:
# host build scripts are built once and one target's single-threaded LTO
# link overlaps the others' compiles.
compile() {
	settings "$1"
	group_toolchain="$toolchain"
	group_std="$build_std"
	args=""
	for t in "$@"; do
		settings "$t"
		if [ "$toolchain" != "$group_toolchain" ] || [ "$build_std" != "$group_std" ]; then
			echo "$0: $t needs another toolchain than $1; compile it separately" >&2
			exit 2
		fi
		# CARGO_TARGET_<TRIPLE>_RUSTFLAGS reaches only that target, not
		# build scripts or proc-macros built for the host.
		flags_var="CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
		if [ -n "$rustflags" ]; then
			eval "export $flags_var=\"\${$flags_var:+\$$flags_var }\$rustflags\""
		fi
		args="$args --target $t"
	done

	# shellcheck disable=SC2086 # $args is a list of --target options
	set -- cargo "+$group_toolchain" zigbuild --release --locked $args
	[ -z "$group_std" ] || set -- "$@" "$group_std"
	# The appliance set: no default features (the Apple-ID service's RSA
	# code is about 520 KiB, more than the router budget has), plus what
	# XAPSD_FEATURES asks for.
	set -- "$@" --no-default-features
	[ -z "${XAPSD_FEATURES:-}" ] || set -- "$@" --features "$XAPSD_FEATURES"
	echo "+ CARGO_TARGET_DIR=$target_dir $*" >&2
	(cd "$top" && CARGO_TARGET_DIR="$target_dir" "$@")
}

if [ "${1:-}" = --compile-only ]; then
	shift
	[ $# -ge 1 ] || usage
	# One cargo run per toolchain: prebuilt std (stable), built std (nightly).
	with_std=""
	without_std=""
	for t in "$@"; do
		settings "$t"
		if [ -n "$build_std" ]; then
			with_std="$with_std $t"
		else
			without_std="$without_std $t"
		fi
	done
	status=0
	# shellcheck disable=SC2086 # lists of target names
	[ -z "$without_std" ] || (compile $without_std) || status=1
	# shellcheck disable=SC2086
	[ -z "$with_std" ] || (compile $with_std) || status=1
	exit "$status"
fi

[ $# -eq 2 ] || usage
target="$1"
out="$2"
settings "$target"

mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ -n "${XAPSD_BINARY:-}" ]; then
	binary="$XAPSD_BINARY"
else
	compile "$target"
	binary="$target_dir/$target/release/xapsd"
fi

cp "$binary" "$out/xapsd"
chmod 0755 "$out/xapsd"

python3 "$here/mkpkg.py" --target "$target" --binary "$out/xapsd" --out "$out"
