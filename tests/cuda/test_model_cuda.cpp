// The model on the CUDA backend (Model<CudaBackend<Act>>: the CPU's layer code, CUDA ops), the
// graph decoder and the trainer against the CPU path (GPU machine; label "gpu"):
//   - fp32 CUDA logits and every gradient vs the CPU, both measured against an fp64 CPU
//     reference on the same checkpoint (error budget), with and without a carried state;
//   - the bf16 path within a relative bound of the fp64 reference;
//   - prefill + T=1 steps on the device == the full forward; CUDA-graph greedy decode == CPU
//     greedy decode for 64 tokens (ragged prompts); seeded device sampling repeats and follows
//     the filtered distribution of the CPU sampler;
//   - two CUDA training runs with one seed give bitwise equal losses; a short CUDA run reaches
//     the CPU run's validation loss;
//   - state files: saved and resumed on cuda, and across devices, continue as one run does;
//   - a layer the CUDA backend cannot run is refused naming the layer and the missing op.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include "core/device_buffer.h"
#include "data/prepare.h"
#include "gpu_testing.h"
#include "infer/cuda/cuda_generator.h"
#include "infer/cuda/device_sampler.h"
#include "infer/decoder.h"
#include "infer/generator.h"
#include "io/file_util.h"
#include "model/language_model.h"
#include "backend/cuda_backend.h"
#include "core/check.h"
#include "../model_checks.h"
#include "../testing.h"
#include "train/train_backend.h"
#include "train/trainer.h"
#include "cuda_model_checks.h"

using namespace moessm;
using namespace moessm::gputest;
using bf16 = __nv_bfloat16;

namespace {

// Awkward sizes: Di = 80 (not a multiple of 32), N = 12, R = 3, V = 300 → padded 304, T = 70
// (not a multiple of the scan chunk 16).
ModelConfig awkward_config() {
  return ModelConfig::from_json(Json::parse(R"({"d_model": 40, "n_layer": 3, "vocab_size": 300, "d_state": 12,
                                               "pad_vocab_size_multiple": 8})"), "test");
}


ModelConfig small_vocab_config() {
  return ModelConfig::from_json(Json::parse(R"({"d_model": 48, "n_layer": 2, "vocab_size": 256, "d_state": 16})"), "test");
}

}  // namespace

TEST(CudaModel, Fp32LogitsAndGradsMatchTheCpu) {
  REQUIRE_GPU();
  expect_fp32_model_matches_cpu(awkward_config(), false, false, "awkward dense");
}

TEST(CudaModel, Fp32WithACarriedStateMatchesTheCpu) {
  REQUIRE_GPU();
  expect_fp32_model_matches_cpu(awkward_config(), false, true, "awkward dense");
}

// bf16 activations and GEMM operands: the logits and every gradient stay within a relative L2
// error of the fp64 reference that bf16's 8-bit mantissa (2^-9 ≈ 2e-3 per rounding, a few
// dozen roundings deep) allows.
TEST(CudaModel, Bf16LogitsAndGradsNearTheReference) {
  REQUIRE_GPU();
  const ModelConfig cfg = awkward_config();
  const idx_t B = 2, T = 70;
  const auto params = init_params(cfg, 3);
  const auto ids = random_ids(size_t(B * T), 300, 4);
  const Outputs ref = run_cpu<double>(cfg, params, ids, B, T, nullptr);
  const Outputs fast = run_cuda<bf16>(cfg, params, ids, B, T, nullptr);
  EXPECT_LT(l2_rel(fast.logits, ref.logits, 0, ref.logits.size()), 0.02);
  EXPECT_NEAR(fast.loss, ref.loss, 0.01 * std::fabs(ref.loss));
  LanguageModel<float> layout(cfg);
  for (const ParamInfo& p : layout.table().entries()) {
    const double e = l2_rel(fast.grads, ref.grads, p.offset, p.numel);
    EXPECT_LT(e, 0.06) << "grad " << p.name;
    std::printf("  bf16 grad %-42s L2 rel err %.4f\n", p.name.c_str(), e);
  }
}

