// Separated MoE-SSM mixer, forward and backward (see separated_moe_ssm_mixer.h).
#include "model/separated_moe_ssm_mixer.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "backend/backends.h"
#include "model/ssm_core.h"

namespace moessm {

namespace {
RouterOptions parse_separated(const MixerSpec& spec) {
  const std::string where = "mixer 'separated_moe_ssm'";
  for (const auto& kv : spec.options.as_object())
    CHECK(kv.first == "type" || RouterOptions::keys().count(kv.first), where, ": unknown option '",
          kv.first, "' (known: type, n_experts, top_k, normalize_topk, aux_coef, z_coef)");
  return RouterOptions::parse(spec.options, where);
}
}  // namespace

template <typename Bk>
SeparatedMoeSsmMixer<Bk>::SeparatedMoeSsmMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : SeparatedMoeSsmMixer(cfg, parse_separated(spec)) {}

template <typename Bk>
SeparatedMoeSsmMixer<Bk>::SeparatedMoeSsmMixer(const ModelConfig& cfg, const RouterOptions& o)
    : D(cfg.d_model), Di(cfg.d_inner()), N(cfg.d_state), R(cfg.resolved_dt_rank()), Kc(cfg.d_conv),
      E(o.n_experts), K(o.top_k), cfg_(cfg), router_(o, cfg.d_model) {}

template <typename Bk>
std::vector<StatePart> SeparatedMoeSsmMixer<Bk>::state_parts() const {
  return {{Di * (Kc - 1), dtype_of<Act>()}, {E * Di * N, dtype_of<F>()}};
}

template <typename Bk>
void SeparatedMoeSsmMixer<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  conv_w_ = t.add(p + "conv1d.weight", {Di, 1, Kc}, false);
  conv_b_ = t.add(p + "conv1d.bias", {Di}, true);
  x_proj_ = t.add(p + "x_proj.weight", {E, R + 2 * N, Di}, false);
  dt_w_ = t.add(p + "dt_proj.weight", {E, Di, R}, false);
  dt_b_ = t.add(p + "dt_proj.bias", {E, Di}, true);
  A_log_ = t.add(p + "A_log", {E, Di, N}, true);
  D_ = t.add(p + "D", {E, Di}, true);
  in_proj_ = t.add(p + "in_proj.weight", {2 * Di, D}, false);
  out_proj_ = t.add(p + "out_proj.weight", {D, Di}, false);
  router_.register_params(t, p);
}

template <typename Bk>
void SeparatedMoeSsmMixer<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  // The dense initialisation tensor by tensor (draws keyed by name, so E = 1 equals dense);
  // it fills the first branch's A_log and D, which every branch then copies (host buffer).
  SsmCore<Bk> dense(cfg_);
  dense.conv_w = conv_w_; dense.conv_b = conv_b_; dense.x_proj = x_proj_;
  dense.dt_proj_w = dt_w_; dense.dt_proj_b = dt_b_; dense.A_log = A_log_; dense.D_skip = D_;
  dense.init_params(params, t, seed);
  for (idx_t e = 1; e < E; ++e) {
    std::copy(params + A_log_, params + A_log_ + Di * N, params + A_log_ + e * Di * N);
    std::copy(params + D_, params + D_ + Di, params + D_ + e * Di);
  }
  init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(cfg_.n_layer)));
  router_.init_params(params, t, seed);
}

template <typename Bk>
void SeparatedMoeSsmMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  planned_B_ = B;
  planned_T_ = T_;
  training_ = training;
  const idx_t M = B * T_, XW = R + 2 * N;
  auto act = [&](idx_t n) { return a.template carve<Act>(n); };
  rows_ = a.template carve<int32_t>(M * K);
  xz_ = act(M * 2 * Di);
  xc_ = act(M * Di);
  xdbl_ = act(E * M * XW);
  delta_ = act(E * M * Di);
  A_ = a.template carve<F>(E * Di * N);
  chunk_states_ = a.template carve<F>(E * B * scan_num_chunks(T_) * Di * N);
  ybr_ = act(E * M * Di);
  y_ = act(M * Di);
  router_.plan(a, B, T_, training);
  if (training) {
    dxz_ = act(M * 2 * Di);
    dy_ = act(M * Di);
    dybr_ = act(E * M * Di);
    dxc_ = act(M * Di);
    dxc_e_ = act(M * Di);
    dz_e_ = act(M * Di);
    dxdbl_ = act(M * XW);
    ddelta_ = act(M * Di);
    dA_ = a.template carve<F>(Di * N);
  }
}

