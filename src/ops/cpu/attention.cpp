// CPU attention (contract in ops/attention.h): the reference. Scores, softmax and sums in double
// whatever T; parallel over (b, kv head) so the dk / dv sums of a group stay in one thread.
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "ops/rope.h"

namespace moessm::cpu {

namespace {

template <typename T>
void check_params(const char* op, const AttentionParams<T, T>& p) {
  CHECK(p.B >= 0 && p.T >= 0, op, ": sizes B=", p.B, " T=", p.T, " must be >= 0");
  CHECK(p.H >= 1 && p.Hkv >= 1 && p.H % p.Hkv == 0, op, ": n_kv_heads ", p.Hkv, " must divide n_heads ", p.H);
  CHECK(p.hd >= 1, op, ": head_dim must be >= 1, got ", p.hd);
  CHECK(p.q_ld >= p.H * p.hd, op, ": q_ld ", p.q_ld, " must be >= H·hd = ", p.H * p.hd);
  CHECK(p.k_ld >= p.Hkv * p.hd && p.v_ld >= p.Hkv * p.hd, op, ": k_ld ", p.k_ld, " / v_ld ", p.v_ld,
        " must be >= Hkv·hd = ", p.Hkv * p.hd);
  CHECK(p.window >= 0, op, ": window must be >= 0, got ", p.window);
  CHECK((p.C == 0) == (p.k_cache == nullptr) && (p.k_cache == nullptr) == (p.v_cache == nullptr), op,
        ": k_cache, v_cache and C > 0 come together (C=", p.C, ")");
  for (idx_t b = 0; b < p.B && p.pos0; ++b) {
    const int64_t P = decode_rope_position(double(p.pos0[b]));
    const int64_t first = p.window > 0 ? std::max<int64_t>(0, P - p.window + 1) : 0;
    CHECK(first >= P - p.C, op, ": sequence ", b, " at position ", P, " needs keys from position ", first,
          " but the cache holds ", p.C, " positions (from ", P - p.C, ")");
  }
}

// Visible key positions of query position qp: [lo, qp].
inline int64_t first_key(int64_t qp, idx_t window) { return window > 0 ? std::max<int64_t>(0, qp - window + 1) : 0; }

// Row pointers of the key / value at position kp of sequence b, kv head g.
template <typename T>
struct KeyRows {
  const AttentionParams<T, T>& p;
  idx_t b, g;
  int64_t P;
  const T* k(int64_t kp) const {
    return kp >= P ? p.k + (b * p.T + (kp - P)) * p.k_ld + g * p.hd
                   : p.k_cache + ((b * p.C + kp % p.C) * p.Hkv + g) * p.hd;
  }
  const T* v(int64_t kp) const {
    return kp >= P ? p.v + (b * p.T + (kp - P)) * p.v_ld + g * p.hd
                   : p.v_cache + ((b * p.C + kp % p.C) * p.Hkv + g) * p.hd;
  }
};

template <typename T>
double dot(const T* a, const T* b, idx_t n) {
  double s = 0;
  for (idx_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

}  // namespace

template <typename T>
void attention_forward(T* out, idx_t out_ld, T* lse, const AttentionParams<T, T>& p) {
  check_params("attention_forward", p);
  CHECK(out_ld >= p.H * p.hd, "attention_forward: out_ld ", out_ld, " must be >= H·hd = ", p.H * p.hd);
  const idx_t group = p.H / p.Hkv;
  const double scale = 1.0 / std::sqrt(double(p.hd));
#pragma omp parallel for schedule(static)
  for (idx_t bh = 0; bh < p.B * p.H; ++bh) {
    const idx_t b = bh / p.H, h = bh % p.H;
    const int64_t P = p.pos0 ? decode_rope_position(double(p.pos0[b])) : 0;
    const KeyRows<T> rows{p, b, h / group, P};
    std::vector<double> s, acc(size_t(p.hd));
    for (idx_t t = 0; t < p.T; ++t) {
      const int64_t qp = P + t, lo = first_key(qp, p.window);
      const T* q = p.q + (b * p.T + t) * p.q_ld + h * p.hd;
      s.assign(size_t(qp - lo + 1), 0.0);
      double mx = -INFINITY;
      for (int64_t kp = lo; kp <= qp; ++kp) {
        s[size_t(kp - lo)] = dot(q, rows.k(kp), p.hd) * scale;
        mx = std::max(mx, s[size_t(kp - lo)]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t kp = lo; kp <= qp; ++kp) {
        const double e = std::exp(s[size_t(kp - lo)] - mx);
        sum += e;
        const T* v = rows.v(kp);
        for (idx_t d = 0; d < p.hd; ++d) acc[size_t(d)] += e * double(v[d]);
      }
      T* o = out + (b * p.T + t) * out_ld + h * p.hd;
      for (idx_t d = 0; d < p.hd; ++d) o[d] = T(acc[size_t(d)] / sum);
      lse[(b * p.H + h) * p.T + t] = T(mx + std::log(sum));
    }
  }
}

template <typename T>
void attention_backward(T* dq, idx_t dq_ld, T* dk, idx_t dk_ld, T* dv, idx_t dv_ld, T* delta, const T* dout,
                        idx_t dout_ld, const T* out, idx_t out_ld, const T* lse, const AttentionParams<T, T>& p) {
  check_params("attention_backward", p);
  CHECK(dq_ld >= p.H * p.hd && dout_ld >= p.H * p.hd && out_ld >= p.H * p.hd,
        "attention_backward: dq_ld, dout_ld and out_ld must be >= H·hd = ", p.H * p.hd);
  CHECK(dk_ld >= p.Hkv * p.hd && dv_ld >= p.Hkv * p.hd, "attention_backward: dk_ld ", dk_ld, " / dv_ld ", dv_ld,
        " must be >= Hkv·hd = ", p.Hkv * p.hd);
  const idx_t group = p.H / p.Hkv;
  const double scale = 1.0 / std::sqrt(double(p.hd));
#pragma omp parallel for schedule(static)
  for (idx_t bg = 0; bg < p.B * p.Hkv; ++bg) {
    const idx_t b = bg / p.Hkv, g = bg % p.Hkv;
    const int64_t P = p.pos0 ? decode_rope_position(double(p.pos0[b])) : 0;
    const KeyRows<T> rows{p, b, g, P};
    // dk, dv of the new keys in double, [T, hd] each
    std::vector<double> dk_acc(size_t(p.T * p.hd), 0.0), dv_acc(dk_acc.size(), 0.0), dq_acc(size_t(p.hd));
    for (idx_t h = g * group; h < (g + 1) * group; ++h)
      for (idx_t t = 0; t < p.T; ++t) {
        const int64_t qp = P + t, lo = first_key(qp, p.window);
        const T* q = p.q + (b * p.T + t) * p.q_ld + h * p.hd;
        const T* go = dout + (b * p.T + t) * dout_ld + h * p.hd;
        const double dl = dot(go, out + (b * p.T + t) * out_ld + h * p.hd, p.hd);
        delta[(b * p.H + h) * p.T + t] = T(dl);
        const double L = double(lse[(b * p.H + h) * p.T + t]);
        std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
        for (int64_t kp = lo; kp <= qp; ++kp) {
          const T* k = rows.k(kp);
          const double pr = std::exp(dot(q, k, p.hd) * scale - L);
          const double ds = pr * (dot(go, rows.v(kp), p.hd) - dl) * scale;
          for (idx_t d = 0; d < p.hd; ++d) dq_acc[size_t(d)] += ds * double(k[d]);
          if (kp >= P) {
            double* dka = &dk_acc[size_t((kp - P) * p.hd)];
            double* dva = &dv_acc[size_t((kp - P) * p.hd)];
            for (idx_t d = 0; d < p.hd; ++d) {
              dka[d] += ds * double(q[d]);
              dva[d] += pr * double(go[d]);
            }
          }
        }
        T* o = dq + (b * p.T + t) * dq_ld + h * p.hd;
        for (idx_t d = 0; d < p.hd; ++d) o[d] = T(dq_acc[size_t(d)]);
      }
    for (idx_t t = 0; t < p.T; ++t)
      for (idx_t d = 0; d < p.hd; ++d) {
        dk[(b * p.T + t) * dk_ld + g * p.hd + d] = T(dk_acc[size_t(t * p.hd + d)]);
        dv[(b * p.T + t) * dv_ld + g * p.hd + d] = T(dv_acc[size_t(t * p.hd + d)]);
      }
  }
}

#define MOESSM_CPU_ATTENTION(T)                                                                              \
  template void attention_forward<T>(T*, idx_t, T*, const AttentionParams<T, T>&);                            \
  template void attention_backward<T>(T*, idx_t, T*, idx_t, T*, idx_t, T*, const T*, idx_t, const T*, idx_t, \
                                      const T*, const AttentionParams<T, T>&);
MOESSM_CPU_ATTENTION(float)
MOESSM_CPU_ATTENTION(double)

}  // namespace moessm::cpu
