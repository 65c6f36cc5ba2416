// Bounded and consistent input: an absurd token id in a small tokenizer.json is refused before
// its id tables are allocated; non-finite weights and states are refused naming the tensor; a
// data directory whose tokenizer does not match its shards is refused naming both hashes; a
// mixer option error names the config file and the layer; whole-file reads refuse devices.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "data/prepare.h"
#include "data/shards.h"
#include "expect_error.h"
#include "infer/state_file.h"
#include "io/file_util.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model_checks.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::testing;

namespace {
ModelConfig tiny() {
  return ModelConfig::from_json(Json::parse(R"({"d_model": 16, "n_layer": 2, "vocab_size": 64, "d_state": 4})"), "test");
}
}  // namespace

TEST(Bounds, HugeTokenIdInASmallTokenizerIsRefusedBeforeAllocating) {
  const std::string dir = temp_dir("bounds_tok");
  // A few tokens, one of them with an id of 67 million (the id tables would take gigabytes).
  const std::string path = dir + "/tokenizer.json";
  std::string text = R"({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 67108000}, "merges": ["a b"]},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "decoder": {"type": "ByteLevel"}})";
  write_file_atomic(path, text);
  // The bound is checked right after the ids are read, before the id tables are sized.
  EXPECT_ERROR_HAS(Tokenizer::load(path), path, "token id 67108000 is far beyond the 3 tokens");
}

TEST(Bounds, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const std::string dir = temp_dir("bounds_nan");
  LanguageModel<float> m(tiny());
  m.init(1);
  m.param("backbone.layers.1.mixer.x_proj.weight")[5] = std::numeric_limits<float>::quiet_NaN();
  save_model(dir + "/ck", m);
  EXPECT_ERROR_HAS(load_model<float>(dir + "/ck"), "model.safetensors", "tensor 'backbone.layers.1.mixer.x_proj.weight'",
                   "non-finite", "element 5");
}

TEST(Bounds, NonFiniteStateIsRefusedNamingTheTensor) {
  const std::string dir = temp_dir("bounds_state");
  LanguageModel<float> m(tiny());
  m.init(1);
  std::vector<float> state(size_t(m.state_size()), 0.25f), logits(size_t(m.vocab()), 0.f);
  state[size_t(m.state_offset(1, 1) + 3)] = INFINITY;
  save_state_file(dir + "/s.safetensors", m, 1, state.data(), logits.data(), {4}, {7});
  EXPECT_ERROR_HAS(load_state_file(dir + "/s.safetensors", m), "tensor 'state.layers.1'", "non-finite", "element 3");
}

TEST(Bounds, ShardsMadeWithAnotherTokenizerAreRefused) {
  const std::string data = make_word_data("bounds_hash", 3000);  // byte tokenizer: no tokenizer.json
  const ShardHeader h = read_shard_header(data + "/train.bin");
  check_shard_tokenizer(h, data + "/train.bin", data);  // consistent: no error
  write_file_atomic(data + "/tokenizer.json", read_file(source_dir() + "/data/tokenizers/gpt2/tokenizer.json"));
  EXPECT_ERROR_HAS(check_shard_tokenizer(h, data + "/train.bin", data), "train.bin", "another tokenizer",
                   "tokenizer_hash", "moessm prepare");
  // The trainer refuses such a data directory before it creates the run directory.
  TrainOptions o;
  o.data = data;
  o.out = data + "/../run_mismatch";
  o.max_steps = 1;
  EXPECT_ERROR_HAS(train_model(ModelConfig::from_json(Json::parse(R"({"d_model": 16, "n_layer": 1, "vocab_size": 256})"),
                                                      "test"), o),
                   "another tokenizer");
  EXPECT_FALSE(file_exists(data + "/../run_mismatch"));
}

TEST(Bounds, MixerOptionErrorsNameTheConfigFileAndLayer) {
  const std::string dir = temp_dir("bounds_cfg");
  const std::string path = dir + "/bad_rom.json";
  write_file_atomic(path, R"({"d_model": 16, "n_layer": 2, "vocab_size": 64,
                              "layers": ["mamba", {"type": "rom", "n_experts": 4, "top_k": 1, "weight_at": "nowhere"}]})");
  EXPECT_ERROR_HAS(ModelConfig::from_file(path), path, "layers[1] (rom)", "weight_at");
}

TEST(Bounds, WholeFileReadsRefuseDevicesAndDirectories) {
  EXPECT_ERROR_HAS(read_file("/dev/zero"), "/dev/zero", "not a regular file");
  EXPECT_ERROR_HAS(read_regular_file("/dev/null", 10), "/dev/null", "not a regular file");
  const std::string dir = temp_dir("bounds_read");
  write_file_atomic(dir + "/f", std::string(100, 'x'));
  EXPECT_ERROR_HAS(read_regular_file(dir + "/f", 99), "100 bytes", "limit of 99");
  EXPECT_EQ(read_regular_file(dir + "/f", 100).size(), 100u);
}
