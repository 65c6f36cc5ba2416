// Routing Mamba mixer (see rom_mixer.h). Building blocks:
//   MoeRouter  one router (moe_router.h): logits GEMM + router_topk + aux/z losses + the
//              grouping plan (moe_permute_plan); one per layer, or one per expertised module
//   RomLinear  one expertised linear layer: permute → grouped_matmul → unpermute (with the router
//              weights or the indicator sum), and its backward
//   RomCore    SsmCore with the x_proj / dt_proj / conv1d stages routed when expertised
// Backward order mirrors forward; du collects, in a fixed order, the conv-projection, gate-
// projection and router contributions.
#include "model/rom_mixer.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/check.h"
#include "model/init.h"
#include "ops/elementwise.h"
#include "ops/expert_conv1d.h"
#include "ops/grouped_matmul.h"
#include "ops/matmul.h"
#include "ops/moe_permute.h"

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

template <typename T>
struct RomLinear {
  idx_t in_dim = 0, out_dim = 0, E = 0, K = 0;
  size_t w = 0;        // offset of expert 0's [out_dim, in_dim] block
  idx_t w_stride = 0;  // elements between experts' blocks
  T *in_g = nullptr, *out_g = nullptr, *din_g = nullptr, *dout_g = nullptr;  // grouped rows

  void plan(Arena<T>& a, idx_t M, bool training) {
    in_g = a.carve(M * K * in_dim);
    out_g = a.carve(M * K * out_dim);
    if (training) {
      din_g = a.carve(M * K * in_dim);
      dout_g = a.carve(M * K * out_dim);
    }
  }
  // out[m] = Σ_k c[m,k] · W[idx[m,k]] · in[m]   (c nullptr: indicator sum)
  void forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* c, const T* params,
               const MoeRouter<T>& r, idx_t M) const {
    cpu::moe_permute_forward(in_g, in_dim, in, in_ld, r.row_of_slot(), M, K, in_dim);
    cpu::grouped_matmul_forward(out_g, out_dim, in_g, in_dim, params + w, w_stride, r.offsets(),
                                E, out_dim, in_dim);
    cpu::moe_unpermute_forward(out, out_ld, out_g, out_dim, c, r.row_of_slot(), M, K, out_dim);
  }
  // din (=, or += with din_acc); dc += (when c and dc); weight grads accumulate.
  void backward(T* din, idx_t din_ld, bool din_acc, T* dc, T* grads, const T* dout, idx_t dout_ld,
                const T* c, const T* params, const MoeRouter<T>& r, idx_t M) const {
    cpu::moe_unpermute_backward(dout_g, out_dim, dc, dout, dout_ld, out_g, out_dim, c,
                                r.row_of_slot(), M, K, out_dim, /*dw_accumulate=*/true);
    cpu::grouped_matmul_backward(din_g, in_dim, grads + w, dout_g, out_dim, in_g, in_dim,
                                 params + w, w_stride, r.offsets(), E, out_dim, in_dim);
    cpu::moe_permute_backward(din, din_ld, din_g, in_dim, r.row_of_slot(), M, K, in_dim, din_acc);
  }
};

template <typename T>
class RomCore : public SsmCore<CpuBackend<T>> {
 public:
  RomCore(const ModelConfig& cfg, const SsmExpertDims& ex, idx_t K) : SsmCore<CpuBackend<T>>(cfg, ex), K_(K) {}
  // routing of the expertised small modules (nullptr for dense ones); set by the mixer
  const MoeRouter<T>* route_conv = nullptr;
  const MoeRouter<T>* route_x = nullptr;
  const MoeRouter<T>* route_dt = nullptr;

  // After register_params: where the expert slabs live.
  void bind() {
    const idx_t XW = this->R + 2 * this->N;
    xl_ = RomLinear<T>{this->Di, XW, this->experts.x_proj, K_, this->x_proj, XW * this->Di};
    dl_ = RomLinear<T>{this->R, this->Di, this->experts.dt_proj, K_, this->dt_proj_w, this->Di * this->R};
  }
  void plan_experts(Arena<T>& a, idx_t BT, bool training) {
    if (this->experts.x_proj) xl_.plan(a, BT, training);
    if (this->experts.dt_proj) dl_.plan(a, BT, training);
    if (this->experts.conv1d) {
      pre_ = a.carve(BT * this->Di);
      pre_e_ = a.carve(BT * this->Di);
      if (training) {
        dpre_ = a.carve(BT * this->Di);
        dx_e_ = a.carve(BT * this->Di);
      }
    }
  }

