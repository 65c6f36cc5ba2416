// rmsnorm: out[r,:] = x[r,:] · rstd[r] · w,  rstd[r] = 1 / sqrt(mean(x[r,:]²) + eps).
// rstd [rows] is saved for backward. Backward: dx assigns (or += when dx_accumulate, used for
// the residual stream); dw accumulates.
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, idx_t rows, idx_t D, double eps);

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd,
                      idx_t rows, idx_t D, bool dx_accumulate = false);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// x, w, rstd, dx, dw are fp32 (residual stream and norm weights stay fp32); out / dout are
// T = float or __nv_bfloat16 (the GEMM operand). Row statistics in fp32; dw is reduced over
// fixed row groups in order (deterministic).
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const float* x, const float* w, idx_t rows, idx_t D,
                     double eps, cudaStream_t stream);
// Fused residual add: residual[r,:] += delta[r,:] (skipped when delta is nullptr), then
// out = rmsnorm(residual) — the pre-norm block's `h = h + mixer(...)` followed by the next norm.
// Its backward is rmsnorm_backward with dx = the residual gradient and dx_accumulate = true.
template <typename T>
void rmsnorm_add_forward(T* out, float* rstd, float* residual, const T* delta, const float* w,
                         idx_t rows, idx_t D, double eps, cudaStream_t stream);
template <typename T>
void rmsnorm_backward(float* dx, float* dw, const T* dout, const float* x, const float* w,
                      const float* rstd, idx_t rows, idx_t D, bool dx_accumulate, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
