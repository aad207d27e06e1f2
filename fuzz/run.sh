#!/usr/bin/env bash
# `just fuzz [seconds]`: every cargo-fuzz target in fuzz/ for SECONDS each (default 60).
# Needs a nightly toolchain and cargo-fuzz; says so and fails when either is missing.
# New inputs go to fuzz/corpus/<target> (ignored by git), starting from fuzz/seeds/<target>;
# a crash leaves its input in fuzz/artifacts/<target> and fails the run.
# Env: SANITIZER (default address; `none` builds faster), CARGO_TARGET_DIR (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
case "$secs" in '' | *[!0-9]*) echo "usage: just fuzz [seconds per target]" >&2; exit 2 ;; esac
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "just fuzz: cargo-fuzz needs a nightly toolchain and there is none: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "just fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi
san="${SANITIZER:-address}"
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build -s "$san" -a
failed=()
for t in $targets; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "== fuzz $t: ${secs} s"
  # -rss_limit_mb: an input that makes a parser allocate gigabytes is a finding too.
  rc=0
  cargo +nightly fuzz run -s "$san" -a "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"/tmp/fuzz-$t.log" 2>&1 || rc=$?
  grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE|ERROR: libFuzzer|panicked at|^SUMMARY" "/tmp/fuzz-$t.log" || true
  if [ "$rc" -ne 0 ] || grep -qE "ERROR: libFuzzer|panicked at" "/tmp/fuzz-$t.log"; then
    failed+=("$t")
    echo "!! $t failed (exit $rc): see /tmp/fuzz-$t.log and fuzz/artifacts/$t/" >&2
  fi
done
if ((${#failed[@]})); then
  echo "just fuzz: failures in ${failed[*]}" >&2
  exit 1
fi
echo "just fuzz: $(echo $targets | wc -w) targets, ${secs} s each, no failure"
