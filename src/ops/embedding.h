// embedding: out[r,:] = table[ids[r],:]. Backward accumulates dtable[ids[r],:] += dout[r,:] in
// row order (deterministic). ids are CHECKed against V: an out-of-vocabulary id is an error.
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, idx_t rows, idx_t V, idx_t D);

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, idx_t rows, idx_t V, idx_t D);

}  // namespace cpu
}  // namespace moessm