// The scan of branch e over B sequences (everything but the state and gradient pointers).
template <typename Bk>
typename Bk::ScanParams SeparatedMoeSsmMixer<Bk>::branch_scan(idx_t e, const Param* params, idx_t B,
                                                              idx_t T_) const {
  const idx_t M = B * T_, XW = R + 2 * N;
  typename Bk::ScanParams p;
  p.B = B; p.T_ = T_; p.Di = Di; p.N = N;
  p.u = xc_; p.u_ld = Di;
  p.delta = delta_ + e * M * Di; p.delta_ld = Di;
  p.Bm = xdbl_ + e * M * XW + R; p.B_ld = XW;
  p.Cm = xdbl_ + e * M * XW + R + N; p.C_ld = XW;
  p.z = xz_ + Di; p.z_ld = 2 * Di;
  p.A = A_ + e * Di * N; p.D = params + D_ + e * Di; p.delta_bias = params + dt_b_ + e * Di;
  p.out = ybr_ + e * M * Di; p.out_ld = Di;
  p.seq_idx = this->seq_idx_;
  p.chunk_states = chunk_states_ + e * B * scan_num_chunks(T_) * Di * N;
  return p;
}

template <typename Bk>
void SeparatedMoeSsmMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B,
                                       idx_t T_, const void* state_in, void* state_out, double* aux) {
  CHECK(B <= planned_B_ && T_ <= planned_T_, "SeparatedMoeSsmMixer: called with B=", B, " T=", T_,
        " but planned for B=", planned_B_, " T=", planned_T_);
  const idx_t M = B * T_, XW = R + 2 * N;
  const Param* params = P.master;
  const typename Bk::Weight* gw = P.gemm;
  const size_t ssm_at = size_t(B * Di * (Kc - 1)) * sizeof(Act);
  const F* ssm_in = state_in ? reinterpret_cast<const F*>(static_cast<const char*>(state_in) + ssm_at) : nullptr;
  F* ssm_out = state_out ? reinterpret_cast<F*>(static_cast<char*>(state_out) + ssm_at) : nullptr;
  Bk::matmul_forward(ctx, xz_, 2 * Di, u, D, gw + in_proj_, M, 2 * Di, D);
  Bk::conv_forward(ctx, xc_, Di, static_cast<Act*>(state_out), xz_, 2 * Di, static_cast<const Act*>(state_in),
                   this->seq_idx_, params + conv_w_, params + conv_b_, B, T_, Di, Kc, true);
  router_.forward(ctx, aux, u, D, P, M);
  Bk::ssm_a_forward(ctx, A_, params + A_log_, E * Di * N);
  for (idx_t e = 0; e < E; ++e) {
    Act* xd = xdbl_ + e * M * XW;
    Bk::matmul_forward(ctx, xd, XW, xc_, Di, gw + x_proj_ + e * XW * Di, M, XW, Di);
    Bk::matmul_forward(ctx, delta_ + e * M * Di, Di, xd, XW, gw + dt_w_ + e * Di * R, M, Di, R);
    typename Bk::ScanParams p = branch_scan(e, params, B, T_);
    p.h0 = ssm_in ? ssm_in + e * B * Di * N : nullptr;
    p.h_last = ssm_out ? ssm_out + e * B * Di * N : nullptr;
    Bk::scan_forward(ctx, p);
  }
  Bk::moe_permute_plan_stacked(ctx, rows_, router_.topk_index(), M, E, K);
  Bk::moe_unpermute_forward(ctx, y_, Di, ybr_, Di, router_.topk_weight(), rows_, M, K, Di);
  Bk::matmul_forward(ctx, out, D, y_, Di, gw + out_proj_, M, D, Di);
}

