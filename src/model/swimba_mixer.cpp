// Swimba mixer, forward and backward (see swimba_mixer.h).
#include "model/swimba_mixer.h"

#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "backend/backends.h"
#include "model/ssm_core.h"

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

template <typename Bk>
SwimbaMixer<Bk>::SwimbaMixer(const ModelConfig& cfg, const SwimbaOptions& o)
    : D(cfg.d_model), Di(cfg.d_inner()), N(cfg.d_state), R(cfg.resolved_dt_rank()), Kc(cfg.d_conv),
      E(o.router.n_experts), K(o.router.top_k), mix_post(o.mix_post),
      expert_dt_proj(o.expert_dt_proj), route_on_conv(o.route_on_conv), cfg_(cfg),
      router_(o.router, o.route_on_conv ? cfg.d_inner() : cfg.d_model) {}

template <typename Bk>
std::vector<StatePart> SwimbaMixer<Bk>::state_parts() const {
  return {{Di * (Kc - 1), dtype_of<Act>()}, {Di * N, dtype_of<F>()}};
}

template <typename Bk>
void SwimbaMixer<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  // Dense names and order; expert tensors carry a leading E dim.
  conv_w_ = t.add(p + "conv1d.weight", {Di, 1, Kc}, false);
  conv_b_ = t.add(p + "conv1d.bias", {Di}, true);
  x_proj_ = t.add_experts(p + "x_proj.weight", {E, R + 2 * N, Di}, false);  // grouped GEMMs only
  dt_w_ = expert_dt_proj ? t.add_experts(p + "dt_proj.weight", {E, Di, R}, false)
                         : t.add(p + "dt_proj.weight", {Di, R}, false);
  dt_b_ = t.add(p + "dt_proj.bias", {Di}, true);
  A_log_ = t.add(p + "A_log", {Di, N}, true);
  D_ = t.add(p + "D", {Di}, true);
  in_proj_ = t.add(p + "in_proj.weight", {2 * Di, D}, false);
  out_proj_ = t.add(p + "out_proj.weight", {D, Di}, false);
  router_.register_params(t, p);
}

template <typename Bk>
void SwimbaMixer<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  // The dense initialisation, tensor by tensor (each tensor's draws are keyed by its name, and
  // the stacked expert tensors are drawn with the same per-row bounds), so E = 1 initialises
  // exactly like the dense mixer.
  SsmCore<Bk> dense(cfg_);
  dense.conv_w = conv_w_; dense.conv_b = conv_b_; dense.x_proj = x_proj_;
  dense.dt_proj_w = dt_w_; dense.dt_proj_b = dt_b_; dense.A_log = A_log_; dense.D_skip = D_;
  dense.init_params(params, t, seed);
  init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(cfg_.n_layer)));
  router_.init_params(params, t, seed);
}

template <typename Bk>
void SwimbaMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  planned_B_ = B;
  planned_T_ = T_;
  training_ = training;
  const idx_t M = B * T_, MK = M * K, XW = R + 2 * N;
  const bool per_slot_dt = mix_post || expert_dt_proj;
  auto act = [&](idx_t n) { return a.template carve<Act>(n); };
  xz_ = act(M * 2 * Di);
  xc_ = act(M * Di);
  xg_ = act(MK * Di);
  xs_ = act(MK * XW);
  dts_ = per_slot_dt ? act(MK * Di) : nullptr;
  xmix_ = act(M * XW);
  sp_ = mix_post ? act(MK * Di) : nullptr;  // softplus(dts + bias) per slot: forward, reused by backward
  delta_ = act(M * Di);
  A_ = a.template carve<F>(Di * N);
  chunk_states_ = a.template carve<F>(B * scan_num_chunks(T_) * Di * N);
  y_ = act(M * Di);
  router_.plan(a, B, T_, training);
  if (training) {
    dxz_ = act(M * 2 * Di);
    dy_ = act(M * Di);
    dxc_ = act(M * Di);
    dxmix_ = act(M * XW);
    ddelta_ = act(M * Di);
    dA_ = a.template carve<F>(Di * N);
    dxs_ = act(MK * XW);
    ddts_ = per_slot_dt ? act(MK * Di) : nullptr;
    dxg_ = act(MK * Di);
  }
}

template <typename Bk>
typename Bk::ScanParams SwimbaMixer<Bk>::scan_params(const Param* params, idx_t B, idx_t T_) const {
  const idx_t XW = R + 2 * N;
  typename Bk::ScanParams p;
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
  p.seq_idx = this->seq_idx_;
  p.chunk_states = chunk_states_;
  return p;
}

