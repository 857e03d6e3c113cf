#!/bin/sh
# Appliance builds for CI: cross-build xapsd for the five router/NAS
# targets, run each binary under qemu-user-static for a real smoke test,
# build every target's packages (and the amd64 + arm64 container image)
# and check them.
#
#   .ci/appliance.sh            everything
#   XAPSD_TARGETS="aarch64-unknown-linux-musl" .ci/appliance.sh
#
# Environment:
#   XAPSD_TARGETS         targets to build (default: all five)
#   XAPSD_APPLIANCE_OUT   where binaries and packages go (default: target/appliance)
#   XAPSD_SMOKE=0         build and check packages, but skip the qemu runs
#   CARGO_TARGET_DIR      shared by all targets (default: ./target)
# Installs what it needs (apt, pip, rustup) if it is missing. Ends with
# "appliance: N passed, M failed"; exits non-zero if anything failed.
set -eu

top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"

ALL_TARGETS="x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf mipsel-unknown-linux-musl mips-unknown-linux-musl"
targets="${XAPSD_TARGETS:-$ALL_TARGETS}"
out="${XAPSD_APPLIANCE_OUT:-$top/target/appliance}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$top/target}"

# Known-good builder versions; bump deliberately.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1

started="$(date +%s)"
passed=0
failed=0
failures=""

say() {
	printf '\n=== %s\n' "$*"
}

