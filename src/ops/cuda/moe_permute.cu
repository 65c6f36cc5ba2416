// CUDA moe_permute (see ops/moe_permute.h). The plan is built on the device without atomics:
// block e counts expert e's slots, one thread scans the counts into offsets, then block e walks
// the slots in order and ranks its own with a block-wide prefix count, so row_of_slot is the
// CPU's stable counting sort exactly (deterministic, graph-capturable: no host sync). Data
// movement: every output element is written by one thread; the sums over k run in k order in
// fp32, and dw's dot products are lane-strided partial sums reduced in a fixed butterfly.
#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/moe_permute.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void count_kernel(int32_t* count, const int32_t* idx, idx_t S) {
  __shared__ int sh[kThreads];
  const int32_t e = int32_t(blockIdx.x);
  int c = 0;
  for (idx_t s = threadIdx.x; s < S; s += blockDim.x) c += idx[s] == e;
  sh[threadIdx.x] = c;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) count[e] = sh[0];
}

__global__ void scan_kernel(int32_t* offsets, const int32_t* count, idx_t E) {
  int32_t at = 0;
  offsets[0] = 0;
  for (idx_t e = 0; e < E; ++e) offsets[e + 1] = (at += count[e]);
}

// Block e assigns the grouped rows of expert e's slots, in slot order.
__global__ void rank_kernel(int32_t* row_of_slot, const int32_t* offsets, const int32_t* idx, idx_t S) {
  __shared__ int warp_tot[kThreads / 32];
  const int32_t e = int32_t(blockIdx.x);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int32_t base = offsets[e];
  for (idx_t s0 = 0; s0 < S; s0 += kThreads) {
    const idx_t s = s0 + threadIdx.x;
    const bool mine = s < S && idx[s] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    const int before_in_warp = __popc(ballot & ((1u << lane) - 1u));
    if (lane == 0) warp_tot[wid] = __popc(ballot);
    __syncthreads();
    int before = before_in_warp;
    for (int w = 0; w < wid; ++w) before += warp_tot[w];
    if (mine) row_of_slot[s] = base + before;
    int chunk = 0;
    for (int w = 0; w < kThreads / 32; ++w) chunk += warp_tot[w];
    __syncthreads();
    base += chunk;
  }
}

__global__ void stacked_kernel(int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t K) {
  for (idx_t s = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; s < M * K; s += idx_t(gridDim.x) * blockDim.x)
    row_of_slot[s] = int32_t(idx_t(idx[s]) * M + s / K);
}

template <typename T>
__global__ void permute_fwd_kernel(T* out, idx_t out_ld, const T* in, idx_t in_ld, const int32_t* row_of_slot,
                                   idx_t M, idx_t K, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * K * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t s = i / X, x = i % X;
    out[idx_t(row_of_slot[s]) * out_ld + x] = in[(s / K) * in_ld + x];
  }
}

template <typename T>
__global__ void permute_bwd_kernel(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const int32_t* row_of_slot,
                                   idx_t M, idx_t K, idx_t X, bool accumulate) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    float acc = accumulate ? to_f32(din[m * din_ld + x]) : 0.f;
    for (idx_t k = 0; k < K; ++k) acc += to_f32(dout[idx_t(row_of_slot[m * K + k]) * dout_ld + x]);
    din[m * din_ld + x] = from_f32<T>(acc);
  }
}

template <typename T>
__global__ void unpermute_fwd_kernel(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* w,
                                     const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    float acc = 0.f;
    for (idx_t k = 0; k < K; ++k) {
      const float v = to_f32(in[idx_t(row_of_slot[m * K + k]) * in_ld + x]);
      acc += w ? w[m * K + k] * v : v;
    }
    out[m * out_ld + x] = from_f32<T>(acc);
  }
}

template <typename T>
__global__ void unpermute_bwd_din_kernel(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const float* w,
                                         const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * K * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t s = i / X, x = i % X;
    const float c = w ? w[s] : 1.f;
    din[idx_t(row_of_slot[s]) * din_ld + x] = from_f32<T>(c * to_f32(dout[(s / K) * dout_ld + x]));
  }
}

// One warp per slot: dw[s] (=, or +=) <dout[m, :], in[row_of_slot[s], :]>.
template <typename T>
__global__ void unpermute_bwd_dw_kernel(float* dw, const T* dout, idx_t dout_ld, const T* in, idx_t in_ld,
                                        const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, bool accumulate) {
  const idx_t s = (blockIdx.x * idx_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (s >= M * K) return;
  const T* g = dout + (s / K) * dout_ld;
  const T* v = in + idx_t(row_of_slot[s]) * in_ld;
  float acc = 0.f;
  for (idx_t x = lane; x < X; x += 32) acc += to_f32(g[x]) * to_f32(v[x]);
  acc = group_sum<32>(acc);
  if (lane == 0) dw[s] = accumulate ? dw[s] + acc : acc;
}

}  // namespace

