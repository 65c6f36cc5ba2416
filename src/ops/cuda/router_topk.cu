// CUDA router (see ops/router_topk.h): fp32 tensors, the row arithmetic in double as on the CPU
// (one thread per token row: E is small), top-K by repeated arg-max over the fp32 probabilities
// with strict '>' (ties → lower index, as the CPU). The cross-row sums of the aux and z losses
// are block reductions in a fixed order (deterministic, no atomics); the losses are ADDED to a
// device scalar, so a layer's aux losses sum on the device without a host sync.
#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/router_select.h"
#include "ops/router_topk.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

__device__ double row_lse(const float* l, idx_t E) {
  double mx = double(l[0]);
  for (idx_t i = 1; i < E; ++i) mx = fmax(mx, double(l[i]));
  double s = 0;
  for (idx_t i = 0; i < E; ++i) s += exp(double(l[i]) - mx);
  return mx + log(s);
}

__global__ void topk_fwd_kernel(float* probs, int32_t* idx, float* w, const float* logits, idx_t M, idx_t E,
                                idx_t K, bool normalize) {
  const idx_t m = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (m >= M) return;
  const float* l = logits + m * E;
  float* p = probs + m * E;
  const double lse = row_lse(l, E);
  for (idx_t i = 0; i < E; ++i) p[i] = float(exp(double(l[i]) - lse));
  int32_t* id = idx + m * K;
  router_select_topk(id, p, E, K);
  double s = 0;
  for (idx_t k = 0; k < K; ++k) s += double(p[id[k]]);
  for (idx_t k = 0; k < K; ++k) w[m * K + k] = normalize ? float(double(p[id[k]]) / s) : p[id[k]];
}

__global__ void topk_bwd_kernel(float* dlogits, const float* dw, const float* dprobs, const float* probs,
                                const int32_t* idx, const float* w, idx_t M, idx_t E, idx_t K, bool normalize) {
  const idx_t m = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (m >= M) return;
  const float* p = probs + m * E;
  const int32_t* id = idx + m * K;
  const float* dwm = dw + m * K;
  float* dl = dlogits + m * E;
  for (idx_t i = 0; i < E; ++i) dl[i] = dprobs ? dprobs[m * E + i] : 0.f;
  if (normalize) {
    double s = 0, dot = 0;
    for (idx_t k = 0; k < K; ++k) {
      s += double(p[id[k]]);
      dot += double(dwm[k]) * double(w[m * K + k]);
    }
    for (idx_t k = 0; k < K; ++k) dl[id[k]] += float((double(dwm[k]) - dot) / s);
  } else {
    for (idx_t k = 0; k < K; ++k) dl[id[k]] += dwm[k];
  }
  double dot = 0;
  for (idx_t i = 0; i < E; ++i) dot += double(p[i]) * double(dl[i]);
  for (idx_t i = 0; i < E; ++i) dl[i] = float(double(p[i]) * (double(dl[i]) - dot));
}

// Block-wide sum of one double per thread, in a fixed tree order; thread 0 gets the result.
__device__ double block_sum(double v) {
  __shared__ double sh[kThreads];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  return sh[0];
}

// The experts' shares in two chunk-parallel passes over the rows, split into expert_chunks(M, E):
//   share_part_kernel: block c counts the slots of its rows per expert (cnt[c, e]) and, when probs
//     is given, sums p[m, e] over its rows (psum[c, e]): thread (g, e) sums rows g, g + G, … of
//     column e in double, then the G group sums are added in group order;
//   share_final_kernel: f[e] = Σ_c cnt[c, e] / (M·K) and pbar[e] = Σ_c psum[c, e]: one warp per
//     expert, lane-strided over the chunks, then a fixed butterfly.
// Fixed orders throughout (deterministic, no float atomics).
__global__ void share_part_kernel(int32_t* cnt, double* psum, const float* probs, const int32_t* idx, idx_t M,
                                  idx_t E, idx_t K, idx_t rows) {
  extern __shared__ int32_t sh_cnt[];
  __shared__ double part[kThreads];
  const idx_t c = blockIdx.x, r0 = c * rows, r1 = r0 + rows < M ? r0 + rows : M;
  block_expert_counts(sh_cnt, idx, r0 * K, r1 * K, E);
  for (idx_t e = threadIdx.x; e < E; e += blockDim.x) cnt[c * E + e] = sh_cnt[e];
  if (!probs) return;
  if (E <= kThreads) {
    const idx_t G = kThreads / E, g = threadIdx.x / E, e = threadIdx.x % E;
    double s = 0;
    if (g < G)
      for (idx_t m = r0 + g; m < r1; m += G) s += double(probs[m * E + e]);
    part[threadIdx.x] = s;
    __syncthreads();
    if (idx_t(threadIdx.x) < E) {
      double t = 0;
      for (idx_t q = 0; q < G; ++q) t += part[q * E + threadIdx.x];
      psum[c * E + threadIdx.x] = t;
    }
  } else {
    for (idx_t e = threadIdx.x; e < E; e += blockDim.x) {
      double s = 0;
      for (idx_t m = r0; m < r1; ++m) s += double(probs[m * E + e]);
      psum[c * E + e] = s;
    }
  }
}

