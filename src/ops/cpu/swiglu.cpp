// CPU swiglu (contract in ops/swiglu.h): the reference, parallel over rows.
#include "ops/swiglu.h"

#include "core/check.h"
#include "ops/activations.h"

namespace moessm::cpu {

namespace {
void check_view(const char* op, idx_t M, idx_t X, idx_t ld, const char* name) {
  CHECK(M >= 0 && X >= 0, op, ": sizes M=", M, " X=", X, " must be >= 0");
  CHECK(ld >= X, op, ": row stride ", name, "=", ld, " must be >= X=", X);
}
}  // namespace

template <typename T>
void swiglu_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M, idx_t X) {
  check_view("swiglu_forward", M, X, out_ld, "out_ld");
  check_view("swiglu_forward", M, X, a_ld, "a_ld");
  check_view("swiglu_forward", M, X, b_ld, "b_ld");
#pragma omp parallel for schedule(static) if (M * X >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) out[m * out_ld + x] = silu_of(a[m * a_ld + x]) * b[m * b_ld + x];
}

template <typename T>
void swiglu_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, const T* a, idx_t a_ld,
                     const T* b, idx_t b_ld, idx_t M, idx_t X) {
  check_view("swiglu_backward", M, X, da_ld, "da_ld");
  check_view("swiglu_backward", M, X, db_ld, "db_ld");
  check_view("swiglu_backward", M, X, dout_ld, "dout_ld");
  check_view("swiglu_backward", M, X, a_ld, "a_ld");
  check_view("swiglu_backward", M, X, b_ld, "b_ld");
#pragma omp parallel for schedule(static) if (M * X >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) {
      const T av = a[m * a_ld + x], g = dout[m * dout_ld + x];
      da[m * da_ld + x] = g * b[m * b_ld + x] * silu_grad_of(av);
      db[m * db_ld + x] = g * silu_of(av);
    }
}

#define MOESSM_CPU_SWIGLU(T)                                                                               \
  template void swiglu_forward<T>(T*, idx_t, const T*, idx_t, const T*, idx_t, idx_t, idx_t);              \
  template void swiglu_backward<T>(T*, idx_t, T*, idx_t, const T*, idx_t, const T*, idx_t, const T*, idx_t, \
                                   idx_t, idx_t);
MOESSM_CPU_SWIGLU(float)
MOESSM_CPU_SWIGLU(double)

}  // namespace moessm::cpu
