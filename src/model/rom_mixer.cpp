// Routing Mamba mixer (see rom_mixer.h). Building blocks:
//   MoeRouter  one router (moe_router.h): logits GEMM + router_topk + aux/z losses + the
//              grouping plan (moe_permute_plan); one per layer, or one per expertised module
//   RomLinear  one expertised linear layer: permute → grouped_matmul → unpermute (with the router
//              weights or the indicator sum), and its backward; decoding a few tokens (inference,
//              M·K <= kGroupedGemvMaxRows) one routed_gemv instead, and no grouping plan
//   RomCore    SsmCore with the x_proj / dt_proj / conv1d stages routed when expertised
// Backward order mirrors forward; du collects, in a fixed order, the conv-projection, gate-
// projection and router contributions.
#include "model/rom_mixer.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/check.h"
#include "model/init.h"
#include "ops/grouped_matmul.h"
#include "backend/backends.h"

namespace moessm {

const char* rom_module_name(int m) {
  static const char* kNames[kRomModules] = {"conv_proj", "gate_proj", "out_proj",
                                            "x_proj",    "dt_proj",   "conv1d"};
  CHECK(m >= 0 && m < kRomModules, "rom_module_name: module ", m, " out of range");
  return kNames[m];
}

RouterOptions RomOptions::router_defaults() {
  RouterOptions r;
  r.top_k = 1;
  r.normalize_topk = false;
  return r;
}

RomOptions RomOptions::parse(const Json& spec, const std::string& where) {
  RomOptions o;
  for (const auto& kv : spec.as_object(where)) {
    const std::string& k = kv.first;
    const Json& v = kv.second;
    const std::string what = where + ": field '" + k + "'";
    if (k == "type" || RouterOptions::keys().count(k)) continue;
    if (k == "shared_router") o.shared_router = v.as_bool(what);
    else if (k == "weight_at") o.weight_at = v.as_string(what);
    else if (k == "experts_in") {
      std::fill(o.expert, o.expert + kRomModules, false);
      for (const Json& e : v.as_array(what)) {
        const std::string& name = e.as_string(what + " entry");
        int m = 0;
        while (m < kRomModules && name != rom_module_name(m)) ++m;
        CHECK(m < kRomModules, what, ": unknown module '", name,
              "' (expected a subset of conv_proj, gate_proj, out_proj, x_proj, dt_proj, conv1d)");
        CHECK(!o.expert[m], what, ": module '", name, "' listed twice");
        o.expert[m] = true;
      }
    } else {
      FAIL(where, ": unknown option '", k,
           "' (rom takes n_experts, top_k, normalize_topk, weight_at, shared_router, experts_in, "
           "aux_coef, z_coef)");
    }
  }
  o.router = RouterOptions::parse(spec, where, router_defaults());
  CHECK(o.weight_at == "gate" || o.weight_at == "out" || o.weight_at == "both", where,
        ": weight_at must be 'gate', 'out' or 'both', found '", o.weight_at, "'");
  // The router weight must enter an expertised projection, or the router gets no gradient from
  // the language-model loss (an indicator-combined module's routing is piecewise constant).
  const bool at_gate = o.weight_at != "out", at_out = o.weight_at != "gate";
  CHECK(!at_gate || o.expert[kRomGateProj], where, ": weight_at '", o.weight_at,
        "' puts the router weight on the gate projection, but experts_in lacks 'gate_proj' "
        "(add it or use weight_at 'out')");
  CHECK(!at_out || o.expert[kRomOutProj], where, ": weight_at '", o.weight_at,
        "' puts the router weight on the output projection, but experts_in lacks 'out_proj' "
        "(add it or use weight_at 'gate')");
  return o;
}

// ---- building blocks ------------------------------------------------------------------------

template <typename Bk>
struct RomLinear {
  using Act = typename Bk::Act;
  using F = typename Bk::F;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  idx_t in_dim = 0, out_dim = 0, E = 0, K = 0;
  size_t w = 0;        // offset of expert 0's [out_dim, in_dim] block
  idx_t w_stride = 0;  // elements between experts' blocks
  Act *in_g = nullptr, *out_g = nullptr, *din_g = nullptr, *dout_g = nullptr;  // grouped rows
  // Decode form (set by the mixer per forward: inference with M·K <= kGroupedGemvMaxRows): one
  // routed GEMV over the tokens' own rows and the router's choice, no plan, no grouped rows.
  bool direct = false;

