// `moessm eval`: the mean next-token loss, perplexity and bits per byte of a model on a token
// stream (a prepared data split or raw text tokenised with the model's tokenizer), at one or more
// context lengths, with the loss by position in the context.
//
// What is scored (docs/evaluation.md): the stream is cut into non-overlapping windows of `ctx`
// tokens (a shorter tail is dropped); each window starts from an empty recurrent state; inside a
// window, position t predicts token t+1 for t = score_from .. ctx-2 (score_from 0: every
// prediction; llama-perplexity's convention of scoring only the second half of each chunk is
// --score-from ctx/2). Loss is the mean cross-entropy in nats over the scored predictions,
// perplexity exp(loss), bits per byte = Σ loss / ln 2 / Σ bytes of the scored target tokens.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/device_model.h"
#include "core/check.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "io/file_util.h"
#include "io/json.h"
#include "model/checkpoint.h"
#include "model/mixer_registry.h"
#include "tokenizer/tokenizer.h"

namespace moessm::cli {
namespace {

std::vector<int64_t> parse_ctx_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    CHECK(!item.empty() && end && *end == '\0' && v >= 2 && v <= (1 << 20), "--ctx: '", item,
          "' is not a context length in [2, 1048576] (expected e.g. 128,512,2048)");
    out.push_back(v);
  }
  CHECK(!out.empty(), "--ctx: no context length given");
  return out;
}

struct CtxResult {
  int64_t ctx = 0, windows = 0, scored = 0;
  double nats = 0, bytes = 0;
  std::vector<double> pos_sum;   // [ctx-1]: Σ loss of the prediction made after i+1 tokens
  std::vector<int64_t> pos_n;
};

// Scores `windows` windows of ctx tokens of `ids` on model m (B windows per pass).
template <typename M>
void score(M& m, CtxResult& r, const std::vector<int32_t>& ids, const std::vector<double>& bytes_of, int64_t B,
           int64_t score_from) {
  const int64_t T = r.ctx;
  r.pos_sum.assign(size_t(T - 1), 0.0);
  r.pos_n.assign(size_t(T - 1), 0);
  m.prepare(B, T, false);
  std::vector<int32_t> in(size_t(B * T)), tg(size_t(B * T));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t w0 = 0; w0 < r.windows; w0 += B) {
    const int64_t real = std::min(B, r.windows - w0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t w = w0 + std::min(b, real - 1);  // a short last batch repeats its last window, unscored
      for (int64_t t = 0; t < T; ++t) {
        in[size_t(b * T + t)] = ids[size_t(w * T + t)];
        tg[size_t(b * T + t)] = b < real && t >= score_from && t + 1 < T ? ids[size_t(w * T + t + 1)] : -1;
      }
    }
    m.loss(in.data(), tg.data(), B, T, false);
    const std::vector<double> rows = m.row_losses();
    for (int64_t b = 0; b < real; ++b)
      for (int64_t t = score_from; t + 1 < T; ++t) {
        const double l = rows[size_t(b * T + t)];
        r.nats += l;
        r.bytes += bytes_of[size_t(tg[size_t(b * T + t)])];
        r.pos_sum[size_t(t)] += l;
        ++r.pos_n[size_t(t)];
        ++r.scored;
      }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double done = double(w0 + real) / double(r.windows);
    std::fprintf(stderr, "\r[eval] ctx %lld: %lld/%lld windows | %.0f tokens/s | elapsed %.0fs | ETA %.0fs   ",
                 (long long)T, (long long)(w0 + real), (long long)r.windows, double((w0 + real) * T) / s, s,
                 s * (1 - done) / std::max(done, 1e-9));
  }
  std::fprintf(stderr, "\n");
}

