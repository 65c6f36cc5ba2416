// CUDA rope (contract in ops/rope.h): one grid-stride thread per rotated pair (token, head, i);
// the angle in double, the rotation in fp32, rounded to T once. In place is safe: a thread reads
// both elements of its pair before writing them.
#include <cuda_bf16.h>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/rope.h"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t start_position(const float* pos0, idx_t b) {
  if (!pos0) return 0;
  const double x = double(pos0[b]);
  return x >= 0.5 ? int64_t(floor(x + 0.5)) : 0;
}

template <typename T>
__global__ void rope_kernel(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* pos0, idx_t B, idx_t T_,
                            idx_t nh, idx_t hd, double theta, float sign) {
  const idx_t half = hd / 2, n = B * T_ * nh * half;
  for (idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; e < n; e += idx_t(gridDim.x) * blockDim.x) {
    const idx_t i = e % half, h = (e / half) % nh, m = e / (half * nh), b = m / T_, t = m % T_;
    const double a = double(start_position(pos0, b) + t) * pow(theta, -2.0 * double(i) / double(hd));
    double sd, cd;
    sincos(a, &sd, &cd);
    const float c = float(cd), s = sign * float(sd);
    const T* x = in + m * in_ld + h * hd;
    T* y = out + m * out_ld + h * hd;
    const float x0 = to_f32(x[i]), x1 = to_f32(x[i + half]);
    y[i] = from_f32<T>(x0 * c - x1 * s);
    y[i + half] = from_f32<T>(x1 * c + x0 * s);
  }
}

void check_sizes(const char* op, idx_t B, idx_t T_, idx_t nh, idx_t hd, idx_t out_ld, idx_t in_ld, double theta) {
  CHECK(B >= 0 && T_ >= 0 && nh >= 1, "cuda ", op, ": sizes B=", B, " T=", T_, " nh=", nh, " must be >= 0 (nh >= 1)");
  CHECK(hd >= 2 && hd % 2 == 0, "cuda ", op, ": head_dim must be even and >= 2, got ", hd);
  CHECK(out_ld >= nh * hd && in_ld >= nh * hd, "cuda ", op, ": token strides ", out_ld, " and ", in_ld,
        " must be >= nh·hd = ", nh * hd);
  CHECK(theta > 0, "cuda ", op, ": theta must be > 0, got ", theta);
}

}  // namespace

template <typename T>
void rope_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* pos0, idx_t B, idx_t T_, idx_t nh,
                  idx_t hd, double theta, cudaStream_t stream) {
  check_sizes("rope_forward", B, T_, nh, hd, out_ld, in_ld, theta);
  const idx_t n = B * T_ * nh * (hd / 2);
  if (n == 0) return;
  rope_kernel<T><<<grid_1d(n, kThreads), kThreads, 0, stream>>>(out, out_ld, in, in_ld, pos0, B, T_, nh, hd, theta,
                                                                 1.f);
  CUDA_CHECK_LAUNCH("rope_kernel (forward)");
}

template <typename T>
void rope_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const float* pos0, idx_t B, idx_t T_,
                   idx_t nh, idx_t hd, double theta, cudaStream_t stream) {
  check_sizes("rope_backward", B, T_, nh, hd, din_ld, dout_ld, theta);
  const idx_t n = B * T_ * nh * (hd / 2);
  if (n == 0) return;
  rope_kernel<T><<<grid_1d(n, kThreads), kThreads, 0, stream>>>(din, din_ld, dout, dout_ld, pos0, B, T_, nh, hd,
                                                                 theta, -1.f);
  CUDA_CHECK_LAUNCH("rope_kernel (backward)");
}

#define MOESSM_CUDA_ROPE(T)                                                                                       \
  template void rope_forward<T>(T*, idx_t, const T*, idx_t, const float*, idx_t, idx_t, idx_t, idx_t, double,     \
                                cudaStream_t);                                                                    \
  template void rope_backward<T>(T*, idx_t, const T*, idx_t, const float*, idx_t, idx_t, idx_t, idx_t, double,    \
                                 cudaStream_t);
MOESSM_CUDA_ROPE(float)
MOESSM_CUDA_ROPE(bf16)

}  // namespace moessm::cuda
