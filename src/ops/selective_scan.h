// selective_scan: the Mamba-1 selective SSM over time, with Δ-bias + softplus, the D skip and
// the SiLU(z) gate fused in (DESIGN.md §1):
//   Δ[t,c]   = softplus(delta[t,c] + delta_bias[c])          (threshold 20: v > 20 → v)
//   h[t,c,n] = exp(Δ[t,c]·A[c,n]) · h[t-1,c,n] + Δ[t,c]·Bm[t,n]·u[t,c]   h[-1] = h0 (or 0)
//   y[t,c]   = Σ_n Cm[t,n]·h[t,c,n] + D[c]·u[t,c]
//   out      = y ⊙ silu(z)   (z optional)
// Chunking: the state entering every chunk of kScanChunk tokens is saved (chunk_states) so the
// backward pass recomputes states inside a chunk instead of storing all T·Di·N of them.
// The state is kept in the accumulation type (fp32 for float, fp64 for the double reference).
// Reductions over channels (dB, dC) are done in a fixed order: results do not depend on the
// thread count.
#pragma once
#include "ops/op_common.h"

namespace moessm {

// The one chunk length shared by host and device code.
constexpr int kScanChunk = 64;
inline idx_t scan_num_chunks(idx_t T) { return (T + kScanChunk - 1) / kScanChunk; }

// One plain struct of pointers and token strides, filled and validated in one place.
// Shapes: u, delta, z, out [B,T,Di]; Bm, Cm [B,T,N]; A [Di,N]; D, delta_bias [Di];
// h0, h_last [B,Di,N]; chunk_states [B, scan_num_chunks(T), Di, N].
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
  // forward outputs
  T* out = nullptr;          idx_t out_ld = 0;
  T* h_last = nullptr;                             // optional final state (may alias h0)
  T* chunk_states = nullptr;                       // required for backward
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
