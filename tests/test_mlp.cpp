// The feed-forward layers (docs/hybrid.md) in double precision on the CPU:
// - the swiglu op against its formula and finite differences (strided halves of one buffer);
// - mlp and moe_mlp: finite-difference gradients of every parameter and of the input
//   (moe_mlp for K ∈ {1, 2, E}, normalize_topk on/off, shared expert on/off, aux + z losses);
// - moe_mlp with E = 1, top-1 equals mlp with the same weights (values and gradients);
// - the shared expert adds exactly an mlp of its weights (outputs and gradients);
// - whole-model finite differences and prefill + steps = one pass for stacks holding them
//   (state_size 0: nothing carried);
// - determinism, option errors naming the field, checkpoint round trip, names and accounting,
//   the two example configs, and a short training run of the Jamba-style config.
// Routing is piecewise constant: the moe_mlp FD tests draw inputs whose router logits are
// separated by more than 1e-3 (MixerHarness::separated_input), far above an FD step's effect.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "expect_error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/language_model.h"
#include "model/mlp_mixer.h"
#include "model/moe_mlp_mixer.h"
#include "model/swiglu_ffn.h"
#include "ops/activations.h"
#include "ops/swiglu.h"
#include "mixer_harness.h"
#include "model_checks.h"
#include "testing.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::testing;
using Vec = std::vector<double>;

namespace {

ModelConfig tiny(const std::string& layers, int n_layer) { return tiny_stack(layers, n_layer); }
ModelConfig one_layer() { return tiny(R"("mlp")", 1); }

std::string moe_spec(int E, int K, bool norm, bool shared, const std::string& extra = "") {
  return R"({"type": "moe_mlp", "n_experts": )" + std::to_string(E) + R"(, "top_k": )" + std::to_string(K) +
         R"(, "d_ff": 6, "normalize_topk": )" + (norm ? "true" : "false") +
         R"(, "aux_coef": 0.1, "z_coef": 0.05, "shared_expert": )" + (shared ? "true" : "false") + extra + "}";
}

// Every parameter tensor and du of one layer against central differences (tolerance 1e-6 ·
// max(1, max |numeric|): the FD truncation error at step 1e-6 is ~1e-10 here).
void check_layer_gradients(const std::string& spec, uint64_t seed) {
  SCOPED_TRACE(spec);
  MixerHarness h(one_layer(), spec, 2, 5, seed);
  Rng rng(seed, 5);
  Vec u = h.separated_input(rng);
  Vec R = random_vector<double>(size_t(h.M() * h.D()), rng);
  const double aux_w = 3.0;  // makes the aux / z-loss gradients visible next to the output's
  Vec du;
  h.value_and_grad(u, R, aux_w, &du);
  const Vec analytic = h.grads;
  const Vec num_p = numeric_gradient(h.params, [&] { return h.value(u, R, aux_w); });
  h.table.visit([&](const ParamInfo& p) {
    Vec a(analytic.begin() + p.offset, analytic.begin() + p.offset + p.numel);
    Vec n(num_p.begin() + p.offset, num_p.begin() + p.offset + p.numel);
    EXPECT_EQ(compare_gradients(a, n, 1e-6, p.name), "");
    double mx = 0;
    for (double v : n) mx = std::max(mx, std::fabs(v));
    EXPECT_GT(mx, 1e-4) << p.name << ": the objective should depend on every tensor";
  });
  const Vec num_u = numeric_gradient(u, [&] { return h.value(u, R, aux_w); });
  EXPECT_EQ(compare_gradients(du, num_u, 1e-6, "du"), "");
}

}  // namespace

// ---- the op -----------------------------------------------------------------------------------