 protected:
  // conv1d experts: pre_t = Σ_{e∈S_t} conv_e(x)_t (indicator), xc = silu(pre) (ops/expert_conv1d.h).
  void conv_forward(T* xc, T* conv_state_out, const T* x, idx_t x_ld, const T* conv_state_in,
                    const T* params, idx_t B, idx_t T_) override {
    const idx_t E = this->experts.conv1d, Di = this->Di, Kc = this->Kc;
    if (!E) return SsmCore<CpuBackend<T>>::conv_forward(xc, conv_state_out, x, x_ld, conv_state_in, params, B, T_);
    cpu::expert_conv1d_forward(xc, Di, pre_, conv_state_out, pre_e_, x, x_ld, conv_state_in,
                               route_conv->topk_index(), params + this->conv_w,
                               params + this->conv_b, B, T_, Di, Kc, E, K_);
  }
  void conv_backward(T* dx, idx_t dx_ld, T* grads, const T* dxc, const T* x, idx_t x_ld,
                     const T* conv_state_in, const T* params, idx_t B, idx_t T_) override {
    const idx_t E = this->experts.conv1d, Di = this->Di, Kc = this->Kc;
    if (!E) return SsmCore<CpuBackend<T>>::conv_backward(dx, dx_ld, grads, dxc, x, x_ld, conv_state_in, params, B, T_);
    cpu::expert_conv1d_backward(dx, dx_ld, grads + this->conv_w, grads + this->conv_b, dpre_, dx_e_,
                                dxc, Di, x, x_ld, conv_state_in, pre_, route_conv->topk_index(),
                                params + this->conv_w, params + this->conv_b, B, T_, Di, Kc, E, K_);
  }
  void x_proj_forward(T* xdbl, const T* xc, const T* params, idx_t BT) override {
    if (!this->experts.x_proj) return SsmCore<CpuBackend<T>>::x_proj_forward(xdbl, xc, params, BT);
    xl_.forward(xdbl, xl_.out_dim, xc, this->Di, nullptr, params, *route_x, BT);
  }
  void x_proj_backward(T* dxc, T* grads, const T* dxdbl, const T* xc, const T* params, idx_t BT) override {
    if (!this->experts.x_proj) return SsmCore<CpuBackend<T>>::x_proj_backward(dxc, grads, dxdbl, xc, params, BT);
    xl_.backward(dxc, this->Di, /*din_acc=*/true, nullptr, grads, dxdbl, xl_.out_dim, nullptr,
                 params, *route_x, BT);
  }
  void dt_proj_forward(T* delta, const T* xdbl, const T* params, idx_t BT) override {
    if (!this->experts.dt_proj) return SsmCore<CpuBackend<T>>::dt_proj_forward(delta, xdbl, params, BT);
    dl_.forward(delta, this->Di, xdbl, this->R + 2 * this->N, nullptr, params, *route_dt, BT);
  }
  void dt_proj_backward(T* dxdbl, T* grads, const T* ddelta, const T* xdbl, const T* params,
                        idx_t BT) override {
    if (!this->experts.dt_proj) return SsmCore<CpuBackend<T>>::dt_proj_backward(dxdbl, grads, ddelta, xdbl, params, BT);
    dl_.backward(dxdbl, this->R + 2 * this->N, /*din_acc=*/false, nullptr, grads, ddelta, this->Di,
                 nullptr, params, *route_dt, BT);
  }