void moe_permute_plan(int32_t* offsets, int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E, idx_t K,
                      cudaStream_t stream) {
  CHECK(M >= 0 && E >= 1 && K >= 1 && K <= E, "moe_permute_plan: need 1 <= K <= E, found M=", M, " E=", E, " K=", K);
  CHECK(M * K < (idx_t(1) << 31), "moe_permute_plan: ", M * K, " slots exceed int32 row indices");
  CHECK(E <= 65535, "moe_permute_plan (cuda): at most 65535 experts, found ", E);
  int32_t* count = static_cast<int32_t*>(workspace(size_t(E) * sizeof(int32_t), stream));
  count_kernel<<<unsigned(E), kThreads, 0, stream>>>(count, idx, M * K);
  CUDA_CHECK_LAUNCH("count_kernel");
  scan_kernel<<<1, 1, 0, stream>>>(offsets, count, E);
  CUDA_CHECK_LAUNCH("scan_kernel");
  if (M == 0) return;
  rank_kernel<<<unsigned(E), kThreads, 0, stream>>>(row_of_slot, offsets, idx, M * K);
  CUDA_CHECK_LAUNCH("rank_kernel");
}

void moe_permute_plan_stacked(int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E, idx_t K,
                              cudaStream_t stream) {
  CHECK(M >= 0 && E >= 1 && K >= 1 && K <= E, "moe_permute_plan_stacked: need 1 <= K <= E, found M=", M, " E=", E,
        " K=", K);
  CHECK(E * M < (idx_t(1) << 31), "moe_permute_plan_stacked: ", E * M, " stacked rows exceed int32 row indices");
  if (M == 0) return;
  stacked_kernel<<<grid_1d(M * K, kThreads), kThreads, 0, stream>>>(row_of_slot, idx, M, K);
  CUDA_CHECK_LAUNCH("stacked_kernel");
}

template <typename T>
void moe_permute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const int32_t* row_of_slot, idx_t M,
                         idx_t K, idx_t X, cudaStream_t stream) {
  if (M * K * X == 0) return;
  permute_fwd_kernel<T><<<grid_1d(M * K * X, kThreads), kThreads, 0, stream>>>(out, out_ld, in, in_ld, row_of_slot,
                                                                               M, K, X);
  CUDA_CHECK_LAUNCH("permute_fwd_kernel");
}

template <typename T>
void moe_permute_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const int32_t* row_of_slot, idx_t M,
                          idx_t K, idx_t X, bool accumulate, cudaStream_t stream) {
  if (M * X == 0) return;
  permute_bwd_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(din, din_ld, dout, dout_ld, row_of_slot,
                                                                           M, K, X, accumulate);
  CUDA_CHECK_LAUNCH("permute_bwd_kernel");
}

template <typename T>
void moe_unpermute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* w,
                           const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, cudaStream_t stream) {
  if (M * X == 0) return;
  unpermute_fwd_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(out, out_ld, in, in_ld, w, row_of_slot,
                                                                             M, K, X);
  CUDA_CHECK_LAUNCH("unpermute_fwd_kernel");
}

template <typename T>
void moe_unpermute_backward(T* din, idx_t din_ld, float* dw, const T* dout, idx_t dout_ld, const T* in, idx_t in_ld,
                            const float* w, const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X,
                            bool dw_accumulate, cudaStream_t stream) {
  if (M * K == 0) return;
  if (din) {
    unpermute_bwd_din_kernel<T><<<grid_1d(M * K * X, kThreads), kThreads, 0, stream>>>(din, din_ld, dout, dout_ld, w,
                                                                                        row_of_slot, M, K, X);
    CUDA_CHECK_LAUNCH("unpermute_bwd_din_kernel");
  }
  if (w && dw) {
    unpermute_bwd_dw_kernel<T><<<grid_1d(M * K * 32, kThreads, idx_t(1) << 30), kThreads, 0, stream>>>(
        dw, dout, dout_ld, in, in_ld, row_of_slot, M, K, X, dw_accumulate);
    CUDA_CHECK_LAUNCH("unpermute_bwd_dw_kernel");
  }
}

#define MOESSM_CUDA_PERMUTE(T)                                                                                       \
  template void moe_permute_forward<T>(T*, idx_t, const T*, idx_t, const int32_t*, idx_t, idx_t, idx_t, cudaStream_t); \
  template void moe_permute_backward<T>(T*, idx_t, const T*, idx_t, const int32_t*, idx_t, idx_t, idx_t, bool,       \
                                        cudaStream_t);                                                              \
  template void moe_unpermute_forward<T>(T*, idx_t, const T*, idx_t, const float*, const int32_t*, idx_t, idx_t,     \
                                         idx_t, cudaStream_t);                                                      \
  template void moe_unpermute_backward<T>(T*, idx_t, float*, const T*, idx_t, const T*, idx_t, const float*,         \
                                          const int32_t*, idx_t, idx_t, idx_t, bool, cudaStream_t);
MOESSM_CUDA_PERMUTE(float)
MOESSM_CUDA_PERMUTE(bf16)

}  // namespace moessm::cuda
