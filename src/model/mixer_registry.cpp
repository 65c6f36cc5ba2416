// The mixer registry (see mixer_registry.h): one table, one line per layer type.
#include "model/mixer_registry.h"

#include "backend/backends.h"
#include "core/check.h"
#include "model/attention_mixer.h"
#include "model/mamba_mixer.h"
#include "model/mlp_mixer.h"
#include "model/moe_mlp_mixer.h"
#include "model/rom_mixer.h"
#include "model/separated_moe_ssm_mixer.h"
#include "model/swimba_mixer.h"
#include "ops/attention.h"
#include "ops/expert_conv1d.h"
#include "ops/router_topk.h"

namespace moessm {

MixerCounts& MixerCounts::operator+=(const MixerCounts& o) {
  total_params += o.total_params;
  active_params += o.active_params;
  gemm_flops += o.gemm_flops;
  scan_flops += o.scan_flops;
  conv_flops += o.conv_flops;
  router_flops += o.router_flops;
  other_flops += o.other_flops;
  attention_flops += o.attention_flops;
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
// Limits of the CUDA MoE kernels (router_topk: E and K; expert_conv1d: d_conv), checked
// against the layer's own options so a configuration they cannot take fails at construction.
std::string routed_cuda_limits(const ModelConfig& cfg, const MixerSpec& spec) {
  auto option = [&](const char* key, int64_t fallback) {
    const Json* v = spec.options.get(key);
    return v && v->is_integer() ? v->as_int() : fallback;
  };
  const int64_t E = option("n_experts", 8), K = option("top_k", 1);
  if (E > kRouterMaxExperts)
    return "router_topk with n_experts " + std::to_string(E) + " (cuda: n_experts <= " +
           std::to_string(kRouterMaxExperts) + ")";
  if (K > kRouterMaxTopK)
    return "router_topk with top_k " + std::to_string(K) + " (cuda: top_k <= " + std::to_string(kRouterMaxTopK) + ")";
  if (spec.type == "rom" && cfg.d_conv > kExpertConvMaxKc)
    if (const Json* ex = spec.options.get("experts_in"); ex && ex->is_array())
      for (const Json& m : ex->as_array("experts_in"))
        if (m.is_string() && m.as_string() == "conv1d")
          return "expert_conv1d with d_conv " + std::to_string(cfg.d_conv) + " (cuda: d_conv <= " +
                 std::to_string(kExpertConvMaxKc) + ")";
  return "";
}

// The CUDA attention kernel's head size limit.
std::string attention_cuda_limits(const ModelConfig& cfg, const MixerSpec& spec) {
  const AttentionOptions o = AttentionOptions::parse(spec.options, "mixer 'attention'", cfg.d_model);
#ifdef MOESSM_CUDA
  const int64_t max_hd = cuda::kAttnMaxHeadDim;
#else
  const int64_t max_hd = 128;  // cuda::kAttnMaxHeadDim (ops/attention.h)
#endif
  if (o.head_dim > max_hd)
    return "attention with head_dim " + std::to_string(o.head_dim) + " (cuda: head_dim <= " + std::to_string(max_hd) +
           ")";
  return "";
}

template <typename Bk>
struct MixerType {
  const char* name;
  std::string (*cuda_limits)(const ModelConfig&, const MixerSpec&);  // "" = within the kernels' limits
  Factory<Bk> make;
};

template <typename Bk>
const std::vector<MixerType<Bk>>& registry() {
  static const std::vector<MixerType<Bk>> types = {
      {"mamba", nullptr, &make_any<MambaMixer, Bk>},
      {"rom", routed_cuda_limits, &make_any<RomMixer, Bk>},
      {"swimba", routed_cuda_limits, &make_any<SwimbaMixer, Bk>},
      {"separated_moe_ssm", routed_cuda_limits, &make_any<SeparatedMoeSsmMixer, Bk>},
      {"mlp", nullptr, &make_any<MlpMixer, Bk>},
      {"moe_mlp", routed_cuda_limits, &make_any<MoeMlpMixer, Bk>},
      {"attention", attention_cuda_limits, &make_any<AttentionMixer, Bk>},
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
  if (t->cuda_limits) {
    const std::string limit = t->cuda_limits(cfg, spec);
    if (!limit.empty()) return limit;
  }
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
