// CPU delta_softplus (contract in ops/delta_softplus.h). Forward is parallel over rows; backward
// is serial so that dbias sums rows in increasing order.
#include "ops/delta_softplus.h"

#include "ops/activations.h"

namespace moessm::cpu {

template <typename T>
void delta_softplus_forward(T* out, const T* x, const T* bias, idx_t M, idx_t Di) {
#pragma omp parallel for schedule(static) if (M * Di >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < Di; ++c) out[m * Di + c] = softplus_of(x[m * Di + c] + bias[c]);
}

template <typename T>
void delta_softplus_backward(T* dx, T* dbias, const T* dout, const T* x, const T* bias, idx_t M,
                             idx_t Di) {
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < Di; ++c) {
      const T v = dout[m * Di + c] * softplus_grad_of(x[m * Di + c] + bias[c]);
      dx[m * Di + c] = v;
      dbias[c] += v;
    }
}

template void delta_softplus_forward<float>(float*, const float*, const float*, idx_t, idx_t);
template void delta_softplus_forward<double>(double*, const double*, const double*, idx_t, idx_t);
template void delta_softplus_backward<float>(float*, float*, const float*, const float*,
                                             const float*, idx_t, idx_t);
template void delta_softplus_backward<double>(double*, double*, const double*, const double*,
                                              const double*, idx_t, idx_t);

}  // namespace moessm::cpu
