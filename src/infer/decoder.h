// Decoder: recurrent inference for B independent sequence slots on any LanguageModel, whatever
// its mixers (it only uses LanguageModel::forward_logits with a carried state, so dense, RoM,
// Swimba and later mixers plug in through Mixer::forward's state_in / state_out).
//
//   prefill(ids[B,T])   runs the chunked scan over T tokens of every slot from the current state
//                       (zero after construction / reset()), in pieces of prefill_chunk() tokens
//                       (bounds the [B,chunk,V] logits buffer); logits() = last position's logits
//   step(tokens[B])     advances every slot by one token (T = 1); logits() = next-token logits
//   Invariant (tested): prefill(T) then step×M gives the logits of prefill(T+M).
//
// Memory: the state [B·state_size] (model layout: per layer B·state_size_l elements, layout owned
// by the mixer), logits [B,V] and prefill logits [B,prefill_chunk,V] are allocated once in the
// constructor. step() allocates nothing: the model's activation arena is planned for (B, 1) on
// the first step and LanguageModel::prepare is a no-op afterwards (static shapes, as a CUDA-graph
// decode path needs). A prefill re-plans the arena for its chunk length (at most two shapes per
// prefill: full chunks and the remainder), and the next step plans (B, 1) again.
// One Decoder drives a model at a time: the arena is the model's.
#pragma once
#include <cstdint>
#include <vector>

#include "model/language_model.h"

namespace moessm {

template <typename T>
class Decoder {
 public:
  // prefill_chunk 0 = automatic: min(128, max(1, 256 / B)) tokens per forward.
  Decoder(LanguageModel<T>& model, idx_t batch, idx_t prefill_chunk = 0);

  LanguageModel<T>& model() { return model_; }
  idx_t batch() const { return B_; }
  idx_t vocab() const { return V_; }  // padded vocabulary: the logits' row length
  idx_t prefill_chunk() const { return chunk_; }
  int64_t tokens_consumed() const { return consumed_; }  // per slot, since reset()

  // The whole-model recurrent state of the B slots (B·model.state_size() elements).
  T* state() { return state_.data(); }
  const T* state() const { return state_.data(); }
  idx_t state_numel() const { return idx_t(state_.size()); }

  void reset();  // zero state, no logits, 0 tokens consumed
  // Replaces the state (and optionally the pending logits [B,V]) with saved ones; `consumed`
  // is the number of tokens the state stands for.
  void load(const T* state, const T* logits, int64_t consumed);

  void prefill(const int32_t* ids, idx_t T_);  // ids [B, T_], T_ >= 1
  void step(const int32_t* tokens);            // tokens [B]

  bool has_logits() const { return has_logits_; }
  const T* logits() const { return logits_.data(); }  // [B, V]
  const T* logits(idx_t slot) const { return logits_.data() + slot * V_; }

  // For tests of the constant-memory contract: every buffer the decoder owns.
  struct Buffers {
    const void *state, *logits, *prefill_logits, *prefill_ids;
    size_t state_cap, logits_cap, prefill_logits_cap, prefill_ids_cap;
  };
  Buffers buffers() const;

 private:
  LanguageModel<T>& model_;
  idx_t B_, V_, chunk_;
  std::vector<T> state_, logits_, prefill_logits_;
  std::vector<int32_t> prefill_ids_;  // [B, chunk] gather buffer for one prefill piece
  int64_t consumed_ = 0;
  bool has_logits_ = false;
};

}  // namespace moessm
