// selective_scan: the Mamba-1 selective SSM over time, with Δ-bias + softplus, the D skip and
// the SiLU(z) gate fused in (DESIGN.md §1):
//   Δ[t,c]   = softplus(delta[t,c] + delta_bias[c])          (threshold 20: v > 20 → v)
//              or, with delta_softplus = false, delta[t,c] + delta_bias[c] as given (the caller
//              guarantees Δ > 0; Swimba's mix=post passes a mixture of softplus values)
//   h[t,c,n] = exp(Δ[t,c]·A[c,n]) · h[t-1,c,n] + Δ[t,c]·Bm[t,n]·u[t,c]   h[-1] = h0 (or 0)
//   y[t,c]   = Σ_n Cm[t,n]·h[t,c,n] + D[c]·u[t,c]
//   out      = y ⊙ silu(z)   (z optional)
// Packed documents (optional seq_idx [B,T], rule in ops/op_common.h): at a document start t
// (t > 0, seq_idx[t] != seq_idx[t-1]) the state entering t is 0, i.e. the decay exp(Δ[t]·A) is
// taken as 0: h[t] = Δ[t]·Bm[t]·u[t]. Backward: no gradient flows through that step to earlier
// tokens (nor to h0), and the decay gets none (dA, dΔ have no term from h[t-1]). h0 feeds the
// tokens before the row's first document start only; h_last is the last document's state.
// Chunking: the state entering every chunk of kScanChunk (16) tokens is saved (chunk_states,
// fp32: B·T/16·Di·N·4 bytes per layer) so the backward pass recomputes states inside a chunk
// instead of storing all T·Di·N of them. 16 rather than 64: the CUDA backward then recomputes
// each chunk once instead of twice and needs fewer registers (H200, B 8 T 2048 N 16: backward
// 3.25 against 3.7 ms, for 4x the chunk-state memory). With
// seq_idx, a chunk whose first token starts a document saves the state that token sees: 0.
// The state is kept in the accumulation type (fp32 for float, fp64 for the double reference).
// Reductions over channels (dB, dC) are done in a fixed order: results do not depend on the
// thread count.
#pragma once
#include "ops/op_common.h"

