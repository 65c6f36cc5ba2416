// CUDA swiglu (contract in ops/swiglu.h): one grid-stride thread per element of the strided
// [M, X] views; silu(a)·b and both gradients formed in fp32, rounded to T once.
#include <cuda_bf16.h>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/swiglu.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void swiglu_fwd_kernel(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M,
                                  idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    out[m * out_ld + x] = from_f32<T>(silu_f(to_f32(a[m * a_ld + x])) * to_f32(b[m * b_ld + x]));
  }
}

template <typename T>
__global__ void swiglu_bwd_kernel(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, const T* a,
                                  idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    const float av = to_f32(a[m * a_ld + x]), g = to_f32(dout[m * dout_ld + x]);
    da[m * da_ld + x] = from_f32<T>(g * to_f32(b[m * b_ld + x]) * silu_grad_f(av));
    db[m * db_ld + x] = from_f32<T>(g * silu_f(av));
  }
}

void check_view(const char* op, idx_t M, idx_t X, idx_t ld, const char* name) {
  CHECK(M >= 0 && X >= 0, "cuda ", op, ": sizes M=", M, " X=", X, " must be >= 0");
  CHECK(ld >= X, "cuda ", op, ": row stride ", name, "=", ld, " must be >= X=", X);
}

}  // namespace

template <typename T>
void swiglu_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X,
                    cudaStream_t stream) {
  check_view("swiglu_forward", M, X, out_ld, "out_ld");
  check_view("swiglu_forward", M, X, a_ld, "a_ld");
  check_view("swiglu_forward", M, X, b_ld, "b_ld");
  if (M * X == 0) return;
  swiglu_fwd_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(out, out_ld, a, a_ld, b, b_ld, M, X);
  CUDA_CHECK_LAUNCH("swiglu_fwd_kernel");
}

template <typename T>
void swiglu_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, const T* a, idx_t a_ld,
                     const T* b, idx_t b_ld, idx_t M, idx_t X, cudaStream_t stream) {
  check_view("swiglu_backward", M, X, da_ld, "da_ld");
  check_view("swiglu_backward", M, X, db_ld, "db_ld");
  check_view("swiglu_backward", M, X, dout_ld, "dout_ld");
  check_view("swiglu_backward", M, X, a_ld, "a_ld");
  check_view("swiglu_backward", M, X, b_ld, "b_ld");
  if (M * X == 0) return;
  swiglu_bwd_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(da, da_ld, db, db_ld, dout, dout_ld, a,
                                                                          a_ld, b, b_ld, M, X);
  CUDA_CHECK_LAUNCH("swiglu_bwd_kernel");
}

#define MOESSM_CUDA_SWIGLU(T)                                                                                 \
  template void swiglu_forward<T>(T*, idx_t, const T*, idx_t, const T*, idx_t, idx_t, idx_t, cudaStream_t);   \
  template void swiglu_backward<T>(T*, idx_t, T*, idx_t, const T*, idx_t, const T*, idx_t, const T*, idx_t,    \
                                   idx_t, idx_t, cudaStream_t);
MOESSM_CUDA_SWIGLU(float)
MOESSM_CUDA_SWIGLU(bf16)

}  // namespace moessm::cuda
