// MoeRouter: the router weight, the logits GEMM, the router_topk op and the moe_permute grouping
// plan (see moe_router.h).
#include "model/moe_router.h"

#include <array>
#include <cmath>
#include <utility>

#include "core/check.h"
#include "model/init.h"
#include "backend/backends.h"

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

template <typename Bk>
MoeRouter<Bk>::MoeRouter(const RouterOptions& o, idx_t d_in, std::string name)
    : E(o.n_experts), K(o.top_k), Din(d_in), opt(o), name_(std::move(name)) {
  CHECK(K >= 1 && K <= E, "router: top_k must be in [1, n_experts=", E, "], found ", K);
  host_offsets_.assign(size_t(E + 1), 0);
}

template <typename Bk>
void MoeRouter<Bk>::register_params(ParamTable& t, const std::string& prefix) {
  w_ = t.add(prefix + name_ + ".weight", {E, Din}, false);
}

template <typename Bk>
void MoeRouter<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  // nn.Linear default, U(±1/sqrt(Din)): distinct logits from the start (zeros would tie every
  // token to expert 0).
  for (const ParamInfo& info : t.entries())
    if (info.offset == w_) init_linear(params, info, seed);
}

template <typename Bk>
void MoeRouter<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  const idx_t M = B * T_;
  planned_M_ = M;
  topk_idx_ = a.template carve<int32_t>(M * K);
  offsets_ = a.template carve<int32_t>(E + 1);
  row_of_slot_ = a.template carve<int32_t>(M * K);
  logits_ = a.template carve<F>(M * E);
  probs_ = a.template carve<F>(M * E);
  topk_w_ = a.template carve<F>(M * K);
  if (training) {
    dg_ = a.template carve<F>(M * K);
    dlogits_ = a.template carve<F>(M * E);
    dprobs_ = a.template carve<F>(M * E);
    dlogits_act_ = a.template carve<Act>(M * E);
  }
}

template <typename Bk>
void MoeRouter<Bk>::plan_kept(typename Bk::Arena& a) {
  load_ = a.template carve<double>(E);
  losses_ = a.template carve<double>(2);
}

template <typename Bk>
void MoeRouter<Bk>::forward(const Ctx& ctx, double* aux, const Act* in, idx_t in_ld, const ParamsRef<Bk>& P,
                            idx_t M, bool build_plan) {
  CHECK(M <= planned_M_, "router: called with ", M, " tokens but planned for ", planned_M_);
  CHECK(load_ && losses_, "router: forward before plan_kept()");
  ctx_ = ctx;
  Bk::router_logits_forward(ctx, logits_, in, in_ld, P.gemm + w_, M, E, Din);
  Bk::router_topk_forward(ctx, probs_, topk_idx_, topk_w_, logits_, M, E, K, opt.normalize_topk);
  last_M_ = M;
  known_offsets_ = nullptr;
  if (build_plan) {
    Bk::moe_permute_plan(ctx, offsets_, row_of_slot_, topk_idx_, M, E, K);
    known_offsets_ = Bk::offsets_on_host(ctx, host_offsets_.data(), offsets_, E, M * K);
  }
  // The losses are kept scaled by the share (L is linear in its coefficient), so the layer's
  // objective is their sum.
  have_losses_ = aux != nullptr;
  if (!aux) return;  // decoding: no auxiliary loss wanted (and the statistics stay as they were)
  Bk::zero(ctx, losses_, 2);
  Bk::router_aux_loss_forward(ctx, losses_, load_, probs_, topk_idx_, M, E, K, opt.aux_coef * share_);
  if (opt.z_coef > 0) Bk::router_z_loss_forward(ctx, losses_ + 1, logits_, M, E, opt.z_coef * share_);
  Bk::add_scalars(ctx, aux, losses_, 1);
  Bk::add_scalars(ctx, aux, losses_ + 1, 1);
}

template <typename Bk>
void MoeRouter<Bk>::backward(const Ctx& ctx, Act* din, idx_t din_ld, Param* grads, const Act* in, idx_t in_ld,
                             const ParamsRef<Bk>& P, idx_t M, double aux_grad) {
  CHECK(dlogits_, "router: backward needs an arena planned for training");
  CHECK(M == last_M_, "router: backward for ", M, " tokens follows a forward of ", last_M_);
  CHECK(have_losses_, "router: backward follows a forward without the auxiliary loss (aux nullptr)");
  Bk::zero(ctx, dprobs_, M * E);
  if (opt.aux_coef > 0)
    Bk::router_aux_loss_backward(ctx, dprobs_, aux_grad, topk_idx_, M, E, K, opt.aux_coef * share_);
  Bk::router_topk_backward(ctx, dlogits_, dg_, dprobs_, probs_, topk_idx_, topk_w_, M, E, K, opt.normalize_topk);
  if (opt.z_coef > 0) Bk::router_z_loss_backward(ctx, dlogits_, aux_grad, logits_, M, E, opt.z_coef * share_);
  Bk::router_logits_backward(ctx, din, din_ld, grads + w_, dlogits_, dlogits_act_, in, in_ld, P.gemm + w_, M, E,
                             Din);
}

template <typename Bk>
std::vector<double> MoeRouter<Bk>::load() const {
  std::vector<double> h(size_t(E), 0.0);
  if (load_ && last_M_) Bk::to_host(ctx_, h.data(), load_, E);
  return h;
}

template <typename Bk>
std::array<double, 2> MoeRouter<Bk>::host_losses() const {
  std::array<double, 2> h = {0, 0};
  if (losses_ && last_M_) Bk::to_host(ctx_, h.data(), losses_, 2);
  return {h[0] / share_, h[1] / share_};  // the slots hold share · L
}

template <typename Bk>
double MoeRouter<Bk>::aux_loss() const { return host_losses()[0]; }

template <typename Bk>
double MoeRouter<Bk>::z_loss() const { return host_losses()[1]; }

template <typename Bk>
MixerCounts MoeRouter<Bk>::counts() const {
  MixerCounts c;
  c.total_params = c.active_params = E * Din;
  c.router_flops = 2.0 * double(E * Din);  // the logits GEMM
  return c;
}

template <typename Bk>
Json MoeRouter<Bk>::stats(const std::string& mixer_type) const {
  Json j = Json::object();
  if (!mixer_type.empty()) j.set("type", mixer_type);
  Json load_json = Json::array();
  for (double f : load()) load_json.push_back(Json(f));
  j.set("load", load_json);  // share of the routing slots per expert (sums to 1)
  const std::array<double, 2> l = host_losses();
  j.set("aux_loss", l[0]);
  j.set("z_loss", l[1]);
  j.set("tokens", last_M_);
  return j;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(MoeRouter)

}  // namespace moessm
