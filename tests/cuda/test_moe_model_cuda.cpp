// The MoE mixers (RoM, Swimba, separated MoE-SSM) on the CUDA backend against the CPU model
// (GPU machine; label "gpu"). The layers are the CPU's code; these tests check the CUDA ops
// composed into them:
//   - fp32 logits, cross-entropy, the auxiliary loss and every gradient against an fp64 CPU
//     reference (error budget against the CPU fp32 run), with and without a carried state, for
//     a mixed stack and for every option of DESIGN.md §2–4; the routing statistics (per-expert
//     load, aux and z losses) equal the CPU fp32 run's;
//   - bf16 within a relative L2 bound of the fp64 reference;
//   - E = 1 equals the dense mixer on CUDA (values and gradients);
//   - prefill + T = 1 steps equal one pass; CUDA-graph greedy decoding equals the CPU's;
//   - two CUDA training runs with one seed are bitwise equal; a short CUDA run of the RoM
//     small config reaches the CPU run's validation loss.
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
#include "infer/decoder.h"
#include "infer/generator.h"
#include "io/file_util.h"
#include "model/language_model.h"
#include "train/train_backend.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::gputest;
using bf16 = __nv_bfloat16;

namespace {

struct Case {
  const char* name;
  std::vector<std::string> layers;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"mixed_stack",
       {R"("mamba")", R"({"type": "rom", "n_experts": 4, "top_k": 1})",
        R"({"type": "swimba", "n_experts": 4, "top_k": 2, "z_coef": 0.01})",
        R"({"type": "separated_moe_ssm", "n_experts": 3, "top_k": 2})"}},
      {"rom_options",
       {R"({"type": "rom", "n_experts": 4, "top_k": 2, "normalize_topk": true, "weight_at": "both",
            "shared_router": false, "z_coef": 0.01,
            "experts_in": ["conv_proj", "gate_proj", "out_proj", "x_proj", "dt_proj", "conv1d"]})",
        R"({"type": "rom", "n_experts": 3, "top_k": 1, "weight_at": "out", "experts_in": ["conv_proj", "out_proj"]})",
        R"({"type": "rom", "n_experts": 5, "top_k": 3, "weight_at": "gate", "experts_in": ["gate_proj", "x_proj"]})"}},
      {"swimba_options",
       {R"({"type": "swimba", "n_experts": 4, "top_k": 2, "mix": "post", "expert_dt_proj": true, "router_input": "conv"})",
        R"({"type": "swimba", "n_experts": 3, "top_k": 3, "mix": "pre", "expert_dt_proj": true, "normalize_topk": false})",
        R"({"type": "swimba", "n_experts": 4, "top_k": 1, "mix": "post"})"}},
      {"separated_options",
       {R"({"type": "separated_moe_ssm", "n_experts": 4, "top_k": 1, "z_coef": 0.02})",
        R"({"type": "separated_moe_ssm", "n_experts": 2, "top_k": 2, "normalize_topk": false})"}},
  };
  return c;
}

// The routing of both runs must agree exactly: the same experts chosen for every token.
class CudaMoeModel : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaMoeModel, Fp32LogitsLossesGradsAndRoutingMatchTheCpu) {
  REQUIRE_GPU();
  expect_fp32_model_matches_cpu(stack_config(cases()[GetParam()].layers), true, false, cases()[GetParam()].name);
}

TEST_P(CudaMoeModel, Fp32WithACarriedStateMatchesTheCpu) {
  REQUIRE_GPU();
  expect_fp32_model_matches_cpu(stack_config(cases()[GetParam()].layers), true, true, cases()[GetParam()].name);
}

// bf16 activations and GEMM operands (fp32 router logits, probabilities and weights): logits and
// gradients within a relative L2 error of the fp64 reference, as the dense bf16 test allows.
// Routing may differ for tokens whose top-K margin is below bf16 resolution, so only the
// aggregate errors are bounded.
// Packed documents (seq_idx) with a carried state: the conv and scan kernels reset at every
// document start exactly as the CPU reference does (layers that take no seq_idx are skipped).
TEST_P(CudaMoeModel, Fp32PackedDocumentsMatchTheCpu) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[GetParam()].layers);
  const std::string missing = LanguageModel<float>(cfg).seq_idx_missing();
  if (!missing.empty()) GTEST_SKIP() << missing;
  expect_fp32_model_matches_cpu(cfg, true, true, cases()[GetParam()].name, true);
}

TEST_P(CudaMoeModel, Bf16LogitsAndGradsNearTheReference) {
  REQUIRE_GPU();
  const Case& c = cases()[GetParam()];
  expect_bf16_model_near_reference(stack_config(c.layers), true, c.name);
}

// Prefill 67 tokens, then 33 single steps carrying the device state: the logits of every step
// equal the one-pass forward's at that position.
TEST_P(CudaMoeModel, PrefillThenStepsEqualTheFullForward) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[GetParam()].layers);
  const idx_t B = 2, T = 100, P = 67;
  const auto params = init_params(cfg, 8);
  const auto ids = random_ids(size_t(B * T), 300, 9);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  const double worst = prefill_steps_max_rel_diff(m, ids, B, T, P);
  EXPECT_LE(worst, 1e-5) << cases()[GetParam()].name << ": prefill + steps vs one pass";
}

INSTANTIATE_TEST_SUITE_P(Mixers, CudaMoeModel, ::testing::Range<size_t>(0, 4),
                         [](const ::testing::TestParamInfo<size_t>& i) { return cases()[i.param].name; });

