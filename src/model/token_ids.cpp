// read_token_ids (see token_ids.h).
#include "model/token_ids.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "core/check.h"
#include "io/file_util.h"

namespace moessm {

TokenBatch read_token_ids(const std::string& path, int64_t vocab_size) {
  std::istringstream in(read_regular_file(path, kMaxIdsFileBytes));
  TokenBatch b;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::istringstream ls(line);
    std::string tok;
    int64_t n = 0;
    while (ls >> tok) {
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(tok.c_str(), &end, 10);
      CHECK(end && *end == '\0' && errno == 0, path, ": line ", lineno, ": '", tok, "' is not an integer token id");
      CHECK(v >= 0 && v < vocab_size, path, ": line ", lineno, ": token id ", v,
            " is outside the vocabulary [0, ", vocab_size, ")");
      b.ids.push_back(static_cast<int32_t>(v));
      ++n;
    }
    if (n == 0) continue;
    if (b.B == 0) b.T = n;
    CHECK(n == b.T, path, ": line ", lineno, " has ", n, " ids, expected ", b.T,
          " (all sequences must have equal length)");
    ++b.B;
  }
  CHECK(b.B > 0, path, ": no token ids found (expected whitespace-separated ids, one sequence per line)");
  return b;
}

}  // namespace moessm