TEST(CudaModel, RefusesAMixerWithoutCudaOpsNamingLayerAndOp) {
  const ModelConfig cfg = ModelConfig::from_json(Json::parse(
      R"({"d_model": 16, "n_layer": 2, "vocab_size": 64, "layers": ["mamba", {"type": "rom", "n_experts": 40, "top_k": 33}]})"),
      "test");
  try {
    Model<CudaBackend<bf16>> m(cfg);
    GTEST_FAIL() << "a rom layer with top_k 33 was accepted on cuda";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1: rom on cuda needs router_topk with top_k 33 (cuda: top_k <= 32)"),
              std::string::npos) << e.what();
  }
}

TEST(CudaModel, PrefillThenStepsEqualTheFullForward) {
  REQUIRE_GPU();
  const ModelConfig cfg = awkward_config();
  const idx_t B = 2, T = 100, P = 67;  // prefill 67 (one chunk + 3), then 33 single steps
  const auto params = init_params(cfg, 8);
  const auto ids = random_ids(size_t(B * T), 300, 9);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  EXPECT_LE(prefill_steps_max_rel_diff(m, ids, B, T, P), 1e-5) << "prefill + steps vs one pass";
}

TEST(CudaGenerate, GraphGreedyDecodeEqualsCpuDecodeFor64Tokens) {
  REQUIRE_GPU();
  const ModelConfig cfg = small_vocab_config();
  const auto params = init_params(cfg, 21);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99, 3, 42}, {7, 7, 200, 1, 9, 64, 128, 30, 2}};
  const GenerateOptions o = greedy_options(64);
  const auto cpu_out = cpu_greedy(cfg, params, prompts, 64);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  cuda::CudaGenerator<float> cg(m, 2, o);
  const auto gpu_out = cg.run(prompts);
  for (size_t b = 0; b < 2; ++b) {
    ASSERT_EQ(cpu_out[b].generated.size(), 64u);
    EXPECT_EQ(gpu_out[b].generated, cpu_out[b].generated) << "slot " << b;
  }
  EXPECT_EQ(cg.stats().forced_tokens, 4);
  EXPECT_EQ(cg.stats().generated_tokens, 128);
  // Prefill + graph decode == the CUDA full forward: over prompt + generated tokens (69 of each
  // slot), the argmax at every position that produced a token is that token.
  {
    const idx_t T = 69, V = m.vocab();
    std::vector<int32_t> seq;
    for (size_t b = 0; b < 2; ++b) {
      std::vector<int32_t> all = prompts[b];
      all.insert(all.end(), gpu_out[b].generated.begin(), gpu_out[b].generated.end());
      seq.insert(seq.end(), all.begin(), all.begin() + T);
    }
    std::vector<float> full(size_t(2 * T * V));
    m.forward_logits(full.data(), seq.data(), 2, T, nullptr, nullptr);
    for (size_t b = 0; b < 2; ++b)
      for (idx_t t = idx_t(prompts[b].size()) - 1; t + 1 < T; ++t) {
        const float* row = full.data() + (idx_t(b) * T + t) * V;
        EXPECT_EQ(argmax_token(row, 256), seq[b * T + t + 1]) << "slot " << b << " position " << t;
      }
  }
  // A second run (graph captured again for the new buffers) from a fresh state repeats it, and
  // a streamed run reports every token through the callback.
  cg.reset_state();
  std::vector<std::vector<int32_t>> streamed(2);
  const auto again = cg.run(prompts, [&](idx_t s, int32_t t) { streamed[size_t(s)].push_back(t); });
  for (size_t b = 0; b < 2; ++b) {
    EXPECT_EQ(again[b].generated, cpu_out[b].generated) << "second run, slot " << b;
    EXPECT_EQ(streamed[b], cpu_out[b].generated) << "streamed, slot " << b;
  }
  // bf16 decodes the same prompts to full length (values differ from fp32 by design).
  Model<CudaBackend<bf16>> m16(cfg);
  m16.upload_params(params.data());
  cuda::CudaGenerator<bf16> g16(m16, 2, o);
  const auto out16 = g16.run(prompts);
  EXPECT_EQ(out16[0].generated.size(), 64u);
  EXPECT_EQ(out16[1].generated.size(), 64u);
}

