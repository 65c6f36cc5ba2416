// CPU fused softmax cross-entropy (contract in ops/cross_entropy.h). Row sums in double.
#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace moessm::cpu {

template <typename T>
void cross_entropy_forward(T* loss, T* lse, const T* logits, const int32_t* targets, idx_t rows,
                           idx_t V) {
  for (idx_t r = 0; r < rows; ++r)
    CHECK(targets[r] < V, "target id ", targets[r], " at position ", r, " is outside the vocabulary [0, ", V, ")");
#pragma omp parallel for schedule(static) if (rows * V >= kParallelMinWork)
  for (idx_t r = 0; r < rows; ++r) {
    const T* l = logits + r * V;
    T mx = l[0];
    for (idx_t i = 1; i < V; ++i) mx = std::max(mx, l[i]);
    double s = 0;
    for (idx_t i = 0; i < V; ++i) s += std::exp(double(l[i] - mx));
    const T z = static_cast<T>(double(mx) + std::log(s));
    lse[r] = z;
    loss[r] = targets[r] < 0 ? T(0) : z - l[targets[r]];
  }
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* dloss, const T* logits, const T* lse,
                            const int32_t* targets, idx_t rows, idx_t V) {
#pragma omp parallel for schedule(static) if (rows * V >= kParallelMinWork)
  for (idx_t r = 0; r < rows; ++r) {
    const T* l = logits + r * V;
    T* d = dlogits + r * V;
    const T g = targets[r] < 0 ? T(0) : dloss[r];
    for (idx_t i = 0; i < V; ++i) d[i] = g * std::exp(l[i] - lse[r]);
    if (targets[r] >= 0) d[targets[r]] -= g;
  }
}

template void cross_entropy_forward<float>(float*, float*, const float*, const int32_t*, idx_t, idx_t);
template void cross_entropy_forward<double>(double*, double*, const double*, const int32_t*, idx_t, idx_t);
template void cross_entropy_backward<float>(float*, const float*, const float*, const float*, const int32_t*, idx_t, idx_t);
template void cross_entropy_backward<double>(double*, const double*, const double*, const double*, const int32_t*, idx_t, idx_t);

}  // namespace moessm::cpu
