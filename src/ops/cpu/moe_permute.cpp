// CPU moe_permute (see ops/moe_permute.h). The plan is a counting sort over slots (serial, in slot
// order: stable). Data movement is parallel over tokens; every output row is written by exactly
// one thread, so no reduction depends on the thread count.
#include "ops/moe_permute.h"

#include <vector>

#include "core/check.h"

namespace moessm::cpu {

void moe_permute_plan(int32_t* offsets, int32_t* row_of_slot, const int32_t* idx, idx_t M,
                      idx_t E, idx_t K) {
  CHECK(M >= 0 && E >= 1 && K >= 1 && K <= E, "moe_permute_plan: need 1 <= K <= E, found M=", M,
        " E=", E, " K=", K);
  CHECK(M * K < (idx_t(1) << 31), "moe_permute_plan: ", M * K, " slots exceed int32 row indices");
  std::vector<int32_t> count(static_cast<size_t>(E) + 1, 0);
  for (idx_t s = 0; s < M * K; ++s) {
    CHECK(idx[s] >= 0 && idx[s] < E, "moe_permute_plan: expert index ", idx[s], " at slot ", s,
          " outside [0, ", E, ")");
    ++count[idx[s] + 1];
  }
  offsets[0] = 0;
  for (idx_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + count[e + 1];
  std::vector<int32_t> next(offsets, offsets + E);
  for (idx_t s = 0; s < M * K; ++s) row_of_slot[s] = next[idx[s]]++;
}

void moe_permute_plan_stacked(int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E,
                              idx_t K) {
  CHECK(M >= 0 && E >= 1 && K >= 1 && K <= E, "moe_permute_plan_stacked: need 1 <= K <= E, found M=",
        M, " E=", E, " K=", K);
  CHECK(E * M < (idx_t(1) << 31), "moe_permute_plan_stacked: ", E * M, " stacked rows exceed int32 row indices");
  for (idx_t s = 0; s < M * K; ++s) {
    CHECK(idx[s] >= 0 && idx[s] < E, "moe_permute_plan_stacked: expert index ", idx[s], " at slot ",
          s, " outside [0, ", E, ")");
    row_of_slot[s] = int32_t(idx[s] * M + s / K);
  }
}

template <typename T>
void moe_permute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld,
                         const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
#pragma omp parallel for schedule(static)
  for (idx_t m = 0; m < M; ++m)
    for (idx_t k = 0; k < K; ++k) {
      T* o = out + idx_t(row_of_slot[m * K + k]) * out_ld;
      const T* i = in + m * in_ld;
      for (idx_t x = 0; x < X; ++x) o[x] = i[x];
    }
}

template <typename T>
void moe_permute_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld,
                          const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (idx_t m = 0; m < M; ++m) {
    T* d = din + m * din_ld;
    if (!accumulate)
      for (idx_t x = 0; x < X; ++x) d[x] = T(0);
    for (idx_t k = 0; k < K; ++k) {
      const T* g = dout + idx_t(row_of_slot[m * K + k]) * dout_ld;
      for (idx_t x = 0; x < X; ++x) d[x] += g[x];
    }
  }
}

template <typename T>
void moe_unpermute_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* w,
                           const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
#pragma omp parallel for schedule(static)
  for (idx_t m = 0; m < M; ++m) {
    T* o = out + m * out_ld;
    for (idx_t x = 0; x < X; ++x) o[x] = T(0);
    for (idx_t k = 0; k < K; ++k) {
      const T* i = in + idx_t(row_of_slot[m * K + k]) * in_ld;
      if (w) {
        const T c = w[m * K + k];
        for (idx_t x = 0; x < X; ++x) o[x] += c * i[x];
      } else {
        for (idx_t x = 0; x < X; ++x) o[x] += i[x];
      }
    }
  }
}

template <typename T>
void moe_unpermute_backward(T* din, idx_t din_ld, T* dw, const T* dout, idx_t dout_ld,
                            const T* in, idx_t in_ld, const T* w, const int32_t* row_of_slot,
                            idx_t M, idx_t K, idx_t X, bool dw_accumulate) {
#pragma omp parallel for schedule(static)
  for (idx_t m = 0; m < M; ++m) {
    const T* g = dout + m * dout_ld;
    for (idx_t k = 0; k < K; ++k) {
      const idx_t r = row_of_slot[m * K + k];
      if (din) {
        T* d = din + r * din_ld;
        const T c = w ? w[m * K + k] : T(1);
        for (idx_t x = 0; x < X; ++x) d[x] = c * g[x];
      }
      if (w && dw) {
        const T* i = in + r * in_ld;
        T s = 0;
        for (idx_t x = 0; x < X; ++x) s += g[x] * i[x];
        dw[m * K + k] = dw_accumulate ? dw[m * K + k] + s : s;
      }
    }
  }
}

#define MOESSM_INSTANTIATE_PERMUTE(T)                                                              \
  template void moe_permute_forward<T>(T*, idx_t, const T*, idx_t, const int32_t*, idx_t, idx_t,   \
                                       idx_t);                                                     \
  template void moe_permute_backward<T>(T*, idx_t, const T*, idx_t, const int32_t*, idx_t, idx_t,  \
                                        idx_t, bool);                                              \
  template void moe_unpermute_forward<T>(T*, idx_t, const T*, idx_t, const T*, const int32_t*,     \
                                         idx_t, idx_t, idx_t);                                     \
  template void moe_unpermute_backward<T>(T*, idx_t, T*, const T*, idx_t, const T*, idx_t,         \
                                          const T*, const int32_t*, idx_t, idx_t, idx_t, bool);
MOESSM_INSTANTIATE_PERMUTE(float)
MOESSM_INSTANTIATE_PERMUTE(double)

}  // namespace moessm::cpu
