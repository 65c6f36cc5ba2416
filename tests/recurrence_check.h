// The recurrence invariant of every mixer, checked on a whole model (DESIGN.md §1): running ids
// [B, T] in one pass gives the same logits as a prefill of T1 tokens, three single-token steps
// and then the rest, with the recurrent state carried between the calls (state_in aliasing
// state_out, as the decoder does). Shared by the model, RoM, Swimba and separated tests.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "model/language_model.h"
#include "testing.h"

namespace moessm::testing {

// Returns max |pieces - one pass| / max |one pass| over all logits. Token ids are drawn in
// [0, vocab) from `seed`. T1 + 3 < T.
inline double prefill_steps_vs_one_pass(LanguageModel<double>& m, idx_t B, idx_t T, idx_t T1,
                                        int32_t vocab, uint64_t seed = 6) {
  const idx_t V = m.vocab();
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  for (auto& x : ids) x = int32_t(rng.below(uint64_t(vocab)));
  std::vector<double> full(static_cast<size_t>(B * T * V)), parts(full.size());
  m.prepare(B, T, false);
  m.forward_logits(full.data(), ids.data(), B, T, nullptr, nullptr);
  std::vector<double> state(static_cast<size_t>(m.state_size() * B), 0.0);
  auto run = [&](idx_t t0, idx_t len, bool first) {
    std::vector<int32_t> seg(static_cast<size_t>(B * len));
    for (idx_t b = 0; b < B; ++b)
      for (idx_t t = 0; t < len; ++t) seg[b * len + t] = ids[b * T + t0 + t];
    std::vector<double> out(static_cast<size_t>(B * len * V));
    m.prepare(B, len, false);
    m.forward_logits(out.data(), seg.data(), B, len, first ? nullptr : state.data(), state.data());
    for (idx_t b = 0; b < B; ++b)
      for (idx_t t = 0; t < len; ++t)
        for (idx_t v = 0; v < V; ++v) parts[(b * T + t0 + t) * V + v] = out[(b * len + t) * V + v];
  };
  run(0, T1, true);
  for (idx_t t = T1; t < T1 + 3; ++t) run(t, 1, false);  // three single-token steps
  run(T1 + 3, T - T1 - 3, false);
  return max_rel_diff(parts.data(), full.data(), full.size());
}

}  // namespace moessm::testing
