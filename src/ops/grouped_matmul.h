// grouped_matmul: one GEMM per expert over its block of grouped rows (see moe_permute.h).
//   out[r, :] = in[r, :] · W_eᵀ   for r in offsets[e] .. offsets[e+1]-1,   W_e = weight + e·w_stride
// W_e is [N, Kd] (PyTorch [out, in] layout), so an expert slab [E, N, Kd] has w_stride = N·Kd, and
// a slice of a wider slab (e.g. the x rows of in_proj [E, 2Di, D]) is addressed by its offset and
// the slab's stride. Experts with no rows are skipped. Each expert's GEMM is cpu::matmul_*.
// Backward: din (=, or += with din_accumulate) dout·W_e; dweight_e += doutᵀ·in (accumulates).
// Shapes: in/din [M·K, Kd] (stride in_ld), out/dout [M·K, N] (stride out_ld), offsets [E+1].
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm {
namespace cpu {

template <typename T>
void grouped_matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight,
                            idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N, idx_t Kd);

template <typename T>
void grouped_matmul_backward(T* din, idx_t din_ld, T* dweight, const T* dout, idx_t dout_ld,
                             const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                             const int32_t* offsets, idx_t E, idx_t N, idx_t Kd,
                             bool din_accumulate = false);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// The CPU contract with T = float or __nv_bfloat16 operands (fp32 accumulation) and fp32 expert
// weight gradients; offsets in device memory. One cuBLASLt GEMM per expert after one copy of
// the offsets to the host per call (a stream sync: training and prefill only, not graph-capturable).
template <typename T>
void grouped_matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                            const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, cudaStream_t stream);
template <typename T>
void grouped_matmul_backward(T* din, idx_t din_ld, float* dweight, const T* dout, idx_t dout_ld, const T* in,
                             idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N,
                             idx_t Kd, bool din_accumulate, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
