// CPU ssm_a (see ops/ssm_a.h).
#include "ops/ssm_a.h"

#include <cmath>

namespace moessm::cpu {

// An exp costs about kScanStateWork units of kParallelMinWork (a decode step's Di 256 x N 16
// per layer is then worth two threads).
template <typename T>
void ssm_a_forward(T* A, const T* A_log, idx_t n) {
#pragma omp parallel for schedule(static) if (n * kScanStateWork >= kParallelMinWork)
  for (idx_t i = 0; i < n; ++i) A[i] = -std::exp(A_log[i]);
}

template <typename T>
void ssm_a_backward(T* dA_log, const T* dA, const T* A, idx_t n) {
  for (idx_t i = 0; i < n; ++i) dA_log[i] += dA[i] * A[i];
}

template void ssm_a_forward<float>(float*, const float*, idx_t);
template void ssm_a_forward<double>(double*, const double*, idx_t);
template void ssm_a_backward<float>(float*, const float*, const float*, idx_t);
template void ssm_a_backward<double>(double*, const double*, const double*, idx_t);

}  // namespace moessm::cpu
