# gpu_configure.sh (sourced by tools/gpu_check.sh and tools/study_gpu.sh): the one CMake configure
# of a CUDA build on the GPU machine, which has no Debian packages, so the vendored dependencies
# found in the repository root are passed in: GoogleTest (.gtest), nlohmann-json (.nlohmann) and
# PCRE2 for the byte-level BPE tokenizer (.pcre2: pcre2.h and libpcre2-8.so; the binary finds the
# library there at run time through its rpath).
#   gpu_configure ROOT BUILD BENCH(ON|OFF) LOG    sm_90 unless CUDA_ARCH says otherwise; on failure
#                                                 prints the log's tail and returns non-zero
gpu_configure() {
  local root=$1 build=$2 bench=$3 log=$4
  local deps=()
  [ -d "$root/.gtest" ] && deps+=(-DMOESSM_GTEST_SOURCE="$root/.gtest")
  [ -d "$root/.nlohmann" ] && deps+=(-DMOESSM_NLOHMANN_INCLUDE="$root/.nlohmann")
  [ -f "$root/.pcre2/pcre2.h" ] && deps+=(-DMOESSM_PCRE2_INCLUDE="$root/.pcre2" -DMOESSM_PCRE2="$root/.pcre2/libpcre2-8.so")
  cmake -S "$root" -B "$build" -G Ninja -DMOESSM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
    -DCMAKE_BUILD_TYPE=Release -DMOESSM_BENCH="$bench" "${deps[@]}" > "$log" 2>&1 || { tail -30 "$log"; return 1; }
}
