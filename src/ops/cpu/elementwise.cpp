// CPU elementwise ops (contract in ops/elementwise.h). Each output element is written once by one
// thread.
#include "ops/elementwise.h"

namespace moessm::cpu {

template <typename T> void fill(T* out, T value, idx_t n) {
  for (idx_t i = 0; i < n; ++i) out[i] = value;
}

template <typename T> void fill(T* out, idx_t out_ld, T value, idx_t M, idx_t X) {
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) out[m * out_ld + x] = value;
}

template <typename T> void copy(T* out, idx_t out_ld, const T* in, idx_t in_ld, idx_t M, idx_t X) {
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) out[m * out_ld + x] = in[m * in_ld + x];
}

template <typename T>
void add_forward(T* out, idx_t out_ld, const T* a, idx_t a_ld, const T* b, idx_t b_ld, idx_t M,
                 idx_t X) {
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) out[m * out_ld + x] = a[m * a_ld + x] + b[m * b_ld + x];
}

template <typename T>
void add_backward(T* da, idx_t da_ld, T* db, idx_t db_ld, const T* dout, idx_t dout_ld, idx_t M,
                  idx_t X) {
  if (da) copy(da, da_ld, dout, dout_ld, M, X);
  if (db) copy(db, db_ld, dout, dout_ld, M, X);
}

#define MOESSM_INSTANTIATE_ELEMENTWISE(T)                                                       \
  template void fill<T>(T*, T, idx_t);                                                          \
  template void fill<T>(T*, idx_t, T, idx_t, idx_t);                                            \
  template void copy<T>(T*, idx_t, const T*, idx_t, idx_t, idx_t);                              \
  template void add_forward<T>(T*, idx_t, const T*, idx_t, const T*, idx_t, idx_t, idx_t);      \
  template void add_backward<T>(T*, idx_t, T*, idx_t, const T*, idx_t, idx_t, idx_t);
MOESSM_INSTANTIATE_ELEMENTWISE(float)
MOESSM_INSTANTIATE_ELEMENTWISE(double)

}  // namespace moessm::cpu
