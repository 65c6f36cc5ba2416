// adamw: one decoupled-weight-decay Adam step on a contiguous slice (PyTorch AdamW semantics):
//   m = b1·m + (1-b1)·g;  v = b2·v + (1-b2)·g²
//   p -= lr · ( m/(1-b1^step) / (sqrt(v/(1-b2^step)) + eps) + wd·p )
// `step` counts from 1. The optimizer walks the parameter table and passes wd = 0 for no-decay
// tensors. Gradient clipping is a separate scale applied by the caller (grad_norm).
#pragma once
#include "ops/op_common.h"

namespace moessm {

struct AdamWConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

namespace cpu {

template <typename T>
void adamw_update(T* params, T* m, T* v, const T* grads, idx_t n, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int64_t step, double grad_scale = 1.0);

// Σ g² over n elements, accumulated in double in a fixed order.
template <typename T> double grad_norm_squared(const T* g, idx_t n);
// Σ x over n elements in double (the loss of a batch from per-row losses), fixed order.
template <typename T> double sum(const T* x, idx_t n);

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {
// fp32 master weights and moments; arithmetic in fp32 with the bias corrections computed in
// double on the host. The second form also takes the clip scale from device memory (so
// clipping needs no host sync) and refreshes an optional bf16 copy of the weights.
void adamw_update(float* params, float* m, float* v, const float* grads, idx_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step,
                  double grad_scale, cudaStream_t stream);
void adamw_update(float* params, __nv_bfloat16* params_bf16, float* m, float* v,
                  const float* grads, idx_t n, double lr, double beta1, double beta2, double eps,
                  double weight_decay, int64_t step, double grad_scale,
                  const float* grad_scale_dev, cudaStream_t stream);
// *norm_sq_dev = Σ g² in double: a fixed grid of per-block partials then one ordered sum
// (deterministic, independent of the device). Device pointer out; no host sync.
void grad_norm_squared(double* norm_sq_dev, const float* g, idx_t n, cudaStream_t stream);
// *sum_dev = Σ x in double, with the same fixed partial/ordered structure (deterministic).
void sum(double* sum_dev, const float* x, idx_t n, cudaStream_t stream);
// *scale_dev = pre_scale · (max_norm > 0 && norm > max_norm ? max_norm / norm : 1), with
// norm = pre_scale · sqrt(*norm_sq_dev) (pre_scale: e.g. 1/accumulation steps), as the trainer.
void clip_scale(float* scale_dev, const double* norm_sq_dev, double max_norm, double pre_scale,
                cudaStream_t stream);
}  // namespace moessm::cuda
#endif
