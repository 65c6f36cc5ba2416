// Device-side helpers shared by the CUDA ops (included only from src/ops/cuda/*.cu):
// element conversion between float and the storage types, warp reductions in a fixed order,
// the fused activations in fp32 (same formulas and softplus threshold as ops/activations.h),
// and the per-stream scratch workspace used for deterministic partial reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/cuda_check.h"
#include "ops/activations.h"
#include "ops/op_common.h"

namespace moessm::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float v) { return __float2bfloat16_rn(v); }

// Butterfly sum over the lanes of an aligned group of W lanes (W a power of two <= 32); every
// lane of the group gets the same result, computed in the same order (deterministic).
template <int W> __device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float sigmoid_f(float v) { return 1.f / (1.f + __expf(-v)); }
__device__ __forceinline__ float silu_f(float v) { return v * sigmoid_f(v); }
__device__ __forceinline__ float silu_grad_f(float v) {
  const float s = sigmoid_f(v);
  return s * (1.f + v * (1.f - s));
}
__device__ __forceinline__ float softplus_f(float v) {
  return v > float(kSoftplusThreshold) ? v : log1pf(__expf(v));
}
__device__ __forceinline__ float softplus_grad_f(float v) {
  return v > float(kSoftplusThreshold) ? 1.f : sigmoid_f(v);
}

// Scratch memory owned per (device, stream): grows (stream-ordered free + malloc) when a larger
// request comes, and is reused otherwise, so steady-state steps allocate nothing. The pointer is
// valid for work enqueued on `stream` until the next workspace() call on the same stream.
void* workspace(size_t bytes, cudaStream_t stream);

// Raises a kernel's dynamic shared memory limit to `bytes` (a host-side attribute of the current
// device, set before every launch: allowed while a stream is captured).
template <typename K>
void allow_smem(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Chunking of n routing slots (or token rows) over E experts for the chunk-parallel plan and
// router statistics: chunks of `size` items (a multiple of 32, at least 256), at most
// max(1, 2^20 / E) of them, so a [count, E] table of partials stays <= 2^20 entries.
struct ExpertChunks {
  idx_t size = 256, count = 1;
};
inline ExpertChunks expert_chunks(idx_t n, idx_t E) {
  const idx_t most = (idx_t(1) << 20) / (E > 0 ? E : 1) > 0 ? (idx_t(1) << 20) / (E > 0 ? E : 1) : 1;
  idx_t size = (n + most - 1) / most;
  size = size < 256 ? 256 : (size + 31) / 32 * 32;
  const idx_t count = n > 0 ? (n + size - 1) / size : 1;
  return {size, count};
}

// Block-wide count of the items idx[i0 .. i1-1] per expert into shared counters cnt[E] (zeroed
// here; integer shared atomics: exact and order-free). Ids outside [0, E) are not counted.
// Ends with __syncthreads(); every thread of the block must call it.
__device__ __forceinline__ void block_expert_counts(int32_t* cnt, const int32_t* idx, idx_t i0, idx_t i1, idx_t E) {
  for (idx_t e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (idx_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const int32_t e = idx[i];
    if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
}

inline unsigned grid_1d(idx_t n, int block, idx_t cap = 65535 * 8) {
  idx_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  return unsigned(g < cap ? g : cap);
}

}  // namespace moessm::cuda
