// CUDA moe_permute (see ops/moe_permute.h). The plan is built on the device in three
// chunk-parallel passes (count, scan, rank; see chunk_count_kernel) with integer counts only, so
// row_of_slot is the CPU's stable counting sort exactly (deterministic, graph-capturable: no host
// sync). Data
// movement: one block per row, 16-byte vectors where the rows are aligned; every output element
// is written by one thread; the sums over k run in k order in fp32, and dw's dot products are
// lane-strided partial sums reduced in a fixed butterfly.
#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/moe_permute.h"
#include "ops/router_topk.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

// The plan in three chunk-parallel passes over the S = M·K slots, split into expert_chunks(S, E):
//   count: block c counts its chunk's slots per expert into counts[c, E];
//   scan:  one block turns the counts into offsets[E+1] and, in place, counts[c, e] into the
//          first grouped row of expert e's slots in chunk c (offsets[e] + Σ_{c' < c} counts);
//   rank:  one warp per chunk walks its slots 32 at a time in slot order; lanes routed to the
//          same expert find each other with __match_any_sync and take consecutive rows.
// Integer counts only: exact, deterministic, and the stable counting sort of the CPU.
__global__ void chunk_count_kernel(int32_t* counts, const int32_t* idx, idx_t S, idx_t E, idx_t chunk) {
  extern __shared__ int32_t cnt[];
  const idx_t s0 = idx_t(blockIdx.x) * chunk, s1 = s0 + chunk < S ? s0 + chunk : S;
  block_expert_counts(cnt, idx, s0, s1, E);
  for (idx_t e = threadIdx.x; e < E; e += blockDim.x) counts[idx_t(blockIdx.x) * E + e] = cnt[e];
}

// One warp per expert (strided): the expert's total over chunks (a warp sum of integers), then,
// after one thread has turned the totals into offsets, an exclusive scan over the chunks 32 at a
// time (shuffle scan plus the running carry).
__global__ void chunk_scan_kernel(int32_t* offsets, int32_t* counts, idx_t E, idx_t chunks) {
  extern __shared__ int32_t base[];
  const int lane = int(threadIdx.x & 31), warp = int(threadIdx.x >> 5), warps = int(blockDim.x >> 5);
  for (idx_t e = warp; e < E; e += warps) {
    int32_t t = 0;
    for (idx_t c = lane; c < chunks; c += 32) t += counts[c * E + e];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (lane == 0) base[e] = t;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t at = 0;
    offsets[0] = 0;
    for (idx_t e = 0; e < E; ++e) {
      const int32_t t = base[e];
      base[e] = at;
      offsets[e + 1] = (at += t);
    }
  }
  __syncthreads();
  for (idx_t e = warp; e < E; e += warps) {
    int32_t carry = base[e];
    for (idx_t c0 = 0; c0 < chunks; c0 += 32) {
      const idx_t c = c0 + lane;
      const int32_t v = c < chunks ? counts[c * E + e] : 0;
      int32_t inc = v;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int32_t n = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += n;
      }
      if (c < chunks) counts[c * E + e] = carry + inc - v;
      carry += __shfl_sync(0xffffffffu, inc, 31);
    }
  }
}

__global__ void chunk_rank_kernel(int32_t* row_of_slot, const int32_t* first_row, const int32_t* idx, idx_t S,
                                  idx_t E, idx_t chunk) {
  extern __shared__ int32_t next[];
  const int lane = int(threadIdx.x);
  for (idx_t e = lane; e < E; e += 32) next[e] = first_row[idx_t(blockIdx.x) * E + e];
  __syncwarp();
  const idx_t s0 = idx_t(blockIdx.x) * chunk, s1 = s0 + chunk < S ? s0 + chunk : S;
  for (idx_t b = s0; b < s1; b += 32) {
    const idx_t s = b + lane;
    const int32_t e = s < s1 ? idx[s] : -1;
    const bool ok = e >= 0 && e < E;
    const unsigned peers = __match_any_sync(0xffffffffu, ok ? e : -1);
    if (ok) row_of_slot[s] = next[e] + __popc(peers & ((1u << lane) - 1u));
    __syncwarp();
    if (ok && lane == __ffs(peers) - 1) next[e] += __popc(peers);
    __syncwarp();
  }
}

__global__ void stacked_kernel(int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t K) {
  for (idx_t s = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; s < M * K; s += idx_t(gridDim.x) * blockDim.x)
    row_of_slot[s] = int32_t(idx_t(idx[s]) * M + s / K);
}

