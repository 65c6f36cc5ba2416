// document_index_from_separators (see packing.h).
#include "data/packing.h"

#include "core/check.h"

namespace moessm {

int64_t document_index_from_separators(int32_t* seq_idx, const int32_t* ids, int64_t B, int64_t T, int32_t sep) {
  CHECK(B >= 1 && T >= 1, "document_index_from_separators: expected B >= 1 and T >= 1, found B=", B, " T=", T);
  CHECK(sep >= 0, "document_index_from_separators: the separator id must be >= 0, found ", sep);
  int64_t starts = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* row = ids + b * T;
    int32_t* s = seq_idx + b * T;
    s[0] = 0;
    for (int64_t t = 1; t < T; ++t) {
      const bool start = row[t] == sep;
      s[t] = s[t - 1] + (start ? 1 : 0);
      starts += start ? 1 : 0;
    }
  }
  return starts;
}

}  // namespace moessm
