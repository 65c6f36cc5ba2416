// The one registry of mixer (layer) types: name → factory for every backend, and supports(),
// which names the ops a backend still lacks for a layer (ggml's supports_op). ModelConfig
// checks names against it, the model builds its layers through it, and a config with a layer the
// chosen device cannot run fails before any work with a message naming the layer, the device and
// the missing op. Adding a mixer type: its files, one line in mixer_registry.cpp, its tests.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/mixer.h"

namespace moessm {

// Every registered type name, in registry order ("mamba", "rom", ...).
const std::vector<std::string>& mixer_type_names();
bool is_mixer_type(const std::string& name);
// "" when `device` ("cpu" or "cuda") runs this layer; else the missing op(s), e.g.
// "grouped_matmul (cuda)", or the limit a kernel has ("d_conv <= 8 on cuda").
std::string mixer_missing_op(const ModelConfig& cfg, const MixerSpec& spec, const std::string& device);
// Checks every layer of cfg for `device`; the error names the layer, the type, the device and
// what is missing.
void check_model_supported(const ModelConfig& cfg, const std::string& device);

// Builds the mixer for one layer from its spec (validates the spec's options).
template <typename Bk>
std::unique_ptr<Mixer<Bk>> make_mixer(const ModelConfig& cfg, const MixerSpec& spec, int layer);

}  // namespace moessm
