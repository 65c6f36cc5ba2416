// Checkpoints and the inspection commands: round trips, and every kind of bad input gives an
// error naming the file / tensor / field with a non-zero exit and no crash.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/check.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "expect_error.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

std::string cfg_path() { return source_dir() + "/configs/tiny_dense.json"; }

std::string make_checkpoint(const std::string& tag) {
  const std::string dir = temp_dir(tag);
  std::string out;
  EXPECT_EQ(run_cli("init --config " + cfg_path() + " --out " + dir + "/m --seed 3", &out), 0) << out;
  return dir + "/m";
}

// Rewrites model.safetensors of `dir` through an edit of its tensors.
void rewrite(const std::string& dir,
             const std::function<void(SafetensorsWriter&, const SafetensorsFile&)>& edit) {
  const std::string path = dir + "/model.safetensors";
  SafetensorsFile f = SafetensorsFile::open(path);
  SafetensorsWriter w;
  edit(w, f);
  w.set_metadata("format", "pt");
  w.write(path);
}

}  // namespace

TEST(Checkpoint, SaveLoadRoundTripAndHfLayout) {
  const std::string dir = make_checkpoint("rt");
  auto m = load_model<float>(dir);
  LanguageModel<float> ref(m->config());
  ref.init(3);
  EXPECT_EQ(m->params, ref.params);
  SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.find("lm_head.weight"), nullptr);  // tied head is not duplicated
  EXPECT_NE(f.find("backbone.layers.1.mixer.dt_proj.bias"), nullptr);
  Json cfg = Json::parse_file(dir + "/config.json");
  EXPECT_EQ(cfg.at("model_type").as_string(), "mamba");
  EXPECT_EQ(cfg.at("num_hidden_layers").as_int(), 2);
  EXPECT_TRUE(cfg.at("tie_word_embeddings").as_bool());
}

// A dense model is transformers' MambaForCausalLM; a model with an MoE layer names its own
// architecture (no HF class loads [E, ...] expert slabs) and still round-trips through moessm.
TEST(Checkpoint, HfConfigNamesTheArchitectureAndTheSpecialTokens) {
  const ModelConfig dense = ModelConfig::from_json(Json::parse(R"({"d_model": 8, "n_layer": 2, "vocab_size": 40})"), "t");
  const Json d = dense.to_checkpoint_json(SpecialTokenIds{39, 39, 39});
  EXPECT_EQ(d.at("architectures").as_array().at(0).as_string(), "MambaForCausalLM");
  EXPECT_EQ(d.at("model_type").as_string(), "mamba");
  EXPECT_EQ(d.at("eos_token_id").as_int(), 39);
  EXPECT_TRUE(dense.to_checkpoint_json().at("bos_token_id").is_null());
  const ModelConfig moe = ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": 2, "vocab_size": 40, "layers": ["mamba", {"type": "rom", "n_experts": 2}]})"),
      "t");
  const Json m = moe.to_checkpoint_json();
  EXPECT_EQ(m.at("architectures").as_array().at(0).as_string(), "MoessmForCausalLM");
  EXPECT_EQ(m.at("model_type").as_string(), "moessm");
  EXPECT_EQ(ModelConfig::from_checkpoint_json(m, "config.json").to_json().dump(), moe.to_json().dump());
}

