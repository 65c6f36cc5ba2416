// Routing Mamba mixer (model/rom_mixer.h), in double precision:
// - finite-difference gradients (all parameters and the input, with a carried initial state and
//   the aux + z losses in the objective) for every weight_at × K ∈ {1,2} × E ∈ {1,4} ×
//   normalize_topk, and for the shared_router = false / experts_in ablations;
// - E = 1 equals the dense MambaMixer with the same weights (outputs and gradients);
// - a router forced to send every token to expert j equals the dense mixer built from j's slices;
// - the aux loss is aux_coef under uniform router probabilities and grows when routing collapses;
// - prefill + steps equal one pass for a LanguageModel mixing dense and RoM layers;
// - option validation and accounting.
// Routing is piecewise constant in the router logits: the FD tests draw inputs whose logits
// (for every router and token) are pairwise separated by more than kMinMargin = 1e-3, far above
// the change an FD step of 1e-6 can cause (|Δlogit| <= 1e-6 · max(|u|, |W_router|) · D), and
// resample the input otherwise — so no perturbation can change a top-K set.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/check.h"
#include "model/config.h"
#include "model/language_model.h"
#include "model/mamba_mixer.h"
#include "model/mixer_registry.h"
#include "model/rom_mixer.h"
#include "mixer_harness.h"
#include "model_checks.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;
using Vec = std::vector<double>;

namespace {

constexpr double kMinMargin = 1e-3;
const std::string kPrefix = "backbone.layers.0.mixer.";

ModelConfig tiny_config(const std::string& layers = "", int n_layer = 2) {
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": )" + std::to_string(n_layer) + R"(, "vocab_size": 13, "d_state": 3, "d_conv": 3,
                     "expand": 2, "pad_vocab_size_multiple": 8)" + layers + "}"),
      "test");
}

// One mixer with its own parameter table, buffers and arena (tests/mixer_harness.h).
struct Harness : MixerHarness {
  Harness(const ModelConfig& c, const std::string& spec_json, idx_t B_, idx_t T_, uint64_t seed)
      : MixerHarness(c, spec_json, B_, T_, seed, kPrefix) {}
};

// Full FD check of one mixer spec: every parameter tensor and du.
void check_gradients(const std::string& spec, uint64_t seed) {
  SCOPED_TRACE(spec);
  ModelConfig cfg = tiny_config();
  Harness h(cfg, spec, 2, 5, seed);
  Rng rng(seed, 5);
  Vec u = h.separated_input(rng, kMinMargin);
  Vec R = random_vector<double>(h.M() * h.D(), rng);
  Vec state = random_vector<double>(h.B * h.mixer->state_size(), rng);
  const double aux_w = 3.0;  // makes the aux / z-loss gradients visible next to the output's
  Vec du;
  h.value_and_grad(u, R, aux_w, &du, &state);
  const Vec analytic = h.grads;
  Vec num_p = numeric_gradient(h.params, [&] { return h.value(u, R, aux_w, &state); });
  h.table.visit([&](const ParamInfo& p) {
    Vec a(analytic.begin() + p.offset, analytic.begin() + p.offset + p.numel);
    Vec n(num_p.begin() + p.offset, num_p.begin() + p.offset + p.numel);
    EXPECT_EQ(compare_gradients(a, n, 1e-6, p.name), "");
  });
  Vec num_u = numeric_gradient(u, [&] { return h.value(u, R, aux_w, &state); });
  EXPECT_EQ(compare_gradients(du, num_u, 1e-6, "du"), "");
}

std::string rom_spec(const std::string& weight_at, int E, int K, bool norm, const std::string& extra = "",
                     double z_coef = 0.05) {
  return R"({"type": "rom", "n_experts": )" + std::to_string(E) + R"(, "top_k": )" + std::to_string(K) +
         R"(, "weight_at": ")" + weight_at + R"(", "normalize_topk": )" + (norm ? "true" : "false") +
         R"(, "aux_coef": 0.1, "z_coef": )" + std::to_string(z_coef) + extra + "}";
}

}  // namespace

// K = 2 with E = 1 is not a valid router (K <= E is CHECKed), so the E = 1 cases use K = 1.
TEST(RomMixer, GradientsMatchFiniteDifferencesForEveryVariant) {
  uint64_t seed = 10;
  for (const char* wa : {"gate", "out", "both"})
    for (int E : {1, 4})
      for (int K : {1, 2})
        for (bool norm : {false, true}) {
          if (K > E) continue;
          check_gradients(rom_spec(wa, E, K, norm), ++seed);
        }
}

