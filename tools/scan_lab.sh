#!/usr/bin/env bash
# scan_lab.sh: the selective-scan kernel lab on the GPU machine. Builds the scan test and
# bench_scan (shipped settings) and, in parallel, bench_scan for each variant of VARIANTS
# ("name=flags;name=flags", e.g. "c16=-DMOESSM_SCAN_CHUNK=16;c16b3=-DMOESSM_SCAN_CHUNK=16
# -DMOESSM_SCAN_BWD_MINBLOCKS=3", one build dir each); runs the scan tests, every bench_scan, and ncu
# launch/occupancy/stall sections of the first launch of each scan kernel (NCU=0 skips).
# NCU_KERNELS="bwd fwd" picks the kernels profiled (default bwd fwd local).
# EXTRA_TESTS="gpu_test_x gpu_test_y" builds and runs more GPU test programs after the scan's.
# VARIANT_TESTS=1 also builds and runs the scan test programs (plain and packed) in every variant's build.
# Writes logs under $OUT (default ./out/scan_lab) and packs them into $OUT/logs.tar.gz.
# Needs the vendored ./.gtest and ./.nlohmann (see tools/gpu_check.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out/scan_lab}
VARIANTS=${VARIANTS:-}
IFS=';' read -r -a VLIST <<< "$VARIANTS"
mkdir -p "$OUT"
cd "$ROOT"
conf() {  # build dir, extra CUDA/CXX flags
  cmake -S "$ROOT" -B "$1" -G Ninja -DMOESSM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
    -DCMAKE_BUILD_TYPE=Release -DMOESSM_BENCH=ON -DMOESSM_GTEST_SOURCE="$ROOT/.gtest" \
    -DMOESSM_NLOHMANN_INCLUDE="$ROOT/.nlohmann" -DCMAKE_CUDA_FLAGS="$2" -DCMAKE_CXX_FLAGS="$2" \
    > "$OUT/configure_$(basename "$1").log" 2>&1
}
t0=$(date +%s)
pids=()
for v in "${VLIST[@]}"; do
  [ -z "$v" ] && continue
  n=${v%%=*} f=${v#*=}
  vt=()
  [ "${VARIANT_TESTS:-0}" = 1 ] && vt=(gpu_test_scan_cuda gpu_test_scan_pack_cuda)
  (conf "$ROOT/build-gpu-$n" "$f" && ninja -C "$ROOT/build-gpu-$n" -j8 bench_scan "${vt[@]}" > "$OUT/build_$n.log" 2>&1 \
     || echo "variant $n failed to build") &
  pids+=($!)
done
conf "$ROOT/build-gpu" "" && ninja -C "$ROOT/build-gpu" -j16 gpu_test_scan_cuda bench_scan ${EXTRA_TESTS:-} > "$OUT/build.log" 2>&1 \
  || { grep -E "error" "$OUT/build.log" | head -30; exit 2; }
for p in "${pids[@]}"; do wait "$p"; done
echo "build: $(( $(date +%s) - t0 )) s"
"$ROOT/build-gpu/gpu_test_scan_cuda" > "$OUT/test_scan.log" 2>&1
echo "scan tests rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_scan.log" | tr '\n' ' ')"
grep -E "Failure|FAILED|error" "$OUT/test_scan.log" | head -20
for t in ${EXTRA_TESTS:-}; do
  "$ROOT/build-gpu/$t" > "$OUT/$t.log" 2>&1
  echo "$t rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')"
  grep -E "Failure|FAILED" "$OUT/$t.log" | head -10
done
"$ROOT/build-gpu/bench_scan" --json "$OUT/bench_scan.json" > "$OUT/bench_scan.log" 2>&1
sed -n '/^case/,$p' "$OUT/bench_scan.log"
for v in "${VLIST[@]}"; do
  [ -z "$v" ] && continue
  n=${v%%=*}
  if [ "${VARIANT_TESTS:-0}" = 1 ]; then
    for t in gpu_test_scan_cuda gpu_test_scan_pack_cuda; do
      "$ROOT/build-gpu-$n/$t" > "$OUT/${t}_$n.log" 2>&1
      echo "variant $n $t rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/${t}_$n.log" | tr '\n' ' ')"
      grep -E "Failure|FAILED" "$OUT/${t}_$n.log" | head -10
    done
  fi
  "$ROOT/build-gpu-$n/bench_scan" --json "$OUT/bench_scan_$n.json" > "$OUT/bench_scan_$n.log" 2>&1
  echo "--- variant $v"; sed -n '/^case/,$p' "$OUT/bench_scan_$n.log"
done
if [ "${NCU:-1}" != 0 ]; then
  for k in ${NCU_KERNELS:-bwd fwd local}; do
    timeout 150 ncu --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
      --section SpeedOfLight -k "regex:scan_${k}_kernel" -c 1 "$ROOT/build-gpu/bench_scan" > "$OUT/ncu_$k.txt" 2>&1
  done
  grep -E "scan_|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit Reg|Duration|Warp Cycles Per Issued|No Eligible|Compute \(SM\) Throughput|Memory Throughput" "$OUT"/ncu_*.txt
fi
echo "total: $(( $(date +%s) - t0 )) s"
(cd "$OUT" && tar czf logs.tar.gz *.log *.json $(ls ncu_*.txt 2>/dev/null))