// generate --state-out / --state-in on cuda (float32): "Hello" saved, then " world" continued,
// equals "Hello world" in one go; a state written on the CPU continues on cuda as on the CPU.
TEST(CudaGenerate, StateFilesResumeOnCudaAndAcrossDevices) {
  REQUIRE_GPU();
  using moessm::testing::run_cli;
  const std::string dir = moessm::testing::temp_dir("cuda_state"), ckpt = dir + "/m";
  std::string out;
  ASSERT_EQ(run_cli("init --config " + moessm::testing::source_dir() + "/configs/tiny_dense.json --out " + ckpt +
                    " --seed 3", &out), 0) << out;
  const std::string gen = "generate --model " + ckpt + " --tokenizer byte --temperature 0 --ignore-eot ";
  const std::string cuda = " --device cuda --dtype float32";
  auto ids = [&](const std::string& f) {
    std::ifstream in(f);
    std::vector<int32_t> v;
    for (int32_t x; in >> x;) v.push_back(x);
    return v;
  };
  ASSERT_EQ(run_cli(gen + "--prompt Hello --max-new-tokens 0 --state-out " + dir + "/gpu.state" + cuda, &out), 0) << out;
  ASSERT_EQ(run_cli(gen + "--prompt Hello --max-new-tokens 0 --state-out " + dir + "/cpu.state", &out), 0) << out;
  ASSERT_EQ(run_cli(gen + "--state-in " + dir + "/gpu.state --prompt ' world' --max-new-tokens 12 --ids-out " + dir +
                    "/resumed.txt" + cuda, &out), 0) << out;
  ASSERT_EQ(run_cli(gen + "--prompt 'Hello world' --max-new-tokens 12 --ids-out " + dir + "/whole.txt" + cuda, &out), 0)
      << out;
  ASSERT_EQ(run_cli(gen + "--state-in " + dir + "/cpu.state --prompt ' world' --max-new-tokens 12 --ids-out " + dir +
                    "/cross.txt" + cuda, &out), 0) << out;
  ASSERT_EQ(run_cli(gen + "--state-in " + dir + "/cpu.state --prompt ' world' --max-new-tokens 12 --ids-out " + dir +
                    "/cpu.txt", &out), 0) << out;
  const auto resumed = ids(dir + "/resumed.txt"), whole = ids(dir + "/whole.txt"), cross = ids(dir + "/cross.txt"),
             cpu = ids(dir + "/cpu.txt");
  ASSERT_EQ(resumed.size(), 18u);
  ASSERT_EQ(whole.size(), 23u);
  EXPECT_EQ(std::vector<int32_t>(resumed.begin() + 6, resumed.end()), std::vector<int32_t>(whole.begin() + 11, whole.end()));
  EXPECT_EQ(cross, cpu) << "a CPU state continued on cuda";
  // No prompt: the first token comes from the saved next-token logits.
  ASSERT_EQ(run_cli(gen + "--state-in " + dir + "/gpu.state --max-new-tokens 3 --ids-out " + dir + "/cont.txt" + cuda,
                    &out), 0) << out;
  ASSERT_EQ(run_cli(gen + "--prompt Hello --max-new-tokens 3 --ids-out " + dir + "/ref.txt" + cuda, &out), 0) << out;
  const auto ref = ids(dir + "/ref.txt");
  EXPECT_EQ(ids(dir + "/cont.txt"), std::vector<int32_t>(ref.begin() + 5, ref.end()));
}

TEST(CudaGenerate, EndOfTextStopsASlotAndKeepsTheId) {
  REQUIRE_GPU();
  const ModelConfig cfg = small_vocab_config();
  const auto params = init_params(cfg, 21);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99}};
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 40;
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  cuda::CudaGenerator<float> g(m, 1, o);
  const auto full = g.run(prompts);
  ASSERT_EQ(full[0].generated.size(), 40u);
  o.eot_id = full[0].generated[5];
  cuda::CudaGenerator<float> g2(m, 1, o);  // a fresh generator starts from a zero state
  const auto r = g2.run(prompts);
  EXPECT_TRUE(r[0].stopped_at_eot);
  EXPECT_EQ(r[0].generated.back(), o.eot_id);
  EXPECT_LE(r[0].generated.size(), 6u);
}

