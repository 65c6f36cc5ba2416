#!/usr/bin/env bash
# Fuzzing: scripts/fuzz.sh [SECONDS_PER_HARNESS] (default 60).
# Installs clang and its sanitizer/libFuzzer runtimes when missing (scripts/setup.sh), configures
# build/fuzz (FUZZ_BUILD_DIR overrides) with clang and -DMOESSM_FUZZ=ON, builds every harness in
# fuzz/, and runs each for SECONDS on a fresh COPY of its seed corpus fuzz/corpus/<name>/ (the
# repository's corpus never grows; new inputs stay under build/fuzz/run/). Prints libFuzzer's
# executions, coverage and findings per harness. Exits non-zero when any harness finds a crash,
# leak, timeout, out-of-memory or undefined behaviour; the reproducer is kept under
# build/fuzz/artifacts/<name>/ (re-run it with: build/fuzz/<name> <file>).
# FUZZ_ONLY="fuzz_npy fuzz_json" runs a subset. Details: docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 1 ] || { echo "usage: scripts/fuzz.sh [SECONDS_PER_HARNESS >= 1]" >&2; exit 2; }
bash scripts/setup.sh clang libclang-rt-dev libomp-dev
build=${FUZZ_BUILD_DIR:-build/fuzz}
jobs=${JOBS:-$(nproc)}
mkdir -p "$build"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOESSM_FUZZ=ON \
  -DMOESSM_CUDA=OFF -DMOESSM_TESTS=OFF -DMOESSM_BENCH=OFF > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
grep -E "^-- moessm: fuzz" "$build.configure.log" || true
t0=$SECONDS
ninja -C "$build" -j "$jobs" moessm_fuzzers > "$build.build.log" 2>&1 || { tail -n 60 "$build.build.log"; exit 1; }
echo "[fuzz] harnesses built in $((SECONDS - t0)) s"

export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
harnesses=${FUZZ_ONLY:-$(cd fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//')}
failed=()
printf '%-20s %10s %8s %7s %7s %7s  %s\n' harness execs exec/s cov ft corpus result
for h in $harnesses; do
  bin="$build/$h"
  [ -x "$bin" ] || { echo "[fuzz] $bin was not built" >&2; exit 1; }
  seeds="fuzz/corpus/$h"
  run="$build/run/$h"
  art="$build/artifacts/$h"
  rm -rf "$run" "$art"
  mkdir -p "$run" "$art"
  [ -d "$seeds" ] && cp -r "$seeds/." "$run/"
  log="$build/$h.log"
  rc=0
  "$bin" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=30 \
    -print_final_stats=1 -artifact_prefix="$art/" "$run" > "$log" 2>&1 || rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]*[0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || true)
  speed=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]*[0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || true)
  ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || true)
  corp=$(echo "$last" | grep -oE 'corp: [0-9]+' | grep -oE '[0-9]+' || true)
  findings=$(find "$art" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ]; then
    result="FAILED (exit $rc, $findings artifact(s) in $art)"
    failed+=("$h")
  else
    result="ok, 0 findings"
  fi
  printf '%-20s %10s %8s %7s %7s %7s  %s\n' "$h" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  for h in "${failed[@]}"; do
    echo "==== $h: last lines of $build/$h.log ===="
    grep -vE '^#[0-9]+' "$build/$h.log" | tail -n 40
  done
  echo "[fuzz] FAILED: ${failed[*]}"
  exit 1
fi
echo "[fuzz] all harnesses ran ${seconds} s each without findings"
