// Formatting of MixerCounts (see accounting.h).
#include "model/accounting.h"

#include <cstdio>

namespace moessm {

namespace {
std::string human(double v) {
  char buf[64];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.3fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.3fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.2fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}
}  // namespace

std::string describe_counts(const MixerCounts& c) {
  std::string s;
  s += "parameters: total " + human(double(c.total_params)) + " (" + std::to_string(c.total_params) +
       "), active per token " + human(double(c.active_params)) + " (" + std::to_string(c.active_params) + ")\n";
  s += "forward FLOPs per token: " + human(c.forward_flops()) + " = GEMM " + human(c.gemm_flops) +
       " + scan " + human(c.scan_flops) + " + conv " + human(c.conv_flops) + " + router " +
       human(c.router_flops) + " + attention " + human(c.attention_flops) + " + other " + human(c.other_flops) +
       "; training ≈ 3× = " +
       human(3 * c.forward_flops()) + "\n";
  return s;
}

std::string describe_layer_counts(const std::vector<std::pair<std::string, MixerCounts>>& layers) {
  std::string s;
  for (size_t l = 0; l < layers.size(); ++l) {
    const MixerCounts& c = layers[l].second;
    s += "  layer " + std::to_string(l) + " " + layers[l].first + ": params total " + human(double(c.total_params)) +
         ", active " + human(double(c.active_params)) + "; forward FLOPs " + human(c.forward_flops()) + " (GEMM " +
         human(c.gemm_flops);
    if (c.scan_flops > 0) s += ", scan " + human(c.scan_flops);
    if (c.conv_flops > 0) s += ", conv " + human(c.conv_flops);
    if (c.router_flops > 0) s += ", router " + human(c.router_flops);
    if (c.attention_flops > 0) s += ", attention " + human(c.attention_flops);
    s += ", other " + human(c.other_flops) + ")\n";
  }
  return s;
}

Json counts_json(const MixerCounts& c) {
  Json j = Json::object();
  j.set("total_params", c.total_params);
  j.set("active_params", c.active_params);
  j.set("forward_flops_per_token", c.forward_flops());
  j.set("gemm_flops", c.gemm_flops);
  j.set("scan_flops", c.scan_flops);
  j.set("conv_flops", c.conv_flops);
  j.set("router_flops", c.router_flops);
  j.set("attention_flops", c.attention_flops);
  j.set("other_flops", c.other_flops);
  return j;
}

}  // namespace moessm
