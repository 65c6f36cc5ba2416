// Swimba mixer, forward and backward (see swimba_mixer.h).
#include "model/swimba_mixer.h"

#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "model/ssm_core.h"
#include "ops/causal_conv1d.h"
#include "ops/delta_softplus.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/selective_scan.h"
#include "ops/grouped_matmul.h"
#include "ops/moe_permute.h"
#include "ops/ssm_a.h"

namespace moessm {

SwimbaOptions SwimbaOptions::parse(const MixerSpec& spec) {
  const std::string where = "mixer 'swimba'";
  SwimbaOptions o;
  o.router = RouterOptions::parse(spec.options, where);
  for (const auto& kv : spec.options.as_object()) {
    const std::string& k = kv.first;
    const Json& v = kv.second;
    if (k == "type" || RouterOptions::keys().count(k)) continue;
    if (k == "mix") {
      CHECK(v.is_string() && (v.as_string() == "pre" || v.as_string() == "post"), where,
            ": option 'mix' must be \"pre\" or \"post\", found ", v.dump());
      o.mix_post = v.as_string() == "post";
    } else if (k == "expert_dt_proj") {
      CHECK(v.is_bool(), where, ": option 'expert_dt_proj' must be true or false, found ", v.dump());
      o.expert_dt_proj = v.as_bool();
    } else if (k == "router_input") {
      CHECK(v.is_string() && (v.as_string() == "u" || v.as_string() == "conv"), where,
            ": option 'router_input' must be \"u\" or \"conv\", found ", v.dump());
      o.route_on_conv = v.as_string() == "conv";
    } else {
      FAIL(where, ": unknown option '", k, "' (known: type, n_experts, top_k, normalize_topk, ",
           "aux_coef, z_coef, mix, expert_dt_proj, router_input)");
    }
  }
  return o;
}

template <typename T>
SwimbaMixer<T>::SwimbaMixer(const ModelConfig& cfg, const SwimbaOptions& o)
    : D(cfg.d_model), Di(cfg.d_inner()), N(cfg.d_state), R(cfg.resolved_dt_rank()), Kc(cfg.d_conv),
      E(o.router.n_experts), K(o.router.top_k), mix_post(o.mix_post),
      expert_dt_proj(o.expert_dt_proj), route_on_conv(o.route_on_conv), cfg_(cfg),
      router_(o.router, o.route_on_conv ? cfg.d_inner() : cfg.d_model) {}

template <typename T>
void SwimbaMixer<T>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  // Dense names and order; expert tensors carry a leading E dim.
  conv_w_ = t.add(p + "conv1d.weight", {Di, 1, Kc}, false);
  conv_b_ = t.add(p + "conv1d.bias", {Di}, true);
  x_proj_ = t.add(p + "x_proj.weight", {E, R + 2 * N, Di}, false);
  dt_w_ = expert_dt_proj ? t.add(p + "dt_proj.weight", {E, Di, R}, false)
                         : t.add(p + "dt_proj.weight", {Di, R}, false);
  dt_b_ = t.add(p + "dt_proj.bias", {Di}, true);
  A_log_ = t.add(p + "A_log", {Di, N}, true);
  D_ = t.add(p + "D", {Di}, true);
  in_proj_ = t.add(p + "in_proj.weight", {2 * Di, D}, false);
  out_proj_ = t.add(p + "out_proj.weight", {D, Di}, false);
  router_.register_params(t, p);
}

template <typename T>
void SwimbaMixer<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
  // The dense initialisation, tensor by tensor (each tensor's draws are keyed by its name, and
  // the stacked expert tensors are drawn with the same per-row bounds), so E = 1 initialises
  // exactly like the dense mixer.
  SsmCore<CpuBackend<T>> dense(cfg_);
  dense.conv_w = conv_w_; dense.conv_b = conv_b_; dense.x_proj = x_proj_;
  dense.dt_proj_w = dt_w_; dense.dt_proj_b = dt_b_; dense.A_log = A_log_; dense.D_skip = D_;
  dense.init_params(params, t, seed);
  init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(cfg_.n_layer)));
  router_.init_params(params, t, seed);
}

