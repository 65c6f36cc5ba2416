// The ops that replaced element loops inside the layers (elementwise, delta_softplus,
// expert_conv1d, moe_permute_plan_stacked, routed_gemv, and Swimba's mix=post composition):
// forward against a
// naive formula written independently of the op (direct indexing, no shared helper), backward
// against central finite differences in double precision through a probe loss L = Σ out ⊙ R.
//
// Tolerance: kTol = 1e-7 on max |analytic - numeric| / max(1, max |numeric|). numeric_gradient
// uses eps = 1e-6, so its truncation error is ~eps²·|f'''| ≈ 1e-12 and its rounding error is
// ~ulp(L)/eps ≈ 2e-16·|L|/1e-6 ≈ 1e-9 for the |L| = O(10) probes here: 1e-7 leaves two orders
// of margin above that floor, while a wrong term (a missed slot, a wrong sign) gives errors of
// order 1e-2 or more. Inputs stay away from softplus's threshold at 20, where its derivative
// jumps, so the finite differences see a smooth function. Forward checks compare doubles to a
// naive reference summed in a different order: 1e-12 absolute for O(1) values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "expect_error.h"
#include "ops/causal_conv1d.h"
#include "ops/delta_softplus.h"
#include "ops/elementwise.h"
#include "ops/expert_conv1d.h"
#include "ops/grouped_matmul.h"
#include "ops/moe_permute.h"
#include "ops/routed_gemv.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;
using Vec = std::vector<double>;

namespace {
constexpr double kTol = 1e-7;
constexpr double kFwdTol = 1e-12;

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
double naive_softplus(double v) { return v > 20.0 ? v : std::log(1.0 + std::exp(v)); }

// A routing of M tokens to K distinct experts out of E, leaving expert `unused` (if >= 0) unchosen.
std::vector<int32_t> random_routing(Rng& rng, idx_t M, idx_t E, idx_t K, int unused) {
  std::vector<int32_t> idx(size_t(M * K));
  for (idx_t m = 0; m < M; ++m)
    for (idx_t k = 0; k < K; ++k) {
      int32_t e;
      bool dup;
      do {
        e = int32_t(rng.uniform(0.0, double(E)));
        if (e >= E) e = int32_t(E - 1);
        dup = e == unused;
        for (idx_t j = 0; j < k; ++j) dup = dup || idx[size_t(m * K + j)] == e;
      } while (dup);
      idx[size_t(m * K + k)] = e;
    }
  return idx;
}
}  // namespace

// ---- elementwise --------------------------------------------------------------------------------

TEST(Elementwise, FillCopyAddTouchOnlyTheirRowsAndAddMayAlias) {
  Rng rng(31);
  const idx_t M = 3, X = 4, ld = 6;
  Vec a = random_vector<double>(M * ld, rng), b = random_vector<double>(M * ld, rng);
  Vec out(M * ld, 7.0);
  cpu::fill(out.data(), ld, -2.5, M, X);
  for (idx_t i = 0; i < M * ld; ++i) EXPECT_EQ(out[i], i % ld < X ? -2.5 : 7.0) << i;
  Vec flat(5, 1.0);
  cpu::fill(flat.data(), 0.0, 4);
  EXPECT_EQ(flat, (Vec{0, 0, 0, 0, 1}));

  cpu::copy(out.data(), ld, a.data(), ld, M, X);
  for (idx_t i = 0; i < M * ld; ++i) EXPECT_EQ(out[i], i % ld < X ? a[i] : 7.0) << i;

  Vec sum(M * X);
  cpu::add_forward(sum.data(), X, a.data(), ld, b.data(), ld, M, X);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) EXPECT_EQ(sum[m * X + x], b[m * ld + x] + a[m * ld + x]);
  Vec acc = a;  // out aliases a: acc += b
  cpu::add_forward(acc.data(), ld, acc.data(), ld, b.data(), ld, M, X);
  for (idx_t i = 0; i < M * ld; ++i) EXPECT_EQ(acc[i], i % ld < X ? a[i] + b[i] : a[i]) << i;
}

TEST(Elementwise, AddBackwardMatchesFiniteDifferences) {
  Rng rng(32);
  const idx_t M = 3, X = 5;
  Vec a = random_vector<double>(M * X, rng), b = random_vector<double>(M * X, rng),
      R = random_vector<double>(M * X, rng), out(M * X);
  auto f = [&] {
    cpu::add_forward(out.data(), X, a.data(), X, b.data(), X, M, X);
    return dot(out, R);
  };
  Vec da(M * X, 9.0), db(M * X, 9.0);  // assigned, whatever was there
  cpu::add_backward(da.data(), X, db.data(), X, R.data(), X, M, X);
  EXPECT_EQ(compare_gradients(da, numeric_gradient(a, f), kTol, "da"), "");
  EXPECT_EQ(compare_gradients(db, numeric_gradient(b, f), kTol, "db"), "");
  Vec da2(M * X, 0.0);
  cpu::add_backward(da2.data(), X, (double*)nullptr, X, R.data(), X, M, X);  // db absent
  EXPECT_EQ(da2, da);
}

// ---- delta_softplus ------------------------------------------------------------------------------

TEST(DeltaSoftplus, ForwardMatchesNaiveAndBackwardMatchesFiniteDifferences) {
  Rng rng(34);
  const idx_t M = 5, Di = 6;
  Vec x = random_vector<double>(M * Di, rng, -6.0, 6.0), bias = random_vector<double>(Di, rng),
      R = random_vector<double>(M * Di, rng), out(M * Di);
  x[7] = 25.0;  // far past the threshold: identity, derivative 1
  auto f = [&] {
    cpu::delta_softplus_forward(out.data(), x.data(), bias.data(), M, Di);
    return dot(out, R);
  };
  f();
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < Di; ++c)
      EXPECT_NEAR(out[m * Di + c], naive_softplus(x[m * Di + c] + bias[c]), kFwdTol);
  Vec dx(M * Di, 9.0), dbias(Di, 0.5);  // dbias accumulates onto what is there
  cpu::delta_softplus_backward(dx.data(), dbias.data(), R.data(), x.data(), bias.data(), M, Di);
  const Vec dbias_acc = dbias;
  for (double& v : dbias) v -= 0.5;
  EXPECT_EQ(compare_gradients(dx, numeric_gradient(x, f), kTol, "dx"), "");
  EXPECT_EQ(compare_gradients(dbias, numeric_gradient(bias, f), kTol, "dbias"), "");
  // In place (dx aliases dout), as Swimba calls it.
  Vec inplace = R, dbias2(Di, 0.5);
  cpu::delta_softplus_backward(inplace.data(), dbias2.data(), inplace.data(), x.data(), bias.data(), M, Di);
  EXPECT_EQ(inplace, dx);
  EXPECT_EQ(dbias2, dbias_acc);
}

// ---- expert_conv1d -------------------------------------------------------------------------------

namespace {
struct ConvCase {
  idx_t B = 2, T = 5, Di = 3, Kc = 3, E = 4, K = 2, x_ld = 5, out_ld = 4;
  idx_t M() const { return B * T; }
};

// pre[b,t,c] = Σ_{e chosen} (bias_e[c] + Σ_j w_e[c,j] · x(t-Kc+1+j)), x(<0) from the state.
Vec naive_expert_pre(const ConvCase& s, const Vec& x, const Vec* state, const std::vector<int32_t>& idx,
                     const Vec& w, const Vec& bias) {
  Vec pre(s.M() * s.Di, 0.0);
  for (idx_t b = 0; b < s.B; ++b)
    for (idx_t t = 0; t < s.T; ++t)
      for (idx_t k = 0; k < s.K; ++k) {
        const idx_t m = b * s.T + t, e = idx[size_t(m * s.K + k)];
        for (idx_t c = 0; c < s.Di; ++c) {
          double v = bias[e * s.Di + c];
          for (idx_t j = 0; j < s.Kc; ++j) {
            const idx_t tt = t - s.Kc + 1 + j;
            const double xv = tt >= 0 ? x[(b * s.T + tt) * s.x_ld + c]
                              : state ? (*state)[(b * s.Di + c) * (s.Kc - 1) + (s.Kc - 1 + tt)]
                                      : 0.0;
            v += w[(e * s.Di + c) * s.Kc + j] * xv;
          }
          pre[m * s.Di + c] += v;
        }
      }
  return pre;
}
}  // namespace

