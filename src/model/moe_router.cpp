// MoeRouter: the router weight, the logits GEMM, the router_topk op and the moe_permute grouping
// plan (see moe_router.h).
#include "model/moe_router.h"

#include <cmath>
#include <utility>

#include "core/check.h"
#include "model/init.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/moe_permute.h"
#include "ops/router_topk.h"

namespace moessm {

const std::set<std::string>& RouterOptions::keys() {
  static const std::set<std::string> k = {"n_experts", "top_k", "normalize_topk", "aux_coef",
                                          "z_coef"};
  return k;
}

RouterOptions RouterOptions::parse(const Json& spec, const std::string& where,
                                   const RouterOptions& defaults) {
  RouterOptions o = defaults;
  auto get_int = [&](const char* key, int64_t& dst, int64_t lo, int64_t hi) {
    const Json* v = spec.get(key);
    if (!v) return;
    CHECK(v->is_integer(), where, ": option '", key, "' must be an integer, found ", v->dump());
    dst = v->as_int();
    CHECK(dst >= lo && dst <= hi, where, ": option '", key, "' must be in [", lo, ", ", hi,
          "], found ", dst);
  };
  auto get_num = [&](const char* key, double& dst) {
    const Json* v = spec.get(key);
    if (!v) return;
    CHECK(v->is_number() && v->as_number() >= 0 && std::isfinite(v->as_number()), where,
          ": option '", key, "' must be a number >= 0, found ", v->dump());
    dst = v->as_number();
  };
  get_int("n_experts", o.n_experts, 1, 4096);
  get_int("top_k", o.top_k, 1, o.n_experts);
  CHECK(o.top_k >= 1 && o.top_k <= o.n_experts, where, ": top_k must be in [1, n_experts=",
        o.n_experts, "], found ", o.top_k);
  if (const Json* v = spec.get("normalize_topk")) {
    CHECK(v->is_bool(), where, ": option 'normalize_topk' must be true or false, found ", v->dump());
    o.normalize_topk = v->as_bool();
  }
  get_num("aux_coef", o.aux_coef);
  get_num("z_coef", o.z_coef);
  return o;
}

RouterOptions RouterOptions::parse(const Json& spec, const std::string& where) {
  return parse(spec, where, RouterOptions());
}

template <typename T>
MoeRouter<T>::MoeRouter(const RouterOptions& o, idx_t d_in, std::string name)
    : E(o.n_experts), K(o.top_k), Din(d_in), opt(o), name_(std::move(name)) {
  CHECK(K >= 1 && K <= E, "router: top_k must be in [1, n_experts=", E, "], found ", K);
}

template <typename T>
void MoeRouter<T>::register_params(ParamTable& t, const std::string& prefix) {
  w_ = t.add(prefix + name_ + ".weight", {E, Din}, false);
}

template <typename T>
void MoeRouter<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
  // nn.Linear default, U(±1/sqrt(Din)): distinct logits from the start (zeros would tie every
  // token to expert 0).
  for (const ParamInfo& info : t.entries())
    if (info.offset == w_) init_linear(params, info, seed);
}

template <typename T>
void MoeRouter<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  const idx_t M = B * T_;
  planned_M_ = M;
  topk_idx_ = a.template carve<int32_t>(M * K);
  offsets_ = a.template carve<int32_t>(E + 1);
  row_of_slot_ = a.template carve<int32_t>(M * K);
  load_ = a.template carve<double>(E);
  logits_ = a.carve(M * E);
  probs_ = a.carve(M * E);
  topk_w_ = a.carve(M * K);
  if (training) {
    dg_ = a.carve(M * K);
    dlogits_ = a.carve(M * E);
    dprobs_ = a.carve(M * E);
  }
}

template <typename T>
double MoeRouter<T>::forward(const T* in, idx_t in_ld, const T* params, idx_t M) {
  CHECK(M <= planned_M_, "router: called with ", M, " tokens but planned for ", planned_M_);
  cpu::matmul_forward(logits_, E, in, in_ld, params + w_, (const T*)nullptr, M, E, Din);
  cpu::router_topk_forward(probs_, topk_idx_, topk_w_, logits_, M, E, K, opt.normalize_topk);
  cpu::moe_permute_plan(offsets_, row_of_slot_, topk_idx_, M, E, K);
  last_M_ = M;
  last_aux_ = cpu::router_aux_loss_forward(load_, probs_, topk_idx_, M, E, K, opt.aux_coef);
  last_z_ = opt.z_coef > 0 ? cpu::router_z_loss_forward(logits_, M, E, opt.z_coef) : 0.0;
  return last_aux_ + last_z_;
}

template <typename T>
void MoeRouter<T>::backward(T* din, idx_t din_ld, T* grads, const T* in, idx_t in_ld,
                            const T* params, idx_t M, double aux_grad) {
  CHECK(dlogits_, "router: backward needs an arena planned for training");
  CHECK(M == last_M_, "router: backward for ", M, " tokens follows a forward of ", last_M_);
  cpu::fill(dprobs_, T(0), M * E);
  if (opt.aux_coef > 0)
    cpu::router_aux_loss_backward(dprobs_, aux_grad, topk_idx_, M, E, K, opt.aux_coef);
  cpu::router_topk_backward(dlogits_, dg_, dprobs_, probs_, topk_idx_, topk_w_, M, E, K,
                            opt.normalize_topk);
  if (opt.z_coef > 0) cpu::router_z_loss_backward(dlogits_, aux_grad, logits_, M, E, opt.z_coef);
  cpu::matmul_backward(din, din_ld, grads + w_, (T*)nullptr, dlogits_, E, in, in_ld, params + w_,
                       M, E, Din, /*din_accumulate=*/true);
}

template <typename T>
bool MoeRouter<T>::chosen(idx_t m, idx_t e) const {
  const int32_t* idx = topk_idx_ + m * K;
  for (idx_t k = 0; k < K; ++k)
    if (idx[k] == int32_t(e)) return true;
  return false;
}

template <typename T>
MixerCounts MoeRouter<T>::counts() const {
  MixerCounts c;
  c.total_params = c.active_params = E * Din;
  c.router_flops = 2.0 * double(E * Din);  // the logits GEMM
  return c;
}

template <typename T>
Json MoeRouter<T>::stats(const std::string& mixer_type) const {
  Json j = Json::object();
  if (!mixer_type.empty()) j.set("type", mixer_type);
  Json load = Json::array();
  for (idx_t e = 0; e < E && load_; ++e) load.push_back(Json(load_[e]));
  j.set("load", load);  // share of the routing slots per expert (sums to 1)
  j.set("aux_loss", last_aux_);
  j.set("z_loss", last_z_);
  j.set("tokens", last_M_);
  return j;
}

template class MoeRouter<float>;
template class MoeRouter<double>;

}  // namespace moessm
