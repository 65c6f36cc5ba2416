// Generator implementation (see generator.h).
#include "infer/generator.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"

namespace moessm {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
idx_t resolve_vocab_limit(idx_t limit, idx_t model_vocab) {
  CHECK(limit >= 0 && limit <= model_vocab, "generate: vocabulary limit ", limit,
        " must be in [0, model vocab_size ", model_vocab, "]");
  return limit > 0 ? limit : model_vocab;
}
}  // namespace

template <typename T>
Generator<T>::Generator(Decoder<T>& decoder, const GenerateOptions& opts)
    : dec_(decoder), opts_(opts),
      sampler_(decoder.batch(), resolve_vocab_limit(opts.vocab_limit, decoder.model().config().vocab_size),
               opts.sampling, opts.seed),
      in_(static_cast<size_t>(decoder.batch()), 0) {
  CHECK(opts.max_new_tokens >= 0, "generate: --max-new-tokens must be >= 0, got ", opts.max_new_tokens);
}

template <typename T>
std::vector<SlotOutput> Generator<T>::run(const std::vector<std::vector<int32_t>>& prompts,
                                          const TokenCallback& on_token,
                                          const std::function<void()>& after_prefill) {
  const idx_t B = dec_.batch();
  CHECK(idx_t(prompts.size()) == B, "generate: ", prompts.size(), " prompts for ", B, " decoder slots");
  const idx_t V = dec_.model().config().vocab_size;
  size_t common = prompts[0].size();
  for (idx_t b = 0; b < B; ++b) {
    common = std::min(common, prompts[b].size());
    for (size_t i = 0; i < prompts[b].size(); ++i)
      CHECK(prompts[b][i] >= 0 && prompts[b][i] < V, "generate: prompt of slot ", b, ", position ", i,
            ": token id ", prompts[b][i], " outside the model vocabulary [0, ", V, ")");
  }
  stats_ = GenerateStats();
  std::vector<SlotOutput> out(static_cast<size_t>(B));
  std::vector<size_t> pos(static_cast<size_t>(B), common);
  std::vector<bool> done(static_cast<size_t>(B), false);

  if (common > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(B) * common);
    for (idx_t b = 0; b < B; ++b) std::copy_n(prompts[b].begin(), common, ids.begin() + b * common);
    const auto t0 = std::chrono::steady_clock::now();
    dec_.prefill(ids.data(), idx_t(common));
    stats_.prefill_seconds = seconds_since(t0);
    stats_.prefill_tokens = int64_t(B) * int64_t(common);
  } else {
    bool ragged_only = true;  // every slot still has prompt tokens: a step gives fresh logits
    for (idx_t b = 0; b < B; ++b) ragged_only = ragged_only && !prompts[b].empty();
    CHECK(dec_.has_logits() || ragged_only,
          "generate: a slot has an empty prompt and there are no logits to sample its first token "
          "from (give a prompt, or resume from a state file that holds next-token logits)");
  }

  if (after_prefill) after_prefill();
  // A finished slot keeps being fed its last input (static shapes); its outputs are ignored.
  for (idx_t b = 0; b < B; ++b) {
    out[b].generated.reserve(static_cast<size_t>(std::min<int64_t>(opts_.max_new_tokens, 1 << 16)));
    in_[b] = common > 0 ? prompts[b][common - 1] : 0;
  }
  const auto t1 = std::chrono::steady_clock::now();
  for (;;) {
    bool all_done = true;
    for (idx_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      if (pos[b] < prompts[b].size()) {
        in_[b] = prompts[b][pos[b]++];
        ++stats_.forced_tokens;
        all_done = false;
        continue;
      }
      if (int64_t(out[b].generated.size()) >= opts_.max_new_tokens) {
        done[b] = true;
        continue;
      }
      const int32_t tok = sampler_.sample(b, dec_.logits(b));
      out[b].generated.push_back(tok);
      ++stats_.generated_tokens;
      if (on_token) on_token(b, tok);
      in_[b] = tok;
      if (tok == opts_.eot_id) {
        out[b].stopped_at_eot = true;
        done[b] = true;
      } else if (int64_t(out[b].generated.size()) >= opts_.max_new_tokens) {
        done[b] = true;
      } else {
        all_done = false;
      }
    }
    if (all_done) break;
    dec_.step(in_.data());
    ++stats_.steps;
  }
  stats_.step_seconds = seconds_since(t1);
  return out;
}

template class Generator<float>;
template class Generator<double>;

}  // namespace moessm
