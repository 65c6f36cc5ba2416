// Reading token-id files for the inspection commands: whitespace-separated ids, one sequence
// per line, all lines of equal length (blank lines skipped). Errors name the file, the line and
// the offending token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moessm {

struct TokenBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;  // [B, T]
};

TokenBatch read_token_ids(const std::string& path, int64_t vocab_size);

}  // namespace moessm
