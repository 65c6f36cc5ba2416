// Sampler: picks the next token of each decode slot from its logits row.
//
// Order of operations (as Hugging Face generate): temperature → top-k → top-p → draw.
//   temperature == 0      greedy: argmax, ties broken towards the lowest id, no random draw
//   top_k > 0             keep the k highest logits (0 = off; k ≥ vocab = off)
//   top_p < 1             keep the smallest set of the highest-probability tokens whose mass
//                         reaches top_p (the first token is always kept); 1 = off
// Only ids in [0, vocab_limit) are candidates: the padded tail of the vocabulary, and ids the
// tokenizer cannot decode, are never produced.
//
// Reproducibility: slot b draws from its own counter-based stream Rng(seed, b), one uniform per
// sampled token, so a slot's tokens depend only on (seed, slot, its logits) — not on the other
// slots or the thread count. Ties in the ranking are broken by id, so sorting is deterministic.
// All scratch buffers are allocated in the constructor; sample() allocates nothing.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "ops/op_common.h"

namespace moessm {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  void validate() const;     // CHECKs the ranges, naming the option
};

// The candidate distribution after temperature / top-k / top-p on logits[0, n): writes the kept
// ids and their renormalised probabilities (in double) and returns how many were kept. When a
// filter is active the candidates come sorted by descending probability (ties: lower id first);
// otherwise in id order. Requires temperature > 0. ids/probs need room for n entries.
template <typename T>
idx_t candidate_distribution(const T* logits, idx_t n, const SamplingParams& p, int32_t* ids,
                             double* probs);

// Greedy choice over logits[0, n): the lowest id among the maxima. CHECKs for NaN logits.
template <typename T>
int32_t argmax_token(const T* logits, idx_t n);

class Sampler {
 public:
  Sampler(idx_t batch, idx_t vocab_limit, const SamplingParams& params, uint64_t seed);
  const SamplingParams& params() const { return params_; }
  idx_t vocab_limit() const { return n_; }
  // Next token of `slot` from its logits row (at least vocab_limit entries).
  template <typename T>
  int32_t sample(idx_t slot, const T* logits_row);
  Rng& rng(idx_t slot) { return rngs_[slot]; }

 private:
  SamplingParams params_;
  idx_t n_;
  std::vector<Rng> rngs_;
  std::vector<int32_t> ids_;   // scratch [vocab_limit]
  std::vector<double> probs_;  // scratch [vocab_limit]
};

}  // namespace moessm
