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
#include "train/train_backend.h"
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
                      "layers": ["mamba", {"type": "rom", "n_experts": 40, "top_k": 33}]})"), "test");
  TrainOptions o = small_opts(dir + "/no_data_here", dir + "/run");
  o.device = "cuda";
  EXPECT_ERROR_HAS(train_model(cfg, o), "layer 1: rom on cuda needs router_topk with top_k 33 (cuda: top_k <= 32)");
  EXPECT_FALSE(file_exists(dir + "/run"));
  EXPECT_EQ(mixer_missing_op(cfg, cfg.layers[0], "cuda"), "");
  EXPECT_EQ(mixer_missing_op(cfg, cfg.layers[1], "cpu"), "");
  ModelConfig wide = cfg;
  wide.d_conv = 9;
  EXPECT_NE(mixer_missing_op(wide, wide.layers[0], "cuda").find("d_conv <= 8"), std::string::npos);
  // Every MoE mixer runs on cuda within its kernels' limits; RoM's expert conv1d has its own.
  const ModelConfig moe = ModelConfig::from_json(
      Json::parse(R"({"d_model": 16, "n_layer": 4, "vocab_size": 256, "d_state": 4,
                      "layers": [{"type": "rom", "n_experts": 8, "top_k": 2}, {"type": "swimba"},
                                 {"type": "separated_moe_ssm", "n_experts": 4},
                                 {"type": "rom", "experts_in": ["conv_proj", "gate_proj", "out_proj", "conv1d"]}]})"),
      "test");
  for (int l = 0; l < 4; ++l) EXPECT_EQ(mixer_missing_op(moe, moe.layers[l], "cuda"), "") << l;
  ModelConfig wide_moe = moe;
  wide_moe.d_conv = 9;
  EXPECT_EQ(mixer_missing_op(wide_moe, wide_moe.layers[3], "cuda"), "expert_conv1d with d_conv 9 (cuda: d_conv <= 8)");
}

// --pack-documents needs an end-of-text id and a device whose ops reset at it; both are checked
// before the run directory is touched.
TEST(Trainer, PackDocumentsIsRefusedWithoutSeparatorOrSupportBeforeAnyWork) {
  const std::string dir = temp_dir("pack_refused");
  const std::string data = make_data("pack_byte_data");  // byte tokenizer: no end-of-text id
  TrainOptions o = small_opts(data, dir + "/run");
  o.pack_documents = true;
  EXPECT_ERROR_HAS(train_model(tiny(), o), "has no end-of-text id");
  EXPECT_FALSE(file_exists(dir + "/run"));
  // The layer and device answers the trainer asks (the data check above comes first).
  EXPECT_EQ(train_seq_idx_missing("cpu", tiny()), "");
  const ModelConfig conv_experts = ModelConfig::from_json(
      Json::parse(R"({"d_model": 16, "n_layer": 1, "vocab_size": 256, "d_state": 4,
                      "layers": [{"type": "rom", "experts_in": ["conv_proj", "gate_proj", "out_proj", "conv1d"]}]})"),
      "test");
  EXPECT_NE(train_seq_idx_missing("cpu", conv_experts).find("layer 0 (rom)"), std::string::npos);
#ifdef MOESSM_CUDA
  EXPECT_EQ(train_seq_idx_missing("cuda", tiny()), "");  // the CUDA conv and scan kernels take it
  EXPECT_NE(train_seq_idx_missing("cuda", conv_experts).find("layer 0 (rom)"), std::string::npos);
#else
  EXPECT_NE(train_seq_idx_missing("cuda", tiny()).find("no CUDA backend"), std::string::npos);
#endif
}

// ---- run directories are never silently damaged -------------------------------------------

namespace {

std::string tiny_cfg_file(const std::string& dir, const std::string& extra = "") {
  const std::string path = dir + "/cfg.json";
  write_file_atomic(path, R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 4)" + extra +
                              R"(, "train": {"max_steps": 4, "batch_size": 2, "seq_len": 16, "warmup_steps": 1,
                                "eval_every": 0, "eval_tokens": 64, "checkpoint_every": 2, "log_every": 100}})");
  return path;
}

}  // namespace

