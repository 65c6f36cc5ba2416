#!/usr/bin/env bash
# The test command: installs missing Debian packages, configures and builds everything
# (CUDA code too when nvcc is found: compile and link), runs the CPU test suite with CTest, and
# the GPU suite (label "gpu") only when a GPU is present; then a bounded fuzz step (every
# harness in fuzz/ for FUZZ_SECONDS each, default 10; FUZZ=0 skips it; any crash fails).
#
# SANITIZE=1 instead builds the CPU suite in build/asan (BUILD_DIR overrides) with
# -fsanitize=address,undefined -fno-sanitize-recover=undefined (clang when installed, else gcc;
# CUDA off, no benchmarks) and runs ctest -L cpu under the sanitizers; nothing else. It is not
# part of CI (it takes 10-20 minutes on 2 cores); see docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=${JOBS:-$(nproc)}
export OMP_WAIT_POLICY=passive   # no spinning threads when the machine is shared

if [ "${SANITIZE:-0}" = 1 ]; then
  build=${BUILD_DIR:-build/asan}
  cc=gcc cxx=g++
  if command -v clang++ > /dev/null 2>&1; then cc=clang cxx=clang++; fi
  san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
  mkdir -p "$build"
  CC=$cc CXX=$cxx cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOESSM_CUDA=OFF \
    -DMOESSM_BENCH=OFF -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
    > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
  grep -E "^-- moessm" "$build.configure.log" || true
  echo "sanitizer build: $cxx $san"
  ninja -C "$build" -j "$jobs"
  # halt_on_error: the first finding fails the test; leaks are findings too.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  ctest --test-dir "$build" -L cpu --output-on-failure -j "$jobs"
  exit 0
fi

build=${BUILD_DIR:-build/test}
if [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep -E "^-- moessm" "$build.configure.log" || true
ninja -C "$build" -j "$jobs"
ctest --test-dir "$build" -L cpu --output-on-failure -j "$jobs" 2>&1 | tee "$build.ctest.log"
if grep -q "CUDA backend ON" "$build.configure.log"; then
  if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
    ctest --test-dir "$build" -L gpu --output-on-failure
  else
    echo "GPU tests skipped: CUDA code compiled and linked, but this machine has no GPU (run: ctest --test-dir $build -L gpu on a GPU machine)"
  fi
fi
if [ "${FUZZ:-1}" != 0 ]; then
  JOBS=$jobs bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
else
  echo "fuzz step skipped (FUZZ=0)"
fi
# The CPU suite's result once more as the last line (the fuzz step prints after CTest).
total=$(grep -oE "tests passed, [0-9]+ tests failed out of [0-9]+" "$build.ctest.log" | grep -oE "[0-9]+$" || echo 0)
failed=$(grep -oE "[0-9]+ tests failed out of" "$build.ctest.log" | grep -oE "^[0-9]+" || echo 0)
echo "cpu: $((total - failed)) passed, $failed failed"
