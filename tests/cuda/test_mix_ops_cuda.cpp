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
//     the cuBLASLt path above kGroupedGemvMaxRows still matching.
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
#include "ops/router_topk.h"

namespace moessm {
namespace {

using bf16 = __nv_bfloat16;
using gputest::rel_err;

// Values drawn in double, exactly representable in float (and in bf16 when `round`).
std::vector<double> rnd(size_t n, Rng& rng, double lo = -1, double hi = 1, bool round = false) {
  std::vector<double> v(n);
  for (auto& x : v) {
    x = rng.uniform(lo, hi);
    x = round ? gputest::round_bf16(float(x)) : double(float(x));
  }
  return v;
}
template <typename T> std::vector<T> as(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }
template <typename T> std::vector<double> dbl(const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); }
std::vector<double> rounded_d(const std::vector<double>& v) {
  std::vector<double> o(v);
  for (auto& x : o) x = gputest::round_bf16(float(x));
  return o;
}
DeviceBuffer up_bf16(const std::vector<double>& v) {
  return DeviceBuffer::from_host(gputest::to_bf16_bits(gputest::to_float(v)));
}
DeviceBuffer up_f32(const std::vector<double>& v) { return DeviceBuffer::from_host(gputest::to_float(v)); }
std::vector<double> down_bf16(const DeviceBuffer& b) {
  return gputest::to_double(gputest::from_bf16_bits(b.to_host<uint16_t>()));
}
std::vector<double> down_f32(const DeviceBuffer& b) { return gputest::to_double(b.to_host<float>()); }
// Device element type T's buffer from / to doubles.
template <typename T> DeviceBuffer up(const std::vector<double>& v) {
  if constexpr (std::is_same_v<T, bf16>) return up_bf16(v);
  else return up_f32(v);
}
template <typename T> std::vector<double> down(const DeviceBuffer& b) {
  if constexpr (std::is_same_v<T, bf16>) return down_bf16(b);
  else return down_f32(b);
}
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

}  // namespace
}  // namespace moessm
