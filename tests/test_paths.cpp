// Paths never reach a shell: every command that takes a path (tokenizer train, prepare, init,
// train with checkpoint swaps and resume, generate, logits) works on a directory whose name holds
// an apostrophe, spaces, a leading dash and shell syntax that would create a file if any of it
// were run; paths recorded in JSON files round-trip; a path that is not valid UTF-8 is refused
// before any work with a message naming the option.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "io/json.h"
#include "io/file_util.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

std::string corpus(const std::string& dir) {
  std::string text;
  Rng rng(5);
  const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "Emma ", "walked ", "home.\n"};
  for (int i = 0; i < 4000; ++i) text += words[rng.below(9)];
  write_file_atomic(dir + "/a.txt", text.substr(0, text.size() * 9 / 10));
  write_file_atomic(dir + "/persuasion.txt", text.substr(text.size() * 9 / 10));
  return dir;
}

}  // namespace

TEST(Paths, ShellSyntaxInPathsIsNeverRun) {
  const std::string base = temp_dir("paths");
  const std::string canary = base + "/PWNED";
  // Every quoting trick a naive `system("rm -rf '" + path + "'")` would execute.
  const std::string weird = base + "/-lead it's a dir'; touch '" + canary + "'; echo '$(touch " + canary +
                            ") `touch " + canary + "`";
  make_dirs(weird);
  const std::string text = corpus(weird);
  write_file_atomic(weird + "/cfg.json", R"({"d_model": 16, "n_layer": 2, "vocab_size": 304, "d_state": 4,
    "train": {"batch_size": 2, "seq_len": 16, "max_steps": 3, "warmup_steps": 1, "eval_every": 0,
              "eval_tokens": 64, "log_every": 100, "checkpoint_every": 1}})");
  std::string out;
  ASSERT_EQ(run_cli_argv({"tokenizer", "train", "--input", text + "/a.txt", "--vocab-size", "300", "--out",
                          weird + "/tok dir/tokenizer.json"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"prepare", "--input", text + "/a.txt," + text + "/persuasion.txt", "--tokenizer",
                          weird + "/tok dir/tokenizer.json", "--out", weird + "/data", "--quiet"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"init", "--config", weird + "/cfg.json", "--out", weird + "/init"}, &out), 0) << out;
  // Three checkpoints: each swap removes the previous one and the temporary directory.
  ASSERT_EQ(run_cli_argv({"train", "--config", weird + "/cfg.json", "--data", weird + "/data", "--out",
                          weird + "/run", "--max-steps", "2"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"train", "--config", weird + "/cfg.json", "--data", weird + "/data", "--out",
                          weird + "/run", "--resume", weird + "/run"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"generate", "--model", weird + "/run", "--prompt", "the cat", "--max-new-tokens", "4",
                          "--ids-out", weird + "/ids.txt", "--state-out", weird + "/state.safetensors"}, &out), 0) << out;
  ASSERT_EQ(run_cli_argv({"logits", "--model", weird + "/init", "--ids", weird + "/ids.txt", "--out",
                          weird + "/l.npy"}, &out), 0) << out;

  EXPECT_FALSE(std::filesystem::exists(canary)) << "a path reached a shell";
  EXPECT_TRUE(file_exists(weird + "/run/checkpoint/model.safetensors"));
  EXPECT_FALSE(file_exists(weird + "/run/checkpoint.tmp"));
  EXPECT_FALSE(file_exists(weird + "/run/checkpoint.old"));
  EXPECT_TRUE(file_exists(weird + "/l.npy"));
  // config.json names the tokenizer's end-of-text (the last id of the small BPE, whose merges
  // stop early on this text) as bos / eos / pad; `init` has no tokenizer and writes null.
  const Json hf = Json::parse_file(weird + "/run/checkpoint/config.json");
  const int64_t eot = Tokenizer::load(weird + "/data/tokenizer.json")->eot_id();
  EXPECT_GT(eot, 255);
  for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    EXPECT_EQ(hf.at(k).as_int(), eot) << k;
    EXPECT_TRUE(Json::parse_file(weird + "/init/config.json").at(k).is_null()) << k;
  }
  // The run directory recorded in the trainer state is the path given, byte for byte.
  Json st = Json::parse_file(weird + "/run/checkpoint/trainer_state.json");
  EXPECT_EQ(st.at("step").as_int(), 3);
  EXPECT_EQ(st.at("options").at("out").as_string(), weird + "/run");
  EXPECT_EQ(st.at("options").at("data").as_string(), weird + "/data");
}

TEST(Paths, NonUtf8PathsAreRefusedBeforeAnyWork) {
  const std::string base = temp_dir("paths_utf8");
  const std::string bad = base + "/r\xff\xfeun";
  std::string out;
  EXPECT_EQ(run_cli_argv({"train", "--config", source_dir() + "/configs/tiny_dense.json", "--data", base,
                          "--out", bad}, &out), 1);
  EXPECT_NE(out.find("--out: the path is not valid UTF-8"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(bad));
  EXPECT_EQ(run_cli_argv({"init", "--config", source_dir() + "/configs/tiny_dense.json", "--out", bad}, &out), 1);
  EXPECT_NE(out.find("--out: the path is not valid UTF-8"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(bad));
  // A directory listing with a non-UTF-8 name is refused by prepare before tokenising.
  const std::string dir = base + "/in";
  make_dirs(dir);
  write_file_atomic(dir + "/ok\xff.txt", "some text that is long enough to tokenise");
  EXPECT_EQ(run_cli_argv({"prepare", "--input", dir, "--out", base + "/data"}, &out), 1);
  EXPECT_NE(out.find("is not valid UTF-8"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(base + "/data"));
}

TEST(Paths, RemoveTreeNeedsNoShell) {
  const std::string base = temp_dir("paths_rm");
  const std::string d = base + "/a'b; rm -rf " + base + "/keep";
  make_dirs(d + "/x/y");
  make_dirs(base + "/keep");
  write_file_atomic(d + "/x/y/f", "1");
  remove_tree(d);
  EXPECT_FALSE(std::filesystem::exists(d));
  EXPECT_TRUE(std::filesystem::exists(base + "/keep"));
  remove_tree(d);  // a missing path is fine
}