template <typename Bk>
void SwimbaMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                              const void* state_in, void* state_out, double* aux) {
  CHECK(B <= planned_B_ && T_ <= planned_T_, "SwimbaMixer: called with B=", B, " T=", T_,
        " but planned for B=", planned_B_, " T=", planned_T_);
  const idx_t M = B * T_, MK = M * K, XW = R + 2 * N;
  const Param* params = P.master;
  const typename Bk::Weight* gw = P.gemm;
  const size_t ssm_at = size_t(B * Di * (Kc - 1)) * sizeof(Act);
  const Act* conv_state_in = static_cast<const Act*>(state_in);
  const F* ssm_state_in = state_in ? reinterpret_cast<const F*>(static_cast<const char*>(state_in) + ssm_at) : nullptr;
  Act* conv_state_out = static_cast<Act*>(state_out);
  F* ssm_state_out = state_out ? reinterpret_cast<F*>(static_cast<char*>(state_out) + ssm_at) : nullptr;

  Bk::matmul_forward(ctx, xz_, 2 * Di, u, D, gw + in_proj_, M, 2 * Di, D);
  Bk::conv_forward(ctx, xc_, Di, conv_state_out, xz_, 2 * Di, conv_state_in, this->seq_idx_, params + conv_w_,
                   params + conv_b_, B, T_, Di, Kc, true);
  if (route_on_conv) router_.forward(ctx, aux, xc_, Di, P, M);
  else router_.forward(ctx, aux, u, D, P, M);
  const F* g = router_.topk_weight();

  // Expert projections over each expert's slots (grouped order: the router's plan).
  const int32_t* slot = router_.row_of_slot();
  const int32_t* offsets = router_.offsets();
  Bk::moe_permute_forward(ctx, xg_, Di, xc_, Di, slot, M, K, Di);
  Bk::grouped_matmul_forward(ctx, xs_, XW, xg_, Di, gw + x_proj_, XW * Di, offsets, E, XW, Di, MK,
                             router_.known_offsets());
  if (expert_dt_proj)
    Bk::grouped_matmul_forward(ctx, dts_, Di, xs_, XW, gw + dt_w_, Di * R, offsets, E, Di, R, MK,
                               router_.known_offsets());
  if (mix_post && !expert_dt_proj) Bk::matmul_forward(ctx, dts_, Di, xs_, XW, gw + dt_w_, MK, Di, R);

  // Parameter-space mixing.
  if (mixes_dt_low()) {
    Bk::moe_unpermute_forward(ctx, xmix_, XW, xs_, XW, g, slot, M, K, XW);
    Bk::matmul_forward(ctx, delta_, Di, xmix_, XW, gw + dt_w_, M, Di, R);
  } else {
    Bk::moe_unpermute_forward(ctx, xmix_ + R, XW, xs_ + R, XW, g, slot, M, K, 2 * N);
  }
  if (!mix_post && expert_dt_proj) Bk::moe_unpermute_forward(ctx, delta_, Di, dts_, Di, g, slot, M, K, Di);
  if (mix_post) {
    // Δ = Σ_k g[t,k] · softplus(dts[slot] + bias): per-slot softplus, then the top-K mixture.
    Bk::delta_softplus_forward(ctx, sp_, dts_, params + dt_b_, MK, Di);
    Bk::moe_unpermute_forward(ctx, delta_, Di, sp_, Di, g, slot, M, K, Di);
  }

  Bk::ssm_a_forward(ctx, A_, params + A_log_, Di * N);
  typename Bk::ScanParams p = scan_params(params, B, T_);
  p.h0 = ssm_state_in;
  p.h_last = ssm_state_out;
  Bk::scan_forward(ctx, p);
  Bk::matmul_forward(ctx, out, D, y_, Di, gw + out_proj_, M, D, Di);
}

