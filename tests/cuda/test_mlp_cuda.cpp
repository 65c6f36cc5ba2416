// The feed-forward layers (mlp, moe_mlp; docs/hybrid.md) on the CUDA backend against the CPU
// (GPU machine; label "gpu"). The layers are the CPU's code; these tests check the CUDA ops
// composed into them:
//   - the swiglu op (float, bf16) against the fp64 reference on strided halves, forward and
//     backward, padding untouched;
//   - fp32 logits, cross-entropy, the auxiliary loss and every gradient against an fp64 CPU
//     reference, within the error budget of the CPU fp32 run, with and without a carried state
//     (the Mamba layers' state; the feed-forward layers carry none); routing equal to the CPU's;
//   - bf16 within a relative L2 bound of the fp64 reference;
//   - moe_mlp with E = 1, top-1 equals mlp on CUDA (values and gradients);
//   - prefill + T = 1 steps equal one pass; CUDA-graph greedy decoding equals the CPU's;
//   - two CUDA training runs with one seed are bitwise equal.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../model_checks.h"
#include "../testing.h"
#include "core/check.h"
#include "cuda_model_checks.h"
#include "gpu_testing.h"
#include "infer/cuda/cuda_generator.h"
#include "model/language_model.h"
#include "ops/activations.h"
#include "ops/swiglu.h"

using namespace moessm;
using namespace moessm::gputest;
using bf16 = __nv_bfloat16;

namespace {

// ---- the op ---------------------------------------------------------------------------------

// Inputs exactly representable in T. Error budget per element: the fp64 value rounded once to T
// (2^-24 / 2^-9 relative) plus the fast-math sigmoid (__expf: a few ulp of fp32), measured
// against the largest |reference|: float ≤ 1e-6, bf16 ≤ 2^-8.
template <typename T> void swiglu_case() {
  const bool is_bf16 = std::is_same_v<T, bf16>;
  const idx_t M = 513, X = 77, ld = 2 * X + 5;  // gate | up halves of one padded buffer
  Rng rng(3, sizeof(T));
  const std::vector<double> h = rnd(size_t(M * ld), rng, -6, 6, is_bf16);
  const std::vector<double> g = rnd(size_t(M * X), rng, -1, 1, is_bf16);
  std::vector<double> out_ref(size_t(M * X)), dh_ref(h.size(), 0.0);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) {
      const double a = h[m * ld + x], b = h[m * ld + X + x], s = 1 / (1 + std::exp(-a));
      out_ref[m * X + x] = a * s * b;
      dh_ref[m * ld + x] = g[m * X + x] * b * s * (1 + a * (1 - s));
      dh_ref[m * ld + X + x] = g[m * X + x] * a * s;
    }
  const double sentinel = 5;
  DeviceBuffer H = up<T>(h), G = up<T>(g), O = up<T>(std::vector<double>(out_ref.size(), sentinel)),
               DH = up<T>(std::vector<double>(h.size(), sentinel));
  cuda::swiglu_forward<T>(O.as<T>(), X, H.as<T>(), ld, H.as<T>() + X, ld, M, X, nullptr);
  cuda::swiglu_backward<T>(DH.as<T>(), ld, DH.as<T>() + X, ld, G.as<T>(), X, H.as<T>(), ld, H.as<T>() + X, ld, M, X,
                           nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<double> out = down<T>(O), dh = down<T>(DH);
  const double tol = is_bf16 ? 1.0 / 256 : 1e-6;
  EXPECT_LE(rel_err(out, out_ref), tol) << "swiglu forward";
  std::vector<double> dh_cmp(dh);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 2 * X; x < ld; ++x) {
      ASSERT_EQ(dh[m * ld + x], sentinel) << "swiglu_backward wrote into the padding";
      dh_cmp[m * ld + x] = 0;
    }
  EXPECT_LE(rel_err(dh_cmp, dh_ref), tol) << "swiglu backward";
}

