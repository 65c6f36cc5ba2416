// Human-readable accounting lines (DESIGN.md §5): parameters and per-token FLOPs of a model,
// printed by `moessm init`, `train` and the benchmarks so runs can be compared at matched FLOPs.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "io/json.h"
#include "model/mixer.h"

namespace moessm {

std::string describe_counts(const MixerCounts& c);  // multi-line text
// One line per layer: "layer 1 mlp: params total ..., active ...; forward FLOPs ... (GEMM ...,
// router ..., attention ..., other ...)", from (type, counts) per layer (Mixer::type(), Mixer::counts()).
std::string describe_layer_counts(const std::vector<std::pair<std::string, MixerCounts>>& layers);
Json counts_json(const MixerCounts& c);

}  // namespace moessm