template <typename T>
void SwimbaMixer<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  planned_B_ = B;
  planned_T_ = T_;
  training_ = training;
  const idx_t M = B * T_, MK = M * K, XW = R + 2 * N;
  const bool per_slot_dt = mix_post || expert_dt_proj;
  xz_ = a.carve(M * 2 * Di);
  xc_ = a.carve(M * Di);
  xg_ = a.carve(MK * Di);
  xs_ = a.carve(MK * XW);
  dts_ = per_slot_dt ? a.carve(MK * Di) : nullptr;
  xmix_ = a.carve(M * XW);
  sp_ = mix_post ? a.carve(MK * Di) : nullptr;  // softplus(dts + bias) per slot: forward, reused by backward
  delta_ = a.carve(M * Di);
  A_ = a.carve(Di * N);
  chunk_states_ = a.carve(B * scan_num_chunks(T_) * Di * N);
  y_ = a.carve(M * Di);
  router_.plan(a, B, T_, training);
  if (training) {
    dxz_ = a.carve(M * 2 * Di);
    dy_ = a.carve(M * Di);
    dxc_ = a.carve(M * Di);
    dxmix_ = a.carve(M * XW);
    ddelta_ = a.carve(M * Di);
    dA_ = a.carve(Di * N);
    dxs_ = a.carve(MK * XW);
    ddts_ = per_slot_dt ? a.carve(MK * Di) : nullptr;
    dxg_ = a.carve(MK * Di);
  }
}

template <typename T>
ScanParams<T> SwimbaMixer<T>::scan_params(const T* params, idx_t B, idx_t T_) const {
  const idx_t XW = R + 2 * N;
  ScanParams<T> p;
  p.B = B; p.T_ = T_; p.Di = Di; p.N = N;
  p.u = xc_; p.u_ld = Di;
  p.delta = delta_; p.delta_ld = Di;
  p.Bm = xmix_ + R; p.B_ld = XW;
  p.Cm = xmix_ + R + N; p.C_ld = XW;
  p.z = xz_ + Di; p.z_ld = 2 * Di;
  p.A = A_; p.D = params + D_;
  p.delta_bias = mix_post ? nullptr : params + dt_b_;  // post: Δ arrives mixed, after softplus
  p.delta_softplus = !mix_post;
  p.out = y_; p.out_ld = Di;  // written by forward only
  p.chunk_states = chunk_states_;
  return p;
}

template <typename T>
double SwimbaMixer<T>::forward_cpu(T* out, const T* u, const T* params, idx_t B, idx_t T_,
                               const T* state_in, T* state_out) {
  CHECK(B <= planned_B_ && T_ <= planned_T_, "SwimbaMixer: called with B=", B, " T=", T_,
        " but planned for B=", planned_B_, " T=", planned_T_);
  const idx_t M = B * T_, MK = M * K, XW = R + 2 * N;
  const T* conv_state_in = state_in;
  const T* ssm_state_in = state_in ? state_in + B * Di * (Kc - 1) : nullptr;
  T* conv_state_out = state_out;
  T* ssm_state_out = state_out ? state_out + B * Di * (Kc - 1) : nullptr;

  cpu::matmul_forward(xz_, 2 * Di, u, D, params + in_proj_, (const T*)nullptr, M, 2 * Di, D);
  cpu::causal_conv1d_forward(xc_, Di, conv_state_out, xz_, 2 * Di, conv_state_in, params + conv_w_,
                             params + conv_b_, B, T_, Di, Kc, true);
  const double aux = route_on_conv ? router_.forward(xc_, Di, params, M)
                                   : router_.forward(u, D, params, M);
  const T* g = router_.topk_weight();

  // Expert projections over each expert's slots (grouped order: the router's plan).
  const int32_t* slot = router_.row_of_slot();
  const int32_t* offsets = router_.offsets();
  cpu::moe_permute_forward(xg_, Di, xc_, Di, slot, M, K, Di);
  cpu::grouped_matmul_forward(xs_, XW, xg_, Di, params + x_proj_, XW * Di, offsets, E, XW, Di);
  if (expert_dt_proj)
    cpu::grouped_matmul_forward(dts_, Di, xs_, XW, params + dt_w_, Di * R, offsets, E, Di, R);
  if (mix_post && !expert_dt_proj)
    cpu::matmul_forward(dts_, Di, xs_, XW, params + dt_w_, (const T*)nullptr, MK, Di, R);

  // Parameter-space mixing.
  if (mixes_dt_low()) {
    cpu::moe_unpermute_forward(xmix_, XW, xs_, XW, g, slot, M, K, XW);
    cpu::matmul_forward(delta_, Di, xmix_, XW, params + dt_w_, (const T*)nullptr, M, Di, R);
  } else {
    cpu::moe_unpermute_forward(xmix_ + R, XW, xs_ + R, XW, g, slot, M, K, 2 * N);
  }
  if (!mix_post && expert_dt_proj)
    cpu::moe_unpermute_forward(delta_, Di, dts_, Di, g, slot, M, K, Di);
  if (mix_post) {
    // Δ = Σ_k g[t,k] · softplus(dts[slot] + bias): per-slot softplus, then the top-K mixture.
    cpu::delta_softplus_forward(sp_, dts_, params + dt_b_, MK, Di);
    cpu::moe_unpermute_forward(delta_, Di, sp_, Di, g, slot, M, K, Di);
  }

  cpu::ssm_a_forward(A_, params + A_log_, Di * N);
  ScanParams<T> p = scan_params(params, B, T_);
  p.h0 = ssm_state_in;
  p.h_last = ssm_state_out;
  cpu::selective_scan_forward(p);
  cpu::matmul_forward(out, D, y_, Di, params + out_proj_, (const T*)nullptr, M, D, Di);
  return aux;
}

