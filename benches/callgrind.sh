#!/bin/sh
# Counts the daemon's instructions per registration and per notify with
# valgrind's callgrind (reproducible, unlike times on a shared machine).
#
#   benches/callgrind.sh            # scenario (a)
#   benches/callgrind.sh a d        # the scenarios named
#
# Builds `--profile profiling` (release code with line tables), runs the load
# harness with the daemon under callgrind, and leaves the dumps in
# target/bench/callgrind/ for callgrind_annotate: callgrind.out.PID.1 holds
# the registrations, .2 the notifies with their pushes.
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --profile profiling
out="$PWD/target/bench/callgrind"
mkdir -p "$out"
rm -f "$out"/callgrind.out.*
wrapper="$out/xapsd-under-callgrind"
cat >"$wrapper" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --quiet --callgrind-out-file=$out/callgrind.out.%p $PWD/target/profiling/xapsd "\$@"
WRAP
chmod +x "$wrapper"
[ $# -gt 0 ] || set -- a
XAPSD_BIN="$wrapper" XAPSD_BENCH_CALLGRIND="$out" cargo bench --bench load -- "$@"