TEST(ExpertConv1d, ForwardMatchesNaiveWithStateAndStrides) {
  Rng rng(35);
  const ConvCase s;
  const idx_t M = s.M(), S = s.Kc - 1;
  Vec x = random_vector<double>(M * s.x_ld, rng), w = random_vector<double>(s.E * s.Di * s.Kc, rng),
      bias = random_vector<double>(s.E * s.Di, rng), state = random_vector<double>(s.B * s.Di * S, rng);
  const std::vector<int32_t> idx = random_routing(rng, M, s.E, s.K, -1);
  Vec out(M * s.out_ld, 7.0), pre(M * s.Di), work(M * s.Di), state_out(s.B * s.Di * S);
  cpu::expert_conv1d_forward(out.data(), s.out_ld, pre.data(), state_out.data(), work.data(),
                             x.data(), s.x_ld, state.data(), idx.data(), w.data(), bias.data(), s.B,
                             s.T, s.Di, s.Kc, s.E, s.K);
  const Vec ref = naive_expert_pre(s, x, &state, idx, w, bias);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < s.out_ld; ++c) {
      if (c >= s.Di) {
        EXPECT_EQ(out[m * s.out_ld + c], 7.0) << "padding column written";
        continue;
      }
      const double p = ref[m * s.Di + c];
      EXPECT_NEAR(pre[m * s.Di + c], p, kFwdTol);
      EXPECT_NEAR(out[m * s.out_ld + c], p * sigmoid(p), kFwdTol);
    }
  // The carried state: the last Kc-1 inputs of each sequence, oldest first (T >= Kc-1 here).
  for (idx_t b = 0; b < s.B; ++b)
    for (idx_t c = 0; c < s.Di; ++c)
      for (idx_t j = 0; j < S; ++j)
        EXPECT_EQ(state_out[(b * s.Di + c) * S + j], x[(b * s.T + s.T - S + j) * s.x_ld + c]);
  // Decode-style aliasing (state_out == state_in) gives the same outputs.
  Vec st = state, out2(M * s.out_ld, 7.0);
  cpu::expert_conv1d_forward(out2.data(), s.out_ld, pre.data(), st.data(), work.data(), x.data(),
                             s.x_ld, st.data(), idx.data(), w.data(), bias.data(), s.B, s.T, s.Di,
                             s.Kc, s.E, s.K);
  EXPECT_EQ(out2, out);
  EXPECT_EQ(st, state_out);
}

TEST(ExpertConv1d, OneExpertIsTheDenseConvWithSilu) {
  Rng rng(36);
  ConvCase s;
  s.E = 1;
  s.K = 1;
  const idx_t M = s.M();
  Vec x = random_vector<double>(M * s.x_ld, rng), w = random_vector<double>(s.Di * s.Kc, rng),
      bias = random_vector<double>(s.Di, rng);
  const std::vector<int32_t> idx(size_t(M), 0);
  Vec out(M * s.Di), dense(M * s.Di), pre(M * s.Di), work(M * s.Di);
  cpu::expert_conv1d_forward(out.data(), s.Di, pre.data(), (double*)nullptr, work.data(), x.data(),
                             s.x_ld, (const double*)nullptr, idx.data(), w.data(), bias.data(), s.B,
                             s.T, s.Di, s.Kc, s.E, s.K);
  cpu::causal_conv1d_forward(dense.data(), s.Di, (double*)nullptr, x.data(), s.x_ld,
                             (const double*)nullptr, nullptr, w.data(), bias.data(), s.B, s.T, s.Di, s.Kc,
                             true);
  EXPECT_LT(max_rel_diff(out.data(), dense.data(), out.size()), 1e-15);
}

TEST(ExpertConv1d, BackwardMatchesFiniteDifferencesAndSkipsUnchosenExperts) {
  Rng rng(37);
  const ConvCase s;
  const idx_t M = s.M(), S = s.Kc - 1;
  const int unused = 2;
  Vec x = random_vector<double>(M * s.x_ld, rng), w = random_vector<double>(s.E * s.Di * s.Kc, rng),
      bias = random_vector<double>(s.E * s.Di, rng), state = random_vector<double>(s.B * s.Di * S, rng),
      R = random_vector<double>(M * s.out_ld, rng);
  const std::vector<int32_t> idx = random_routing(rng, M, s.E, s.K, unused);
  Vec out(M * s.out_ld, 0.0), pre(M * s.Di), work(M * s.Di);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = s.Di; c < s.out_ld; ++c) R[m * s.out_ld + c] = 0;  // padding carries no loss
  auto f = [&] {
    cpu::expert_conv1d_forward(out.data(), s.out_ld, pre.data(), (double*)nullptr, work.data(),
                               x.data(), s.x_ld, state.data(), idx.data(), w.data(), bias.data(),
                               s.B, s.T, s.Di, s.Kc, s.E, s.K);
    return dot(out, R);
  };
  f();
  const double kSentinel = 0.5;  // parameter grads accumulate onto what is there
  Vec dx(M * s.x_ld, 9.0), dw(w.size(), kSentinel), dbias(bias.size(), kSentinel);
  Vec dpre_work(M * s.Di), dx_work(M * s.Di);
  cpu::expert_conv1d_backward(dx.data(), s.x_ld, dw.data(), dbias.data(), dpre_work.data(),
                              dx_work.data(), R.data(), s.out_ld, x.data(), s.x_ld, state.data(),
                              pre.data(), idx.data(), w.data(), bias.data(), s.B, s.T, s.Di, s.Kc,
                              s.E, s.K);
  // The unchosen expert's slabs are left exactly as they were.
  for (idx_t i = 0; i < s.Di * s.Kc; ++i) EXPECT_EQ(dw[unused * s.Di * s.Kc + i], kSentinel);
  for (idx_t i = 0; i < s.Di; ++i) EXPECT_EQ(dbias[unused * s.Di + i], kSentinel);
  for (double& v : dw) v -= kSentinel;
  for (double& v : dbias) v -= kSentinel;
  Vec nx = numeric_gradient(x, f);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = s.Di; c < s.x_ld; ++c) {
      EXPECT_EQ(dx[m * s.x_ld + c], 9.0) << "padding column of dx written";
      dx[m * s.x_ld + c] = nx[m * s.x_ld + c] = 0;
    }
  EXPECT_EQ(compare_gradients(dx, nx, kTol, "dx"), "");
  EXPECT_EQ(compare_gradients(dw, numeric_gradient(w, f), kTol, "dw"), "");
  EXPECT_EQ(compare_gradients(dbias, numeric_gradient(bias, f), kTol, "dbias"), "");
}

TEST(ExpertConv1d, RejectsBadTopK) {
  Vec buf(64, 0.0);
  std::vector<int32_t> idx(8, 0);
  EXPECT_ERROR_HAS(cpu::expert_conv1d_forward(buf.data(), 1, buf.data(), (double*)nullptr,
                                              buf.data(), buf.data(), 1, (const double*)nullptr,
                                              idx.data(), buf.data(), buf.data(), 1, 2, 1, 2, 1, 2),
                   "expert_conv1d", "K <= E");
}

// ---- moe_permute_plan_stacked + moe_unpermute (the separated mixer's combine) ----------------------