TEST(SwigluOp, ForwardIsTheFormulaAndBackwardMatchesFiniteDifferences) {
  const idx_t M = 5, X = 7, ld = 2 * X + 3;  // a, b: the halves of a padded [M, 2X] buffer
  Rng rng(1);
  Vec h = random_vector<double>(size_t(M * ld), rng, -4, 4);
  Vec R = random_vector<double>(size_t(M * X), rng);
  Vec out(size_t(M * X));
  cpu::swiglu_forward(out.data(), X, h.data(), ld, h.data() + X, ld, M, X);
  for (idx_t m = 0; m < M; ++m)
    for (idx_t x = 0; x < X; ++x) {
      const double a = h[m * ld + x], b = h[m * ld + X + x];
      EXPECT_NEAR(out[m * X + x], a / (1 + std::exp(-a)) * b, 1e-15 * (1 + std::fabs(a * b)));
    }
  auto objective = [&] {
    Vec o(size_t(M * X));
    cpu::swiglu_forward(o.data(), X, h.data(), ld, h.data() + X, ld, M, X);
    double L = 0;
    for (size_t i = 0; i < o.size(); ++i) L += o[i] * R[i];
    return L;
  };
  Vec dh(h.size(), 0.0);
  cpu::swiglu_backward(dh.data(), ld, dh.data() + X, ld, R.data(), X, h.data(), ld, h.data() + X, ld, M, X);
  const Vec num = numeric_gradient(h, objective);
  EXPECT_EQ(compare_gradients(dh, num, 1e-8, "dh"), "");  // the padding columns: 0 in both
}

// ---- layer gradients --------------------------------------------------------------------------

TEST(MlpMixer, GradientsMatchFiniteDifferences) {
  check_layer_gradients(R"({"type": "mlp", "d_ff": 12})", 1);
  check_layer_gradients(R"({"type": "mlp", "d_ff": 1})", 2);
}

TEST(MoeMlpMixer, GradientsMatchFiniteDifferencesForEveryVariant) {
  uint64_t seed = 10;
  for (int K : {1, 2, 4})
    for (bool norm : {false, true})
      for (bool shared : {false, true}) check_layer_gradients(moe_spec(4, K, norm, shared), ++seed);
  check_layer_gradients(moe_spec(1, 1, false, true, R"(, "shared_d_ff": 5)"), ++seed);
  check_layer_gradients(moe_spec(3, 2, true, true, R"(, "shared_d_ff": 3)"), ++seed);
}

// ---- relations --------------------------------------------------------------------------------