  void plan(typename Bk::Arena& a, idx_t M) {
    in_g = a.template carve<Act>(M * K * in_dim);
    out_g = a.template carve<Act>(M * K * out_dim);
  }
  void plan_scratch(typename Bk::Arena& a, idx_t M) {  // backward only
    din_g = a.template carve<Act>(M * K * in_dim);
    dout_g = a.template carve<Act>(M * K * out_dim);
  }
  // The three stages, so that one grouped GEMM can feed several combines (in_proj's x and z
  // halves): gather the tokens into grouped rows; the expert GEMMs; put columns [col, col+X) of
  // the grouped output back in token order, out[m] = Σ_k c[m,k] · row (c nullptr: indicator sum).
  void gather(const Ctx& ctx, const Act* in, idx_t in_ld, const MoeRouter<Bk>& r, idx_t M) const {
    Bk::moe_permute_forward(ctx, in_g, in_dim, in, in_ld, r.row_of_slot(), M, K, in_dim);
  }
  void gemm(const Ctx& ctx, const ParamsRef<Bk>& P, const MoeRouter<Bk>& r, idx_t M) const {
    Bk::grouped_matmul_forward(ctx, out_g, out_dim, in_g, in_dim, P.gemm + w, w_stride, r.offsets(), E, out_dim,
                               in_dim, M * K, r.known_offsets());
  }
  void combine(const Ctx& ctx, Act* out, idx_t out_ld, idx_t col, idx_t X, const F* c, const MoeRouter<Bk>& r,
               idx_t M) const {
    Bk::moe_unpermute_forward(ctx, out, out_ld, out_g + col, out_dim, c, r.row_of_slot(), M, K, X);
  }
  // The decode form: columns [0, split) into lo with c_lo, [split, out_dim) into hi with c_hi.
  void forward_direct(const Ctx& ctx, Act* lo, idx_t lo_ld, const F* c_lo, Act* hi, idx_t hi_ld, const F* c_hi,
                      idx_t split, const Act* in, idx_t in_ld, const ParamsRef<Bk>& P, const MoeRouter<Bk>& r,
                      idx_t M) const {
    Bk::routed_gemv_forward(ctx, lo, lo_ld, c_lo, hi, hi_ld, c_hi, split, in, in_ld, P.gemm + w, w_stride,
                            r.topk_index(), M, K, out_dim, in_dim);
  }
  // out[m] = Σ_k c[m,k] · W[idx[m,k]] · in[m]
  void forward(const Ctx& ctx, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const F* c,
               const ParamsRef<Bk>& P, const MoeRouter<Bk>& r, idx_t M) const {
    if (direct) return forward_direct(ctx, out, out_ld, c, nullptr, 0, nullptr, out_dim, in, in_ld, P, r, M);
    gather(ctx, in, in_ld, r, M);
    gemm(ctx, P, r, M);
    combine(ctx, out, out_ld, 0, out_dim, c, r, M);
  }
  // Backward of the stages: combine's assigns dout_g's columns [col, col+X) and accumulates dc
  // (when c and dc); gemm's assigns din_g and accumulates the weight grads; gather's writes din
  // (=, or += with din_acc).
  void combine_backward(const Ctx& ctx, const Act* dout, idx_t dout_ld, idx_t col, idx_t X, F* dc, const F* c,
                        const MoeRouter<Bk>& r, idx_t M) const {
    Bk::moe_unpermute_backward(ctx, dout_g + col, out_dim, dc, dout, dout_ld, out_g + col, out_dim, c,
                               r.row_of_slot(), M, K, X, /*dw_accumulate=*/true);
  }
  void gemm_backward(const Ctx& ctx, Param* grads, const ParamsRef<Bk>& P, const MoeRouter<Bk>& r, idx_t M) const {
    Bk::grouped_matmul_backward(ctx, din_g, in_dim, grads + w, dout_g, out_dim, in_g, in_dim, P.gemm + w, w_stride,
                                r.offsets(), E, out_dim, in_dim, false, r.known_offsets());
  }
  void gather_backward(const Ctx& ctx, Act* din, idx_t din_ld, bool din_acc, const MoeRouter<Bk>& r, idx_t M) const {
    Bk::moe_permute_backward(ctx, din, din_ld, din_g, in_dim, r.row_of_slot(), M, K, in_dim, din_acc);
  }
  void backward(const Ctx& ctx, Act* din, idx_t din_ld, bool din_acc, F* dc, Param* grads, const Act* dout,
                idx_t dout_ld, const F* c, const ParamsRef<Bk>& P, const MoeRouter<Bk>& r, idx_t M) const {
    combine_backward(ctx, dout, dout_ld, 0, out_dim, dc, c, r, M);
    gemm_backward(ctx, grads, P, r, M);
    gather_backward(ctx, din, din_ld, din_acc, r, M);
  }
};

template <typename Bk>
class RomCore : public SsmCore<Bk> {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using Base = SsmCore<Bk>;
  RomCore(const ModelConfig& cfg, const SsmExpertDims& ex, idx_t K) : Base(cfg, ex), K_(K) {}
  // routing of the expertised small modules (nullptr for dense ones); set by the mixer
  const MoeRouter<Bk>* route_conv = nullptr;
  const MoeRouter<Bk>* route_x = nullptr;
  const MoeRouter<Bk>* route_dt = nullptr;

