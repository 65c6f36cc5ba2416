// Swimba mixer (DESIGN.md §3): finite-difference gradients in double over mix modes, E, K,
// expert_dt_proj and router_input; E = 1 equals the dense mixer (values and gradients);
// Δ > 0 and exp(Δ·A) ∈ (0, 1) for any routing; a bounded state over T = 4096; the scan's
// Δ-as-given mode (delta_softplus = false) used by mix=post; scan work independent of E;
// prefill + steps equal one pass; options, checkpoint names and load statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "core/check.h"
#include "model/language_model.h"
#include "model/swimba_mixer.h"
#include "ops/selective_scan.h"
#include "model_checks.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

std::string swimba_spec(int E, int K, const std::string& mix, bool expert_dt, const std::string& input,
                        const std::string& extra = "") {
  return R"({"type": "swimba", "n_experts": )" + std::to_string(E) + R"(, "top_k": )" +
         std::to_string(K) + R"(, "mix": ")" + mix + R"(", "expert_dt_proj": )" +
         (expert_dt ? "true" : "false") + R"(, "router_input": ")" + input + "\"" + extra + "}";
}

}  // namespace

// ---- gradients -------------------------------------------------------------------------------

using GradCase = std::tuple<std::string, std::pair<int, int>, bool, std::string>;  // mix, (E,K), expert_dt, input
class SwimbaGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(SwimbaGrad, MatchesFiniteDifferencesInDouble) {
  const auto& [mix, ek, expert_dt, input] = GetParam();
  // aux and z losses on, so their gradients through the router are checked too.
  ModelConfig cfg = tiny_mixer_config(swimba_spec(ek.first, ek.second, mix, expert_dt, input,
                                            R"(, "aux_coef": 0.05, "z_coef": 0.01)"));
  LanguageModel<double> m(cfg);
  randomize(m, 11);
  const idx_t B = 2, T = 5;
  std::vector<int32_t> ids = {1, 4, 7, 2, 9, 12, 0, 3, 3, 5};
  std::vector<int32_t> tg = {4, 7, 2, 9, -1, 0, 3, 3, 5, 11};
  Rng rng(5);
  std::vector<double> state = random_vector<double>(m.state_size() * B, rng);
  const LossResult r = check_gradients_by_fd(m, ids, tg, B, T, &state);
  if (ek.first > 1) EXPECT_GT(r.aux, 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, SwimbaGrad,
    ::testing::Combine(::testing::Values("pre", "post"),
                       ::testing::Values(std::make_pair(1, 1), std::make_pair(3, 1), std::make_pair(3, 2)),
                       ::testing::Bool(), ::testing::Values("u", "conv")),
    [](const ::testing::TestParamInfo<GradCase>& i) {
      return std::get<0>(i.param) + "_E" + std::to_string(std::get<1>(i.param).first) + "K" +
             std::to_string(std::get<1>(i.param).second) + (std::get<2>(i.param) ? "_expertdt" : "_shareddt") +
             "_" + std::get<3>(i.param);
    });

// ---- E = 1 is the dense mixer ----------------------------------------------------------------

using DenseCase = std::tuple<std::string, bool, std::string>;
class SwimbaE1 : public ::testing::TestWithParam<DenseCase> {};

TEST_P(SwimbaE1, EqualsDenseValuesAndGradients) {
  const auto& [mix, expert_dt, input] = GetParam();
  LanguageModel<double> dense(tiny_mixer_config("\"mamba\""));
  LanguageModel<double> sw(tiny_mixer_config(swimba_spec(1, 1, mix, expert_dt, input, R"(, "aux_coef": 0)")));
  randomize(dense, 21);
  randomize(sw, 22);  // router.weight stays random: with E = 1 its weight is always 1
  copy_by_name(sw, dense);
  expect_same_outputs_and_grads(dense, sw, 13);  // B 2, T 70: across a scan chunk
  const ParamInfo& rw = sw.table().at("backbone.layers.0.mixer.router.weight");
  for (size_t i = 0; i < rw.numel; ++i) EXPECT_EQ(sw.grads[rw.offset + i], 0.0);
}

INSTANTIATE_TEST_SUITE_P(Modes, SwimbaE1,
                         ::testing::Combine(::testing::Values("pre", "post"), ::testing::Bool(),
                                            ::testing::Values("u", "conv")));

TEST(Swimba, E1InitialisesLikeDense) {
  LanguageModel<float> dense(tiny_mixer_config("\"mamba\""));
  LanguageModel<float> sw(tiny_mixer_config(swimba_spec(1, 1, "pre", false, "u")));
  dense.init(5);
  sw.init(5);
  dense.table().visit([&](const ParamInfo& p) {
    const ParamInfo& q = sw.table().at(p.name);
    for (size_t i = 0; i < p.numel; ++i)
      ASSERT_EQ(dense.params[p.offset + i], sw.params[q.offset + i]) << p.name << "[" << i << "]";
  });
}

// ---- well-definedness and stability ----------------------------------------------------------

namespace {
struct MixerRun {
  using Bk = CpuBackend<float>;
  ModelConfig cfg;
  SwimbaMixer<Bk> mixer;
  ParamTable table;
  std::vector<float> params;
  Bk::Arena arena;
  MixerRun(const std::string& spec_json, uint64_t seed, double router_scale)
      : cfg(tiny_mixer_config(spec_json, 1)), mixer(cfg, cfg.layers[0]) {
    mixer.register_params(table, "m.");
    params.assign(table.total(), 0.f);
    mixer.init_params(params.data(), table, seed);
    Rng rng(seed, 7);
    for (auto& p : params) p += float(rng.uniform(-0.3, 0.3));  // random weights everywhere
    const ParamInfo& rw = table.at("m.router.weight");
    for (size_t i = 0; i < rw.numel; ++i) params[rw.offset + i] = float(router_scale * rng.normal());
  }
  void plan(idx_t B, idx_t T) {
    arena = Bk::Arena();
    mixer.plan_kept(arena);
    mixer.plan(arena, B, T, false);
    arena.allocate_planned();
    mixer.plan_kept(arena);
    mixer.plan(arena, B, T, false);
  }
  void forward(float* out, const float* u, idx_t B, idx_t T, float* state_out) {
    double aux = 0;
    mixer.forward(Bk::Ctx{}, out, u, ParamsRef<Bk>{params.data(), params.data()}, B, T, nullptr, state_out, &aux);
  }
};
}  // namespace

TEST(Swimba, DeltaPositiveAndDecayInUnitIntervalForAnyRouting) {
  for (const char* mix : {"pre", "post"})
    for (bool expert_dt : {false, true})
      for (double router_scale : {0.0, 1.0, 30.0}) {  // uniform, soft and near-hard routing
        MixerRun r(swimba_spec(4, 2, mix, expert_dt, "u"), 3, router_scale);
        const idx_t B = 2, T = 200, D = r.cfg.d_model, Di = r.cfg.d_inner(), N = r.cfg.d_state;
        r.plan(B, T);
        Rng rng(9);
        std::vector<float> u = random_vector<float>(B * T * D, rng, -3, 3), out(B * T * D);
        r.forward(out.data(), u.data(), B, T, nullptr);
        std::vector<float> delta(B * T * Di);
        r.mixer.effective_delta({}, delta.data(), r.params.data(), B * T);
        const float* A_log = r.params.data() + r.table.at("m.A_log").offset;
        for (idx_t i = 0; i < B * T * Di; ++i) {
          ASSERT_GT(delta[i], 0.f) << mix << " token-channel " << i;
          const idx_t c = i % Di;
          for (idx_t n = 0; n < N; ++n) {
            const float a = std::exp(delta[i] * -std::exp(A_log[c * N + n]));
            ASSERT_GT(a, 0.f);
            ASSERT_LT(a, 1.f);
          }
        }
      }
}

TEST(Swimba, StateStaysBoundedOverALongRandomInput) {
  // h_T = Σ_s (Π_{r>s} exp(Δ_r A)) Δ_s B_s x_s, so |h_T[c,n]| ≤ β · exp(|A| Δmax) / |A| with
  // β = max_t |B_t[n] · xc_t[c]| (the Δ-weighted decay sum is bounded by an integral of e^{Ax}).
  for (const char* mix : {"pre", "post"}) {
    MixerRun r(swimba_spec(4, 2, mix, true, "u"), 4, 1.0);
    const idx_t B = 1, T = 4096, D = r.cfg.d_model, Di = r.cfg.d_inner(), N = r.cfg.d_state;
    const idx_t R = r.cfg.resolved_dt_rank(), XW = R + 2 * N, Kc = r.cfg.d_conv;
    r.plan(B, T);
    Rng rng(10);
    std::vector<float> u = random_vector<float>(B * T * D, rng, -3, 3), out(B * T * D);
    std::vector<float> state(r.mixer.state_size() * B, 0.f);
    r.forward(out.data(), u.data(), B, T, state.data());
    std::vector<float> delta(T * Di);
    r.mixer.effective_delta({}, delta.data(), r.params.data(), T);
    const float* xc = r.mixer.conv_output();
    const float* xm = r.mixer.mixed_streams();
    const float* A_log = r.params.data() + r.table.at("m.A_log").offset;
    const float* h = state.data() + Di * (Kc - 1);
    for (idx_t c = 0; c < Di; ++c)
      for (idx_t n = 0; n < N; ++n) {
        double beta = 0, dmax = 0;
        for (idx_t t = 0; t < T; ++t) {
          beta = std::max(beta, std::fabs(double(xm[t * XW + R + n]) * xc[t * Di + c]));
          dmax = std::max(dmax, double(delta[t * Di + c]));
        }
        const double A = std::exp(double(A_log[c * N + n]));
        const double bound = beta * std::exp(A * dmax) / A;
        ASSERT_TRUE(std::isfinite(h[c * N + n]));
        EXPECT_LE(std::fabs(h[c * N + n]), bound * (1 + 1e-4)) << mix << " c=" << c << " n=" << n;
      }
    for (float v : out) ASSERT_TRUE(std::isfinite(v));
  }
}

// ---- the scan with Δ given directly (mix=post) ------------------------------------------------

TEST(SelectiveScan, DeltaAsGivenMatchesFiniteDifferences) {
  const idx_t B = 2, T = kScanChunk + 5, Di = 3, N = 4;
  Rng rng(12);
  auto u = random_vector<double>(B * T * Di, rng), z = random_vector<double>(B * T * Di, rng);
  auto delta = random_vector<double>(B * T * Di, rng, 0.01, 0.5);  // Δ > 0 as the caller guarantees
  auto Bm = random_vector<double>(B * T * N, rng), Cm = random_vector<double>(B * T * N, rng);
  auto A = random_vector<double>(Di * N, rng, -2.0, -0.2), Dv = random_vector<double>(Di, rng);
  auto bias = random_vector<double>(Di, rng, 0.0, 0.1), h0 = random_vector<double>(B * Di * N, rng);
  auto w = random_vector<double>(B * T * Di, rng);
  std::vector<double> out(B * T * Di), cs(B * scan_num_chunks(T) * Di * N);
  auto make = [&] {
    ScanParams<double> p;
    p.B = B; p.T_ = T; p.Di = Di; p.N = N;
    p.u = u.data(); p.u_ld = Di; p.delta = delta.data(); p.delta_ld = Di;
    p.Bm = Bm.data(); p.B_ld = N; p.Cm = Cm.data(); p.C_ld = N; p.z = z.data(); p.z_ld = Di;
    p.A = A.data(); p.D = Dv.data(); p.delta_bias = bias.data(); p.h0 = h0.data();
    p.delta_softplus = false;
    p.out = out.data(); p.out_ld = Di; p.chunk_states = cs.data();
    return p;
  };
  auto loss = [&] {
    cpu::selective_scan_forward(make());
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += w[i] * out[i];
    return s;
  };
  // Reference for one element: Δ = delta + bias exactly (no softplus).
  {
    ScanParams<double> p = make();
    p.h0 = nullptr;
    cpu::selective_scan_forward(p);
    const double d0 = delta[0] + bias[0];
    double y = Dv[0] * u[0];
    for (idx_t n = 0; n < N; ++n) y += Cm[n] * d0 * Bm[n] * u[0];
    y *= z[0] / (1 + std::exp(-z[0]));
    EXPECT_NEAR(out[0], y, 1e-14);
  }
  loss();
  std::vector<double> du(u.size()), ddelta(u.size()), dB(Bm.size()), dC(Cm.size()), dz(u.size());
  std::vector<double> dA(A.size(), 0.0), dD(Di, 0.0), dbias(Di, 0.0), dh0(h0.size());
  ScanGrads<double> g;
  g.dout = w.data(); g.dout_ld = Di;
  g.du = du.data(); g.du_ld = Di; g.ddelta = ddelta.data(); g.ddelta_ld = Di;
  g.dB = dB.data(); g.dB_ld = N; g.dC = dC.data(); g.dC_ld = N; g.dz = dz.data(); g.dz_ld = Di;
  g.dA = dA.data(); g.dD = dD.data(); g.ddelta_bias = dbias.data(); g.dh0 = dh0.data();
  cpu::selective_scan_backward(g, make());
  EXPECT_EQ(compare_gradients(ddelta, numeric_gradient(delta, loss), 1e-7, "delta"), "");
  EXPECT_EQ(compare_gradients(dbias, numeric_gradient(bias, loss), 1e-7, "delta_bias"), "");
  EXPECT_EQ(compare_gradients(du, numeric_gradient(u, loss), 1e-7, "u"), "");
  EXPECT_EQ(compare_gradients(dB, numeric_gradient(Bm, loss), 1e-7, "B"), "");
  EXPECT_EQ(compare_gradients(dA, numeric_gradient(A, loss), 1e-7, "A"), "");
  EXPECT_EQ(compare_gradients(dh0, numeric_gradient(h0, loss), 1e-7, "h0"), "");
}

// ---- accounting ------------------------------------------------------------------------------

TEST(Swimba, ScanWorkDoesNotGrowWithExperts) {
  ModelConfig cfg = tiny_mixer_config("\"mamba\"", 1);
  MixerCounts dense = LanguageModel<float>(cfg).mixer(0).counts();
  MixerCounts prev;
  for (int E : {1, 2, 4, 8, 16}) {
    for (bool expert_dt : {false, true}) {
      ModelConfig c = tiny_mixer_config(swimba_spec(E, std::min(E, 2), "pre", expert_dt, "u"), 1);
      LanguageModel<float> m(c);
      MixerCounts k = m.mixer(0).counts();
      EXPECT_EQ(k.scan_flops, dense.scan_flops) << "E=" << E;
      if (!expert_dt && E >= 2) {
        if (prev.total_params) {
          EXPECT_GT(k.total_params, prev.total_params);  // more experts, more parameters ...
          // ... but the same active ones except the router row per expert
          EXPECT_EQ(k.active_params - prev.active_params, (E - E / 2) * c.d_model);
          EXPECT_EQ(k.gemm_flops, prev.gemm_flops);
        }
        prev = k;
      }
      // Total parameters counted = the parameter table's size for the mixer.
      size_t table_n = 0;
      m.table().visit([&](const ParamInfo& p) {
        if (p.name.find(".mixer.") != std::string::npos) table_n += p.numel;
      });
      EXPECT_EQ(size_t(k.total_params), table_n);
    }
  }
}

// ---- recurrent step --------------------------------------------------------------------------

TEST(Swimba, PrefillAndStepsEqualOnePass) {
  for (const char* mix : {"pre", "post"}) {
    ModelConfig cfg = ModelConfig::from_json(
        Json::parse(std::string(R"({"d_model": 8, "n_layer": 3, "vocab_size": 13, "d_state": 3, "d_conv": 3,
            "layers": [)") + swimba_spec(3, 2, mix, true, "conv") + ", \"mamba\", " +
                    swimba_spec(4, 1, mix, false, "u") + "]}"),
        "test");
    LanguageModel<double> m(cfg);
    randomize(m, 3);
    EXPECT_LT(prefill_steps_vs_one_pass(m, 2, 150, 70, 13), 1e-12) << mix;  // crosses scan chunks
  }
}

// ---- configuration, checkpoint names, statistics ---------------------------------------------

TEST(Swimba, CheckpointNamesAndShapes) {
  LanguageModel<float> m(tiny_mixer_config(swimba_spec(3, 2, "pre", true, "conv"), 1));
  const std::string p = "backbone.layers.0.mixer.";
  const idx_t E = 3, Di = 16, D = 8, N = 3, R = 1;
  EXPECT_EQ(m.table().at(p + "x_proj.weight").shape, (Shape{E, R + 2 * N, Di}));
  EXPECT_EQ(m.table().at(p + "dt_proj.weight").shape, (Shape{E, Di, R}));
  EXPECT_EQ(m.table().at(p + "dt_proj.bias").shape, (Shape{Di}));
  EXPECT_EQ(m.table().at(p + "A_log").shape, (Shape{Di, N}));
  EXPECT_EQ(m.table().at(p + "D").shape, (Shape{Di}));
  EXPECT_EQ(m.table().at(p + "in_proj.weight").shape, (Shape{2 * Di, D}));
  EXPECT_EQ(m.table().at(p + "out_proj.weight").shape, (Shape{D, Di}));
  EXPECT_EQ(m.table().at(p + "router.weight").shape, (Shape{E, Di}));  // routes on xc
  LanguageModel<float> m2(tiny_mixer_config(swimba_spec(3, 2, "pre", false, "u"), 1));
  EXPECT_EQ(m2.table().at(p + "dt_proj.weight").shape, (Shape{Di, R}));
  EXPECT_EQ(m2.table().at(p + "router.weight").shape, (Shape{E, D}));
}

TEST(Swimba, DefaultsAndOptionErrors) {
  ModelConfig cfg = tiny_mixer_config("\"swimba\"", 1);
  SwimbaMixer<CpuBackend<float>> d(cfg, cfg.layers[0]);
  EXPECT_EQ(d.E, 8);
  EXPECT_EQ(d.K, 2);
  EXPECT_FALSE(d.mix_post);
  EXPECT_FALSE(d.expert_dt_proj);
  EXPECT_FALSE(d.route_on_conv);
  EXPECT_TRUE(d.router().opt.normalize_topk);
  EXPECT_DOUBLE_EQ(d.router().opt.aux_coef, 0.01);
  EXPECT_DOUBLE_EQ(d.router().opt.z_coef, 0.0);
  auto err = [](const std::string& spec) {
    try {
      LanguageModel<float> m(tiny_mixer_config(spec, 1));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"type": "swimba", "mixx": "pre"})").find("unknown option 'mixx'"), std::string::npos);
  EXPECT_NE(err(R"({"type": "swimba", "mix": "mid"})").find("'mix' must be \"pre\" or \"post\""), std::string::npos);
  EXPECT_NE(err(R"({"type": "swimba", "router_input": "x"})").find("router_input"), std::string::npos);
  EXPECT_NE(err(R"({"type": "swimba", "n_experts": 2, "top_k": 3})").find("top_k"), std::string::npos);
  EXPECT_NE(err(R"({"type": "swimba", "expert_dt_proj": 1})").find("expert_dt_proj"), std::string::npos);
}

TEST(Swimba, StatsReportPerExpertLoad) {
  LanguageModel<float> m(tiny_mixer_config(swimba_spec(4, 2, "pre", false, "u"), 2));
  m.init(1);
  const idx_t B = 2, T = 33;
  Rng rng(2);
  std::vector<int32_t> ids(B * T), tg(B * T);
  for (auto& x : ids) x = int32_t(rng.below(13));
  for (auto& x : tg) x = int32_t(rng.below(13));
  m.prepare(B, T, false);
  const LossResult r = m.loss(ids.data(), tg.data(), B, T, false);
  Json s = m.stats();
  ASSERT_TRUE(s.is_array());
  ASSERT_EQ(s.size(), 2u);
  double aux = 0;
  for (const Json& layer : s.as_array()) {
    const Json::Array& load = layer.at("load").as_array();
    ASSERT_EQ(load.size(), 4u);
    double sum = 0;
    for (const Json& f : load) sum += f.as_number();
    EXPECT_NEAR(sum, 1.0, 1e-12);
    EXPECT_EQ(layer.at("tokens").as_int(), B * T);
    aux += layer.at("aux_loss").as_number() + layer.at("z_loss").as_number();
  }
  EXPECT_NEAR(aux, r.aux, 1e-9);
}
