// CPU embedding lookup and its deterministic backward (contract in ops/embedding.h).
#include "ops/embedding.h"

#include "core/check.h"

namespace moessm::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, idx_t rows, idx_t V, idx_t D) {
  for (idx_t r = 0; r < rows; ++r)
    CHECK(ids[r] >= 0 && ids[r] < V, "token id ", ids[r], " at position ", r,
          " is outside the vocabulary [0, ", V, ")");
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMinWork)
  for (idx_t r = 0; r < rows; ++r) {
    const T* src = table + static_cast<idx_t>(ids[r]) * D;
    T* dst = out + r * D;
    for (idx_t i = 0; i < D; ++i) dst[i] = src[i];
  }
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, idx_t rows, idx_t V, idx_t D) {
  // Parallel over columns, rows in order inside: each element's sum has a fixed order.
#pragma omp parallel for schedule(static) if (rows * D >= kParallelMinWork)
  for (idx_t i = 0; i < D; ++i)
    for (idx_t r = 0; r < rows; ++r) dtable[static_cast<idx_t>(ids[r]) * D + i] += dout[r * D + i];
}

template void embedding_forward<float>(float*, const int32_t*, const float*, idx_t, idx_t, idx_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, idx_t, idx_t, idx_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, idx_t, idx_t, idx_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, idx_t, idx_t, idx_t);

}  // namespace moessm::cpu