// One expert, top-1: g = softmax over one logit = 1, so the layer is the mlp of that expert
// (and L_aux = aux_coef · 1 · f · P̄ = aux_coef, with no gradient).
TEST(MoeMlpMixer, OneExpertTopOneEqualsMlpWithTheSameWeights) {
  const ModelConfig cfg = one_layer();
  for (bool norm : {false, true}) {
    MixerHarness mlp(cfg, R"({"type": "mlp", "d_ff": 6})", 2, 5, 1);
    MixerHarness moe(cfg, moe_spec(1, 1, norm, false), 2, 5, 2);
    for (const char* w : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) {
      ASSERT_EQ(moe.info(std::string("experts.") + w).numel, mlp.info(w).numel) << w;
      std::memcpy(moe.param(std::string("experts.") + w), mlp.param(w), mlp.info(w).numel * sizeof(double));
    }
    Rng rng(3);
    Vec u = random_vector<double>(size_t(mlp.M() * mlp.D()), rng);
    Vec R = random_vector<double>(u.size(), rng);
    Vec o1, o2, du1, du2;
    mlp.forward(o1, u);
    const double aux = moe.forward(o2, u);
    EXPECT_LE(max_rel_diff(o2.data(), o1.data(), o1.size()), 1e-14);
    // L_z = z_coef · mean logit² (one logit: logsumexp is the logit), coefficient included
    const double z = moe.mixer->stats().at("z_loss").as_number();
    EXPECT_GT(z, 0.0);
    EXPECT_NEAR(aux, 0.1 + z, 1e-14);
    mlp.value_and_grad(u, R, 1.0, &du1);
    moe.value_and_grad(u, R, 0.0, &du2);  // z-loss weight 0: the router's gradient is then 0 too
    EXPECT_LE(max_rel_diff(du2.data(), du1.data(), du1.size()), 1e-14);
    for (const char* w : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"})
      EXPECT_LE(max_rel_diff(moe.grads.data() + moe.info(std::string("experts.") + w).offset,
                             mlp.grads.data() + mlp.info(w).offset, mlp.info(w).numel),
                1e-14)
          << w;
    const ParamInfo& r = moe.info("router.weight");
    for (size_t i = 0; i < r.numel; ++i) EXPECT_EQ(moe.grads[r.offset + i], 0.0);
  }
}

// shared_expert: out = routed(u) + mlp_shared(u) exactly, and every gradient splits the same way.
TEST(MoeMlpMixer, SharedExpertAddsAnMlpOfItsWeights) {
  const ModelConfig cfg = one_layer();
  MixerHarness with(cfg, moe_spec(4, 2, true, true, R"(, "shared_d_ff": 5)"), 2, 5, 7);
  MixerHarness without(cfg, moe_spec(4, 2, true, false), 2, 5, 8);
  MixerHarness mlp(cfg, R"({"type": "mlp", "d_ff": 5})", 2, 5, 9);
  without.table.visit([&](const ParamInfo& p) {
    std::memcpy(without.params.data() + p.offset, with.params.data() + with.table.at(p.name).offset,
                p.numel * sizeof(double));
  });
  mlp.table.visit([&](const ParamInfo& p) {
    const std::string name = p.name.substr(mlp.prefix.size());
    std::memcpy(mlp.params.data() + p.offset, with.param("shared_expert." + name), p.numel * sizeof(double));
  });
  Rng rng(4);
  Vec u = with.separated_input(rng);
  Vec R = random_vector<double>(u.size(), rng);
  Vec ow, on, om, duw, dun, dum;
  const double aux_w = with.forward(ow, u), aux_n = without.forward(on, u);
  mlp.forward(om, u);
  EXPECT_EQ(aux_w, aux_n);
  for (size_t i = 0; i < ow.size(); ++i) EXPECT_NEAR(ow[i], on[i] + om[i], 1e-14 * (1 + std::fabs(ow[i])));
  with.value_and_grad(u, R, 2.0, &duw);
  without.value_and_grad(u, R, 2.0, &dun);
  mlp.value_and_grad(u, R, 0.0, &dum);
  for (size_t i = 0; i < duw.size(); ++i) EXPECT_NEAR(duw[i], dun[i] + dum[i], 1e-13 * (1 + std::fabs(duw[i])));
  without.table.visit([&](const ParamInfo& p) {
    EXPECT_LE(max_rel_diff(with.grads.data() + with.table.at(p.name).offset, without.grads.data() + p.offset,
                           p.numel),
              1e-14)
        << p.name;
  });
  mlp.table.visit([&](const ParamInfo& p) {
    const ParamInfo& q = with.info("shared_expert." + p.name.substr(mlp.prefix.size()));
    EXPECT_LE(max_rel_diff(with.grads.data() + q.offset, mlp.grads.data() + p.offset, p.numel), 1e-14) << p.name;
  });
}

// ---- whole models -----------------------------------------------------------------------------

// K = E with normalize_topk off is smooth in the router logits (g = p for every expert), so no
// routing flip can disturb the model-level differences.
TEST(HybridModel, GradientsMatchFiniteDifferencesInDouble) {
  LanguageModel<double> m(tiny(R"("mamba", {"type": "mlp", "d_ff": 10},
      {"type": "moe_mlp", "n_experts": 3, "top_k": 3, "normalize_topk": false, "d_ff": 4, "shared_expert": true,
       "shared_d_ff": 3, "aux_coef": 0.05, "z_coef": 0.01})", 3));
  randomize(m, 5);
  const idx_t B = 2, T = 4;
  std::vector<int32_t> ids = {1, 4, 7, 2, 9, 12, 0, 3};
  std::vector<int32_t> tg = {4, 7, 2, -1, 12, 0, 3, 11};
  Rng rng(5);
  std::vector<double> state = random_vector<double>(size_t(m.state_size() * B), rng);
  const LossResult r = check_gradients_by_fd(m, ids, tg, B, T, &state);
  EXPECT_GT(r.aux, 0.0);
}

TEST(HybridModel, PrefillAndStepsEqualOnePass) {
  LanguageModel<double> m(tiny(R"("mamba", {"type": "mlp", "d_ff": 16},
      {"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 8, "shared_expert": true}, "mlp",
      {"type": "rom", "n_experts": 3, "top_k": 1}, {"type": "moe_mlp", "n_experts": 4, "top_k": 1, "d_ff": 8})", 6));
  randomize(m, 3);
  // Only the Mamba-family layers carry state: the feed-forward layers add none.
  EXPECT_EQ(m.mixer(1).state_size(), 0);
  EXPECT_EQ(m.mixer(2).state_size(), 0);
  EXPECT_EQ(m.mixer(2).state_bytes(4), 0u);
  EXPECT_EQ(m.state_size(), m.mixer(0).state_size() + m.mixer(4).state_size());
  EXPECT_LT(prefill_steps_vs_one_pass(m, 2, 150, 70, 13), 1e-12);  // crosses scan chunks
  Json st = m.stats();
  ASSERT_TRUE(st.is_array());
  EXPECT_TRUE(st.as_array()[1].is_null());
  EXPECT_EQ(st.as_array()[2].at("type").as_string(), "moe_mlp");
  double total = 0;
  for (const Json& f : st.as_array()[2].at("load").as_array()) total += f.as_number();
  EXPECT_NEAR(total, 1.0, 1e-12);
}

// Two models from one seed give bitwise equal parameters, losses and gradients (twice each).
TEST(HybridModel, DeterministicInitLossAndGradients) {
  const ModelConfig cfg = tiny(R"("mamba", "mlp", {"type": "moe_mlp", "n_experts": 4, "top_k": 2, "shared_expert": true})", 3);
  const std::vector<float> a = init_loss_grads_trace(cfg), b = init_loss_grads_trace(cfg);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

// ---- options, checkpoints, accounting ---------------------------------------------------------

TEST(FeedForwardLayers, BadOptionsAreErrorsNamingTheFileLayerAndField) {
  auto cfg = [](const std::string& layer) { return tiny(R"("mamba", )" + layer, 2); };
  EXPECT_ERROR_HAS(cfg(R"({"type": "mlp", "d_ff": 0})"), "test.json", "layers[1]", "'d_ff'", "[1, 1048576]", "found 0");
  EXPECT_ERROR_HAS(cfg(R"({"type": "mlp", "d_ff": "big"})"), "test.json", "layers[1]", "'d_ff'", "\"big\"");
  EXPECT_ERROR_HAS(cfg(R"({"type": "mlp", "d_ff": 2.5})"), "'d_ff'", "2.5");
  EXPECT_ERROR_HAS(cfg(R"({"type": "mlp", "bias": true})"), "layers[1]", "unknown option 'bias'", "d_ff");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "n_experts": 2, "top_k": 3})"), "test.json", "layers[1]", "top_k",
                   "[1, 2]", "3");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "d_ff": -4})"), "layers[1]", "'d_ff'", "-4");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "shared_d_ff": 8})"), "layers[1]", "'shared_d_ff'", "'shared_expert'");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "shared_expert": 1})"), "'shared_expert'", "true or false");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "shared_expert": true, "shared_d_ff": 0})"), "'shared_d_ff'", "found 0");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "n_expert": 4})"), "unknown option 'n_expert'", "n_experts");
  EXPECT_ERROR_HAS(cfg(R"({"type": "moe_mlp", "aux_coef": -1})"), "aux_coef");
  EXPECT_ERROR_HAS(cfg(R"({"type": "mlpp"})"), "unknown mixer type 'mlpp'", "mlp", "moe_mlp");
}

