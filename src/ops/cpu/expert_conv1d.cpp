// CPU expert_conv1d (contract in ops/expert_conv1d.h): E calls of causal_conv1d, combined with
// the indicator of the routing. Sums over experts run in increasing e, so results do not depend
// on the thread count.
#include "ops/expert_conv1d.h"

#include "core/check.h"
#include "ops/activations.h"
#include "ops/causal_conv1d.h"

namespace moessm::cpu {

namespace {
bool chooses(const int32_t* idx, idx_t m, idx_t K, idx_t e) {
  for (idx_t k = 0; k < K; ++k)
    if (idx[m * K + k] == int32_t(e)) return true;
  return false;
}
}  // namespace

template <typename T>
void expert_conv1d_forward(T* out, idx_t out_ld, T* pre, T* state_out, T* work, const T* x,
                           idx_t x_ld, const T* state_in, const int32_t* idx, const T* w,
                           const T* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K) {
  CHECK(E >= 1 && K >= 1 && K <= E, "expert_conv1d: need 1 <= K <= E, found E=", E, " K=", K);
  const idx_t M = B * T_;
  for (idx_t i = 0; i < M * Di; ++i) pre[i] = T(0);
  for (idx_t e = 0; e < E; ++e) {
    // Only the last call writes the carried state: state_out may alias state_in.
    causal_conv1d_forward(work, Di, e == E - 1 ? state_out : nullptr, x, x_ld, state_in, nullptr,
                          w + e * Di * Kc, bias + e * Di, B, T_, Di, Kc, false);
    for (idx_t m = 0; m < M; ++m)
      if (chooses(idx, m, K, e))
        for (idx_t c = 0; c < Di; ++c) pre[m * Di + c] += work[m * Di + c];
  }
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < Di; ++c) out[m * out_ld + c] = silu_of(pre[m * Di + c]);
}

template <typename T>
void expert_conv1d_backward(T* dx, idx_t dx_ld, T* dw, T* dbias, T* dpre_work, T* dx_work,
                            const T* dout, idx_t dout_ld, const T* x, idx_t x_ld,
                            const T* state_in, const T* pre, const int32_t* idx, const T* w,
                            const T* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K) {
  CHECK(E >= 1 && K >= 1 && K <= E, "expert_conv1d: need 1 <= K <= E, found E=", E, " K=", K);
  const idx_t M = B * T_;
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < Di; ++c) dx[m * dx_ld + c] = T(0);
  for (idx_t e = 0; e < E; ++e) {
    bool any = false;
    for (idx_t s = 0; s < M * K && !any; ++s) any = idx[s] == int32_t(e);
    if (!any) continue;  // no token chose e: no gradient
    for (idx_t m = 0; m < M; ++m) {
      const bool on = chooses(idx, m, K, e);
      for (idx_t c = 0; c < Di; ++c)
        dpre_work[m * Di + c] = on ? dout[m * dout_ld + c] * silu_grad_of(pre[m * Di + c]) : T(0);
    }
    causal_conv1d_backward(dx_work, Di, dw + e * Di * Kc, dbias + e * Di, dpre_work, Di, x, x_ld,
                           state_in, nullptr, w + e * Di * Kc, bias + e * Di, B, T_, Di, Kc, false);
    for (idx_t m = 0; m < M; ++m)
      for (idx_t c = 0; c < Di; ++c) dx[m * dx_ld + c] += dx_work[m * Di + c];
  }
}

#define MOESSM_INSTANTIATE_EXPERT_CONV(T)                                                         \
  template void expert_conv1d_forward<T>(T*, idx_t, T*, T*, T*, const T*, idx_t, const T*,        \
                                         const int32_t*, const T*, const T*, idx_t, idx_t, idx_t, \
                                         idx_t, idx_t, idx_t);                                    \
  template void expert_conv1d_backward<T>(T*, idx_t, T*, T*, T*, T*, const T*, idx_t, const T*,   \
                                          idx_t, const T*, const T*, const int32_t*, const T*,    \
                                          const T*, idx_t, idx_t, idx_t, idx_t, idx_t, idx_t);
MOESSM_INSTANTIATE_EXPERT_CONV(float)
MOESSM_INSTANTIATE_EXPERT_CONV(double)

}  // namespace moessm::cpu
