// CPU causal depthwise conv1d (+ optional SiLU); see ops/causal_conv1d.h for the contract.
// Each sequence is first laid out as a padded window xp[Kc-1+T, Di] (carried state or zeros,
// then x), so every tap is a contiguous, vectorisable loop over channels. Work is split over
// batch rows; dw / dbias are summed per row and then over rows in order (deterministic for any
// thread count). Scratch (transposed taps, windows) lives in per-thread buffers that only grow, so
// steady-state calls (decode steps) allocate nothing. Packed rows (seq_idx) only shorten the tap
// loop of each output: taps reaching into an earlier document are skipped (they read 0).
#include "ops/causal_conv1d.h"

#include <algorithm>
#include <vector>

#include "core/check.h"
#include "ops/activations.h"

namespace moessm::cpu {

namespace {

// xp[Kc-1+T, Di]: rows 0..Kc-2 from the state (or 0), rows Kc-1.. from x.
template <typename T>
void padded_window(std::vector<T>& xp, const T* x, idx_t x_ld, const T* state, idx_t T_, idx_t Di,
                   idx_t Kc) {
  const idx_t S = Kc - 1;
  xp.resize(static_cast<size_t>((S + T_) * Di));
  for (idx_t j = 0; j < S; ++j)
    for (idx_t c = 0; c < Di; ++c) xp[j * Di + c] = state ? state[c * S + j] : T(0);
  for (idx_t t = 0; t < T_; ++t)
    for (idx_t c = 0; c < Di; ++c) xp[(S + t) * Di + c] = x[t * x_ld + c];
}

// run[t]: how many of output t's Kc taps lie in its own document (the carried state counts as
// part of the row's first document), so tap j (input t-Kc+1+j) is read iff j >= Kc - run[t].
// Without seq_idx every run is Kc. seq points at the row's [T] document indices.
void doc_runs(std::vector<int>& run, const int32_t* seq, idx_t T_, idx_t Kc) {
  run.resize(static_cast<size_t>(T_));
  int r = int(Kc);
  for (idx_t t = 0; t < T_; ++t) {
    r = (seq && t > 0 && seq[t] != seq[t - 1]) ? 1 : std::min(int(Kc), r + 1);
    run[t] = r;
  }
}

// pre[t, c] = bias[c] + Σ_{j >= j0} wT[j, c] · xp[t + j, c]   (taps below j0: another document)
template <typename T>
void pre_activation(T* pre, const T* xp, const T* wT, const T* bias, idx_t t, idx_t Di, idx_t Kc, idx_t j0) {
#pragma omp simd
  for (idx_t c = 0; c < Di; ++c) pre[c] = bias ? bias[c] : T(0);
  for (idx_t j = j0; j < Kc; ++j) {
    const T* xr = xp + (t + j) * Di;
    const T* wr = wT + j * Di;
#pragma omp simd
    for (idx_t c = 0; c < Di; ++c) pre[c] += wr[c] * xr[c];
  }
}

// A per-thread scratch vector (slot picks one of several); resize() keeps the capacity.
template <typename T, int Slot>
std::vector<T>& scratch() {
  static thread_local std::vector<T> v;
  return v;
}

template <typename T>
const std::vector<T>& transpose_w(const T* w, idx_t Di, idx_t Kc) {
  std::vector<T>& wT = scratch<T, 0>();
  wT.resize(static_cast<size_t>(Kc * Di));
  for (idx_t c = 0; c < Di; ++c)
    for (idx_t j = 0; j < Kc; ++j) wT[j * Di + c] = w[c * Kc + j];
  return wT;
}

}  // namespace

template <typename T>
void causal_conv1d_forward(T* out, idx_t out_ld, T* state_out, const T* x, idx_t x_ld,
                           const T* state_in, const int32_t* seq_idx, const T* w, const T* bias,
                           idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu) {
  CHECK(Kc >= 1 && Kc <= 16, "causal_conv1d: kernel width ", Kc, " outside the supported 1..16");
  const idx_t S = Kc - 1;
  const std::vector<T>& wT = transpose_w(w, Di, Kc);
#pragma omp parallel if (B * T_ * Di * Kc >= kParallelMinWork)
  {
    std::vector<T>& xp = scratch<T, 1>();
    std::vector<int>& run = scratch<int, 2>();
#pragma omp for schedule(static)
    for (idx_t b = 0; b < B; ++b) {
      // Everything is read into xp before anything is written: state_out may alias state_in.
      padded_window(xp, x + b * T_ * x_ld, x_ld, state_in ? state_in + b * Di * S : nullptr, T_, Di, Kc);
      doc_runs(run, seq_idx ? seq_idx + b * T_ : nullptr, T_, Kc);
      T* ob = out + b * T_ * out_ld;
      for (idx_t t = 0; t < T_; ++t) {
        T* o = ob + t * out_ld;
        pre_activation(o, xp.data(), wT.data(), bias, t, Di, Kc, Kc - run[t]);
        if (silu)
          for (idx_t c = 0; c < Di; ++c) o[c] = silu_of(o[c]);
      }
      if (state_out)  // the last Kc-1 rows of the window (input T-S+j), those of the last document
        for (idx_t c = 0; c < Di; ++c)
          for (idx_t j = 0; j < S; ++j)
            state_out[b * Di * S + c * S + j] =
                T_ == 0 || S - 1 - j < run[T_ - 1] ? xp[(T_ + j) * Di + c] : T(0);
    }
  }
}

template <typename T>
void causal_conv1d_backward(T* dx, idx_t dx_ld, T* dw, T* dbias, const T* dout, idx_t dout_ld,
                            const T* x, idx_t x_ld, const T* state_in, const int32_t* seq_idx,
                            const T* w, const T* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc,
                            bool silu) {
  CHECK(Kc >= 1 && Kc <= 16, "causal_conv1d: kernel width ", Kc, " outside the supported 1..16");
  const idx_t S = Kc - 1;
  const std::vector<T>& wT = transpose_w(w, Di, Kc);
  // Per batch row partial sums: [B][Kc+1][Di] (taps, then bias).
  std::vector<T> part(static_cast<size_t>(B * (Kc + 1) * Di), T(0));
#pragma omp parallel if (B * T_ * Di * Kc >= kParallelMinWork)
  {
    std::vector<T> xp, dpre, pre(static_cast<size_t>(Di));
    std::vector<int> run;
#pragma omp for schedule(static)
    for (idx_t b = 0; b < B; ++b) {
      padded_window(xp, x + b * T_ * x_ld, x_ld, state_in ? state_in + b * Di * S : nullptr, T_, Di, Kc);
      doc_runs(run, seq_idx ? seq_idx + b * T_ : nullptr, T_, Kc);
      dpre.assign(static_cast<size_t>(T_ * Di), T(0));
      T* pb = &part[b * (Kc + 1) * Di];
      for (idx_t t = 0; t < T_; ++t) {
        const T* g = dout + (b * T_ + t) * dout_ld;
        T* d = &dpre[t * Di];
        const idx_t j0 = Kc - run[t];
        if (silu) {
          pre_activation(pre.data(), xp.data(), wT.data(), bias, t, Di, Kc, j0);
          for (idx_t c = 0; c < Di; ++c) d[c] = g[c] * silu_grad_of(pre[c]);
        } else {
          for (idx_t c = 0; c < Di; ++c) d[c] = g[c];
        }
        for (idx_t j = j0; j < Kc; ++j) {
          const T* xr = &xp[(t + j) * Di];
          T* pj = pb + j * Di;
#pragma omp simd
          for (idx_t c = 0; c < Di; ++c) pj[c] += d[c] * xr[c];
        }
        T* pbias = pb + Kc * Di;
#pragma omp simd
        for (idx_t c = 0; c < Di; ++c) pbias[c] += d[c];
      }
      if (dx)
        for (idx_t t = 0; t < T_; ++t) {
          // x[t] feeds outputs s = t + (Kc-1-j) through tap j
          T* o = dx + (b * T_ + t) * dx_ld;
          for (idx_t c = 0; c < Di; ++c) o[c] = T(0);
          for (idx_t j = 0; j < Kc; ++j) {
            const idx_t s = t + (Kc - 1 - j);
            if (s >= T_ || j < Kc - run[s]) continue;  // past the row, or output s is in a later document
            const T* d = &dpre[s * Di];
            const T* wr = &wT[j * Di];
#pragma omp simd
            for (idx_t c = 0; c < Di; ++c) o[c] += wr[c] * d[c];
          }
        }
    }
  }
  for (idx_t b = 0; b < B; ++b) {
    const T* pb = &part[b * (Kc + 1) * Di];
    if (dw)
      for (idx_t c = 0; c < Di; ++c)
        for (idx_t j = 0; j < Kc; ++j) dw[c * Kc + j] += pb[j * Di + c];
    if (dbias)
      for (idx_t c = 0; c < Di; ++c) dbias[c] += pb[Kc * Di + c];
  }
}

#define INSTANTIATE(T)                                                                          \
  template void causal_conv1d_forward<T>(T*, idx_t, T*, const T*, idx_t, const T*, const int32_t*, \
                                         const T*, const T*, idx_t, idx_t, idx_t, idx_t, bool);   \
  template void causal_conv1d_backward<T>(T*, idx_t, T*, T*, const T*, idx_t, const T*, idx_t,  \
                                          const T*, const int32_t*, const T*, const T*, idx_t,   \
                                          idx_t, idx_t, idx_t, bool);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm::cpu
