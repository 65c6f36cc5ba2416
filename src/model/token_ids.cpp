// read_token_ids (see token_ids.h).
#include "model/token_ids.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "core/check.h"
#include "io/file_util.h"

namespace moessm {

TokenBatch read_token_ids(const std::string& path, int64_t vocab_size) {
  std::istringstream in(read_regular_file(path, kMaxIdsFileBytes));
  TokenBatch b;
  std::vector<std::vector<int32_t>> rows;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::istringstream ls(line);
    std::string tok;
    std::vector<int32_t> row;
    while (ls >> tok) {
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(tok.c_str(), &end, 10);
      CHECK(end && *end == '\0' && errno == 0, path, ": line ", lineno, ": '", tok, "' is not an integer token id");
      CHECK(v >= 0 && v < vocab_size, path, ": line ", lineno, ": token id ", v,
            " is outside the vocabulary [0, ", vocab_size, ")");
      row.push_back(static_cast<int32_t>(v));
    }
    if (row.empty()) continue;
    b.T = std::max<int64_t>(b.T, int64_t(row.size()));
    rows.push_back(std::move(row));
  }
  b.B = int64_t(rows.size());
  CHECK(b.B > 0, path, ": no token ids found (expected whitespace-separated ids, one sequence per line)");
  b.ids.assign(size_t(b.B * b.T), 0);
  for (int64_t r = 0; r < b.B; ++r) {
    std::copy(rows[r].begin(), rows[r].end(), b.ids.begin() + r * b.T);
    b.lengths.push_back(int64_t(rows[r].size()));
  }
  return b;
}

}  // namespace moessm