template <typename Bk>
void SwimbaMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                               const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in, double aux_grad) {
  CHECK(training_, "SwimbaMixer: backward needs an arena planned for training");
  const idx_t M = B * T_, MK = M * K, XW = R + 2 * N;
  const Param* params = P.master;
  const typename Bk::Weight* gw = P.gemm;
  const F* g = router_.topk_weight();
  const int32_t* slot = router_.row_of_slot();
  const int32_t* offsets = router_.offsets();
  F* dg = router_.topk_weight_grad();
  const Act* conv_state_in = static_cast<const Act*>(state_in);
  const size_t ssm_at = size_t(B * Di * (Kc - 1)) * sizeof(Act);

  Bk::matmul_backward(ctx, dy_, Di, grads + out_proj_, dout, D, y_, Di, gw + out_proj_, M, D, Di);
  typename Bk::ScanParams p = scan_params(params, B, T_);
  p.h0 = state_in ? reinterpret_cast<const F*>(static_cast<const char*>(state_in) + ssm_at) : nullptr;
  Bk::zero(ctx, dA_, Di * N);
  typename Bk::ScanGrads sg;
  sg.dout = dy_; sg.dout_ld = Di;
  sg.du = dxc_; sg.du_ld = Di;
  sg.ddelta = ddelta_; sg.ddelta_ld = Di;
  sg.dB = dxmix_ + R; sg.dB_ld = XW;
  sg.dC = dxmix_ + R + N; sg.dC_ld = XW;
  sg.dz = dxz_ + Di; sg.dz_ld = 2 * Di;
  sg.dA = dA_; sg.dD = grads + D_;
  sg.ddelta_bias = mix_post ? nullptr : grads + dt_b_;
  Bk::scan_backward(ctx, sg, p);
  Bk::ssm_a_backward(ctx, grads + A_log_, dA_, A_, Di * N);

  // Mixing backward: per-slot stream gradients and dg (B/C streams + the Δ path).
  if (mixes_dt_low()) {
    Bk::matmul_backward(ctx, dxmix_, XW, grads + dt_w_, ddelta_, Di, xmix_, XW, gw + dt_w_, M, Di, R);
    Bk::moe_unpermute_backward(ctx, dxs_, XW, dg, dxmix_, XW, xs_, XW, g, slot, M, K, XW, false);
  } else {
    Bk::moe_unpermute_backward(ctx, dxs_ + R, XW, dg, dxmix_ + R, XW, xs_ + R, XW, g, slot, M, K, 2 * N, false);
    if (!mix_post) {
      Bk::moe_unpermute_backward(ctx, ddts_, Di, dg, ddelta_, Di, dts_, Di, g, slot, M, K, Di,
                                 /*dw_accumulate=*/true);
    } else {
      // Δ = Σ g · softplus(dts + bias): dg = <dΔ, softplus(·)> (sp_ saved by forward),
      // ddts = g · dΔ · σ(dts + bias), in place.
      Bk::moe_unpermute_backward(ctx, ddts_, Di, dg, ddelta_, Di, sp_, Di, g, slot, M, K, Di,
                                 /*dw_accumulate=*/true);
      Bk::delta_softplus_backward(ctx, ddts_, grads + dt_b_, ddts_, dts_, params + dt_b_, MK, Di);
    }
    if (!expert_dt_proj)  // post with the shared dt_proj: one GEMM over all slots
      Bk::matmul_backward(ctx, dxs_, XW, grads + dt_w_, ddts_, Di, xs_, XW, gw + dt_w_, MK, Di, R);
  }
  if (expert_dt_proj)
    Bk::grouped_matmul_backward(ctx, dxs_, XW, grads + dt_w_, ddts_, Di, xs_, XW, gw + dt_w_, Di * R, offsets, E, Di,
                                R, false, router_.known_offsets());
  Bk::grouped_matmul_backward(ctx, dxg_, Di, grads + x_proj_, dxs_, XW, xg_, Di, gw + x_proj_, XW * Di, offsets, E,
                              XW, Di, false, router_.known_offsets());
  Bk::moe_permute_backward(ctx, dxc_, Di, dxg_, Di, slot, M, K, Di, /*accumulate=*/true);

  if (route_on_conv) router_.backward(ctx, dxc_, Di, grads, xc_, Di, P, M, aux_grad);
  Bk::conv_backward(ctx, dxz_, 2 * Di, grads + conv_w_, grads + conv_b_, dxc_, Di, xz_, 2 * Di, conv_state_in,
                    this->seq_idx_, params + conv_w_, params + conv_b_, B, T_, Di, Kc, true);
  Bk::matmul_backward(ctx, du, D, grads + in_proj_, dxz_, 2 * Di, u, D, gw + in_proj_, M, 2 * Di, D);
  if (!route_on_conv) router_.backward(ctx, du, D, grads, u, D, P, M, aux_grad);
}

template <typename Bk>
void SwimbaMixer<Bk>::effective_delta(const Ctx& ctx, Act* out, const Param* params, idx_t M) const {
  if (mix_post) Bk::copy(ctx, out, delta_, M * Di);  // Δ arrives mixed, after softplus
  else Bk::delta_softplus_forward(ctx, out, delta_, params + dt_b_, M, Di);
}

template <typename Bk>
MixerCounts SwimbaMixer<Bk>::counts() const {
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

template <typename Bk>
Json SwimbaMixer<Bk>::stats() const {
  return router_.stats("swimba");
}

MOESSM_INSTANTIATE_FOR_BACKENDS(SwimbaMixer)

}  // namespace moessm
