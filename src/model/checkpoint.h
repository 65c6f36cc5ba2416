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

// A checkpoint directory, or a training run directory whose newest complete checkpoint is used.
std::string resolve_model_dir(const std::string& dir);

// Training run directories hold checkpoint generations <run>/checkpoint-<step>/. A generation is
// complete when its marker file COMPLETE holds "<step>\n" (its step, as in the directory's
// name); the trainer writes the marker last, after every other file of the generation is
// written and fsync'ed. `checkpoint` is a symbolic link to a complete generation, for people
// and tools; readers do not depend on it.
constexpr const char* kCheckpointMarker = "COMPLETE";
std::string checkpoint_generation_name(int64_t step);  // "checkpoint-<step>"
// The step of a generation directory name ("checkpoint-12" -> 12), or -1 for other names.
int64_t checkpoint_generation_step(const std::string& name);
bool is_complete_generation(const std::string& dir, int64_t step);
// The newest complete checkpoint of a run directory: the complete generation of the highest
// step, else a checkpoint/ or checkpoint.old/ directory of an older moessm (one with
// trainer_state.json, config.json and model.safetensors); "" when there is none.
std::string newest_run_checkpoint(const std::string& run_dir);
// What an output directory already holds that a new `init` or `train` would replace: "" when
// nothing (absent or empty of moessm files), else a description ("a checkpoint (config.json)",
// "a training run (metrics.jsonl)", ...).
std::string existing_output(const std::string& dir);
ModelConfig load_model_config(const std::string& dir);  // <dir>/config.json

// A checkpoint directory from a host copy of a parameter buffer laid out by `table` (what a
// model on any device downloads): config.json + model.safetensors; `ids` are the tokenizer's
// special tokens for config.json.
template <typename T>
void save_checkpoint_dir(const std::string& dir, const ModelConfig& cfg, const ParamTable& table, const T* params,
                         const std::map<std::string, std::string>& metadata = {},
                         const SpecialTokenIds& ids = SpecialTokenIds());
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
