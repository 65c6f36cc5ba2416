// The `moe_mlp` layer (see moe_mlp_mixer.h), instantiated for every backend. Forward:
//   route → gather u into grouped rows → grouped gate and up GEMMs (into the halves of one
//   [M·K, 2F] buffer) → SwiGLU on the grouped rows → grouped down GEMM → weighted unpermute
//   → (+ the shared expert, accumulated into the output)
// Backward runs the same stages in reverse; du collects, in a fixed order, the routed experts',
// the shared expert's and the router's contributions.
#include "model/moe_mlp_mixer.h"

#include <cmath>

#include "backend/backends.h"
#include "core/check.h"
#include "model/init.h"

namespace moessm {

MoeMlpOptions MoeMlpOptions::parse(const Json& spec, const std::string& where, int64_t d_model) {
  MoeMlpOptions o;
  for (const auto& kv : spec.as_object(where)) {
    const std::string& k = kv.first;
    if (k == "type" || k == "d_ff" || k == "shared_d_ff" || RouterOptions::keys().count(k)) continue;
    if (k == "shared_expert") {
      CHECK(kv.second.is_bool(), where, ": option 'shared_expert' must be true or false, found ", kv.second.dump());
      o.shared_expert = kv.second.as_bool();
    } else {
      FAIL(where, ": unknown option '", k,
           "' (moe_mlp takes n_experts, top_k, normalize_topk, aux_coef, z_coef, d_ff, shared_expert, "
           "shared_d_ff)");
    }
  }
  o.router = RouterOptions::parse(spec, where);
  o.d_ff = parse_d_ff(spec, "d_ff", where, default_d_ff(d_model));
  CHECK(o.shared_expert || !spec.get("shared_d_ff"), where,
        ": option 'shared_d_ff' is given but 'shared_expert' is not true");
  o.shared_d_ff = o.shared_expert ? parse_d_ff(spec, "shared_d_ff", where, o.d_ff) : 0;
  return o;
}

template <typename Bk>
MoeMlpMixer<Bk>::MoeMlpMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : opt_(MoeMlpOptions::parse(spec.options, "mixer 'moe_mlp'", cfg.d_model)), D(cfg.d_model), Fx(opt_.d_ff),
      E(opt_.router.n_experts), K(opt_.router.top_k), n_layer_(int(cfg.n_layer)), router_(opt_.router, D) {
  if (opt_.shared_expert) shared_ = std::make_unique<SwigluFfn<Bk>>(D, opt_.shared_d_ff, n_layer_);
}

template <typename Bk>
void MoeMlpMixer<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  router_.register_params(t, p);
  gate_ = t.add_experts(p + "experts.gate_proj.weight", {E, Fx, D}, false);  // grouped GEMMs only
  up_ = t.add_experts(p + "experts.up_proj.weight", {E, Fx, D}, false);
  down_ = t.add_experts(p + "experts.down_proj.weight", {E, D, Fx}, false);
  if (shared_) shared_->register_params(t, p + "shared_expert.");
}

template <typename Bk>
void MoeMlpMixer<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  router_.init_params(params, t, seed);  // as nn.Linear
  // Every expert drawn independently (one stream per slab), as nn.Linear; down_proj scaled by
  // 1/sqrt(n_layer) like the dense block.
  init_linear(params, t.at(prefix_ + "experts.gate_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "experts.up_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "experts.down_proj.weight"), seed, 1.0 / std::sqrt(double(n_layer_)));
  if (shared_) shared_->init_params(params, t, seed);
}

template <typename Bk>
void MoeMlpMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  const idx_t M = B * T_, R = M * K;
  planned_M_ = M;
  router_.plan(a, B, T_, training);
  x_g_ = a.template carve<Act>(R * D);
  h_g_ = a.template carve<Act>(R * 2 * Fx);
  a_g_ = a.template carve<Act>(R * Fx);
  y_g_ = a.template carve<Act>(R * D);
  if (shared_) shared_->plan(a, M);
}

template <typename Bk>
void MoeMlpMixer<Bk>::plan_scratch(typename Bk::Arena& a, idx_t B, idx_t T_) {
  const idx_t M = B * T_, R = M * K;
  dy_g_ = a.template carve<Act>(R * D);
  da_g_ = a.template carve<Act>(R * Fx);
  dh_g_ = a.template carve<Act>(R * 2 * Fx);
  dx_g_ = a.template carve<Act>(R * D);
  if (shared_) shared_->plan_scratch(a, M);
}

