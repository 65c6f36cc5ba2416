// The MoE ops on CUDA against their CPU references (GPU machine; label "gpu"):
//   - router_topk forward (probabilities, the chosen experts exactly, ties → lower index,
//     normalize_topk on/off) and backward; the Switch aux loss and the z-loss, forward (added to
//     a device scalar) and backward;
//   - moe_permute_plan / _plan_stacked built on the device equal the CPU plans exactly; permute /
//     unpermute forward and backward in fp32 (tight) and bf16 (within bf16 rounding), the dw
//     reduction bitwise repeatable.
// Sizes are awkward on purpose (M = 777 tokens: several 256-slot chunks of the plan and of the
// router statistics; E up to 4096, more experts than a block has threads; K up to 4; X = 70).
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/rng.h"
#include "gpu_testing.h"
#include "ops/grouped_matmul.h"
#include "ops/moe_permute.h"
#include "ops/router_topk.h"

using namespace moessm;
using namespace moessm::gputest;
using bf16 = __nv_bfloat16;

namespace {

std::vector<float> uniform(size_t n, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(r.uniform(lo, hi));
  return v;
}

double max_abs_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

struct Routing {
  std::vector<float> probs, w;
  std::vector<int32_t> idx;
};

Routing cpu_route(const std::vector<float>& logits, idx_t M, idx_t E, idx_t K, bool norm) {
  Routing r;
  r.probs.resize(size_t(M * E));
  r.w.resize(size_t(M * K));
  r.idx.resize(size_t(M * K));
  cpu::router_topk_forward(r.probs.data(), r.idx.data(), r.w.data(), logits.data(), M, E, K, norm);
  return r;
}

}  // namespace

