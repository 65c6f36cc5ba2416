// CUDA fused softmax cross-entropy (contract in ops/cross_entropy.h). A block of 256 threads
// owns a row; each thread keeps an online (max, Σexp) over its strided slice of the vocabulary
// (the row is walked in chunks of 256 without staging), and the block merges the 256 pairs in a
// fixed tree order. Backward is elementwise. Arithmetic in fp32.
#include "ops/cross_entropy.h"
#include "ops/cuda/common.cuh"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;
  s = s * __expf(m - mn) + s2 * __expf(m2 - mn);
  m = mn;
}

// Returns logsumexp of row l[0..V) to every thread of the block.
template <typename T>
__device__ float row_lse(const T* l, idx_t V) {
  __shared__ float sm[kThreads], ss[kThreads];
  float m = -INFINITY, s = 0.f;
  for (idx_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = to_f32(l[i]);
    if (v > m) {
      s = s * __expf(m - v) + 1.f;
      m = v;
    } else {
      s += __expf(v - m);
    }
  }
  sm[threadIdx.x] = m;
  ss[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
      float a = sm[threadIdx.x], b = ss[threadIdx.x];
      merge(a, b, sm[threadIdx.x + w], ss[threadIdx.x + w]);
      sm[threadIdx.x] = a;
      ss[threadIdx.x] = b;
    }
    __syncthreads();
  }
  const float z = sm[0] + logf(ss[0]);
  __syncthreads();  // sm / ss reusable by a later call
  return z;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
ce_fwd_kernel(float* loss, float* lse, const T* logits, const int32_t* targets, idx_t V) {
  const idx_t r = blockIdx.x;
  const T* l = logits + r * V;
  const float z = row_lse(l, V);
  if (threadIdx.x == 0) {
    const int32_t t = targets[r];
    lse[r] = z;
    loss[r] = t < 0 ? 0.f : (t >= V ? __int_as_float(0x7fc00000) : z - to_f32(l[t]));
  }
}

template <typename T>
__global__ void ce_bwd_kernel(T* dlogits, const float* dloss, const T* logits, const float* lse,
                              const int32_t* targets, idx_t V) {
  const idx_t r = blockIdx.y;
  const int32_t t = targets[r];
  const float g = t < 0 ? 0.f : dloss[r];
  const float z = lse[r];
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < V; i += idx_t(gridDim.x) * blockDim.x) {
    float d = g * __expf(to_f32(logits[r * V + i]) - z);
    if (i == t) d -= g;
    dlogits[r * V + i] = from_f32<T>(d);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
ce_fused_kernel(float* loss, float* lse, T* dlogits, const T* logits, const int32_t* targets,
                float scale, idx_t V) {
  const idx_t r = blockIdx.x;
  const T* l = logits + r * V;
  const float z = row_lse(l, V);
  const int32_t t = targets[r];
  float lt = 0.f;
  if (t >= 0 && t < V) lt = to_f32(l[t]);  // read before the in-place overwrite below
  __syncthreads();
  if (threadIdx.x == 0) {
    lse[r] = z;
    loss[r] = t < 0 ? 0.f : (t >= V ? __int_as_float(0x7fc00000) : z - lt);
  }
  const float g = t < 0 ? 0.f : scale;
  for (idx_t i = threadIdx.x; i < V; i += kThreads) {
    float d = g * __expf(to_f32(l[i]) - z);
    if (i == t) d -= g;
    dlogits[r * V + i] = from_f32<T>(d);
  }
}

void check_sizes(idx_t rows, idx_t V) {
  CHECK(rows >= 0 && V > 0, "cuda cross_entropy: rows=", rows, " V=", V);
  CHECK(rows <= 0x7fffffff, "cuda cross_entropy: rows=", rows, " exceeds 2^31-1");
}

}  // namespace

template <typename T>
void cross_entropy_forward(float* loss, float* lse, const T* logits, const int32_t* targets,
                           idx_t rows, idx_t V, cudaStream_t stream) {
  check_sizes(rows, V);
  if (rows == 0) return;
  ce_fwd_kernel<T><<<unsigned(rows), kThreads, 0, stream>>>(loss, lse, logits, targets, V);
  CUDA_CHECK_LAUNCH("ce_fwd_kernel");
}

template <typename T>
void cross_entropy_backward(T* dlogits, const float* dloss, const T* logits, const float* lse,
                            const int32_t* targets, idx_t rows, idx_t V, cudaStream_t stream) {
  check_sizes(rows, V);
  CHECK(rows <= 65535, "cuda cross_entropy_backward: rows=", rows, " exceeds 65535 (call per chunk of rows)");
  if (rows == 0) return;
  const dim3 grid{unsigned(std::min<idx_t>((V + 255) / 256, 64)), unsigned(rows)};
  ce_bwd_kernel<T><<<grid, 256, 0, stream>>>(dlogits, dloss, logits, lse, targets, V);
  CUDA_CHECK_LAUNCH("ce_bwd_kernel");
}

template <typename T>
void cross_entropy_forward_backward(float* loss, float* lse, T* dlogits, const T* logits,
                                    const int32_t* targets, float dloss_scale, idx_t rows, idx_t V,
                                    cudaStream_t stream) {
  check_sizes(rows, V);
  if (rows == 0) return;
  ce_fused_kernel<T><<<unsigned(rows), kThreads, 0, stream>>>(loss, lse, dlogits, logits, targets,
                                                              dloss_scale, V);
  CUDA_CHECK_LAUNCH("ce_fused_kernel");
}

#define INSTANTIATE(T)                                                                              \
  template void cross_entropy_forward<T>(float*, float*, const T*, const int32_t*, idx_t, idx_t, cudaStream_t); \
  template void cross_entropy_backward<T>(T*, const float*, const T*, const float*, const int32_t*, idx_t, idx_t, cudaStream_t); \
  template void cross_entropy_forward_backward<T>(float*, float*, T*, const T*, const int32_t*, float, idx_t, idx_t, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace moessm::cuda