int cmd_eval(int argc, char** argv) {
  Args a("eval",
         "Mean next-token loss, perplexity and bits per byte of a model on a prepared data split or\n"
         "on raw text, at one or more context lengths, with the loss by position in the context.\n"
         "Each window of --ctx tokens starts from an empty state; windows do not overlap.");
  a.path("model", "checkpoint or training run directory", "", true)
      .path("data", "prepared data directory (moessm prepare): scores its validation split (--split)")
      .option("split", "with --data: val or train", "val")
      .path("text", "a UTF-8 text file, tokenised with the model's tokenizer (instead of --data)")
      .path("tokenizer", "tokenizer.json or 'byte' (default: the data directory's, else the model's)")
      .option("ctx", "context lengths, comma-separated (may exceed the training length)", "512")
      .option("max-tokens", "predictions to score at each context length (0: the whole stream)", "262144")
      .option("batch", "windows per forward pass", "8")
      .option("score-from", "positions before this in each window are context only (llama-perplexity: ctx/2)", "0")
      .path("json", "also write the results (per-position losses included) to this JSON file");
  device_options(a);
  if (!a.parse(argc, argv)) return 0;
  const std::string device = on_cuda(a) ? "cuda" : "cpu";
  CHECK(a.has("data") != a.has("text"), "moessm eval: give exactly one of --data DIR or --text FILE");
  check_model_supported(load_model_config(a.str("model")), device);  // before loading weights
  auto model = load_model<float>(a.str("model"));

  // The token stream and the tokenizer that gives each token's bytes.
  std::vector<int32_t> ids;
  std::string source, tok_spec;
  if (a.has("data")) {
    const std::string split = a.str("split");
    CHECK(split == "val" || split == "train", "--split must be val or train, found '", split, "'");
    const std::string path = path_join(a.str("data"), split + ".bin");
    CHECK(file_exists(path), "moessm eval: ", path, " does not exist (run `moessm prepare` first)");
    Shard sh = read_shard(path);
    CHECK(int64_t(sh.header.vocab_size) <= model->config().vocab_size, path, ": the data's vocabulary (",
          sh.header.vocab_size, " ids) is larger than the model's vocab_size ", model->config().vocab_size);
    ids = std::move(sh.ids);
    source = path;
    tok_spec = a.has("tokenizer") ? a.str("tokenizer") : data_dir_tokenizer(a.str("data"));
  } else {
    const std::string inside = path_join(resolve_model_dir(a.str("model")), "tokenizer.json");
    CHECK(a.has("tokenizer") || file_exists(inside), "moessm eval: ", a.str("model"),
          " holds no tokenizer.json; pass --tokenizer FILE (a tokenizer.json) or --tokenizer byte");
    tok_spec = a.has("tokenizer") ? a.str("tokenizer") : inside;
    ids = Tokenizer::load(tok_spec)->encode(read_regular_file(a.str("text"), kMaxTextFileBytes));
    source = a.str("text");
    for (int32_t id : ids)
      CHECK(id < model->config().vocab_size, a.str("text"), ": token id ", id, " from ", tok_spec,
            " is outside the model's vocabulary [0, ", model->config().vocab_size, ")");
  }
  const auto tok = Tokenizer::load(tok_spec);
  std::vector<double> bytes_of(size_t(std::max<int64_t>(tok->vocab_size(), model->config().vocab_size)), 0.0);
  for (int32_t id = 0; id < tok->vocab_size(); ++id) bytes_of[size_t(id)] = double(tok->decode({id}).size());

  const std::vector<int64_t> ctxs = parse_ctx_list(a.str("ctx"));
  const int64_t max_tokens = a.integer("max-tokens"), batch = a.integer("batch"), score_from = a.integer("score-from");
  CHECK(max_tokens >= 0, "--max-tokens must be >= 0, found ", max_tokens);
  CHECK(batch >= 1 && batch <= 4096, "--batch must be in [1, 4096], found ", batch);
  std::printf("eval: %s on %s (%zu tokens, tokenizer %s), device %s\n", a.str("model").c_str(), source.c_str(),
              ids.size(), tok_spec.c_str(), device.c_str());
  std::vector<CtxResult> results;
  for (int64_t ctx : ctxs) {
    CHECK(score_from >= 0 && score_from < ctx - 1, "--score-from ", score_from, " leaves nothing to score in a window of ",
          ctx, " tokens");
    CtxResult r;
    r.ctx = ctx;
    r.windows = int64_t(ids.size()) / ctx;
    CHECK(r.windows >= 1, source, ": ", ids.size(), " tokens are fewer than one window of --ctx ", ctx);
    const int64_t per_window = ctx - 1 - score_from;
    if (max_tokens > 0) r.windows = std::min(r.windows, (max_tokens + per_window - 1) / per_window);
    const int64_t B = std::min(batch, r.windows);
    CHECK(B * ctx <= (int64_t(1) << 22), "--batch ", B, " × --ctx ", ctx,
          " is more than 4194304 tokens per pass (lower --batch)");
    with_model(a, *model, [&](auto& m) { score(m, r, ids, bytes_of, B, score_from); });
    const double loss = r.nats / double(r.scored);
    std::printf("ctx %6lld: %lld predictions in %lld windows | loss %.4f nats | perplexity %.3f | %.4f bits/byte\n",
                (long long)ctx, (long long)r.scored, (long long)r.windows, loss, std::exp(loss),
                r.nats / std::log(2.0) / r.bytes);
    std::printf("  loss by context position:");
    for (int64_t lo = 1; lo <= ctx - 1; lo *= 2) {
      const int64_t hi = std::min(2 * lo, ctx);  // positions lo .. hi-1 tokens of context
      double s = 0;
      int64_t n = 0;
      for (int64_t i = lo - 1; i < hi - 1; ++i) s += r.pos_sum[size_t(i)], n += r.pos_n[size_t(i)];
      if (n && lo == hi - 1) std::printf(" %lld: %.3f", (long long)lo, s / double(n));
      else if (n) std::printf(" %lld-%lld: %.3f", (long long)lo, (long long)(hi - 1), s / double(n));
    }
    std::printf("\n");
    results.push_back(std::move(r));
  }
  if (a.has("json")) {
    Json j = Json::object();
    j.set("model", a.str("model"));
    j.set("source", source);
    j.set("tokenizer", tok_spec);
    j.set("device", device);
    j.set("stream_tokens", int64_t(ids.size()));
    j.set("score_from", score_from);
    Json list = Json::array();
    for (const CtxResult& r : results) {
      Json o = Json::object();
      const double loss = r.nats / double(r.scored);
      o.set("ctx", r.ctx);
      o.set("windows", r.windows);
      o.set("predictions", r.scored);
      o.set("loss", loss);
      o.set("perplexity", std::exp(loss));
      o.set("bits_per_byte", r.nats / std::log(2.0) / r.bytes);
      // loss_by_position[i]: mean loss of the prediction made after i+1 tokens of context
      Json pos = Json::array();
      for (size_t i = 0; i < r.pos_sum.size(); ++i)
        pos.push_back(r.pos_n[i] ? Json(r.pos_sum[i] / double(r.pos_n[i])) : Json());
      o.set("loss_by_position", pos);
      list.push_back(o);
    }
    j.set("results", list);
    write_file_atomic(a.str("json"), j.dump(1) + "\n");
    std::printf("wrote %s\n", a.str("json").c_str());
  }
  return 0;
}

}  // namespace
REGISTER_COMMAND("eval", "loss, perplexity and bits per byte at several context lengths", cmd_eval);
}  // namespace moessm::cli