class RouterCuda : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(RouterCuda, TopkLossesForwardBackwardMatchTheCpu) {
  REQUIRE_GPU();
  const auto [Ei, Ki, norm] = GetParam();
  const idx_t M = 777, E = Ei, K = Ki;
  std::vector<float> logits = uniform(size_t(M * E), 3 + E + K);
  for (idx_t e = 0; e < E; ++e) logits[size_t(5 * E + e)] = 0.25f;  // row 5: every expert ties
  const Routing ref = cpu_route(logits, M, E, K, norm);
  DeviceBuffer L = DeviceBuffer::from_host(logits), P(size_t(M * E) * 4), W(size_t(M * K) * 4), I(size_t(M * K) * 4);
  cuda::router_topk_forward(P.as<float>(), I.as<int32_t>(), W.as<float>(), L.as<float>(), M, E, K, norm, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(I.to_host<int32_t>(), ref.idx) << "the chosen experts (ties: lower index) differ from the CPU's";
  EXPECT_LT(max_abs_rel(P.to_host<float>(), ref.probs), 1e-6);
  EXPECT_LT(max_abs_rel(W.to_host<float>(), ref.w), 1e-6);

  // backward with a gradient at w and one straight at p
  const std::vector<float> dw = uniform(size_t(M * K), 11), dp = uniform(size_t(M * E), 12);
  std::vector<float> want(size_t(M * E));
  cpu::router_topk_backward(want.data(), dw.data(), dp.data(), ref.probs.data(), ref.idx.data(), ref.w.data(), M, E, K,
                            norm);
  DeviceBuffer DW = DeviceBuffer::from_host(dw), DP = DeviceBuffer::from_host(dp), DL(size_t(M * E) * 4);
  cuda::router_topk_backward(DL.as<float>(), DW.as<float>(), DP.as<float>(), P.as<float>(), I.as<int32_t>(),
                             W.as<float>(), M, E, K, norm, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(max_abs_rel(DL.to_host<float>(), want), 1e-5);

  // aux loss and z-loss: added to a device scalar that already holds 0.5
  const double coef = 0.01, zc = 0.001;
  std::vector<double> load_ref(static_cast<size_t>(E), 0.0);
  const double aux_ref = cpu::router_aux_loss_forward(load_ref.data(), ref.probs.data(), ref.idx.data(), M, E, K, coef);
  const double z_ref = cpu::router_z_loss_forward(logits.data(), M, E, zc);
  DeviceBuffer S = DeviceBuffer::from_host(std::vector<double>{0.5, 0.5}), LD(size_t(E) * 8);
  cuda::router_aux_loss_forward(S.as<double>(), LD.as<double>(), P.as<float>(), I.as<int32_t>(), M, E, K, coef, nullptr);
  cuda::router_z_loss_forward(S.as<double>() + 1, L.as<float>(), M, E, zc, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto sums = S.to_host<double>();
  EXPECT_NEAR(sums[0], 0.5 + aux_ref, 1e-9 * std::fabs(aux_ref) + 1e-15);
  EXPECT_NEAR(sums[1], 0.5 + z_ref, 1e-9 * std::fabs(z_ref) + 1e-15);
  EXPECT_EQ(LD.to_host<double>(), load_ref) << "f_i are exact slot shares";

  std::vector<float> dprobs = uniform(size_t(M * E), 13), dlog = uniform(size_t(M * E), 14);
  DeviceBuffer DPR = DeviceBuffer::from_host(dprobs), DLG = DeviceBuffer::from_host(dlog);
  cpu::router_aux_loss_backward(dprobs.data(), 0.7, ref.idx.data(), M, E, K, coef);
  cpu::router_z_loss_backward(dlog.data(), 0.7, logits.data(), M, E, zc);
  cuda::router_aux_loss_backward(DPR.as<float>(), 0.7, I.as<int32_t>(), M, E, K, coef, nullptr);
  cuda::router_z_loss_backward(DLG.as<float>(), 0.7, L.as<float>(), M, E, zc, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(max_abs_rel(DPR.to_host<float>(), dprobs), 1e-6);
  EXPECT_LT(max_abs_rel(DLG.to_host<float>(), dlog), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Sizes, RouterCuda,
                         ::testing::Values(std::make_tuple(1, 1, true), std::make_tuple(8, 1, false),
                                           std::make_tuple(8, 2, true), std::make_tuple(64, 4, true),
                                           std::make_tuple(8, 2, false),
                                           // more experts than a block has threads; the largest E
                                           std::make_tuple(300, 3, true), std::make_tuple(4096, 2, false)));

TEST(RouterCuda, RefusesSizesBeyondTheKernel) {
  REQUIRE_GPU();
  EXPECT_THROW(cuda::router_topk_forward(nullptr, nullptr, nullptr, nullptr, 4, 64, 33, true, nullptr), Error);
}

class PermuteCuda : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(PermuteCuda, PlanIsTheCpuPlanAndMovesMatch) {
  REQUIRE_GPU();
  const auto [Ei, Ki] = GetParam();
  const idx_t M = 777, E = Ei, K = Ki, X = 70, LD = 75;  // token rows with a stride
  const Routing r = cpu_route(uniform(size_t(M * E), 21 + E), M, E, K, true);
  std::vector<int32_t> off(size_t(E + 1)), rows(size_t(M * K)), stacked(size_t(M * K));
  cpu::moe_permute_plan(off.data(), rows.data(), r.idx.data(), M, E, K);
  cpu::moe_permute_plan_stacked(stacked.data(), r.idx.data(), M, E, K);
  DeviceBuffer I = DeviceBuffer::from_host(r.idx), OFF(size_t(E + 1) * 4), ROWS(size_t(M * K) * 4),
               ST(size_t(M * K) * 4);
  cuda::moe_permute_plan(OFF.as<int32_t>(), ROWS.as<int32_t>(), I.as<int32_t>(), M, E, K, nullptr);
  cuda::moe_permute_plan_stacked(ST.as<int32_t>(), I.as<int32_t>(), M, E, K, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(OFF.to_host<int32_t>(), off);
  EXPECT_EQ(ROWS.to_host<int32_t>(), rows);
  EXPECT_EQ(ST.to_host<int32_t>(), stacked);

  // fp32: permute, unpermute (weighted and indicator), and their backwards
  const std::vector<float> in = uniform(size_t(M * LD), 31), g = uniform(size_t(M * K * X), 32),
                           dout = uniform(size_t(M * LD), 33);
  std::vector<float> perm(size_t(M * K * X)), unperm(size_t(M * LD), 0.f), unperm1(size_t(M * LD), 0.f),
      dperm(size_t(M * LD), 1.f), dg(size_t(M * K * X)), dw(size_t(M * K), 0.5f);
  cpu::moe_permute_forward(perm.data(), X, in.data(), LD, rows.data(), M, K, X);
  cpu::moe_unpermute_forward(unperm.data(), LD, g.data(), X, r.w.data(), rows.data(), M, K, X);
  cpu::moe_unpermute_forward(unperm1.data(), LD, g.data(), X, (const float*)nullptr, rows.data(), M, K, X);
  cpu::moe_permute_backward(dperm.data(), LD, g.data(), X, rows.data(), M, K, X, /*accumulate=*/true);
  cpu::moe_unpermute_backward(dg.data(), X, dw.data(), dout.data(), LD, g.data(), X, r.w.data(), rows.data(), M, K, X,
                              /*dw_accumulate=*/true);
  DeviceBuffer IN = DeviceBuffer::from_host(in), G = DeviceBuffer::from_host(g), DO = DeviceBuffer::from_host(dout),
               Wd = DeviceBuffer::from_host(r.w), PERM(perm.size() * 4),
               UN = DeviceBuffer::from_host(std::vector<float>(size_t(M * LD), 0.f)),
               UN1 = DeviceBuffer::from_host(std::vector<float>(size_t(M * LD), 0.f)),
               DPERM = DeviceBuffer::from_host(std::vector<float>(size_t(M * LD), 1.f)), DG(dg.size() * 4),
               DW = DeviceBuffer::from_host(std::vector<float>(size_t(M * K), 0.5f));
  cuda::moe_permute_forward<float>(PERM.as<float>(), X, IN.as<float>(), LD, ROWS.as<int32_t>(), M, K, X, nullptr);
  cuda::moe_unpermute_forward<float>(UN.as<float>(), LD, G.as<float>(), X, Wd.as<float>(), ROWS.as<int32_t>(), M, K, X,
                                     nullptr);
  cuda::moe_unpermute_forward<float>(UN1.as<float>(), LD, G.as<float>(), X, nullptr, ROWS.as<int32_t>(), M, K, X,
                                     nullptr);
  cuda::moe_permute_backward<float>(DPERM.as<float>(), LD, G.as<float>(), X, ROWS.as<int32_t>(), M, K, X, true, nullptr);
  cuda::moe_unpermute_backward<float>(DG.as<float>(), X, DW.as<float>(), DO.as<float>(), LD, G.as<float>(), X,
                                      Wd.as<float>(), ROWS.as<int32_t>(), M, K, X, true, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(PERM.to_host<float>(), perm) << "permute copies rows exactly";
  EXPECT_LT(max_abs_rel(UN.to_host<float>(), unperm), 1e-6);
  EXPECT_LT(max_abs_rel(UN1.to_host<float>(), unperm1), 1e-6);
  EXPECT_LT(max_abs_rel(DPERM.to_host<float>(), dperm), 1e-6);
  EXPECT_EQ(DG.to_host<float>(), dg) << "c · dout is one product per element";
  const auto dw_gpu = DW.to_host<float>();
  EXPECT_LT(max_abs_rel(dw_gpu, dw), 1e-5);
  // The dw reduction is a fixed order: a second run is bitwise the same.
  DeviceBuffer DW2 = DeviceBuffer::from_host(std::vector<float>(size_t(M * K), 0.5f));
  cuda::moe_unpermute_backward<float>(nullptr, X, DW2.as<float>(), DO.as<float>(), LD, G.as<float>(), X,
                                      Wd.as<float>(), ROWS.as<int32_t>(), M, K, X, true, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(DW2.to_host<float>(), dw_gpu);

  // bf16 rows: the unpermuted sum within bf16 rounding of the fp32 CPU result on the same inputs
  const std::vector<float> g16 = rounded(g);
  std::vector<float> ref16(size_t(M * LD), 0.f);
  cpu::moe_unpermute_forward(ref16.data(), LD, g16.data(), X, r.w.data(), rows.data(), M, K, X);
  DeviceBuffer G16 = DeviceBuffer::from_host(to_bf16_bits(g16)),
               UN16 = DeviceBuffer::from_host(std::vector<uint16_t>(size_t(M * LD), 0));
  cuda::moe_unpermute_forward<bf16>(UN16.as<bf16>(), LD, G16.as<bf16>(), X, Wd.as<float>(), ROWS.as<int32_t>(), M, K,
                                    X, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(max_abs_rel(from_bf16_bits(UN16.to_host<uint16_t>()), ref16), 8e-3) << "one bf16 rounding of the sum";
}

INSTANTIATE_TEST_SUITE_P(Sizes, PermuteCuda,
                         ::testing::Values(std::make_pair(1, 1), std::make_pair(8, 1), std::make_pair(8, 2),
                                           std::make_pair(64, 4), std::make_pair(300, 3), std::make_pair(4096, 2)));

// The plan needs no host sync: it can be captured in a CUDA graph and replayed.
TEST(PermuteCuda, PlanIsGraphCapturable) {
  REQUIRE_GPU();
  const idx_t M = 300, E = 8, K = 2;
  const Routing r = cpu_route(uniform(size_t(M * E), 41), M, E, K, true);
  std::vector<int32_t> off(size_t(E + 1)), rows(size_t(M * K));
  cpu::moe_permute_plan(off.data(), rows.data(), r.idx.data(), M, E, K);
  DeviceBuffer I = DeviceBuffer::from_host(r.idx), OFF(size_t(E + 1) * 4), ROWS(size_t(M * K) * 4);
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cuda::moe_permute_plan(OFF.as<int32_t>(), ROWS.as<int32_t>(), I.as<int32_t>(), M, E, K, st);  // sizes the workspace
  CUDA_CHECK(cudaStreamSynchronize(st));
  ROWS.fill_bytes(0xff);
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  cuda::moe_permute_plan(OFF.as<int32_t>(), ROWS.as<int32_t>(), I.as<int32_t>(), M, E, K, st);
  CUDA_CHECK(cudaStreamEndCapture(st, &g));
  CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  CUDA_CHECK(cudaGraphLaunch(ge, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  EXPECT_EQ(ROWS.to_host<int32_t>(), rows);
  EXPECT_EQ(OFF.to_host<int32_t>(), off);
  CUDA_CHECK(cudaGraphExecDestroy(ge));
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaStreamDestroy(st));
}

// grouped_matmul: per-expert GEMMs over uneven groups (one expert empty) in fp32 (true fp32
// GEMMs: tight) and bf16 operands (the CPU on the same bf16-rounded inputs, within bf16 output
// rounding); weight gradients accumulate into what the buffer held.
TEST(GroupedMatmulCuda, ForwardBackwardMatchTheCpu) {
  REQUIRE_GPU();
  const idx_t E = 8, N = 96, Kd = 70;
  const std::vector<int32_t> off = {0, 40, 40, 163, 170, 300, 301, 420, 512};  // expert 1 has no rows
  const idx_t R = off.back();
  const std::vector<float> in = uniform(size_t(R * Kd), 51), w = uniform(size_t(E * N * Kd), 52, -0.3, 0.3),
                           dout = uniform(size_t(R * N), 53);
  std::vector<float> out(size_t(R * N)), din(size_t(R * Kd)), dw(size_t(E * N * Kd), 0.25f);
  cpu::grouped_matmul_forward(out.data(), N, in.data(), Kd, w.data(), N * Kd, off.data(), E, N, Kd);
  cpu::grouped_matmul_backward(din.data(), Kd, dw.data(), dout.data(), N, in.data(), Kd, w.data(), N * Kd, off.data(),
                               E, N, Kd);
  DeviceBuffer OFF = DeviceBuffer::from_host(off), IN = DeviceBuffer::from_host(in), W = DeviceBuffer::from_host(w),
               DO = DeviceBuffer::from_host(dout), OUT(out.size() * 4), DIN(din.size() * 4),
               DW = DeviceBuffer::from_host(std::vector<float>(dw.size(), 0.25f));
  cuda::grouped_matmul_forward<float>(OUT.as<float>(), N, IN.as<float>(), Kd, W.as<float>(), N * Kd, OFF.as<int32_t>(),
                                      E, N, Kd, R, nullptr, nullptr);
  cuda::grouped_matmul_backward<float>(DIN.as<float>(), Kd, DW.as<float>(), DO.as<float>(), N, IN.as<float>(), Kd,
                                       W.as<float>(), N * Kd, OFF.as<int32_t>(), E, N, Kd, false, nullptr, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(max_abs_rel(OUT.to_host<float>(), out), 1e-5);
  EXPECT_LT(max_abs_rel(DIN.to_host<float>(), din), 1e-5);
  EXPECT_LT(max_abs_rel(DW.to_host<float>(), dw), 1e-5);
  const auto dw_gpu = DW.to_host<float>();
  for (idx_t i = 0; i < N * Kd; ++i) ASSERT_EQ(dw_gpu[size_t(1 * N * Kd + i)], 0.25f) << "the empty expert's gradient moved";

  const std::vector<float> in16 = rounded(in), w16 = rounded(w);
  std::vector<float> out16(size_t(R * N));
  cpu::grouped_matmul_forward(out16.data(), N, in16.data(), Kd, w16.data(), N * Kd, off.data(), E, N, Kd);
  DeviceBuffer IN16 = DeviceBuffer::from_host(to_bf16_bits(in16)), W16 = DeviceBuffer::from_host(to_bf16_bits(w16)),
               OUT16(out.size() * 2);
  cuda::grouped_matmul_forward<bf16>(OUT16.as<bf16>(), N, IN16.as<bf16>(), Kd, W16.as<bf16>(), N * Kd,
                                     OFF.as<int32_t>(), E, N, Kd, R, nullptr, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LT(max_abs_rel(from_bf16_bits(OUT16.to_host<uint16_t>()), out16), 8e-3);
}

// The experts' GEMMs spread over 4 streams give bitwise what one stream gives, on a non-default
// stream with a host copy of the offsets (the training path), and the caller's stream waits for
// every side stream before it goes on.
TEST(GroupedMatmulCuda, SeveralStreamsEqualOneStreamBitwise) {
  REQUIRE_GPU();
  const idx_t E = 8, N = 256, Kd = 192;
  const std::vector<int32_t> off = {0, 300, 300, 700, 1100, 1500, 1501, 1900, 2300};
  const idx_t R = off.back();
  const std::vector<float> in = uniform(size_t(R * Kd), 61), w = uniform(size_t(E * N * Kd), 62, -0.3, 0.3),
                           dout = uniform(size_t(R * N), 63);
  DeviceBuffer OFF = DeviceBuffer::from_host(off), IN = DeviceBuffer::from_host(to_bf16_bits(in)),
               W = DeviceBuffer::from_host(to_bf16_bits(w)), DO = DeviceBuffer::from_host(to_bf16_bits(dout));
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  auto run = [&](int streams) {
    cuda::set_grouped_matmul_streams(streams);
    DeviceBuffer OUT(size_t(R * N) * 2), DIN(size_t(R * Kd) * 2),
        DW = DeviceBuffer::from_host(std::vector<float>(size_t(E * N * Kd), 0.5f));
    cuda::grouped_matmul_forward<bf16>(OUT.as<bf16>(), N, IN.as<bf16>(), Kd, W.as<bf16>(), N * Kd, OFF.as<int32_t>(),
                                       E, N, Kd, R, off.data(), st);
    cuda::grouped_matmul_backward<bf16>(DIN.as<bf16>(), Kd, DW.as<float>(), DO.as<bf16>(), N, IN.as<bf16>(), Kd,
                                        W.as<bf16>(), N * Kd, OFF.as<int32_t>(), E, N, Kd, false, off.data(), st);
    CUDA_CHECK(cudaStreamSynchronize(st));  // only the caller's stream: the side streams were joined into it
    return std::make_tuple(OUT.to_host<uint16_t>(), DIN.to_host<uint16_t>(), DW.to_host<float>());
  };
  const auto one = run(1), four = run(4);
  cuda::set_grouped_matmul_streams(4);
  CUDA_CHECK(cudaStreamDestroy(st));
  EXPECT_EQ(std::get<0>(one), std::get<0>(four));
  EXPECT_EQ(std::get<1>(one), std::get<1>(four));
  EXPECT_EQ(std::get<2>(one), std::get<2>(four));
  EXPECT_NE(std::get<2>(one)[size_t(2 * N * Kd)], 0.5f) << "expert 2's gradient was not accumulated";
}