template <typename T>
void SwimbaMixer<T>::backward_cpu(T* du, T* grads, const T* dout, const T* u, const T* params, idx_t B,
                              idx_t T_, const T* state_in, double aux_grad) {
  CHECK(training_, "SwimbaMixer: backward needs an arena planned for training");
  const idx_t M = B * T_, MK = M * K, XW = R + 2 * N;
  const T* g = router_.topk_weight();
  const int32_t* slot = router_.row_of_slot();
  const int32_t* offsets = router_.offsets();
  T* dg = router_.topk_weight_grad();

  cpu::matmul_backward(dy_, Di, grads + out_proj_, (T*)nullptr, dout, D, y_, Di,
                       params + out_proj_, M, D, Di);
  ScanParams<T> p = scan_params(params, B, T_);
  p.h0 = state_in ? state_in + B * Di * (Kc - 1) : nullptr;
  cpu::fill(dA_, T(0), Di * N);
  ScanGrads<T> sg;
  sg.dout = dy_; sg.dout_ld = Di;
  sg.du = dxc_; sg.du_ld = Di;
  sg.ddelta = ddelta_; sg.ddelta_ld = Di;
  sg.dB = dxmix_ + R; sg.dB_ld = XW;
  sg.dC = dxmix_ + R + N; sg.dC_ld = XW;
  sg.dz = dxz_ + Di; sg.dz_ld = 2 * Di;
  sg.dA = dA_; sg.dD = grads + D_;
  sg.ddelta_bias = mix_post ? nullptr : grads + dt_b_;
  cpu::selective_scan_backward(sg, p);
  cpu::ssm_a_backward(grads + A_log_, dA_, A_, Di * N);

  // Mixing backward: per-slot stream gradients and dg (B/C streams + the Δ path).
  if (mixes_dt_low()) {
    cpu::matmul_backward(dxmix_, XW, grads + dt_w_, (T*)nullptr, ddelta_, Di, xmix_, XW,
                         params + dt_w_, M, Di, R);
    cpu::moe_unpermute_backward(dxs_, XW, dg, dxmix_, XW, xs_, XW, g, slot, M, K, XW);
  } else {
    cpu::moe_unpermute_backward(dxs_ + R, XW, dg, dxmix_ + R, XW, xs_ + R, XW, g, slot, M, K, 2 * N);
    if (!mix_post) {
      cpu::moe_unpermute_backward(ddts_, Di, dg, ddelta_, Di, dts_, Di, g, slot, M, K, Di,
                                  /*dw_accumulate=*/true);
    } else {
      // Δ = Σ g · softplus(dts + bias): dg = <dΔ, softplus(·)> (sp_ saved by forward),
      // ddts = g · dΔ · σ(dts + bias), in place.
      cpu::moe_unpermute_backward(ddts_, Di, dg, ddelta_, Di, sp_, Di, g, slot, M, K, Di,
                                  /*dw_accumulate=*/true);
      cpu::delta_softplus_backward(ddts_, grads + dt_b_, ddts_, dts_, params + dt_b_, MK, Di);
    }
    if (!expert_dt_proj)  // post with the shared dt_proj: one GEMM over all slots
      cpu::matmul_backward(dxs_, XW, grads + dt_w_, (T*)nullptr, ddts_, Di, xs_, XW,
                           params + dt_w_, MK, Di, R);
  }
  if (expert_dt_proj)
    cpu::grouped_matmul_backward(dxs_, XW, grads + dt_w_, ddts_, Di, xs_, XW, params + dt_w_,
                                 Di * R, offsets, E, Di, R);
  cpu::grouped_matmul_backward(dxg_, Di, grads + x_proj_, dxs_, XW, xg_, Di, params + x_proj_,
                               XW * Di, offsets, E, XW, Di);
  cpu::moe_permute_backward(dxc_, Di, dxg_, Di, slot, M, K, Di, /*accumulate=*/true);

  if (route_on_conv) router_.backward(dxc_, Di, grads, xc_, Di, params, M, aux_grad);
  cpu::causal_conv1d_backward(dxz_, 2 * Di, grads + conv_w_, grads + conv_b_, dxc_, Di, xz_, 2 * Di,
                              state_in, params + conv_w_, params + conv_b_, B, T_, Di, Kc, true);
  cpu::matmul_backward(du, D, grads + in_proj_, (T*)nullptr, dxz_, 2 * Di, u, D,
                       params + in_proj_, M, 2 * Di, D);
  if (!route_on_conv) router_.backward(du, D, grads, u, D, params, M, aux_grad);
}

