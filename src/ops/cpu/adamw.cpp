// CPU AdamW step and gradient norm (contract in ops/adamw.h).
#include "ops/adamw.h"

#include <cmath>

namespace moessm::cpu {

template <typename T>
void adamw_update(T* params, T* m, T* v, const T* grads, idx_t n, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int64_t step, double grad_scale) {
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
#pragma omp parallel for schedule(static)
  for (idx_t i = 0; i < n; ++i) {
    const double g = double(grads[i]) * grad_scale;
    const double mi = beta1 * double(m[i]) + (1.0 - beta1) * g;
    const double vi = beta2 * double(v[i]) + (1.0 - beta2) * g * g;
    m[i] = static_cast<T>(mi);
    v[i] = static_cast<T>(vi);
    const double upd = (mi / bc1) / (std::sqrt(vi / bc2) + eps) + weight_decay * double(params[i]);
    params[i] = static_cast<T>(double(params[i]) - lr * upd);
  }
}

template <typename T> double grad_norm_squared(const T* g, idx_t n) {
  double s = 0;
  for (idx_t i = 0; i < n; ++i) s += double(g[i]) * double(g[i]);
  return s;
}

template <typename T> double sum(const T* x, idx_t n) {
  double s = 0;
  for (idx_t i = 0; i < n; ++i) s += double(x[i]);
  return s;
}

template void adamw_update<float>(float*, float*, float*, const float*, idx_t, double, double, double, double, double, int64_t, double);
template void adamw_update<double>(double*, double*, double*, const double*, idx_t, double, double, double, double, double, int64_t, double);
template double grad_norm_squared<float>(const float*, idx_t);
template double grad_norm_squared<double>(const double*, idx_t);
template double sum<float>(const float*, idx_t);
template double sum<double>(const double*, idx_t);

}  // namespace moessm::cpu
