// `moessm eval` against a direct computation from `moessm logits` on the same windows (the
// documented scoring: non-overlapping windows of ctx tokens, each from an empty state, position t
// predicting token t+1 for t >= score_from): the mean loss, perplexity, bits per byte (byte
// tokenizer: one byte per token) and the loss by position agree; bad arguments are refused
// naming them. Dense and mixed (RoM) stacks.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "data/shards.h"
#include "io/file_util.h"
#include "io/json.h"
#include "io/npy.h"
#include "model_checks.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

struct Direct {
  double loss = 0;
  std::vector<double> by_pos;  // mean loss of the prediction after i+1 tokens
  int64_t n = 0;
};

// Cross-entropy of every scored prediction from `moessm logits` over the windows eval uses.
Direct direct(const std::string& model, const std::vector<int32_t>& ids, int64_t ctx, int64_t windows,
              int64_t score_from, const std::string& dir) {
  std::string lines;
  for (int64_t w = 0; w < windows; ++w) {
    for (int64_t t = 0; t < ctx; ++t) lines += std::to_string(ids[size_t(w * ctx + t)]) + (t + 1 < ctx ? " " : "\n");
  }
  write_file_atomic(dir + "/win.txt", lines);
  std::string out;
  EXPECT_EQ(run_cli_argv({"logits", "--model", model, "--ids", dir + "/win.txt", "--out", dir + "/l.npy"}, &out), 0)
      << out;
  const NpyArray l = read_npy(dir + "/l.npy");
  const int64_t V = l.shape[2];
  Direct d;
  std::vector<double> sum(size_t(ctx - 1), 0.0);
  std::vector<int64_t> cnt(size_t(ctx - 1), 0);
  double total = 0;
  for (int64_t w = 0; w < windows; ++w)
    for (int64_t t = score_from; t + 1 < ctx; ++t) {
      const float* row = l.data.data() + (w * ctx + t) * V;
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
      double s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - mx);
      const double ce = mx + std::log(s) - double(row[ids[size_t(w * ctx + t + 1)]]);
      total += ce;
      sum[size_t(t)] += ce;
      ++cnt[size_t(t)];
      ++d.n;
    }
  d.loss = total / double(d.n);
  for (size_t i = 0; i < sum.size(); ++i) d.by_pos.push_back(cnt[i] ? sum[i] / double(cnt[i]) : NAN);
  return d;
}

void check_eval_equals_logits(const std::string& layers, const std::string& tag) {
  const std::string data = make_word_data("eval_" + tag, 4000), dir = temp_dir("eval_run_" + tag);
  write_file_atomic(dir + "/cfg.json", R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 4, "layers": )" +
                                           layers + "}");
  std::string out;
  ASSERT_EQ(run_cli_argv({"init", "--config", dir + "/cfg.json", "--out", dir + "/m", "--seed", "4"}, &out), 0) << out;
  const std::vector<int32_t> ids = read_shard(data + "/val.bin").ids;
  for (const auto& [ctx, score_from, max_tokens] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{16, 0, 300}, {40, 0, 200}, {16, 8, 50}}) {
    const std::string json = dir + "/e.json";
    ASSERT_EQ(run_cli_argv({"eval", "--model", dir + "/m", "--data", data, "--ctx", std::to_string(ctx),
                            "--max-tokens", std::to_string(max_tokens), "--batch", "3", "--score-from",
                            std::to_string(score_from), "--json", json},
                           &out),
              0)
        << out;
    const Json r = Json::parse_file(json).at("results").as_array().at(0);
    const int64_t per = ctx - 1 - score_from;
    const int64_t windows = std::min<int64_t>(int64_t(ids.size()) / ctx, (max_tokens + per - 1) / per);
    EXPECT_EQ(r.at("windows").as_int(), windows) << tag;
    EXPECT_EQ(r.at("predictions").as_int(), windows * per) << tag;
    const Direct d = direct(dir + "/m", ids, ctx, windows, score_from, dir);
    const double loss = r.at("loss").as_number();
    EXPECT_NEAR(loss, d.loss, 1e-5 * d.loss) << tag << " ctx " << ctx;
    EXPECT_NEAR(r.at("perplexity").as_number(), std::exp(d.loss), 1e-5 * std::exp(d.loss)) << tag;
    EXPECT_NEAR(r.at("bits_per_byte").as_number(), loss / std::log(2.0), 1e-12) << tag << " (byte tokenizer)";
    const Json::Array& pos = r.at("loss_by_position").as_array();
    ASSERT_EQ(pos.size(), size_t(ctx - 1));
    for (int64_t i = 0; i < ctx - 1; ++i) {
      if (i < score_from) {
        EXPECT_TRUE(pos[size_t(i)].is_null()) << i;
      } else {
        EXPECT_NEAR(pos[size_t(i)].as_number(), d.by_pos[size_t(i)], 1e-4 * d.by_pos[size_t(i)]) << tag << " pos " << i;
      }
    }
  }
}

}  // namespace