TEST(RomMixer, AblationGradientsMatchFiniteDifferences) {
  const std::string all =
      R"(, "experts_in": ["conv_proj", "gate_proj", "out_proj", "x_proj", "dt_proj", "conv1d"])";
  uint64_t seed = 100;
  // one router per expertised projection
  check_gradients(rom_spec("both", 4, 2, false, R"(, "shared_router": false)"), ++seed);
  check_gradients(rom_spec("gate", 4, 1, true, R"(, "shared_router": false)"), ++seed);
  // every module expertised, shared and separate routers
  check_gradients(rom_spec("gate", 4, 2, false, all), ++seed);
  check_gradients(rom_spec("both", 3, 2, true, all + R"(, "shared_router": false)"), ++seed);
  // subsets: a single half of in_proj (conv_proj / gate_proj tensors), small modules alone
  check_gradients(rom_spec("gate", 4, 2, false, R"(, "experts_in": ["gate_proj"])"), ++seed);
  check_gradients(rom_spec("out", 4, 1, false, R"(, "experts_in": ["out_proj", "x_proj"])"), ++seed);
  check_gradients(rom_spec("out", 4, 2, true, R"(, "experts_in": ["conv_proj", "out_proj", "conv1d", "dt_proj"], "shared_router": false)"), ++seed);
}

TEST(RomMixer, OneExpertEqualsTheDenseMixer) {
  ModelConfig cfg = tiny_config();
  for (const char* wa : {"gate", "out", "both"})
    for (bool norm : {false, true}) {
      SCOPED_TRACE(std::string("weight_at=") + wa);
      Harness dense(cfg, R"({"type": "mamba"})", 2, 5, 1);
      Harness rom(cfg, rom_spec(wa, 1, 1, norm, "", 0.0), 2, 5, 2);
      // same weights: every dense tensor has the RoM tensor of the same name (with a leading 1)
      dense.table.visit([&](const ParamInfo& p) {
        const ParamInfo& q = rom.table.at(p.name);
        ASSERT_EQ(q.numel, p.numel) << p.name;
        std::copy(dense.params.begin() + p.offset, dense.params.begin() + p.offset + p.numel,
                  rom.params.begin() + q.offset);
      });
      EXPECT_EQ(rom.info("in_proj.weight").shape, (Shape{1, 2 * cfg.d_inner(), cfg.d_model}));
      Rng rng(3);
      Vec u = random_vector<double>(dense.M() * dense.D(), rng);
      Vec R = random_vector<double>(dense.M() * dense.D(), rng);
      Vec state = random_vector<double>(dense.B * dense.mixer->state_size(), rng);
      Vec outd, outr;
      dense.forward(outd, u, &state);
      const double aux = rom.forward(outr, u, &state);
      EXPECT_LE(max_rel_diff(outr.data(), outd.data(), outd.size()), 1e-6);
      EXPECT_NEAR(aux, 0.1, 1e-15);  // one expert: f = P̄ = 1, so L_aux = aux_coef (z_coef = 0)
      Vec dud, dur;
      dense.value_and_grad(u, R, 1.0, &dud, &state);
      rom.value_and_grad(u, R, 1.0, &dur, &state);
      EXPECT_LE(max_rel_diff(dur.data(), dud.data(), dud.size()), 1e-6);
      dense.table.visit([&](const ParamInfo& p) {
        const ParamInfo& q = rom.table.at(p.name);
        EXPECT_LE(max_rel_diff(rom.grads.data() + q.offset, dense.grads.data() + p.offset, p.numel), 1e-6)
            << p.name;
      });
    }
}

