// CUDA expert_conv1d, forward and backward (contract in ops/expert_conv1d.h).
// Every kernel first stages, per token of its time segment, the token's chosen experts sorted
// increasingly (duplicates and indices outside [0, E) dropped, -1 padded) in shared memory, so
// sums over experts run in increasing e whatever order router_topk wrote them in.
//   forward : a thread owns one channel of one batch row over kSeg time steps, keeps the last Kc
//             inputs in registers and sums its token's experts' convs (no workspace: capturable).
//             state_out is written by a second small kernel, so it may alias state_in.
//   dx      : the same thread layout walks the segment plus Kc-1 steps; per step it forms
//             g = dout · silu'(pre) and Σ_{e ∈ S} w_e[c, :], and emits dx once its Kc later
//             contributions are in (a register ring; dx assigns).
//   dw/dbias: block (channel tile, expert e, token chunk) sums g · x-window over the chunk's
//             tokens that chose e, in token order, into partials; a second pass sums the chunks
//             in order and adds to dw / dbias only for experts some token chose (no atomics;
//             the chunking depends only on the sizes: bitwise repeatable).
#include <cuda_bf16.h>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/causal_conv1d.h"
#include "ops/expert_conv1d.h"
#include "ops/router_topk.h"

namespace moessm::cuda {

namespace {

constexpr int kSeg = 64;
constexpr int kThreads = 128;
constexpr idx_t kChunk = 256;                     // tokens per dw partial (grows when capped)
constexpr idx_t kMaxPartialFloats = idx_t(1) << 24;  // 64 MiB of dw / dbias partials at most

template <typename T>
__device__ __forceinline__ float x_at(const T* xb, idx_t x_ld, const T* sb, int S, idx_t t, idx_t c) {
  if (t >= 0) return to_f32(xb[t * x_ld + c]);
  return sb ? to_f32(sb[c * S + (S + t)]) : 0.f;
}

// sets[i, 0..K-1] = the chosen experts of token i (i < n), increasing, then -1.
__device__ void load_sets(int32_t* sets, const int32_t* idx, idx_t n, int K, idx_t E) {
  for (idx_t i = threadIdx.x; i < n; i += blockDim.x) {
    int32_t* s = sets + i * K;
    const int32_t* src = idx + i * K;
    int cnt = 0;
    for (int k = 0; k < K; ++k) {
      const int32_t v = src[k];
      if (v < 0 || v >= E) continue;
      bool dup = false;
      for (int q = 0; q < cnt; ++q) dup |= s[q] == v;
      if (dup) continue;
      int p = cnt++;
      for (; p > 0 && s[p - 1] > v; --p) s[p] = s[p - 1];
      s[p] = v;
    }
    for (int k = cnt; k < K; ++k) s[k] = -1;
  }
}

template <typename T, int KC>
__global__ void __launch_bounds__(kThreads)
xconv_fwd_kernel(T* out, idx_t out_ld, T* pre, const T* x, idx_t x_ld, const T* state_in, const int32_t* idx,
                 const float* w, const float* bias, idx_t T_, idx_t Di, idx_t E, int K) {
  extern __shared__ int32_t sets[];
  const idx_t b = blockIdx.z, t0 = idx_t(blockIdx.y) * kSeg;
  const idx_t t1 = min(T_, t0 + kSeg);
  load_sets(sets, idx + (b * T_ + t0) * K, t1 - t0, K, E);
  __syncthreads();
  const idx_t c = idx_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= Di) return;
  const T* xb = x + b * T_ * x_ld;
  const T* sb = state_in ? state_in + b * Di * (KC - 1) : nullptr;
  float win[KC];
#pragma unroll
  for (int j = 1; j < KC; ++j) win[j] = x_at(xb, x_ld, sb, KC - 1, t0 - KC + j, c);
  for (idx_t t = t0; t < t1; ++t) {
#pragma unroll
    for (int j = 0; j + 1 < KC; ++j) win[j] = win[j + 1];
    win[KC - 1] = to_f32(xb[t * x_ld + c]);
    const int32_t* st = sets + (t - t0) * K;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) {
      const int32_t e = st[k];
      if (e < 0) break;
      const idx_t ec = idx_t(e) * Di + c;
      const float* we = w + ec * KC;
      float v = bias ? bias[ec] : 0.f;
#pragma unroll
      for (int j = 0; j < KC; ++j) v = fmaf(we[j], win[j], v);
      acc += v;
    }
    const idx_t m = b * T_ + t;
    pre[m * Di + c] = from_f32<T>(acc);
    out[m * out_ld + c] = from_f32<T>(silu_f(acc));
  }
}

