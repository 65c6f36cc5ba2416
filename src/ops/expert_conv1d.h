// expert_conv1d: RoM's expertised depthwise causal conv (DESIGN.md §2, experts_in "conv1d").
// Every expert e has its own conv1d.weight / bias; token m combines its K chosen experts with the
// indicator (no router weight), then SiLU:
//   pre[m, c] = Σ_{e ∈ S_m, e increasing} conv_e(x)[m, c]      conv_e as causal_conv1d (no SiLU)
//   out[m, c] = silu(pre[m, c])
// S_m = {idx[m, 0..K-1]} (router_topk). The reference runs each expert's conv on all tokens (E× a
// small op) and keeps the chosen ones. Forward saves `pre` for backward. state_out (optional) is
// the same for every expert (the last Kc-1 inputs x), written once; it may alias state_in.
// Backward: dpre = dout · silu'(pre) on the chosen (m, e), 0 elsewhere; an expert no token chose
// gets no gradient at all (its dw, dbias untouched); dw / dbias accumulate; dx assigns, summing
// the experts' contributions in increasing e.
// Shapes: x / dx [B, T, Di] with token strides; out / dout [M, Di] with strides, M = B·T; pre
// [M, Di]; idx [M, K]; w [E, Di, Kc]; bias [E, Di]; state [B, Di, Kc-1]. Scratch (caller-owned,
// contents undefined on return): work [M, Di] in forward; dpre_work and dx_work [M, Di] each in
// backward.
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm {
namespace cpu {
template <typename T>
void expert_conv1d_forward(T* out, idx_t out_ld, T* pre, T* state_out, T* work, const T* x,
                           idx_t x_ld, const T* state_in, const int32_t* idx, const T* w,
                           const T* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K);
template <typename T>
void expert_conv1d_backward(T* dx, idx_t dx_ld, T* dw, T* dbias, T* dpre_work, T* dx_work,
                            const T* dout, idx_t dout_ld, const T* x, idx_t x_ld,
                            const T* state_in, const T* pre, const int32_t* idx, const T* w,
                            const T* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K);
}  // namespace cpu

// The widest conv the CUDA twin supports (its CHECK names wider ones; the registry can refuse).
constexpr idx_t kExpertConvMaxKc = 8;

}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// CUDA twin (src/ops/cuda/expert_conv1d.cu), same contract: T = float or __nv_bfloat16 for x /
// out / pre / state / dout / dx (sums in fp32); w, bias, dw, dbias fp32 as causal_conv1d's.
// Kc <= kExpertConvMaxKc, K <= kRouterMaxTopK (ops/router_topk.h), E <= 65535. Each token's
// experts are summed in increasing e whatever order idx lists them in (a repeated index counts
// once, as on the CPU). dw / dbias are reduced over token chunks in a fixed order
// (deterministic, no atomics); an expert no token chose keeps its dw / dbias bit for bit. The
// scratch buffers (work, dpre_work, dx_work) are not used; the forward needs no workspace
// (graph-capturable), the backward uses the stream's workspace for the partials.
template <typename T>
void expert_conv1d_forward(T* out, idx_t out_ld, T* pre, T* state_out, T* work, const T* x, idx_t x_ld,
                           const T* state_in, const int32_t* idx, const float* w, const float* bias, idx_t B,
                           idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K, cudaStream_t stream);
template <typename T>
void expert_conv1d_backward(T* dx, idx_t dx_ld, float* dw, float* dbias, T* dpre_work, T* dx_work,
                            const T* dout, idx_t dout_ld, const T* x, idx_t x_ld, const T* state_in, const T* pre,
                            const int32_t* idx, const float* w, const float* bias, idx_t B, idx_t T_, idx_t Di,
                            idx_t Kc, idx_t E, idx_t K, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