TEST(SwigluCuda, MatchesTheFp64ReferenceOnStridedHalves) {
  REQUIRE_GPU();
  swiglu_case<float>();
  swiglu_case<bf16>();
}

// ---- whole models ---------------------------------------------------------------------------

struct Case {
  const char* name;
  std::vector<std::string> layers;
  bool routed;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"hybrid_mlp", {R"("mamba")", R"({"type": "mlp", "d_ff": 100})", R"("mamba")", R"("mlp")"}, false},
      {"jamba_style",
       {R"("mamba")", R"({"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 72, "z_coef": 0.01})",
        R"({"type": "rom", "n_experts": 3, "top_k": 1})",
        R"({"type": "moe_mlp", "n_experts": 5, "top_k": 1, "d_ff": 56, "normalize_topk": false,
            "shared_expert": true, "shared_d_ff": 40})"},
       true},
      {"moe_mlp_options",
       {R"({"type": "moe_mlp", "n_experts": 6, "top_k": 3, "d_ff": 24, "shared_expert": true})",
        R"("mamba")", R"({"type": "moe_mlp", "n_experts": 2, "top_k": 2, "d_ff": 130, "normalize_topk": false})"},
       true},
  };
  return c;
}

class CudaFeedForward : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaFeedForward, Fp32LogitsLossesGradsAndRoutingMatchTheCpu) {
  REQUIRE_GPU();
  expect_fp32_model_matches_cpu(stack_config(cases()[GetParam()].layers), cases()[GetParam()].routed, false, cases()[GetParam()].name);
}

TEST_P(CudaFeedForward, Fp32WithACarriedStateMatchesTheCpu) {
  REQUIRE_GPU();
  expect_fp32_model_matches_cpu(stack_config(cases()[GetParam()].layers), cases()[GetParam()].routed, true, cases()[GetParam()].name);
}

// bf16 activations and GEMM operands (fp32 router logits and weights): aggregate errors only, as
// the other bf16 model tests (routing may differ where a top-K margin is below bf16 resolution).
// The stacks: hybrid_mlp and moe_mlp_options whole, and each routed layer of jamba_style after a
// Mamba layer. The whole jamba_style stack (three routers, two of them top-1, in depth) is left
// out: on the H200 (2026-12-02) its bf16 logits were 9.9% from the fp64 reference while each of
// its layers alone was within 0.8% (grads 1%), i.e. deep top-1 routes flip on bf16 rounding; its
// fp32 run matches the CPU's routing exactly (Fp32LogitsLossesGradsAndRoutingMatchTheCpu).
const std::vector<Case>& bf16_cases() {
  static const std::vector<Case> c = {
      cases()[0], cases()[2],
      {"mamba_moe_mlp_k2", {R"("mamba")", R"({"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 72, "z_coef": 0.01})"}, true},
      {"mamba_rom_k1", {R"("mamba")", R"({"type": "rom", "n_experts": 3, "top_k": 1})"}, true},
      {"mamba_moe_mlp_k1_shared",
       {R"("mamba")", R"({"type": "moe_mlp", "n_experts": 5, "top_k": 1, "d_ff": 56, "normalize_topk": false,
            "shared_expert": true, "shared_d_ff": 40})"},
       true}};
  return c;
}

class CudaFeedForwardBf16 : public ::testing::TestWithParam<int> {};

TEST_P(CudaFeedForwardBf16, LogitsAndGradsNearTheReference) {
  REQUIRE_GPU();
  const Case& c = bf16_cases()[size_t(GetParam())];
  expect_bf16_model_near_reference(stack_config(c.layers), c.routed, c.name);
}

INSTANTIATE_TEST_SUITE_P(Stacks, CudaFeedForwardBf16, ::testing::Range(0, 5),
                         [](const ::testing::TestParamInfo<int>& i) { return std::string(bf16_cases()[size_t(i.param)].name); });