// Inside a sum over S_t the router weight g is 1 when every token's probability mass is on j.
TEST(RomMixer, RouterForcedToOneExpertEqualsThatExpertAsDense) {
  ModelConfig cfg = tiny_config();
  const idx_t E = 4, Di = cfg.d_inner(), D = cfg.d_model;
  for (const char* wa : {"gate", "out", "both"})
    for (idx_t j : {0, 2, 3}) {
      SCOPED_TRACE(std::string("weight_at=") + wa + " j=" + std::to_string(j));
      Harness rom(cfg, rom_spec(wa, int(E), 1, false, "", 0.0), 2, 5, 4 + j);
      Harness dense(cfg, R"({"type": "mamba"})", 2, 5, 9);
      // router: logit_j = 200·u[:,0] = 200 with u[:,0] = 1, all others 0 → p_j = 1 exactly in fp64
      double* rw = rom.param("router.weight");
      std::fill(rw, rw + E * D, 0.0);
      rw[j * D + 0] = 200.0;
      // the dense mixer built from expert j's slices and the shared modules
      dense.table.visit([&](const ParamInfo& p) {
        const ParamInfo& q = rom.table.at(p.name);
        const size_t from = q.numel == p.numel ? q.offset : q.offset + j * p.numel;
        std::copy(rom.params.begin() + from, rom.params.begin() + from + p.numel, dense.params.begin() + p.offset);
      });
      Rng rng(11);
      Vec u = random_vector<double>(rom.M() * D, rng);
      for (idx_t m = 0; m < rom.M(); ++m) u[m * D] = 1.0;
      Vec R = random_vector<double>(rom.M() * D, rng);
      Vec dud, dur;
      dense.value_and_grad(u, R, 1.0, &dud);
      rom.value_and_grad(u, R, 1.0, &dur);
      Vec outd, outr;
      dense.forward(outd, u, nullptr);
      rom.forward(outr, u, nullptr);
      EXPECT_LE(max_rel_diff(outr.data(), outd.data(), outd.size()), 1e-12);
      EXPECT_LE(max_rel_diff(dur.data(), dud.data(), dud.size()), 1e-12);
      Json st = rom.mixer->stats();
      for (idx_t e = 0; e < E; ++e) EXPECT_EQ(st.at("load").as_array()[e].as_number(), e == j ? 1.0 : 0.0);
      dense.table.visit([&](const ParamInfo& p) {
        const ParamInfo& q = rom.table.at(p.name);
        if (q.numel == p.numel) {
          EXPECT_LE(max_rel_diff(rom.grads.data() + q.offset, dense.grads.data() + p.offset, p.numel), 1e-12) << p.name;
          return;
        }
        for (idx_t e = 0; e < E; ++e) {
          const double* g = rom.grads.data() + q.offset + e * p.numel;
          if (e == j) {
            EXPECT_LE(max_rel_diff(g, dense.grads.data() + p.offset, p.numel), 1e-12) << p.name;
          } else {
            for (size_t i = 0; i < p.numel; ++i) ASSERT_EQ(g[i], 0.0) << p.name << " expert " << e;
          }
        }
      });
      (void)Di;
    }
}

TEST(RomMixer, AuxLossIsTheCoefficientUnderUniformProbabilitiesAndGrowsWhenCollapsed) {
  ModelConfig cfg = tiny_config();
  const idx_t E = 4, D = cfg.d_model;
  Harness rom(cfg, R"({"type": "rom", "n_experts": 4, "top_k": 1, "aux_coef": 0.01})", 2, 5, 1);
  Rng rng(2);
  Vec u = random_vector<double>(rom.M() * D, rng), out;
  for (idx_t m = 0; m < rom.M(); ++m) u[m * D] = 1.0;
  double* rw = rom.param("router.weight");
  // zero router: p = 1/E for every token, so P̄_i = 1/E and L_aux = coef · E · Σ f_i / E = coef
  std::fill(rw, rw + E * D, 0.0);
  const double uniform = rom.forward(out, u, nullptr);
  EXPECT_NEAR(uniform, 0.01, 1e-15);
  EXPECT_NEAR(rom.mixer->stats().at("aux_loss").as_number(), 0.01, 1e-15);
  // a router leaning on expert 1 for every token: f_1 = 1, P̄_1 > 1/E
  double prev = uniform;
  for (double s : {0.5, 1.0, 3.0}) {
    rw[1 * D] = s;
    const double aux = rom.forward(out, u, nullptr);
    EXPECT_GT(aux, prev * 1.01) << "scale " << s;
    prev = aux;
  }
  EXPECT_LE(prev, 0.01 * double(E) + 1e-15);  // bounded by coef · E (total collapse)
}

TEST(RomMixer, PrefillAndStepsEqualOnePassInAMixedStack) {
  ModelConfig cfg = tiny_config(R"(, "layers": ["mamba",
      {"type": "rom", "n_experts": 4, "top_k": 2},
      {"type": "rom", "n_experts": 3, "top_k": 1, "weight_at": "both", "shared_router": false,
       "experts_in": ["conv_proj", "gate_proj", "out_proj", "x_proj", "dt_proj", "conv1d"]}])", 3);
  LanguageModel<double> m(cfg);
  m.init(3);
  Rng prng(3, 99);
  for (auto& p : m.params) p += prng.uniform(-0.1, 0.1);
  EXPECT_LT(prefill_steps_vs_one_pass(m, 2, 150, 70, 13), 1e-12);  // crosses scan chunks
  // training loss includes the layers' aux losses; stats carry per-layer load
  const idx_t B = 2, T = 150;
  Rng rng(6);
  std::vector<int32_t> ids(B * T);
  for (auto& x : ids) x = int32_t(rng.below(13));
  m.prepare(B, T, true);
  std::vector<int32_t> tg(ids.begin() + 1, ids.end());
  tg.push_back(-1);
  LossResult r = m.loss(ids.data(), tg.data(), B, T, false);
  EXPECT_GT(r.aux, 0.0);
  Json st = m.stats();
  ASSERT_TRUE(st.is_array());
  EXPECT_TRUE(st.as_array()[0].is_null());
  EXPECT_EQ(st.as_array()[1].at("load").size(), 4u);
  EXPECT_EQ(st.as_array()[2].at("load_by_router").size(), 6u);
  double total = 0;
  for (const Json& f : st.as_array()[1].at("load").as_array()) total += f.as_number();
  EXPECT_NEAR(total, 1.0, 1e-12);
}