  // After register_params: where the expert slabs live.
  void bind() {
    const idx_t XW = this->R + 2 * this->N;
    xl_ = RomLinear<Bk>{this->Di, XW, this->experts.x_proj, K_, this->x_proj, XW * this->Di};
    dl_ = RomLinear<Bk>{this->R, this->Di, this->experts.dt_proj, K_, this->dt_proj_w, this->Di * this->R};
  }
  void set_direct(bool d) { xl_.direct = dl_.direct = d; }
  void plan_experts(typename Bk::Arena& a, idx_t BT) {
    if (this->experts.x_proj) xl_.plan(a, BT);
    if (this->experts.dt_proj) dl_.plan(a, BT);
    if (this->experts.conv1d) {
      pre_ = a.template carve<Act>(BT * this->Di);
      pre_e_ = a.template carve<Act>(BT * this->Di);
    }
  }
  void plan_experts_scratch(typename Bk::Arena& a, idx_t BT) {  // backward only
    if (this->experts.x_proj) xl_.plan_scratch(a, BT);
    if (this->experts.dt_proj) dl_.plan_scratch(a, BT);
    if (this->experts.conv1d) {
      dpre_ = a.template carve<Act>(BT * this->Di);
      dx_e_ = a.template carve<Act>(BT * this->Di);
    }
  }