TEST(FeedForwardLayers, DefaultHiddenSizeIsEightThirdsRoundedUpToSixtyFour) {
  EXPECT_EQ(default_d_ff(8), 64);     // floor(21.3) = 21 → 64
  EXPECT_EQ(default_d_ff(128), 384);  // 341 → 384
  EXPECT_EQ(default_d_ff(768), 2048); // 2048 exactly
  EXPECT_EQ(default_d_ff(96), 256);   // 256 exactly
  LanguageModel<float> m(tiny(R"("mlp", {"type": "moe_mlp", "shared_expert": true})", 2));
  EXPECT_EQ(m.table().at("backbone.layers.0.feed_forward.gate_proj.weight").shape, (Shape{64, 8}));
  EXPECT_EQ(m.table().at("backbone.layers.1.feed_forward.experts.up_proj.weight").shape, (Shape{8, 64, 8}));
  EXPECT_EQ(m.table().at("backbone.layers.1.feed_forward.shared_expert.down_proj.weight").shape, (Shape{8, 64}));
  const auto& o = dynamic_cast<const MoeMlpMixer<CpuBackend<float>>&>(m.mixer(1)).options();
  EXPECT_EQ(o.router.n_experts, 8);  // RouterOptions' defaults
  EXPECT_EQ(o.router.top_k, 2);
  EXPECT_TRUE(o.router.normalize_topk);
}

