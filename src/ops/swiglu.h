// swiglu: the gate of a SwiGLU feed-forward layer (Llama's silu(gate) * up) as one op, so the
// `mlp` and `moe_mlp` layers hold no element loop. (Mamba's y ⊙ silu(z) is fused into the scan
// and serves no other caller.)
//   forward : out[m, x] = silu(a[m, x]) · b[m, x]
//   backward: da[m, x]  = dout[m, x] · b[m, x] · silu'(a[m, x])     (assign)
//             db[m, x]  = dout[m, x] · silu(a[m, x])                 (assign)
// silu and silu' are ops/activations.h's (silu_of, silu_grad_of).
// Shapes: M rows of X elements with row strides *_ld (>= X), so a and b may be the two halves
// of one [M, 2X] buffer (gate | up, ld = 2X) and da / db the halves of its gradient. out must
// not overlap a or b; da / db must not overlap a, b or dout. Element order never matters.
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {
template <typename T>
void swiglu_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X);
template <typename T>
void swiglu_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, const T* a, idx_t a_ld,
                     const T* b, idx_t b_ld, idx_t M, idx_t X);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
// CUDA twin (src/ops/cuda/swiglu.cu), same contract, T = float or __nv_bfloat16: every value is
// formed in fp32 and rounded to T once on store. One thread per element: graph-capturable, no
// workspace, no atomics (bitwise repeatable).
namespace moessm::cuda {
template <typename T>
void swiglu_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X,
                    cudaStream_t stream);
template <typename T>
void swiglu_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, const T* a, idx_t a_ld,
                     const T* b, idx_t b_ld, idx_t M, idx_t X, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
