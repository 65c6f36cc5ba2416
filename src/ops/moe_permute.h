// moe_permute: regroup token rows by expert for the expert GEMMs, and put them back.
// A routing assigns token m (of M) the K experts idx[m, 0..K-1] (from router_topk). Its M·K
// "slots" s = m·K + k are laid out in GROUPED order: expert 0's slots first, then expert 1's, …,
// and inside one expert in increasing slot order (so in token order). This order is a pure
// function of idx: results are deterministic and independent of the thread count.
//   moe_permute_plan       : offsets[E+1] (expert e owns grouped rows offsets[e] .. offsets[e+1]-1)
//                            and row_of_slot[M·K] (grouped row of slot s)
//   moe_permute_plan_stacked: row_of_slot[M·K] for experts that each ran on EVERY token, their
//                            outputs stacked [E, M, X]: row of slot m·K+k = idx[m,k]·M + m
//                            (the separated MoE-SSM's branches; then moe_unpermute as usual)
//   moe_permute_forward    : out[row_of_slot[m·K+k], :] = in[m, :]            (each token K times)
//   moe_permute_backward   : din[m, :] (=, or += with accumulate) Σ_k dout[row_of_slot[m·K+k], :]
//   moe_unpermute_forward  : out[m, :] = Σ_k c[m,k] · in[row_of_slot[m·K+k], :]
//                            c = w (the router weights) or, when w is nullptr, 1 (the indicator sum)
//   moe_unpermute_backward : din[row_of_slot[m·K+k], :] = c[m,k] · dout[m, :]   (assign)
//                            dw[m,k] (=, or += with accumulate) <dout[m,:], in[row_of_slot[m·K+k],:]>
//                            (dw optional; ignored when w is nullptr)
// Sums over k run in k order. Shapes: token rows [M, X] (stride *_ld), grouped rows [M·K, X]
// (stride *_ld), idx / w / dw [M, K].
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm {
namespace cpu {

void moe_permute_plan(int32_t* offsets, int32_t* row_of_slot, const int32_t* idx, idx_t M,
                      idx_t E, idx_t K);

void moe_permute_plan_stacked(int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E,
                              idx_t K);

template <typename T>
void moe_permute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld,
                         const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X);
template <typename T>
void moe_permute_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld,
                          const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X,
                          bool accumulate = false);

template <typename T>
void moe_unpermute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* w,
                           const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X);
template <typename T>
void moe_unpermute_backward(T* din, idx_t din_ld, T* dw, const T* dout, idx_t dout_ld,
                            const T* in, idx_t in_ld, const T* w, const int32_t* row_of_slot,
                            idx_t M, idx_t K, idx_t X, bool dw_accumulate = false);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// The CPU contracts on the device. idx, offsets, row_of_slot: device int32. Token and grouped
// rows: T = float or __nv_bfloat16 (sums in fp32); w / dw: fp32. The plan is built on the device
// (no host sync: graph-capturable) and equals the CPU's stable counting sort; an expert index
// outside [0, E) cannot be CHECKed there (its slot gets no row): idx comes from router_topk.
void moe_permute_plan(int32_t* offsets, int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E, idx_t K,
                      cudaStream_t stream);
void moe_permute_plan_stacked(int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E, idx_t K,
                              cudaStream_t stream);
template <typename T>
void moe_permute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const int32_t* row_of_slot, idx_t M,
                         idx_t K, idx_t X, cudaStream_t stream);
template <typename T>
void moe_permute_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const int32_t* row_of_slot, idx_t M,
                          idx_t K, idx_t X, bool accumulate, cudaStream_t stream);
template <typename T>
void moe_unpermute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* w,
                           const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, cudaStream_t stream);
template <typename T>
void moe_unpermute_backward(T* din, idx_t din_ld, float* dw, const T* dout, idx_t dout_ld, const T* in, idx_t in_ld,
                            const float* w, const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X,
                            bool dw_accumulate, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
