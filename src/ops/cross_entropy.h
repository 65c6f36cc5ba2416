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