TEST(MoePermutePlanStacked, RowsAddressTheStackAndCombineMatchesNaive) {
  Rng rng(38);
  const idx_t M = 6, E = 3, K = 2, X = 4;
  const std::vector<int32_t> idx = random_routing(rng, M, E, K, -1);
  std::vector<int32_t> rows(size_t(M * K));
  cpu::moe_permute_plan_stacked(rows.data(), idx.data(), M, E, K);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t k = 0; k < K; ++k) EXPECT_EQ(rows[size_t(m * K + k)], idx[size_t(m * K + k)] * M + m);

  Vec ybr = random_vector<double>(E * M * X, rng), g = random_vector<double>(M * K, rng, 0.1, 1.0),
      R = random_vector<double>(M * X, rng), y(M * X);
  auto f = [&] {
    cpu::moe_unpermute_forward(y.data(), X, ybr.data(), X, g.data(), rows.data(), M, K, X);
    return dot(y, R);
  };
  f();
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) {
      double ref = 0;
      for (idx_t k = K - 1; k >= 0; --k)  // reverse order: a differently written sum
        ref += g[m * K + k] * ybr[(idx[size_t(m * K + k)] * M + m) * X + x];
      EXPECT_NEAR(y[m * X + x], ref, kFwdTol);
    }
  Vec dybr(E * M * X, 0.0), dg(M * K, 9.0);  // unchosen rows stay 0 (the mixer zero-fills)
  cpu::moe_unpermute_backward(dybr.data(), X, dg.data(), R.data(), X, ybr.data(), X, g.data(),
                              rows.data(), M, K, X);
  EXPECT_EQ(compare_gradients(dybr, numeric_gradient(ybr, f), kTol, "dybr"), "");
  EXPECT_EQ(compare_gradients(dg, numeric_gradient(g, f), kTol, "dg"), "");
}

// routed_gemv (the decode form of an expertised linear) equals the grouped path it replaces,
// plan → permute → grouped_matmul → unpermute, once per column range with its own coefficients
// (in double both ways: 1e-12), and each output element equals a naive sum.
TEST(RoutedGemv, EqualsPermuteGroupedMatmulUnpermute) {
  Rng rng(41);
  const idx_t M = 7, E = 5, K = 2, Kd = 6, N = 9, split = 4, LD_IN = 8, LD_LO = 5, LD_HI = 7;
  const std::vector<int32_t> idx = random_routing(rng, M, E, K, 3);
  const Vec in = random_vector<double>(M * LD_IN, rng), w = random_vector<double>(E * N * Kd, rng),
            c_hi = random_vector<double>(M * K, rng, 0.1, 1.0);
  Vec lo(M * LD_LO, -7.0), hi(M * LD_HI, -7.0);
  cpu::routed_gemv_forward(lo.data(), LD_LO, (const double*)nullptr, hi.data(), LD_HI, c_hi.data(), split, in.data(),
                           LD_IN, w.data(), N * Kd, idx.data(), M, K, N, Kd);

  std::vector<int32_t> offsets(size_t(E + 1)), rows(size_t(M * K));
  cpu::moe_permute_plan(offsets.data(), rows.data(), idx.data(), M, E, K);
  Vec in_g(M * K * Kd), out_g(M * K * N), lo_ref(M * split), hi_ref(M * (N - split));
  cpu::moe_permute_forward(in_g.data(), Kd, in.data(), LD_IN, rows.data(), M, K, Kd);
  cpu::grouped_matmul_forward(out_g.data(), N, in_g.data(), Kd, w.data(), N * Kd, offsets.data(), E, N, Kd);
  cpu::moe_unpermute_forward(lo_ref.data(), split, out_g.data(), N, (const double*)nullptr, rows.data(), M, K, split);
  cpu::moe_unpermute_forward(hi_ref.data(), N - split, out_g.data() + split, N, c_hi.data(), rows.data(), M, K,
                             N - split);
  for (idx_t m = 0; m < M; ++m) {
    for (idx_t n = 0; n < N; ++n) {
      double naive = 0;
      for (idx_t k = 0; k < K; ++k) {
        const idx_t e = idx[size_t(m * K + k)];
        double d = 0;
        for (idx_t j = Kd - 1; j >= 0; --j) d += w[(e * N + n) * Kd + j] * in[m * LD_IN + j];
        naive += (n < split ? 1.0 : c_hi[m * K + k]) * d;
      }
      const double got = n < split ? lo[m * LD_LO + n] : hi[m * LD_HI + n - split];
      const double grouped = n < split ? lo_ref[m * split + n] : hi_ref[m * (N - split) + n - split];
      EXPECT_NEAR(got, grouped, kFwdTol) << "m=" << m << " n=" << n;
      EXPECT_NEAR(got, naive, kFwdTol) << "m=" << m << " n=" << n;
    }
    for (idx_t x = split; x < LD_LO; ++x) EXPECT_EQ(lo[m * LD_LO + x], -7.0) << "lo written past its columns";
    for (idx_t x = N - split; x < LD_HI; ++x) EXPECT_EQ(hi[m * LD_HI + x], -7.0) << "hi written past its columns";
  }
  EXPECT_ERROR_HAS(cpu::routed_gemv_forward(lo.data(), LD_LO, (const double*)nullptr, (double*)nullptr, LD_HI,
                                        c_hi.data(), split, in.data(), LD_IN, w.data(), N * Kd, idx.data(), M, K, N,
                                        Kd),
               "non-empty column range is null");
}

