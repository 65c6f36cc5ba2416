// CUDA AdamW on fp32 master weights, the global gradient norm and the clip scale (contract in
// ops/adamw.h). The norm is deterministic: kNormBlocks (fixed, not device-dependent) blocks each
// sum a grid-strided slice in double and reduce in a fixed tree; one block then sums the
// kNormBlocks partials in order.
#include "ops/adamw.h"
#include "ops/cuda/common.cuh"

namespace moessm::cuda {

namespace {

constexpr int kNormBlocks = 512;
constexpr int kNormThreads = 256;

__global__ void adamw_kernel(float* p, bf16* p16, float* m, float* v, const float* g, idx_t n,
                             float lr, float b1, float b2, float eps, float wd, float inv_bc1,
                             float inv_sqrt_bc2, float scale, const float* scale_dev) {
  const float s = scale_dev ? scale * *scale_dev : scale;
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < n; i += idx_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * s;
    const float mi = fmaf(b1, m[i], (1.f - b1) * gi);
    const float vi = fmaf(b2, v[i], (1.f - b2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    const float upd = (mi * inv_bc1) / (sqrtf(vi) * inv_sqrt_bc2 + eps) + wd * p[i];
    const float np = p[i] - lr * upd;
    p[i] = np;
    if (p16) p16[i] = __float2bfloat16_rn(np);
  }
}

template <bool kSquare>
__global__ void __launch_bounds__(kNormThreads) norm_part_kernel(double* part, const float* g, idx_t n) {
  __shared__ double sh[kNormThreads];
  double s = 0;
  for (idx_t i = blockIdx.x * idx_t(kNormThreads) + threadIdx.x; i < n; i += idx_t(kNormBlocks) * kNormThreads) {
    const double v = g[i];
    s += kSquare ? v * v : v;
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = kNormThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

__global__ void norm_final_kernel(double* out, const double* part) {
  if (threadIdx.x == 0) {
    double s = 0;
    for (int q = 0; q < kNormBlocks; ++q) s += part[q];
    *out = s;
  }
}

__global__ void clip_kernel(float* scale, const double* nsq, double max_norm, double pre) {
  const double norm = sqrt(*nsq) * pre;
  *scale = float(pre * ((max_norm > 0 && norm > max_norm) ? max_norm / norm : 1.0));
}

}  // namespace

void adamw_update(float* params, bf16* params_bf16, float* m, float* v, const float* grads, idx_t n,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step, double grad_scale, const float* grad_scale_dev, cudaStream_t stream) {
  CHECK(step >= 1, "cuda adamw_update: step=", step, " must count from 1");
  CHECK(n >= 0, "cuda adamw_update: n=", n);
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  adamw_kernel<<<grid_1d(n, 256, 132 * 16), 256, 0, stream>>>(
      params, params_bf16, m, v, grads, n, float(lr), float(beta1), float(beta2), float(eps),
      float(weight_decay), float(1.0 / bc1), float(1.0 / std::sqrt(bc2)), float(grad_scale),
      grad_scale_dev);
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

void adamw_update(float* params, float* m, float* v, const float* grads, idx_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step,
                  double grad_scale, cudaStream_t stream) {
  adamw_update(params, nullptr, m, v, grads, n, lr, beta1, beta2, eps, weight_decay, step,
               grad_scale, nullptr, stream);
}

namespace {
template <bool kSquare>
void ordered_sum(double* out_dev, const float* x, idx_t n, cudaStream_t stream) {
  CHECK(n >= 0, "cuda ordered sum: n=", n);
  double* part = static_cast<double*>(workspace(kNormBlocks * sizeof(double), stream));
  norm_part_kernel<kSquare><<<kNormBlocks, kNormThreads, 0, stream>>>(part, x, n);
  CUDA_CHECK_LAUNCH("norm_part_kernel");
  norm_final_kernel<<<1, 32, 0, stream>>>(out_dev, part);
  CUDA_CHECK_LAUNCH("norm_final_kernel");
}
}  // namespace

void grad_norm_squared(double* norm_sq_dev, const float* g, idx_t n, cudaStream_t stream) {
  ordered_sum<true>(norm_sq_dev, g, n, stream);
}

void sum(double* sum_dev, const float* x, idx_t n, cudaStream_t stream) {
  ordered_sum<false>(sum_dev, x, n, stream);
}

void clip_scale(float* scale_dev, const double* norm_sq_dev, double max_norm, double pre_scale,
                cudaStream_t stream) {
  clip_kernel<<<1, 1, 0, stream>>>(scale_dev, norm_sq_dev, max_norm, pre_scale);
  CUDA_CHECK_LAUNCH("clip_kernel");
}

}  // namespace moessm::cuda