// Data movement kernels: one block per row (grid-strided), the row's X elements moved as V-element
// vectors (16 bytes: 8 bf16 or 4 float) when every row start is 16-byte aligned, else V = 1.
// Sums over k run in k order in fp32, element by element (the same values for any V).
template <typename T, int V>
__device__ __forceinline__ void load_vec(float (&f)[V], const T* p) {
  if constexpr (V == 1) {
    f[0] = to_f32(p[0]);
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < V; ++i) f[i] = to_f32(t[i]);
  }
}
template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&f)[V]) {
  if constexpr (V == 1) {
    p[0] = from_f32<T>(f[0]);
  } else {
    uint4 u;
    T* t = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int i = 0; i < V; ++i) t[i] = from_f32<T>(f[i]);
    *reinterpret_cast<uint4*>(p) = u;
  }
}

// out[row_of_slot[s]] = in[s / K] for every slot s.
template <typename T, int V>
__global__ void permute_fwd_kernel(T* out, idx_t out_ld, const T* in, idx_t in_ld, const int32_t* row_of_slot,
                                   idx_t S, idx_t K, idx_t X) {
  for (idx_t s = blockIdx.x; s < S; s += gridDim.x) {
    T* dst = out + idx_t(row_of_slot[s]) * out_ld;
    const T* src = in + (s / K) * in_ld;
    for (idx_t j = idx_t(threadIdx.x) * V; j < X; j += idx_t(blockDim.x) * V) {
      float f[V];
      load_vec<T, V>(f, src + j);
      store_vec<T, V>(dst + j, f);
    }
  }
}

// din[m] (=, or +=) Σ_k dout[row_of_slot[m·K + k]].
template <typename T, int V>
__global__ void permute_bwd_kernel(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const int32_t* row_of_slot,
                                   idx_t M, idx_t K, idx_t X, bool accumulate) {
  for (idx_t m = blockIdx.x; m < M; m += gridDim.x) {
    T* dst = din + m * din_ld;
    for (idx_t j = idx_t(threadIdx.x) * V; j < X; j += idx_t(blockDim.x) * V) {
      float acc[V], v[V];
      if (accumulate) {
        load_vec<T, V>(acc, dst + j);
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] = 0.f;
      }
      for (idx_t k = 0; k < K; ++k) {
        load_vec<T, V>(v, dout + idx_t(row_of_slot[m * K + k]) * dout_ld + j);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] += v[i];
      }
      store_vec<T, V>(dst + j, acc);
    }
  }
}

// out[m] = Σ_k c[m,k] · in[row_of_slot[m·K + k]]   (c = w, or 1 when w is nullptr).
template <typename T, int V>
__global__ void unpermute_fwd_kernel(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* w,
                                     const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
  for (idx_t m = blockIdx.x; m < M; m += gridDim.x) {
    for (idx_t j = idx_t(threadIdx.x) * V; j < X; j += idx_t(blockDim.x) * V) {
      float acc[V], v[V];
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] = 0.f;
      for (idx_t k = 0; k < K; ++k) {
        load_vec<T, V>(v, in + idx_t(row_of_slot[m * K + k]) * in_ld + j);
        if (w) {
          const float c = w[m * K + k];
#pragma unroll
          for (int i = 0; i < V; ++i) acc[i] += c * v[i];
        } else {
#pragma unroll
          for (int i = 0; i < V; ++i) acc[i] += v[i];
        }
      }
      store_vec<T, V>(out + m * out_ld + j, acc);
    }
  }
}

// din[row_of_slot[s]] = c[s] · dout[s / K].
template <typename T, int V>
__global__ void unpermute_bwd_din_kernel(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const float* w,
                                         const int32_t* row_of_slot, idx_t S, idx_t K, idx_t X) {
  for (idx_t s = blockIdx.x; s < S; s += gridDim.x) {
    const float c = w ? w[s] : 1.f;
    T* dst = din + idx_t(row_of_slot[s]) * din_ld;
    const T* src = dout + (s / K) * dout_ld;
    for (idx_t j = idx_t(threadIdx.x) * V; j < X; j += idx_t(blockDim.x) * V) {
      float f[V];
      load_vec<T, V>(f, src + j);
#pragma unroll
      for (int i = 0; i < V; ++i) f[i] = c * f[i];
      store_vec<T, V>(dst + j, f);
    }
  }
}

constexpr int kRowThreads = 128;
inline unsigned row_grid(idx_t rows) { return unsigned(std::min<idx_t>(rows, idx_t(1) << 20)); }

