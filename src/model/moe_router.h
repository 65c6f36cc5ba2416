// MoeRouter: the layer-level wrapper around the router_topk op (DESIGN.md §2) used by the Swimba
// and separated MoE-SSM mixers: owns `router.weight [E, Din]` (fp32), computes
// logits = in · router.weightᵀ, then softmax / top-K / normalize_topk / Switch aux loss / z-loss
// through the op, keeps the routing of the last forward, and turns the gradient of the chosen
// weights (plus aux_grad · the aux losses) into gradients of the input and of router.weight.
// Options (shared by every routed mixer): n_experts (E), top_k (K), normalize_topk,
// aux_coef, z_coef — read from the mixer spec by RouterOptions::parse, which also lists them as
// known so the mixer can reject anything else.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/json.h"
#include "core/params.h"
#include "model/mixer.h"
#include "ops/op_common.h"

namespace moessm {

struct RouterOptions {
  int64_t n_experts = 8, top_k = 2;
  bool normalize_topk = true;
  double aux_coef = 0.01, z_coef = 0.0;
  // Reads the router fields of a mixer spec (others are left to the mixer); `where` names it.
  static RouterOptions parse(const Json& spec, const std::string& where);
  static const std::set<std::string>& keys();
};

template <typename T>
class MoeRouter {
 public:
  MoeRouter(const RouterOptions& opt, idx_t d_in);
  void register_params(ParamTable& table, const std::string& prefix);  // prefix + "router.weight"
  void init_params(T* params, const ParamTable& table, uint64_t seed) const;
  void plan(Arena<T>& arena, idx_t B, idx_t T_, bool training);
  // Routes M tokens in[M, Din] (token stride in_ld). Returns the aux loss (Switch + z-loss).
  double forward(const T* in, idx_t in_ld, const T* params, idx_t M);
  // dg[M,K]: dLoss/d(chosen weights). din ACCUMULATES (+=); router.weight's grad accumulates.
  void backward(T* din, idx_t din_ld, T* grads, const T* dg, const T* in, idx_t in_ld,
                const T* params, idx_t M, double aux_grad);
  const int32_t* topk_index() const { return topk_idx_.data(); }  // [M,K] of the last forward
  const T* topk_weight() const { return topk_w_; }                  // [M,K]
  MixerCounts counts() const;  // router parameters and FLOPs per token
  Json stats() const;          // per-expert load of the last forward, aux and z losses

  const idx_t E, K, Din;
  const RouterOptions opt;

 private:
  size_t w_ = 0;
  idx_t last_M_ = 0;
  double last_aux_ = 0, last_z_ = 0;
  std::vector<int32_t> topk_idx_;
  std::vector<double> load_;  // f_i of the last forward
  T *logits_ = nullptr, *probs_ = nullptr, *topk_w_ = nullptr, *dlogits_ = nullptr,
    *dprobs_ = nullptr;
};

}  // namespace moessm
