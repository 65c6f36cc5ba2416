// CPU causal depthwise conv1d (+ optional SiLU); see ops/causal_conv1d.h for the contract.
// Channels are independent, so work is split over (b, c); each output element is computed by
// exactly one thread (deterministic). dw / dbias are reduced per channel in a fixed order.
#include "ops/causal_conv1d.h"

#include <vector>

#include "core/check.h"
#include "ops/activations.h"

namespace moessm::cpu {

namespace {
// x value at time t (may be negative: read from the carried state).
template <typename T>
inline T x_at(const T* x, idx_t x_ld, const T* state, idx_t Kc, idx_t t, idx_t c) {
  if (t >= 0) return x[t * x_ld + c];
  return state ? state[c * (Kc - 1) + (Kc - 1 + t)] : T(0);
}
}  // namespace

template <typename T>
void causal_conv1d_forward(T* out, idx_t out_ld, T* state_out, const T* x, idx_t x_ld,
                           const T* state_in, const T* w, const T* bias, idx_t B, idx_t T_,
                           idx_t Di, idx_t Kc, bool silu) {
  CHECK(Kc >= 1 && Kc <= 16, "causal_conv1d: kernel width ", Kc, " outside the supported 1..16");
  const idx_t S = Kc - 1;
#pragma omp parallel for collapse(2) schedule(static)
  for (idx_t b = 0; b < B; ++b)
    for (idx_t c = 0; c < Di; ++c) {
      const T* xb = x + b * T_ * x_ld;
      const T* sb = state_in ? state_in + b * Di * S : nullptr;
      T* ob = out + b * T_ * out_ld;
      T tail[16];  // new state for this channel; read everything before writing (may alias)
      for (idx_t j = 0; j < S; ++j) tail[j] = x_at(xb, x_ld, sb, Kc, T_ - S + j, c);
      for (idx_t t = 0; t < T_; ++t) {
        T acc = bias ? bias[c] : T(0);
        for (idx_t j = 0; j < Kc; ++j) acc += w[c * Kc + j] * x_at(xb, x_ld, sb, Kc, t - Kc + 1 + j, c);
        ob[t * out_ld + c] = silu ? silu_of(acc) : acc;
      }
      if (state_out)
        for (idx_t j = 0; j < S; ++j) state_out[b * Di * S + c * S + j] = tail[j];
    }
}

template <typename T>
void causal_conv1d_backward(T* dx, idx_t dx_ld, T* dw, T* dbias, const T* dout, idx_t dout_ld,
                            const T* x, idx_t x_ld, const T* state_in, const T* w, const T* bias,
                            idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu) {
  CHECK(Kc >= 1 && Kc <= 16, "causal_conv1d: kernel width ", Kc, " outside the supported 1..16");
  const idx_t S = Kc - 1;
#pragma omp parallel for schedule(static)
  for (idx_t c = 0; c < Di; ++c) {
    T dw_acc[16] = {};
    T db_acc = 0;
    std::vector<T> dpre(static_cast<size_t>(T_));
    for (idx_t b = 0; b < B; ++b) {
      const T* xb = x + b * T_ * x_ld;
      const T* sb = state_in ? state_in + b * Di * S : nullptr;
      for (idx_t t = 0; t < T_; ++t) {
        T g = dout[b * T_ * dout_ld + t * dout_ld + c];
        if (silu) {
          T pre = bias ? bias[c] : T(0);
          for (idx_t j = 0; j < Kc; ++j) pre += w[c * Kc + j] * x_at(xb, x_ld, sb, Kc, t - Kc + 1 + j, c);
          g *= silu_grad_of(pre);
        }
        dpre[t] = g;
        db_acc += g;
        for (idx_t j = 0; j < Kc; ++j) dw_acc[j] += g * x_at(xb, x_ld, sb, Kc, t - Kc + 1 + j, c);
      }
      if (dx)
        for (idx_t t = 0; t < T_; ++t) {
          T acc = 0;  // x[t] feeds outputs t .. t+Kc-1 through tap j = Kc-1-(s-t)
          for (idx_t j = 0; j < Kc; ++j) {
            idx_t s = t + (Kc - 1 - j);
            if (s < T_) acc += w[c * Kc + j] * dpre[s];
          }
          dx[b * T_ * dx_ld + t * dx_ld + c] = acc;
        }
    }
    if (dw)
      for (idx_t j = 0; j < Kc; ++j) dw[c * Kc + j] += dw_acc[j];
    if (dbias) dbias[c] += db_acc;
  }
}

#define INSTANTIATE(T)                                                                         \
  template void causal_conv1d_forward<T>(T*, idx_t, T*, const T*, idx_t, const T*, const T*,   \
                                         const T*, idx_t, idx_t, idx_t, idx_t, bool);          \
  template void causal_conv1d_backward<T>(T*, idx_t, T*, T*, const T*, idx_t, const T*, idx_t, \
                                          const T*, const T*, const T*, idx_t, idx_t, idx_t,   \
                                          idx_t, bool);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm::cpu