# Run one check; count the "N passed, M failed" line it ends with.
tally() {
	label="$1"
	shift
	log="$out/logs/$(echo "$label" | tr ' /' '__').log"
	if "$@" > "$log" 2>&1; then
		status=0
	else
		status=$?
	fi
	grep -v '^ok ' "$log" || true
	line="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)"
	p="$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')"
	f="$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')"
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	if [ "$status" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
		failed=$((failed + 1))
	fi
	if [ "$status" -ne 0 ]; then
		failures="$failures $label"
		echo "--> $label: FAILED (log: $log)"
	else
		echo "--> $label: ${p:-0} passed"
	fi
}

have() {
	command -v "$1" > /dev/null 2>&1
}

install_tools() {
	apt_missing=""
	have qemu-aarch64-static || apt_missing="$apt_missing qemu-user-static"
	[ -x /bin/busybox ] || apt_missing="$apt_missing busybox-static"
	have shellcheck || apt_missing="$apt_missing shellcheck"
	have systemd-analyze || apt_missing="$apt_missing systemd"
	have chroot || apt_missing="$apt_missing coreutils"
	# The NAS packages: .deb checks, the OCI image.
	have dpkg-deb || apt_missing="$apt_missing dpkg"
	have adduser || apt_missing="$apt_missing adduser"
	have deb-systemd-helper || apt_missing="$apt_missing init-system-helpers"
	have lintian || apt_missing="$apt_missing lintian"
	have umoci || apt_missing="$apt_missing umoci"
	have skopeo || apt_missing="$apt_missing skopeo"
	if [ -n "$apt_missing" ]; then
		say "apt-get install$apt_missing"
		apt-get update -qq
		# shellcheck disable=SC2086 # a list of package names
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $apt_missing
	fi

	if ! have cargo-zigbuild || ! python3 -c 'import ziglang' 2> /dev/null; then
		say "pip install ziglang cargo-zigbuild"
		python3 -m pip install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
	fi

	installed="$(rustup target list --installed --toolchain stable 2> /dev/null || true)"
	for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
		if ! echo "$installed" | grep -qx "$t"; then
			say "rustup target add $t"
			rustup target add --toolchain stable "$t"
		fi
	done
	if ! rustup toolchain list | grep -q '^nightly'; then
		say "rustup toolchain install nightly"
		rustup toolchain install nightly --profile minimal --component rust-src
	elif ! rustup component list --installed --toolchain nightly 2> /dev/null | grep -q '^rust-src'; then
		say "rustup component add rust-src --toolchain nightly"
		rustup component add rust-src --toolchain nightly
	fi
}

mkdir -p "$out/logs"
install_tools

# Compile the targets of each toolchain together first: one target's
# single-threaded LTO link overlaps the others' compiles. If that works,
# the per-target step below only packages those binaries; if not, each
# target is built on its own, so the failing one is named.
prebuilt=""
if [ "${XAPSD_GROUP_COMPILE:-1}" != 0 ]; then
	say "compile $(echo "$targets" | tr -s ' \n' '  ')"
	t0="$(date +%s)"
	# shellcheck disable=SC2086 # a list of target names
	if packaging/build.sh --compile-only $targets > "$out/logs/compile.log" 2>&1; then
		echo "--> compiled in $(($(date +%s) - t0))s"
		prebuilt=1
	else
		echo "--> grouped compile failed after $(($(date +%s) - t0))s; building one by one (log: $out/logs/compile.log)"
	fi
fi

sizes=""
for t in $targets; do
	say "build $t"
	t0="$(date +%s)"
	rm -rf "${out:?}/$t"
	if [ -n "$prebuilt" ]; then
		set -- env XAPSD_BINARY="$CARGO_TARGET_DIR/$t/release/xapsd" packaging/build.sh
	else
		set -- packaging/build.sh
	fi
	if "$@" "$t" "$out/$t" > "$out/logs/build_$t.log" 2>&1; then
		secs=$(($(date +%s) - t0))
		bytes="$(wc -c < "$out/$t/xapsd" | tr -d ' ')"
		sizes="$sizes
$t $bytes ${secs}s"
		echo "--> built $t: $bytes bytes in ${secs}s"
		passed=$((passed + 1))
	else
		tail -n 40 "$out/logs/build_$t.log"
		echo "--> build $t: FAILED (log: $out/logs/build_$t.log)"
		failed=$((failed + 1))
		failures="$failures build_$t"
		continue
	fi

	if [ "${XAPSD_SMOKE:-1}" != 0 ]; then
		say "smoke $t"
		tally "smoke $t" python3 packaging/tests/smoke.py "$t" "$out/$t/xapsd"
	fi
	say "packages $t"
	tally "packages $t" python3 packaging/tests/check_packages.py "$t" "$out/$t"
	tally "install $t" python3 packaging/tests/check_install.py "$t" "$out/$t"
done

# The container image takes the amd64 and arm64 layers built above.
oci_ready=1
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
	[ -f "$out/$t/xapsd" ] || oci_ready=""
done
if [ -n "$oci_ready" ]; then
	say "container image (packaging/build-oci.sh)"
	t0="$(date +%s)"
	if packaging/build-oci.sh "$out" > "$out/logs/build_oci.log" 2>&1; then
		echo "--> built the OCI image in $(($(date +%s) - t0))s"
		passed=$((passed + 1))
		tally "oci" python3 packaging/tests/check_oci.py "$out"
	else
		tail -n 40 "$out/logs/build_oci.log"
		echo "--> build-oci.sh: FAILED (log: $out/logs/build_oci.log)"
		failed=$((failed + 1))
		failures="$failures build_oci"
	fi
fi

set --
for deb in "$out"/*/debian/*.deb; do
	[ ! -f "$deb" ] || set -- "$@" "$deb"
done
if [ $# -gt 0 ]; then
	say "Debian packages: lintian, dpkg -i / --purge on this machine"
	tally "debian" python3 packaging/tests/check_debian.py "$@"
fi

say "scripts, init scripts, systemd unit, recipes"
set --
for t in $targets; do
	[ ! -d "$out/$t/openwrt" ] || set -- "$@" "$out/$t"
done
tally "scripts" python3 packaging/tests/check_scripts.py "$@"
host="$out/x86_64-unknown-linux-musl/xapsd"
if [ -x "$host" ]; then
	tally "init" env XAPSD_BINARY="$host" python3 packaging/tests/check_init.py
else
	tally "init" python3 packaging/tests/check_init.py
fi
tally "systemd" python3 packaging/tests/check_systemd.py
tally "recipes" python3 packaging/tests/check_recipes.py

say "sizes (stripped, static)"
printf '%s\n' "$sizes" | awk 'NF == 3 { printf "%-34s %9d bytes  %6.2f MiB  built in %s\n", $1, $2, $2 / 1048576, $3 }'
echo "appliance wall time: $(($(date +%s) - started))s"
[ -z "$failures" ] || echo "failed:$failures"
echo "appliance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
