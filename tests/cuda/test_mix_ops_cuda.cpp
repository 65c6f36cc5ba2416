// The CUDA twins of the small ops the MoE mixers need, against their CPU references (GPU
// machine; label "gpu"):
//   - elementwise fill / copy / add_forward / add_backward on strided views (float, bf16,
//     double, int32): exact, padding between rows untouched, out aliasing an input;
//   - delta_softplus forward / backward (both sides of the v > 20 threshold): fp32 tight, bf16
//     within the error budget of gpu_testing.h, dbias accumulating and bitwise repeatable, dx
//     aliasing dout;
//   - expert_conv1d forward / backward (E up to 8, K up to 3, with and without carried state,
//     x with a token stride > Di, state_out aliasing state_in): fp32 tight, bf16 within budget,
//     dw / dbias bitwise repeatable, an expert no token chose left bitwise untouched;
//   - grouped_matmul's small-rows GEMV (rows = 1, 2, 7, 64, empty experts, fp32 and bf16,
//     vectorised and scalar loads) against the CPU, captured in a CUDA graph and replayed, and
//     the cuBLASLt path above kGroupedGemvMaxRows still matching;
//   - routed_gemv (decode form of an expertised linear: K experts per token, two column ranges
//     with their own coefficients) fp32 tight, bf16 within budget, vectorised and scalar loads,
//     nothing written past the columns, captured in a CUDA graph that reads idx on the device.
// Sizes are awkward on purpose (M = 777, Di = 70 / 130, B = 3 with T = 259).
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/rng.h"
#include "gpu_testing.h"
#include "ops/delta_softplus.h"
#include "ops/elementwise.h"
#include "ops/expert_conv1d.h"
#include "ops/grouped_matmul.h"
#include "ops/routed_gemv.h"
#include "ops/router_topk.h"

namespace moessm {
namespace {

using bf16 = __nv_bfloat16;
using namespace gputest;

void sync() { CUDA_CHECK(cudaDeviceSynchronize()); }

// ------------------------------------------------------------------------------------------
// elementwise: exact on every type (a bf16 sum is one fp32 add rounded once).
template <typename T> T host_val(double v) {
  if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16_rn(float(v));
  else return T(v);
}

template <typename T> void elementwise_case() {
  const idx_t M = 777, X = 70, LD = 75, LD2 = 81;
  Rng rng(7, sizeof(T));
  // Host values held as the device type's exact values (as doubles).
  auto vals = [&](size_t n) {
    std::vector<double> v = rnd(n, rng, -50, 50, std::is_same_v<T, bf16>);
    if constexpr (std::is_integral_v<T>) for (auto& x : v) x = std::round(x);
    return v;
  };
  auto upload = [](const std::vector<double>& v) {
    std::vector<T> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = host_val<T>(v[i]);
    return DeviceBuffer::from_host(h);
  };
  auto download = [](const DeviceBuffer& b) {
    std::vector<T> h = b.to_host<T>();
    std::vector<double> o(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      if constexpr (std::is_same_v<T, bf16>) o[i] = double(__bfloat162float(h[i]));
      else o[i] = double(h[i]);
    }
    return o;
  };
  const double sentinel = 3;
  const std::vector<double> a = vals(size_t(M * LD)), b = vals(size_t(M * LD2));
  const std::string tn = std::is_same_v<T, bf16> ? "bf16" : std::is_same_v<T, float> ? "float"
                         : std::is_same_v<T, double> ? "double" : "int32";

  // fill: contiguous, then a strided view (the padding keeps the sentinel).
  DeviceBuffer F = upload(std::vector<double>(size_t(M * LD), sentinel));
  cuda::fill<T>(F.as<T>(), host_val<T>(-2), idx_t(5), nullptr);
  cuda::fill<T>(F.as<T>() + LD, LD, host_val<T>(7), M - 1, X, nullptr);
  sync();
  const auto f = download(F);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < LD; ++x) {
      const double want = m == 0 ? (x < 5 ? -2 : sentinel) : (x < X ? 7 : sentinel);
      ASSERT_EQ(f[size_t(m * LD + x)], want) << tn << " fill at m=" << m << " x=" << x;
    }

  // copy a [M, X] view of a (stride LD) into a view of stride LD2.
  DeviceBuffer A = upload(a), C = upload(std::vector<double>(size_t(M * LD2), sentinel));
  cuda::copy<T>(C.as<T>(), LD2, A.as<T>(), LD, M, X, nullptr);
  sync();
  const auto c = download(C);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < LD2; ++x)
      ASSERT_EQ(c[size_t(m * LD2 + x)], x < X ? a[size_t(m * LD + x)] : sentinel) << tn << " copy m=" << m << " x=" << x;

  if constexpr (!std::is_integral_v<T>) {
    // out = a + b into a third view, then in place (out aliasing a: "a += b").
    DeviceBuffer B = upload(b), O = upload(std::vector<double>(size_t(M * LD2), sentinel));
    cuda::add_forward<T>(O.as<T>(), LD2, A.as<T>(), LD, B.as<T>(), LD2, M, X, nullptr);
    cuda::add_forward<T>(A.as<T>(), LD, A.as<T>(), LD, B.as<T>(), LD2, M, X, nullptr);
    sync();
    const auto o = download(O), ai = download(A);
    for (idx_t m = 0; m < M; ++m)
      for (idx_t x = 0; x < X; ++x) {
        double want = a[size_t(m * LD + x)] + b[size_t(m * LD2 + x)];
        if constexpr (std::is_same_v<T, bf16>) want = gputest::round_bf16(float(want));
        else if constexpr (std::is_same_v<T, float>) want = double(float(want));
        ASSERT_EQ(o[size_t(m * LD2 + x)], want) << tn << " add m=" << m << " x=" << x;
        ASSERT_EQ(ai[size_t(m * LD + x)], want) << tn << " in-place add m=" << m << " x=" << x;
      }
    EXPECT_EQ(o[size_t(LD2 - 1)], sentinel) << "add_forward wrote past X";

    // add_backward: both gradients, then only db (da nullptr).
    DeviceBuffer DA = upload(std::vector<double>(size_t(M * LD), sentinel)),
                 DB = upload(std::vector<double>(size_t(M * LD2), sentinel));
    cuda::add_backward<T>(DA.as<T>(), LD, DB.as<T>(), LD2, B.as<T>(), LD2, M, X, nullptr);
    sync();
    const auto da = download(DA), db = download(DB);
    DeviceBuffer DB2 = upload(std::vector<double>(size_t(M * LD2), sentinel));
    cuda::add_backward<T>(nullptr, 0, DB2.as<T>(), LD2, B.as<T>(), LD2, M, X, nullptr);
    sync();
    EXPECT_EQ(download(DB2), db);
    for (idx_t m = 0; m < M; ++m)
      for (idx_t x = 0; x < LD; ++x) {
        ASSERT_EQ(da[size_t(m * LD + x)], x < X ? b[size_t(m * LD2 + x)] : sentinel) << tn << " da m=" << m;
        ASSERT_EQ(db[size_t(m * LD2 + x)], x < X ? b[size_t(m * LD2 + x)] : sentinel) << tn << " db m=" << m;
      }
  }
}

TEST(ElementwiseCuda, FillCopyAddExactOnStridedViews) {
  REQUIRE_GPU();
  elementwise_case<float>();
  elementwise_case<bf16>();
  elementwise_case<double>();
  elementwise_case<int32_t>();
}

TEST(ElementwiseCuda, EmptyViewsLaunchNothingAndBadStridesAreRefused) {
  REQUIRE_GPU();
  cuda::fill<float>(nullptr, 0.f, idx_t(0), nullptr);
  cuda::copy<float>(nullptr, 4, nullptr, 4, 0, 4, nullptr);
  sync();
  EXPECT_THROW(cuda::copy<float>(nullptr, 3, nullptr, 4, 2, 4, nullptr), Error);
  EXPECT_THROW(cuda::add_forward<float>(nullptr, 4, nullptr, 4, nullptr, 2, 2, 4, nullptr), Error);
}

// ------------------------------------------------------------------------------------------
// delta_softplus
class DeltaSoftplusCuda : public ::testing::TestWithParam<std::pair<idx_t, idx_t>> {};

TEST_P(DeltaSoftplusCuda, Fp32TightBf16WithinBudgetDbiasDeterministic) {
  REQUIRE_GPU();
  const auto [M, Di] = GetParam();
  const size_t n = size_t(M * Di);
  for (int bf = 0; bf < 2; ++bf) {
    Rng rng(51 + bf, 3);
    // x + bias spans both sides of the softplus threshold (v > 20 → v).
    const auto x = rnd(n, rng, -8, 24, bf), dout = rnd(n, rng, -1, 1, bf), bias = rnd(size_t(Di), rng, -2, 2),
               db0 = rnd(size_t(Di), rng, -1, 1);
    // fp64 reference and the naive run (CPU float, bf16-stored outputs rounded).
    std::vector<double> out_r(n), dx_r(n), db_r(db0);
    cpu::delta_softplus_forward<double>(out_r.data(), x.data(), bias.data(), M, Di);
    cpu::delta_softplus_backward<double>(dx_r.data(), db_r.data(), dout.data(), x.data(), bias.data(), M, Di);
    auto xf = as<float>(x), gf = as<float>(dout), bfv = as<float>(bias), dbf = as<float>(db0);
    std::vector<float> out_n(n), dx_n(n);
    cpu::delta_softplus_forward<float>(out_n.data(), xf.data(), bfv.data(), M, Di);
    cpu::delta_softplus_backward<float>(dx_n.data(), dbf.data(), gf.data(), xf.data(), bfv.data(), M, Di);
    std::vector<double> naive[3] = {dbl(out_n), dbl(dx_n), dbl(dbf)};
    if (bf) naive[0] = rounded_d(naive[0]), naive[1] = rounded_d(naive[1]);

    std::vector<double> got[3], dx_alias, db_second;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      DeviceBuffer X = up<T>(x), G = up<T>(dout), Bb = up_f32(bias), DB = up_f32(db0), DB2 = up_f32(db0),
                   O = bf ? gputest::poisoned_bf16(n) : gputest::poisoned_f32(n),
                   D = bf ? gputest::poisoned_bf16(n) : gputest::poisoned_f32(n), G2 = up<T>(dout);
      cuda::delta_softplus_forward<T>(O.as<T>(), X.as<T>(), Bb.as<float>(), M, Di, nullptr);
      cuda::delta_softplus_backward<T>(D.as<T>(), DB.as<float>(), G.as<T>(), X.as<T>(), Bb.as<float>(), M, Di, nullptr);
      // Again with dx aliasing dout, into a second dbias that starts equal.
      cuda::delta_softplus_backward<T>(G2.as<T>(), DB2.as<float>(), G2.as<T>(), X.as<T>(), Bb.as<float>(), M, Di,
                                       nullptr);
      sync();
      got[0] = down<T>(O);
      got[1] = down<T>(D);
      got[2] = down_f32(DB);
      dx_alias = down<T>(G2);
      db_second = down_f32(DB2);
    };
    if (bf) run(bf16{}); else run(float{});
    const char* names[3] = {"out", "dx", "dbias"};
    const std::vector<double>* ref[3] = {&out_r, &dx_r, &db_r};
    for (int q = 0; q < 3; ++q) {
      const double e = rel_err(got[q], *ref[q]);
      if (bf) gputest::expect_within_budget(std::string("bf16 delta_softplus ") + names[q], e, rel_err(naive[q], *ref[q]), 1e-5);
      else EXPECT_LT(e, 1e-5) << "fp32 delta_softplus " << names[q] << " (naive fp32 error " << rel_err(naive[q], *ref[q]) << ")";
    }
    EXPECT_EQ(dx_alias, got[1]) << "dx aliasing dout gives the same dx";
    EXPECT_EQ(db_second, got[2]) << "dbias's fixed-order reduction is bitwise repeatable";
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, DeltaSoftplusCuda,
                         ::testing::Values(std::make_pair(idx_t(777), idx_t(130)), std::make_pair(idx_t(1), idx_t(70)),
                                           std::make_pair(idx_t(129), idx_t(33)),
                                           std::make_pair(idx_t(140001), idx_t(37))));

// ------------------------------------------------------------------------------------------
// expert_conv1d
struct XC {
  idx_t B, T, Di, Kc, E, K;
  bool state;
  idx_t x_ld;
};

// The [M, X] elements of a view with row stride ld, packed.
std::vector<double> packed(const std::vector<double>& v, idx_t M, idx_t X, idx_t ld) {
  std::vector<double> o(size_t(M * X));
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) o[size_t(m * X + x)] = v[size_t(m * ld + x)];
  return o;
}
std::vector<double> with_nan_padding(std::vector<double> v, idx_t M, idx_t X, idx_t ld) {
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = X; x < ld; ++x) v[size_t(m * ld + x)] = std::nan("");
  return v;
}

// K distinct experts per token in a shuffled (not increasing) order, never expert E-1 when
// E > K (the expert nobody chooses).
std::vector<int32_t> routing(idx_t M, idx_t E, idx_t K, Rng& rng) {
  const idx_t pool = E > K ? E - 1 : E;
  std::vector<int32_t> idx(size_t(M * K));
  for (idx_t m = 0; m < M; ++m) {
    std::vector<int32_t> all(static_cast<size_t>(pool));
    for (idx_t e = 0; e < pool; ++e) all[size_t(e)] = int32_t(e);
    for (idx_t k = 0; k < K; ++k) {
      const idx_t j = k + idx_t(rng.below(uint64_t(pool - k)));
      std::swap(all[size_t(k)], all[size_t(j)]);
      idx[size_t(m * K + k)] = all[size_t(k)];
    }
  }
  return idx;
}

// Outputs of one expert_conv1d forward + backward: out, pre, state_out, dx (packed [M, Di] /
// state layout), dw, dbias.
struct XcOut {
  std::vector<double> v[6];
};
const char* const kXcNames[6] = {"out", "pre", "state_out", "dx", "dw", "dbias"};

// CPU run in T on the given inputs; round_acts: bf16-store out / pre / state / dx (pre rounded
// before backward reads it: the naive bf16 run).
template <typename T>
XcOut cpu_xconv(const XC& c, const std::vector<double>& x, const std::vector<double>& st,
                const std::vector<int32_t>& idx, const std::vector<double>& w, const std::vector<double>& b,
                const std::vector<double>& dout, idx_t dout_ld, const std::vector<double>& dw0,
                const std::vector<double>& db0, bool round_acts) {
  const idx_t M = c.B * c.T, S = c.Kc - 1;
  auto X = as<T>(x), St = as<T>(st), W = as<T>(w), Bb = as<T>(b), G = as<T>(dout), dW = as<T>(dw0), dB = as<T>(db0);
  std::vector<T> out(size_t(M * c.Di)), pre(size_t(M * c.Di)), so(size_t(c.B * c.Di * S)), work(size_t(M * c.Di)),
      dx(size_t(M * c.x_ld), T(0)), dpw(size_t(M * c.Di)), dxw(size_t(M * c.Di));
  const T* sp = c.state ? St.data() : nullptr;
  cpu::expert_conv1d_forward<T>(out.data(), c.Di, pre.data(), so.data(), work.data(), X.data(), c.x_ld, sp, idx.data(),
                                W.data(), Bb.data(), c.B, c.T, c.Di, c.Kc, c.E, c.K);
  if (round_acts)
    for (auto& p : pre) p = T(gputest::round_bf16(float(p)));
  cpu::expert_conv1d_backward<T>(dx.data(), c.x_ld, dW.data(), dB.data(), dpw.data(), dxw.data(), G.data(), dout_ld,
                                 X.data(), c.x_ld, sp, pre.data(), idx.data(), W.data(), Bb.data(), c.B, c.T, c.Di,
                                 c.Kc, c.E, c.K);
  XcOut r;
  r.v[0] = dbl(out);
  r.v[1] = dbl(pre);
  r.v[2] = dbl(so);
  r.v[3] = packed(dbl(dx), M, c.Di, c.x_ld);
  r.v[4] = dbl(dW);
  r.v[5] = dbl(dB);
  if (round_acts)
    for (int q : {0, 2, 3}) r.v[q] = rounded_d(r.v[q]);
  return r;
}

class ExpertConvCuda : public ::testing::TestWithParam<XC> {};

TEST_P(ExpertConvCuda, Fp32TightBf16WithinBudgetDeterministicUntouchedExpert) {
  REQUIRE_GPU();
  const XC c = GetParam();
  const idx_t M = c.B * c.T, S = c.Kc - 1, out_ld = c.Di + 5, dout_ld = c.Di + 3;
  const size_t nst = size_t(c.B * c.Di * S), nw = size_t(c.E * c.Di * c.Kc), nb = size_t(c.E * c.Di);
  for (int bf = 0; bf < 2; ++bf) {
    Rng rng(71 + bf, uint64_t(c.Di + c.Kc));
    // Padding between tokens is NaN: a kernel reading it would poison its outputs.
    const auto x = with_nan_padding(rnd(size_t(M * c.x_ld), rng, -2, 2, bf), M, c.Di, c.x_ld);
    const auto st = rnd(nst, rng, -2, 2, bf), w = rnd(nw, rng, -0.6, 0.6), b = rnd(nb, rng, -0.5, 0.5);
    const auto dout = with_nan_padding(rnd(size_t(M * dout_ld), rng, -1, 1, bf), M, c.Di, dout_ld);
    auto dw0 = rnd(nw, rng, -1, 1), db0 = rnd(nb, rng, -1, 1);
    const bool has_unused = c.E > c.K;
    if (has_unused) dw0[size_t((c.E - 1) * c.Di * c.Kc)] = -0.0;  // "+= 0" would flip it to +0
    const auto idx = routing(M, c.E, c.K, rng);

    const XcOut ref = cpu_xconv<double>(c, x, st, idx, w, b, dout, dout_ld, dw0, db0, false);
    const XcOut naive = cpu_xconv<float>(c, x, st, idx, w, b, dout, dout_ld, dw0, db0, bf);

    XcOut got;
    std::vector<double> state_alias, out_perm, dw_again, db_again;
    std::vector<float> dw_bits;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      auto poisoned = [&](size_t n) { return bf ? gputest::poisoned_bf16(n) : gputest::poisoned_f32(n); };
      DeviceBuffer X = up<T>(x), St = up<T>(st), St2 = up<T>(st), G = up<T>(dout), W = up_f32(w), Bb = up_f32(b),
                   I = DeviceBuffer::from_host(idx), O = poisoned(size_t(M * out_ld)), P = poisoned(size_t(M * c.Di)),
                   SO = poisoned(std::max<size_t>(nst, 1)), D = poisoned(size_t(M * c.x_ld)), DW = up_f32(dw0),
                   DB = up_f32(db0), DW2 = up_f32(dw0), DB2 = up_f32(db0), O2 = poisoned(size_t(M * out_ld)),
                   P2 = poisoned(size_t(M * c.Di));
      const T* sp = c.state ? St.as<T>() : nullptr;
      cuda::expert_conv1d_forward<T>(O.as<T>(), out_ld, P.as<T>(), SO.as<T>(), nullptr, X.as<T>(), c.x_ld, sp,
                                     I.as<int32_t>(), W.as<float>(), Bb.as<float>(), c.B, c.T, c.Di, c.Kc, c.E, c.K,
                                     nullptr);
      cuda::expert_conv1d_backward<T>(D.as<T>(), c.x_ld, DW.as<float>(), DB.as<float>(), nullptr, nullptr, G.as<T>(),
                                      dout_ld, X.as<T>(), c.x_ld, sp, P.as<T>(), I.as<int32_t>(), W.as<float>(),
                                      Bb.as<float>(), c.B, c.T, c.Di, c.Kc, c.E, c.K, nullptr);
      // The same backward again (bitwise repeatable), then a forward with state_out aliasing
      // state_in (the decode step) and the experts of each token listed in reverse order.
      cuda::expert_conv1d_backward<T>(nullptr, c.x_ld, DW2.as<float>(), DB2.as<float>(), nullptr, nullptr, G.as<T>(),
                                      dout_ld, X.as<T>(), c.x_ld, sp, P.as<T>(), I.as<int32_t>(), W.as<float>(),
                                      Bb.as<float>(), c.B, c.T, c.Di, c.Kc, c.E, c.K, nullptr);
      std::vector<int32_t> rev(idx);
      for (idx_t m = 0; m < M; ++m) std::reverse(rev.begin() + m * c.K, rev.begin() + (m + 1) * c.K);
      DeviceBuffer IR = DeviceBuffer::from_host(rev);
      cuda::expert_conv1d_forward<T>(O2.as<T>(), out_ld, P2.as<T>(), c.state ? St2.as<T>() : nullptr, nullptr,
                                     X.as<T>(), c.x_ld, c.state ? St2.as<T>() : nullptr, IR.as<int32_t>(),
                                     W.as<float>(), Bb.as<float>(), c.B, c.T, c.Di, c.Kc, c.E, c.K, nullptr);
      sync();
      got.v[0] = packed(down<T>(O), M, c.Di, out_ld);
      got.v[1] = down<T>(P);
      got.v[2] = down<T>(SO);
      got.v[2].resize(nst);
      got.v[3] = packed(down<T>(D), M, c.Di, c.x_ld);
      got.v[4] = down_f32(DW);
      got.v[5] = down_f32(DB);
      dw_bits = DW.to_host<float>();
      dw_again = down_f32(DW2);
      db_again = down_f32(DB2);
      out_perm = packed(down<T>(O2), M, c.Di, out_ld);
      if (c.state) {
        state_alias = down<T>(St2);
        state_alias.resize(nst);
      }
    };
    if (bf) run(bf16{}); else run(float{});

    const std::string tag = std::string(bf ? "bf16 " : "fp32 ") + "expert_conv1d ";
    for (int q = 0; q < 6; ++q) {
      if (q == 2 && nst == 0) continue;
      const double e = rel_err(got.v[q], ref.v[q]), en = rel_err(naive.v[q], ref.v[q]);
      if (bf) gputest::expect_within_budget(tag + kXcNames[q], e, en, 1e-5);
      else EXPECT_LT(e, 1e-5) << tag << kXcNames[q] << " (naive fp32 error " << en << ")";
    }
    EXPECT_EQ(got.v[2], naive.v[2]) << tag << "state_out is a copy of the last inputs";
    if (c.state) EXPECT_EQ(state_alias, got.v[2]) << tag << "state_out aliasing state_in";
    EXPECT_EQ(dw_again, got.v[4]) << tag << "dw is bitwise repeatable";
    EXPECT_EQ(db_again, got.v[5]) << tag << "dbias is bitwise repeatable";
    EXPECT_EQ(out_perm, got.v[0]) << tag << "the order of a token's experts in idx does not matter";
    if (has_unused) {
      const size_t w0 = size_t((c.E - 1) * c.Di * c.Kc), b0 = size_t((c.E - 1) * c.Di);
      for (size_t i = 0; i < size_t(c.Di * c.Kc); ++i)
        ASSERT_EQ(got.v[4][w0 + i], dw0[w0 + i]) << tag << "the unchosen expert's dw moved at " << i;
      for (size_t i = 0; i < size_t(c.Di); ++i)
        ASSERT_EQ(got.v[5][b0 + i], db0[b0 + i]) << tag << "the unchosen expert's dbias moved at " << i;
      EXPECT_TRUE(std::signbit(dw_bits[w0])) << tag << "-0 in the unchosen expert's dw was rewritten";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ExpertConvCuda,
                         ::testing::Values(XC{3, 259, 70, 4, 8, 3, true, 75}, XC{3, 259, 130, 4, 8, 2, false, 130},
                                           XC{2, 2, 37, 4, 4, 1, true, 40},  // T < Kc-1: state passes through
                                           XC{5, 1, 70, 4, 8, 2, true, 70},  // a decode step
                                           XC{2, 70, 33, 3, 5, 3, true, 33}, XC{1, 100, 16, 8, 3, 2, true, 20},
                                           XC{2, 65, 20, 1, 2, 2, false, 20},  // E = K: every expert chosen
                                           XC{1, 777, 130, 4, 1, 1, true, 133}));

TEST(ExpertConvCuda, RefusesSizesBeyondTheKernels) {
  REQUIRE_GPU();
  EXPECT_THROW(cuda::expert_conv1d_forward<float>(nullptr, 8, nullptr, nullptr, nullptr, nullptr, 8, nullptr, nullptr,
                                                  nullptr, nullptr, 1, 4, 8, kExpertConvMaxKc + 1, 4, 2, nullptr),
               Error);
  EXPECT_THROW(cuda::expert_conv1d_forward<float>(nullptr, 8, nullptr, nullptr, nullptr, nullptr, 8, nullptr, nullptr,
                                                  nullptr, nullptr, 1, 4, 8, 4, 64, kRouterMaxTopK + 1, nullptr),
               Error);
  EXPECT_THROW(cuda::expert_conv1d_backward<float>(nullptr, 8, nullptr, nullptr, nullptr, nullptr, nullptr, 8, nullptr,
                                                   7, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 8, 4, 4, 2,
                                                   nullptr),
               Error);  // x_ld < Di
}

// ------------------------------------------------------------------------------------------
// grouped_matmul forward: the device GEMV for rows <= kGroupedGemvMaxRows, cuBLASLt above.
// Offsets for `rows` grouped rows over E experts; experts 0 and 3 (and all but one when rows = 1)
// get none.
std::vector<int32_t> group_offsets(idx_t rows, idx_t E, Rng& rng) {
  std::vector<int32_t> count(size_t(E), 0);
  for (idx_t r = 0; r < rows; ++r) {
    idx_t e;
    do e = idx_t(rng.below(uint64_t(E)));
    while (e == 0 || e == 3);
    ++count[size_t(rows == 1 ? E - 2 : e)];
  }
  std::vector<int32_t> off(size_t(E + 1), 0);
  for (idx_t e = 0; e < E; ++e) off[size_t(e + 1)] = off[size_t(e)] + count[size_t(e)];
  return off;
}

struct GM {
  idx_t rows, N, Kd, in_ld;  // in_ld = Kd with Kd % 8 == 0 takes the 16-byte loads
};

// The expert weights are a slice (row offset 5) of a wider slab [E, N+6, Kd].
struct GmData {
  idx_t E = 8, w_stride = 0, out_ld = 0, w_off = 0;
  std::vector<double> in, w;
};
GmData gm_data(const GM& g, Rng& rng, bool round) {
  GmData d;
  d.w_stride = (g.N + 6) * g.Kd;
  d.out_ld = g.N + 3;
  d.w_off = 5 * g.Kd;
  d.in = rnd(size_t(g.rows * g.in_ld), rng, -1, 1, round);
  d.w = rnd(size_t(d.E * d.w_stride), rng, -0.5, 0.5, round);
  return d;
}
template <typename T>
std::vector<double> cpu_gm(const GM& g, const GmData& d, const std::vector<int32_t>& off) {
  auto in = as<T>(d.in), w = as<T>(d.w);
  std::vector<T> out(size_t(g.rows * g.N));
  cpu::grouped_matmul_forward<T>(out.data(), g.N, in.data(), g.in_ld, w.data() + d.w_off, d.w_stride, off.data(), d.E,
                                 g.N, g.Kd);
  return dbl(out);
}

class GroupedGemvCuda : public ::testing::TestWithParam<GM> {};

TEST_P(GroupedGemvCuda, MatchesTheCpuFp32TightBf16WithinBudget) {
  REQUIRE_GPU();
  const GM g = GetParam();
  for (int bf = 0; bf < 2; ++bf) {
    Rng rng(91 + bf, uint64_t(g.rows * 131 + g.Kd));
    const GmData d = gm_data(g, rng, bf);
    const auto off = group_offsets(g.rows, d.E, rng);
    const auto ref = cpu_gm<double>(g, d, off);
    auto naive = cpu_gm<float>(g, d, off);
    if (bf) naive = rounded_d(naive);
    std::vector<double> got, padding;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      DeviceBuffer IN = up<T>(d.in), W = up<T>(d.w), OFF = DeviceBuffer::from_host(off),
                   OUT = bf ? gputest::poisoned_bf16(size_t(g.rows * d.out_ld)) : gputest::poisoned_f32(size_t(g.rows * d.out_ld));
      cuda::grouped_matmul_forward<T>(OUT.as<T>(), d.out_ld, IN.as<T>(), g.in_ld, W.as<T>() + d.w_off, d.w_stride,
                                      OFF.as<int32_t>(), d.E, g.N, g.Kd, g.rows, nullptr, nullptr);
      sync();
      const auto all = down<T>(OUT);
      got = packed(all, g.rows, g.N, d.out_ld);
      for (idx_t r = 0; r < g.rows; ++r)
        for (idx_t n = g.N; n < d.out_ld; ++n) padding.push_back(all[size_t(r * d.out_ld + n)]);
    };
    if (bf) run(bf16{}); else run(float{});
    const double e = rel_err(got, ref), en = rel_err(naive, ref);
    if (bf) gputest::expect_within_budget("bf16 grouped gemv rows=" + std::to_string(g.rows), e, en, 1e-5);
    else EXPECT_LT(e, 1e-5) << "fp32 grouped gemv rows=" << g.rows << " (naive fp32 error " << en << ")";
    for (double p : padding) ASSERT_TRUE(std::isnan(p)) << "the GEMV wrote past N in an output row";
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, GroupedGemvCuda,
                         ::testing::Values(GM{1, 100, 128, 128}, GM{2, 100, 128, 136}, GM{7, 96, 70, 70},
                                           GM{7, 100, 128, 128}, GM{64, 130, 256, 256}, GM{64, 33, 70, 75},
                                           GM{2, 8, 3, 3}));

// Captured in a CUDA graph on a non-default stream, replayed, and replayed again after new
// offsets were written to the same device buffer (the graph reads them on the device).
TEST(GroupedGemvCuda, GraphCapturableAndReadsTheOffsetsOnTheDevice) {
  REQUIRE_GPU();
  const GM g{7, 100, 128, 128};
  Rng rng(101, 1);
  const GmData d = gm_data(g, rng, false);
  const auto off1 = group_offsets(g.rows, d.E, rng);
  const std::vector<int32_t> off2 = {0, 0, 3, 3, 3, 3, 3, 3, 7};  // experts 1 and 7 only
  DeviceBuffer IN = up_f32(d.in), W = up_f32(d.w), OFF = DeviceBuffer::from_host(off1),
               OUT = gputest::poisoned_f32(size_t(g.rows * d.out_ld));
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  CUDA_CHECK(cudaDeviceSynchronize());  // the uploads are complete before st reads them
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  cuda::grouped_matmul_forward<float>(OUT.as<float>(), d.out_ld, IN.as<float>(), g.in_ld, W.as<float>() + d.w_off,
                                      d.w_stride, OFF.as<int32_t>(), d.E, g.N, g.Kd, g.rows, nullptr, st);
  CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (const auto* off : {&off1, &off2}) {
    CUDA_CHECK(cudaMemcpyAsync(OFF.data(), off->data(), off->size() * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaGraphLaunch(exec, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    const auto got = packed(down_f32(OUT), g.rows, g.N, d.out_ld);
    EXPECT_LT(rel_err(got, cpu_gm<double>(g, d, *off)), 1e-5) << "graph replay, offsets set " << (off == &off2);
    // The graph's result equals a direct launch bit for bit.
    DeviceBuffer OUT2 = gputest::poisoned_f32(size_t(g.rows * d.out_ld));
    cuda::grouped_matmul_forward<float>(OUT2.as<float>(), d.out_ld, IN.as<float>(), g.in_ld, W.as<float>() + d.w_off,
                                        d.w_stride, OFF.as<int32_t>(), d.E, g.N, g.Kd, g.rows, nullptr, st);
    CUDA_CHECK(cudaStreamSynchronize(st));
    EXPECT_EQ(packed(down_f32(OUT2), g.rows, g.N, d.out_ld), got);
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaStreamDestroy(st));
}

// Above kGroupedGemvMaxRows the cuBLASLt path runs (and checks offsets[E] against rows).
TEST(GroupedGemvCuda, LargeRowsTakeTheGemmPathAndStillMatch) {
  REQUIRE_GPU();
  for (idx_t rows : {kGroupedGemvMaxRows + 1, idx_t(300)}) {
    const GM g{rows, 100, 128, 128};
    Rng rng(111, uint64_t(rows));
    const GmData d = gm_data(g, rng, false);
    const auto off = group_offsets(g.rows, d.E, rng);
    DeviceBuffer IN = up_f32(d.in), W = up_f32(d.w), OFF = DeviceBuffer::from_host(off),
                 OUT = gputest::poisoned_f32(size_t(g.rows * d.out_ld));
    cuda::grouped_matmul_forward<float>(OUT.as<float>(), d.out_ld, IN.as<float>(), g.in_ld, W.as<float>() + d.w_off,
                                        d.w_stride, OFF.as<int32_t>(), d.E, g.N, g.Kd, g.rows, nullptr, nullptr);
    sync();
    EXPECT_LT(rel_err(packed(down_f32(OUT), g.rows, g.N, d.out_ld), cpu_gm<double>(g, d, off)), 1e-5) << "rows=" << rows;
    EXPECT_THROW(cuda::grouped_matmul_forward<float>(OUT.as<float>(), d.out_ld, IN.as<float>(), g.in_ld,
                                                     W.as<float>() + d.w_off, d.w_stride, OFF.as<int32_t>(), d.E, g.N,
                                                     g.Kd, g.rows + 1, nullptr, nullptr),
                 Error)
        << "offsets[E] != rows";
  }
}

// ------------------------------------------------------------------------------------------
// routed_gemv: y[m, n] = Σ_k c[m,k]·<W_{idx[m,k]}[n], in[m]>, columns [0, split) → lo (indicator),
// [split, N) → hi (router weights).
struct RG {
  idx_t M, K, N, Kd, split, in_ld;
};
struct RgData {
  idx_t E = 8;
  std::vector<double> in, w, c;
  std::vector<int32_t> idx;
};
RgData rg_data(const RG& g, Rng& rng, bool round) {
  RgData d;
  d.in = rnd(size_t(g.M * g.in_ld), rng, -1, 1, round);
  d.w = rnd(size_t(d.E * g.N * g.Kd), rng, -0.5, 0.5, round);
  d.c = rnd(size_t(g.M * g.K), rng, 0.1, 1, false);
  for (idx_t m = 0; m < g.M; ++m)
    for (idx_t k = 0; k < g.K; ++k) d.idx.push_back(int32_t((m * 3 + k * 5) % d.E));  // distinct for K <= 8
  return d;
}
// The CPU reference in T; outputs packed [M, split] then [M, N - split].
template <typename T>
std::vector<double> cpu_rg(const RG& g, const RgData& d) {
  auto in = as<T>(d.in), w = as<T>(d.w), c = as<T>(d.c);
  std::vector<T> lo(size_t(g.M * g.split)), hi(size_t(g.M * (g.N - g.split)));
  cpu::routed_gemv_forward<T>(lo.data(), g.split, nullptr, hi.data(), g.N - g.split, c.data(), g.split, in.data(),
                              g.in_ld, w.data(), g.N * g.Kd, d.idx.data(), g.M, g.K, g.N, g.Kd);
  std::vector<double> out = dbl(lo), h = dbl(hi);
  out.insert(out.end(), h.begin(), h.end());
  return out;
}

class RoutedGemvCuda : public ::testing::TestWithParam<RG> {};

TEST_P(RoutedGemvCuda, MatchesTheCpuFp32TightBf16WithinBudget) {
  REQUIRE_GPU();
  const RG g = GetParam();
  const idx_t lo_ld = g.split + 3, hi_ld = g.N - g.split + 2;
  for (int bf = 0; bf < 2; ++bf) {
    Rng rng(131 + bf, uint64_t(g.M * 17 + g.Kd));
    const RgData d = rg_data(g, rng, bf);
    const auto ref = cpu_rg<double>(g, d);
    auto naive = cpu_rg<float>(g, d);
    if (bf) naive = rounded_d(naive);
    std::vector<double> got;
    bool padding_ok = true;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      DeviceBuffer IN = up<T>(d.in), W = up<T>(d.w), C = up_f32(d.c), IDX = DeviceBuffer::from_host(d.idx),
                   LO = bf ? gputest::poisoned_bf16(size_t(g.M * lo_ld)) : gputest::poisoned_f32(size_t(g.M * lo_ld)),
                   HI = bf ? gputest::poisoned_bf16(size_t(g.M * hi_ld)) : gputest::poisoned_f32(size_t(g.M * hi_ld));
      cuda::routed_gemv_forward<T>(LO.as<T>(), lo_ld, nullptr, HI.as<T>(), hi_ld, C.as<float>(), g.split, IN.as<T>(),
                                   g.in_ld, W.as<T>(), g.N * g.Kd, IDX.as<int32_t>(), g.M, g.K, g.N, g.Kd, nullptr);
      sync();
      const auto lo = down<T>(LO), hi = down<T>(HI);
      got = packed(lo, g.M, g.split, lo_ld);
      const auto h = packed(hi, g.M, g.N - g.split, hi_ld);
      got.insert(got.end(), h.begin(), h.end());
      for (idx_t m = 0; m < g.M; ++m) {
        for (idx_t x = g.split; x < lo_ld; ++x) padding_ok = padding_ok && std::isnan(lo[size_t(m * lo_ld + x)]);
        for (idx_t x = g.N - g.split; x < hi_ld; ++x) padding_ok = padding_ok && std::isnan(hi[size_t(m * hi_ld + x)]);
      }
    };
    if (bf) run(bf16{}); else run(float{});
    const double e = rel_err(got, ref), en = rel_err(naive, ref);
    if (bf) gputest::expect_within_budget("bf16 routed gemv M=" + std::to_string(g.M), e, en, 1e-5);
    else EXPECT_LT(e, 1e-5) << "fp32 routed gemv M=" << g.M << " (naive fp32 error " << en << ")";
    EXPECT_TRUE(padding_ok) << "routed_gemv wrote past its columns";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RoutedGemvCuda,
                         ::testing::Values(RG{1, 1, 100, 128, 40, 128}, RG{3, 2, 96, 70, 48, 70},
                                           RG{7, 4, 130, 256, 65, 264}, RG{64, 2, 64, 128, 32, 128},
                                           RG{5, 3, 33, 16, 33, 16}));

// Captured in a CUDA graph, replayed after new expert choices were written to the same device
// buffer: the graph reads idx on the device, and equals a direct launch bit for bit.
TEST(RoutedGemvCuda, GraphCapturableAndReadsTheChoiceOnTheDevice) {
  REQUIRE_GPU();
  const RG g{2, 2, 100, 128, 50, 128};
  Rng rng(141, 1);
  RgData d = rg_data(g, rng, false);
  DeviceBuffer IN = up_f32(d.in), W = up_f32(d.w), C = up_f32(d.c), IDX = DeviceBuffer::from_host(d.idx),
               LO = gputest::poisoned_f32(size_t(g.M * g.split)), HI = gputest::poisoned_f32(size_t(g.M * (g.N - g.split)));
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  CUDA_CHECK(cudaDeviceSynchronize());
  auto launch = [&](float* lo, float* hi) {
    cuda::routed_gemv_forward<float>(lo, g.split, nullptr, hi, g.N - g.split, C.as<float>(), g.split, IN.as<float>(),
                                     g.in_ld, W.as<float>(), g.N * g.Kd, IDX.as<int32_t>(), g.M, g.K, g.N, g.Kd, st);
  };
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  launch(LO.as<float>(), HI.as<float>());
  CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int round = 0; round < 2; ++round) {
    if (round == 1) d.idx = {7, 1, 6, 0};
    CUDA_CHECK(cudaMemcpyAsync(IDX.data(), d.idx.data(), d.idx.size() * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaGraphLaunch(exec, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    std::vector<double> got = down_f32(LO), h = down_f32(HI);
    got.insert(got.end(), h.begin(), h.end());
    EXPECT_LT(rel_err(got, cpu_rg<double>(g, d)), 1e-5) << "graph replay " << round;
    DeviceBuffer LO2 = gputest::poisoned_f32(size_t(g.M * g.split)), HI2 = gputest::poisoned_f32(size_t(g.M * (g.N - g.split)));
    launch(LO2.as<float>(), HI2.as<float>());
    CUDA_CHECK(cudaStreamSynchronize(st));
    std::vector<double> direct = down_f32(LO2), h2 = down_f32(HI2);
    direct.insert(direct.end(), h2.begin(), h2.end());
    EXPECT_EQ(direct, got);
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaStreamDestroy(st));
}

}  // namespace
}  // namespace moessm
