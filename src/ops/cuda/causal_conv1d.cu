// CUDA causal depthwise conv1d (+ SiLU), forward and backward (contract in ops/causal_conv1d.h).
// A thread owns one channel of one batch row over a segment of kSeg time steps and keeps the
// last Kc inputs in registers (Kc is a template parameter, 1..8). The new carried state is
// written by a second small kernel after the main one, so state_out may alias state_in (the
// main kernel's readers of state_in are ordered before it). Backward recomputes the
// pre-activation, emits dx as soon as the Kc later dpre values are known, and writes per
// (b, segment) partials of dw / dbias that conv_reduce sums in (b, segment) order.
// Packed rows (seq_idx): each thread also tracks run, how many of the current output's taps lie
// in its document (as doc_runs in the CPU reference): tap j is read iff j >= Kc - run. A segment
// finds the run of its first step by looking back at most Kc tokens. Without seq_idx run stays
// Kc and every tap is read, as before.
#include "ops/causal_conv1d.h"
#include "ops/cuda/common.cuh"

namespace moessm::cuda {

namespace {

constexpr int kSeg = 64;
constexpr int kThreads = 128;

// The run after token t given the run after t-1 (the carried state counts as the first
// document's, so the run before token 0 is KC); seq is the row's [T] document indices.
template <int KC>
__device__ __forceinline__ int next_run(const int32_t* seq, idx_t t, int r) {
  return (t > 0 && seq[t] != seq[t - 1]) ? 1 : min(KC, r + 1);
}
// The run after token t0-1 (KC for t0 == 0): walking the last KC tokens fixes it whatever it was
// before them (a run is capped at KC).
template <int KC>
__device__ __forceinline__ int run_before(const int32_t* seq, idx_t t0) {
  int r = KC;
  if (seq)
    for (idx_t t = t0 > KC ? t0 - KC : 0; t < t0; ++t) r = next_run<KC>(seq, t, r);
  return r;
}

template <typename T>
__device__ __forceinline__ float x_at(const T* xb, idx_t x_ld, const T* sb, int S, idx_t t, idx_t c) {
  if (t >= 0) return to_f32(xb[t * x_ld + c]);
  return sb ? to_f32(sb[c * S + (S + t)]) : 0.f;
}

template <typename T, int KC>
__global__ void __launch_bounds__(kThreads)
conv_fwd_kernel(T* out, idx_t out_ld, const T* x, idx_t x_ld, const T* state_in, const int32_t* seq_idx,
                const float* w, const float* bias, idx_t T_, idx_t Di, bool silu) {
  const idx_t c = idx_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= Di) return;
  const idx_t b = blockIdx.z, t0 = idx_t(blockIdx.y) * kSeg;
  const idx_t t1 = min(T_, t0 + kSeg);
  const T* xb = x + b * T_ * x_ld;
  const T* sb = state_in ? state_in + b * Di * (KC - 1) : nullptr;
  const int32_t* seq = seq_idx ? seq_idx + b * T_ : nullptr;
  float wr[KC], win[KC];
#pragma unroll
  for (int j = 0; j < KC; ++j) wr[j] = w[c * KC + j];
  const float bc = bias ? bias[c] : 0.f;
#pragma unroll
  for (int j = 1; j < KC; ++j) win[j] = x_at(xb, x_ld, sb, KC - 1, t0 - KC + j, c);
  int run = run_before<KC>(seq, t0);
  T* ob = out + b * T_ * out_ld;
  for (idx_t t = t0; t < t1; ++t) {
#pragma unroll
    for (int j = 0; j + 1 < KC; ++j) win[j] = win[j + 1];
    win[KC - 1] = to_f32(xb[t * x_ld + c]);
    if (seq) run = next_run<KC>(seq, t, run);
    float acc = bc;
#pragma unroll
    for (int j = 0; j < KC; ++j)
      if (j >= KC - run) acc = fmaf(wr[j], win[j], acc);
    ob[t * out_ld + c] = from_f32<T>(silu ? silu_f(acc) : acc);
  }
}

// state_out[b, c, j] = x[T-S+j] (from state_in when T-S+j < 0; 0 when it lies before the last
// document's start); one thread per (b, c).
template <typename T>
__global__ void conv_state_kernel(T* state_out, const T* x, idx_t x_ld, const T* state_in, const int32_t* seq_idx,
                                  idx_t B, idx_t T_, idx_t Di, int S) {
  const idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (e >= B * Di) return;
  const idx_t b = e / Di, c = e % Di;
  const T* xb = x + b * T_ * x_ld;
  const T* sb = state_in ? state_in + b * Di * S : nullptr;
  // Tokens of the last document among the last S + 1 (the carried ones count as the first
  // document's): the run of the conv reference with cap S + 1 = Kc (S <= 7).
  int run = S + 1;
  if (seq_idx) {
    const int32_t* seq = seq_idx + b * T_;
    for (idx_t t = T_ > S + 1 ? T_ - S - 1 : 0; t < T_; ++t)
      run = (t > 0 && seq[t] != seq[t - 1]) ? 1 : min(S + 1, run + 1);
  }
  T tail[8];
  for (int j = 0; j < S; ++j) {
    const idx_t t = T_ - S + j;
    if (S - 1 - j >= run) tail[j] = from_f32<T>(0.f);
    else tail[j] = t >= 0 ? xb[t * x_ld + c] : (sb ? sb[c * S + (S + t)] : from_f32<T>(0.f));
  }
  for (int j = 0; j < S; ++j) state_out[b * Di * S + c * S + j] = tail[j];
}

template <typename T, int KC>
__global__ void __launch_bounds__(kThreads)
conv_bwd_kernel(T* dx, idx_t dx_ld, float* part, const T* dout, idx_t dout_ld, const T* x, idx_t x_ld,
                const T* state_in, const int32_t* seq_idx, const float* w, const float* bias, idx_t T_, idx_t Di,
                bool silu) {
  const idx_t c = idx_t(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= Di) return;
  const idx_t b = blockIdx.z, seg = blockIdx.y, t0 = seg * kSeg;
  const idx_t t1 = min(T_, t0 + kSeg);
  const T* xb = x + b * T_ * x_ld;
  const T* gb = dout + b * T_ * dout_ld;
  const T* sb = state_in ? state_in + b * Di * (KC - 1) : nullptr;
  const int32_t* seq = seq_idx ? seq_idx + b * T_ : nullptr;
  // dring: dpre of the last KC outputs, rring: their runs (which taps each output read)
  float wr[KC], win[KC], dring[KC], dw[KC];
  int rring[KC];
#pragma unroll
  for (int j = 0; j < KC; ++j) {
    wr[j] = w[c * KC + j];
    dring[j] = 0.f;
    dw[j] = 0.f;
    rring[j] = KC;
  }
  int run = run_before<KC>(seq, t0);
  const float bc = bias ? bias[c] : 0.f;
  float db = 0.f;
#pragma unroll
  for (int j = 1; j < KC; ++j) win[j] = x_at(xb, x_ld, sb, KC - 1, t0 - KC + j, c);
  for (idx_t s = t0; s < t1 + KC - 1; ++s) {
    float dp = 0.f;
    if (s < T_) {
#pragma unroll
      for (int j = 0; j + 1 < KC; ++j) win[j] = win[j + 1];
      win[KC - 1] = to_f32(xb[s * x_ld + c]);
      if (seq) run = next_run<KC>(seq, s, run);
      dp = to_f32(gb[s * dout_ld + c]);
      if (silu) {
        float pre = bc;
#pragma unroll
        for (int j = 0; j < KC; ++j)
          if (j >= KC - run) pre = fmaf(wr[j], win[j], pre);
        dp *= silu_grad_f(pre);
      }
      if (s < t1) {
        db += dp;
#pragma unroll
        for (int j = 0; j < KC; ++j)
          if (j >= KC - run) dw[j] = fmaf(dp, win[j], dw[j]);
      }
    }
#pragma unroll
    for (int j = 0; j + 1 < KC; ++j) {
      dring[j] = dring[j + 1];
      rring[j] = rring[j + 1];
    }
    dring[KC - 1] = dp;
    rring[KC - 1] = run;  // past the row (dp = 0) the value does not matter
    const idx_t t = s - (KC - 1);
    if (dx && t >= t0) {
      // x[t] fed output s - j through tap j, if that output read it
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < KC; ++j)
        if (j >= KC - rring[KC - 1 - j]) acc = fmaf(wr[j], dring[KC - 1 - j], acc);
      dx[b * T_ * dx_ld + t * dx_ld + c] = from_f32<T>(acc);
    }
  }
  const idx_t nseg = gridDim.y;
  float* pp = part + ((b * nseg + seg) * Di + c) * (KC + 1);
#pragma unroll
  for (int j = 0; j < KC; ++j) pp[j] = dw[j];
  pp[KC] = db;
}

