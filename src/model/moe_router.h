// MoeRouter: the layer-level wrapper around the router_topk op (DESIGN.md §2) used by every routed
// mixer (RoM, Swimba, separated MoE-SSM): owns one router weight `<name>.weight [E, Din]` (fp32;
// name "router" unless the mixer says otherwise, e.g. RoM's "router_<module>" with
// shared_router: false), computes logits = in · weightᵀ, then softmax / top-K / normalize_topk /
// Switch aux loss / z-loss through the op, and the moe_permute grouping plan of the chosen slots
// (offsets [E+1], row_of_slot [M·K]) once per forward; keeps the routing of the last forward; and
// turns the gradient of the chosen weights (topk_weight_grad(), filled by the mixer) plus
// aux_grad · the aux losses into gradients of the input and of the router weight.
// Options (shared by every routed mixer): n_experts (E), top_k (K), normalize_topk, aux_coef,
// z_coef — read from the mixer spec by RouterOptions::parse (from the mixer's defaults), which
// also lists them as known so the mixer can reject anything else.
#pragma once
#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "io/json.h"
#include "core/params.h"
#include "model/mixer.h"
#include "ops/op_common.h"

namespace moessm {

struct RouterOptions {
  int64_t n_experts = 8, top_k = 2;
  bool normalize_topk = true;
  double aux_coef = 0.01, z_coef = 0.0;
  // Reads the router fields of a mixer spec over `defaults` (these values when absent; others
  // are left to the mixer); `where` names the spec in errors. Checks 1 <= top_k <= n_experts <=
  // 4096 and coefficients >= 0.
  static RouterOptions parse(const Json& spec, const std::string& where,
                             const RouterOptions& defaults);
  static RouterOptions parse(const Json& spec, const std::string& where);  // from these defaults
  static const std::set<std::string>& keys();
};

template <typename Bk>
class MoeRouter {
 public:
  using Act = typename Bk::Act;
  using F = typename Bk::F;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  MoeRouter(const RouterOptions& opt, idx_t d_in, std::string name = "router");
  void register_params(ParamTable& table, const std::string& prefix);  // prefix + name + ".weight"
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const;  // as nn.Linear
  // The share of this router's L_aux + L_z in the layer's objective (1; RoM with one router per
  // expertised module: 1 / their number, so the layer counts their mean).
  void set_loss_share(double share) { share_ = share; }
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training);
  // The statistics of the last forward (load, losses): outside the region layers share.
  void plan_kept(typename Bk::Arena& arena);
  // Routes M tokens in[M, Din] (token stride in_ld; logits in F through the GEMM copy of the
  // router weight) and builds the grouping plan. ADDS share · (L_aux + L_z) to *aux (a scalar in
  // backend memory): no host sync. aux nullptr: no auxiliary loss (decoding), statistics kept.
  // build_plan false: no grouping plan (a mixer whose experts all take the decode form,
  // ops/routed_gemv.h, reads only topk_index / topk_weight); offsets() and row_of_slot() are then
  // stale and known_offsets() is nullptr.
  void forward(const Ctx& ctx, double* aux, const Act* in, idx_t in_ld, const ParamsRef<Bk>& P, idx_t M,
               bool build_plan = true);
  // Gradient of the chosen weights [M,K], filled by the mixer before backward() (training only).
  F* topk_weight_grad() { return dg_; }
  // Reads topk_weight_grad(). din ACCUMULATES (+=); the router weight's grad accumulates.
  // aux_grad is dLoss/d(layer aux objective).
  void backward(const Ctx& ctx, Act* din, idx_t din_ld, Param* grads, const Act* in, idx_t in_ld,
                const ParamsRef<Bk>& P, idx_t M, double aux_grad);

  // The last forward's routing, in backend memory (the arena):
  const int32_t* topk_index() const { return topk_idx_; }      // [M,K]
  const F* topk_weight() const { return topk_w_; }              // [M,K]
  const int32_t* offsets() const { return offsets_; }           // [E+1] grouped rows per expert
  const int32_t* row_of_slot() const { return row_of_slot_; }   // [M·K]
  // offsets() on the host when this forward copied them (Bk::offsets_on_host), else nullptr:
  // the grouped GEMMs of the layer pass it on instead of synchronising each.
  const int32_t* known_offsets() const { return known_offsets_; }
  // Host copies of the last forward's statistics (a sync on a device backend: logging only).
  std::vector<double> load() const;  // f_i [E]
  double aux_loss() const;           // L_aux (unscaled by the share)
  double z_loss() const;             // L_z
  const std::string& name() const { return name_; }

  MixerCounts counts() const;  // router parameters and FLOPs per token
  // {"type": mixer_type, "load": [f_i], "aux_loss", "z_loss", "tokens"} of the last forward
  // ("type" only when mixer_type is not empty): plain data copied out only when logged.
  Json stats(const std::string& mixer_type = std::string()) const;

  const idx_t E, K, Din;
  const RouterOptions opt;

 private:
  std::array<double, 2> host_losses() const;  // {L_aux, L_z} of the last forward (one copy)
  std::string name_;
  double share_ = 1.0;
  size_t w_ = 0;
  idx_t last_M_ = 0;
  idx_t planned_M_ = 0;
  Ctx ctx_{};
  std::vector<int32_t> host_offsets_;  // [E+1], filled by Bk::offsets_on_host
  const int32_t* known_offsets_ = nullptr;
  bool have_losses_ = false;  // the last forward computed the auxiliary losses
  int32_t *topk_idx_ = nullptr, *offsets_ = nullptr, *row_of_slot_ = nullptr;
  double* load_ = nullptr;    // f_i of the last forward [E]
  double* losses_ = nullptr;  // [2]: share·L_aux, share·L_z of the last forward
  F *logits_ = nullptr, *probs_ = nullptr, *topk_w_ = nullptr, *dg_ = nullptr, *dlogits_ = nullptr,
    *dprobs_ = nullptr;
  Act* dlogits_act_ = nullptr;  // dlogits as a GEMM operand (Act)
};

}  // namespace moessm
