// Contiguous rank slices: rank r's share [lo, hi) of n items split over W ranks, the first n mod W
// ranks one item more. One split for everything sharded by rank: the all-reduce's chunks and
// ZeRO-1's moment shards (dist/dist.h) and each rank's experts under expert parallelism
// (core/params.h, dist/expert_exchange.h).
#pragma once
#include <cstddef>

namespace moessm {

struct RankSlice {
  size_t lo = 0, hi = 0;
  size_t size() const { return hi - lo; }
};

// CHECKs 1 <= world_size and 0 <= rank < world_size.
RankSlice rank_slice(size_t n, int world_size, int rank);

}  // namespace moessm