// dw[c, j] += Σ_{b,seg} part[b,seg,c,j] in order; dbias[c] likewise from slot Kc.
__global__ void conv_reduce(float* dw, float* dbias, const float* part, idx_t nparts, idx_t Di, int Kc) {
  const idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (e >= Di * (Kc + 1)) return;
  const idx_t c = e / (Kc + 1);
  const int j = int(e % (Kc + 1));
  float s = 0.f;
  for (idx_t q = 0; q < nparts; ++q) s += part[(q * Di + c) * (Kc + 1) + j];
  if (j < Kc) {
    if (dw) dw[c * Kc + j] += s;
  } else if (dbias) {
    dbias[c] += s;
  }
}

#define MOESSM_CONV_DISPATCH(KERNEL, ...)                                        \
  switch (Kc) {                                                                  \
    case 1: KERNEL<T, 1><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 2: KERNEL<T, 2><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 3: KERNEL<T, 3><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 4: KERNEL<T, 4><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 5: KERNEL<T, 5><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 6: KERNEL<T, 6><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 7: KERNEL<T, 7><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
    case 8: KERNEL<T, 8><<<grid, kThreads, 0, stream>>>(__VA_ARGS__); break;     \
  }

void check_sizes(idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t x_ld, idx_t o_ld) {
  CHECK(Kc >= 1 && Kc <= 8, "cuda causal_conv1d: kernel width Kc=", Kc, " outside the supported 1..8");
  CHECK(B > 0 && T_ > 0 && Di > 0, "cuda causal_conv1d: sizes B=", B, " T=", T_, " Di=", Di, " must be positive");
  CHECK(x_ld >= Di && o_ld >= Di, "cuda causal_conv1d: token strides ", x_ld, "/", o_ld, " must be >= Di=", Di);
  CHECK(B <= 65535, "cuda causal_conv1d: batch ", B, " exceeds 65535");
}

}  // namespace

