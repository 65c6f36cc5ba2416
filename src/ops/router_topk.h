// router_topk: the MoE router after its logits GEMM (DESIGN.md §2), shared by RoM and Swimba.
//   p[m,:]   = softmax(logits[m,:]) over all E experts (computed in the accumulation type)
//   S_m      = the K largest p[m,i]; ties go to the LOWER expert index; idx[m,0..K-1] lists S_m
//              in descending probability (ties: lower index first)
//   w[m,k]   = p[m, idx[m,k]]                      (normalize_topk = false)
//            = p[m, idx[m,k]] / Σ_{k'} p[m, idx[m,k']]   (normalize_topk = true)
// The logits GEMM (logits = u · router.weightᵀ) is the caller's: matmul_forward / _backward.
// Routing is piecewise constant in the logits: idx has no gradient; w and p do.
//
// Load balancing (Switch Transformer), on the same M tokens:
//   f_i    = |{(m,k) : idx[m,k] = i}| / (M·K)      share of routing slots given to expert i
//   P̄_i    = (1/M) Σ_m p[m,i]
//   L_aux  = coef · E · Σ_i f_i · P̄_i               (= coef under perfectly uniform routing)
//   L_z    = coef · (1/M) Σ_m logsumexp(logits[m,:])²
// f is piecewise constant, so dL_aux/dp[m,i] = coef · E · f_i / M.
//
// Shapes: logits, probs, dlogits, dprobs [M, E]; idx, w, dw [M, K]; load [E]. M is any token
// count (B·T); rows are contiguous (no strides: router outputs are small dedicated buffers).
// Gradient contract (op_common.h): router_topk_backward ASSIGNS dlogits; the loss backwards
// ACCUMULATE (+=) into dprobs / dlogits so several terms can be summed into one buffer.
// Every reduction runs in a fixed order (per row, then rows in order): results are
// deterministic and independent of the thread count.
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm {
namespace cpu {

// probs, idx, w are outputs (all required).
template <typename T>
void router_topk_forward(T* probs, int32_t* idx, T* w, const T* logits, idx_t M, idx_t E,
                         idx_t K, bool normalize_topk);

// dlogits = d/dlogits of Σ dw·w + Σ dprobs·p. dw (required) is the gradient of w; dprobs
// (optional, nullptr when absent) is a gradient arriving directly at p (e.g. from the aux loss).
template <typename T>
void router_topk_backward(T* dlogits, const T* dw, const T* dprobs, const T* probs,
                          const int32_t* idx, const T* w, idx_t M, idx_t E, idx_t K,
                          bool normalize_topk);

// Returns L_aux; writes f_i into load[E] when load is not nullptr.
template <typename T>
double router_aux_loss_forward(double* load, const T* probs, const int32_t* idx, idx_t M,
                               idx_t E, idx_t K, double coef);
// dprobs += dloss · dL_aux/dp.
template <typename T>
void router_aux_loss_backward(T* dprobs, double dloss, const int32_t* idx, idx_t M, idx_t E,
                              idx_t K, double coef);

// Returns L_z.
template <typename T>
double router_z_loss_forward(const T* logits, idx_t M, idx_t E, double coef);
// dlogits += dloss · dL_z/dlogits = dloss · coef · 2 · lse_m · p[m,:] / M.
template <typename T>
void router_z_loss_backward(T* dlogits, double dloss, const T* logits, idx_t M, idx_t E,
                            double coef);

}  // namespace cpu

// The limits of the CUDA router kernels (the registry refuses larger configurations on cuda).
constexpr idx_t kRouterMaxExperts = 4096, kRouterMaxTopK = 32;

}  // namespace moessm

#ifdef MOESSM_CUDA
namespace moessm::cuda {
// fp32 tensors on the device, the same contracts as the CPU functions, with two differences that
// keep the training step free of host syncs: the losses are ADDED to a device scalar
// (*loss += L_aux / L_z) instead of returned, and load (device, [E], optional) receives f_i.
// E <= kRouterMaxExperts, K <= kRouterMaxTopK (a CHECK names larger sizes).
void router_topk_forward(float* probs, int32_t* idx, float* w, const float* logits, idx_t M, idx_t E, idx_t K,
                         bool normalize_topk, cudaStream_t stream);
void router_topk_backward(float* dlogits, const float* dw, const float* dprobs, const float* probs,
                          const int32_t* idx, const float* w, idx_t M, idx_t E, idx_t K, bool normalize_topk,
                          cudaStream_t stream);
void router_aux_loss_forward(double* loss, double* load, const float* probs, const int32_t* idx, idx_t M, idx_t E,
                             idx_t K, double coef, cudaStream_t stream);
void router_aux_loss_backward(float* dprobs, double dloss, const int32_t* idx, idx_t M, idx_t E, idx_t K,
                              double coef, cudaStream_t stream);
void router_z_loss_forward(double* loss, const float* logits, idx_t M, idx_t E, double coef, cudaStream_t stream);
void router_z_loss_backward(float* dlogits, double dloss, const float* logits, idx_t M, idx_t E, double coef,
                            cudaStream_t stream);
}  // namespace moessm::cuda
#endif