 protected:
  ParamsRef<Bk> P(const Param* params) const { return ParamsRef<Bk>{params, this->gemm_weights()}; }
  // conv1d experts: pre_t = Σ_{e∈S_t} conv_e(x)_t (indicator), xc = silu(pre) (ops/expert_conv1d.h).
  void conv_forward(Act* xc, Act* conv_state_out, const Act* x, idx_t x_ld, const Act* conv_state_in,
                    const Param* params, idx_t B, idx_t T_) override {
    const idx_t E = this->experts.conv1d, Di = this->Di, Kc = this->Kc;
    if (!E) return Base::conv_forward(xc, conv_state_out, x, x_ld, conv_state_in, params, B, T_);
    CHECK(!this->seq_idx(), "rom: conv1d experts (experts_in has conv1d) do not support packed documents (seq_idx)");
    Bk::expert_conv_forward(this->ctx(), xc, Di, pre_, conv_state_out, pre_e_, x, x_ld, conv_state_in,
                            route_conv->topk_index(), params + this->conv_w, params + this->conv_b, B, T_, Di, Kc, E,
                            K_);
  }
  void conv_backward(Act* dx, idx_t dx_ld, Param* grads, const Act* dxc, const Act* x, idx_t x_ld,
                     const Act* conv_state_in, const Param* params, idx_t B, idx_t T_) override {
    const idx_t E = this->experts.conv1d, Di = this->Di, Kc = this->Kc;
    if (!E) return Base::conv_backward(dx, dx_ld, grads, dxc, x, x_ld, conv_state_in, params, B, T_);
    CHECK(!this->seq_idx(), "rom: conv1d experts (experts_in has conv1d) do not support packed documents (seq_idx)");
    Bk::expert_conv_backward(this->ctx(), dx, dx_ld, grads + this->conv_w, grads + this->conv_b, dpre_, dx_e_, dxc,
                             Di, x, x_ld, conv_state_in, pre_, route_conv->topk_index(), params + this->conv_w,
                             params + this->conv_b, B, T_, Di, Kc, E, K_);
  }
  void x_proj_forward(Act* xdbl, const Act* xc, const Param* params, idx_t BT) override {
    if (!this->experts.x_proj) return Base::x_proj_forward(xdbl, xc, params, BT);
    xl_.forward(this->ctx(), xdbl, xl_.out_dim, xc, this->Di, nullptr, P(params), *route_x, BT);
  }
  void x_proj_backward(Act* dxc, Param* grads, const Act* dxdbl, const Act* xc, const Param* params,
                       idx_t BT) override {
    if (!this->experts.x_proj) return Base::x_proj_backward(dxc, grads, dxdbl, xc, params, BT);
    xl_.backward(this->ctx(), dxc, this->Di, /*din_acc=*/true, nullptr, grads, dxdbl, xl_.out_dim, nullptr,
                 P(params), *route_x, BT);
  }
  void dt_proj_forward(Act* delta, const Act* xdbl, const Param* params, idx_t BT) override {
    if (!this->experts.dt_proj) return Base::dt_proj_forward(delta, xdbl, params, BT);
    dl_.forward(this->ctx(), delta, this->Di, xdbl, this->R + 2 * this->N, nullptr, P(params), *route_dt, BT);
  }
  void dt_proj_backward(Act* dxdbl, Param* grads, const Act* ddelta, const Act* xdbl, const Param* params,
                        idx_t BT) override {
    if (!this->experts.dt_proj) return Base::dt_proj_backward(dxdbl, grads, ddelta, xdbl, params, BT);
    dl_.backward(this->ctx(), dxdbl, this->R + 2 * this->N, /*din_acc=*/false, nullptr, grads, ddelta, this->Di,
                 nullptr, P(params), *route_dt, BT);
  }

