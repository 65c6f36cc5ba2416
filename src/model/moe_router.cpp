// MoeRouter: router.weight, the logits GEMM and the router_topk op (see moe_router.h).
#include "model/moe_router.h"

#include "core/check.h"
#include "model/init.h"
#include "ops/matmul.h"
#include "ops/router_topk.h"

namespace moessm {

const std::set<std::string>& RouterOptions::keys() {
  static const std::set<std::string> k = {"n_experts", "top_k", "normalize_topk", "aux_coef",
                                          "z_coef"};
  return k;
}

RouterOptions RouterOptions::parse(const Json& spec, const std::string& where) {
  RouterOptions o;
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
    CHECK(v->is_number() && v->as_number() >= 0, where, ": option '", key,
          "' must be a number >= 0, found ", v->dump());
    dst = v->as_number();
  };
  get_int("n_experts", o.n_experts, 1, 4096);
  get_int("top_k", o.top_k, 1, o.n_experts);
  if (const Json* v = spec.get("normalize_topk")) {
    CHECK(v->is_bool(), where, ": option 'normalize_topk' must be true or false, found ", v->dump());
    o.normalize_topk = v->as_bool();
  }
  get_num("aux_coef", o.aux_coef);
  get_num("z_coef", o.z_coef);
  return o;
}

template <typename T>
MoeRouter<T>::MoeRouter(const RouterOptions& o, idx_t d_in)
    : E(o.n_experts), K(o.top_k), Din(d_in), opt(o) {
  CHECK(K >= 1 && K <= E, "router: top_k must be in [1, n_experts=", E, "], found ", K);
}

template <typename T>
void MoeRouter<T>::register_params(ParamTable& t, const std::string& prefix) {
  w_ = t.add(prefix + "router.weight", {E, Din}, false);
}

template <typename T>
void MoeRouter<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
  for (const ParamInfo& info : t.entries())
    if (info.offset == w_) init_linear(params, info, seed);  // nn.Linear default
}

template <typename T>
void MoeRouter<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  const idx_t M = B * T_;
  topk_idx_.assign(size_t(M * K), 0);
  logits_ = a.carve(M * E);
  probs_ = a.carve(M * E);
  topk_w_ = a.carve(M * K);
  if (training) {
    dlogits_ = a.carve(M * E);
    dprobs_ = a.carve(M * E);
  }
}

template <typename T>
double MoeRouter<T>::forward(const T* in, idx_t in_ld, const T* params, idx_t M) {
  CHECK(size_t(M * K) <= topk_idx_.size(), "router: called with ", M, " tokens but planned for ",
        topk_idx_.size() / size_t(K));
  cpu::matmul_forward(logits_, E, in, in_ld, params + w_, (const T*)nullptr, M, E, Din);
  cpu::router_topk_forward(probs_, topk_idx_.data(), topk_w_, logits_, M, E, K, opt.normalize_topk);
  load_.assign(size_t(E), 0.0);
  last_M_ = M;
  last_aux_ = cpu::router_aux_loss_forward(load_.data(), probs_, topk_idx_.data(), M, E, K, opt.aux_coef);
  last_z_ = opt.z_coef > 0 ? cpu::router_z_loss_forward(logits_, M, E, opt.z_coef) : 0.0;
  return last_aux_ + last_z_;
}

template <typename T>
void MoeRouter<T>::backward(T* din, idx_t din_ld, T* grads, const T* dg, const T* in, idx_t in_ld,
                            const T* params, idx_t M, double aux_grad) {
  CHECK(dlogits_, "router: backward needs an arena planned for training");
  for (idx_t i = 0; i < M * E; ++i) dprobs_[i] = T(0);
  if (opt.aux_coef > 0)
    cpu::router_aux_loss_backward(dprobs_, aux_grad, topk_idx_.data(), M, E, K, opt.aux_coef);
  cpu::router_topk_backward(dlogits_, dg, dprobs_, probs_, topk_idx_.data(), topk_w_, M, E, K,
                            opt.normalize_topk);
  if (opt.z_coef > 0) cpu::router_z_loss_backward(dlogits_, aux_grad, logits_, M, E, opt.z_coef);
  cpu::matmul_backward(din, din_ld, grads + w_, (T*)nullptr, dlogits_, E, in, in_ld, params + w_,
                       M, E, Din, /*din_accumulate=*/true);
}

template <typename T>
MixerCounts MoeRouter<T>::counts() const {
  MixerCounts c;
  c.total_params = c.active_params = E * Din;
  c.router_flops = 2.0 * double(E * Din);  // the logits GEMM, as RoM counts it
  return c;
}

template <typename T>
Json MoeRouter<T>::stats() const {
  Json j = Json::object();
  Json load = Json::array();
  for (double f : load_) load.push_back(Json(f));
  j.set("load", load);  // share of the routing slots per expert (sums to 1)
  j.set("aux_loss", last_aux_);
  j.set("z_loss", last_z_);
  j.set("tokens", last_M_);
  return j;
}

template class MoeRouter<float>;
template class MoeRouter<double>;

}  // namespace moessm