template <typename T>
void causal_conv1d_forward(T* out, idx_t out_ld, T* state_out, const T* x, idx_t x_ld,
                           const T* state_in, const int32_t* seq_idx, const float* w,
                           const float* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu,
                           cudaStream_t stream) {
  check_sizes(B, T_, Di, Kc, x_ld, out_ld);
  const dim3 grid{unsigned((Di + kThreads - 1) / kThreads), unsigned((T_ + kSeg - 1) / kSeg), unsigned(B)};
  MOESSM_CONV_DISPATCH(conv_fwd_kernel, out, out_ld, x, x_ld, state_in, seq_idx, w, bias, T_, Di, silu);
  CUDA_CHECK_LAUNCH("conv_fwd_kernel");
  if (state_out) causal_conv1d_state_update<T>(state_out, x, x_ld, state_in, seq_idx, B, T_, Di, Kc, stream);
}

template <typename T>
void causal_conv1d_state_update(T* state_out, const T* x, idx_t x_ld, const T* state_in,
                                const int32_t* seq_idx, idx_t B, idx_t T_, idx_t Di, idx_t Kc,
                                cudaStream_t stream) {
  CHECK(Kc >= 1 && Kc <= 8, "causal_conv1d_state_update: Kc=", Kc, " outside 1..8 (the CUDA conv limit)");
  if (Kc == 1 || B * Di == 0) return;
  conv_state_kernel<T><<<grid_1d(B * Di, 256), 256, 0, stream>>>(state_out, x, x_ld, state_in, seq_idx, B, T_, Di,
                                                                 int(Kc - 1));
  CUDA_CHECK_LAUNCH("conv_state_kernel");
}

template <typename T>
void causal_conv1d_backward(T* dx, idx_t dx_ld, float* dw, float* dbias, const T* dout,
                            idx_t dout_ld, const T* x, idx_t x_ld, const T* state_in,
                            const int32_t* seq_idx, const float* w, const float* bias, idx_t B,
                            idx_t T_, idx_t Di, idx_t Kc, bool silu, cudaStream_t stream) {
  check_sizes(B, T_, Di, Kc, x_ld, dout_ld);
  CHECK(!dx || dx_ld >= Di, "cuda causal_conv1d_backward: dx_ld=", dx_ld, " must be >= Di=", Di);
  const idx_t nseg = (T_ + kSeg - 1) / kSeg;
  float* part = static_cast<float*>(workspace(size_t(B * nseg * Di * (Kc + 1)) * sizeof(float), stream));
  const dim3 grid{unsigned((Di + kThreads - 1) / kThreads), unsigned(nseg), unsigned(B)};
  MOESSM_CONV_DISPATCH(conv_bwd_kernel, dx, dx_ld, part, dout, dout_ld, x, x_ld, state_in, seq_idx, w, bias, T_, Di,
                       silu);
  CUDA_CHECK_LAUNCH("conv_bwd_kernel");
  if (dw || dbias) {
    conv_reduce<<<grid_1d(Di * (Kc + 1), 256), 256, 0, stream>>>(dw, dbias, part, B * nseg, Di, int(Kc));
    CUDA_CHECK_LAUNCH("conv_reduce");
  }
}

#define INSTANTIATE(T)                                                                                  \
  template void causal_conv1d_forward<T>(T*, idx_t, T*, const T*, idx_t, const T*, const int32_t*,      \
                                         const float*, const float*, idx_t, idx_t, idx_t, idx_t, bool,  \
                                         cudaStream_t);                                                 \
  template void causal_conv1d_backward<T>(T*, idx_t, float*, float*, const T*, idx_t, const T*, idx_t,  \
                                          const T*, const int32_t*, const float*, const float*, idx_t,  \
                                          idx_t, idx_t, idx_t, bool, cudaStream_t);                     \
  template void causal_conv1d_state_update<T>(T*, const T*, idx_t, const T*, const int32_t*, idx_t, idx_t, \
                                              idx_t, idx_t, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace moessm::cuda