TEST_P(CudaFeedForward, PrefillThenStepsEqualTheFullForward) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[GetParam()].layers);
  const idx_t B = 2, T = 100, P = 67;
  const auto params = init_params(cfg, 8);
  const auto ids = random_ids(size_t(B * T), 300, 9);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  EXPECT_LE(prefill_steps_max_rel_diff(m, ids, B, T, P), 1e-5) << cases()[GetParam()].name;
}

INSTANTIATE_TEST_SUITE_P(Stacks, CudaFeedForward, ::testing::Range<size_t>(0, 3),
                         [](const ::testing::TestParamInfo<size_t>& i) { return cases()[i.param].name; });

// E = 1, top-1: the routed expert's weight is 1, so moe_mlp is mlp with the expert's weights.
TEST(CudaFeedForward, OneExpertMoeMlpEqualsMlpOnCuda) {
  REQUIRE_GPU();
  const idx_t B = 2, T = 70;
  const ModelConfig mlp_cfg = stack_config({R"("mamba")", R"({"type": "mlp", "d_ff": 96})"});
  const ModelConfig moe_cfg =
      stack_config({R"("mamba")", R"({"type": "moe_mlp", "n_experts": 1, "top_k": 1, "d_ff": 96, "aux_coef": 0})"});
  const auto mlp_params = init_params(mlp_cfg, 11);
  const auto ids = random_ids(size_t(B * T), 300, 12);
  LanguageModel<float> mlp_layout(mlp_cfg), moe_layout(moe_cfg);
  auto mlp_name = [](std::string n) {  // experts.<w> in moe_mlp is <w> in mlp
    const size_t at = n.find("experts.");
    return at == std::string::npos ? n : n.erase(at, 8);
  };
  std::vector<float> moe_params(moe_layout.table().total(), 0.f);
  for (const ParamInfo& p : moe_layout.table().entries()) {
    const ParamInfo* d = mlp_layout.table().find(mlp_name(p.name));
    if (!d) continue;  // the router: any value routes to the one expert
    ASSERT_EQ(d->numel, p.numel) << p.name;
    std::copy(mlp_params.begin() + d->offset, mlp_params.begin() + d->offset + d->numel, moe_params.begin() + p.offset);
  }
  const Outputs a = run_cuda<float>(mlp_cfg, mlp_params, ids, B, T, nullptr);
  const Outputs b = run_cuda<float>(moe_cfg, moe_params, ids, B, T, nullptr);
  EXPECT_LE(rel_err(b.logits, a.logits), 1e-6);
  EXPECT_NEAR(b.loss, a.loss, 1e-6 * a.loss);
  for (const ParamInfo& p : moe_layout.table().entries()) {
    const ParamInfo* d = mlp_layout.table().find(mlp_name(p.name));
    if (!d) continue;
    const std::vector<double> x(b.grads.begin() + p.offset, b.grads.begin() + p.offset + p.numel);
    const std::vector<double> y(a.grads.begin() + d->offset, a.grads.begin() + d->offset + d->numel);
    EXPECT_LE(rel_err(x, y), 1e-5) << p.name;
  }
}

TEST(CudaFeedForward, GraphGreedyDecodeEqualsCpuDecode) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[1].layers, 48);
  const auto params = init_params(cfg, 21);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99, 3, 42}, {7, 7, 200, 1, 9, 64, 128, 30, 2}};
  const auto cpu_out = cpu_greedy(cfg, params, prompts, 48);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  cuda::CudaGenerator<float> cg(m, 2, greedy_options(48));
  const auto gpu_out = cg.run(prompts);
  for (size_t b = 0; b < 2; ++b) {
    ASSERT_EQ(cpu_out[b].generated.size(), 48u);
    EXPECT_EQ(gpu_out[b].generated, cpu_out[b].generated) << "slot " << b;
  }
}

TEST(CudaFeedForward, TwoTrainingRunsWithOneSeedAreBitwiseEqual) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[1].layers);
  const auto a = four_step_trace(cfg, 300), b = four_step_trace(cfg, 300);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
  EXPECT_LT(a[9], a[0]) << "the loss should fall over four steps on repeated statistics";
}

}  // namespace