TEST(Eval, EqualsTheLossComputedFromLogitsDense) { check_eval_equals_logits(R"(["mamba", "mamba"])", "dense"); }

TEST(Eval, EqualsTheLossComputedFromLogitsWithRoutedLayers) {
  check_eval_equals_logits(R"(["mamba", {"type": "rom", "n_experts": 3, "top_k": 2}])", "rom");
}

TEST(Eval, BadArgumentsAreRefusedNamingThem) {
  const std::string data = make_word_data("eval_bad", 600), dir = temp_dir("eval_bad_run");
  std::string out;
  ASSERT_EQ(run_cli_argv({"init", "--config", source_dir() + "/configs/tiny_dense.json", "--out", dir + "/m"}, &out), 0);
  EXPECT_EQ(run_cli_argv({"eval", "--model", dir + "/m", "--data", data, "--ctx", "1"}, &out), 1);
  EXPECT_NE(out.find("--ctx: '1' is not a context length"), std::string::npos) << out;
  EXPECT_EQ(run_cli_argv({"eval", "--model", dir + "/m", "--data", data, "--text", dir + "/x.txt"}, &out), 1);
  EXPECT_NE(out.find("exactly one of --data DIR or --text FILE"), std::string::npos) << out;
  EXPECT_EQ(run_cli_argv({"eval", "--model", dir + "/m", "--data", data, "--ctx", "1000000"}, &out), 1);
  EXPECT_NE(out.find("fewer than one window of --ctx 1000000"), std::string::npos) << out;
  EXPECT_EQ(run_cli_argv({"eval", "--model", dir + "/m", "--data", data, "--split", "test"}, &out), 1);
  EXPECT_NE(out.find("--split must be val or train"), std::string::npos) << out;
  // Raw text through the model's tokenizer (here: the byte tokenizer, named explicitly).
  write_file_atomic(dir + "/t.txt", std::string(300, 'a') + " the cat sat on the mat");
  EXPECT_EQ(run_cli_argv({"eval", "--model", dir + "/m", "--text", dir + "/t.txt", "--tokenizer", "byte", "--ctx",
                          "64"}, &out),
            0)
      << out;
  EXPECT_NE(out.find("ctx     64: 315 predictions in 5 windows"), std::string::npos) << out;
}

// The command line says what each value is (PATH, N, VALUE) and what the program is.
TEST(Cli, HelpNamesValueKindsAndVersionPrints) {
  std::string out;
  EXPECT_EQ(run_cli_argv({"eval", "--help"}, &out), 0);
  EXPECT_NE(out.find("--model PATH"), std::string::npos) << out;
  EXPECT_NE(out.find("--batch N"), std::string::npos) << out;
  EXPECT_NE(out.find("--split VALUE"), std::string::npos) << out;
  EXPECT_EQ(run_cli_argv({"--version"}, &out), 0);
  EXPECT_EQ(out.rfind("moessm 0.", 0), 0u) << out;
  EXPECT_NE(out.find("CUDA backend"), std::string::npos) << out;
}
