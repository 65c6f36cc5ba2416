// Decoder: recurrent inference for B independent sequence slots on the one model, on any backend
// (ModelDecoder<Bk>; Decoder<T> is the CPU one), whatever its mixers: it only uses
// Model::forward_last_logits with a carried state, so dense, RoM, Swimba and later mixers plug
// in through Mixer::forward's state_in / state_out.
//
//   prefill(ids[B,T])   runs the chunked scan over T tokens of every slot from the current state
//                       (zero after construction / reset()), in pieces of prefill_chunk() tokens;
//                       logits() = the last position's logits (only those are computed)
//   step(tokens[B])     advances every slot by one token (T = 1); logits() = next-token logits.
//                       tokens are in backend memory (host on the CPU; on CUDA a device buffer,
//                       so a step can be captured in a CUDA graph: CudaGenerator)
//   Invariant (tested): prefill(T) then step×M gives the logits of prefill(T+M).
//   A model with a bounded state (model.max_positions(): full attention's KV cache) refuses
//   prefill / step beyond that many tokens since reset() (checked on the host: no sync).
//
// Memory: the state block (model.state_bytes(B), the backend layout: on the CPU exactly the host
// layout of state files), logits [B,V] and the prefill ids [B,chunk] are allocated once in the
// constructor, in backend memory. The model's arena is planned once for (B, prefill_chunk) and
// prefill pieces and steps run inside that plan: step() allocates nothing, launches nothing but
// the model's ops and never re-plans (static shapes, as a CUDA graph needs).
// One Decoder drives a model at a time: the arena is the model's.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "model/language_model.h"

namespace moessm {

template <typename Bk>
class ModelDecoder {
 public:
  using Act = typename Bk::Act;
  using F = typename Bk::F;
  // The state block as the caller sees it: typed (all-T host layout) on the CPU, raw on a device.
  using StatePtr = std::conditional_t<Bk::kOnDevice, void*, F*>;
  // prefill_chunk 0 = automatic: CPU min(128, max(1, 256 / B)) tokens per forward; CUDA 2048.
  ModelDecoder(Model<Bk>& model, idx_t batch, idx_t prefill_chunk = 0);

  Model<Bk>& model() { return model_; }
  idx_t batch() const { return B_; }
  idx_t vocab() const { return V_; }  // padded vocabulary: the logits' row length
  idx_t prefill_chunk() const { return chunk_; }
  int64_t tokens_consumed() const { return consumed_; }  // per slot, since reset()

  // The whole-model recurrent state of the B slots (backend memory).
  StatePtr state() { return reinterpret_cast<StatePtr>(state_.data()); }
  idx_t state_numel() const { return idx_t(state_.size() / sizeof(F)); }  // F elements (CPU: the state size)

  void reset();  // zero state, no logits, 0 tokens consumed
  // Replaces the state (and optionally the pending logits [B,V]) with saved ones, host fp32 in
  // the state files' layout; `consumed` is the number of tokens the state stands for.
  void load(const float* state, const float* logits, int64_t consumed);

  void prefill(const int32_t* ids, idx_t T_);  // ids [B, T_] on the host, T_ >= 1
  void step(const int32_t* tokens);            // tokens [B] in backend memory

  bool has_logits() const { return has_logits_; }
  const Act* logits() const { return logits_.data(); }  // [B, V], backend memory
  Act* logits_mut() { return logits_.data(); }
  const Act* logits(idx_t slot) const { return logits_.data() + slot * V_; }

  // For tests of the constant-memory contract: every buffer the decoder owns.
  struct Buffers {
    const void *state, *logits, *prefill_logits, *prefill_ids;
    size_t state_cap, logits_cap, prefill_logits_cap, prefill_ids_cap;
  };
  Buffers buffers() const;

 private:
  // consumed_ + n within model.max_positions() (the attention layers' KV cache bound).
  void check_positions(idx_t n) const;
  Model<Bk>& model_;
  idx_t B_, V_, chunk_;
  typename Bk::template Buffer<uint8_t> state_;
  typename Bk::template Buffer<Act> logits_;
  typename Bk::template Buffer<int32_t> ids_;  // [B, chunk] gather buffer for one prefill piece
  std::vector<int32_t> gather_;                // host staging of that piece
  int64_t consumed_ = 0;
  bool has_logits_ = false;
};

template <typename T>
using Decoder = ModelDecoder<CpuBackend<T>>;

}  // namespace moessm
