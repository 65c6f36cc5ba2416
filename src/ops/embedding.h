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

#ifdef MOESSM_CUDA
namespace moessm::cuda {
// fp32 table and rows (the residual stream is fp32). An id outside [0, V) cannot be CHECKed on
// the device without a sync: its output row is filled with NaN (loud) and its gradient dropped;
// ids are validated on the host where they are produced (data loader, prompt).
// Backward: (id, row) pairs are stably radix-sorted by id, then one block per distinct id adds
// that id's rows into dtable in row order, so every element sees the CPU's summation order.
void embedding_forward(float* out, const int32_t* ids, const float* table, idx_t rows, idx_t V,
                       idx_t D, cudaStream_t stream);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, idx_t rows, idx_t V,
                        idx_t D, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
