// causal_conv1d: depthwise causal convolution over time, optionally followed by SiLU.
//   pre[b,t,c] = bias[c] + Σ_{j<Kc} w[c,j] · x[b, t-Kc+1+j, c]
//   out = silu(pre) when `silu`, else pre
// x[b, t<0, c] comes from state_in[b, c, Kc-1 + t] (the last Kc-1 inputs of the previous
// segment, oldest first), or 0 when state_in is nullptr. state_out (optional) receives the last
// Kc-1 inputs of this segment (taking state_in into account when T < Kc-1); it may alias state_in
// (the recurrent decode step).
// Packed documents (optional seq_idx [B,T], rule in ops/op_common.h): output t reads only the
// inputs of its own document, x[t'] of another document (t' < t across a document start) counts
// as 0; the carried state_in counts only for the tokens of the row's first document (before
// its first document start). state_out holds the last Kc-1 inputs of the row's LAST document,
// 0 where they lie before that document's start. Backward: no gradient crosses a start either.
// Shapes: x/out/dx [B,T,Di] with token strides; w [Di,Kc]; bias [Di]; state [B,Di,Kc-1];
// seq_idx [B,T] int32 (token stride T).
// Backward recomputes the pre-activation from x; dw and dbias accumulate; dx assigns.
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {

template <typename T>
void causal_conv1d_forward(T* out, idx_t out_ld, T* state_out, const T* x, idx_t x_ld,
                           const T* state_in, const int32_t* seq_idx, const T* w, const T* bias,
                           idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu);

template <typename T>
void causal_conv1d_backward(T* dx, idx_t dx_ld, T* dw, T* dbias, const T* dout, idx_t dout_ld,
                            const T* x, idx_t x_ld, const T* state_in, const int32_t* seq_idx,
                            const T* w, const T* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc,
                            bool silu);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// T = float or __nv_bfloat16 for x / out / state / dx / dout; w, bias, dw, dbias fp32 (master
// weights). Kc <= 8 on CUDA (a CHECK names larger widths). dw / dbias are reduced over (b, time
// segment) partials in a fixed order (deterministic); dx assigns. seq_idx is a device pointer.
template <typename T>
void causal_conv1d_forward(T* out, idx_t out_ld, T* state_out, const T* x, idx_t x_ld,
                           const T* state_in, const int32_t* seq_idx, const float* w,
                           const float* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu,
                           cudaStream_t stream);
template <typename T>
void causal_conv1d_backward(T* dx, idx_t dx_ld, float* dw, float* dbias, const T* dout,
                            idx_t dout_ld, const T* x, idx_t x_ld, const T* state_in,
                            const int32_t* seq_idx, const float* w, const float* bias, idx_t B,
                            idx_t T_, idx_t Di, idx_t Kc, bool silu, cudaStream_t stream);
// The carried state alone: state_out [B, Di, Kc-1] = the last Kc-1 inputs of each sequence (from
// state_in when T < Kc-1; zeros without it; with seq_idx only those of the last document, as
// above); state_out may alias state_in. The forward calls it; expert_conv1d's forward too (its
// experts share one input history; it passes no seq_idx).
template <typename T>
void causal_conv1d_state_update(T* state_out, const T* x, idx_t x_ld, const T* state_in,
                                const int32_t* seq_idx, idx_t B, idx_t T_, idx_t Di, idx_t Kc,
                                cudaStream_t stream);
}  // namespace moessm::cuda
#endif
