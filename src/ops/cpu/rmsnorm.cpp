// CPU rmsnorm forward / backward (contract in ops/rmsnorm.h). Row statistics in double.
#include "ops/rmsnorm.h"

#include <cmath>
#include <vector>

namespace moessm::cpu {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, idx_t rows, idx_t D, double eps) {
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMinWork)
  for (idx_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    double ss = 0;
    for (idx_t i = 0; i < D; ++i) ss += double(xr[i]) * double(xr[i]);
    const T rs = static_cast<T>(1.0 / std::sqrt(ss / double(D) + eps));
    if (rstd) rstd[r] = rs;
    T* o = out + r * D;
    for (idx_t i = 0; i < D; ++i) o[i] = xr[i] * rs * w[i];
  }
}

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd,
                      idx_t rows, idx_t D, bool dx_accumulate) {
  // y_i = x_i·r·w_i, r = (mean x² + eps)^-1/2  →  dx_i = r·w_i·g_i - x_i·r³/D · Σ_j g_j·w_j·x_j
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMinWork)
  for (idx_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    const T* g = dout + r * D;
    const T rs = rstd[r];
    double dot = 0;
    for (idx_t i = 0; i < D; ++i) dot += double(g[i]) * double(w[i]) * double(xr[i]);
    const T k = static_cast<T>(dot * double(rs) * double(rs) * double(rs) / double(D));
    T* d = dx + r * D;
    for (idx_t i = 0; i < D; ++i) {
      T v = rs * w[i] * g[i] - xr[i] * k;
      d[i] = dx_accumulate ? d[i] + v : v;
    }
  }
  if (dw) {
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMinWork)
    for (idx_t i = 0; i < D; ++i) {
      T acc = 0;
      for (idx_t r = 0; r < rows; ++r) acc += dout[r * D + i] * x[r * D + i] * rstd[r];
      dw[i] += acc;
    }
  }
}

#define INSTANTIATE(T)                                                                        \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, idx_t, idx_t, double);          \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, idx_t, idx_t, \
                                    bool);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm::cpu