 private:
  idx_t K_;
  RomLinear<Bk> xl_, dl_;
  Act *pre_ = nullptr, *pre_e_ = nullptr, *dpre_ = nullptr, *dx_e_ = nullptr;
};

// ---- the mixer --------------------------------------------------------------------------------

namespace {
SsmExpertDims core_experts(const RomOptions& o) {
  SsmExpertDims d;
  d.conv1d = o.expert[kRomConv1d] ? o.router.n_experts : 0;
  d.x_proj = o.expert[kRomXProj] ? o.router.n_experts : 0;
  d.dt_proj = o.expert[kRomDtProj] ? o.router.n_experts : 0;
  return d;
}
}  // namespace

template <typename Bk>
RomMixer<Bk>::RomMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : opt_(RomOptions::parse(spec.options, "mixer 'rom'")), D(cfg.d_model), Di(cfg.d_inner()),
      E(opt_.router.n_experts), K(opt_.router.top_k), n_layer_(int(cfg.n_layer)),
      core_(std::make_unique<RomCore<Bk>>(cfg, core_experts(opt_), opt_.router.top_k)) {
  for (int m = 0; m < kRomModules; ++m) router_of_[m] = -1;
  for (int m = 0; m < kRomModules; ++m) {
    if (!opt_.expert[m]) continue;
    if (opt_.shared_router && !routers_.empty()) {
      router_of_[m] = 0;
      continue;
    }
    router_of_[m] = int(routers_.size());
    routers_.push_back(std::make_unique<MoeRouter<Bk>>(
        opt_.router, D, opt_.shared_router ? std::string("router") : std::string("router_") + rom_module_name(m)));
  }
  // The layer's objective is the mean over its routers of L_aux + L_z.
  for (auto& r : routers_) r->set_loss_share(1.0 / double(routers_.size()));
}

template <typename Bk>
RomMixer<Bk>::~RomMixer() = default;

template <typename Bk>
idx_t RomMixer<Bk>::state_size() const { return core_->state_size(); }

template <typename Bk>
std::vector<StatePart> RomMixer<Bk>::state_parts() const { return core_->state_parts(); }

template <typename Bk>
void RomMixer<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  core_->register_params(t, p);
  core_->bind();
  // An expertised projection is an expert slab [E, ...] (only grouped GEMMs read it: expert
  // parallelism may keep a rank's experts only); a dense one a plain tensor.
  auto add = [&](const std::string& name, bool ex, Shape s) {
    if (!ex) return t.add(name, s, false);
    s.insert(s.begin(), E);
    return t.add_experts(name, s, false);
  };
  const bool ex_x = opt_.expert[kRomConvProj], ex_z = opt_.expert[kRomGateProj], ex_o = opt_.expert[kRomOutProj];
  size_t wx, wz;
  idx_t stride_in;
  if (ex_x == ex_z) {  // one in_proj tensor, halves as in the dense layout
    in_proj_ = add(p + "in_proj.weight", ex_x, {2 * Di, D});
    wx = in_proj_;
    wz = in_proj_ + Di * D;
    stride_in = 2 * Di * D;
  } else {
    conv_proj_ = add(p + "conv_proj.weight", ex_x, {Di, D});
    gate_proj_ = add(p + "gate_proj.weight", ex_z, {Di, D});
    wx = conv_proj_;
    wz = gate_proj_;
    stride_in = Di * D;
  }
  out_proj_ = add(p + "out_proj.weight", ex_o, {D, Di});
  const size_t w[3] = {wx, wz, out_proj_};
  const idx_t stride[3] = {stride_in, stride_in, D * Di};
  const idx_t in_dim[3] = {D, D, Di}, out_dim[3] = {Di, Di, D};
  for (int m = 0; m < 3; ++m) {
    dense_w_[m] = w[m];
    lin_[m].reset();
    if (opt_.expert[m])
      lin_[m] = std::make_unique<RomLinear<Bk>>(RomLinear<Bk>{in_dim[m], out_dim[m], E, K, w[m], stride[m]});
  }
  // Both halves of an expertised in_proj routed by one router: one grouped GEMM over
  // [E, 2Di, D] feeds both (one gather of u, twice the GEMM width), then two combines.
  in_lin_.reset();
  if (ex_x && ex_z && router_of_[kRomConvProj] == router_of_[kRomGateProj]) {
    in_lin_ = std::make_unique<RomLinear<Bk>>(RomLinear<Bk>{D, 2 * Di, E, K, in_proj_, 2 * Di * D});
    lin_[kRomConvProj].reset();
    lin_[kRomGateProj].reset();
  }
  for (auto& r : routers_) r->register_params(t, p);
}

template <typename Bk>
void RomMixer<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  core_->init_params(params, t, seed);  // handles expert slabs of conv1d / x_proj / dt_proj
  if (t.find(prefix_ + "in_proj.weight")) {
    init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  } else {
    init_linear(params, t.at(prefix_ + "conv_proj.weight"), seed);
    init_linear(params, t.at(prefix_ + "gate_proj.weight"), seed);
  }
  // As dense: out_proj scaled by 1/sqrt(n_layer); every expert drawn independently.
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(n_layer_)));
  for (const auto& r : routers_) r->init_params(params, t, seed);  // as nn.Linear
}

template <typename Bk>
void RomMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  const idx_t M = B * T_;
  planned_BT_ = M;
  training_ = training;
  x_ = a.template carve<Act>(M * Di);
  z_ = a.template carve<Act>(M * Di);
  y_ = a.template carve<Act>(M * Di);
  for (auto& r : routers_) r->plan(a, B, T_, training);
  for (auto& l : lin_)
    if (l) l->plan(a, M);
  if (in_lin_) in_lin_->plan(a, M);
  core_->plan(a, B, T_, training);
  core_->plan_experts(a, M);
}

template <typename Bk>
void RomMixer<Bk>::plan_scratch(typename Bk::Arena& a, idx_t B, idx_t T_) {
  const idx_t M = B * T_;
  for (auto& l : lin_)
    if (l) l->plan_scratch(a, M);
  if (in_lin_) in_lin_->plan_scratch(a, M);
  core_->plan_experts_scratch(a, M);
  dx_ = a.template carve<Act>(M * Di);
  dz_ = a.template carve<Act>(M * Di);
  dy_ = a.template carve<Act>(M * Di);
}

