// Implementation of CHECK's failure path: format one message and throw.
#include "core/check.h"

#include <cstring>

namespace moessm {

void check_fail(const char* file, int line, const char* cond, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  std::string where = str_cat(base ? base + 1 : file, ":", line);
  std::string text = msg.empty() ? std::string("check failed") : msg;
  if (cond && msg.empty()) text = str_cat("check failed: ", cond);
  throw Error(str_cat(text, "  [", where, "]"));
}

}  // namespace moessm
