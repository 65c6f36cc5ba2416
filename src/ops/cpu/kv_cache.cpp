// CPU kv_cache_append (contract in ops/kv_cache.h).
#include "ops/kv_cache.h"

#include <algorithm>

#include "core/check.h"
#include "ops/rope.h"

namespace moessm::cpu {

template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, T* pos0, const T* k, idx_t k_ld, const T* v, idx_t v_ld, idx_t B,
                     idx_t T_, idx_t C, idx_t Hkv, idx_t hd) {
  const idx_t row = Hkv * hd;
  CHECK(B >= 0 && T_ >= 0 && C >= 1 && row >= 1, "kv_cache_append: sizes B=", B, " T=", T_, " C=", C,
        " Hkv·hd=", row, " (C and Hkv·hd must be >= 1)");
  CHECK(k_ld >= row && v_ld >= row, "kv_cache_append: k_ld ", k_ld, " / v_ld ", v_ld, " must be >= Hkv·hd = ", row);
  for (idx_t b = 0; b < B; ++b) {
    const int64_t P = decode_rope_position(double(pos0[b]));
    for (int64_t pp = std::max<int64_t>(P, P + T_ - C); pp < P + T_; ++pp) {
      const idx_t t = pp - P, slot = pp % C;
      std::copy(k + (b * T_ + t) * k_ld, k + (b * T_ + t) * k_ld + row, k_cache + (b * C + slot) * row);
      std::copy(v + (b * T_ + t) * v_ld, v + (b * T_ + t) * v_ld + row, v_cache + (b * C + slot) * row);
    }
    pos0[b] = T(P + T_);
  }
}

template void kv_cache_append<float>(float*, float*, float*, const float*, idx_t, const float*, idx_t, idx_t, idx_t,
                                     idx_t, idx_t, idx_t);
template void kv_cache_append<double>(double*, double*, double*, const double*, idx_t, const double*, idx_t, idx_t,
                                      idx_t, idx_t, idx_t, idx_t);

}  // namespace moessm::cpu