// 16-byte vectors when X and both strides are multiples of the vector and both bases aligned.
template <typename T>
bool vectorizable(idx_t X, idx_t ld_a, idx_t ld_b, const void* a, const void* b) {
  constexpr idx_t V = 16 / sizeof(T);
  return X % V == 0 && ld_a % V == 0 && ld_b % V == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(b) % 16 == 0;
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
  CHECK(E <= kRouterMaxExperts, "moe_permute_plan (cuda): at most ", kRouterMaxExperts, " experts, found ", E);
  const ExpertChunks ch = expert_chunks(M * K, E);
  int32_t* counts = static_cast<int32_t*>(workspace(size_t(ch.count * E) * sizeof(int32_t), stream));
  const size_t shared = size_t(E) * sizeof(int32_t);
  chunk_count_kernel<<<unsigned(ch.count), kThreads, shared, stream>>>(counts, idx, M * K, E, ch.size);
  CUDA_CHECK_LAUNCH("chunk_count_kernel");
  chunk_scan_kernel<<<1, 1024, shared, stream>>>(offsets, counts, E, ch.count);
  CUDA_CHECK_LAUNCH("chunk_scan_kernel");
  if (M == 0) return;
  chunk_rank_kernel<<<unsigned(ch.count), 32, shared, stream>>>(row_of_slot, counts, idx, M * K, E, ch.size);
  CUDA_CHECK_LAUNCH("chunk_rank_kernel");
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
  constexpr int V = 16 / sizeof(T);
  if (vectorizable<T>(X, out_ld, in_ld, out, in))
    permute_fwd_kernel<T, V><<<row_grid(M * K), kRowThreads, 0, stream>>>(out, out_ld, in, in_ld, row_of_slot, M * K,
                                                                            K, X);
  else
    permute_fwd_kernel<T, 1><<<row_grid(M * K), kRowThreads, 0, stream>>>(out, out_ld, in, in_ld, row_of_slot, M * K,
                                                                            K, X);
  CUDA_CHECK_LAUNCH("permute_fwd_kernel");
}

template <typename T>
void moe_permute_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const int32_t* row_of_slot, idx_t M,
                          idx_t K, idx_t X, bool accumulate, cudaStream_t stream) {
  if (M * X == 0) return;
  constexpr int V = 16 / sizeof(T);
  if (vectorizable<T>(X, din_ld, dout_ld, din, dout))
    permute_bwd_kernel<T, V><<<row_grid(M), kRowThreads, 0, stream>>>(din, din_ld, dout, dout_ld, row_of_slot, M, K,
                                                                        X, accumulate);
  else
    permute_bwd_kernel<T, 1><<<row_grid(M), kRowThreads, 0, stream>>>(din, din_ld, dout, dout_ld, row_of_slot, M, K,
                                                                        X, accumulate);
  CUDA_CHECK_LAUNCH("permute_bwd_kernel");
}

template <typename T>
void moe_unpermute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* w,
                           const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, cudaStream_t stream) {
  if (M * X == 0) return;
  constexpr int V = 16 / sizeof(T);
  if (vectorizable<T>(X, out_ld, in_ld, out, in))
    unpermute_fwd_kernel<T, V><<<row_grid(M), kRowThreads, 0, stream>>>(out, out_ld, in, in_ld, w, row_of_slot, M, K,
                                                                          X);
  else
    unpermute_fwd_kernel<T, 1><<<row_grid(M), kRowThreads, 0, stream>>>(out, out_ld, in, in_ld, w, row_of_slot, M, K,
                                                                          X);
  CUDA_CHECK_LAUNCH("unpermute_fwd_kernel");
}

template <typename T>
void moe_unpermute_backward(T* din, idx_t din_ld, float* dw, const T* dout, idx_t dout_ld, const T* in, idx_t in_ld,
                            const float* w, const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X,
                            bool dw_accumulate, cudaStream_t stream) {
  if (M * K == 0) return;
  if (din) {
    constexpr int V = 16 / sizeof(T);
    if (vectorizable<T>(X, din_ld, dout_ld, din, dout))
      unpermute_bwd_din_kernel<T, V><<<row_grid(M * K), kRowThreads, 0, stream>>>(din, din_ld, dout, dout_ld, w,
                                                                                   row_of_slot, M * K, K, X);
    else
      unpermute_bwd_din_kernel<T, 1><<<row_grid(M * K), kRowThreads, 0, stream>>>(din, din_ld, dout, dout_ld, w,
                                                                                   row_of_slot, M * K, K, X);
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