template <typename T, int KC>
__global__ void __launch_bounds__(kThreads)
xconv_dx_kernel(T* dx, idx_t dx_ld, const T* dout, idx_t dout_ld, const T* pre, const int32_t* idx, const float* w,
                idx_t T_, idx_t Di, idx_t E, int K) {
  extern __shared__ int32_t sets[];
  const idx_t b = blockIdx.z, t0 = idx_t(blockIdx.y) * kSeg;
  const idx_t t1 = min(T_, t0 + kSeg), s1 = min(T_, t1 + KC - 1);
  load_sets(sets, idx + (b * T_ + t0) * K, s1 - t0, K, E);
  __syncthreads();
  const idx_t c = idx_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= Di) return;
  float r[KC];  // r[j]: dx of token s-(KC-1)+j, contributions so far
#pragma unroll
  for (int j = 0; j < KC; ++j) r[j] = 0.f;
  for (idx_t s = t0; s < t1 + KC - 1; ++s) {
    if (s < s1) {
      const idx_t m = b * T_ + s;
      const float g = to_f32(dout[m * dout_ld + c]) * silu_grad_f(to_f32(pre[m * Di + c]));
      const int32_t* st = sets + (s - t0) * K;
      float ws[KC];
#pragma unroll
      for (int j = 0; j < KC; ++j) ws[j] = 0.f;
      for (int k = 0; k < K; ++k) {
        const int32_t e = st[k];
        if (e < 0) break;
        const float* we = w + (idx_t(e) * Di + c) * KC;
#pragma unroll
        for (int j = 0; j < KC; ++j) ws[j] += we[j];
      }
#pragma unroll
      for (int j = 0; j < KC; ++j) r[j] = fmaf(g, ws[j], r[j]);
    }
    const idx_t t = s - (KC - 1);
    if (t >= t0) dx[(b * T_ + t) * dx_ld + c] = from_f32<T>(r[0]);
#pragma unroll
    for (int j = 0; j + 1 < KC; ++j) r[j] = r[j + 1];
    r[KC - 1] = 0.f;
  }
}

// part[q, e, c, 0..KC-1] = Σ g·x-window, part[q, e, c, KC] = Σ g over chunk q's tokens that chose
// e (token order); cnt[q, e] = how many tokens of chunk q chose e.
template <typename T, int KC>
__global__ void __launch_bounds__(kThreads)
xconv_dw_kernel(float* part, int32_t* cnt, const T* dout, idx_t dout_ld, const T* x, idx_t x_ld,
                const T* state_in, const T* pre, const int32_t* idx, idx_t M, idx_t T_, idx_t Di, idx_t E, int K,
                idx_t chunk) {
  const int32_t e = int32_t(blockIdx.y);
  const idx_t q = blockIdx.z, m0 = q * chunk, m1 = min(M, m0 + chunk);
  const idx_t c = idx_t(blockIdx.x) * kThreads + threadIdx.x;
  float dw[KC], db = 0.f;
#pragma unroll
  for (int j = 0; j < KC; ++j) dw[j] = 0.f;
  int n = 0;
  for (idx_t m = m0; m < m1; ++m) {
    bool on = false;  // the same for the whole block: no divergence
    for (int k = 0; k < K; ++k) on |= idx[m * K + k] == e;
    if (!on) continue;
    ++n;
    if (c >= Di) continue;
    const float g = to_f32(dout[m * dout_ld + c]) * silu_grad_f(to_f32(pre[m * Di + c]));
    const idx_t b = m / T_, t = m % T_;
    const T* xb = x + b * T_ * x_ld;
    const T* sb = state_in ? state_in + b * Di * (KC - 1) : nullptr;
    db += g;
#pragma unroll
    for (int j = 0; j < KC; ++j) dw[j] = fmaf(g, x_at(xb, x_ld, sb, KC - 1, t - KC + 1 + j, c), dw[j]);
  }
  if (c < Di) {
    float* pp = part + ((q * E + e) * Di + c) * (KC + 1);
#pragma unroll
    for (int j = 0; j < KC; ++j) pp[j] = dw[j];
    pp[KC] = db;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) cnt[q * E + e] = n;
}

