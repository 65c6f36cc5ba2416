// make_mixer: maps a layer's mixer spec to its implementation. New mixer types add one line here.
#include "core/check.h"
#include "model/mamba_mixer.h"
#include "model/mixer.h"
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

template <typename T>
std::unique_ptr<Mixer<T>> make_mixer(const ModelConfig& cfg, const MixerSpec& spec, int layer) {
  if (spec.type == "mamba") return std::make_unique<MambaMixer<T>>(cfg, spec);
  if (spec.type == "rom") return std::make_unique<RomMixer<T>>(cfg, spec);
  if (spec.type == "swimba") return std::make_unique<SwimbaMixer<T>>(cfg, spec);
  if (spec.type == "separated_moe_ssm") return std::make_unique<SeparatedMoeSsmMixer<T>>(cfg, spec);
  FAIL("layer ", layer, ": mixer type '", spec.type, "' is not available in this build");
}

template std::unique_ptr<Mixer<float>> make_mixer<float>(const ModelConfig&, const MixerSpec&, int);
template std::unique_ptr<Mixer<double>> make_mixer<double>(const ModelConfig&, const MixerSpec&, int);

}  // namespace moessm