 private:
  idx_t K_;
  RomLinear<T> xl_, dl_;
  T *pre_ = nullptr, *pre_e_ = nullptr, *dpre_ = nullptr, *dx_e_ = nullptr;
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

template <typename T>
RomMixer<T>::RomMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : opt_(RomOptions::parse(spec.options, "mixer 'rom'")), D(cfg.d_model), Di(cfg.d_inner()),
      E(opt_.router.n_experts), K(opt_.router.top_k), n_layer_(int(cfg.n_layer)),
      core_(std::make_unique<RomCore<T>>(cfg, core_experts(opt_), opt_.router.top_k)) {
  for (int m = 0; m < kRomModules; ++m) router_of_[m] = -1;
  for (int m = 0; m < kRomModules; ++m) {
    if (!opt_.expert[m]) continue;
    if (opt_.shared_router && !routers_.empty()) {
      router_of_[m] = 0;
      continue;
    }
    router_of_[m] = int(routers_.size());
    routers_.push_back(std::make_unique<MoeRouter<T>>(
        opt_.router, D, opt_.shared_router ? std::string("router") : std::string("router_") + rom_module_name(m)));
  }
}

template <typename T>
RomMixer<T>::~RomMixer() = default;

template <typename T>
idx_t RomMixer<T>::state_size() const { return core_->state_size(); }

template <typename T>
void RomMixer<T>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  core_->register_params(t, p);
  core_->bind();
  auto slab = [&](bool ex, Shape s) {
    if (ex) s.insert(s.begin(), E);
    return s;
  };
  const bool ex_x = opt_.expert[kRomConvProj], ex_z = opt_.expert[kRomGateProj], ex_o = opt_.expert[kRomOutProj];
  size_t wx, wz;
  idx_t stride_in;
  if (ex_x == ex_z) {  // one in_proj tensor, halves as in the dense layout
    in_proj_ = t.add(p + "in_proj.weight", slab(ex_x, {2 * Di, D}), false);
    wx = in_proj_;
    wz = in_proj_ + Di * D;
    stride_in = 2 * Di * D;
  } else {
    conv_proj_ = t.add(p + "conv_proj.weight", slab(ex_x, {Di, D}), false);
    gate_proj_ = t.add(p + "gate_proj.weight", slab(ex_z, {Di, D}), false);
    wx = conv_proj_;
    wz = gate_proj_;
    stride_in = Di * D;
  }
  out_proj_ = t.add(p + "out_proj.weight", slab(ex_o, {D, Di}), false);
  const size_t w[3] = {wx, wz, out_proj_};
  const idx_t stride[3] = {stride_in, stride_in, D * Di};
  const idx_t in_dim[3] = {D, D, Di}, out_dim[3] = {Di, Di, D};
  for (int m = 0; m < 3; ++m) {
    dense_w_[m] = w[m];
    lin_[m].reset();
    if (opt_.expert[m]) lin_[m] = std::make_unique<RomLinear<T>>(RomLinear<T>{in_dim[m], out_dim[m], E, K, w[m], stride[m]});
  }
  for (auto& r : routers_) r->register_params(t, p);
}

template <typename T>
void RomMixer<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
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

template <typename T>
void RomMixer<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  const idx_t M = B * T_;
  planned_BT_ = M;
  training_ = training;
  x_ = a.carve(M * Di);
  z_ = a.carve(M * Di);
  y_ = a.carve(M * Di);
  for (auto& r : routers_) r->plan(a, B, T_, training);
  for (auto& l : lin_)
    if (l) l->plan(a, M, training);
  core_->plan(a, B, T_, training);
  core_->plan_experts(a, M, training);
  if (training) {
    dx_ = a.carve(M * Di);
    dz_ = a.carve(M * Di);
    dy_ = a.carve(M * Di);
  }
}

template <typename T>
double RomMixer<T>::forward_cpu(T* out, const T* u, const T* params, idx_t B, idx_t T_,
                            const T* state_in, T* state_out) {
  const idx_t M = B * T_;
  CHECK(M <= planned_BT_, "RomMixer: called with B·T=", M, " but planned for ", planned_BT_);
  // 1. routing
  double aux = 0, z = 0;
  for (auto& r : routers_) {
    r->forward(u, D, params, M);
    aux += r->aux_loss();
    z += r->z_loss();
  }
  const double nr = double(routers_.size());
  last_aux_ = aux / nr;
  last_z_ = z / nr;
  last_BT_ = M;
  auto route = [&](int m) -> const MoeRouter<T>* { return router_of_[m] >= 0 ? routers_[router_of_[m]].get() : nullptr; };
  core_->route_conv = route(kRomConv1d);
  core_->route_x = route(kRomXProj);
  core_->route_dt = route(kRomDtProj);
  const bool at_gate = opt_.weight_at != "out", at_out = opt_.weight_at != "gate";
  // 2. projections in: x (indicator), z (a = g with weight_at gate/both)
  T* dst[2] = {x_, z_};
  for (int m = 0; m < 2; ++m) {
    if (lin_[m]) {
      const MoeRouter<T>& r = *route(m);
      lin_[m]->forward(dst[m], Di, u, D, (m == kRomGateProj && at_gate) ? r.topk_weight() : nullptr, params, r, M);
    } else {
      cpu::matmul_forward(dst[m], Di, u, D, params + dense_w_[m], (const T*)nullptr, M, Di, D);
    }
  }
  // 3. the shared SSM (one scan, one state), gated by silu(z)
  core_->forward(typename CpuBackend<T>::Ctx{}, y_, Di, x_, Di, z_, Di, ParamsRef<CpuBackend<T>>{params, params}, B, T_,
                 state_in, state_out);
  // 4. projection out (b = g with weight_at out/both)
  if (lin_[kRomOutProj]) {
    const MoeRouter<T>& r = *route(kRomOutProj);
    lin_[kRomOutProj]->forward(out, D, y_, Di, at_out ? r.topk_weight() : nullptr, params, r, M);
  } else {
    cpu::matmul_forward(out, D, y_, Di, params + dense_w_[kRomOutProj], (const T*)nullptr, M, D, Di);
  }
  return last_aux_ + last_z_;
}

