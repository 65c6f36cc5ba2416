// Reading token-id files for the inspection commands: whitespace-separated ids, one sequence
// per line (blank lines skipped). Lines may differ in length (e.g. `generate --ids-out` of
// ragged prompts): rows are right-padded with id 0 to the longest, and lengths[] says how many
// ids each row really has. Right padding never changes a causal model's outputs at the real
// positions; callers mask the padded ones (logits: NaN, loss targets: ignored). Errors name the
// file, the line and the offending token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moessm {

struct TokenBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;  // [B, T], right-padded with 0
  std::vector<int64_t> lengths;  // [B] real ids per row (<= T)
};

TokenBatch read_token_ids(const std::string& path, int64_t vocab_size);

}  // namespace moessm
