// Sampler implementation (see sampler.h).
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace moessm {

void SamplingParams::validate() const {
  CHECK(std::isfinite(temperature) && temperature >= 0, "sampling: --temperature must be >= 0 (0 = greedy), got ",
        temperature);
  CHECK(top_k >= 0, "sampling: --top-k must be >= 0 (0 = off), got ", top_k);
  CHECK(top_p > 0 && top_p <= 1, "sampling: --top-p must be in (0, 1] (1 = off), got ", top_p);
}

template <typename T>
int32_t argmax_token(const T* logits, idx_t n) {
  CHECK(n > 0, "argmax_token: empty vocabulary");
  idx_t best = 0;
  for (idx_t i = 0; i < n; ++i) {
    CHECK(!std::isnan(double(logits[i])), "sampling: logit of id ", i, " is NaN");
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

template <typename T>
idx_t candidate_distribution(const T* logits, idx_t n, const SamplingParams& p, int32_t* ids,
                             double* probs) {
  CHECK(p.temperature > 0, "candidate_distribution: temperature must be > 0 (greedy uses argmax_token)");
  const int32_t top = argmax_token(logits, n);
  const double m = double(logits[top]);
  CHECK(std::isfinite(m), "sampling: the largest logit is ", m, " (id ", top, ")");
  for (idx_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(i);
  // Descending logit, then ascending id: a strict total order, so the ranking is deterministic.
  auto before = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  idx_t count = n;
  const bool use_k = p.top_k > 0 && p.top_k < n;
  const bool use_p = p.top_p < 1.0;
  if (use_k) {
    count = p.top_k;
    std::partial_sort(ids, ids + count, ids + n, before);
  } else if (use_p) {
    std::sort(ids, ids + n, before);
  }
  const double inv_t = 1.0 / p.temperature;
  double sum = 0;
  for (idx_t i = 0; i < count; ++i) {
    probs[i] = std::exp((double(logits[ids[i]]) - m) * inv_t);
    sum += probs[i];
  }
  if (use_p) {
    // Smallest prefix whose mass reaches top_p of the (top-k renormalised) distribution.
    const double target = p.top_p * sum;
    double cum = 0;
    idx_t keep = 0;
    while (keep < count) {
      cum += probs[keep++];
      if (cum >= target) break;
    }
    count = keep;
    sum = cum;
  }
  const double inv = 1.0 / sum;
  for (idx_t i = 0; i < count; ++i) probs[i] *= inv;
  return count;
}

Sampler::Sampler(idx_t batch, idx_t vocab_limit, const SamplingParams& params, uint64_t seed)
    : params_(params), n_(vocab_limit) {
  params_.validate();
  CHECK(batch > 0 && vocab_limit > 0, "Sampler: batch ", batch, " and vocabulary ", vocab_limit,
        " must be positive");
  for (idx_t b = 0; b < batch; ++b) rngs_.emplace_back(seed, static_cast<uint64_t>(b));
  ids_.resize(static_cast<size_t>(n_));
  probs_.resize(static_cast<size_t>(n_));
}

template <typename T>
int32_t Sampler::sample(idx_t slot, const T* row) {
  CHECK(slot >= 0 && slot < idx_t(rngs_.size()), "Sampler: slot ", slot, " outside [0, ", rngs_.size(), ")");
  if (params_.temperature == 0) return argmax_token(row, n_);
  const idx_t count = candidate_distribution(row, n_, params_, ids_.data(), probs_.data());
  const double u = rngs_[slot].uniform();
  double acc = 0;
  for (idx_t i = 0; i < count; ++i) {
    acc += probs_[i];
    if (u < acc) return ids_[i];
  }
  return ids_[count - 1];  // u within rounding of 1
}

template int32_t argmax_token(const float*, idx_t);
template int32_t argmax_token(const double*, idx_t);
template idx_t candidate_distribution(const float*, idx_t, const SamplingParams&, int32_t*, double*);
template idx_t candidate_distribution(const double*, idx_t, const SamplingParams&, int32_t*, double*);
template int32_t Sampler::sample(idx_t, const float*);
template int32_t Sampler::sample(idx_t, const double*);

}  // namespace moessm
