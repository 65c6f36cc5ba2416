// ssm_a: the state matrix from its stored log, A = -exp(A_log) (DESIGN.md §1; A_log [Di, N],
// fp32 always), and its backward dA_log += dA ⊙ A (since dA/dA_log = -exp(A_log) = A).
// n = Di·N elements. The gradient accumulates (parameter gradient contract).
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {
template <typename T> void ssm_a_forward(T* A, const T* A_log, idx_t n);
template <typename T> void ssm_a_backward(T* dA_log, const T* dA, const T* A, idx_t n);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
namespace moessm::cuda {
void ssm_a_forward(float* A, const float* A_log, idx_t n, cudaStream_t stream);
void ssm_a_backward(float* dA_log, const float* dA, const float* A, idx_t n, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
