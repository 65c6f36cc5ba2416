// CUDA rmsnorm (optionally fused with the residual add), forward and backward (contract in
// ops/rmsnorm.h). One warp per row; each lane walks columns lane, lane+32, ... and the warp sums
// with a fixed butterfly, so results do not depend on the launch. dw: per row-group partials
// (fixed groups of kRowsPerPart rows) then an ordered sum over groups.
#include "ops/cuda/common.cuh"
#include "ops/rmsnorm.h"

namespace moessm::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerPart = 64;

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
rmsnorm_fwd_kernel(T* out, float* rstd, float* x, const T* delta, const float* w, idx_t rows,
                   idx_t D, float eps) {
  const int lane = threadIdx.x % 32;
  const idx_t r = idx_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  float* xr = x + r * D;
  float ss = 0.f;
  for (idx_t i = lane; i < D; i += 32) {
    float v = xr[i];
    if (delta) {
      v += to_f32(delta[r * D + i]);
      xr[i] = v;
    }
    ss = fmaf(v, v, ss);
  }
  ss = group_sum<32>(ss);
  const float rs = rsqrtf(ss / float(D) + eps);
  if (rstd && lane == 0) rstd[r] = rs;
  for (idx_t i = lane; i < D; i += 32) out[r * D + i] = from_f32<T>(xr[i] * rs * w[i]);
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
rmsnorm_bwd_kernel(float* dx, const T* dout, const float* x, const float* w, const float* rstd,
                   idx_t rows, idx_t D, bool acc) {
  const int lane = threadIdx.x % 32;
  const idx_t r = idx_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  const float* xr = x + r * D;
  const T* g = dout + r * D;
  float dot = 0.f;
  for (idx_t i = lane; i < D; i += 32) dot = fmaf(to_f32(g[i]) * w[i], xr[i], dot);
  dot = group_sum<32>(dot);
  const float rs = rstd[r];
  const float k = dot * rs * rs * rs / float(D);
  float* d = dx + r * D;
  for (idx_t i = lane; i < D; i += 32) {
    const float v = rs * w[i] * to_f32(g[i]) - xr[i] * k;
    d[i] = acc ? d[i] + v : v;
  }
}

// part[q, i] = Σ_{r in group q} dout[r,i]·x[r,i]·rstd[r]
template <typename T>
__global__ void rmsnorm_dw_part(float* part, const T* dout, const float* x, const float* rstd,
                                idx_t rows, idx_t D) {
  const idx_t i = idx_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= D) return;
  const idx_t q = blockIdx.y, r0 = q * kRowsPerPart, r1 = min(rows, r0 + kRowsPerPart);
  float s = 0.f;
  for (idx_t r = r0; r < r1; ++r) s = fmaf(to_f32(dout[r * D + i]) * x[r * D + i], rstd[r], s);
  part[q * D + i] = s;
}

__global__ void rmsnorm_dw_reduce(float* dw, const float* part, idx_t nparts, idx_t D) {
  const idx_t i = idx_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= D) return;
  float s = 0.f;
  for (idx_t q = 0; q < nparts; ++q) s += part[q * D + i];
  dw[i] += s;
}

}  // namespace

template <typename T>
void rmsnorm_add_forward(T* out, float* rstd, float* residual, const T* delta, const float* w,
                         idx_t rows, idx_t D, double eps, cudaStream_t stream) {
  CHECK(rows >= 0 && D > 0, "cuda rmsnorm: rows=", rows, " D=", D);
  if (rows == 0) return;
  rmsnorm_fwd_kernel<T><<<unsigned((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(
      out, rstd, residual, delta, w, rows, D, float(eps));
  CUDA_CHECK_LAUNCH("rmsnorm_fwd_kernel");
}

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const float* x, const float* w, idx_t rows, idx_t D,
                     double eps, cudaStream_t stream) {
  // delta == nullptr: the kernel never writes x.
  rmsnorm_add_forward<T>(out, rstd, const_cast<float*>(x), nullptr, w, rows, D, eps, stream);
}

template <typename T>
void rmsnorm_backward(float* dx, float* dw, const T* dout, const float* x, const float* w,
                      const float* rstd, idx_t rows, idx_t D, bool dx_accumulate, cudaStream_t stream) {
  CHECK(rows >= 0 && D > 0, "cuda rmsnorm_backward: rows=", rows, " D=", D);
  CHECK(rstd, "cuda rmsnorm_backward: rstd from the forward pass is required");
  if (rows == 0) return;
  if (dx) {
    rmsnorm_bwd_kernel<T><<<unsigned((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(
        dx, dout, x, w, rstd, rows, D, dx_accumulate);
    CUDA_CHECK_LAUNCH("rmsnorm_bwd_kernel");
  }
  if (dw) {
    const idx_t nparts = (rows + kRowsPerPart - 1) / kRowsPerPart;
    CHECK(nparts <= 65535, "cuda rmsnorm_backward: rows=", rows, " too many");
    float* part = static_cast<float*>(workspace(size_t(nparts * D) * sizeof(float), stream));
    const dim3 grid{unsigned((D + 255) / 256), unsigned(nparts)};
    rmsnorm_dw_part<T><<<grid, 256, 0, stream>>>(part, dout, x, rstd, rows, D);
    CUDA_CHECK_LAUNCH("rmsnorm_dw_part");
    rmsnorm_dw_reduce<<<unsigned((D + 255) / 256), 256, 0, stream>>>(dw, part, nparts, D);
    CUDA_CHECK_LAUNCH("rmsnorm_dw_reduce");
  }
}

#define INSTANTIATE(T)                                                                         \
  template void rmsnorm_forward<T>(T*, float*, const float*, const float*, idx_t, idx_t, double, cudaStream_t); \
  template void rmsnorm_add_forward<T>(T*, float*, float*, const T*, const float*, idx_t, idx_t, double, cudaStream_t); \
  template void rmsnorm_backward<T>(float*, float*, const T*, const float*, const float*, const float*, idx_t, idx_t, bool, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace moessm::cuda
