// Checkpoint directory I/O (see checkpoint.h).
#include "model/checkpoint.h"

#include <cctype>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "io/file_util.h"
#include "io/safetensors.h"

namespace moessm {

std::string checkpoint_generation_name(int64_t step) { return "checkpoint-" + std::to_string(step); }

int64_t checkpoint_generation_step(const std::string& name) {
  const std::string prefix = "checkpoint-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18 || (digits.size() > 1 && digits[0] == '0')) return -1;
  for (char c : digits)
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
  return std::stoll(digits);
}

bool is_complete_generation(const std::string& dir, int64_t step) {
  const std::string marker = path_join(dir, kCheckpointMarker);
  if (!file_exists(marker)) return false;
  try {
    return read_regular_file(marker, 64) == std::to_string(step) + "\n";
  } catch (const Error&) {
    return false;
  }
}

std::string newest_run_checkpoint(const std::string& run_dir) {
  if (!is_directory(run_dir)) return "";
  int64_t best = -1;
  for (const std::string& name : list_dir(run_dir)) {
    const int64_t step = checkpoint_generation_step(name);
    if (step > best && is_complete_generation(path_join(run_dir, name), step)) best = step;
  }
  if (best >= 0) return path_join(run_dir, checkpoint_generation_name(best));
  for (const char* legacy : {"checkpoint", "checkpoint.old"}) {  // runs of an older moessm
    const std::string d = path_join(run_dir, legacy);
    if (!is_symlink(d) && file_exists(path_join(d, "trainer_state.json")) && file_exists(path_join(d, "config.json")) &&
        file_exists(path_join(d, "model.safetensors")))
      return d;
  }
  return "";
}

std::string existing_output(const std::string& dir) {
  if (!is_directory(dir)) return "";
  for (const char* f : {"config.json", "model.safetensors"})
    if (file_exists(path_join(dir, f))) return std::string("a checkpoint (") + f + ")";
  if (file_exists(path_join(dir, "metrics.jsonl"))) return "a training run (metrics.jsonl)";
  for (const std::string& name : list_dir(dir))
    if (name == "checkpoint" || name == "checkpoint.old" || name == "checkpoint.tmp" ||
        checkpoint_generation_step(name) >= 0)
      return "a training run (" + name + "/)";
  return "";
}

std::string resolve_model_dir(const std::string& dir) {
  CHECK(is_directory(dir), "model directory '", dir, "' does not exist or is not a directory");
  if (file_exists(path_join(dir, "config.json"))) return dir;
  // A training run directory: use its newest complete checkpoint.
  const std::string ck = newest_run_checkpoint(dir);
  if (!ck.empty()) return ck;
  FAIL("model directory '", dir, "' has no config.json (nor a complete checkpoint of a training run)");
}

ModelConfig load_model_config(const std::string& dir_in) {
  const std::string dir = resolve_model_dir(dir_in);
  const std::string path = path_join(dir, "config.json");
  return ModelConfig::from_checkpoint_json(Json::parse_file(path), path);
}

template <typename T>
void save_tensors(const std::string& path, const ParamTable& table, const T* values,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<float> f32(table.total());
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(values[i]);
  SafetensorsWriter w;
  table.visit([&](const ParamInfo& p) { w.add(p.name, DType::F32, p.shape, f32.data() + p.offset); });
  w.set_metadata("format", "pt");
  for (const auto& kv : metadata) w.set_metadata(kv.first, kv.second);
  w.write(path);
}

template <typename T>
void save_checkpoint_dir(const std::string& dir, const ModelConfig& cfg, const ParamTable& table, const T* params,
                         const std::map<std::string, std::string>& metadata, const SpecialTokenIds& ids) {
  make_dirs(dir);
  save_tensors(path_join(dir, "model.safetensors"), table, params, metadata);
  write_file_atomic(path_join(dir, "config.json"), cfg.to_checkpoint_json(ids).dump(2) + "\n");
}

template <typename T>
void save_model(const std::string& dir, const LanguageModel<T>& model,
                const std::map<std::string, std::string>& metadata) {
  save_checkpoint_dir(dir, model.config(), model.table(), model.params.data(), metadata);
}

template <typename T>
void read_weights(const std::string& path, const ParamTable& table, T* dst) {
  SafetensorsFile f = SafetensorsFile::open(path);
  for (const SafetensorsEntry& e : f.entries()) {
    if (e.name == "lm_head.weight") continue;  // a tied head some writers duplicate
    CHECK(table.find(e.name) != nullptr, path, ": unexpected tensor '", e.name,
          "' (not a parameter of this model's config)");
  }
  table.visit([&](const ParamInfo& p) {
    f.read_into<T>(p.name, p.shape, dst + p.offset);
    for (size_t i = 0; i < p.numel; ++i)
      CHECK(std::isfinite(double(dst[p.offset + i])), path, ": tensor '", p.name, "' holds a non-finite value (",
            double(dst[p.offset + i]), " at element ", i, "): the checkpoint is damaged or came from a diverged run");
  });
}

template <typename T>
void load_weights(LanguageModel<T>& model, const std::string& path) {
  read_weights(path, model.table(), model.params.data());
}

template <typename T>
std::unique_ptr<LanguageModel<T>> load_model(const std::string& dir_in) {
  const std::string dir = resolve_model_dir(dir_in);
  auto model = std::make_unique<LanguageModel<T>>(load_model_config(dir));
  const std::string path = path_join(dir, "model.safetensors");
  CHECK(file_exists(path), "model directory '", dir, "' has no model.safetensors");
  load_weights(*model, path);
  return model;
}

#define INSTANTIATE(T)                                                                          \
  template void save_model<T>(const std::string&, const LanguageModel<T>&,                     \
                              const std::map<std::string, std::string>&);                      \
  template std::unique_ptr<LanguageModel<T>> load_model<T>(const std::string&);                 \
  template void load_weights<T>(LanguageModel<T>&, const std::string&);                         \
  template void save_tensors<T>(const std::string&, const ParamTable&, const T*,                \
                                const std::map<std::string, std::string>&);                      \
  template void save_checkpoint_dir<T>(const std::string&, const ModelConfig&, const ParamTable&,  \
                                       const T*, const std::map<std::string, std::string>&,      \
                                       const SpecialTokenIds&);                                  \
  template void read_weights<T>(const std::string&, const ParamTable&, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm
