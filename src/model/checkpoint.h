// Model checkpoints: a directory with config.json (HF MambaConfig fields + "moessm") and
// model.safetensors (every table tensor in F32 under its checkpoint name, the tied head not
// duplicated, metadata {"format": "pt"}). Both files are written atomically. Loading checks that
// every tensor is present with the expected shape and that no unknown tensor is present; errors
// name the file and the tensor.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "model/config.h"
#include "model/language_model.h"

namespace moessm {

// A checkpoint directory, or a training run directory whose checkpoint/ is used.
std::string resolve_model_dir(const std::string& dir);
ModelConfig load_model_config(const std::string& dir);  // <dir>/config.json

// A checkpoint directory from a host copy of a parameter buffer laid out by `table` (what a
// model on any device downloads): config.json + model.safetensors.
template <typename T>
void save_checkpoint_dir(const std::string& dir, const ModelConfig& cfg, const ParamTable& table, const T* params,
                         const std::map<std::string, std::string>& metadata = {});
// Reads every tensor of `table` from a safetensors file into dst (host, the table's layout);
// shapes must match and no unknown tensor may be present (the tied lm_head.weight is ignored).
template <typename T>
void read_weights(const std::string& safetensors_path, const ParamTable& table, T* dst);

template <typename T>
void save_model(const std::string& dir, const LanguageModel<T>& model,
                const std::map<std::string, std::string>& metadata = {});

// Loads a model from a checkpoint directory (config + weights).
template <typename T>
std::unique_ptr<LanguageModel<T>> load_model(const std::string& dir);

// Loads weights from a safetensors file into an existing model (shapes must match).
template <typename T>
void load_weights(LanguageModel<T>& model, const std::string& safetensors_path);

// Writes `values` (a buffer laid out like the model's table, e.g. gradients) as F32 safetensors.
template <typename T>
void save_tensors(const std::string& path, const ParamTable& table, const T* values,
                  const std::map<std::string, std::string>& metadata);

}  // namespace moessm