template <typename T>
void RomMixer<T>::backward_cpu(T* du, T* grads, const T* dout, const T* u, const T* params, idx_t B,
                           idx_t T_, const T* state_in, double aux_grad) {
  CHECK(training_, "RomMixer: backward needs an arena planned for training");
  const idx_t M = B * T_;
  CHECK(M == last_BT_, "RomMixer: backward for B·T=", M, " follows a forward of ", last_BT_);
  auto route = [&](int m) -> MoeRouter<T>* { return router_of_[m] >= 0 ? routers_[router_of_[m]].get() : nullptr; };
  const bool at_gate = opt_.weight_at != "out", at_out = opt_.weight_at != "gate";
  for (auto& r : routers_) cpu::fill(r->topk_weight_grad(), T(0), M * K);
  // out projection
  if (lin_[kRomOutProj]) {
    MoeRouter<T>& r = *route(kRomOutProj);
    lin_[kRomOutProj]->backward(dy_, Di, false, at_out ? r.topk_weight_grad() : nullptr, grads,
                                dout, D, at_out ? r.topk_weight() : nullptr, params, r, M);
  } else {
    cpu::matmul_backward(dy_, Di, grads + dense_w_[kRomOutProj], (T*)nullptr, dout, D, y_, Di,
                         params + dense_w_[kRomOutProj], M, D, Di);
  }
  core_->backward(typename CpuBackend<T>::Ctx{}, dx_, Di, dz_, Di, grads, dy_, Di, x_, Di, z_, Di,
                  ParamsRef<CpuBackend<T>>{params, params}, B, T_, state_in);
  // in projections: du = (conv part) + (gate part)
  const T* dsrc[2] = {dx_, dz_};
  for (int m = 0; m < 2; ++m) {
    if (lin_[m]) {
      MoeRouter<T>& r = *route(m);
      const bool weighted = m == kRomGateProj && at_gate;
      lin_[m]->backward(du, D, m > 0, weighted ? r.topk_weight_grad() : nullptr, grads, dsrc[m],
                        Di, weighted ? r.topk_weight() : nullptr, params, r, M);
    } else {
      cpu::matmul_backward(du, D, grads + dense_w_[m], (T*)nullptr, dsrc[m], Di, u, D,
                           params + dense_w_[m], M, Di, D, /*din_accumulate=*/m > 0);
    }
  }
  // routers: weights' gradient + aux_grad × (mean over routers of aux + z)
  const double share = aux_grad / double(routers_.size());
  for (auto& r : routers_) r->backward(du, D, grads, u, D, params, M, share);
}

template <typename T>
MixerCounts RomMixer<T>::counts() const {
  MixerCounts c = core_->SsmCore<CpuBackend<T>>::counts();  // dense conv, x_proj, dt_proj, scan
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

template <typename T>
Json RomMixer<T>::stats() const {
  Json s = Json::object();
  s.set("type", "rom");
  s.set("aux_loss", last_aux_);
  s.set("z_loss", last_z_);
  s.set("load", routers_[0]->stats().at("load"));
  if (routers_.size() > 1) {
    Json by = Json::object();
    for (const auto& r : routers_) by.set(r->name(), r->stats().at("load"));
    s.set("load_by_router", by);
  }
  return s;
}

template class RomMixer<float>;
template class RomMixer<double>;

}  // namespace moessm
