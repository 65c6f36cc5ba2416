// Decoder implementation (see decoder.h).
#include "infer/decoder.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"

namespace moessm {

template <typename T>
Decoder<T>::Decoder(LanguageModel<T>& model, idx_t batch, idx_t prefill_chunk)
    : model_(model), B_(batch), V_(model.vocab()) {
  CHECK(batch > 0, "Decoder: batch must be positive, got ", batch);
  CHECK(prefill_chunk >= 0, "Decoder: prefill_chunk must be >= 0 (0 = automatic), got ", prefill_chunk);
  chunk_ = prefill_chunk > 0 ? prefill_chunk : std::min<idx_t>(128, std::max<idx_t>(1, 256 / batch));
  state_.assign(static_cast<size_t>(B_ * model.state_size()), T(0));
  logits_.assign(static_cast<size_t>(B_ * V_), T(0));
  prefill_logits_.assign(static_cast<size_t>(B_ * chunk_ * V_), T(0));
  prefill_ids_.assign(static_cast<size_t>(B_ * chunk_), 0);
}

template <typename T>
void Decoder<T>::reset() {
  std::fill(state_.begin(), state_.end(), T(0));
  consumed_ = 0;
  has_logits_ = false;
}

template <typename T>
void Decoder<T>::load(const T* state, const T* logits, int64_t consumed) {
  std::copy(state, state + state_.size(), state_.begin());
  has_logits_ = logits != nullptr;
  if (logits) std::copy(logits, logits + logits_.size(), logits_.begin());
  consumed_ = consumed;
}

template <typename T>
void Decoder<T>::prefill(const int32_t* ids, idx_t T_) {
  CHECK(T_ >= 1, "Decoder::prefill: need at least one token, got ", T_);
  for (idx_t t0 = 0; t0 < T_; t0 += chunk_) {
    const idx_t n = std::min(chunk_, T_ - t0);
    for (idx_t b = 0; b < B_; ++b)
      std::memcpy(&prefill_ids_[b * n], ids + b * T_ + t0, sizeof(int32_t) * n);
    model_.prepare(B_, n, false);
    model_.forward_logits(prefill_logits_.data(), prefill_ids_.data(), B_, n, state_.data(),
                          state_.data());
    if (t0 + n == T_)
      for (idx_t b = 0; b < B_; ++b)
        std::memcpy(&logits_[b * V_], &prefill_logits_[(b * n + n - 1) * V_], sizeof(T) * V_);
  }
  consumed_ += T_;
  has_logits_ = true;
}

template <typename T>
void Decoder<T>::step(const int32_t* tokens) {
  model_.prepare(B_, 1, false);  // a no-op after the first step
  model_.forward_logits(logits_.data(), tokens, B_, 1, state_.data(), state_.data());
  ++consumed_;
  has_logits_ = true;
}

template <typename T>
typename Decoder<T>::Buffers Decoder<T>::buffers() const {
  return {state_.data(), logits_.data(), prefill_logits_.data(), prefill_ids_.data(),
          state_.capacity(), logits_.capacity(), prefill_logits_.capacity(), prefill_ids_.capacity()};
}

template class Decoder<float>;
template class Decoder<double>;

}  // namespace moessm
