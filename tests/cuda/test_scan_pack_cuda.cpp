// GPU test of the CUDA selective scan with packed documents (ScanParamsT::seq_idx, the rule in
// ops/op_common.h and ops/selective_scan.h) against the CPU reference (fp64 as the truth, fp32 as
// the naive run of the error budget), forward and backward, fp32 and bf16 token streams.
// The cases put document starts at chunk starts (64, 128), one token after a chunk start, mid
// chunk, a one-token document, and the last token; h0 and dh_last are given, so the first
// document must see h0 and only it must send gradient to dh0; h_last must be the last document's
// state. The time-segment path (segments with and without a document start) is forced too.
// Skips with a message when no GPU is present.
#include <gtest/gtest.h>

#include <type_traits>

#include "core/check.h"
#include "core/rng.h"
#include "gpu_testing.h"
#include "ops/selective_scan.h"

namespace moessm {
namespace {

using gputest::rel_err;

struct PackCase {
  idx_t B, T, Di, N;
};

struct Data {
  std::vector<double> u, delta, Bm, Cm, z, A, D, bias, h0, dout, dh_last;
  std::vector<int32_t> seq;
};
struct Result {
  std::vector<double> out, h_last, du, ddelta, dB, dC, dz, dA, dD, dbias, dh0;
};

// Document starts: every chunk start, one token after the second, t % 29 == 11, the last token;
// row b also at t = b + 1. Values jump by 5 (only changes count).
std::vector<int32_t> pack_seq_idx(const PackCase& c) {
  std::vector<int32_t> seq(static_cast<size_t>(c.B * c.T), 0);
  for (idx_t b = 0; b < c.B; ++b)
    for (idx_t t = 1; t < c.T; ++t) {
      const bool start = t % kScanChunk == 0 || t == kScanChunk + 1 || t % 29 == 11 || t == c.T - 1 || t == b + 1;
      seq[b * c.T + t] = seq[b * c.T + t - 1] + (start ? 5 : 0);
    }
  return seq;
}

Data make(const PackCase& c, uint64_t seed, bool round) {
  Rng rng(seed, 3);
  const size_t tok = size_t(c.B * c.T), st = size_t(c.B * c.Di * c.N);
  Data d;
  d.u = gputest::rnd(tok * c.Di, rng, -1, 1, round);
  d.delta = gputest::rnd(tok * c.Di, rng, -3, 1, round);
  d.Bm = gputest::rnd(tok * c.N, rng, -1, 1, round);
  d.Cm = gputest::rnd(tok * c.N, rng, -1, 1, round);
  d.z = gputest::rnd(tok * c.Di, rng, -2, 2, round);
  d.dout = gputest::rnd(tok * c.Di, rng, -1, 1, round);
  d.A = gputest::rnd(size_t(c.Di * c.N), rng, -3, -0.3);
  d.D = gputest::rnd(size_t(c.Di), rng, 0.5, 1.5);
  d.bias = gputest::rnd(size_t(c.Di), rng, -4, -1);
  d.h0 = gputest::rnd(st, rng, -0.5, 0.5);
  d.dh_last = gputest::rnd(st, rng, -0.5, 0.5);
  d.seq = pack_seq_idx(c);
  return d;
}

template <typename T>
Result run_cpu(const PackCase& c, const Data& d, bool round_outputs) {
  auto cv = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  const size_t tok = size_t(c.B * c.T), st = size_t(c.B * c.Di * c.N);
  std::vector<T> u = cv(d.u), delta = cv(d.delta), Bm = cv(d.Bm), Cm = cv(d.Cm), z = cv(d.z), A = cv(d.A),
                 D = cv(d.D), bias = cv(d.bias), h0 = cv(d.h0), dout = cv(d.dout), dh_last = cv(d.dh_last);
  std::vector<T> out(tok * c.Di), h_last(st), cs(size_t(c.B * scan_num_chunks(c.T) * c.Di * c.N));
  ScanParams<T> p;
  p.B = c.B; p.T_ = c.T; p.Di = c.Di; p.N = c.N;
  p.u = u.data(); p.u_ld = c.Di; p.delta = delta.data(); p.delta_ld = c.Di;
  p.Bm = Bm.data(); p.B_ld = c.N; p.Cm = Cm.data(); p.C_ld = c.N; p.z = z.data(); p.z_ld = c.Di;
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.h0 = h0.data();
  p.seq_idx = d.seq.data();
  p.out = out.data(); p.out_ld = c.Di; p.h_last = h_last.data(); p.chunk_states = cs.data();
  cpu::selective_scan_forward(p);
  std::vector<T> du(tok * c.Di), dd(tok * c.Di), dB(tok * c.N), dC(tok * c.N), dz(tok * c.Di),
      dA(size_t(c.Di * c.N), T(0)), dD(size_t(c.Di), T(0)), db(size_t(c.Di), T(0)), dh0(st);
  ScanGrads<T> g;
  g.dout = dout.data(); g.dout_ld = c.Di; g.dh_last = dh_last.data();
  g.du = du.data(); g.du_ld = c.Di; g.ddelta = dd.data(); g.ddelta_ld = c.Di;
  g.dB = dB.data(); g.dB_ld = c.N; g.dC = dC.data(); g.dC_ld = c.N; g.dz = dz.data(); g.dz_ld = c.Di;
  g.dA = dA.data(); g.dD = dD.data(); g.ddelta_bias = db.data(); g.dh0 = dh0.data();
  cpu::selective_scan_backward(g, p);
  auto back = [&](const std::vector<T>& v, bool tok_stream) {
    std::vector<double> o(v.begin(), v.end());
    if (tok_stream && round_outputs) o = gputest::rounded_d(o);
    return o;
  };
  return {back(out, true), back(h_last, false), back(du, true), back(dd, true), back(dB, true), back(dC, true),
          back(dz, true), back(dA, false), back(dD, false), back(db, false), back(dh0, false)};
}

// Dev = float or __nv_bfloat16 token streams.
template <typename Dev>
Result run_gpu(const PackCase& c, const Data& d) {
  const size_t tok = size_t(c.B * c.T), st = size_t(c.B * c.Di * c.N);
  auto poison = [](size_t n) {
    if constexpr (std::is_same_v<Dev, float>) return gputest::poisoned_f32(n);
    else return gputest::poisoned_bf16(n);
  };
  DeviceBuffer u = gputest::up<Dev>(d.u), delta = gputest::up<Dev>(d.delta), Bm = gputest::up<Dev>(d.Bm),
               Cm = gputest::up<Dev>(d.Cm), z = gputest::up<Dev>(d.z), dout = gputest::up<Dev>(d.dout);
  DeviceBuffer A = gputest::up_f32(d.A), D = gputest::up_f32(d.D), bias = gputest::up_f32(d.bias),
               h0 = gputest::up_f32(d.h0), dh_last = gputest::up_f32(d.dh_last), seq = DeviceBuffer::from_host(d.seq);
  DeviceBuffer out = poison(tok * c.Di), h_last = gputest::poisoned_f32(st),
               cs = gputest::poisoned_f32(size_t(c.B * scan_num_chunks(c.T) * c.Di * c.N));
  cuda::ScanParamsT<Dev> p;
  p.B = c.B; p.T_ = c.T; p.Di = c.Di; p.N = c.N;
  p.u = u.as<Dev>(); p.u_ld = c.Di; p.delta = delta.as<Dev>(); p.delta_ld = c.Di;
  p.Bm = Bm.as<Dev>(); p.B_ld = c.N; p.Cm = Cm.as<Dev>(); p.C_ld = c.N; p.z = z.as<Dev>(); p.z_ld = c.Di;
  p.A = A.as<float>(); p.D = D.as<float>(); p.delta_bias = bias.as<float>(); p.h0 = h0.as<float>();
  p.seq_idx = seq.as<int32_t>();
  p.out = out.as<Dev>(); p.out_ld = c.Di; p.h_last = h_last.as<float>(); p.chunk_states = cs.as<float>();
  cuda::selective_scan_forward(p, nullptr);
  DeviceBuffer du = poison(tok * c.Di), dd = poison(tok * c.Di), dB = poison(tok * c.N), dC = poison(tok * c.N),
               dz = poison(tok * c.Di), dh0 = gputest::poisoned_f32(st);
  DeviceBuffer dA = DeviceBuffer::from_host(std::vector<float>(size_t(c.Di * c.N), 0.f)),
               dD = DeviceBuffer::from_host(std::vector<float>(size_t(c.Di), 0.f)),
               db = DeviceBuffer::from_host(std::vector<float>(size_t(c.Di), 0.f));
  cuda::ScanGradsT<Dev> g;
  g.dout = dout.as<Dev>(); g.dout_ld = c.Di; g.dh_last = dh_last.as<float>();
  g.du = du.as<Dev>(); g.du_ld = c.Di; g.ddelta = dd.as<Dev>(); g.ddelta_ld = c.Di;
  g.dB = dB.as<Dev>(); g.dB_ld = c.N; g.dC = dC.as<Dev>(); g.dC_ld = c.N; g.dz = dz.as<Dev>(); g.dz_ld = c.Di;
  g.dA = dA.as<float>(); g.dD = dD.as<float>(); g.ddelta_bias = db.as<float>(); g.dh0 = dh0.as<float>();
  cuda::selective_scan_backward(g, p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  return {gputest::down<Dev>(out), gputest::down_f32(h_last), gputest::down<Dev>(du), gputest::down<Dev>(dd),
          gputest::down<Dev>(dB), gputest::down<Dev>(dC), gputest::down<Dev>(dz), gputest::down_f32(dA),
          gputest::down_f32(dD), gputest::down_f32(db), gputest::down_f32(dh0)};
}

void check(const Result& fast, const Result& naive, const Result& ref, double floor, const std::string& tag) {
  const std::pair<const char*, std::vector<double> Result::*> items[] = {
      {"out", &Result::out},   {"h_last", &Result::h_last}, {"du", &Result::du},   {"ddelta", &Result::ddelta},
      {"dB", &Result::dB},     {"dC", &Result::dC},         {"dz", &Result::dz},   {"dA", &Result::dA},
      {"dD", &Result::dD},     {"ddelta_bias", &Result::dbias}, {"dh0", &Result::dh0}};
  for (const auto& [name, f] : items)
    gputest::expect_within_budget(tag + " " + name, rel_err(fast.*f, ref.*f), rel_err(naive.*f, ref.*f), floor);
}

std::string name_of(const PackCase& c) { return str_cat("B", c.B, "_T", c.T, "_Di", c.Di, "_N", c.N); }

const PackCase kPackCases[] = {
    {2, 2 * kScanChunk + 13, 37, 16},  // three chunks, starts at both chunk starts
    {3, 70, 8, 1},                     // N = 1
    {1, 300, 19, 48},                  // five chunks, N not a power of two
    {2, 2, 5, 16},                     // T = 2: the second token starts a document
};

class ScanPackCuda : public ::testing::TestWithParam<PackCase> {};

TEST_P(ScanPackCuda, Fp32MatchesCpuReference) {
  REQUIRE_GPU();
  const PackCase c = GetParam();
  const Data d = make(c, 41, false);
  check(run_gpu<float>(c, d), run_cpu<float>(c, d, false), run_cpu<double>(c, d, false), 2e-6, "fp32 " + name_of(c));
}

TEST_P(ScanPackCuda, Bf16MatchesCpuReferenceWithinBudget) {
  REQUIRE_GPU();
  const PackCase c = GetParam();
  const Data d = make(c, 42, true);
  check(run_gpu<__nv_bfloat16>(c, d), run_cpu<float>(c, d, true), run_cpu<double>(c, d, false), 1e-5,
        "bf16 " + name_of(c));
}

// Forced time segments: a segment holding a document start must pass no state (forward) and no
// dh (backward) across it (every segment here holds one; ScanCudaLab.TimeSegmentsMatch in
// test_scan_cuda.cpp covers segments without).
TEST(ScanPackCudaSegments, ForcedSegmentCountsMatch) {
  REQUIRE_GPU();
  const PackCase c{1, 300, 19, 48};
  const Data d = make(c, 43, false);
  const Result naive = run_cpu<float>(c, d, false), ref = run_cpu<double>(c, d, false);
  for (int seg : {2, 3, 5}) {
    cuda::selective_scan_set_segments(seg);
    const Result got = run_gpu<float>(c, d);
    cuda::selective_scan_set_segments(0);
    check(got, naive, ref, 2e-6, "segments " + std::to_string(seg) + " " + name_of(c));
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, ScanPackCuda, ::testing::ValuesIn(kPackCases),
                         [](const ::testing::TestParamInfo<PackCase>& i) { return name_of(i.param); });

}  // namespace
}  // namespace moessm
