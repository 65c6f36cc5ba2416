// cross_entropy: fused softmax cross-entropy over the vocabulary.
//   loss[r] = logsumexp(logits[r,:]) - logits[r, target[r]]     (target < 0: ignored, loss 0)
// Forward saves lse[r]. Backward writes dlogits[r,:] = dloss[r] · (softmax(logits[r,:]) - onehot),
// and may run in place (dlogits == logits), which is how the LM avoids a second [rows,V] buffer.
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {

template <typename T>
void cross_entropy_forward(T* loss, T* lse, const T* logits, const int32_t* targets, idx_t rows,
                           idx_t V);

template <typename T>
void cross_entropy_backward(T* dlogits, const T* dloss, const T* logits, const T* lse,
                            const int32_t* targets, idx_t rows, idx_t V);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// logits / dlogits in T = float or __nv_bfloat16; loss, lse, dloss fp32. One block per row
// walks the vocabulary in chunks with an online (max, sum) update, so V is not limited by
// shared memory and the row is read once in forward. A target >= V gives loss NaN (no host
// check without a sync); target < 0 is ignored as on the CPU.
template <typename T>
void cross_entropy_forward(float* loss, float* lse, const T* logits, const int32_t* targets,
                           idx_t rows, idx_t V, cudaStream_t stream);
template <typename T>
void cross_entropy_backward(T* dlogits, const float* dloss, const T* logits, const float* lse,
                            const int32_t* targets, idx_t rows, idx_t V, cudaStream_t stream);
// Training fast path: forward and backward in one launch, with dloss[r] = dloss_scale for
// every row (a mean over tokens); dlogits may alias logits (in place).
template <typename T>
void cross_entropy_forward_backward(float* loss, float* lse, T* dlogits, const T* logits,
                                    const int32_t* targets, float dloss_scale, idx_t rows, idx_t V,
                                    cudaStream_t stream);
}  // namespace moessm::cuda
#endif
