// CUDA routed_gemv (see ops/routed_gemv.h): the decode form of an expertised linear. Grid
// (N / kWarps, M / kTokens): each warp owns one output column n for a tile of kTokens tokens;
// for every token and each of its K experts the lanes read W_e[n, :] (16-byte loads: 8 bf16 or
// 4 floats, when every row start is 16-byte aligned) against the token's row, the lane sums
// reduce in a fixed butterfly, and lane 0 adds c·dot in k order in fp32. Only the chosen
// experts' weights are read; no workspace, no host sync (graph-capturable).
#include <cuda_bf16.h>

#include <cstdint>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/routed_gemv.h"

namespace moessm::cuda {

namespace {

constexpr int kWarps = 8;   // output columns per block
constexpr int kTokens = 4;  // tokens per block

template <typename T, int V>
__device__ __forceinline__ void load_f32(const T* p, float (&f)[V]) {
  if constexpr (V == 1) {
    f[0] = to_f32(p[0]);
  } else {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) f[i] = to_f32(t[i]);
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kWarps * 32)
routed_gemv_kernel(T* lo, idx_t lo_ld, const float* c_lo, T* hi, idx_t hi_ld, const float* c_hi, idx_t split,
                   const T* __restrict__ in, idx_t in_ld, const T* __restrict__ weight, idx_t w_stride,
                   const int32_t* __restrict__ idx, idx_t M, idx_t K, idx_t N, idx_t Kd) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const idx_t n = idx_t(blockIdx.x) * kWarps + warp;
  if (n >= N) return;
  const bool is_lo = n < split;
  const float* c = is_lo ? c_lo : c_hi;
  const idx_t nv = Kd / V;
  const idx_t m0 = idx_t(blockIdx.y) * kTokens, m1 = m0 + kTokens < M ? m0 + kTokens : M;
  for (idx_t m = m0; m < m1; ++m) {
    const T* x = in + m * in_ld;
    float y = 0.f;
    for (idx_t k = 0; k < K; ++k) {
      const T* w = weight + idx_t(idx[m * K + k]) * w_stride + n * Kd;
      float acc = 0.f;
      for (idx_t v = lane; v < nv; v += 32) {
        float wv[V], xv[V];
        load_f32<T, V>(w + v * V, wv);
        load_f32<T, V>(x + v * V, xv);
#pragma unroll
        for (int u = 0; u < V; ++u) acc = fmaf(wv[u], xv[u], acc);
      }
      const float dot = group_sum<32>(acc);
      y += (c ? c[m * K + k] : 1.f) * dot;
    }
    if (lane == 0) {
      if (is_lo) lo[m * lo_ld + n] = from_f32<T>(y);
      else hi[m * hi_ld + n - split] = from_f32<T>(y);
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

template <typename T>
void routed_gemv_forward(T* lo, idx_t lo_ld, const float* c_lo, T* hi, idx_t hi_ld, const float* c_hi, idx_t split,
                         const T* in, idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* idx, idx_t M,
                         idx_t K, idx_t N, idx_t Kd, cudaStream_t stream) {
  CHECK(M >= 0 && K >= 1 && N > 0 && Kd > 0 && split >= 0 && split <= N, "cuda routed_gemv_forward: sizes M=", M,
        " K=", K, " N=", N, " Kd=", Kd, " split=", split);
  CHECK((split == 0 || lo) && (split == N || hi),
        "cuda routed_gemv_forward: an output for a non-empty column range is null");
  CHECK(in_ld >= Kd, "cuda routed_gemv_forward: in_ld=", in_ld, " must be >= Kd=", Kd);
  CHECK((M + kTokens - 1) / kTokens <= 65535, "cuda routed_gemv_forward: M=", M, " tokens exceed the grid");
  if (M == 0) return;
  constexpr int kVec = 16 / int(sizeof(T));
  const size_t es = sizeof(T);
  const bool vec = aligned16(weight) && aligned16(in) && (size_t(w_stride) * es) % 16 == 0 &&
                   (size_t(Kd) * es) % 16 == 0 && (size_t(in_ld) * es) % 16 == 0;
  const dim3 grid{unsigned((N + kWarps - 1) / kWarps), unsigned((M + kTokens - 1) / kTokens)};
  if (vec)
    routed_gemv_kernel<T, kVec><<<grid, kWarps * 32, 0, stream>>>(lo, lo_ld, c_lo, hi, hi_ld, c_hi, split, in, in_ld,
                                                                  weight, w_stride, idx, M, K, N, Kd);
  else
    routed_gemv_kernel<T, 1><<<grid, kWarps * 32, 0, stream>>>(lo, lo_ld, c_lo, hi, hi_ld, c_hi, split, in, in_ld,
                                                               weight, w_stride, idx, M, K, N, Kd);
  CUDA_CHECK_LAUNCH("routed_gemv_kernel");
}

template void routed_gemv_forward<float>(float*, idx_t, const float*, float*, idx_t, const float*, idx_t,
                                         const float*, idx_t, const float*, idx_t, const int32_t*, idx_t, idx_t,
                                         idx_t, idx_t, cudaStream_t);
template void routed_gemv_forward<bf16>(bf16*, idx_t, const float*, bf16*, idx_t, const float*, idx_t, const bf16*,
                                        idx_t, const bf16*, idx_t, const int32_t*, idx_t, idx_t, idx_t, idx_t,
                                        cudaStream_t);

}  // namespace moessm::cuda
