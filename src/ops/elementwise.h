// elementwise: the plain data ops a layer needs between its real ops, so that no layer body holds
// an element loop (and a CUDA backend can supply the same calls).
//   fill         out[m, x] = value                      (zero-filling gradient scratch)
//   copy         out[m, x] = in[m, x]
//   add_forward  out[m, x] = a[m, x] + b[m, x]          (the residual add; out may alias a or b,
//                                                        which is how "+=" is written)
//   add_backward da = dout, db = dout                   (assign; either may be nullptr)
// Shapes: M rows of X elements, row strides *_ld (>= X); the (out, value, n) forms are one
// contiguous row of n elements. Element order never matters.
// (A sum in a fixed order is ops/adamw.h's sum.)
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {
template <typename T> void fill(T* out, T value, idx_t n);
template <typename T> void fill(T* out, idx_t out_ld, T value, idx_t M, idx_t X);
template <typename T> void copy(T* out, idx_t out_ld, const T* in, idx_t in_ld, idx_t M, idx_t X);
template <typename T>
void add_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M,
                 idx_t X);
template <typename T>
void add_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, idx_t M,
                  idx_t X);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
// CUDA twin (src/ops/cuda/elementwise.cu), same contract: fill / copy for T = float,
// __nv_bfloat16, double and int32_t; add_forward / add_backward for float, __nv_bfloat16 and
// double (a bf16 sum is formed in fp32 and rounded once). Element order never matters, so these
// are graph-capturable and need no workspace.
namespace moessm::cuda {
template <typename T> void fill(T* out, T value, idx_t n, cudaStream_t stream);
template <typename T>
void fill(T* out, idx_t out_ld, T value, idx_t M, idx_t X, cudaStream_t stream);
template <typename T>
void copy(T* out, idx_t out_ld, const T* in, idx_t in_ld, idx_t M, idx_t X, cudaStream_t stream);
template <typename T>
void add_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M,
                 idx_t X, cudaStream_t stream);
template <typename T>
void add_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, idx_t M,
                  idx_t X, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
