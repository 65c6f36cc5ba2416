// The mixer registry (see mixer_registry.h): one table, one line per layer type.
#include "model/mixer_registry.h"

#include "backend/backends.h"
#include "core/check.h"
#include "model/mamba_mixer.h"
#include "model/rom_mixer.h"
#include "model/separated_moe_ssm_mixer.h"
#include "model/swimba_mixer.h"

namespace moessm {

MixerCounts& MixerCounts::operator+=(const MixerCounts& o) {
  total_params += o.total_params;
  active_params += o.active_params;
  gemm_flops += o.gemm_flops;
  scan_flops += o.scan_flops;
  conv_flops += o.conv_flops;
  router_flops += o.router_flops;
  other_flops += o.other_flops;
  return *this;
}

size_t state_part_offset(const std::vector<StatePart>& parts, size_t i, idx_t B) {
  size_t off = 0;
  for (size_t k = 0; k < i && k < parts.size(); ++k)
    off += size_t(B * parts[k].per_seq) * dtype_size(parts[k].dtype);
  return off;
}
size_t state_block_bytes(const std::vector<StatePart>& parts, idx_t B) {
  return state_part_offset(parts, parts.size(), B);
}

namespace {

template <typename Bk>
using Factory = std::unique_ptr<Mixer<Bk>> (*)(const ModelConfig&, const MixerSpec&);

// A mixer written against its backend's ops: one class template for every backend.
template <template <typename> class M, typename Bk>
std::unique_ptr<Mixer<Bk>> make_any(const ModelConfig& cfg, const MixerSpec& spec) {
  return std::make_unique<M<Bk>>(cfg, spec);
}
// A mixer that still calls the CPU reference ops directly (model/cpu_mixer.h): CPU backends only.
template <template <typename> class M, typename Bk>
constexpr Factory<Bk> cpu_only() {
  if constexpr (Bk::kOnDevice) {
    return nullptr;
  } else {
    return [](const ModelConfig& cfg, const MixerSpec& spec) -> std::unique_ptr<Mixer<Bk>> {
      return std::make_unique<M<typename Bk::Act>>(cfg, spec);
    };
  }
}

template <typename Bk>
struct MixerType {
  const char* name;
  const char* cuda_needs;  // the CUDA ops this type still lacks ("" = runs on CUDA)
  Factory<Bk> make;
};

template <typename Bk>
const std::vector<MixerType<Bk>>& registry() {
  static const std::vector<MixerType<Bk>> types = {
      {"mamba", "", &make_any<MambaMixer, Bk>},
      {"rom", "router_topk, moe_permute and grouped_matmul (cuda)", cpu_only<RomMixer, Bk>()},
      {"swimba", "router_topk, moe_permute, grouped_matmul and the parameter-space mix (cuda)",
       cpu_only<SwimbaMixer, Bk>()},
      {"separated_moe_ssm", "router_topk and the batched expert scan (cuda)", cpu_only<SeparatedMoeSsmMixer, Bk>()},
  };
  return types;
}

template <typename Bk>
const MixerType<Bk>* find_type(const std::string& name) {
  for (const auto& t : registry<Bk>())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace

const std::vector<std::string>& mixer_type_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& t : registry<CpuBackend<float>>()) n.push_back(t.name);
    return n;
  }();
  return names;
}

bool is_mixer_type(const std::string& name) { return find_type<CpuBackend<float>>(name) != nullptr; }

std::string mixer_missing_op(const ModelConfig& cfg, const MixerSpec& spec, const std::string& device) {
  const auto* t = find_type<CpuBackend<float>>(spec.type);
  if (!t) return "a registered mixer type named '" + spec.type + "'";
  if (device == "cpu") return "";
  CHECK(device == "cuda", "unknown device '", device, "' (expected cpu or cuda)");
  if (*t->cuda_needs) return t->cuda_needs;
  // Limits of the CUDA kernels every Mamba-style layer uses.
  if (cfg.d_conv > 8) return "causal_conv1d with d_conv " + std::to_string(cfg.d_conv) + " (cuda: d_conv <= 8)";
  if (cfg.d_state > 256) return "selective_scan with d_state " + std::to_string(cfg.d_state) + " (cuda: d_state <= 256)";
  return "";
}

namespace {
void check_layer_supported(const ModelConfig& cfg, const MixerSpec& spec, size_t layer, const std::string& device) {
  const std::string missing = mixer_missing_op(cfg, spec, device);
  CHECK(missing.empty(), "layer ", layer, ": ", spec.type, " on ", device, " needs ", missing,
        device == "cuda" ? " (run this model with --device cpu)" : "");
}
}  // namespace

void check_model_supported(const ModelConfig& cfg, const std::string& device) {
  for (size_t l = 0; l < cfg.layers.size(); ++l) check_layer_supported(cfg, cfg.layers[l], l, device);
}

template <typename Bk>
std::unique_ptr<Mixer<Bk>> make_mixer(const ModelConfig& cfg, const MixerSpec& spec, int layer) {
  check_layer_supported(cfg, spec, size_t(layer), Bk::kDevice);
  const MixerType<Bk>* t = find_type<Bk>(spec.type);
  CHECK(t && t->make, "layer ", layer, ": mixer type '", spec.type, "' has no ", Bk::kName, " implementation");
  return t->make(cfg, spec);
}

template std::unique_ptr<Mixer<CpuBackend<float>>> make_mixer(const ModelConfig&, const MixerSpec&, int);
template std::unique_ptr<Mixer<CpuBackend<double>>> make_mixer(const ModelConfig&, const MixerSpec&, int);
#ifdef MOESSM_CUDA
template std::unique_ptr<Mixer<CudaBackend<float>>> make_mixer(const ModelConfig&, const MixerSpec&, int);
template std::unique_ptr<Mixer<CudaBackend<__nv_bfloat16>>> make_mixer(const ModelConfig&, const MixerSpec&, int);
#endif

}  // namespace moessm
