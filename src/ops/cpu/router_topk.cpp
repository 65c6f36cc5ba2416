// CPU router: softmax, top-K (ties → lower index), optional renormalisation, Switch aux loss and
// z-loss, with backwards; see ops/router_topk.h. Rows are independent and processed in parallel;
// cross-row sums (P̄, slot counts, the losses) are accumulated serially in row order.
#include "ops/router_select.h"
#include "ops/router_topk.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"

namespace moessm::cpu {

namespace {

void check_sizes(const char* op, idx_t M, idx_t E, idx_t K) {
  CHECK(M >= 0 && E >= 1 && K >= 1 && K <= E, op, ": need M >= 0 and 1 <= K <= E, found M=", M,
        " E=", E, " K=", K);
}

template <typename T>
double row_lse(const T* l, idx_t E) {
  double mx = double(l[0]);
  for (idx_t i = 1; i < E; ++i) mx = std::max(mx, double(l[i]));
  double s = 0;
  for (idx_t i = 0; i < E; ++i) s += std::exp(double(l[i]) - mx);
  return mx + std::log(s);
}

}  // namespace

template <typename T>
void router_topk_forward(T* probs, int32_t* idx, T* w, const T* logits, idx_t M, idx_t E,
                         idx_t K, bool normalize_topk) {
  check_sizes("router_topk_forward", M, E, K);
#pragma omp parallel for schedule(static) if (M * E >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m) {
    const T* l = logits + m * E;
    T* p = probs + m * E;
    const double lse = row_lse(l, E);
    for (idx_t i = 0; i < E; ++i) p[i] = static_cast<T>(std::exp(double(l[i]) - lse));
    int32_t* id = idx + m * K;
    router_select_topk(id, p, E, K);
    T* wm = w + m * K;
    double s = 0;
    for (idx_t k = 0; k < K; ++k) s += double(p[id[k]]);
    for (idx_t k = 0; k < K; ++k)
      wm[k] = normalize_topk ? static_cast<T>(double(p[id[k]]) / s) : p[id[k]];
  }
}

template <typename T>
void router_topk_backward(T* dlogits, const T* dw, const T* dprobs, const T* probs,
                          const int32_t* idx, const T* w, idx_t M, idx_t E, idx_t K,
                          bool normalize_topk) {
  check_sizes("router_topk_backward", M, E, K);
#pragma omp parallel for schedule(static) if (M * E >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m) {
    const T* p = probs + m * E;
    const int32_t* id = idx + m * K;
    const T* dwm = dw + m * K;
    T* dl = dlogits + m * E;
    // dp: gradient at the softmax output, built in dl (E small; no scratch needed).
    for (idx_t i = 0; i < E; ++i) dl[i] = dprobs ? dprobs[m * E + i] : T(0);
    if (normalize_topk) {
      // w_k = p_k / S, S = Σ_j p_j  →  dp_k = (dw_k − Σ_j dw_j w_j) / S
      double s = 0, dot = 0;
      for (idx_t k = 0; k < K; ++k) {
        s += double(p[id[k]]);
        dot += double(dwm[k]) * double(w[m * K + k]);
      }
      for (idx_t k = 0; k < K; ++k) dl[id[k]] += static_cast<T>((double(dwm[k]) - dot) / s);
    } else {
      for (idx_t k = 0; k < K; ++k) dl[id[k]] += dwm[k];
    }
    // softmax backward: dlogit_i = p_i (dp_i − Σ_j p_j dp_j)
    double dot = 0;
    for (idx_t i = 0; i < E; ++i) dot += double(p[i]) * double(dl[i]);
    for (idx_t i = 0; i < E; ++i) dl[i] = static_cast<T>(double(p[i]) * (double(dl[i]) - dot));
  }
}

