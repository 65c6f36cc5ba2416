// Dense Mamba mixer and language model: gradients against finite differences in double,
// chunked prefill with carried state equals one pass, strict config parsing, initialisation.
#include <gtest/gtest.h>

#include <cmath>

#include "core/check.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/language_model.h"
#include "model_checks.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

ModelConfig tiny_config(const std::string& extra = "") {
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": 2, "vocab_size": 13, "d_state": 3, "d_conv": 3,
                     "expand": 2, "pad_vocab_size_multiple": 8)" + extra + "}"),
      "test");
}

}  // namespace

TEST(LanguageModel, GradientsMatchFiniteDifferencesInDouble) {
  ModelConfig cfg = tiny_config();
  LanguageModel<double> m(cfg);
  randomize(m, 1);
  const idx_t B = 2, T = 5;
  std::vector<int32_t> ids = {1, 4, 7, 2, 9, 12, 0, 3, 3, 5};
  std::vector<int32_t> tg = {4, 7, 2, 9, -1, 0, 3, 3, 5, 11};
  const double L0 = check_gradients_by_fd(m, ids, tg, B, T).total();
  EXPECT_GT(L0, 0.0);
}

TEST(LanguageModel, GradientsWithInitialStateMatchFiniteDifferences) {
  ModelConfig cfg = tiny_config();
  LanguageModel<double> m(cfg);
  randomize(m, 2);
  const idx_t B = 1, T = 4;
  std::vector<int32_t> ids = {3, 1, 4, 1}, tg = {1, 4, 1, 5};
  Rng rng(5);
  std::vector<double> state = random_vector<double>(m.state_size() * B, rng);
  check_gradients_by_fd(m, ids, tg, B, T, &state);
}

TEST(LanguageModel, ChunkedPrefillAndStepsEqualOnePass) {
  ModelConfig cfg = tiny_config();
  LanguageModel<double> m(cfg);
  randomize(m, 3);
  EXPECT_LT(prefill_steps_vs_one_pass(m, 2, 150, 70, 13), 1e-12);  // crosses scan chunks
}

TEST(LanguageModel, InitialisationFollowsMambaConventions) {
  ModelConfig cfg = tiny_config();
  LanguageModel<float> m(cfg);
  m.init(7);
  const std::string p = "backbone.layers.1.mixer.";
  const float* A = m.param(p + "A_log");
  EXPECT_FLOAT_EQ(A[0], 0.0f);
  EXPECT_FLOAT_EQ(A[2], std::log(3.0f));
  EXPECT_FLOAT_EQ(m.param(p + "D")[5], 1.0f);
  EXPECT_FLOAT_EQ(m.param("backbone.norm_f.weight")[3], 1.0f);
  const ParamInfo& bias = m.table().at(p + "dt_proj.bias");
  for (size_t i = 0; i < bias.numel; ++i) {
    double dt = std::log1p(std::exp(double(m.params[bias.offset + i])));  // softplus(bias) = dt
    EXPECT_GE(dt, 1e-3 * 0.999);
    EXPECT_LE(dt, 1e-1 * 1.001);
  }
  // out_proj bound is (1/sqrt(Di)) / sqrt(n_layer); in_proj's is 1/sqrt(D)
  const ParamInfo& op = m.table().at(p + "out_proj.weight");
  float mx = 0;
  for (size_t i = 0; i < op.numel; ++i) mx = std::max(mx, std::fabs(m.params[op.offset + i]));
  EXPECT_LE(mx, 1.0 / std::sqrt(16.0) / std::sqrt(2.0));
  EXPECT_GT(mx, 0.5 / std::sqrt(16.0) / std::sqrt(2.0));
  // Same seed → same parameters; another seed → different.
  LanguageModel<float> m2(cfg), m3(cfg);
  m2.init(7);
  m3.init(8);
  EXPECT_EQ(m.params, m2.params);
  EXPECT_NE(m.params, m3.params);
}

TEST(ModelConfig, RejectsUnknownAndOutOfRangeFields) {
  auto err = [](const std::string& text) {
    try {
      ModelConfig::from_json(Json::parse(text), "cfg.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"d_model": 8, "n_layer": 1, "vocab_size": 10, "d_modle": 3})").find("unknown field 'd_modle'"), std::string::npos);
  EXPECT_NE(err(R"({"d_model": 0, "n_layer": 1, "vocab_size": 10})").find("'d_model' must be in"), std::string::npos);
  EXPECT_NE(err(R"({"d_model": 8, "n_layer": 1, "vocab_size": 10, "d_state": 1000})").find("d_state"), std::string::npos);
  EXPECT_NE(err(R"({"d_model": 8.5, "n_layer": 1, "vocab_size": 10})").find("must be an integer"), std::string::npos);
  EXPECT_NE(err(R"({"n_layer": 1, "vocab_size": 10})").find("d_model"), std::string::npos);
  EXPECT_NE(err(R"({"d_model": 8, "n_layer": 2, "vocab_size": 10, "layers": ["mamba"]})").find("expected n_layer = 2"), std::string::npos);
  EXPECT_NE(err(R"({"d_model": 8, "n_layer": 1, "vocab_size": 10, "mixer": "transformer"})").find("unknown mixer type"), std::string::npos);
  try {
    LanguageModel<float> m(ModelConfig::from_json(
        Json::parse(R"({"d_model": 8, "n_layer": 1, "vocab_size": 10, "mixer": {"type": "mamba", "foo": 1}})"), "cfg.json"));
    ADD_FAILURE() << "unknown mixer option accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown option 'foo'"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, PadsVocabularyAndResolvesDtRank) {
  ModelConfig c = tiny_config();
  EXPECT_EQ(c.padded_vocab(), 16);
  EXPECT_EQ(c.resolved_dt_rank(), 1);
  EXPECT_EQ(c.d_inner(), 16);
  Json ck = c.to_checkpoint_json();
  EXPECT_EQ(ck.at("model_type").as_string(), "mamba");
  EXPECT_EQ(ck.at("hidden_size").as_int(), 8);
  EXPECT_EQ(ck.at("time_step_rank").as_int(), 1);
  EXPECT_EQ(ck.at("vocab_size").as_int(), 16);
  ModelConfig back = ModelConfig::from_checkpoint_json(ck, "config.json");
  EXPECT_EQ(back.to_json().dump(), c.to_json().dump());
}
