// CPU grouped_matmul (see ops/grouped_matmul.h): a loop over experts, each a cpu::matmul on its
// contiguous block of grouped rows (the threading is inside the GEMM; experts run in order).
#include "ops/grouped_matmul.h"

#include "core/check.h"
#include "ops/matmul.h"

namespace moessm::cpu {

template <typename T>
void grouped_matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight,
                            idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N, idx_t Kd) {
  CHECK(offsets[0] == 0, "grouped_matmul_forward: offsets[0] must be 0, found ", offsets[0]);
  for (idx_t e = 0; e < E; ++e) {
    const idx_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
    CHECK(rows >= 0, "grouped_matmul_forward: offsets decrease at expert ", e);
    if (rows == 0) continue;
    matmul_forward(out + r0 * out_ld, out_ld, in + r0 * in_ld, in_ld, weight + e * w_stride,
                   (const T*)nullptr, rows, N, Kd);
  }
}

template <typename T>
void grouped_matmul_backward(T* din, idx_t din_ld, T* dweight, const T* dout, idx_t dout_ld,
                             const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                             const int32_t* offsets, idx_t E, idx_t N, idx_t Kd,
                             bool din_accumulate) {
  CHECK(offsets[0] == 0, "grouped_matmul_backward: offsets[0] must be 0, found ", offsets[0]);
  for (idx_t e = 0; e < E; ++e) {
    const idx_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
    CHECK(rows >= 0, "grouped_matmul_backward: offsets decrease at expert ", e);
    if (rows == 0) continue;
    matmul_backward(din ? din + r0 * din_ld : nullptr, din_ld,
                    dweight ? dweight + e * w_stride : nullptr, (T*)nullptr, dout + r0 * dout_ld,
                    dout_ld, in + r0 * in_ld, in_ld, weight + e * w_stride, rows, N, Kd,
                    din_accumulate);
  }
}

template void grouped_matmul_forward<float>(float*, idx_t, const float*, idx_t, const float*, idx_t,
                                            const int32_t*, idx_t, idx_t, idx_t);
template void grouped_matmul_forward<double>(double*, idx_t, const double*, idx_t, const double*,
                                             idx_t, const int32_t*, idx_t, idx_t, idx_t);
template void grouped_matmul_backward<float>(float*, idx_t, float*, const float*, idx_t,
                                             const float*, idx_t, const float*, idx_t,
                                             const int32_t*, idx_t, idx_t, idx_t, bool);
template void grouped_matmul_backward<double>(double*, idx_t, double*, const double*, idx_t,
                                              const double*, idx_t, const double*, idx_t,
                                              const int32_t*, idx_t, idx_t, idx_t, bool);

}  // namespace moessm::cpu