__global__ void share_final_kernel(double* f, double* pbar, const int32_t* cnt, const double* psum, idx_t M,
                                   idx_t E, idx_t K, idx_t chunks) {
  const int lane = int(threadIdx.x & 31), warp = int(threadIdx.x >> 5), warps = int(blockDim.x >> 5);
  for (idx_t e = warp; e < E; e += warps) {  // one warp per expert: lane-strided chunks, fixed butterfly
    long long n = 0;
    double p = 0;
    for (idx_t c = lane; c < chunks; c += 32) {
      n += cnt[c * E + e];
      if (pbar) p += psum[c * E + e];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      n += __shfl_xor_sync(0xffffffffu, n, o);
      p += __shfl_xor_sync(0xffffffffu, p, o);
    }
    if (lane == 0) {
      f[e] = M > 0 ? double(n) / double(M * K) : 0.0;
      if (pbar) pbar[e] = p;
    }
  }
}

// f[E] (and pbar[E] when probs is given) in the stream's workspace.
double* expert_shares(const float* probs, const int32_t* idx, idx_t M, idx_t E, idx_t K, cudaStream_t stream) {
  const ExpertChunks ch = expert_chunks(M, E);
  const size_t n = size_t(ch.count * E);
  char* ws = static_cast<char*>(workspace(size_t(2 * E) * sizeof(double) + n * (sizeof(double) + sizeof(int32_t)), stream));
  double* f = reinterpret_cast<double*>(ws);
  double* psum = f + 2 * E;
  int32_t* cnt = reinterpret_cast<int32_t*>(psum + n);
  share_part_kernel<<<unsigned(ch.count), kThreads, size_t(E) * sizeof(int32_t), stream>>>(cnt, psum, probs, idx, M,
                                                                                            E, K, ch.size);
  CUDA_CHECK_LAUNCH("share_part_kernel");
  share_final_kernel<<<1, 1024, 0, stream>>>(f, probs ? f + E : nullptr, cnt, psum, M, E, K, ch.count);
  CUDA_CHECK_LAUNCH("share_final_kernel");
  return f;
}

__global__ void aux_final_kernel(double* loss, double* load, const double* f, const double* pbar, idx_t M,
                                 idx_t E, double coef) {
  double s = 0;
  for (idx_t e = 0; e < E; ++e) {
    s += f[e] * pbar[e] / double(M);
    if (load) load[e] = f[e];
  }
  *loss += coef * double(E) * s;
}

__global__ void aux_bwd_kernel(float* dprobs, const double* f, double scale, idx_t M, idx_t E) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * E; i += idx_t(gridDim.x) * blockDim.x)
    dprobs[i] += float(scale * f[i % E]);
}

__global__ void z_rows_kernel(double* sq, const float* logits, idx_t M, idx_t E) {
  const idx_t m = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (m >= M) return;
  const double lse = row_lse(logits + m * E, E);
  sq[m] = lse * lse;
}

__global__ void z_final_kernel(double* loss, const double* sq, idx_t M, double coef) {
  double s = 0;
  for (idx_t m = threadIdx.x; m < M; m += blockDim.x) s += sq[m];
  const double t = block_sum(s);
  if (threadIdx.x == 0) *loss += coef * t / double(M);
}

__global__ void z_bwd_kernel(float* dlogits, const float* logits, double scale, idx_t M, idx_t E) {
  const idx_t m = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (m >= M) return;
  const float* l = logits + m * E;
  const double lse = row_lse(l, E);
  for (idx_t i = 0; i < E; ++i) dlogits[m * E + i] += float(scale * lse * exp(double(l[i]) - lse));
}