template <typename Bk>
void RomMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                           const void* state_in, void* state_out, double* aux) {
  const idx_t M = B * T_;
  CHECK(M <= planned_BT_, "RomMixer: called with B·T=", M, " but planned for ", planned_BT_);
  // 1. routing (each router adds its share of the layer's aux objective to *aux). Decoding a few
  // tokens, every expertised linear takes the routed GEMV (and conv1d experts read only the
  // choice), so no grouping plan is built; not when the experts live on other ranks (expert
  // parallelism: only grouped GEMMs exchange rows).
  const bool direct = !training_ && M * K <= kGroupedGemvMaxRows && !Bk::experts_exchanged(ctx);
  for (auto& l : lin_)
    if (l) l->direct = direct;
  if (in_lin_) in_lin_->direct = direct;
  core_->set_direct(direct);
  for (auto& r : routers_) r->forward(ctx, aux, u, D, P, M, !direct);
  last_BT_ = M;
  auto route = [&](int m) -> const MoeRouter<Bk>* {
    return router_of_[m] >= 0 ? routers_[router_of_[m]].get() : nullptr;
  };
  core_->route_conv = route(kRomConv1d);
  core_->route_x = route(kRomXProj);
  core_->route_dt = route(kRomDtProj);
  const bool at_gate = opt_.weight_at != "out", at_out = opt_.weight_at != "gate";
  // 2. projections in: x (indicator), z (a = g with weight_at gate/both)
  if (in_lin_) {
    const MoeRouter<Bk>& r = *route(kRomConvProj);
    if (direct) {
      in_lin_->forward_direct(ctx, x_, Di, nullptr, z_, Di, at_gate ? r.topk_weight() : nullptr, Di, u, D, P, r, M);
    } else {
      in_lin_->gather(ctx, u, D, r, M);
      in_lin_->gemm(ctx, P, r, M);
      in_lin_->combine(ctx, x_, Di, 0, Di, nullptr, r, M);
      in_lin_->combine(ctx, z_, Di, Di, Di, at_gate ? r.topk_weight() : nullptr, r, M);
    }
  }
  Act* dst[2] = {x_, z_};
  for (int m = 0; m < 2 && !in_lin_; ++m) {
    if (lin_[m]) {
      const MoeRouter<Bk>& r = *route(m);
      lin_[m]->forward(ctx, dst[m], Di, u, D, (m == kRomGateProj && at_gate) ? r.topk_weight() : nullptr, P, r, M);
    } else {
      Bk::matmul_forward(ctx, dst[m], Di, u, D, P.gemm + dense_w_[m], M, Di, D);
    }
  }
  // 3. the shared SSM (one scan, one state), gated by silu(z)
  core_->forward(ctx, y_, Di, x_, Di, z_, Di, P, B, T_, state_in, state_out, this->seq_idx_);
  // 4. projection out (b = g with weight_at out/both)
  if (lin_[kRomOutProj]) {
    const MoeRouter<Bk>& r = *route(kRomOutProj);
    lin_[kRomOutProj]->forward(ctx, out, D, y_, Di, at_out ? r.topk_weight() : nullptr, P, r, M);
  } else {
    Bk::matmul_forward(ctx, out, D, y_, Di, P.gemm + dense_w_[kRomOutProj], M, D, Di);
  }
}

