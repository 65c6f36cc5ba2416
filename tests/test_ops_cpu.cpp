// CPU ops: forward against direct formulas and backward against central finite differences in
// double precision. Every check uses a scalar probe loss L = Σ out ⊙ R with a random R, so the
// analytic gradient is backward(dout = R).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "ops/activations.h"
#include "ops/adamw.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/selective_scan.h"
#include "ops/ssm_a.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;
using Vec = std::vector<double>;

namespace {
double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
constexpr double kTol = 1e-7;
}  // namespace

TEST(Matmul, ForwardMatchesNaiveAndBackwardMatchesFiniteDifferences) {
  Rng rng(1);
  const idx_t M = 7, N = 5, K = 6, in_ld = 9, out_ld = 8;
  Vec in = random_vector<double>(M * in_ld, rng), w = random_vector<double>(N * K, rng),
      bias = random_vector<double>(N, rng), R = random_vector<double>(M * out_ld, rng);
  Vec out(M * out_ld, 0.0);
  auto f = [&] {
    cpu::matmul_forward(out.data(), out_ld, in.data(), in_ld, w.data(), bias.data(), M, N, K);
    double s = 0;
    for (idx_t m = 0; m < M; ++m)
      for (idx_t n = 0; n < N; ++n) s += out[m * out_ld + n] * R[m * out_ld + n];
    return s;
  };
  f();
  for (idx_t m = 0; m < M; ++m)
    for (idx_t n = 0; n < N; ++n) {
      double ref = bias[n];
      for (idx_t k = 0; k < K; ++k) ref += in[m * in_ld + k] * w[n * K + k];
      EXPECT_NEAR(out[m * out_ld + n], ref, 1e-12);
    }
  Vec din(M * in_ld, 0.0), dw(N * K, 0.0), db(N, 0.0);
  cpu::matmul_backward(din.data(), in_ld, dw.data(), db.data(), R.data(), out_ld, in.data(), in_ld,
                       w.data(), M, N, K);
  Vec nin = numeric_gradient(in, f), nw = numeric_gradient(w, f), nb = numeric_gradient(bias, f);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t k = K; k < in_ld; ++k) { din[m * in_ld + k] = 0; nin[m * in_ld + k] = 0; }
  EXPECT_EQ(compare_gradients(din, nin, kTol, "din"), "");
  EXPECT_EQ(compare_gradients(dw, nw, kTol, "dweight"), "");
  EXPECT_EQ(compare_gradients(db, nb, kTol, "dbias"), "");
}

TEST(Matmul, BuiltinGemmMatchesNaiveForEveryTransposeAndBeta) {
  // The fallback used when no BLAS is found; checked here whatever this build links.
  Rng rng(13);
  const idx_t M = 9, N = 7, K = 11;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Vec A = random_vector<double>(M * K, rng), Bm = random_vector<double>(K * N, rng),
          C = random_vector<double>(M * N, rng), ref = C;
      for (idx_t m = 0; m < M; ++m)
        for (idx_t n = 0; n < N; ++n) {
          double acc = 0;
          for (idx_t k = 0; k < K; ++k)
            acc += (ta ? A[k * M + m] : A[m * K + k]) * (tb ? Bm[n * K + k] : Bm[k * N + n]);
          ref[m * N + n] = 2.0 * acc + 0.5 * ref[m * N + n];
        }
      cpu::gemm_builtin(ta, tb, M, N, K, 2.0, A.data(), ta ? M : K, Bm.data(), tb ? K : N, 0.5, C.data(), N);
      EXPECT_LT(max_rel_diff(C.data(), ref.data(), C.size()), 1e-14) << ta << tb;
      Vec G = C;
      cpu::gemm(ta, tb, M, N, K, 2.0, A.data(), ta ? M : K, Bm.data(), tb ? K : N, 0.0, G.data(), N);
      cpu::gemm_builtin(ta, tb, M, N, K, 2.0, A.data(), ta ? M : K, Bm.data(), tb ? K : N, 0.0, C.data(), N);
      EXPECT_LT(max_rel_diff(C.data(), G.data(), C.size()), 1e-14) << "builtin vs " << cpu::matmul_backend_name();
    }
}

