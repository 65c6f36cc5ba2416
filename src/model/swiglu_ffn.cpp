// SwigluFfn<Bk> (see swiglu_ffn.h), instantiated for every backend.
#include "model/swiglu_ffn.h"

#include <cmath>

#include "backend/backends.h"
#include "core/check.h"
#include "model/init.h"

namespace moessm {

int64_t default_d_ff(int64_t d_model) {
  const int64_t h = 8 * d_model / 3;
  return (h + 63) / 64 * 64;
}

int64_t parse_d_ff(const Json& spec, const char* key, const std::string& where, int64_t fallback) {
  const Json* v = spec.get(key);
  if (!v) return fallback;
  CHECK(v->is_integer() && v->as_int() >= 1 && v->as_int() <= kMaxDff, where, ": option '", key,
        "' must be an integer in [1, ", kMaxDff, "], found ", v->dump());
  return v->as_int();
}

template <typename Bk>
void SwigluFfn<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  gate_up_ = t.add(p + "gate_proj.weight", {F, D}, false);
  const size_t up = t.add(p + "up_proj.weight", {F, D}, false);
  // The fused gate|up GEMM reads both as one [2F, D] block.
  CHECK(up == gate_up_ + size_t(F * D), "SwigluFfn: up_proj must follow gate_proj in the parameter table");
  down_ = t.add(p + "down_proj.weight", {D, F}, false);
}

template <typename Bk>
void SwigluFfn<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  init_linear(params, t.at(prefix_ + "gate_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "up_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "down_proj.weight"), seed, 1.0 / std::sqrt(double(n_layer_)));
}

template <typename Bk>
void SwigluFfn<Bk>::plan(typename Bk::Arena& a, idx_t M) {
  planned_M_ = M;
  h_ = a.template carve<Act>(M * 2 * F);
  a_ = a.template carve<Act>(M * F);
}

template <typename Bk>
void SwigluFfn<Bk>::plan_scratch(typename Bk::Arena& a, idx_t M) {
  dh_ = a.template carve<Act>(M * 2 * F);
  da_ = a.template carve<Act>(M * F);
}

template <typename Bk>
void SwigluFfn<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t M,
                            bool accumulate) const {
  CHECK(M <= planned_M_, "SwigluFfn: called with ", M, " tokens but planned for ", planned_M_);
  Bk::matmul_forward(ctx, h_, 2 * F, u, D, P.gemm + gate_up_, M, 2 * F, D);
  Bk::swiglu_forward(ctx, a_, F, h_, 2 * F, h_ + F, 2 * F, M, F);
  Bk::matmul_forward(ctx, out, D, a_, F, P.gemm + down_, M, D, F, accumulate);
}

template <typename Bk>
void SwigluFfn<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                             const ParamsRef<Bk>& P, idx_t M, bool du_accumulate) const {
  CHECK(dh_ && da_, "SwigluFfn: backward needs an arena planned for training (plan_scratch)");
  Bk::matmul_backward(ctx, da_, F, grads + down_, dout, D, a_, F, P.gemm + down_, M, D, F);
  Bk::swiglu_backward(ctx, dh_, 2 * F, dh_ + F, 2 * F, da_, F, h_, 2 * F, h_ + F, 2 * F, M, F);
  Bk::matmul_backward(ctx, du, D, grads + gate_up_, dh_, 2 * F, u, D, P.gemm + gate_up_, M, 2 * F, D, du_accumulate);
}

template <typename Bk>
MixerCounts SwigluFfn<Bk>::counts() const {
  MixerCounts c;
  const int64_t w = 3 * D * F;
  c.total_params = c.active_params = w;
  c.gemm_flops = 2.0 * double(w);
  c.other_flops = kSwigluFlopsPerElement * double(F);
  return c;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(SwigluFfn)

}  // namespace moessm