TEST(RomMixer, RejectsBadOptionsNamingThem) {
  auto err = [](const std::string& spec) {
    try {
      ModelConfig cfg = tiny_config(R"(, "layers": [)" + spec + R"(, "mamba"])");
      LanguageModel<float> m(cfg);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(R"({"type": "rom", "n_expert": 4})").find("unknown option 'n_expert'"), std::string::npos);
  EXPECT_NE(err(R"({"type": "rom", "n_experts": 2, "top_k": 3})").find("top_k"), std::string::npos);
  EXPECT_NE(err(R"({"type": "rom", "weight_at": "input"})").find("weight_at"), std::string::npos);
  EXPECT_NE(err(R"({"type": "rom", "experts_in": ["conv_proj", "mlp"]})").find("unknown module 'mlp'"), std::string::npos);
  EXPECT_NE(err(R"({"type": "rom", "experts_in": ["out_proj"]})").find("lacks 'gate_proj'"), std::string::npos);
  EXPECT_NE(err(R"({"type": "rom", "aux_coef": -1})").find("aux_coef"), std::string::npos);
  EXPECT_EQ(err(R"({"type": "rom", "experts_in": ["out_proj"], "weight_at": "out"})"), "");
}

TEST(RomMixer, NamesShapesAndAccounting) {
  ModelConfig cfg = tiny_config(R"(, "layers": [{"type": "rom", "n_experts": 8, "top_k": 1}, "mamba"])");
  LanguageModel<float> m(cfg);
  const idx_t D = 8, Di = 16, E = 8;
  const std::string p = "backbone.layers.0.mixer.";
  EXPECT_EQ(m.table().at(p + "router.weight").shape, (Shape{E, D}));
  EXPECT_EQ(m.table().at(p + "in_proj.weight").shape, (Shape{E, 2 * Di, D}));
  EXPECT_EQ(m.table().at(p + "out_proj.weight").shape, (Shape{E, D, Di}));
  EXPECT_EQ(m.table().at(p + "x_proj.weight").shape, m.table().at("backbone.layers.1.mixer.x_proj.weight").shape);
  const MixerCounts rom = m.mixer(0).counts(), dense = m.mixer(1).counts();
  // K = 1: active = dense + router; total adds E-1 copies of the three projections
  EXPECT_EQ(rom.active_params, dense.active_params + E * D);
  EXPECT_EQ(rom.total_params, dense.total_params + (E - 1) * 3 * Di * D + E * D);
  EXPECT_DOUBLE_EQ(rom.gemm_flops, dense.gemm_flops);
  EXPECT_DOUBLE_EQ(rom.router_flops, 2.0 * D * E);
  EXPECT_DOUBLE_EQ(rom.scan_flops, dense.scan_flops);
  // the table and counts() agree on the total
  size_t layer0 = 0;
  for (const ParamInfo& i : m.table().entries())
    if (i.name.rfind(p, 0) == 0) layer0 += i.numel;
  EXPECT_EQ(int64_t(layer0), rom.total_params);
  // separate routers and all modules: table total still equals counts().total_params
  ModelConfig cfg2 = tiny_config(R"(, "layers": [{"type": "rom", "n_experts": 4, "top_k": 2, "shared_router": false,
      "experts_in": ["conv_proj", "out_proj", "x_proj", "dt_proj", "conv1d"], "weight_at": "out"}, "mamba"])");
  LanguageModel<float> m2(cfg2);
  layer0 = 0;
  for (const ParamInfo& i : m2.table().entries())
    if (i.name.rfind(p, 0) == 0) layer0 += i.numel;
  EXPECT_EQ(int64_t(layer0), m2.mixer(0).counts().total_params);
  EXPECT_EQ(m2.table().at(p + "conv_proj.weight").shape, (Shape{4, Di, D}));
  EXPECT_EQ(m2.table().at(p + "gate_proj.weight").shape, (Shape{Di, D}));
  EXPECT_EQ(m2.table().at(p + "conv1d.weight").shape, (Shape{4, Di, 1, 3}));
  EXPECT_TRUE(m2.table().find(p + "router_conv1d.weight") != nullptr);
  EXPECT_TRUE(m2.table().find(p + "router.weight") == nullptr);
}