namespace moessm {

// The one chunk length shared by host and device code. MOESSM_SCAN_CHUNK (a multiple of 16)
// overrides it for kernel-lab builds (bench_scan measures the trade of memory for recompute).
#ifndef MOESSM_SCAN_CHUNK
#define MOESSM_SCAN_CHUNK 16
#endif
constexpr int kScanChunk = MOESSM_SCAN_CHUNK;
static_assert(kScanChunk >= 16 && kScanChunk % 16 == 0, "MOESSM_SCAN_CHUNK must be a multiple of 16");
inline idx_t scan_num_chunks(idx_t T) { return (T + kScanChunk - 1) / kScanChunk; }

// One plain struct of pointers and token strides, filled and validated in one place.
// Shapes: u, delta, z, out [B,T,Di]; Bm, Cm [B,T,N]; A [Di,N]; D, delta_bias [Di];
// h0, h_last [B,Di,N]; chunk_states [B, scan_num_chunks(T), Di, N]; seq_idx [B,T] (stride T).
template <typename T>
struct ScanParams {
  idx_t B = 0, T_ = 0, Di = 0, N = 0;
  const T* u = nullptr;      idx_t u_ld = 0;
  const T* delta = nullptr;  idx_t delta_ld = 0;
  const T* Bm = nullptr;     idx_t B_ld = 0;
  const T* Cm = nullptr;     idx_t C_ld = 0;
  const T* z = nullptr;      idx_t z_ld = 0;       // optional gate
  const T* A = nullptr;
  const T* D = nullptr;                            // optional
  const T* delta_bias = nullptr;                   // optional
  const T* h0 = nullptr;                           // optional initial state
  const int32_t* seq_idx = nullptr;                // optional document index (packed rows)
  bool delta_softplus = true;                      // apply softplus to delta + delta_bias
  // forward outputs
  T* out = nullptr;          idx_t out_ld = 0;
  T* h_last = nullptr;                             // optional final state (may alias h0)
  T* chunk_states = nullptr;                       // required for backward
  // optional [B,T,Di] (token stride Di): forward stores Δ here and backward reads it instead of
  // recomputing the softplus (saves two of its three evaluations per element)
  T* delta_saved = nullptr;
  void validate() const;                           // CHECKs sizes, strides and required pointers
};

// Gradients. dout is the gradient of `out`. du, ddelta, dB, dC, dz assign; dA, dD, ddelta_bias
// accumulate; dh0 (optional) assigns the gradient of the initial state; dh_last (optional input)
// is the gradient arriving at the final state.
template <typename T>
struct ScanGrads {
  const T* dout = nullptr;   idx_t dout_ld = 0;
  const T* dh_last = nullptr;
  T* du = nullptr;           idx_t du_ld = 0;
  T* ddelta = nullptr;       idx_t ddelta_ld = 0;
  T* dB = nullptr;           idx_t dB_ld = 0;
  T* dC = nullptr;           idx_t dC_ld = 0;
  T* dz = nullptr;           idx_t dz_ld = 0;      // required when z is given
  T* dA = nullptr;
  T* dD = nullptr;
  T* ddelta_bias = nullptr;
  T* dh0 = nullptr;
};

namespace cpu {
template <typename T> void selective_scan_forward(const ScanParams<T>& p);
template <typename T> void selective_scan_backward(const ScanGrads<T>& g, const ScanParams<T>& p);
}  // namespace cpu

}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {

// Device scan arguments: the same fields and meaning as ScanParams / ScanGrads, with the token
// streams (u, delta, Bm, Cm, z, out and du, ddelta, dB, dC, dz, dout) in Tin = float or
// __nv_bfloat16 and everything else in fp32: A, D, delta_bias, h0, h_last, chunk_states,
// dh_last, dh0 and the parameter gradients dA, dD, ddelta_bias (mamba_ssm's precision policy).
// All pointers are device pointers. The state is carried in fp32 registers.
// Supported: any B, T, Di >= 1 and 1 <= N <= 256 (a CHECK names the size beyond that).
// seq_idx (device pointer, [B,T] int32): packed documents as in ScanParams; a time segment
// holding a document start passes no state (nor dh) across it.
// Determinism: no float atomics; dB / dC are summed over channel blocks and dA / dD /
// ddelta_bias over the batch by ordered reduction kernels, so two runs are bitwise equal.
// Scratch for backward comes from the stream's workspace (ops/cuda/common.cuh).
template <typename Tin>
struct ScanParamsT {
  idx_t B = 0, T_ = 0, Di = 0, N = 0;
  const Tin* u = nullptr;      idx_t u_ld = 0;
  const Tin* delta = nullptr;  idx_t delta_ld = 0;
  const Tin* Bm = nullptr;     idx_t B_ld = 0;
  const Tin* Cm = nullptr;     idx_t C_ld = 0;
  const Tin* z = nullptr;      idx_t z_ld = 0;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  const float* h0 = nullptr;
  const int32_t* seq_idx = nullptr;                // [B,T] document index (see ScanParams)
  bool delta_softplus = true;
  Tin* out = nullptr;          idx_t out_ld = 0;
  float* h_last = nullptr;
  float* chunk_states = nullptr;                   // [B, scan_num_chunks(T), Di, N]
  void validate() const;
};
template <typename Tin>
struct ScanGradsT {
  const Tin* dout = nullptr;   idx_t dout_ld = 0;
  const float* dh_last = nullptr;
  Tin* du = nullptr;           idx_t du_ld = 0;
  Tin* ddelta = nullptr;       idx_t ddelta_ld = 0;
  Tin* dB = nullptr;           idx_t dB_ld = 0;
  Tin* dC = nullptr;           idx_t dC_ld = 0;
  Tin* dz = nullptr;           idx_t dz_ld = 0;
  float* dA = nullptr;
  float* dD = nullptr;
  float* ddelta_bias = nullptr;
  float* dh0 = nullptr;
};

template <typename Tin> void selective_scan_forward(const ScanParamsT<Tin>& p, cudaStream_t stream);
template <typename Tin>
void selective_scan_backward(const ScanGradsT<Tin>& g, const ScanParamsT<Tin>& p, cudaStream_t stream);
// The fp32 twins of the CPU functions, taking the reference structs as they are.
void selective_scan_forward(const ScanParams<float>& p, cudaStream_t stream);
void selective_scan_backward(const ScanGrads<float>& g, const ScanParams<float>& p, cudaStream_t stream);

// Kernel lab knob (benchmarks): states per thread, 0 = automatic choice (logged once).
void selective_scan_set_states_per_thread(int npt);
// Kernel lab knob: time segments run in parallel (0 = automatic: enough to fill the device once;
// 1 = the sequential scan). Results equal up to fp32 rounding; for fixed shapes, device and
// knob they are bitwise reproducible.
void selective_scan_set_segments(int segments);
// Test knob: bytes allowed for the backward's dB/dC partials per slab (0 = default 256 MiB).
void selective_scan_set_partial_budget(idx_t bytes);
const char* selective_scan_config_name(idx_t B, idx_t Di, idx_t N);

}  // namespace moessm::cuda
#endif