TEST(Matmul, SmallRowCountPathMatchesBlasPath) {
  // M <= 8 takes the row-streaming paths used by decode steps (blocks of 4 input rows, then the
  // few-rows path that dots 4 weight rows at once; N = 37 leaves a weight row over); compare
  // with the GEMM path.
  Rng rng(12);
  const idx_t N = 37, K = 53;
  Vec w = random_vector<double>(N * K, rng), x = random_vector<double>(20 * K, rng);
  for (idx_t M : {1, 3, 4, 6, 8}) {
    Vec small(M * N, 0.5), big(20 * N, 0.5);
    cpu::matmul_forward(small.data(), N, x.data(), K, w.data(), (const double*)nullptr, M, N, K, true);
    cpu::matmul_forward(big.data(), N, x.data(), K, w.data(), (const double*)nullptr, 20, N, K, true);
    EXPECT_LT(max_rel_diff(small.data(), big.data(), M * N), 1e-14) << "M=" << M;
  }
}

class ConvTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};
TEST_P(ConvTest, BackwardMatchesFiniteDifferences) {
  // Plain variables, not a structured binding: the lambda below captures them (C++17 forbids
  // capturing a structured binding; clang rejects it).
  const bool silu = std::get<0>(GetParam()), with_state = std::get<1>(GetParam());
  Rng rng(2);
  const idx_t B = 2, T = 7, Di = 3, Kc = 4, ld = 5;
  Vec x = random_vector<double>(B * T * ld, rng), w = random_vector<double>(Di * Kc, rng),
      bias = random_vector<double>(Di, rng), st = random_vector<double>(B * Di * (Kc - 1), rng),
      R = random_vector<double>(B * T * Di, rng), out(B * T * Di);
  const double* sp = with_state ? st.data() : nullptr;
  auto f = [&] {
    cpu::causal_conv1d_forward(out.data(), Di, (double*)nullptr, x.data(), ld, sp, nullptr,
                               w.data(), bias.data(), B, T, Di, Kc, silu);
    return dot(out, R);
  };
  f();
  // direct formula check of one element (b=1, t=1, c=2) which reaches into the state
  double pre = bias[2];
  for (idx_t j = 0; j < Kc; ++j) {
    idx_t t = 1 - Kc + 1 + j;
    double xv = t >= 0 ? x[(1 * T + t) * ld + 2] : (with_state ? st[(1 * Di + 2) * (Kc - 1) + Kc - 1 + t] : 0.0);
    pre += w[2 * Kc + j] * xv;
  }
  EXPECT_NEAR(out[(1 * T + 1) * Di + 2], silu ? silu_of(pre) : pre, 1e-12);
  Vec dx(B * T * ld, 0.0), dw(Di * Kc, 0.0), db(Di, 0.0);
  cpu::causal_conv1d_backward(dx.data(), ld, dw.data(), db.data(), R.data(), Di, x.data(), ld, sp,
                              nullptr, w.data(), bias.data(), B, T, Di, Kc, silu);
  Vec nx = numeric_gradient(x, f);
  for (idx_t i = 0; i < B * T; ++i)
    for (idx_t c = Di; c < ld; ++c) { dx[i * ld + c] = 0; nx[i * ld + c] = 0; }
  EXPECT_EQ(compare_gradients(dx, nx, kTol, "dx"), "");
  EXPECT_EQ(compare_gradients(dw, numeric_gradient(w, f), kTol, "dw"), "");
  EXPECT_EQ(compare_gradients(db, numeric_gradient(bias, f), kTol, "dbias"), "");
}
INSTANTIATE_TEST_SUITE_P(Variants, ConvTest, ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(CausalConv1d, CarriedStateMakesSegmentsEqualTheWhole) {
  Rng rng(3);
  const idx_t B = 2, T = 9, T1 = 2, Di = 3, Kc = 4;  // T1 < Kc-1 exercises state carry-through
  Vec x = random_vector<double>(B * T * Di, rng), w = random_vector<double>(Di * Kc, rng),
      bias = random_vector<double>(Di, rng);
  Vec whole(B * T * Di), parts(B * T * Di), state(B * Di * (Kc - 1), 0.0);
  cpu::causal_conv1d_forward(whole.data(), Di, (double*)nullptr, x.data(), Di, (const double*)nullptr,
                             nullptr, w.data(), bias.data(), B, T, Di, Kc, true);
  // segment 1 = tokens [0, T1), then one token at a time with the state aliased in place
  Vec x1(B * T1 * Di), o1(B * T1 * Di);
  for (idx_t b = 0; b < B; ++b)
    for (idx_t i = 0; i < T1 * Di; ++i) x1[b * T1 * Di + i] = x[b * T * Di + i];
  cpu::causal_conv1d_forward(o1.data(), Di, state.data(), x1.data(), Di, (const double*)nullptr,
                             nullptr, w.data(), bias.data(), B, T1, Di, Kc, true);
  for (idx_t b = 0; b < B; ++b)
    for (idx_t i = 0; i < T1 * Di; ++i) parts[b * T * Di + i] = o1[b * T1 * Di + i];
  for (idx_t t = T1; t < T; ++t) {
    Vec xs(B * Di), os(B * Di);
    for (idx_t b = 0; b < B; ++b)
      for (idx_t c = 0; c < Di; ++c) xs[b * Di + c] = x[(b * T + t) * Di + c];
    cpu::causal_conv1d_forward(os.data(), Di, state.data(), xs.data(), Di, state.data(), nullptr,
                               w.data(), bias.data(), B, 1, Di, Kc, true);
    for (idx_t b = 0; b < B; ++b)
      for (idx_t c = 0; c < Di; ++c) parts[(b * T + t) * Di + c] = os[b * Di + c];
  }
  EXPECT_LT(max_rel_diff(parts.data(), whole.data(), whole.size()), 1e-14);
}

struct ScanCase { idx_t B, T, Di, N; bool gate, h0, dh_last, saved_delta; };
class ScanTest : public ::testing::TestWithParam<ScanCase> {};

TEST_P(ScanTest, BackwardMatchesFiniteDifferences) {
  const ScanCase sc = GetParam();
  Rng rng(4 + sc.T);
  const idx_t B = sc.B, T = sc.T, Di = sc.Di, N = sc.N, nch = scan_num_chunks(T);
  const idx_t xld = Di + 1, bld = 2 * N + 3;  // strided inputs, as inside the mixer
  Vec u = random_vector<double>(B * T * xld, rng), delta = random_vector<double>(B * T * xld, rng, -3, 1),
      bc = random_vector<double>(B * T * bld, rng), z = random_vector<double>(B * T * xld, rng),
      A = random_vector<double>(Di * N, rng, -2.0, -0.1), D = random_vector<double>(Di, rng),
      dbias = random_vector<double>(Di, rng, -1, 0.5), h0 = random_vector<double>(B * Di * N, rng),
      R = random_vector<double>(B * T * Di, rng), Rh = random_vector<double>(B * Di * N, rng);
  Vec out(B * T * Di), hl(B * Di * N), cs(B * nch * Di * N);
  ScanParams<double> p;
  p.B = B; p.T_ = T; p.Di = Di; p.N = N;
  p.u = u.data(); p.u_ld = xld; p.delta = delta.data(); p.delta_ld = xld;
  p.Bm = bc.data() + 3; p.B_ld = bld; p.Cm = bc.data() + 3 + N; p.C_ld = bld;
  if (sc.gate) { p.z = z.data(); p.z_ld = xld; }
  p.A = A.data(); p.D = D.data(); p.delta_bias = dbias.data();
  if (sc.h0) p.h0 = h0.data();
  p.out = out.data(); p.out_ld = Di; p.h_last = hl.data(); p.chunk_states = cs.data();
  Vec saved(B * T * Di);
  if (sc.saved_delta) p.delta_saved = saved.data();  // backward then reads Δ instead of recomputing
  auto f = [&] {
    cpu::selective_scan_forward(p);
    return dot(out, R) + (sc.dh_last ? dot(hl, Rh) : 0.0);
  };
  f();
  // direct recurrence for one channel (the last one) as a formula check
  {
    const idx_t b = B - 1, c = Di - 1;
    Vec h(N);
    for (idx_t n = 0; n < N; ++n) h[n] = sc.h0 ? h0[(b * Di + c) * N + n] : 0.0;
    for (idx_t t = 0; t < T; ++t) {
      const idx_t bt = b * T + t;
      double dt = softplus_of(delta[bt * xld + c] + dbias[c]), y = D[c] * u[bt * xld + c];
      for (idx_t n = 0; n < N; ++n) {
        h[n] = std::exp(dt * A[c * N + n]) * h[n] + dt * bc[bt * bld + 3 + n] * u[bt * xld + c];
        y += bc[bt * bld + 3 + N + n] * h[n];
      }
      if (sc.gate) y *= silu_of(z[bt * xld + c]);
      ASSERT_NEAR(out[bt * Di + c], y, 1e-12) << "t=" << t;
    }
  }
  Vec du(B * T * xld, 0.0), dd(B * T * xld, 0.0), dbc(B * T * bld, 0.0), dz(B * T * xld, 0.0),
      dA(Di * N, 0.0), dD(Di, 0.0), ddb(Di, 0.0), dh0(B * Di * N, 0.0);
  ScanGrads<double> g;
  g.dout = R.data(); g.dout_ld = Di; g.dh_last = sc.dh_last ? Rh.data() : nullptr;
  g.du = du.data(); g.du_ld = xld; g.ddelta = dd.data(); g.ddelta_ld = xld;
  g.dB = dbc.data() + 3; g.dB_ld = bld; g.dC = dbc.data() + 3 + N; g.dC_ld = bld;
  g.dz = dz.data(); g.dz_ld = xld; g.dA = dA.data(); g.dD = dD.data(); g.ddelta_bias = ddb.data();
  g.dh0 = dh0.data();
  cpu::selective_scan_backward(g, p);
  auto mask = [](Vec& a, Vec& b, idx_t rows, idx_t ld, idx_t lo, idx_t hi) {
    for (idx_t r = 0; r < rows; ++r)
      for (idx_t i = 0; i < ld; ++i)
        if (i < lo || i >= hi) { a[r * ld + i] = 0; b[r * ld + i] = 0; }
  };
  Vec nu = numeric_gradient(u, f), nd = numeric_gradient(delta, f), nbc = numeric_gradient(bc, f);
  mask(du, nu, B * T, xld, 0, Di);
  mask(dd, nd, B * T, xld, 0, Di);
  mask(dbc, nbc, B * T, bld, 3, 3 + 2 * N);
  EXPECT_EQ(compare_gradients(du, nu, kTol, "du"), "");
  EXPECT_EQ(compare_gradients(dd, nd, kTol, "ddelta"), "");
  EXPECT_EQ(compare_gradients(dbc, nbc, kTol, "dB/dC"), "");
  EXPECT_EQ(compare_gradients(dA, numeric_gradient(A, f), kTol, "dA"), "");
  EXPECT_EQ(compare_gradients(dD, numeric_gradient(D, f), kTol, "dD"), "");
  EXPECT_EQ(compare_gradients(ddb, numeric_gradient(dbias, f), kTol, "ddelta_bias"), "");
  if (sc.gate) {
    Vec nz = numeric_gradient(z, f);
    mask(dz, nz, B * T, xld, 0, Di);
    EXPECT_EQ(compare_gradients(dz, nz, kTol, "dz"), "");
  }
  if (sc.h0) EXPECT_EQ(compare_gradients(dh0, numeric_gradient(h0, f), kTol, "dh0"), "");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ScanTest,
    ::testing::Values(ScanCase{1, 5, 3, 2, true, false, false, false},
                      ScanCase{2, kScanChunk + 7, 3, 4, true, true, true, true},   // T not a multiple of the chunk
                      ScanCase{1, 2 * kScanChunk, 2, 3, false, true, false, false},  // exact multiple
                      ScanCase{2, 9, 2, 20, true, true, false, true},             // N > 16 (heap path)
                      ScanCase{1, 150, 2, 3, true, true, true, true}));           // three backward windows of 64, the last partial

TEST(SelectiveScan, ChunkedPrefillEqualsOneGo) {
  Rng rng(5);
  const idx_t B = 2, T = 150, T1 = 70, Di = 4, N = 5;
  Vec u = random_vector<double>(B * T * Di, rng), dl = random_vector<double>(B * T * Di, rng),
      Bm = random_vector<double>(B * T * N, rng), Cm = random_vector<double>(B * T * N, rng),
      A = random_vector<double>(Di * N, rng, -2, -0.1), out(B * T * Di), out2(B * T * Di);
  auto run = [&](idx_t t0, idx_t len, const double* h0, double* hl, double* o) {
    // pack the [t0, t0+len) slice of every batch row
    Vec su(B * len * Di), sd(B * len * Di), sb(B * len * N), sc(B * len * N), so(B * len * Di);
    for (idx_t b = 0; b < B; ++b)
      for (idx_t t = 0; t < len; ++t) {
        for (idx_t c = 0; c < Di; ++c) {
          su[(b * len + t) * Di + c] = u[(b * T + t0 + t) * Di + c];
          sd[(b * len + t) * Di + c] = dl[(b * T + t0 + t) * Di + c];
        }
        for (idx_t n = 0; n < N; ++n) {
          sb[(b * len + t) * N + n] = Bm[(b * T + t0 + t) * N + n];
          sc[(b * len + t) * N + n] = Cm[(b * T + t0 + t) * N + n];
        }
      }
    ScanParams<double> p;
    p.B = B; p.T_ = len; p.Di = Di; p.N = N; p.u = su.data(); p.u_ld = Di; p.delta = sd.data();
    p.delta_ld = Di; p.Bm = sb.data(); p.B_ld = N; p.Cm = sc.data(); p.C_ld = N; p.A = A.data();
    p.h0 = h0; p.h_last = hl; p.out = so.data(); p.out_ld = Di;
    cpu::selective_scan_forward(p);
    for (idx_t b = 0; b < B; ++b)
      for (idx_t t = 0; t < len; ++t)
        for (idx_t c = 0; c < Di; ++c) o[(b * T + t0 + t) * Di + c] = so[(b * len + t) * Di + c];
  };
  Vec h(B * Di * N);
  run(0, T, nullptr, nullptr, out.data());
  run(0, T1, nullptr, h.data(), out2.data());
  run(T1, T - T1, h.data(), h.data(), out2.data());  // h0 aliases h_last
  EXPECT_LT(max_rel_diff(out2.data(), out.data(), out.size()), 1e-13);
}

TEST(SsmA, ForwardIsMinusExpAndBackwardMatchesFiniteDifferences) {
  Rng rng(21);
  const idx_t n = 13;
  Vec A_log = random_vector<double>(n, rng, -2.0, 2.0), R = random_vector<double>(n, rng), A(n);
  cpu::ssm_a_forward(A.data(), A_log.data(), n);
  for (idx_t i = 0; i < n; ++i) EXPECT_DOUBLE_EQ(A[i], -std::exp(A_log[i]));
  auto f = [&] {
    cpu::ssm_a_forward(A.data(), A_log.data(), n);
    return dot(A, R);
  };
  f();
  Vec g(n, 0.5);  // accumulates onto what is there
  cpu::ssm_a_backward(g.data(), R.data(), A.data(), n);
  for (double& v : g) v -= 0.5;
  EXPECT_EQ(compare_gradients(g, numeric_gradient(A_log, f), kTol, "dA_log"), "");
}

TEST(Sum, OrderedDoubleSum) {
  const std::vector<float> x = {1e8f, 1.f, -1e8f, 0.25f};
  EXPECT_EQ(cpu::sum(x.data(), 4), 1.25);
  EXPECT_EQ(cpu::sum(x.data(), 0), 0.0);
}

TEST(RmsNorm, ForwardAndBackward) {
  Rng rng(6);
  const idx_t rows = 4, D = 7;
  Vec x = random_vector<double>(rows * D, rng), w = random_vector<double>(D, rng),
      R = random_vector<double>(rows * D, rng), out(rows * D), rstd(rows);
  auto f = [&] {
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), rows, D, 1e-5);
    return dot(out, R);
  };
  f();
  double ms = 0;
  for (idx_t i = 0; i < D; ++i) ms += x[D + i] * x[D + i];
  EXPECT_NEAR(out[D + 3], x[D + 3] / std::sqrt(ms / D + 1e-5) * w[3], 1e-12);
  Vec dx(rows * D, 0.0), dw(D, 0.0);
  cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), rows, D);
  EXPECT_EQ(compare_gradients(dx, numeric_gradient(x, f), kTol, "dx"), "");
  EXPECT_EQ(compare_gradients(dw, numeric_gradient(w, f), kTol, "dw"), "");
}

TEST(Activations, SiluAndSoftplusWithThreshold) {
  Rng rng(7);
  Vec x = {-30, -3, -0.5, 0, 0.7, 19.9, 20.0, 20.5, 45};
  Vec R = random_vector<double>(x.size(), rng), out(x.size()), dx(x.size());
  EXPECT_DOUBLE_EQ(softplus_of(25.0), 25.0);
  EXPECT_NEAR(softplus_of(0.0), std::log(2.0), 1e-15);
  EXPECT_NEAR(silu_of(1.0), 1.0 / (1.0 + std::exp(-1.0)), 1e-15);
  for (int which = 0; which < 2; ++which) {
    auto f = [&] {
      which ? cpu::softplus_forward(out.data(), x.data(), (idx_t)x.size())
            : cpu::silu_forward(out.data(), x.data(), (idx_t)x.size());
      return dot(out, R);
    };
    which ? cpu::softplus_backward(dx.data(), R.data(), x.data(), (idx_t)x.size())
          : cpu::silu_backward(dx.data(), R.data(), x.data(), (idx_t)x.size());
    Vec nx = numeric_gradient(x, f);
    nx[6] = dx[6];  // softplus is not differentiable exactly at the threshold: skip that point
    EXPECT_EQ(compare_gradients(dx, nx, 1e-6, which ? "softplus" : "silu"), "");
  }
}

// exp_fast(float) as it was before NaN inputs were made defined (kept here only to check that
// the fix changed no finite result). Its integer conversion and shift are undefined for NaN, so
// it is only called on non-NaN inputs.
float exp_fast_before_nan_fix(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = (x - k * 0.693145752f) - k * 1.42860677e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST(Activations, ExpFastIsDefinedForNaN) {
  // Before the fix a NaN reached static_cast<int32_t> and a left shift of a negative value
  // (UBSan: float-cast-overflow with clang, shift-base with gcc). volatile keeps the compiler from folding it away.
  volatile float qnan = std::numeric_limits<float>::quiet_NaN();
  volatile float neg_nan = -std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(exp_fast(float(qnan))));
  EXPECT_TRUE(std::isnan(exp_fast(float(neg_nan))));
  EXPECT_TRUE(std::isnan(sigmoid_of(float(qnan))));
  std::vector<float> x = {1.0f, float(qnan), -2.0f}, y(3);
  cpu::silu_forward(y.data(), x.data(), 3);
  EXPECT_TRUE(std::isnan(y[1]));
  // The neighbours are unaffected (within the op's float rounding; the vectorised op may fuse
  // differently from the scalar helper).
  EXPECT_NEAR(y[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(y[2], -2.0 / (1.0 + std::exp(2.0)), 1e-6);
}

TEST(Activations, ExpFastFiniteResultsUnchangedByNaNFix) {
  // Every 997th float bit pattern in [-100, 100] (both signs), plus the clamp edges, zeros,
  // denormals and infinities: bit-identical to the form before the fix.
  std::vector<float> xs = {0.0f, -0.0f, -87.0f, 88.0f, -87.00001f, 88.00001f, 1e-40f, -1e-40f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::max(), -std::numeric_limits<float>::max()};
  const uint32_t hi = float_bits(100.0f);
  for (uint32_t u = 0; u <= hi; u += 997) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    xs.push_back(f);
    xs.push_back(-f);
  }
  size_t mismatches = 0;
  for (float v : xs)
    if (float_bits(exp_fast(v)) != float_bits(exp_fast_before_nan_fix(v))) ++mismatches;
  EXPECT_EQ(mismatches, 0u) << "of " << xs.size() << " inputs";
  EXPECT_GT(xs.size(), 2000000u);
}

TEST(Embedding, ForwardBackwardAndOutOfVocabulary) {
  Rng rng(8);
  const idx_t V = 5, D = 3, rows = 6;
  std::vector<int32_t> ids = {1, 4, 1, 0, 3, 1};
  Vec table = random_vector<double>(V * D, rng), R = random_vector<double>(rows * D, rng), out(rows * D);
  auto f = [&] {
    cpu::embedding_forward(out.data(), ids.data(), table.data(), rows, V, D);
    return dot(out, R);
  };
  f();
  EXPECT_EQ(out[1 * D + 2], table[4 * D + 2]);
  Vec dt(V * D, 0.0);
  cpu::embedding_backward(dt.data(), R.data(), ids.data(), rows, V, D);
  EXPECT_EQ(compare_gradients(dt, numeric_gradient(table, f), kTol, "dtable"), "");
  ids[2] = 5;
  EXPECT_THROW(cpu::embedding_forward(out.data(), ids.data(), table.data(), rows, V, D), Error);
}

TEST(CrossEntropy, LossAndFusedBackward) {
  Rng rng(9);
  const idx_t rows = 4, V = 6;
  std::vector<int32_t> tg = {2, 0, -1, 5};
  Vec logits = random_vector<double>(rows * V, rng, -3, 3), loss(rows), lse(rows),
      dl = random_vector<double>(rows, rng);
  auto f = [&] {
    cpu::cross_entropy_forward(loss.data(), lse.data(), logits.data(), tg.data(), rows, V);
    return dot(loss, dl);
  };
  f();
  double s = 0;
  for (idx_t i = 0; i < V; ++i) s += std::exp(logits[3 * V + i]);
  EXPECT_NEAR(loss[3], std::log(s) - logits[3 * V + 5], 1e-12);
  EXPECT_EQ(loss[2], 0.0);  // ignored target
  Vec d(rows * V);
  cpu::cross_entropy_backward(d.data(), dl.data(), logits.data(), lse.data(), tg.data(), rows, V);
  EXPECT_EQ(compare_gradients(d, numeric_gradient(logits, f), kTol, "dlogits"), "");
  f();  // refresh lse at the unperturbed logits
  cpu::cross_entropy_backward(d.data(), dl.data(), logits.data(), lse.data(), tg.data(), rows, V);
  Vec inplace = logits;  // in-place backward gives the same
  cpu::cross_entropy_backward(inplace.data(), dl.data(), inplace.data(), lse.data(), tg.data(), rows, V);
  EXPECT_LT(max_rel_diff(inplace.data(), d.data(), d.size()), 1e-15);
}

TEST(AdamW, StepMatchesHandComputedUpdate) {
  // Two steps on one element, computed by hand from the PyTorch AdamW definition.
  double p = 0.5, m = 0, v = 0;
  const double lr = 0.1, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.01;
  double g1 = 0.2, g2 = -0.4;
  cpu::adamw_update(&p, &m, &v, &g1, 1, lr, b1, b2, eps, wd, 1);
  // step 1: m=0.02, v=0.0004·... ; m̂ = 0.2, v̂ = 0.04 → update 0.2/(0.2+eps) + wd·0.5
  double p1 = 0.5 - lr * (0.2 / (0.2 + eps) + wd * 0.5);
  EXPECT_NEAR(p, p1, 1e-12);
  cpu::adamw_update(&p, &m, &v, &g2, 1, lr, b1, b2, eps, wd, 2);
  double m2 = 0.9 * 0.02 + 0.1 * g2, v2 = 0.99 * (0.01 * 0.04) + 0.01 * 0.16;
  double mh = m2 / (1 - 0.81), vh = v2 / (1 - 0.9801);
  EXPECT_NEAR(p, p1 - lr * (mh / (std::sqrt(vh) + eps) + wd * p1), 1e-12);
  EXPECT_NEAR(m, m2, 1e-15);
  EXPECT_NEAR(v, v2, 1e-15);
  Vec g = {3, 4};
  EXPECT_DOUBLE_EQ(cpu::grad_norm_squared(g.data(), 2), 25.0);
}
