// Checkpoint directory I/O (see checkpoint.h).
#include "model/checkpoint.h"

#include <cmath>
#include <vector>

#include "core/check.h"
#include "io/file_util.h"
#include "io/safetensors.h"

namespace moessm {

std::string resolve_model_dir(const std::string& dir) {
  CHECK(is_directory(dir), "model directory '", dir, "' does not exist or is not a directory");
  if (file_exists(path_join(dir, "config.json"))) return dir;
  // A training run directory: use its latest checkpoint.
  for (const char* sub : {"checkpoint", "checkpoint.old"}) {
    const std::string d = path_join(dir, sub);
    if (file_exists(path_join(d, "config.json")) && file_exists(path_join(d, "model.safetensors"))) return d;
  }
  FAIL("model directory '", dir, "' has no config.json (nor a checkpoint/ of a training run)");
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
                         const std::map<std::string, std::string>& metadata) {
  make_dirs(dir);
  save_tensors(path_join(dir, "model.safetensors"), table, params, metadata);
  write_file_atomic(path_join(dir, "config.json"), cfg.to_checkpoint_json().dump(2) + "\n");
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
                                       const T*, const std::map<std::string, std::string>&);     \
  template void read_weights<T>(const std::string&, const ParamTable&, T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm
