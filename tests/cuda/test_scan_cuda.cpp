// GPU tests of the CUDA selective scan against the CPU reference (fp64 as the truth), forward
// and backward, fp32 and bf16 token streams, at awkward sizes (T not a multiple of kScanChunk,
// odd Di, N = 1, N not a power of two, N = 256, B = 1, strided token rows), plus determinism
// (two backward runs bitwise equal) and the capability error beyond N = 256.
// Skips with a message when no GPU is present.
#include <gtest/gtest.h>

#include <cstring>

#include "core/check.h"
#include "core/rng.h"
#include "gpu_testing.h"
#include "ops/selective_scan.h"

namespace moessm {
namespace {

using gputest::rel_err;
using bf16raw = uint16_t;

struct Case {
  idx_t B, T, Di, N;
  bool z, D, bias, h0, softplus;
  idx_t pad;  // extra elements per token row (strided layouts)
};

// Host data for one case, drawn in double; `round` rounds the token streams to bf16 values.
struct HostScan {
  idx_t B, T, Di, N, ld, ldn;
  std::vector<double> u, delta, Bm, Cm, z, A, D, bias, h0, dout, dh_last;
};

HostScan make_data(const Case& c, uint64_t seed, bool round) {
  Rng rng(seed, 7);
  HostScan h{c.B, c.T, c.Di, c.N, c.Di + c.pad, c.N + c.pad, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  auto fill = [&](std::vector<double>& v, size_t n, double lo, double hi, bool rnd) {
    v.resize(n);
    for (auto& x : v) {
      x = rng.uniform(lo, hi);
      if (rnd) x = gputest::round_bf16(float(x));
    }
  };
  const size_t tok = static_cast<size_t>(c.B * c.T);
  fill(h.u, tok * h.ld, -1, 1, round);
  fill(h.delta, tok * h.ld, -3, 1, round);
  fill(h.Bm, tok * h.ldn, -1, 1, round);
  fill(h.Cm, tok * h.ldn, -1, 1, round);
  fill(h.z, tok * h.ld, -2, 2, round);
  fill(h.dout, tok * h.ld, -1, 1, round);
  h.A.resize(static_cast<size_t>(c.Di * c.N));
  for (idx_t i = 0; i < c.Di * c.N; ++i) h.A[i] = float(-std::exp(rng.uniform(-1.0, 1.5)));
  fill(h.D, static_cast<size_t>(c.Di), 0.5, 1.5, false);
  fill(h.bias, static_cast<size_t>(c.Di), -4, -1, false);
  fill(h.h0, static_cast<size_t>(c.B * c.Di * c.N), -0.5, 0.5, false);
  fill(h.dh_last, static_cast<size_t>(c.B * c.Di * c.N), -0.5, 0.5, false);
  for (auto* v : {&h.A, &h.D, &h.bias, &h.h0, &h.dh_last})
    for (auto& x : *v) x = double(float(x));  // fp32 parameters: exactly representable
  return h;
}

// Outputs of one run, all as double for comparison.
struct ScanOut {
  std::vector<double> out, h_last, du, ddelta, dB, dC, dz, dA, dD, dbias, dh0;
};

template <typename T>
ScanOut run_cpu(const Case& c, const HostScan& h, bool round_outputs) {
  auto cv = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  const size_t tok = static_cast<size_t>(c.B * c.T), st = static_cast<size_t>(c.B * c.Di * c.N);
  std::vector<T> u = cv(h.u), delta = cv(h.delta), Bm = cv(h.Bm), Cm = cv(h.Cm), z = cv(h.z),
                 A = cv(h.A), D = cv(h.D), bias = cv(h.bias), h0 = cv(h.h0), dout = cv(h.dout),
                 dh_last = cv(h.dh_last);
  std::vector<T> out(tok * h.ld), h_last(st), cs(static_cast<size_t>(c.B * scan_num_chunks(c.T) * c.Di * c.N));
  ScanParams<T> p;
  p.B = c.B; p.T_ = c.T; p.Di = c.Di; p.N = c.N;
  p.u = u.data(); p.u_ld = h.ld; p.delta = delta.data(); p.delta_ld = h.ld;
  p.Bm = Bm.data(); p.B_ld = h.ldn; p.Cm = Cm.data(); p.C_ld = h.ldn;
  if (c.z) { p.z = z.data(); p.z_ld = h.ld; }
  p.A = A.data();
  if (c.D) p.D = D.data();
  if (c.bias) p.delta_bias = bias.data();
  if (c.h0) p.h0 = h0.data();
  p.delta_softplus = c.softplus;
  p.out = out.data(); p.out_ld = h.ld; p.h_last = h_last.data(); p.chunk_states = cs.data();
  cpu::selective_scan_forward(p);
  std::vector<T> du(tok * h.ld), dd(tok * h.ld), dB(tok * h.ldn), dC(tok * h.ldn), dz(tok * h.ld),
      dA(static_cast<size_t>(c.Di * c.N), T(0)), dD(static_cast<size_t>(c.Di), T(0)), db(static_cast<size_t>(c.Di), T(0)), dh0(st);
  ScanGrads<T> g;
  g.dout = dout.data(); g.dout_ld = h.ld; g.dh_last = dh_last.data();
  g.du = du.data(); g.du_ld = h.ld; g.ddelta = dd.data(); g.ddelta_ld = h.ld;
  g.dB = dB.data(); g.dB_ld = h.ldn; g.dC = dC.data(); g.dC_ld = h.ldn;
  g.dz = dz.data(); g.dz_ld = h.ld; g.dA = dA.data(); g.dD = dD.data(); g.ddelta_bias = db.data();
  g.dh0 = dh0.data();
  cpu::selective_scan_backward(g, p);
  auto back = [&](const std::vector<T>& v, bool rnd) {
    std::vector<double> o(v.begin(), v.end());
    if (rnd && round_outputs)
      for (auto& x : o) x = gputest::round_bf16(float(x));
    return o;
  };
  return {back(out, true), back(h_last, false), back(du, true), back(dd, true), back(dB, true),
          back(dC, true), back(dz, true), back(dA, false), back(dD, false), back(db, false),
          back(dh0, false)};
}

// Keeps only the logical elements (token rows of width w inside stride ld) of v.
std::vector<double> compact(const std::vector<double>& v, idx_t rows, idx_t w, idx_t ld) {
  std::vector<double> o;
  o.reserve(static_cast<size_t>(rows * w));
  for (idx_t r = 0; r < rows; ++r)
    for (idx_t i = 0; i < w; ++i) o.push_back(v[static_cast<size_t>(r * ld + i)]);
  return o;
}

template <typename Tin>
struct GpuRun {
  ScanOut o;
  std::vector<uint8_t> raw;  // all backward outputs' bytes, for the determinism check
};

// Runs forward + backward on the GPU with token streams in Tin (float or bf16 bits).
template <typename Tin>
GpuRun<Tin> run_gpu(const Case& c, const HostScan& h) {
  using Dev = std::conditional_t<std::is_same_v<Tin, float>, float, __nv_bfloat16>;
  auto up_tok = [](const std::vector<double>& v) {
    if constexpr (std::is_same_v<Tin, float>) return DeviceBuffer::from_host(gputest::to_float(v));
    else return DeviceBuffer::from_host(gputest::to_bf16_bits(gputest::to_float(v)));
  };
  auto up_f = [](const std::vector<double>& v) { return DeviceBuffer::from_host(gputest::to_float(v)); };
  auto poison_tok = [](size_t n) {
    if constexpr (std::is_same_v<Tin, float>) return gputest::poisoned_f32(n);
    else return gputest::poisoned_bf16(n);
  };
  auto down_tok = [](const DeviceBuffer& b) {
    if constexpr (std::is_same_v<Tin, float>) return gputest::to_double(b.to_host<float>());
    else return gputest::to_double(gputest::from_bf16_bits(b.to_host<uint16_t>()));
  };
  const size_t tok = static_cast<size_t>(c.B * c.T), st = static_cast<size_t>(c.B * c.Di * c.N);
  DeviceBuffer u = up_tok(h.u), delta = up_tok(h.delta), Bm = up_tok(h.Bm), Cm = up_tok(h.Cm),
               z = up_tok(h.z), dout = up_tok(h.dout);
  DeviceBuffer A = up_f(h.A), D = up_f(h.D), bias = up_f(h.bias), h0 = up_f(h.h0), dh_last = up_f(h.dh_last);
  DeviceBuffer out = poison_tok(tok * h.ld), h_last = gputest::poisoned_f32(st),
               cs = gputest::poisoned_f32(static_cast<size_t>(c.B * scan_num_chunks(c.T) * c.Di * c.N));
  cuda::ScanParamsT<Dev> p;
  p.B = c.B; p.T_ = c.T; p.Di = c.Di; p.N = c.N;
  p.u = u.as<Dev>(); p.u_ld = h.ld; p.delta = delta.as<Dev>(); p.delta_ld = h.ld;
  p.Bm = Bm.as<Dev>(); p.B_ld = h.ldn; p.Cm = Cm.as<Dev>(); p.C_ld = h.ldn;
  if (c.z) { p.z = z.as<Dev>(); p.z_ld = h.ld; }
  p.A = A.as<float>();
  if (c.D) p.D = D.as<float>();
  if (c.bias) p.delta_bias = bias.as<float>();
  if (c.h0) p.h0 = h0.as<float>();
  p.delta_softplus = c.softplus;
  p.out = out.as<Dev>(); p.out_ld = h.ld; p.h_last = h_last.as<float>(); p.chunk_states = cs.as<float>();
  cuda::selective_scan_forward(p, nullptr);
  DeviceBuffer du = poison_tok(tok * h.ld), dd = poison_tok(tok * h.ld), dB = poison_tok(tok * h.ldn),
               dC = poison_tok(tok * h.ldn), dz = poison_tok(tok * h.ld), dh0 = gputest::poisoned_f32(st);
  // Parameter grads accumulate: start them from a known non-zero value to test the +=.
  std::vector<float> base_dA(static_cast<size_t>(c.Di * c.N), 0.25f), base_dD(static_cast<size_t>(c.Di), 0.25f);
  DeviceBuffer dA = DeviceBuffer::from_host(base_dA), dD = DeviceBuffer::from_host(base_dD),
               db = DeviceBuffer::from_host(base_dD);
  cuda::ScanGradsT<Dev> g;
  g.dout = dout.as<Dev>(); g.dout_ld = h.ld; g.dh_last = dh_last.as<float>();
  g.du = du.as<Dev>(); g.du_ld = h.ld; g.ddelta = dd.as<Dev>(); g.ddelta_ld = h.ld;
  g.dB = dB.as<Dev>(); g.dB_ld = h.ldn; g.dC = dC.as<Dev>(); g.dC_ld = h.ldn;
  g.dz = dz.as<Dev>(); g.dz_ld = h.ld; g.dA = dA.as<float>(); g.dD = dD.as<float>();
  g.ddelta_bias = db.as<float>(); g.dh0 = dh0.as<float>();
  cuda::selective_scan_backward(g, p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  GpuRun<Tin> r;
  auto minus_base = [](std::vector<double> v) {
    for (auto& x : v) x -= 0.25;
    return v;
  };
  r.o = {down_tok(out), gputest::to_double(h_last.to_host<float>()), down_tok(du), down_tok(dd),
         down_tok(dB), down_tok(dC), down_tok(dz), minus_base(gputest::to_double(dA.to_host<float>())),
         minus_base(gputest::to_double(dD.to_host<float>())), minus_base(gputest::to_double(db.to_host<float>())),
         gputest::to_double(dh0.to_host<float>())};
  for (const DeviceBuffer* b : {&du, &dd, &dB, &dC, &dz, &dA, &dD, &db, &dh0}) {
    std::vector<uint8_t> bytes = b->to_host<uint8_t>();
    r.raw.insert(r.raw.end(), bytes.begin(), bytes.end());
  }
  return r;
}

// Compares every output of `fast` and `naive` against `ref` under the error budget.
void check_all(const Case& c, const HostScan& h, const ScanOut& fast, const ScanOut& naive,
               const ScanOut& ref, double floor, const std::string& tag) {
  const idx_t rows = c.B * c.T;
  struct Item { const char* name; const std::vector<double> ScanOut::*f; idx_t w, ld; bool use; };
  const Item items[] = {
      {"out", &ScanOut::out, c.Di, h.ld, true},       {"h_last", &ScanOut::h_last, 0, 0, true},
      {"du", &ScanOut::du, c.Di, h.ld, true},         {"ddelta", &ScanOut::ddelta, c.Di, h.ld, true},
      {"dB", &ScanOut::dB, c.N, h.ldn, true},         {"dC", &ScanOut::dC, c.N, h.ldn, true},
      {"dz", &ScanOut::dz, c.Di, h.ld, c.z},          {"dA", &ScanOut::dA, 0, 0, true},
      {"dD", &ScanOut::dD, 0, 0, c.D},                {"ddelta_bias", &ScanOut::dbias, 0, 0, c.bias},
      {"dh0", &ScanOut::dh0, 0, 0, true},
  };
  for (const Item& it : items) {
    if (!it.use) continue;
    std::vector<double> a = fast.*(it.f), nv = naive.*(it.f), r = ref.*(it.f);
    if (it.w > 0) {
      a = compact(a, rows, it.w, it.ld);
      nv = compact(nv, rows, it.w, it.ld);
      r = compact(r, rows, it.w, it.ld);
    }
    const double ef = rel_err(a, r), en = rel_err(nv, r);
    gputest::expect_within_budget(tag + " " + it.name, ef, en, floor);
  }
}

std::string name_of(const Case& c) {
  return str_cat("B", c.B, "_T", c.T, "_Di", c.Di, "_N", c.N, c.z ? "_z" : "", c.softplus ? "" : "_nosoftplus",
                 c.pad ? "_strided" : "");
}

const Case kCases[] = {
    {2, 200, 37, 16, true, true, true, true, true, 0},     // T % 64 != 0, odd Di
    {1, 64, 8, 1, true, true, true, false, true, 0},       // N = 1, exactly one chunk
    {1, 130, 5, 256, true, true, true, true, true, 0},     // N = 256 edge
    {3, 70, 33, 16, false, false, false, false, true, 3},  // no z / D / bias, strided rows
    {1, 100, 64, 48, true, true, true, true, true, 0},     // N not a power of two
    {2, 97, 19, 130, true, true, true, true, false, 0},    // N in (128, 256], no softplus
    {1, 1, 3, 16, true, true, true, true, true, 0},        // T = 1
};

class ScanCuda : public ::testing::TestWithParam<Case> {};

TEST_P(ScanCuda, Fp32MatchesCpuReference) {
  REQUIRE_GPU();
  const Case c = GetParam();
  const HostScan h = make_data(c, 11, false);
  const ScanOut ref = run_cpu<double>(c, h, false);
  const ScanOut naive = run_cpu<float>(c, h, false);
  const ScanOut fast = run_gpu<float>(c, h).o;
  check_all(c, h, fast, naive, ref, 2e-6, "fp32 " + name_of(c));
}

TEST_P(ScanCuda, Bf16MatchesCpuReferenceWithinBudget) {
  REQUIRE_GPU();
  const Case c = GetParam();
  const HostScan h = make_data(c, 12, true);
  const ScanOut ref = run_cpu<double>(c, h, false);
  const ScanOut naive = run_cpu<float>(c, h, true);
  const ScanOut fast = run_gpu<uint16_t>(c, h).o;
  check_all(c, h, fast, naive, ref, 1e-5, "bf16 " + name_of(c));
}

TEST_P(ScanCuda, BackwardIsBitwiseDeterministic) {
  REQUIRE_GPU();
  const Case c = GetParam();
  const HostScan h = make_data(c, 13, true);
  const auto a = run_gpu<uint16_t>(c, h), b = run_gpu<uint16_t>(c, h);
  ASSERT_EQ(a.raw.size(), b.raw.size());
  EXPECT_EQ(0, std::memcmp(a.raw.data(), b.raw.data(), a.raw.size())) << name_of(c);
}

INSTANTIATE_TEST_SUITE_P(Sizes, ScanCuda, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return name_of(i.param); });

// Both kernel variants in both directions (the automatic choice takes 4 states per lane for the
// forward and 2 for the backward at N <= 64; a forced count applies to both) compute the same
// function.
TEST(ScanCudaLab, TwoAndFourStatesPerLaneMatch) {
  REQUIRE_GPU();
  const Case c{2, 150, 40, 16, true, true, true, true, true, 0};
  const HostScan h = make_data(c, 14, false);
  const ScanOut ref = run_cpu<double>(c, h, false);
  const ScanOut naive = run_cpu<float>(c, h, false);
  for (int npt : {2, 4}) {
    cuda::selective_scan_set_states_per_thread(npt);
    const ScanOut fast = run_gpu<float>(c, h).o;
    cuda::selective_scan_set_states_per_thread(0);
    check_all(c, h, fast, naive, ref, 2e-6, "npt" + std::to_string(npt) + " " + name_of(c));
  }
}

// Large batch x time through the slab path (partial buffer bounded): B·G·N·T beyond one slab.
TEST(ScanCudaLab, ManySlabsMatch) {
  REQUIRE_GPU();
  const Case c{2, 700, 200, 64, true, true, true, true, true, 0};
  const HostScan h = make_data(c, 15, false);
  const ScanOut ref = run_cpu<double>(c, h, false);
  const ScanOut naive = run_cpu<float>(c, h, false);
  cuda::selective_scan_set_partial_budget(1 << 20);  // one chunk per slab
  const ScanOut fast = run_gpu<float>(c, h).o;
  cuda::selective_scan_set_partial_budget(0);
  check_all(c, h, fast, naive, ref, 2e-6, "slabs " + name_of(c));
}

// Time segments run in parallel (local pass, combine, full pass from the true boundary): every
// forced count, including one segment per chunk and an uneven last segment, computes the same
// function as the sequential scan (segments = 1), with h0 and dh_last flowing across segments.
TEST(ScanCudaLab, TimeSegmentsMatch) {
  REQUIRE_GPU();
  const Case c{2, 700, 40, 16, true, true, true, true, true, 0};  // 11 chunks, the last partial
  const HostScan h = make_data(c, 16, false);
  const ScanOut ref = run_cpu<double>(c, h, false);
  const ScanOut naive = run_cpu<float>(c, h, false);
  for (int seg : {1, 2, 3, 11}) {
    cuda::selective_scan_set_segments(seg);
    const ScanOut fast = run_gpu<float>(c, h).o;
    check_all(c, h, fast, naive, ref, 2e-6, str_cat("segments ", seg, " ", name_of(c)));
  }
  cuda::selective_scan_set_segments(0);
}

// bf16 with many segments and N = 64 (the 4-lane layout): within budget and bitwise repeatable.
TEST(ScanCudaLab, TimeSegmentsBf16DeterministicWithinBudget) {
  REQUIRE_GPU();
  const Case c{1, 1000, 24, 64, true, true, true, true, true, 0};
  const HostScan h = make_data(c, 17, true);
  const ScanOut ref = run_cpu<double>(c, h, false);
  const ScanOut naive = run_cpu<float>(c, h, true);
  cuda::selective_scan_set_segments(7);
  const auto a = run_gpu<uint16_t>(c, h), b = run_gpu<uint16_t>(c, h);
  cuda::selective_scan_set_segments(0);
  check_all(c, h, a.o, naive, ref, 1e-5, "segments 7 bf16 " + name_of(c));
  ASSERT_EQ(a.raw.size(), b.raw.size());
  EXPECT_EQ(0, std::memcmp(a.raw.data(), b.raw.data(), a.raw.size()));
}

TEST(ScanCudaLab, RejectsStateBeyond256) {
  REQUIRE_GPU();
  cuda::ScanParamsT<float> p;
  p.B = 1; p.T_ = 4; p.Di = 2; p.N = 257;
  try {
    cuda::selective_scan_forward(p, nullptr);
    ADD_FAILURE() << "expected an error for N=257";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("257"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moessm
