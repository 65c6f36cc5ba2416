// CPU routed_gemv (see ops/routed_gemv.h): a loop over tokens, their K experts and the output
// columns; each dot product in the element type, in index order.
#include "ops/routed_gemv.h"

#include "core/check.h"

namespace moessm::cpu {

template <typename T>
void routed_gemv_forward(T* lo, idx_t lo_ld, const T* c_lo, T* hi, idx_t hi_ld, const T* c_hi, idx_t split,
                         const T* in, idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* idx, idx_t M,
                         idx_t K, idx_t N, idx_t Kd) {
  CHECK(M >= 0 && K >= 1 && N > 0 && Kd > 0 && split >= 0 && split <= N, "routed_gemv_forward: sizes M=", M, " K=",
        K, " N=", N, " Kd=", Kd, " split=", split);
  CHECK((split == 0 || lo) && (split == N || hi), "routed_gemv_forward: an output for a non-empty column range is null");
  for (idx_t m = 0; m < M; ++m) {
    const T* x = in + m * in_ld;
    for (idx_t n = 0; n < N; ++n) {
      const bool is_lo = n < split;
      const T* c = is_lo ? c_lo : c_hi;
      T y = 0;
      for (idx_t k = 0; k < K; ++k) {
        const T* w = weight + idx_t(idx[m * K + k]) * w_stride + n * Kd;
        T dot = 0;
        for (idx_t j = 0; j < Kd; ++j) dot += w[j] * x[j];
        y += (c ? c[m * K + k] : T(1)) * dot;
      }
      if (is_lo) lo[m * lo_ld + n] = y;
      else hi[m * hi_ld + n - split] = y;
    }
  }
}

template void routed_gemv_forward<float>(float*, idx_t, const float*, float*, idx_t, const float*, idx_t,
                                         const float*, idx_t, const float*, idx_t, const int32_t*, idx_t, idx_t,
                                         idx_t, idx_t);
template void routed_gemv_forward<double>(double*, idx_t, const double*, double*, idx_t, const double*, idx_t,
                                          const double*, idx_t, const double*, idx_t, const int32_t*, idx_t, idx_t,
                                          idx_t, idx_t);

}  // namespace moessm::cpu
