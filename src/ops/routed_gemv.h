// routed_gemv: the decode form of an expertised linear (moe_permute → grouped_matmul →
// moe_unpermute) for a few tokens, without grouping: each token's K chosen experts are applied to
// its own row and combined at once,
//   y[m, n] = Σ_k c[m,k] · <W_{idx[m,k]}[n, :], in[m, :]>        W_e = weight + e·w_stride, [N, Kd]
// Columns [0, split) go to lo (stride lo_ld) with coefficients c_lo, columns [split, N) to hi
// (stride hi_ld) with c_hi, so one pass feeds two combines (RoM's in_proj: x with the indicator,
// z with the router weights); a null coefficient array is the indicator (1); lo / hi may be null
// when their column range is empty. Forward only (inference: no plan, no grouped rows). Each
// dot product is accumulated in the accumulation type, the sum over k runs in k order.
// Shapes: in [M, Kd] (stride in_ld), idx / c [M, K], lo [M, split], hi [M, N - split].
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm {
namespace cpu {

template <typename T>
void routed_gemv_forward(T* lo, idx_t lo_ld, const T* c_lo, T* hi, idx_t hi_ld, const T* c_hi, idx_t split,
                         const T* in, idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* idx, idx_t M,
                         idx_t K, idx_t N, idx_t Kd);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
#include <cuda_runtime.h>
namespace moessm::cuda {
// The CPU contract with T = float or __nv_bfloat16 (fp32 accumulation and fp32 coefficients),
// idx and c in device memory (read on the device: no host sync, graph-capturable). One warp per
// output column and token tile; lanes read W_e[n, :] with 16-byte loads where aligned; the lane
// sums reduce in a fixed butterfly (deterministic). idx entries are trusted to lie in [0, E).
template <typename T>
void routed_gemv_forward(T* lo, idx_t lo_ld, const float* c_lo, T* hi, idx_t hi_ld, const float* c_hi, idx_t split,
                         const T* in, idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* idx, idx_t M,
                         idx_t K, idx_t N, idx_t Kd, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