TEST(RunDir, InitAndTrainOntoAnExistingRunNeedOverwrite) {
  const std::string dir = temp_dir("overwrite");
  const std::string cfg = tiny_cfg_file(dir), data = make_data("overwrite_data");
  std::string out;
  ASSERT_EQ(run_cli_argv({"init", "--config", cfg, "--out", dir + "/m"}, &out), 0) << out;
  EXPECT_EQ(run_cli_argv({"init", "--config", cfg, "--out", dir + "/m", "--seed", "4"}, &out), 1);
  EXPECT_NE(out.find("already holds a checkpoint (config.json); pass --overwrite"), std::string::npos) << out;
  ASSERT_EQ(run_cli_argv({"init", "--config", cfg, "--out", dir + "/m", "--seed", "4", "--overwrite"}, &out), 0) << out;

  const std::string run = dir + "/run";
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", run}, &out), 0) << out;
  const std::string model = read_file(run + "/checkpoint/model.safetensors");
  // A second run into it is refused and leaves it untouched; init onto it too.
  EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", run, "--seed", "9"}, &out), 1);
  EXPECT_NE(out.find("already holds a training run (metrics.jsonl); pass --overwrite to replace it, or --resume"),
            std::string::npos) << out;
  EXPECT_EQ(run_cli_argv({"init", "--config", cfg, "--out", run}, &out), 1);
  EXPECT_NE(out.find("already holds a training run"), std::string::npos) << out;
  EXPECT_EQ(read_file(run + "/checkpoint/model.safetensors"), model);
  // Train onto an init'ed checkpoint is refused as well.
  EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/m"}, &out), 1);
  EXPECT_NE(out.find("already holds a checkpoint (config.json)"), std::string::npos) << out;
  // With --overwrite the old run goes and the new one is complete.
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", run, "--seed", "9", "--overwrite"}, &out), 0)
      << out;
  EXPECT_NE(read_file(run + "/checkpoint/model.safetensors"), model);
  EXPECT_EQ(list_dir(run), (std::vector<std::string>{"checkpoint", "checkpoint-4", "metrics.jsonl"}));
  EXPECT_EQ(loss_fields(run + "/metrics.jsonl").size(), 4u);
}

TEST(RunDir, TornLastMetricsLineIsDroppedOnResume) {
  const std::string data = make_data("torn");
  const std::string a = temp_dir("torn_a"), b = temp_dir("torn_b");
  train_model(tiny(), small_opts(data, a));
  TrainOptions o = small_opts(data, b);
  o.halt_after = 4;
  train_model(tiny(), o);
  std::ofstream(b + "/metrics.jsonl", std::ios::app) << "{\"step\": 5, \"loss\": 4.1";  // a crash mid-append
  o.halt_after = 0;
  o.resume = b;
  ::testing::internal::CaptureStderr();
  train_model(tiny(), o);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("dropping a torn last line"), std::string::npos) << err;
  EXPECT_EQ(loss_fields(b + "/metrics.jsonl"), loss_fields(a + "/metrics.jsonl"));
  EXPECT_EQ(read_file(b + "/checkpoint/model.safetensors"), read_file(a + "/checkpoint/model.safetensors"));
  // A damaged line before the last one is an error naming the line.
  std::string text = read_file(b + "/metrics.jsonl");
  write_file_atomic(b + "/metrics.jsonl", "{\"step\": 1, \"lo\n" + text);
  o.max_steps = 7;
  EXPECT_ERROR_HAS(train_model(tiny(), o), "metrics.jsonl: line 1 of 7 is not a metrics record");
}