TEST(MoePermutePlanStacked, RejectsAnExpertOutsideTheStack) {
  std::vector<int32_t> idx = {0, 3}, rows(2);
  EXPECT_ERROR_HAS(cpu::moe_permute_plan_stacked(rows.data(), idx.data(), 2, 3, 1),
                   "moe_permute_plan_stacked", "expert index 3", "[0, 3)");
}

// ---- Swimba mix=post: Δ = Σ_k g · softplus(dts[slot] + bias), as the mixer composes it ------------

TEST(SwimbaPostMix, CompositionMatchesNaiveAndFiniteDifferences) {
  Rng rng(39);
  const idx_t M = 5, E = 3, K = 2, Di = 4, MK = M * K;
  const std::vector<int32_t> idx = random_routing(rng, M, E, K, -1);
  std::vector<int32_t> offsets(static_cast<size_t>(E + 1)), slot(static_cast<size_t>(MK));
  cpu::moe_permute_plan(offsets.data(), slot.data(), idx.data(), M, E, K);
  Vec dts = random_vector<double>(MK * Di, rng, -4.0, 4.0), bias = random_vector<double>(Di, rng),
      g = random_vector<double>(MK, rng, 0.1, 1.0), R = random_vector<double>(M * Di, rng),
      sp(MK * Di), delta(M * Di);
  auto f = [&] {
    cpu::delta_softplus_forward(sp.data(), dts.data(), bias.data(), MK, Di);
    cpu::moe_unpermute_forward(delta.data(), Di, sp.data(), Di, g.data(), slot.data(), M, K, Di);
    return dot(delta, R);
  };
  f();
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < Di; ++c) {
      double ref = 0;
      for (idx_t k = 0; k < K; ++k)
        ref += g[m * K + k] * naive_softplus(dts[slot[size_t(m * K + k)] * Di + c] + bias[c]);
      EXPECT_NEAR(delta[m * Di + c], ref, kFwdTol);
      EXPECT_GT(delta[m * Di + c], 0.0);  // Δ > 0 for any routing with positive weights
    }
  // Backward as in SwimbaMixer::backward: mixture, then softplus in place.
  Vec ddts(MK * Di), dg(MK, 0.0), dbias(Di, 0.0);
  cpu::moe_unpermute_backward(ddts.data(), Di, dg.data(), R.data(), Di, sp.data(), Di, g.data(),
                              slot.data(), M, K, Di, /*dw_accumulate=*/true);
  cpu::delta_softplus_backward(ddts.data(), dbias.data(), ddts.data(), dts.data(), bias.data(), MK, Di);
  EXPECT_EQ(compare_gradients(ddts, numeric_gradient(dts, f), kTol, "ddts"), "");
  EXPECT_EQ(compare_gradients(dg, numeric_gradient(g, f), kTol, "dg"), "");
  EXPECT_EQ(compare_gradients(dbias, numeric_gradient(bias, f), kTol, "dbias"), "");
}
