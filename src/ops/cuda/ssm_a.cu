// CUDA ssm_a (see ops/ssm_a.h): elementwise, fp32.
#include "ops/cuda/common.cuh"
#include "ops/ssm_a.h"

namespace moessm::cuda {

namespace {
__global__ void ssm_a_fwd_kernel(float* A, const float* A_log, idx_t n) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < n; i += idx_t(gridDim.x) * blockDim.x)
    A[i] = -expf(A_log[i]);
}
__global__ void ssm_a_bwd_kernel(float* dA_log, const float* dA, const float* A, idx_t n) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < n; i += idx_t(gridDim.x) * blockDim.x)
    dA_log[i] += dA[i] * A[i];
}
}  // namespace

void ssm_a_forward(float* A, const float* A_log, idx_t n, cudaStream_t stream) {
  if (n <= 0) return;
  ssm_a_fwd_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(A, A_log, n);
  CUDA_CHECK_LAUNCH("ssm_a_fwd_kernel");
}

void ssm_a_backward(float* dA_log, const float* dA, const float* A, idx_t n, cudaStream_t stream) {
  if (n <= 0) return;
  ssm_a_bwd_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(dA_log, dA, A, n);
  CUDA_CHECK_LAUNCH("ssm_a_bwd_kernel");
}

}  // namespace moessm::cuda