// One launch of the device sampler over 4000 slots holding the same logits: the empirical
// distribution of the draws matches the CPU sampler's filtered distribution (total variation),
// a second launch with the same seed repeats every draw, another seed does not.
TEST(CudaGenerate, DeviceSamplingFollowsTheFilteredDistributionAndRepeats) {
  REQUIRE_GPU();
  const idx_t B = 4000, V = 64, n = 50;
  Rng r(5);
  std::vector<float> row(static_cast<size_t>(V));
  for (auto& x : row) x = float(r.uniform(-2.0, 2.0));
  std::vector<float> logits;
  for (idx_t b = 0; b < B; ++b) logits.insert(logits.end(), row.begin(), row.end());
  DeviceBuffer L = DeviceBuffer::from_host(logits);
  SamplingParams sp;
  sp.temperature = 0.7;
  sp.top_k = 12;
  sp.top_p = 0.85;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<double> probs(static_cast<size_t>(n));
  const idx_t kept = candidate_distribution(row.data(), n, sp, ids.data(), probs.data());
  std::vector<double> want(size_t(n), 0.0);
  for (idx_t i = 0; i < kept; ++i) want[ids[i]] = probs[i];
  auto draw = [&](uint64_t seed) {
    std::vector<int32_t> zeros(size_t(B), 0);
    DeviceBuffer tok = DeviceBuffer::from_host(zeros), pos = DeviceBuffer::from_host(zeros),
                 flen = DeviceBuffer::from_host(zeros), done = DeviceBuffer::from_host(zeros),
                 nout = DeviceBuffer::from_host(zeros), emitted = DeviceBuffer::from_host(zeros),
                 eot = DeviceBuffer::from_host(zeros), out = DeviceBuffer::from_host(zeros),
                 forced = DeviceBuffer::from_host(std::vector<int32_t>(1, 0));
    cuda::DecodeSlots s;
    s.tok = tok.as<int32_t>(); s.pos = pos.as<int32_t>(); s.forced = forced.as<int32_t>();
    s.forced_len = flen.as<int32_t>(); s.forced_ld = 1; s.done = done.as<int32_t>();
    s.out = out.as<int32_t>(); s.n_out = nout.as<int32_t>(); s.emitted = emitted.as<int32_t>();
    s.eot_hit = eot.as<int32_t>(); s.max_new = 1;
    cuda::decode_choose<float>(s, L.as<float>(), V, n, sp, seed, B, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    return out.to_host<int32_t>();
  };
  const auto a = draw(11), b = draw(11), c = draw(12);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<double> freq(size_t(n), 0.0);
  for (int32_t t : a) {
    ASSERT_GE(t, 0);
    ASSERT_LT(t, n);
    freq[t] += 1.0 / double(B);
  }
  double tv = 0;
  for (idx_t i = 0; i < n; ++i) tv += 0.5 * std::fabs(freq[i] - want[i]);
  EXPECT_LT(tv, 0.03) << "total variation between device draws and the CPU distribution (" << kept << " kept)";
  for (idx_t i = 0; i < n; ++i)
    if (want[i] == 0) EXPECT_EQ(freq[i], 0.0) << "token " << i << " is filtered out but was drawn";
}

TEST(CudaTrain, TwoRunsWithOneSeedGiveBitwiseEqualLosses) {
  REQUIRE_GPU();
  const ModelConfig cfg = awkward_config();
  const auto a = four_step_trace(cfg, 300), b = four_step_trace(cfg, 300);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
  EXPECT_LT(a[9], a[0]) << "the loss should fall over four steps on repeated statistics";
}

TEST(CudaTrain, ShortRunReachesTheCpuValidationLoss) {
  REQUIRE_GPU();
  const std::string data = moessm::testing::make_word_data("cuda_train", 20000);
  const ModelConfig cfg = small_vocab_config();
  const auto [cpu, gpu] = short_run_cpu_and_cuda(cfg, data);
  std::printf("  validation loss after 120 steps: cpu %.4f, cuda %.4f (unigram %.4f)\n", cpu.last_val_loss,
              gpu.last_val_loss, cpu.unigram_entropy);
  EXPECT_LT(cpu.last_val_loss, cpu.unigram_entropy - 0.3);
  EXPECT_NEAR(gpu.last_val_loss, cpu.last_val_loss, 0.05);
  // The CUDA checkpoint is an ordinary checkpoint: the CPU model loads it.
  EXPECT_TRUE(file_exists(data + "/../run_cuda/checkpoint/model.safetensors"));
}
