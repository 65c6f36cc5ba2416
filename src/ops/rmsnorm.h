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
