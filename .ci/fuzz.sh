#!/usr/bin/env bash
# Short fuzz runs for CI: builds every cargo-fuzz target in fuzz/ and runs
# each for FUZZ_SECONDS (default 20) on the seeds fuzz/seeds.py derives from
# the fixtures. A crash, a leak or an assertion fails the script, and
# libFuzzer's reproducer is left in fuzz/artifacts/<target>/.
# Installs nightly and cargo-fuzz when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
started=$(date +%s)

# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ > /dev/null 2>&1; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++
fi
if ! rustup run nightly rustc --version > /dev/null 2>&1; then
	rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version > /dev/null 2>&1; then
	cargo install cargo-fuzz --locked
fi

python3 fuzz/seeds.py
cd fuzz
# No AddressSanitizer in CI: the code under test is safe Rust (a panic or
# an abort is what a short run can find), and leaving it out makes the
# instrumented build of every dependency cheaper. Local runs keep it.
sanitizer=${FUZZ_SANITIZER:-none}
cargo +nightly fuzz build -s "$sanitizer"
for target in $(cargo +nightly fuzz list); do
	echo "--- fuzz $target (${seconds} s)"
	mkdir -p "corpus/$target" artifacts
	log="artifacts/$target.log"
	# The corpus dir first: new inputs go there, the derived seeds stay as they are.
	if ! cargo +nightly fuzz run -s "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
		-dict="seeds/$target.dict" -max_total_time="$seconds" -rss_limit_mb=2048 \
		-print_final_stats=1 > "$log" 2>&1; then
		tail -n 60 "$log"
		echo "fuzz target $target failed; reproducer in fuzz/artifacts/$target/" >&2
		exit 1
	fi
	grep -E '^#[0-9]+.*DONE|^stat::number_of_executed_units' "$log"
done
echo "=== fuzzing took $(( $(date +%s) - started )) s"