template <typename T>
void SwimbaMixer<T>::effective_delta(T* out, const T* params, idx_t M) const {
  if (mix_post) cpu::copy(out, Di, delta_, Di, M, Di);  // Δ arrives mixed, after softplus
  else cpu::delta_softplus_forward(out, delta_, params + dt_b_, M, Di);
}

template <typename T>
MixerCounts SwimbaMixer<T>::counts() const {
  const double XW = double(R + 2 * N), di = double(Di), d = double(D);
  MixerCounts c;
  const int64_t shared = 2 * Di * D + Di * Kc + Di + Di /*dt bias*/ + Di * N + Di + D * Di;
  const int64_t dt_w = Di * R;
  c.total_params = shared + E * (R + 2 * N) * Di + (expert_dt_proj ? E : 1) * dt_w;
  c.active_params = shared + K * (R + 2 * N) * Di + (expert_dt_proj ? K : 1) * dt_w;
  // GEMMs: in_proj, out_proj, K expert x_proj; dt_proj once per token (pre + shared: the dt_low
  // streams are mixed first) or once per slot.
  c.gemm_flops = 2.0 * (3.0 * di * d) + 2.0 * double(K) * XW * di +
                 2.0 * (mixes_dt_low() ? 1.0 : double(K)) * di * double(R);
  c.conv_flops = 2.0 * di * double(Kc);
  c.scan_flops = 7.0 * di * double(N);  // ONE scan: independent of E
  // mixing: 2 flops per mixed element per slot (+ softplus per slot element for post);
  // D skip and SiLU gate as dense.
  const double mixed = mixes_dt_low() ? XW : 2.0 * double(N) + di;
  c.other_flops = 2.0 * double(K) * mixed + (mix_post ? double(K) * di : 0.0) + 4.0 * di;
  c += router_.counts();
  return c;
}

template <typename T>
Json SwimbaMixer<T>::stats() const {
  return router_.stats("swimba");
}

template class SwimbaMixer<float>;
template class SwimbaMixer<double>;

}  // namespace moessm
