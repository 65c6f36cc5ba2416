// ModelDecoder implementation (see decoder.h), instantiated for every backend.
#include "infer/decoder.h"

#include <algorithm>
#include <cstring>

#include "backend/backends.h"
#include "core/check.h"

namespace moessm {

template <typename Bk>
ModelDecoder<Bk>::ModelDecoder(Model<Bk>& model, idx_t batch, idx_t prefill_chunk)
    : model_(model), B_(batch), V_(model.vocab()) {
  CHECK(batch > 0, "Decoder: batch must be positive, got ", batch);
  CHECK(prefill_chunk >= 0, "Decoder: prefill_chunk must be >= 0 (0 = automatic), got ", prefill_chunk);
  chunk_ = prefill_chunk > 0 ? prefill_chunk
                             : (Bk::kOnDevice ? 2048 : std::min<idx_t>(128, std::max<idx_t>(1, 256 / batch)));
  Bk::alloc(state_, std::max<size_t>(1, model.state_bytes(B_)));
  Bk::alloc(logits_, size_t(B_ * V_));
  Bk::alloc(ids_, size_t(B_ * chunk_));
  gather_.assign(size_t(B_ * chunk_), 0);
  model_.prepare(B_, chunk_, false);
}

template <typename Bk>
void ModelDecoder<Bk>::reset() {
  Bk::zero(model_.ctx(), state_.data(), idx_t(state_.size()));
  Bk::sync(model_.ctx());
  consumed_ = 0;
  has_logits_ = false;
}

template <typename Bk>
void ModelDecoder<Bk>::load(const float* state, const float* logits, int64_t consumed) {
  model_.state_from_host(state_.data(), state, B_);
  has_logits_ = logits != nullptr;
  if (logits) {
    std::vector<Act> tmp(size_t(B_ * V_));
    for (size_t i = 0; i < tmp.size(); ++i) tmp[i] = Act(logits[i]);
    Bk::from_host(model_.ctx(), logits_.data(), tmp.data(), B_ * V_);
  }
  consumed_ = consumed;
}

template <typename Bk>
void ModelDecoder<Bk>::prefill(const int32_t* ids, idx_t T_) {
  CHECK(T_ >= 1, "Decoder::prefill: need at least one token, got ", T_);
  check_positions(T_);
  model_.prepare(B_, chunk_, false);  // a no-op unless the model was used for another shape
  for (idx_t t0 = 0; t0 < T_; t0 += chunk_) {
    const idx_t n = std::min(chunk_, T_ - t0);
    for (idx_t b = 0; b < B_; ++b) std::memcpy(&gather_[size_t(b * n)], ids + b * T_ + t0, sizeof(int32_t) * n);
    for (idx_t i = 0; i < B_ * n; ++i)
      CHECK(gather_[size_t(i)] >= 0 && gather_[size_t(i)] < model_.config().vocab_size, "token id ",
            gather_[size_t(i)], " is outside the vocabulary [0, ", model_.config().vocab_size, ")");
    Bk::from_host(model_.ctx(), ids_.data(), gather_.data(), B_ * n);
    model_.forward_last_logits(logits_.data(), ids_.data(), B_, n, state_.data(), state_.data());
  }
  Bk::sync(model_.ctx());
  consumed_ += T_;
  has_logits_ = true;
}

template <typename Bk>
void ModelDecoder<Bk>::step(const int32_t* tokens) {
  check_positions(1);
  model_.prepare(B_, chunk_, false);  // a no-op: static shapes
  model_.forward_last_logits(logits_.data(), tokens, B_, 1, state_.data(), state_.data());
  ++consumed_;
  has_logits_ = true;
}

template <typename Bk>
void ModelDecoder<Bk>::check_positions(idx_t n) const {
  const int64_t bound = model_.max_positions();
  CHECK(bound == 0 || consumed_ + n <= bound, "Decoder: ", consumed_, " + ", n,
        " tokens exceed the model's bound of ", bound,
        " positions per state (an attention layer's max_context: its KV cache holds that many)");
}

template <typename Bk>
typename ModelDecoder<Bk>::Buffers ModelDecoder<Bk>::buffers() const {
  return {state_.data(), logits_.data(), nullptr, ids_.data(),
          state_.size() / sizeof(F), logits_.size(), 0, ids_.size()};
}

MOESSM_INSTANTIATE_FOR_BACKENDS(ModelDecoder)

}  // namespace moessm