template <typename Bk>
void SeparatedMoeSsmMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                                        const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in,
                                        double aux_grad) {
  CHECK(training_, "SeparatedMoeSsmMixer: backward needs an arena planned for training");
  const idx_t M = B * T_, XW = R + 2 * N;
  const Param* params = P.master;
  const typename Bk::Weight* gw = P.gemm;
  const size_t ssm_at = size_t(B * Di * (Kc - 1)) * sizeof(Act);
  const F* ssm_in = state_in ? reinterpret_cast<const F*>(static_cast<const char*>(state_in) + ssm_at) : nullptr;
  Bk::matmul_backward(ctx, dy_, Di, grads + out_proj_, dout, D, y_, Di, gw + out_proj_, M, D, Di);
  // Branch output gradients: g·dy where chosen, 0 elsewhere (the branch still carries state).
  Bk::zero(ctx, dybr_, E * M * Di);
  Bk::moe_unpermute_backward(ctx, dybr_, Di, router_.topk_weight_grad(), dy_, Di, ybr_, Di, router_.topk_weight(),
                             rows_, M, K, Di, false);
  Bk::zero(ctx, dxc_, M * Di);
  Bk::fill_rows(ctx, dxz_ + Di, 2 * Di, Act(0), M, Di);  // the z half: branches add their gate gradients
  // The plan's offsets on the host when the router has them (always on the CPU; on CUDA after
  // its one copy per forward, none when decoding-sized): expert e has offsets[e+1] - offsets[e] slots.
  const int32_t* offsets = router_.known_offsets();
  for (idx_t e = 0; e < E; ++e) {
    // No token reads branch e: every gradient through it is 0, so its backward is skipped.
    if (offsets && offsets[e + 1] == offsets[e]) continue;
    const Act* xd = xdbl_ + e * M * XW;
    typename Bk::ScanParams p = branch_scan(e, params, B, T_);
    p.h0 = ssm_in ? ssm_in + e * B * Di * N : nullptr;
    Bk::zero(ctx, dA_, Di * N);
    typename Bk::ScanGrads g;
    g.dout = dybr_ + e * M * Di; g.dout_ld = Di;
    g.du = dxc_e_; g.du_ld = Di;
    g.ddelta = ddelta_; g.ddelta_ld = Di;
    g.dB = dxdbl_ + R; g.dB_ld = XW;
    g.dC = dxdbl_ + R + N; g.dC_ld = XW;
    g.dz = dz_e_; g.dz_ld = Di;
    g.dA = dA_; g.dD = grads + D_ + e * Di; g.ddelta_bias = grads + dt_b_ + e * Di;
    Bk::scan_backward(ctx, g, p);
    Bk::ssm_a_backward(ctx, grads + A_log_ + e * Di * N, dA_, A_ + e * Di * N, Di * N);
    Bk::add_forward(ctx, dxc_, Di, dxc_, Di, dxc_e_, Di, M, Di);
    Bk::add_forward(ctx, dxz_ + Di, 2 * Di, dxz_ + Di, 2 * Di, dz_e_, Di, M, Di);
    Bk::matmul_backward(ctx, dxdbl_, XW, grads + dt_w_ + e * Di * R, ddelta_, Di, xd, XW, gw + dt_w_ + e * Di * R, M,
                        Di, R);
    Bk::matmul_backward(ctx, dxc_, Di, grads + x_proj_ + e * XW * Di, dxdbl_, XW, xc_, Di, gw + x_proj_ + e * XW * Di,
                        M, XW, Di, /*din_accumulate=*/true);
  }
  Bk::conv_backward(ctx, dxz_, 2 * Di, grads + conv_w_, grads + conv_b_, dxc_, Di, xz_, 2 * Di,
                    static_cast<const Act*>(state_in), this->seq_idx_, params + conv_w_, params + conv_b_, B, T_,
                    Di, Kc, true);
  Bk::matmul_backward(ctx, du, D, grads + in_proj_, dxz_, 2 * Di, u, D, gw + in_proj_, M, 2 * Di, D);
  router_.backward(ctx, du, D, grads, u, D, P, M, aux_grad);
}

template <typename Bk>
MixerCounts SeparatedMoeSsmMixer<Bk>::counts() const {
  const double XW = double(R + 2 * N), di = double(Di), d = double(D), e = double(E);
  MixerCounts c;
  const int64_t shared = 2 * Di * D + Di * Kc + Di + D * Di;
  const int64_t branch = (R + 2 * N) * Di + Di * R + Di + Di * N + Di;
  // Every branch runs on every token: all branch parameters are active.
  c.total_params = c.active_params = shared + E * branch;
  c.gemm_flops = 2.0 * (3.0 * di * d) + 2.0 * e * (XW * di + di * double(R));
  c.conv_flops = 2.0 * di * double(Kc);
  c.scan_flops = 7.0 * e * di * double(N);  // E scans: linear in E
  // per branch D skip and gate (4 per channel, as dense) + mixing K outputs (2 per element)
  c.other_flops = 4.0 * e * di + 2.0 * double(K) * di;
  c += router_.counts();
  return c;
}

template <typename Bk>
Json SeparatedMoeSsmMixer<Bk>::stats() const {
  return router_.stats("separated_moe_ssm");
}

MOESSM_INSTANTIATE_FOR_BACKENDS(SeparatedMoeSsmMixer)

}  // namespace moessm
