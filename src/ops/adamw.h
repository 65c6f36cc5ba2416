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

// sqrt(Σ g²) over n elements, accumulated in double in a fixed order.
template <typename T> double grad_norm_squared(const T* g, idx_t n);

}  // namespace cpu
}  // namespace moessm