template <typename Bk>
void RomMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                            const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in, double aux_grad) {
  CHECK(training_ && dx_, "RomMixer: backward needs an arena planned for training (plan_scratch included)");
  const idx_t M = B * T_;
  CHECK(M == last_BT_, "RomMixer: backward for B·T=", M, " follows a forward of ", last_BT_);
  auto route = [&](int m) -> MoeRouter<Bk>* { return router_of_[m] >= 0 ? routers_[router_of_[m]].get() : nullptr; };
  const bool at_gate = opt_.weight_at != "out", at_out = opt_.weight_at != "gate";
  for (auto& r : routers_) Bk::zero(ctx, r->topk_weight_grad(), M * K);
  // out projection
  if (lin_[kRomOutProj]) {
    MoeRouter<Bk>& r = *route(kRomOutProj);
    lin_[kRomOutProj]->backward(ctx, dy_, Di, false, at_out ? r.topk_weight_grad() : nullptr, grads, dout, D,
                                at_out ? r.topk_weight() : nullptr, P, r, M);
  } else {
    Bk::matmul_backward(ctx, dy_, Di, grads + dense_w_[kRomOutProj], dout, D, y_, Di, P.gemm + dense_w_[kRomOutProj],
                        M, D, Di);
  }
  core_->backward(ctx, dx_, Di, dz_, Di, grads, dy_, Di, x_, Di, z_, Di, P, B, T_, state_in, this->seq_idx_);
  // in projections: du = (conv part) + (gate part)
  if (in_lin_) {
    MoeRouter<Bk>& r = *route(kRomConvProj);
    in_lin_->combine_backward(ctx, dx_, Di, 0, Di, nullptr, nullptr, r, M);
    in_lin_->combine_backward(ctx, dz_, Di, Di, Di, at_gate ? r.topk_weight_grad() : nullptr,
                              at_gate ? r.topk_weight() : nullptr, r, M);
    in_lin_->gemm_backward(ctx, grads, P, r, M);
    in_lin_->gather_backward(ctx, du, D, false, r, M);
  }
  const Act* dsrc[2] = {dx_, dz_};
  for (int m = 0; m < 2 && !in_lin_; ++m) {
    if (lin_[m]) {
      MoeRouter<Bk>& r = *route(m);
      const bool weighted = m == kRomGateProj && at_gate;
      lin_[m]->backward(ctx, du, D, m > 0, weighted ? r.topk_weight_grad() : nullptr, grads, dsrc[m], Di,
                        weighted ? r.topk_weight() : nullptr, P, r, M);
    } else {
      Bk::matmul_backward(ctx, du, D, grads + dense_w_[m], dsrc[m], Di, u, D, P.gemm + dense_w_[m], M, Di, D,
                          /*din_accumulate=*/m > 0);
    }
  }
  // routers: their weights' gradient + aux_grad × (their share of the aux objective)
  for (auto& r : routers_) r->backward(ctx, du, D, grads, u, D, P, M, aux_grad);
}

template <typename Bk>
MixerCounts RomMixer<Bk>::counts() const {
  MixerCounts c = core_->SsmCore<Bk>::counts();  // dense conv, x_proj, dt_proj, scan
  const idx_t R = core_->R, N = core_->N, Kc = core_->Kc;
  // expertised small modules: E copies stored, K used per token
  const int64_t small[3] = {Di * Kc + Di, (R + 2 * N) * Di, Di * R};
  const int mods[3] = {kRomConv1d, kRomXProj, kRomDtProj};
  for (int i = 0; i < 3; ++i) {
    if (!opt_.expert[mods[i]]) continue;
    c.total_params += (E - 1) * small[i];
    c.active_params += (K - 1) * small[i];
    if (mods[i] == kRomConv1d) c.conv_flops *= double(K);
    else c.gemm_flops += 2.0 * double((K - 1) * small[i]);
  }
  // projections conv (Di·D), gate (Di·D), out (D·Di)
  for (int m = 0; m < 3; ++m) {
    const int64_t p = Di * D;
    const int64_t n_total = opt_.expert[m] ? E : 1, n_active = opt_.expert[m] ? K : 1;
    c.total_params += n_total * p;
    c.active_params += n_active * p;
    c.gemm_flops += 2.0 * double(n_active * p);
    if (opt_.expert[m] && K > 1) c.other_flops += 2.0 * double(K * (m == kRomOutProj ? D : Di));  // combine
  }
  for (const auto& r : routers_) c += r->counts();
  c.other_flops += 4.0 * double(Di);  // D skip and SiLU(z) gate, as dense
  return c;
}

template <typename Bk>
bool RomMixer<Bk>::supports_seq_idx() const {
  return core_->experts.conv1d == 0;
}

template <typename Bk>
Json RomMixer<Bk>::stats() const {
  Json s = Json::object();
  s.set("type", "rom");
  double aux = 0, z = 0;
  Json by = Json::object();
  for (const auto& r : routers_) {
    const Json rs = r->stats();  // one copy of each router's statistics
    aux += rs.at("aux_loss").as_number();
    z += rs.at("z_loss").as_number();
    by.set(r->name(), rs.at("load"));
  }
  s.set("aux_loss", aux / double(routers_.size()));
  s.set("z_loss", z / double(routers_.size()));
  s.set("load", by.at(routers_[0]->name()));
  if (routers_.size() > 1) s.set("load_by_router", by);
  return s;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(RomMixer)

}  // namespace moessm