TEST(RunDir, ResumeWithChangedOptionsNamesEachField) {
  const std::string data = make_data("changed");
  const std::string run = temp_dir("changed_run");
  TrainOptions o = small_opts(data, run);
  o.halt_after = 2;
  train_model(tiny(), o);
  TrainOptions r = o;
  r.halt_after = 0;
  r.resume = run;
  r.batch_size = 4;
  r.lr = 1e-3;
  r.min_lr = 1e-4;
  try {
    train_model(tiny(), r);
    GTEST_FAIL() << "expected a refusal";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("batch_size: checkpoint 2, now 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("lr: checkpoint 0.003, now 0.001"), std::string::npos) << msg;
    EXPECT_NE(msg.find("min_lr: checkpoint 0.0003, now 0.0001"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("seq_len"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--allow-changed-options"), std::string::npos) << msg;
  }
  EXPECT_EQ(find_run_checkpoint(run), run + "/checkpoint-2");  // untouched
  // Cadences, max_steps and halt_after may change freely; other changes go with the flag.
  TrainOptions free = o;
  free.resume = run;
  free.halt_after = 1;
  free.max_steps = 8;
  free.eval_every = 1;
  free.log_every = 3;
  free.checkpoint_every = 1;
  EXPECT_EQ(train_model(tiny(), free).last_step, 3);
  r.allow_changed_options = true;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(train_model(tiny(), r).last_step, 6);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("continuing with changed options"), std::string::npos) << err;
  EXPECT_NE(err.find("batch_size: checkpoint 2, now 4"), std::string::npos) << err;
}

TEST(RunDir, ResumeWithAChangedModelConfigNamesTheField) {
  const std::string data = make_data("changed_cfg");
  const std::string run = temp_dir("changed_cfg_run");
  TrainOptions o = small_opts(data, run);
  o.halt_after = 2;
  train_model(tiny(), o);
  o.halt_after = 0;
  o.resume = run;
  ModelConfig wide = ModelConfig::from_json(Json::parse(R"({"d_model": 24, "n_layer": 2, "vocab_size": 256, "d_state": 4})"), "t");
  EXPECT_ERROR_HAS(train_model(wide, o), "the model config differs from the checkpoint's: d_model: checkpoint 16, config 24");
  ModelConfig state = ModelConfig::from_json(Json::parse(R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 8})"), "t");
  EXPECT_ERROR_HAS(train_model(state, o), "d_state: checkpoint 4, config 8");
  EXPECT_EQ(first_config_difference(Json::parse(R"({"a": [1, {"k": 2}]})"), Json::parse(R"({"a": [1, {"k": 3}]})")),
            "a[1].k: checkpoint 2, config 3");
  EXPECT_EQ(first_config_difference(Json::parse(R"({"a": 1})"), Json::parse(R"({"a": 1, "b": 2})")),
            "b: checkpoint (absent), config 2");
}

TEST(RunDir, ResumeNeedsNothingButTheRunAndChecksTheState) {
  const std::string dir = temp_dir("resume_only");
  const std::string cfg = tiny_cfg_file(dir), data = make_data("resume_only_data");
  std::string out;
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/a"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/b", "--halt-after", "1"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"train", "--resume", dir + "/b"}, &out), 0) << out;
  EXPECT_EQ(loss_fields(dir + "/a/metrics.jsonl"), loss_fields(dir + "/b/metrics.jsonl"));
  EXPECT_EQ(read_file(dir + "/a/checkpoint/model.safetensors"), read_file(dir + "/b/checkpoint/model.safetensors"));
  // A config that differs from the run's model is refused naming the field.
  const std::string other = temp_dir("resume_only_cfg");
  EXPECT_EQ(run_cli_argv({"train", "--resume", dir + "/b", "--config", tiny_cfg_file(other, R"(, "expand": 3)"),
                          "--max-steps", "6"}, &out), 1);
  EXPECT_NE(out.find("expand: checkpoint 2, config 3"), std::string::npos) << out;
  // A trainer state with a negative step is refused naming the field.
  ASSERT_EQ(run_cli_argv({"train", "--resume", dir + "/b", "--max-steps", "6", "--halt-after", "1"}, &out), 0) << out;
  const std::string sp = find_run_checkpoint(dir + "/b") + "/trainer_state.json";
  Json st = Json::parse_file(sp);
  st.set("step", -3);
  write_file_atomic(sp, st.dump(2));
  EXPECT_EQ(run_cli_argv({"train", "--resume", dir + "/b"}, &out), 1);
  EXPECT_NE(out.find("trainer_state.json: step must be a non-negative integer, found -3"), std::string::npos) << out;
}

TEST(RunDir, EveryOptionParsesTheSameFromTheCommandLineAndTheConfig) {
  const std::string dir = temp_dir("parity");
  const std::string cfg = tiny_cfg_file(dir), data = make_data("parity_data");
  std::string out;
  const std::string run = dir + "/run";
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", run, "--max-steps", "2"}, &out), 0) << out;
  const TrainOptions defaults;
  for (int i = 0; i < kNumTrainOptions; ++i) {
    const TrainOptionSpec& s = kTrainOptions[i];
    SCOPED_TRACE(s.name);
    // A value of the option's type that differs from the default (the run for resume).
    std::string text;
    Json value;
    switch (s.member.index()) {
      case 0: text = std::string(s.name) == "resume" ? run : std::string(s.name) == "device" ? "cuda" : dir + "/x y"; value = Json(text); break;
      case 1: text = "77"; value = Json(int64_t(77)); break;
      case 2: text = "0.25"; value = Json(0.25); break;
      default: value = Json(true); break;
    }
    std::string flag = s.name;
    for (char& c : flag) if (c == '_') c = '-';
    std::vector<std::string> cli = {"train", "--config", cfg, "--print-options", "--" + flag};
    if (!s.is_flag()) cli.push_back(text);
    std::string from_cli, from_cfg;
    ASSERT_EQ(run_cli_argv(cli, &from_cli), 0) << from_cli;
    Json c = Json::parse_file(cfg);
    Json train = c.at("train");
    train.set(s.name, value);
    c.set("train", train);
    const std::string cfg2 = dir + "/cfg_" + s.name + ".json";
    write_file_atomic(cfg2, c.dump());
    ASSERT_EQ(run_cli_argv({"train", "--config", cfg2, "--print-options"}, &from_cfg), 0) << from_cfg;
    EXPECT_EQ(from_cli, from_cfg);
    EXPECT_EQ(Json::parse(from_cli).at(s.name), value) << from_cli;
    EXPECT_NE(s.get(defaults), value);
  }
  // The reported failure: --halt-after was parsed as text.
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--print-options", "--halt-after", "50"}, &out), 0) << out;
  EXPECT_EQ(Json::parse(out).at("halt_after").as_int(), 50);
  EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--print-options", "--halt-after", "5x"}, &out), 1);
  EXPECT_NE(out.find("--halt-after expects an integer, found '5x'"), std::string::npos) << out;
  EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--print-options", "--lr", "fast"}, &out), 1);
  EXPECT_NE(out.find("--lr expects a number, found 'fast'"), std::string::npos) << out;
}

TEST(RunDir, NonFiniteAndOverflowingOptionsAreRefused) {
  const std::string dir = temp_dir("nonfinite");
  const std::string cfg = tiny_cfg_file(dir), data = make_data("nonfinite_data");
  std::string out;
  for (const char* bad : {"inf", "nan", "-inf"}) {
    EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/run", "--lr", bad}, &out), 1);
    EXPECT_NE(out.find("train: lr must be a finite number"), std::string::npos) << out;
  }
  EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/run", "--beta2", "nan"}, &out), 1);
  EXPECT_NE(out.find("train: beta2 must be a finite number"), std::string::npos) << out;
  EXPECT_FALSE(file_exists(dir + "/run"));
  TrainOptions o = small_opts(data, dir + "/run2");
  o.batch_size = int64_t(1) << 40;
  o.seq_len = int64_t(1) << 40;  // the product overflows int64
  EXPECT_ERROR_HAS(train_model(tiny(), o), "batch_size × seq_len (1099511627776 × 1099511627776) exceeds the limit");
  o.batch_size = 1 << 15;
  o.seq_len = 1 << 15;
  o.grad_accum = int64_t(1) << 62;
  EXPECT_ERROR_HAS(train_model(tiny(), o), "batch_size × seq_len × grad_accum");
  EXPECT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/run", "--seed",
                          "99999999999999999999"}, &out), 1);
  EXPECT_NE(out.find("out of the range of a 64-bit integer"), std::string::npos) << out;
  EXPECT_FALSE(file_exists(dir + "/run2"));
}

// Error messages carry their internal source tag only with --verbose; silent misconfigurations
// (warm-up longer than the run, a model vocabulary larger than the data's) are warned about.
TEST(Trainer, ErrorTagsOnlyWithVerboseAndMisconfigurationWarnings) {
  std::string out;
  EXPECT_EQ(run_cli("init --config /nonexistent/cfg.json --out /nonexistent/x", &out), 1);
  EXPECT_NE(out.find("/nonexistent/cfg.json"), std::string::npos) << out;
  EXPECT_EQ(out.find(".cpp:"), std::string::npos) << out;
  EXPECT_EQ(run_cli("init --config /nonexistent/cfg.json --out /nonexistent/x --verbose", &out), 1);
  EXPECT_NE(out.find(".cpp:"), std::string::npos) << out;

  const std::string data = make_data("warnings"), dir = temp_dir("warnings");
  write_file_atomic(dir + "/cfg.json", R"({"d_model": 16, "n_layer": 1, "vocab_size": 300, "d_state": 4})");
  ASSERT_EQ(run_cli("train --config " + dir + "/cfg.json --data " + data + " --out " + dir + "/run --max-steps 2 "
                    "--warmup-steps 5 --batch-size 2 --seq-len 16 --eval-tokens 64", &out), 0) << out;
  EXPECT_NE(out.find("warning: warmup_steps 5 >= max_steps 2"), std::string::npos) << out;
  EXPECT_NE(out.find("warning: the data's vocabulary has 256 ids but the model's vocab_size is 300: 44 embedding rows"),
            std::string::npos) << out;
}
