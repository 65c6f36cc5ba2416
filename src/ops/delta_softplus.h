// delta_softplus: Mamba's Δ activation as a standalone op (the scan fuses it when Δ is mixed
// before it; Swimba's mix=post needs it per expert slot, before the mixing).
//   forward : out[m, c] = softplus(x[m, c] + bias[c])         (softplus with its v > 20 → v
//                                                            threshold, ops/activations.h)
//   backward: dx[m, c] = dout[m, c] · softplus'(x[m, c] + bias[c])  (assign; dx may alias dout)
//             dbias[c] += Σ_m dx[m, c]   (accumulate, m in increasing order: deterministic)
// Shapes: x / out / dout / dx [M, Di] row-major (rows: tokens or expert slots), bias / dbias [Di].
// x + bias is formed in T before softplus (as the scan does).
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {
template <typename T>
void delta_softplus_forward(T* out, const T* x, const T* bias, idx_t M, idx_t Di);
template <typename T>
void delta_softplus_backward(T* dx, T* dbias, const T* dout, const T* x, const T* bias, idx_t M,
                             idx_t Di);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
// CUDA twin (src/ops/cuda/delta_softplus.cu): T = float or __nv_bfloat16 for x / out / dout /
// dx; bias and dbias fp32 (master weights). x + bias is formed in fp32 (for bf16 too), and dbias
// accumulates the fp32 dx values. dbias is reduced deterministically: per-row-block partials (the
// split depends only on M), then a second pass over the row blocks in order; no atomics. dbias
// may be nullptr (no bias gradient wanted); bias may not.
namespace moessm::cuda {
template <typename T>
void delta_softplus_forward(T* out, const T* x, const float* bias, idx_t M, idx_t Di, cudaStream_t stream);
template <typename T>
void delta_softplus_backward(T* dx, float* dbias, const T* dout, const T* x, const float* bias, idx_t M,
                             idx_t Di, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