template <typename Bk>
void MoeMlpMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                              const void*, void*, double* aux) {
  const idx_t M = B * T_, R = M * K, F2 = 2 * Fx;
  CHECK(M <= planned_M_, "MoeMlpMixer: called with B·T=", M, " but planned for ", planned_M_);
  router_.forward(ctx, aux, u, D, P, M);
  last_M_ = M;
  const int32_t* offsets = router_.offsets();
  const int32_t* known = router_.known_offsets();
  Bk::moe_permute_forward(ctx, x_g_, D, u, D, router_.row_of_slot(), M, K, D);
  Bk::grouped_matmul_forward(ctx, h_g_, F2, x_g_, D, P.gemm + gate_, Fx * D, offsets, E, Fx, D, R, known);
  Bk::grouped_matmul_forward(ctx, h_g_ + Fx, F2, x_g_, D, P.gemm + up_, Fx * D, offsets, E, Fx, D, R, known);
  Bk::swiglu_forward(ctx, a_g_, Fx, h_g_, F2, h_g_ + Fx, F2, R, Fx);
  Bk::grouped_matmul_forward(ctx, y_g_, D, a_g_, Fx, P.gemm + down_, D * Fx, offsets, E, D, Fx, R, known);
  Bk::moe_unpermute_forward(ctx, out, D, y_g_, D, router_.topk_weight(), router_.row_of_slot(), M, K, D);
  if (shared_) shared_->forward(ctx, out, u, P, M, /*accumulate=*/true);
}

template <typename Bk>
void MoeMlpMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                               const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void*, double aux_grad) {
  const idx_t M = B * T_, F2 = 2 * Fx;
  CHECK(dx_g_, "MoeMlpMixer: backward needs an arena planned for training (plan_scratch included)");
  CHECK(M == last_M_, "MoeMlpMixer: backward for B·T=", M, " follows a forward of ", last_M_);
  const int32_t* offsets = router_.offsets();
  const int32_t* known = router_.known_offsets();
  const int32_t* rows = router_.row_of_slot();
  // combine: dy_g = g · dout per slot; dg = <dout, y_g> (assigned)
  Bk::moe_unpermute_backward(ctx, dy_g_, D, router_.topk_weight_grad(), dout, D, y_g_, D, router_.topk_weight(),
                             rows, M, K, D, /*dw_accumulate=*/false);
  Bk::grouped_matmul_backward(ctx, da_g_, Fx, grads + down_, dy_g_, D, a_g_, Fx, P.gemm + down_, D * Fx, offsets, E,
                              D, Fx, false, known);
  Bk::swiglu_backward(ctx, dh_g_, F2, dh_g_ + Fx, F2, da_g_, Fx, h_g_, F2, h_g_ + Fx, F2, M * K, Fx);
  Bk::grouped_matmul_backward(ctx, dx_g_, D, grads + gate_, dh_g_, F2, x_g_, D, P.gemm + gate_, Fx * D, offsets, E,
                              Fx, D, false, known);
  Bk::grouped_matmul_backward(ctx, dx_g_, D, grads + up_, dh_g_ + Fx, F2, x_g_, D, P.gemm + up_, Fx * D, offsets, E,
                              Fx, D, /*din_accumulate=*/true, known);
  Bk::moe_permute_backward(ctx, du, D, dx_g_, D, rows, M, K, D, /*accumulate=*/false);
  if (shared_) shared_->backward(ctx, du, grads, dout, u, P, M, /*du_accumulate=*/true);
  router_.backward(ctx, du, D, grads, u, D, P, M, aux_grad);  // du += router input grad
}

template <typename Bk>
MixerCounts MoeMlpMixer<Bk>::counts() const {
  MixerCounts c;
  const int64_t expert = 3 * D * Fx;
  c.total_params = E * expert;
  c.active_params = K * expert;
  c.gemm_flops = 2.0 * double(K * expert);
  // the K SwiGLU gates, and the weighted combine (a multiply and an add per slot and element)
  c.other_flops = kSwigluFlopsPerElement * double(K * Fx) + 2.0 * double(K * D);
  c += router_.counts();
  if (shared_) {
    c += shared_->counts();
    c.other_flops += double(D);  // adding the shared expert's output
  }
  return c;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(MoeMlpMixer)

}  // namespace moessm
