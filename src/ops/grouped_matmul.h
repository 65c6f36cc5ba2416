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

// At most this many grouped rows (M·K) take the CUDA forward's device-side GEMV path.
constexpr idx_t kGroupedGemvMaxRows = 256;

}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// The CPU contract with T = float or __nv_bfloat16 operands (fp32 accumulation) and fp32 expert
// weight gradients; offsets in device memory. `rows` is the number of grouped rows, offsets[E]
// (= M·K), which the caller knows without reading the offsets. The forward picks its path from
// rows alone:
//   rows <= kGroupedGemvMaxRows: a grouped GEMV kernel (src/ops/cuda/grouped_gemv.cu) that reads
//     the offsets on the device: no host sync, graph-capturable (the decode step). Each chosen
//     expert's weight is streamed once per 8 of its rows; fp32 accumulation, fixed-order
//     reductions. The offsets are trusted (no row past `rows` is ever read or written).
//   otherwise: one cuBLASLt GEMM per expert with rows, reading the offsets from known_offsets
//     (a host copy of them, e.g. the router's from its forward) or, when that is nullptr, after
//     ONE copy to the host (a stream sync: training and prefill only); a CHECK that
//     offsets[E] == rows.
// The backward always takes the cuBLASLt path (known_offsets or a host copy); expert weight
// gradients accumulate through the fp32 GEMM (deterministic: no atomics).
template <typename T>
void grouped_matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                            const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows,
                            const int32_t* known_offsets, cudaStream_t stream);
template <typename T>
void grouped_matmul_backward(T* din, idx_t din_ld, float* dweight, const T* dout, idx_t dout_ld, const T* in,
                             idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N,
                             idx_t Kd, bool din_accumulate, const int32_t* known_offsets, cudaStream_t stream);
// The cuBLASLt path runs the experts' GEMMs over n streams (the caller's and n-1 side streams,
// forked and joined with events; default 4, 1 = one after another on the caller's stream). The
// results do not depend on n. For benchmarks that compare the two.
void set_grouped_matmul_streams(int n);
}  // namespace moessm::cuda
#endif
