// RomMixer: Routing Mamba (DESIGN.md §2, arXiv 2506.18145). A Mamba-1 mixer whose large
// projections are E experts chosen per token by a router on the layer input u:
//   logits = u · router.weightᵀ (fp32 in use), p = softmax, S_t = top-K (ties → lower index),
//   g = p on S_t (or p / Σ_{S_t} p with normalize_topk)
//   x_t = Σ_{i∈S_t}          W_in[i][0:Di]   · u_t        conv projection: indicator sum
//   z_t = Σ_{i∈S_t} a[t,i] · W_in[i][Di:2Di] · u_t        gate projection
//   y   = SsmCore(x, z)   (conv1d → x_proj → dt_proj → scan ⊙ silu(z); ONE scan and state)
//   o_t = Σ_{i∈S_t} b[t,i] · W_out[i] · y_t
// weight_at: "gate" (a = g, b = 1, default), "out" (a = 1, b = g), "both" (a = b = g).
// Tokens are grouped by expert (the router's moe_permute plan) for the expert GEMMs
// (grouped_matmul) and put back in sequence order before conv1d and the scan. Dropless: no
// capacity limit.
//
// Options (spec entries; anything else is an error naming it). Router fields, read by
// RouterOptions::parse from RoM's defaults: n_experts (E, default 8), top_k (K, default 1,
// 1 <= K <= E), normalize_topk (false), aux_coef (0.01), z_coef (0). RoM's own:
//   weight_at ("gate"), shared_router (true),
//   experts_in (⊆ {conv_proj, gate_proj, out_proj, x_proj, dt_proj, conv1d}, default the first
//   three; must contain the module(s) weight_at names, so every router weight reaches the loss).
// Expertised small modules (x_proj, dt_proj.weight, conv1d weight and bias) follow the same
// routing, indicator-combined like the conv projection; dt_proj.bias, A_log and D stay shared.
//
// Parameter names under the layer prefix (backbone.layers.{i}.mixer.):
//   router.weight [E, D]                       shared_router = true
//   router_<module>.weight [E, D]              shared_router = false, one per expertised module
//   in_proj.weight [E, 2Di, D] (or dense [2Di, D]) when conv_proj and gate_proj are both
//     expertised (or both dense); otherwise conv_proj.weight and gate_proj.weight, [E, Di, D] or
//     [Di, D] each (rows as in_proj's halves)
//   out_proj.weight [E, D, Di] (or [D, Di]);  x_proj.weight [E, R+2N, Di];
//   dt_proj.weight [E, Di, R];  conv1d.weight [E, Di, 1, Kc], conv1d.bias [E, Di] when expertised.
// Routers are MoeRouter (moe_router.h): logits, top-K, aux/z losses, the grouping plan.
// forward() adds the load-balancing objective of the layer to *aux: the mean over its routers of
// L_aux + L_z (router_topk.h), coefficients included; backward adds aux_grad × its gradient.
// Written once for every backend (it calls only Bk's ops).
// stats(): {"type": "rom", "aux_loss", "z_loss", "load": [f_i of the first router],
//           "load_by_router": {name: [...]} (shared_router = false only)} of the last forward.
// Recurrent state: SsmCore's (conv [Di, Kc-1] + ssm [Di, N] per sequence); each token is routed
// on its own, so T = 1 steps need nothing else.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/mixer.h"
#include "model/moe_router.h"
#include "model/ssm_core.h"

namespace moessm {

// The modules experts_in may name, in this order (router_<name>.weight when not shared).
enum RomModule { kRomConvProj = 0, kRomGateProj, kRomOutProj, kRomXProj, kRomDtProj, kRomConv1d, kRomModules };
const char* rom_module_name(int m);

struct RomOptions {
  // n_experts, top_k, normalize_topk, aux_coef, z_coef (RouterOptions::parse from these defaults)
  RouterOptions router = router_defaults();
  bool shared_router = true;
  std::string weight_at = "gate";
  bool expert[kRomModules] = {true, true, true, false, false, false};
  static RouterOptions router_defaults();  // RoM's: E = 8, top_k = 1, normalize_topk = false
  static RomOptions parse(const Json& spec, const std::string& where);
};

template <typename Bk> struct RomLinear;
template <typename Bk> class RomCore;

template <typename Bk>
class RomMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  RomMixer(const ModelConfig& cfg, const MixerSpec& spec);
  ~RomMixer() override;
  std::string type() const override { return "rom"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override;
  std::vector<StatePart> state_parts() const override;
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) override;
  void plan_kept(typename Bk::Arena& arena) override { for (auto& r : routers_) r->plan_kept(arena); }
  void plan_scratch(typename Bk::Arena& arena, idx_t B, idx_t T_) override;
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) override;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) override;
  MixerCounts counts() const override;
  Json stats() const override;
  // Packed documents reach the shared conv and scan; expert conv1d slabs (experts_in conv1d) do
  // not take them (ops/expert_conv1d.h has no seq_idx yet).
  bool supports_seq_idx() const override;
  const RomOptions& options() const { return opt_; }

 private:
  RomOptions opt_;
  const idx_t D, Di, E, K;
  const int n_layer_;
  std::string prefix_;
  std::unique_ptr<RomCore<Bk>> core_;
  std::vector<std::unique_ptr<MoeRouter<Bk>>> routers_;  // one, or one per expertised module
  int router_of_[kRomModules];  // index into routers_, -1 for a dense module
  // projections: conv (x), gate (z), out; each expertised (RomLinear) or dense (offset only)
  std::unique_ptr<RomLinear<Bk>> lin_[3];
  std::unique_ptr<RomLinear<Bk>> in_lin_;  // in_proj [E, 2Di, D] as one (x and z on one router)
  size_t dense_w_[3] = {0, 0, 0};
  size_t in_proj_ = 0, out_proj_ = 0, conv_proj_ = 0, gate_proj_ = 0;  // table offsets
  idx_t planned_BT_ = 0;
  bool training_ = false;
  Act *x_ = nullptr, *z_ = nullptr, *y_ = nullptr;  // [B,T,Di]
  Act *dx_ = nullptr, *dz_ = nullptr, *dy_ = nullptr;
  idx_t last_BT_ = 0;
};

}  // namespace moessm