TEST(Checkpoint, MissingWrongShapeWrongDtypeAndUnknownTensors) {
  const std::string name = "backbone.layers.0.mixer.x_proj.weight";
  {
    const std::string dir = make_checkpoint("missing");
    rewrite(dir, [&](SafetensorsWriter& w, const SafetensorsFile& f) {
      for (const auto& e : f.entries())
        if (e.name != name) w.add(e.name, e.dtype, e.shape, f.data(e));
    });
    std::string msg = error_of([&] { load_model<float>(dir); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  }
  {
    const std::string dir = make_checkpoint("shape");
    rewrite(dir, [&](SafetensorsWriter& w, const SafetensorsFile& f) {
      for (const auto& e : f.entries()) {
        Shape s = e.shape;
        if (e.name == name) s = {s[1], s[0]};
        w.add(e.name, e.dtype, s, f.data(e));
      }
    });
    std::string msg = error_of([&] { load_model<float>(dir); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected"), std::string::npos) << msg;
  }
  {
    const std::string dir = make_checkpoint("dtype");
    rewrite(dir, [&](SafetensorsWriter& w, const SafetensorsFile& f) {
      for (const auto& e : f.entries()) w.add(e.name, e.name == name ? DType::I32 : e.dtype, e.shape, f.data(e));
    });
    std::string msg = error_of([&] { load_model<float>(dir); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find("I32"), std::string::npos) << msg;
  }
  {
    const std::string dir = make_checkpoint("extra");
    std::vector<float> junk(4, 1.f);
    rewrite(dir, [&](SafetensorsWriter& w, const SafetensorsFile& f) {
      for (const auto& e : f.entries()) w.add(e.name, e.dtype, e.shape, f.data(e));
      w.add("backbone.layers.7.mixer.oops", DType::F32, {4}, junk.data());
    });
    std::string msg = error_of([&] { load_model<float>(dir); });
    EXPECT_NE(msg.find("unexpected tensor 'backbone.layers.7.mixer.oops'"), std::string::npos) << msg;
  }
}

TEST(Checkpoint, TruncatedFileAndBadConfigAndMissingDirectory) {
  const std::string dir = make_checkpoint("trunc");
  std::string bytes = read_file(dir + "/model.safetensors");
  write_file_atomic(dir + "/model.safetensors", bytes.substr(0, bytes.size() / 2));
  std::string msg = error_of([&] { load_model<float>(dir); });
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;

  const std::string dir2 = make_checkpoint("badcfg");
  write_file_atomic(dir2 + "/config.json", "{\"model_type\": \"mamba\", \"hidden_size\": 8,");
  msg = error_of([&] { load_model<float>(dir2); });
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;

  msg = error_of([&] { load_model<float>(dir + "/nope"); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(InspectCommands, LogitsAndGradsWriteWhatTheLibraryComputes) {
  const std::string dir = make_checkpoint("cli");
  const std::string ids = dir + "/../ids.txt";
  write_file_atomic(ids, "1 2 3 4 5\n250 0 9 9 17\n");
  std::string out;
  ASSERT_EQ(run_cli("logits --model " + dir + " --ids " + ids + " --out " + dir + "/../l.npy", &out), 0) << out;
  NpyArray a = read_npy(dir + "/../l.npy");
  ASSERT_EQ(a.shape, (Shape{2, 5, 256}));
  auto m = load_model<float>(dir);
  std::vector<int32_t> v = {1, 2, 3, 4, 5, 250, 0, 9, 9, 17};
  std::vector<float> ref(2 * 5 * 256);
  m->prepare(2, 5, false);
  m->forward_logits(ref.data(), v.data(), 2, 5, nullptr, nullptr);
  EXPECT_EQ(a.data, ref);

  ASSERT_EQ(run_cli("grads --model " + dir + " --ids " + ids + " --out " + dir + "/../g.safetensors", &out), 0) << out;
  SafetensorsFile g = SafetensorsFile::open(dir + "/../g.safetensors");
  std::vector<int32_t> tg = {2, 3, 4, 5, -1, 0, 9, 9, 17, -1};
  m->prepare(2, 5, true);
  m->zero_grads();
  LossResult r = m->loss(v.data(), tg.data(), 2, 5, true);
  EXPECT_NEAR(std::stod(g.metadata().at("loss")), r.total(), 1e-6);
  const ParamInfo& p = m->table().at("backbone.layers.1.mixer.in_proj.weight");
  std::vector<float> got(p.numel);
  g.read_into<float>(p.name, p.shape, got.data());
  EXPECT_EQ(got, std::vector<float>(m->grads.begin() + p.offset, m->grads.begin() + p.offset + p.numel));
}

// Ragged id rows (what `generate --ids-out` writes for prompts of different lengths) are
// right-padded: each row's logits equal the row run alone, padded positions are NaN, and the
// loss scores only real next tokens (equal to the mean over the rows' own targets).
TEST(InspectCommands, RaggedIdRowsArePaddedAndMasked) {
  const std::string dir = make_checkpoint("ragged");
  const std::string rag = dir + "/../rag.txt", one = dir + "/../one.txt", two = dir + "/../two.txt";
  write_file_atomic(rag, "1 2 3 4 5\n6 7\n");
  write_file_atomic(one, "1 2 3 4 5\n");
  write_file_atomic(two, "6 7\n");
  std::string out;
  ASSERT_EQ(run_cli("logits --model " + dir + " --ids " + rag + " --out " + dir + "/../rag.npy", &out), 0) << out;
  ASSERT_EQ(run_cli("logits --model " + dir + " --ids " + one + " --out " + dir + "/../one.npy", &out), 0) << out;
  ASSERT_EQ(run_cli("logits --model " + dir + " --ids " + two + " --out " + dir + "/../two.npy", &out), 0) << out;
  NpyArray r = read_npy(dir + "/../rag.npy"), a = read_npy(dir + "/../one.npy"), b = read_npy(dir + "/../two.npy");
  const size_t V = size_t(a.shape[2]);
  ASSERT_EQ(r.shape, (std::vector<int64_t>{2, 5, int64_t(V)}));
  EXPECT_LE(max_rel_diff(r.data.data(), a.data.data(), 5 * V), 1e-6);
  EXPECT_LE(max_rel_diff(r.data.data() + 5 * V, b.data.data(), 2 * V), 1e-6);
  for (size_t i = 7 * V; i < 10 * V; ++i) ASSERT_TRUE(std::isnan(r.data[i])) << "padded position " << i / V;
  // grads: the loss is the mean over the 4 + 1 real targets
  ASSERT_EQ(run_cli("grads --model " + dir + " --ids " + rag + " --out " + dir + "/../rag.safetensors", &out), 0) << out;
  EXPECT_NE(out.find("(5 targets)"), std::string::npos) << out;
}

TEST(InspectCommands, BadInputsExitNonZeroWithClearMessages) {
  const std::string dir = make_checkpoint("clibad");
  const std::string ids = dir + "/../ids.txt";
  std::string out;
  write_file_atomic(ids, "1 2 3\n4 5 256\n");
  EXPECT_EQ(run_cli("logits --model " + dir + " --ids " + ids + " --out /dev/null", &out), 1);
  EXPECT_NE(out.find("line 2: token id 256 is outside the vocabulary [0, 256)"), std::string::npos) << out;
  write_file_atomic(ids, "1 two 3\n");
  EXPECT_EQ(run_cli("grads --model " + dir + " --ids " + ids + " --out /dev/null", &out), 1);
  EXPECT_NE(out.find("'two' is not an integer"), std::string::npos) << out;
  EXPECT_EQ(run_cli("logits --model " + dir + " --ids /nonexistent/ids.txt --out x.npy", &out), 1);
  EXPECT_NE(out.find("/nonexistent/ids.txt"), std::string::npos) << out;
  EXPECT_EQ(run_cli("init --config /nonexistent.json --out " + dir + "/x", &out), 1);
  EXPECT_NE(out.find("/nonexistent.json"), std::string::npos) << out;
  EXPECT_EQ(run_cli("logits --model " + dir + " --idz x", &out), 1);
  EXPECT_NE(out.find("unknown option --idz"), std::string::npos) << out;
  EXPECT_EQ(run_cli("frobnicate", &out), 2);
  EXPECT_EQ(run_cli("logits --help", &out), 0);
  EXPECT_NE(out.find("--ids"), std::string::npos);
}
