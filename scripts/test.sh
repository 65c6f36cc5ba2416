#!/usr/bin/env bash
# The test command: installs missing Debian packages, configures and builds everything
# (CUDA code too when nvcc is found: compile and link), runs the CPU test suite with CTest, and
# the GPU suite (label "gpu") only when a GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${BUILD_DIR:-build/test}
jobs=${JOBS:-$(nproc)}
if [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep -E "^-- moessm" "$build.configure.log" || true
ninja -C "$build" -j "$jobs"
export OMP_WAIT_POLICY=passive   # no spinning threads when the machine is shared
ctest --test-dir "$build" -L cpu --output-on-failure -j "$jobs"
if grep -q "CUDA backend ON" "$build.configure.log"; then
  if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
    ctest --test-dir "$build" -L gpu --output-on-failure
  else
    echo "GPU tests skipped: CUDA code compiled and linked, but this machine has no GPU (run: ctest --test-dir $build -L gpu on a GPU machine)"
  fi
fi
