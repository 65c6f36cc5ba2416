// CUDA kv_cache_append (contract in ops/kv_cache.h): a grid-stride copy of the new rows into
// their ring slots (reading pos0), then one thread per sequence advances pos0; stream order
// keeps the read before the write. Graph-capturable, no atomics.
#include <cuda_bf16.h>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/kv_cache.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t start_position(const float* pos0, idx_t b) {
  const double x = double(pos0[b]);
  return x >= 0.5 ? int64_t(floor(x + 0.5)) : 0;
}

template <typename T>
__global__ void kv_append_kernel(T* k_cache, T* v_cache, const float* pos0, const T* k, idx_t k_ld, const T* v,
                                 idx_t v_ld, idx_t B, idx_t T_, idx_t C, idx_t row) {
  const idx_t n = B * T_ * row;
  for (idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; e < n; e += idx_t(gridDim.x) * blockDim.x) {
    const idx_t x = e % row, t = (e / row) % T_, b = e / (row * T_);
    if (t < T_ - C) continue;  // overwritten later in this same call
    const int64_t p = start_position(pos0, b) + t;
    const idx_t slot = idx_t(p % C);
    k_cache[(b * C + slot) * row + x] = k[(b * T_ + t) * k_ld + x];
    v_cache[(b * C + slot) * row + x] = v[(b * T_ + t) * v_ld + x];
  }
}

__global__ void kv_advance_kernel(float* pos0, idx_t B, idx_t T_) {
  const idx_t b = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (b < B) pos0[b] = float(start_position(pos0, b) + T_);
}

}  // namespace

template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, float* pos0, const T* k, idx_t k_ld, const T* v, idx_t v_ld, idx_t B,
                     idx_t T_, idx_t C, idx_t Hkv, idx_t hd, cudaStream_t stream) {
  const idx_t row = Hkv * hd;
  CHECK(B >= 0 && T_ >= 0 && C >= 1 && row >= 1, "cuda kv_cache_append: sizes B=", B, " T=", T_, " C=", C,
        " Hkv·hd=", row, " (C and Hkv·hd must be >= 1)");
  CHECK(k_ld >= row && v_ld >= row, "cuda kv_cache_append: k_ld ", k_ld, " / v_ld ", v_ld, " must be >= Hkv·hd = ",
        row);
  if (B * T_ == 0) return;
  kv_append_kernel<T><<<grid_1d(B * T_ * row, kThreads), kThreads, 0, stream>>>(k_cache, v_cache, pos0, k, k_ld, v,
                                                                                 v_ld, B, T_, C, row);
  CUDA_CHECK_LAUNCH("kv_append_kernel");
  kv_advance_kernel<<<unsigned((B + kThreads - 1) / kThreads), kThreads, 0, stream>>>(pos0, B, T_);
  CUDA_CHECK_LAUNCH("kv_advance_kernel");
}

template void kv_cache_append<float>(float*, float*, float*, const float*, idx_t, const float*, idx_t, idx_t, idx_t,
                                     idx_t, idx_t, idx_t, cudaStream_t);
template void kv_cache_append<bf16>(bf16*, bf16*, float*, const bf16*, idx_t, const bf16*, idx_t, idx_t, idx_t, idx_t,
                                    idx_t, idx_t, cudaStream_t);

}  // namespace moessm::cuda