TEST(FeedForwardLayers, NamesShapesAndAccounting) {
  const idx_t D = 8, F = 12, Fs = 5, E = 4, K = 2;
  LanguageModel<float> m(tiny(R"("mamba", {"type": "mlp", "d_ff": 12},
      {"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 12, "shared_expert": true, "shared_d_ff": 5})", 3));
  const std::string p1 = "backbone.layers.1.feed_forward.", p2 = "backbone.layers.2.feed_forward.";
  EXPECT_EQ(m.table().at(p1 + "gate_proj.weight").shape, (Shape{F, D}));
  EXPECT_EQ(m.table().at(p1 + "up_proj.weight").shape, (Shape{F, D}));
  EXPECT_EQ(m.table().at(p1 + "down_proj.weight").shape, (Shape{D, F}));
  EXPECT_EQ(m.table().at(p2 + "router.weight").shape, (Shape{E, D}));
  EXPECT_EQ(m.table().at(p2 + "experts.gate_proj.weight").shape, (Shape{E, F, D}));
  EXPECT_EQ(m.table().at(p2 + "experts.up_proj.weight").shape, (Shape{E, F, D}));
  EXPECT_EQ(m.table().at(p2 + "experts.down_proj.weight").shape, (Shape{E, D, F}));
  EXPECT_EQ(m.table().at(p2 + "shared_expert.gate_proj.weight").shape, (Shape{Fs, D}));
  EXPECT_EQ(m.table().at(p2 + "shared_expert.down_proj.weight").shape, (Shape{D, Fs}));
  EXPECT_TRUE(m.table().find("backbone.layers.0.mixer.in_proj.weight") != nullptr);  // Mamba keeps "mixer"
  EXPECT_TRUE(m.table().find("backbone.layers.1.mixer.gate_proj.weight") == nullptr);
  for (const ParamInfo& i : m.table().entries())
    if (i.name.rfind(p1, 0) == 0 || i.name.rfind(p2, 0) == 0) EXPECT_FALSE(i.no_decay) << i.name;
  const MixerCounts mlp = m.mixer(1).counts(), moe = m.mixer(2).counts();
  EXPECT_EQ(mlp.total_params, 3 * D * F);
  EXPECT_EQ(mlp.active_params, 3 * D * F);
  EXPECT_DOUBLE_EQ(mlp.gemm_flops, 2.0 * 3 * D * F);
  EXPECT_DOUBLE_EQ(mlp.other_flops, kSwigluFlopsPerElement * F);
  EXPECT_EQ(mlp.scan_flops + mlp.conv_flops + mlp.router_flops, 0.0);
  EXPECT_EQ(moe.total_params, E * 3 * D * F + E * D + 3 * D * Fs);
  EXPECT_EQ(moe.active_params, K * 3 * D * F + E * D + 3 * D * Fs);
  EXPECT_DOUBLE_EQ(moe.gemm_flops, 2.0 * (K * 3 * D * F + 3 * D * Fs));
  EXPECT_DOUBLE_EQ(moe.router_flops, 2.0 * E * D);
  EXPECT_DOUBLE_EQ(moe.other_flops, kSwigluFlopsPerElement * (K * F + Fs) + 2.0 * K * D + D);
  // the table and counts() agree on each layer's total
  for (int l : {1, 2}) {
    const std::string p = l == 1 ? p1 : p2;
    int64_t n = 0;
    for (const ParamInfo& i : m.table().entries())
      if (i.name.rfind(p, 0) == 0) n += int64_t(i.numel);
    EXPECT_EQ(n, m.mixer(l).counts().total_params) << p;
  }
}

TEST(FeedForwardLayers, CheckpointRoundTrip) {
  const ModelConfig cfg = tiny(R"("mamba", {"type": "mlp", "d_ff": 12},
      {"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 6, "shared_expert": true, "shared_d_ff": 5, "z_coef": 0.01})", 3);
  LanguageModel<float> m(cfg);
  m.init(17);
  const std::string dir = temp_dir("mlp_checkpoint") + "/ck";
  save_model(dir, m);
  const Json cj = Json::parse_file(dir + "/config.json");
  EXPECT_EQ(cj.at("model_type").as_string(), "moessm");  // not loadable as an HF Mamba
  SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
  EXPECT_NE(f.find("backbone.layers.1.feed_forward.down_proj.weight"), nullptr);
  EXPECT_NE(f.find("backbone.layers.2.feed_forward.experts.gate_proj.weight"), nullptr);
  EXPECT_NE(f.find("backbone.layers.2.feed_forward.shared_expert.up_proj.weight"), nullptr);
  auto back = load_model<float>(dir);
  ASSERT_EQ(back->params.size(), m.params.size());
  EXPECT_EQ(0, std::memcmp(back->params.data(), m.params.data(), m.params.size() * sizeof(float)));
  EXPECT_EQ(back->config().to_json().dump(), cfg.to_json().dump());
  const idx_t B = 1, T = 9, V = m.vocab();
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<float> la(size_t(B * T * V)), lb(la.size());
  m.prepare(B, T, false);
  back->prepare(B, T, false);
  m.forward_logits(la.data(), ids.data(), B, T, nullptr, nullptr);
  back->forward_logits(lb.data(), ids.data(), B, T, nullptr, nullptr);
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
}

// The example configs parse, and the Jamba-style one matches the hybrid's active feed-forward
// weights (top-2 of d_ff 192 = one d_ff 384 MLP) plus its routers.
TEST(FeedForwardLayers, ExampleConfigsLoadAndMatchInActiveWeights) {
  const ModelConfig h = ModelConfig::from_file(source_dir() + "/configs/hybrid_mamba_mlp_small.json");
  const ModelConfig j = ModelConfig::from_file(source_dir() + "/configs/jamba_style_small.json");
  LanguageModel<float> mh(h), mj(j);
  EXPECT_EQ(mh.mixer(1).type(), "mlp");
  EXPECT_EQ(mj.mixer(1).type(), "moe_mlp");
  EXPECT_EQ(mj.mixer(3).type(), "moe_mlp");
  EXPECT_EQ(mj.counts().active_params, mh.counts().active_params + 2 * 8 * 128);
  EXPECT_DOUBLE_EQ(mj.counts().gemm_flops, mh.counts().gemm_flops);
  EXPECT_GT(mj.counts().total_params, 3 * mh.counts().total_params / 2);
}

// configs/jamba_style_small.json at d_model 32 on the byte-level word data: 60 CPU steps bring
// the validation loss well below the unigram entropy (the layers learn through the trainer), and
// the run's checkpoint loads back.
TEST(FeedForwardLayers, JambaStyleConfigTrains) {
  const std::string data = make_word_data("mlp_train", 6000);
  const ModelConfig cfg = cpu_sized(Json::parse(read_file(source_dir() + "/configs/jamba_style_small.json")),
                                    "jamba_style_small.json");
  const TrainOptions o = short_run_options(data);
  const TrainResult r = train_model(cfg, o);
  EXPECT_EQ(r.last_step, 60);
  EXPECT_LT(r.last_val_loss, r.unigram_entropy - 0.3) << "unigram " << r.unigram_entropy;
  auto back = load_model<float>(o.out);
  EXPECT_EQ(back->mixer(1).type(), "moe_mlp");
}
