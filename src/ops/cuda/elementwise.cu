// CUDA elementwise ops (contract in ops/elementwise.h): one grid-stride kernel per op over the
// M·X elements of a strided [M, X] view; every output element is written by one thread, so
// out may alias a or b in add_forward (each thread reads its own a and b before writing).
// bf16 sums are formed in fp32 and rounded once; float, double and int32_t work natively.
#include <cuda_bf16.h>

#include <cstdint>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/elementwise.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

// The type a sum of two T is formed in: fp32 for bf16, T otherwise.
template <typename T> struct Acc { using type = T; };
template <> struct Acc<bf16> { using type = float; };
template <typename T> __device__ __forceinline__ typename Acc<T>::type widen(T v) { return v; }
template <> __device__ __forceinline__ float widen<bf16>(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T narrow(typename Acc<T>::type v) { return v; }
template <> __device__ __forceinline__ bf16 narrow<bf16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__global__ void fill_kernel(T* out, idx_t out_ld, T value, idx_t M, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x)
    out[(i / X) * out_ld + i % X] = value;
}

template <typename T>
__global__ void copy_kernel(T* out, idx_t out_ld, const T* in, idx_t in_ld, idx_t M, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    out[m * out_ld + x] = in[m * in_ld + x];
  }
}

// One launch writes both gradients (either may be nullptr).
template <typename T>
__global__ void copy2_kernel(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* in, idx_t in_ld, idx_t M, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    const T v = in[m * in_ld + x];
    if (da) da[m * da_ld + x] = v;
    if (db) db[m * db_ld + x] = v;
  }
}

template <typename T>
__global__ void add_kernel(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < M * X; i += idx_t(gridDim.x) * blockDim.x) {
    const idx_t m = i / X, x = i % X;
    out[m * out_ld + x] = narrow<T>(widen(a[m * a_ld + x]) + widen(b[m * b_ld + x]));
  }
}

void check_view(const char* op, idx_t M, idx_t X, idx_t ld, const char* name) {
  CHECK(M >= 0 && X >= 0, "cuda ", op, ": sizes M=", M, " X=", X, " must be >= 0");
  CHECK(ld >= X, "cuda ", op, ": row stride ", name, "=", ld, " must be >= X=", X);
}

}  // namespace

template <typename T> void fill(T* out, T value, idx_t n, cudaStream_t stream) {
  CHECK(n >= 0, "cuda fill: n=", n, " must be >= 0");
  if (n == 0) return;
  fill_kernel<T><<<grid_1d(n, kThreads), kThreads, 0, stream>>>(out, n, value, 1, n);
  CUDA_CHECK_LAUNCH("fill_kernel");
}

template <typename T> void fill(T* out, idx_t out_ld, T value, idx_t M, idx_t X, cudaStream_t stream) {
  check_view("fill", M, X, out_ld, "out_ld");
  if (M * X == 0) return;
  fill_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(out, out_ld, value, M, X);
  CUDA_CHECK_LAUNCH("fill_kernel");
}

template <typename T>
void copy(T* out, idx_t out_ld, const T* in, idx_t in_ld, idx_t M, idx_t X, cudaStream_t stream) {
  check_view("copy", M, X, out_ld, "out_ld");
  check_view("copy", M, X, in_ld, "in_ld");
  if (M * X == 0) return;
  copy_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(out, out_ld, in, in_ld, M, X);
  CUDA_CHECK_LAUNCH("copy_kernel");
}

template <typename T>
void add_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X,
                 cudaStream_t stream) {
  check_view("add_forward", M, X, out_ld, "out_ld");
  check_view("add_forward", M, X, a_ld, "a_ld");
  check_view("add_forward", M, X, b_ld, "b_ld");
  if (M * X == 0) return;
  add_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(out, out_ld, a, a_ld, b, b_ld, M, X);
  CUDA_CHECK_LAUNCH("add_kernel");
}

template <typename T>
void add_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, idx_t M, idx_t X,
                  cudaStream_t stream) {
  check_view("add_backward", M, X, dout_ld, "dout_ld");
  if (da) check_view("add_backward", M, X, da_ld, "da_ld");
  if (db) check_view("add_backward", M, X, db_ld, "db_ld");
  if ((!da && !db) || M * X == 0) return;
  copy2_kernel<T><<<grid_1d(M * X, kThreads), kThreads, 0, stream>>>(da, da_ld, db, db_ld, dout, dout_ld, M, X);
  CUDA_CHECK_LAUNCH("copy2_kernel");
}

#define MOESSM_CUDA_FILL_COPY(T)                                                          \
  template void fill<T>(T*, T, idx_t, cudaStream_t);                                      \
  template void fill<T>(T*, idx_t, T, idx_t, idx_t, cudaStream_t);                        \
  template void copy<T>(T*, idx_t, const T*, idx_t, idx_t, idx_t, cudaStream_t);
#define MOESSM_CUDA_ADD(T)                                                                          \
  template void add_forward<T>(T*, idx_t, const T*, idx_t, const T*, idx_t, idx_t, idx_t, cudaStream_t); \
  template void add_backward<T>(T*, idx_t, T*, idx_t, const T*, idx_t, idx_t, idx_t, cudaStream_t);
MOESSM_CUDA_FILL_COPY(float)
MOESSM_CUDA_FILL_COPY(bf16)
MOESSM_CUDA_FILL_COPY(double)
MOESSM_CUDA_FILL_COPY(int32_t)
MOESSM_CUDA_ADD(float)
MOESSM_CUDA_ADD(bf16)
MOESSM_CUDA_ADD(double)

}  // namespace moessm::cuda