// E = 1: every routed mixer is the dense mixer (one expert, weight 1). Same parameters by name
// (the expert slabs [1, ...] hold the dense tensors); logits and shared gradients agree.
TEST(CudaMoeModel, OneExpertEqualsDenseOnCuda) {
  REQUIRE_GPU();
  const idx_t B = 2, T = 70;
  const ModelConfig dense_cfg = stack_config({R"("mamba")", R"("mamba")"});
  const auto dense_params = init_params(dense_cfg, 11);
  const auto ids = random_ids(size_t(B * T), 300, 12);
  const Outputs dense = run_cuda<float>(dense_cfg, dense_params, ids, B, T, nullptr);
  LanguageModel<float> dense_layout(dense_cfg);
  for (const char* spec : {R"({"type": "rom", "n_experts": 1, "top_k": 1})",
                           R"({"type": "rom", "n_experts": 1, "top_k": 1, "weight_at": "both",
                                "experts_in": ["conv_proj", "gate_proj", "out_proj", "x_proj", "dt_proj", "conv1d"]})",
                           R"({"type": "swimba", "n_experts": 1, "top_k": 1})",
                           R"({"type": "swimba", "n_experts": 1, "top_k": 1, "mix": "post", "expert_dt_proj": true})",
                           R"({"type": "separated_moe_ssm", "n_experts": 1, "top_k": 1})"}) {
    const ModelConfig cfg = stack_config({spec, spec});
    LanguageModel<float> layout(cfg);
    std::vector<float> params(layout.table().total(), 0.f);
    for (const ParamInfo& p : layout.table().entries()) {
      const ParamInfo* d = dense_layout.table().find(p.name);
      if (!d) continue;  // router weights: any value routes to the one expert
      ASSERT_EQ(d->numel, p.numel) << spec << " " << p.name;
      std::copy(dense_params.begin() + d->offset, dense_params.begin() + d->offset + d->numel,
                params.begin() + p.offset);
    }
    const Outputs moe = run_cuda<float>(cfg, params, ids, B, T, nullptr);
    EXPECT_LE(rel_err(moe.logits, dense.logits), 1e-6) << spec;
    EXPECT_NEAR(moe.loss, dense.loss, 1e-6 * dense.loss) << spec;
    for (const ParamInfo& p : layout.table().entries()) {
      const ParamInfo* d = dense_layout.table().find(p.name);
      if (!d) continue;
      const std::vector<double> a(moe.grads.begin() + p.offset, moe.grads.begin() + p.offset + p.numel);
      const std::vector<double> b(dense.grads.begin() + d->offset, dense.grads.begin() + d->offset + d->numel);
      EXPECT_LE(rel_err(a, b), 1e-5) << spec << " grad " << p.name;
    }
  }
}

// CUDA-graph decoding through MoE layers (per-token expert GEMV on the device, no host sync):
// greedy tokens equal the CPU decoder's for 48 tokens of two ragged prompts.
TEST(CudaMoeGenerate, GraphGreedyDecodeEqualsCpuDecode) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[0].layers, 48);
  const auto params = init_params(cfg, 21);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99, 3, 42}, {7, 7, 200, 1, 9, 64, 128, 30, 2}};
  const GenerateOptions o = greedy_options(48);
  const auto cpu_out = cpu_greedy(cfg, params, prompts, 48);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  cuda::CudaGenerator<float> cg(m, 2, o);
  const auto gpu_out = cg.run(prompts);
  for (size_t b = 0; b < 2; ++b) {
    ASSERT_EQ(cpu_out[b].generated.size(), 48u);
    EXPECT_EQ(gpu_out[b].generated, cpu_out[b].generated) << "slot " << b;
  }
  Model<CudaBackend<bf16>> m16(cfg);
  m16.upload_params(params.data());
  cuda::CudaGenerator<bf16> g16(m16, 2, o);
  const auto out16 = g16.run(prompts);
  EXPECT_EQ(out16[0].generated.size(), 48u);
  EXPECT_EQ(out16[1].generated.size(), 48u);
}

TEST(CudaMoeTrain, TwoRunsWithOneSeedGiveBitwiseEqualLossesAndWeights) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(cases()[0].layers);
  const auto a = four_step_trace(cfg, 300), b = four_step_trace(cfg, 300);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
  EXPECT_LT(a[9], a[0]) << "the loss should fall over four steps on repeated statistics";
}

// configs/cpu_rom_small.json (d_model 128, 4 RoM layers, E 8, top-1) with the test data's byte
// vocabulary: 120 steps on the CPU and on CUDA reach the same validation loss.
TEST(CudaMoeTrain, ShortRomRunReachesTheCpuValidationLoss) {
  REQUIRE_GPU();
  const std::string data = moessm::testing::make_word_data("cuda_rom_train", 20000);
  Json j = Json::parse(read_file(moessm::testing::source_dir() + "/configs/cpu_rom_small.json"));
  j.set("vocab_size", 256);
  const ModelConfig cfg = ModelConfig::from_json(j, "cpu_rom_small.json");
  const auto [cpu, gpu] = short_run_cpu_and_cuda(cfg, data);
  std::printf("  RoM validation loss after 120 steps: cpu %.4f, cuda %.4f (unigram %.4f)\n", cpu.last_val_loss,
              gpu.last_val_loss, cpu.unigram_entropy);
  EXPECT_LT(cpu.last_val_loss, cpu.unigram_entropy - 0.3);
  EXPECT_NEAR(gpu.last_val_loss, cpu.last_val_loss, 0.05);
}

}  // namespace