// dw[e, c, j] += Σ_q part[q, e, c, j] in chunk order (dbias from slot Kc), for experts chosen at
// least once; the others stay untouched.
__global__ void xconv_reduce(float* dw, float* dbias, const float* part, const int32_t* cnt, idx_t nq, idx_t E,
                             idx_t Di, int Kc) {
  const idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (i >= E * Di * (Kc + 1)) return;
  const idx_t e = i / (Di * (Kc + 1)), ec = i / (Kc + 1);  // ec = e·Di + c
  const int j = int(i % (Kc + 1));
  bool chosen = false;
  for (idx_t q = 0; q < nq && !chosen; ++q) chosen = cnt[q * E + e] > 0;
  if (!chosen) return;
  const idx_t stride = E * Di * (Kc + 1);
  float s = 0.f;
  for (idx_t q = 0; q < nq; ++q) s += part[q * stride + i];
  if (j < Kc) {
    if (dw) dw[ec * Kc + j] += s;
  } else if (dbias) {
    dbias[ec] += s;
  }
}

#define MOESSM_XCONV_DISPATCH(KERNEL, SMEM, ...)                                         \
  switch (Kc) {                                                                          \
    case 1: KERNEL<T, 1><<<grid, kThreads, SMEM(1), stream>>>(__VA_ARGS__); break;       \
    case 2: KERNEL<T, 2><<<grid, kThreads, SMEM(2), stream>>>(__VA_ARGS__); break;       \
    case 3: KERNEL<T, 3><<<grid, kThreads, SMEM(3), stream>>>(__VA_ARGS__); break;       \
    case 4: KERNEL<T, 4><<<grid, kThreads, SMEM(4), stream>>>(__VA_ARGS__); break;       \
    case 5: KERNEL<T, 5><<<grid, kThreads, SMEM(5), stream>>>(__VA_ARGS__); break;       \
    case 6: KERNEL<T, 6><<<grid, kThreads, SMEM(6), stream>>>(__VA_ARGS__); break;       \
    case 7: KERNEL<T, 7><<<grid, kThreads, SMEM(7), stream>>>(__VA_ARGS__); break;       \
    case 8: KERNEL<T, 8><<<grid, kThreads, SMEM(8), stream>>>(__VA_ARGS__); break;       \
  }
static_assert(kExpertConvMaxKc == 8, "MOESSM_XCONV_DISPATCH lists the widths 1..kExpertConvMaxKc");

void check_sizes(const char* op, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K, idx_t x_ld, idx_t o_ld,
                 const char* o_name) {
  CHECK(Kc >= 1 && Kc <= kExpertConvMaxKc, "cuda ", op, ": kernel width Kc=", Kc, " outside the supported 1..",
        kExpertConvMaxKc, " (kExpertConvMaxKc)");
  CHECK(E >= 1 && K >= 1 && K <= E, "cuda ", op, ": need 1 <= K <= E, found E=", E, " K=", K);
  CHECK(K <= kRouterMaxTopK, "cuda ", op, ": K=", K, " exceeds kRouterMaxTopK=", kRouterMaxTopK);
  CHECK(E <= 65535, "cuda ", op, ": at most 65535 experts, found E=", E);
  CHECK(B > 0 && T_ > 0 && Di > 0, "cuda ", op, ": sizes B=", B, " T=", T_, " Di=", Di, " must be positive");
  CHECK(B <= 65535, "cuda ", op, ": batch B=", B, " exceeds 65535");
  CHECK((T_ + kSeg - 1) / kSeg <= 65535, "cuda ", op, ": T=", T_, " exceeds ", idx_t(65535) * kSeg);
  CHECK(x_ld >= Di, "cuda ", op, ": x_ld=", x_ld, " must be >= Di=", Di);
  CHECK(o_ld >= Di, "cuda ", op, ": ", o_name, "=", o_ld, " must be >= Di=", Di);
}

}  // namespace

template <typename T>
void expert_conv1d_forward(T* out, idx_t out_ld, T* pre, T* state_out, T* /*work*/, const T* x, idx_t x_ld,
                           const T* state_in, const int32_t* idx, const float* w, const float* bias, idx_t B,
                           idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K, cudaStream_t stream) {
  check_sizes("expert_conv1d_forward", B, T_, Di, Kc, E, K, x_ld, out_ld, "out_ld");
  const dim3 grid{unsigned((Di + kThreads - 1) / kThreads), unsigned((T_ + kSeg - 1) / kSeg), unsigned(B)};
#define MOESSM_XCONV_FWD_SMEM(KC) size_t(kSeg * K) * sizeof(int32_t)
  MOESSM_XCONV_DISPATCH(xconv_fwd_kernel, MOESSM_XCONV_FWD_SMEM, out, out_ld, pre, x, x_ld, state_in, idx, w, bias,
                        T_, Di, E, int(K));
#undef MOESSM_XCONV_FWD_SMEM
  CUDA_CHECK_LAUNCH("xconv_fwd_kernel");
  if (state_out) causal_conv1d_state_update<T>(state_out, x, x_ld, state_in, nullptr, B, T_, Di, Kc, stream);
}

