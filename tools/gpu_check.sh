#!/usr/bin/env bash
# gpu_check.sh: one command for the GPU machine. Configures a CUDA build (sm_90 unless
# CUDA_ARCH says otherwise), builds the GPU tests and benchmarks with ninja, runs `ctest -L gpu`
# and the benchmarks, and writes every log and the benchmarks' JSON under $OUT (default
# ./out/gpu_check). GoogleTest comes from ./.gtest when present (the GPU machine has none
# installed: copy /usr/src/googletest there and carry it). nlohmann-json (header-only) comes from
# ./.nlohmann when present, for the same reason: vendor it with
#   mkdir -p .nlohmann && cp -r /usr/include/nlohmann .nlohmann/
# and carry it; it is configured with -DMOESSM_NLOHMANN_INCLUDE=$PWD/.nlohmann. Prints a short
# summary last.
# BENCH=0 skips the benchmarks (tests only).
# Exit status: non-zero when the build or any GPU test failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out/gpu_check}
BUILD=${BUILD:-$ROOT/build-gpu}
JOBS=${JOBS:-16}
mkdir -p "$OUT"
GT=()
[ -d "$ROOT/.gtest" ] && GT=(-DMOESSM_GTEST_SOURCE="$ROOT/.gtest")
[ -d "$ROOT/.nlohmann" ] && GT+=(-DMOESSM_NLOHMANN_INCLUDE="$ROOT/.nlohmann")
TARGETS=(gpu_test_scan_cuda gpu_test_ops_cuda gpu_test_model_cuda bench_scan bench_ops bench_model moessm)

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv; nvcc --version | tail -1; } > "$OUT/device.log" 2>&1
t0=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DMOESSM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
  -DMOESSM_BENCH=ON "${GT[@]}" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 2; }
ninja -C "$BUILD" -j"$JOBS" "${TARGETS[@]}" > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 2; }
t1=$(date +%s)
ctest --test-dir "$BUILD" -L gpu --output-on-failure > "$OUT/ctest.log" 2>&1
test_rc=$?
t2=$(date +%s)
scan_rc=-; ops_rc=-; model_rc=-
if [ "${BENCH:-1}" != 0 ]; then
  "$BUILD/bench_scan" --json "$OUT/bench_scan.json" > "$OUT/bench_scan.log" 2>&1; scan_rc=$?
  "$BUILD/bench_ops" --json "$OUT/bench_ops.json" > "$OUT/bench_ops.log" 2>&1; ops_rc=$?
  "$BUILD/bench_model" --json "$OUT/bench_model.json" > "$OUT/bench_model.log" 2>&1; model_rc=$?
fi
t3=$(date +%s)

echo "==== failures (if any) ===="
grep -E "^\s*[0-9]+ - |Failure|FAILED|expected|error" "$OUT/ctest.log" | head -40
echo "==== device ===="; cat "$OUT/device.log"
echo "==== bench_ops (rc $ops_rc) ===="; tail -16 "$OUT/bench_ops.log"
echo "==== bench_scan (rc $scan_rc) ===="; tail -10 "$OUT/bench_scan.log"
echo "==== bench_model (rc $model_rc) ===="; tail -12 "$OUT/bench_model.log"
echo "==== summary ===="
echo "build $((t1-t0)) s, tests $((t2-t1)) s, benchmarks $((t3-t2)) s"
grep -E "tests passed|tests failed" "$OUT/ctest.log"
exit $test_rc
