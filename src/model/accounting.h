// Human-readable accounting lines (DESIGN.md §5): parameters and per-token FLOPs of a model,
// printed by `moessm init`, `train` and the benchmarks so runs can be compared at matched FLOPs.
#pragma once
#include <string>

#include "io/json.h"
#include "model/mixer.h"

namespace moessm {

std::string describe_counts(const MixerCounts& c);  // multi-line text
Json counts_json(const MixerCounts& c);

}  // namespace moessm