template <typename T>
void expert_conv1d_backward(T* dx, idx_t dx_ld, float* dw, float* dbias, T* /*dpre_work*/, T* /*dx_work*/,
                            const T* dout, idx_t dout_ld, const T* x, idx_t x_ld, const T* state_in, const T* pre,
                            const int32_t* idx, const float* w, const float* bias, idx_t B, idx_t T_, idx_t Di,
                            idx_t Kc, idx_t E, idx_t K, cudaStream_t stream) {
  check_sizes("expert_conv1d_backward", B, T_, Di, Kc, E, K, x_ld, dout_ld, "dout_ld");
  CHECK(!dx || dx_ld >= Di, "cuda expert_conv1d_backward: dx_ld=", dx_ld, " must be >= Di=", Di);
  if (dx) {
    const dim3 grid{unsigned((Di + kThreads - 1) / kThreads), unsigned((T_ + kSeg - 1) / kSeg), unsigned(B)};
#define MOESSM_XCONV_DX_SMEM(KC) size_t((kSeg + KC - 1) * K) * sizeof(int32_t)
    MOESSM_XCONV_DISPATCH(xconv_dx_kernel, MOESSM_XCONV_DX_SMEM, dx, dx_ld, dout, dout_ld, pre, idx, w, T_, Di, E,
                          int(K));
#undef MOESSM_XCONV_DX_SMEM
    CUDA_CHECK_LAUNCH("xconv_dx_kernel");
  }
  if (!dw && !dbias) return;
  // Token chunks for the partials: kChunk tokens each, fewer and longer chunks when the partials
  // [nq, E, Di, Kc+1] would exceed kMaxPartialFloats (a function of the sizes only).
  const idx_t M = B * T_, per_chunk = E * Di * (Kc + 1);
  idx_t nq = (M + kChunk - 1) / kChunk;
  const idx_t cap = kMaxPartialFloats / per_chunk > 0 ? kMaxPartialFloats / per_chunk : 1;
  if (nq > cap) nq = cap;
  if (nq > 65535) nq = 65535;
  const idx_t chunk = (M + nq - 1) / nq;
  nq = (M + chunk - 1) / chunk;
  const size_t part_bytes = size_t(nq * per_chunk) * sizeof(float);
  char* ws = static_cast<char*>(workspace(part_bytes + size_t(nq * E) * sizeof(int32_t), stream));
  float* part = reinterpret_cast<float*>(ws);
  int32_t* cnt = reinterpret_cast<int32_t*>(ws + part_bytes);
  {
    const dim3 grid{unsigned((Di + kThreads - 1) / kThreads), unsigned(E), unsigned(nq)};
#define MOESSM_XCONV_NO_SMEM(KC) 0
    MOESSM_XCONV_DISPATCH(xconv_dw_kernel, MOESSM_XCONV_NO_SMEM, part, cnt, dout, dout_ld, x, x_ld, state_in, pre,
                          idx, M, T_, Di, E, int(K), chunk);
#undef MOESSM_XCONV_NO_SMEM
    CUDA_CHECK_LAUNCH("xconv_dw_kernel");
  }
  xconv_reduce<<<grid_1d(per_chunk, 256, idx_t(1) << 30), 256, 0, stream>>>(dw, dbias, part, cnt, nq, E, Di,
                                                                             int(Kc));
  CUDA_CHECK_LAUNCH("xconv_reduce");
}

#define MOESSM_CUDA_EXPERT_CONV(T)                                                                              \
  template void expert_conv1d_forward<T>(T*, idx_t, T*, T*, T*, const T*, idx_t, const T*, const int32_t*,      \
                                         const float*, const float*, idx_t, idx_t, idx_t, idx_t, idx_t, idx_t,  \
                                         cudaStream_t);                                                         \
  template void expert_conv1d_backward<T>(T*, idx_t, float*, float*, T*, T*, const T*, idx_t, const T*, idx_t,  \
                                          const T*, const T*, const int32_t*, const float*, const float*, idx_t, \
                                          idx_t, idx_t, idx_t, idx_t, idx_t, cudaStream_t);
MOESSM_CUDA_EXPERT_CONV(float)
MOESSM_CUDA_EXPERT_CONV(bf16)

}  // namespace moessm::cuda
