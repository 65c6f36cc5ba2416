// CPU elementwise silu / softplus (contract in ops/activations.h).
#include "ops/activations.h"

namespace moessm::cpu {

template <typename T> void silu_forward(T* out, const T* x, idx_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (idx_t i = 0; i < n; ++i) out[i] = silu_of(x[i]);
}
template <typename T> void silu_backward(T* dx, const T* dout, const T* x, idx_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (idx_t i = 0; i < n; ++i) dx[i] = dout[i] * silu_grad_of(x[i]);
}
template <typename T> void softplus_forward(T* out, const T* x, idx_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (idx_t i = 0; i < n; ++i) out[i] = softplus_of(x[i]);
}
template <typename T> void softplus_backward(T* dx, const T* dout, const T* x, idx_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (idx_t i = 0; i < n; ++i) dx[i] = dout[i] * softplus_grad_of(x[i]);
}

#define INSTANTIATE(T)                                                    \
  template void silu_forward<T>(T*, const T*, idx_t);                     \
  template void silu_backward<T>(T*, const T*, const T*, idx_t);          \
  template void softplus_forward<T>(T*, const T*, idx_t);                 \
  template void softplus_backward<T>(T*, const T*, const T*, idx_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm::cpu