namespace {
// f_i = slot count / (M·K), in row order.
std::vector<double> slot_share(const int32_t* idx, idx_t M, idx_t E, idx_t K) {
  std::vector<double> f(static_cast<size_t>(E), 0.0);
  for (idx_t s = 0; s < M * K; ++s) {
    CHECK(idx[s] >= 0 && idx[s] < E, "router aux loss: expert index ", idx[s], " at slot ", s,
          " outside [0, ", E, ")");
    f[idx[s]] += 1.0;
  }
  if (M > 0)
    for (auto& v : f) v /= double(M * K);
  return f;
}
}  // namespace

template <typename T>
double router_aux_loss_forward(double* load, const T* probs, const int32_t* idx, idx_t M,
                               idx_t E, idx_t K, double coef) {
  check_sizes("router_aux_loss_forward", M, E, K);
  std::vector<double> f = slot_share(idx, M, E, K);
  if (load)
    for (idx_t i = 0; i < E; ++i) load[i] = f[i];
  if (M == 0) return 0.0;
  std::vector<double> pbar(static_cast<size_t>(E), 0.0);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t i = 0; i < E; ++i) pbar[i] += double(probs[m * E + i]);
  double s = 0;
  for (idx_t i = 0; i < E; ++i) s += f[i] * pbar[i] / double(M);
  return coef * double(E) * s;
}

template <typename T>
void router_aux_loss_backward(T* dprobs, double dloss, const int32_t* idx, idx_t M, idx_t E,
                              idx_t K, double coef) {
  check_sizes("router_aux_loss_backward", M, E, K);
  if (M == 0) return;
  std::vector<double> f = slot_share(idx, M, E, K);
  const double scale = dloss * coef * double(E) / double(M);
#pragma omp parallel for schedule(static) if (M * E >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m)
    for (idx_t i = 0; i < E; ++i) dprobs[m * E + i] += static_cast<T>(scale * f[i]);
}

template <typename T>
double router_z_loss_forward(const T* logits, idx_t M, idx_t E, double coef) {
  CHECK(M >= 0 && E >= 1, "router_z_loss_forward: need M >= 0, E >= 1, found M=", M, " E=", E);
  if (M == 0) return 0.0;
  double s = 0;
  for (idx_t m = 0; m < M; ++m) {
    const double lse = row_lse(logits + m * E, E);
    s += lse * lse;
  }
  return coef * s / double(M);
}

template <typename T>
void router_z_loss_backward(T* dlogits, double dloss, const T* logits, idx_t M, idx_t E,
                            double coef) {
  CHECK(M >= 0 && E >= 1, "router_z_loss_backward: need M >= 0, E >= 1, found M=", M, " E=", E);
  if (M == 0) return;
  const double scale = dloss * coef * 2.0 / double(M);
#pragma omp parallel for schedule(static) if (M * E >= kParallelMinWork)
  for (idx_t m = 0; m < M; ++m) {
    const T* l = logits + m * E;
    const double lse = row_lse(l, E);
    for (idx_t i = 0; i < E; ++i)
      dlogits[m * E + i] += static_cast<T>(scale * lse * std::exp(double(l[i]) - lse));
  }
}

#define MOESSM_INSTANTIATE_ROUTER(T)                                                             \
  template void router_topk_forward<T>(T*, int32_t*, T*, const T*, idx_t, idx_t, idx_t, bool);  \
  template void router_topk_backward<T>(T*, const T*, const T*, const T*, const int32_t*,       \
                                        const T*, idx_t, idx_t, idx_t, bool);                    \
  template double router_aux_loss_forward<T>(double*, const T*, const int32_t*, idx_t, idx_t,    \
                                             idx_t, double);                                     \
  template void router_aux_loss_backward<T>(T*, double, const int32_t*, idx_t, idx_t, idx_t,     \
                                            double);                                             \
  template double router_z_loss_forward<T>(const T*, idx_t, idx_t, double);                      \
  template void router_z_loss_backward<T>(T*, double, const T*, idx_t, idx_t, double);
MOESSM_INSTANTIATE_ROUTER(float)
MOESSM_INSTANTIATE_ROUTER(double)

}  // namespace moessm::cpu