void check_sizes(const char* op, idx_t M, idx_t E, idx_t K) {
  CHECK(M >= 0 && E >= 1 && K >= 1 && K <= E, op, ": need M >= 0 and 1 <= K <= E, found M=", M, " E=", E, " K=", K);
  CHECK(E <= kRouterMaxExperts && K <= kRouterMaxTopK, op, " (cuda): supports n_experts <= ", kRouterMaxExperts,
        " and top_k <= ", kRouterMaxTopK, ", found E=", E, " K=", K);
}

}  // namespace

void router_topk_forward(float* probs, int32_t* idx, float* w, const float* logits, idx_t M, idx_t E, idx_t K,
                         bool normalize_topk, cudaStream_t stream) {
  check_sizes("router_topk_forward", M, E, K);
  if (M == 0) return;
  topk_fwd_kernel<<<grid_1d(M, kThreads, idx_t(1) << 30), kThreads, 0, stream>>>(probs, idx, w, logits, M, E, K,
                                                                                 normalize_topk);
  CUDA_CHECK_LAUNCH("topk_fwd_kernel");
}

void router_topk_backward(float* dlogits, const float* dw, const float* dprobs, const float* probs,
                          const int32_t* idx, const float* w, idx_t M, idx_t E, idx_t K, bool normalize_topk,
                          cudaStream_t stream) {
  check_sizes("router_topk_backward", M, E, K);
  if (M == 0) return;
  topk_bwd_kernel<<<grid_1d(M, kThreads, idx_t(1) << 30), kThreads, 0, stream>>>(dlogits, dw, dprobs, probs, idx, w,
                                                                                 M, E, K, normalize_topk);
  CUDA_CHECK_LAUNCH("topk_bwd_kernel");
}

void router_aux_loss_forward(double* loss, double* load, const float* probs, const int32_t* idx, idx_t M, idx_t E,
                             idx_t K, double coef, cudaStream_t stream) {
  check_sizes("router_aux_loss_forward", M, E, K);
  if (M == 0) return;
  const double* f = expert_shares(probs, idx, M, E, K, stream);
  aux_final_kernel<<<1, 1, 0, stream>>>(loss, load, f, f + E, M, E, coef);
  CUDA_CHECK_LAUNCH("aux_final_kernel");
}

void router_aux_loss_backward(float* dprobs, double dloss, const int32_t* idx, idx_t M, idx_t E, idx_t K,
                              double coef, cudaStream_t stream) {
  check_sizes("router_aux_loss_backward", M, E, K);
  if (M == 0) return;
  const double* f = expert_shares(nullptr, idx, M, E, K, stream);
  aux_bwd_kernel<<<grid_1d(M * E, kThreads), kThreads, 0, stream>>>(dprobs, f, dloss * coef * double(E) / double(M),
                                                                    M, E);
  CUDA_CHECK_LAUNCH("aux_bwd_kernel");
}

void router_z_loss_forward(double* loss, const float* logits, idx_t M, idx_t E, double coef, cudaStream_t stream) {
  CHECK(M >= 0 && E >= 1, "router_z_loss_forward: need M >= 0, E >= 1, found M=", M, " E=", E);
  if (M == 0) return;
  double* sq = static_cast<double*>(workspace(size_t(M) * sizeof(double), stream));
  z_rows_kernel<<<grid_1d(M, kThreads, idx_t(1) << 30), kThreads, 0, stream>>>(sq, logits, M, E);
  CUDA_CHECK_LAUNCH("z_rows_kernel");
  z_final_kernel<<<1, kThreads, 0, stream>>>(loss, sq, M, coef);
  CUDA_CHECK_LAUNCH("z_final_kernel");
}

void router_z_loss_backward(float* dlogits, double dloss, const float* logits, idx_t M, idx_t E, double coef,
                            cudaStream_t stream) {
  CHECK(M >= 0 && E >= 1, "router_z_loss_backward: need M >= 0, E >= 1, found M=", M, " E=", E);
  if (M == 0) return;
  z_bwd_kernel<<<grid_1d(M, kThreads, idx_t(1) << 30), kThreads, 0, stream>>>(dlogits, logits,
                                                                              dloss * coef * 2.0 / double(M), M, E);
  CUDA_CHECK_LAUNCH("z_bwd_kernel");
}

}  // namespace moessm::cuda
