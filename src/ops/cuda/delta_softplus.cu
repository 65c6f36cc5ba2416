// CUDA delta_softplus (contract in ops/delta_softplus.h). Forward: one thread per element,
// x + bias formed in fp32. Backward: a block of 32 channels × 8 row lanes walks one row block;
// each thread writes its dx and sums its rows in increasing m, the 8 lanes are added in lane
// order, and the per-row-block partials [nrb, Di] are summed in row-block order by a second
// pass into dbias (no atomics; the split depends only on M, so results are bitwise repeatable).
// A single row block (decode-sized M) adds into dbias directly, with no workspace.
#include <cuda_bf16.h>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/delta_softplus.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kCols = 32, kLanes = 8;  // backward block: channels × row lanes
constexpr idx_t kRowsPerBlock = 128, kMaxRowBlocks = 1024;

template <typename T>
__global__ void softplus_fwd_kernel(T* out, const T* x, const float* bias, idx_t M, idx_t Di) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * Di; i += idx_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(softplus_f(to_f32(x[i]) + bias[i % Di]));
}

// part == nullptr: one row block, added straight into dbias (when dbias is given).
template <typename T>
__global__ void __launch_bounds__(kCols * kLanes)
softplus_bwd_kernel(T* dx, float* part, float* dbias, const T* dout, const T* x, const float* bias, idx_t M,
                    idx_t Di, idx_t rows_per_block) {
  __shared__ float sh[kLanes][kCols];
  const idx_t c = idx_t(blockIdx.x) * kCols + threadIdx.x;
  const idx_t m0 = idx_t(blockIdx.y) * rows_per_block, m1 = min(M, m0 + rows_per_block);
  float s = 0.f;
  if (c < Di) {
    const float bc = bias[c];
    for (idx_t m = m0 + threadIdx.y; m < m1; m += kLanes) {
      const idx_t i = m * Di + c;
      const float v = to_f32(dout[i]) * softplus_grad_f(to_f32(x[i]) + bc);
      dx[i] = from_f32<T>(v);
      s += v;
    }
  }
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= Di) return;
  float t = 0.f;
#pragma unroll
  for (int l = 0; l < kLanes; ++l) t += sh[l][threadIdx.x];
  if (part)
    part[idx_t(blockIdx.y) * Di + c] = t;
  else if (dbias)
    dbias[c] += t;
}

__global__ void softplus_bias_reduce(float* dbias, const float* part, idx_t nrb, idx_t Di) {
  const idx_t c = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (c >= Di) return;
  float s = 0.f;
  for (idx_t q = 0; q < nrb; ++q) s += part[q * Di + c];
  dbias[c] += s;
}

void check_sizes(const char* op, const float* bias, idx_t M, idx_t Di) {
  CHECK(M >= 0 && Di > 0, "cuda ", op, ": sizes M=", M, " Di=", Di, " (need M >= 0, Di > 0)");
  CHECK(bias != nullptr, "cuda ", op, ": bias is required");
}

}  // namespace

template <typename T>
void delta_softplus_forward(T* out, const T* x, const float* bias, idx_t M, idx_t Di, cudaStream_t stream) {
  check_sizes("delta_softplus_forward", bias, M, Di);
  if (M == 0) return;
  softplus_fwd_kernel<T><<<grid_1d(M * Di, kThreads), kThreads, 0, stream>>>(out, x, bias, M, Di);
  CUDA_CHECK_LAUNCH("softplus_fwd_kernel");
}

template <typename T>
void delta_softplus_backward(T* dx, float* dbias, const T* dout, const T* x, const float* bias, idx_t M, idx_t Di,
                             cudaStream_t stream) {
  check_sizes("delta_softplus_backward", bias, M, Di);
  if (M == 0) return;
  idx_t nrb = (M + kRowsPerBlock - 1) / kRowsPerBlock;
  if (nrb > kMaxRowBlocks) nrb = kMaxRowBlocks;
  const idx_t rows_per_block = (M + nrb - 1) / nrb;
  nrb = (M + rows_per_block - 1) / rows_per_block;
  float* part = nullptr;
  if (dbias && nrb > 1) part = static_cast<float*>(workspace(size_t(nrb * Di) * sizeof(float), stream));
  const dim3 grid{unsigned((Di + kCols - 1) / kCols), unsigned(nrb)};
  softplus_bwd_kernel<T><<<grid, dim3(kCols, kLanes), 0, stream>>>(dx, part, dbias, dout, x, bias, M, Di,
                                                                   rows_per_block);
  CUDA_CHECK_LAUNCH("softplus_bwd_kernel");
  if (part) {
    softplus_bias_reduce<<<grid_1d(Di, kThreads), kThreads, 0, stream>>>(dbias, part, nrb, Di);
    CUDA_CHECK_LAUNCH("softplus_bias_reduce");
  }
}

#define MOESSM_CUDA_DELTA_SOFTPLUS(T)                                                                         \
  template void delta_softplus_forward<T>(T*, const T*, const float*, idx_t, idx_t, cudaStream_t);           \
  template void delta_softplus_backward<T>(T*, float*, const T*, const T*, const float*, idx_t, idx_t, \
                                           cudaStream_t);
MOESSM_CUDA_DELTA_SOFTPLUS(float)
MOESSM_CUDA_DELTA_SOFTPLUS(bf16)

}  // namespace moessm::cuda
