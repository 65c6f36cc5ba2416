// Trainer: schedule values, weight-decay exclusion, bit-exact resume after an interruption,
// divergence detection, bad options and data.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "data/prepare.h"
#include "io/file_util.h"
#include "expect_error.h"
#include "model/language_model.h"
#include "model/mixer_registry.h"
#include "model_checks.h"
#include "testing.h"
#include "train/schedule.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

std::string make_data(const std::string& tag) { return make_word_data(tag, 6000); }

ModelConfig tiny() {
  return ModelConfig::from_json(Json::parse(R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 4})"), "test");
}

TrainOptions small_opts(const std::string& data, const std::string& out) {
  TrainOptions o;
  o.data = data;
  o.out = out;
  o.max_steps = 6;
  o.batch_size = 2;
  o.seq_len = 16;
  o.grad_accum = 2;
  o.warmup_steps = 2;
  o.eval_every = 3;
  o.eval_tokens = 64;
  o.checkpoint_every = 0;
  o.log_every = 100;
  return o;
}

std::vector<std::string> loss_fields(const std::string& metrics) {
  std::istringstream in(read_file(metrics));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line);
    out.push_back(std::to_string(j.at("step").as_int()) + ":" + j.at("loss").dump() +
                  (j.has("val_loss") ? " val " + j.at("val_loss").dump() : ""));
  }
  return out;
}

}  // namespace

TEST(Schedule, WarmupThenCosine) {
  EXPECT_DOUBLE_EQ(lr_at(1, 1.0, 0.1, 10, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(10, 1.0, 0.1, 10, 110), 1.0);
  EXPECT_NEAR(lr_at(60, 1.0, 0.1, 10, 110), 0.55, 1e-12);   // half-way: (1 + 0.1) / 2
  EXPECT_NEAR(lr_at(35, 1.0, 0.1, 10, 110), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_DOUBLE_EQ(lr_at(110, 1.0, 0.1, 10, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(5, 2.0, 0.0, 0, 10), 1.0 + std::cos(M_PI * 0.5));
}

TEST(Trainer, WeightDecayExcludesALogDBiasesAndNorms) {
  LanguageModel<float> m(tiny());
  for (const ParamInfo& p : m.table().entries()) {
    const bool expect_no_decay = p.name.find("A_log") != std::string::npos ||
                                 p.name.size() >= 2 && p.name.substr(p.name.size() - 2) == ".D" ||
                                 p.name.find("bias") != std::string::npos ||
                                 p.name.find("norm") != std::string::npos;
    EXPECT_EQ(p.no_decay, expect_no_decay) << p.name;
  }
}

TEST(Trainer, ResumedRunReproducesTheUninterruptedLosses) {
  const std::string data = make_data("resume");
  const std::string a = temp_dir("run_a"), b = temp_dir("run_b");
  TrainResult ra = train_model(tiny(), small_opts(data, a));
  EXPECT_EQ(ra.last_step, 6);
  TrainOptions ob = small_opts(data, b);
  ob.halt_after = 4;  // interrupted after step 4 (between evaluations, mid-schedule)
  TrainResult rb = train_model(tiny(), ob);
  EXPECT_TRUE(rb.halted);
  EXPECT_EQ(rb.last_step, 4);
  ob.halt_after = 0;
  ob.resume = b;
  TrainResult rc = train_model(tiny(), ob);
  EXPECT_EQ(rc.last_step, 6);
  const auto la = loss_fields(a + "/metrics.jsonl"), lb = loss_fields(b + "/metrics.jsonl");
  ASSERT_EQ(la.size(), 6u);
  EXPECT_EQ(la, lb);  // bitwise: the printed doubles round-trip exactly
  // The final weights are identical too.
  EXPECT_EQ(read_file(a + "/checkpoint/model.safetensors"), read_file(b + "/checkpoint/model.safetensors"));
  EXPECT_GT(ra.unigram_entropy, 1.0);
}

TEST(Trainer, ResumeAfterMetricsWentPastTheCheckpoint) {
  // An interruption after the checkpoint but after more metric lines were written: the resumed
  // run drops those lines and rewrites them.
  const std::string data = make_data("resume2");
  const std::string a = temp_dir("run_c");
  TrainOptions o = small_opts(data, a);
  o.halt_after = 3;
  train_model(tiny(), o);
  std::ofstream(a + "/metrics.jsonl", std::ios::app) << "{\"step\": 4, \"loss\": 123}\n";
  o.halt_after = 0;
  o.resume = a;
  train_model(tiny(), o);
  const auto l = loss_fields(a + "/metrics.jsonl");
  ASSERT_EQ(l.size(), 6u);
  EXPECT_EQ(l[3].find("123"), std::string::npos);
}

TEST(Trainer, DivergenceStopsWithStepAndKeepsLastCheckpoint) {
  const std::string data = make_data("nan");
  const std::string out = temp_dir("run_nan");
  TrainOptions o = small_opts(data, out);
  o.lr = 1e30;
  o.min_lr = 1e30;
  o.warmup_steps = 0;
  o.grad_clip = 0;
  o.checkpoint_every = 1;
  o.max_steps = 50;
  try {
    train_model(tiny(), o);
    GTEST_FAIL() << "expected divergence";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("diverged at step"), std::string::npos) << msg;
  }
  EXPECT_NE(find_run_checkpoint(out), "");
}

TEST(Trainer, BadOptionsAndDataAreClearErrors) {
  TrainOptions o;
  EXPECT_THROW(o.apply_json(Json::parse(R"({"max_step": 3})"), "cfg"), Error);
  try {
    o.apply_json(Json::parse(R"({"max_step": 3})"), "cfg.json");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown train option 'max_step'"), std::string::npos);
  }
  EXPECT_THROW(o.apply_json(Json::parse(R"({"lr": "fast"})"), "cfg"), Error);
  TrainOptions bad = small_opts(temp_dir("nodata"), temp_dir("out"));
  try {
    train_model(tiny(), bad);
    GTEST_FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no train.bin"), std::string::npos) << e.what();
  }
  const std::string data = make_data("mismatch");
  TrainOptions r = small_opts(data, temp_dir("out2"));
  r.resume = temp_dir("empty");
  EXPECT_THROW(train_model(tiny(), r), Error);
}

// A layer the device cannot run fails before any work (no run directory, no data read), naming
// the layer, the device and the missing op; the same registry answers for the CLI commands.
TEST(Trainer, UnsupportedLayerOnTheDeviceFailsBeforeAnyWork) {
  const std::string dir = temp_dir("unsupported");
  const ModelConfig cfg = ModelConfig::from_json(
      Json::parse(R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 4,
                      "layers": ["mamba", {"type": "rom", "n_experts": 2, "top_k": 1}]})"), "test");
  TrainOptions o = small_opts(dir + "/no_data_here", dir + "/run");
  o.device = "cuda";
  EXPECT_ERROR_HAS(train_model(cfg, o), "layer 1: rom on cuda needs router_topk, moe_permute and grouped_matmul (cuda)");
  EXPECT_FALSE(file_exists(dir + "/run"));
  EXPECT_EQ(mixer_missing_op(cfg, cfg.layers[0], "cuda"), "");
  EXPECT_EQ(mixer_missing_op(cfg, cfg.layers[1], "cpu"), "");
  ModelConfig wide = cfg;
  wide.d_conv = 9;
  EXPECT_NE(mixer_missing_op(wide, wide.layers[0], "cuda").find("d_conv <= 8"), std::string::npos);
}
