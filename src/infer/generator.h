// Generator: the decode loop over a Decoder and a Sampler, for B slots whose prompts may differ
// in length.
//
// run(prompts, on_token):
//   1. the first min_b |prompt_b| tokens of every slot go through one batched prefill (chunked
//      scan); when that minimum is 0 the decoder must already hold logits (a loaded snapshot);
//   2. then one step per iteration for all B slots (static shape): a slot still inside its prompt
//      is fed its next prompt token (teacher forcing, exact — no padding); a slot past its prompt
//      samples a token from its logits, reports it through on_token, and feeds it back; a
//      finished slot is fed its last token and its outputs are ignored.
//   A slot finishes at the tokenizer's end-of-text id (kept in `generated`) or after
//   max_new_tokens tokens; the loop stops when every slot has finished (no step is run for
//   logits nobody will read). max_new_tokens = 0 only feeds the prompts.
// Timing (steady clock) is split into the batched prefill and the step loop.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/decoder.h"
#include "infer/sampler.h"

namespace moessm {

struct GenerateOptions {
  SamplingParams sampling;
  int64_t max_new_tokens = 128;
  uint64_t seed = 0;
  int32_t eot_id = -1;     // -1: none
  idx_t vocab_limit = 0;   // ids sampled from [0, vocab_limit); 0 = the model's vocab_size
};

struct SlotOutput {
  std::vector<int32_t> generated;
  bool stopped_at_eot = false;
};

struct GenerateStats {
  int64_t prefill_tokens = 0;    // tokens in the batched prefill, all slots
  double prefill_seconds = 0;
  int64_t forced_tokens = 0;     // prompt tokens fed through steps (ragged prompts)
  int64_t generated_tokens = 0;  // sampled tokens, all slots
  int64_t steps = 0;             // decoder steps (each advances all B slots)
  double step_seconds = 0;       // the step loop, sampling included
};

template <typename T>
class Generator {
 public:
  Generator(Decoder<T>& decoder, const GenerateOptions& opts);
  using TokenCallback = std::function<void(idx_t slot, int32_t token)>;
  // prompts: one per slot (decoder.batch() of them), fed from the decoder's current state.
  // after_prefill (optional) runs right after the batched prefill (or at once when there is
  // none), e.g. to save the state after equal-length prompts.
  std::vector<SlotOutput> run(const std::vector<std::vector<int32_t>>& prompts,
                              const TokenCallback& on_token = nullptr,
                              const std::function<void()>& after_prefill = nullptr);
  const GenerateStats& stats() const { return stats_; }
  Sampler& sampler() { return sampler_; }

 private:
  Decoder<T>& dec_;
  GenerateOptions opts_;
  Sampler sampler_;
  GenerateStats stats_;
  std::vector<int32_t> in_;  // [B] step inputs
};

}  // namespace moessm
