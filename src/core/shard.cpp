// rank_slice (see shard.h).
#include "core/shard.h"

#include <algorithm>

#include "core/check.h"

namespace moessm {

RankSlice rank_slice(size_t n, int world_size, int rank) {
  CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank_slice: rank ", rank, " of a world of ", world_size);
  const size_t W = size_t(world_size), r = size_t(rank), base = n / W, extra = n % W;
  RankSlice s;
  s.lo = r * base + std::min(r, extra);
  s.hi = s.lo + base + (r < extra ? 1 : 0);
  return s;
}

}  // namespace moessm
