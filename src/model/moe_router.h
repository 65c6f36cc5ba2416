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
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/arena.h"
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

template <typename T>
class MoeRouter {
 public:
  MoeRouter(const RouterOptions& opt, idx_t d_in, std::string name = "router");
  void register_params(ParamTable& table, const std::string& prefix);  // prefix + name + ".weight"
  void init_params(T* params, const ParamTable& table, uint64_t seed) const;  // as nn.Linear
  void plan(Arena<T>& arena, idx_t B, idx_t T_, bool training);
  // Routes M tokens in[M, Din] (token stride in_ld) and builds the grouping plan.
  // Returns the aux loss (Switch + z-loss).
  double forward(const T* in, idx_t in_ld, const T* params, idx_t M);
  // Gradient of the chosen weights [M,K], filled by the mixer before backward() (training only).
  T* topk_weight_grad() { return dg_; }
  // Reads topk_weight_grad(). din ACCUMULATES (+=); the router weight's grad accumulates.
  void backward(T* din, idx_t din_ld, T* grads, const T* in, idx_t in_ld, const T* params, idx_t M,
                double aux_grad);

  // The last forward's routing:
  // (all in the arena, int32 plans included: nothing of the routing lives in host vectors)
  const int32_t* topk_index() const { return topk_idx_; }      // [M,K]
  const T* topk_weight() const { return topk_w_; }              // [M,K]
  const int32_t* offsets() const { return offsets_; }           // [E+1] grouped rows per expert
  const int32_t* row_of_slot() const { return row_of_slot_; }   // [M·K]
  bool chosen(idx_t m, idx_t e) const;  // is e among token m's K experts
  const double* load() const { return load_; }  // f_i [E]
  double aux_loss() const { return last_aux_; }
  double z_loss() const { return last_z_; }
  const std::string& name() const { return name_; }

  MixerCounts counts() const;  // router parameters and FLOPs per token
  // {"type": mixer_type, "load": [f_i], "aux_loss", "z_loss", "tokens"} of the last forward
  // ("type" only when mixer_type is not empty): plain data copied out only when logged.
  Json stats(const std::string& mixer_type = std::string()) const;

  const idx_t E, K, Din;
  const RouterOptions opt;

 private:
  std::string name_;
  size_t w_ = 0;
  idx_t last_M_ = 0;
  double last_aux_ = 0, last_z_ = 0;
  idx_t planned_M_ = 0;
  int32_t *topk_idx_ = nullptr, *offsets_ = nullptr, *row_of_slot_ = nullptr;
  double* load_ = nullptr;  // f_i of the last forward
  T *logits_ = nullptr, *probs_ = nullptr, *topk_w_ = nullptr, *dg_ = nullptr,
    *dlogits_ = nullptr, *dprobs_ = nullptr;
};

}  // namespace moessm
