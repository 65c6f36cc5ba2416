#!/usr/bin/env bash
# gpu_check.sh: one command for the GPU machine. Configures a CUDA build (sm_90 unless
# CUDA_ARCH says otherwise), builds every GPU test (tests/cuda/test_*.cpp) and the CUDA
# benchmarks with ninja, runs `ctest -L gpu` and the benchmarks, and writes every log and the
# benchmarks' JSON under $OUT (default ./out/gpu_check), then packs them into $OUT/logs.tar.gz
# (the device tool brings back at most 8 files). Prints a short summary last.
#
# Vendored header-only dependencies (the GPU machine has no Debian packages; carry them):
#   GoogleTest from ./.gtest (copy /usr/src/googletest there), nlohmann-json from ./.nlohmann
#   (mkdir -p .nlohmann && cp -r /usr/include/nlohmann .nlohmann/), the peers from ./.peer
#   (cp -r ../shared/peer .peer); PCRE2 from ./.pcre2 when present (tools/gpu_configure.sh).
# Knobs (environment):
#   BENCH="moe model scan ops"  benchmarks to run (bench_NAME; empty: none); default "moe";
#                               "attention" also runs bench/attention_vs_sdpa.py (torch's flash SDPA)
#   EXCLUDE=REGEX               ctest -E (e.g. ShortRom, the 66 s CUDA-vs-CPU training runs)
#   TESTS=0                     skip the tests
#   CTEST_J=2                   run that many GPU test programs at once (default 1)
#   PROFILE="dense rom"         ncu per-kernel times of one fwd+bwd layer (bench_moe --profile),
#                               summed by tools/ncu_summary.py into $OUT/ncu.txt
#   PEER_BUILD=1                only start building the peers' extensions (for a later PEER=1 call)
#   PEER=1                      build the peers' extensions in the background at the start and
#                               run .peer/bench_peer.py (PEER_ONLY, default env,mamba,rom,swimba,train)
#                               after our benchmarks; bench/moe_vs_peer.py and (with BENCH
#                               holding scan and model) bench/dense_vs_peer.py print both
#   HF=1                        tools/hf_check.sh (transformers against our CPU build)
#   FIRST="test_eval_cuda:Cuda*"   builds and runs these test binaries (tests/cuda/NAME.cpp, gtest
#                               filter after the colon) before everything else, logs in first.log,
#                               so a lease that runs out of time still answers the urgent question
# Exit status: non-zero when the build or any GPU test failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out/gpu_check}
BUILD=${BUILD:-$ROOT/build-gpu}
JOBS=${JOBS:-16}
BENCH=${BENCH-moe}
mkdir -p "$OUT"
cd "$ROOT"
# The peers' extensions build once per machine: a later call on the same warm machine (PEER=1, or
# PEER_BUILD=1 to start the build without running the peer) finds them built or building.
if [ "${PEER:-0}" = 1 ] || [ "${PEER_BUILD:-0}" = 1 ]; then
  if [ ! -f /tmp/peer/causal_conv1d_cuda.so ] && mkdir /tmp/peer.building 2>/dev/null; then
    setsid nohup bash .peer/build_ext.sh .peer/src /tmp/peer > /tmp/peer_build.log 2>&1 < /dev/null &
  fi
fi
. "$ROOT/tools/gpu_configure.sh"
TARGETS=(moessm)
for t in tests/cuda/test_*.cpp; do TARGETS+=("gpu_$(basename "$t" .cpp)"); done
for b in $BENCH; do TARGETS+=("bench_$b"); done
[ -n "${PROFILE:-}" ] && TARGETS+=(bench_moe)

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv; nvcc --version | tail -1; } > "$OUT/device.log" 2>&1
t0=$(date +%s)
first_rc=0
gpu_configure "$ROOT" "$BUILD" ON "$OUT/configure.log" || exit 2
if [ -n "${FIRST:-}" ]; then
  FT=(moessm)
  for f in $FIRST; do FT+=("gpu_${f%%:*}"); done
  ninja -C "$BUILD" -j"$JOBS" "${FT[@]}" > "$OUT/build_first.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build_first.log" | head -40; exit 2; }
  for f in $FIRST; do
    echo "==== ${f%%:*} --gtest_filter=${f#*:} ====" >> "$OUT/first.log"
    (cd "$BUILD" && "./gpu_${f%%:*}" --gtest_filter="${f#*:}") >> "$OUT/first.log" 2>&1 || first_rc=1
  done
  echo "==== first (rc $first_rc) ===="; grep -E "^\[  (FAILED|PASSED|  OK) |Failure|expected|Which is|error" "$OUT/first.log" | head -60
fi
ninja -C "$BUILD" -j"$JOBS" "${TARGETS[@]}" > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 2; }
t1=$(date +%s)
test_rc=0
if [ "${TESTS:-1}" != 0 ]; then
  EX=()
  [ -n "${EXCLUDE:-}" ] && EX=(-E "$EXCLUDE")
  ctest --test-dir "$BUILD" -L gpu "${EX[@]}" -j"${CTEST_J:-1}" --output-on-failure > "$OUT/ctest.log" 2>&1
  test_rc=$?
fi
t2=$(date +%s)
for p in ${PROFILE:-}; do
  ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
    "$BUILD/bench_moe" --profile "$p" > "$OUT/ncu_$p.csv" 2> "$OUT/ncu_$p.err"
done
[ -n "${PROFILE:-}" ] && python3 tools/ncu_summary.py "$OUT"/ncu_*.csv > "$OUT/ncu.txt" 2>&1
declare -A bench_rc
for b in $BENCH; do
  "$BUILD/bench_$b" --json "$OUT/bench_$b.json" > "$OUT/bench_$b.log" 2>&1
  bench_rc[$b]=$?
done
# torch's flash SDPA beside our attention kernels (python3 with torch is on the GPU machine)
[ -f "$OUT/bench_attention.json" ] &&
  python3 bench/attention_vs_sdpa.py "$OUT/bench_attention.json" > "$OUT/attention_vs_sdpa.txt" 2>&1
t3=$(date +%s)
if [ "${PEER:-0}" = 1 ]; then
  for i in $(seq 120); do [ -f /tmp/peer/causal_conv1d_cuda.so ] && break; sleep 5; done
  cp /tmp/peer_build.log "$OUT/peer_build.log" 2>/dev/null
  PEER_EXT_DIRS=/tmp/peer PYTHONPATH=.peer/src/mamba:.peer/src/causal-conv1d \
    python3 .peer/bench_peer.py --out "$OUT/peer.json" --only "${PEER_ONLY:-env,mamba,rom,swimba,train}" > "$OUT/peer.log" 2>&1
  [ -f "$OUT/bench_moe.json" ] && python3 bench/moe_vs_peer.py "$OUT/bench_moe.json" "$OUT/peer.json" > "$OUT/moe_vs_peer.txt" 2>&1
  [ -f "$OUT/bench_scan.json" ] && [ -f "$OUT/bench_model.json" ] &&
    python3 bench/dense_vs_peer.py "$OUT/bench_scan.json" "$OUT/bench_model.json" "$OUT/peer.json" > "$OUT/dense_vs_peer.txt" 2>&1
fi
t4=$(date +%s)
hf_rc=-
if [ "${HF:-0}" = 1 ]; then
  OUT="$OUT" bash tools/hf_check.sh > "$OUT/hf_check.log" 2>&1
  hf_rc=$?
fi
t5=$(date +%s)

echo "==== failures (if any) ===="
[ -f "$OUT/ctest.log" ] && grep -E "^\s*[0-9]+ - |Failure|FAILED|expected|error" "$OUT/ctest.log" | head -40
echo "==== device ===="; cat "$OUT/device.log"
for b in $BENCH; do echo "==== bench_$b (rc ${bench_rc[$b]}) ===="; tail -24 "$OUT/bench_$b.log"; done
[ -f "$OUT/ncu.txt" ] && { echo "==== ncu ===="; head -c 6000 "$OUT/ncu.txt"; }
[ -f "$OUT/moe_vs_peer.txt" ] && { echo "==== moe vs peer ===="; cat "$OUT/moe_vs_peer.txt"; }
[ -f "$OUT/dense_vs_peer.txt" ] && { echo "==== dense vs peer ===="; cat "$OUT/dense_vs_peer.txt"; }
[ -f "$OUT/attention_vs_sdpa.txt" ] && { echo "==== attention vs SDPA ===="; cat "$OUT/attention_vs_sdpa.txt"; }
[ "$hf_rc" != - ] && { echo "==== hf_check (rc $hf_rc) ===="; grep -E "PASS|FAIL|max|==" "$OUT/hf_check.log" | tail -12; }
echo "==== summary ===="
echo "build $((t1-t0)) s, tests $((t2-t1)) s, profile+benchmarks $((t3-t2)) s, peer $((t4-t3)) s, hf $((t5-t4)) s"
[ -f "$OUT/ctest.log" ] && grep -E "tests passed|tests failed" "$OUT/ctest.log"
(cd "$OUT" && tar czf logs.tar.gz --exclude=logs.tar.gz ./*.log ./*.txt ./*.json ./*.csv 2>/dev/null)
find "$OUT" -maxdepth 1 -type f ! -name logs.tar.gz ! -name '*.json' ! -name ncu.txt ! -name moe_vs_peer.txt ! -name dense_vs_peer.txt ! -name attention_vs_sdpa.txt -delete
[ "$first_rc" = 0 ] || test_rc=1
exit $test_rc
