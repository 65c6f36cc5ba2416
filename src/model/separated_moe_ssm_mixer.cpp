// Separated MoE-SSM mixer, forward and backward (see separated_moe_ssm_mixer.h).
#include "model/separated_moe_ssm_mixer.h"

#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "model/ssm_core.h"
#include "ops/causal_conv1d.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/selective_scan.h"
#include "ops/moe_permute.h"
#include "ops/ssm_a.h"

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

template <typename T>
SeparatedMoeSsmMixer<T>::SeparatedMoeSsmMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : SeparatedMoeSsmMixer(cfg, parse_separated(spec)) {}

template <typename T>
SeparatedMoeSsmMixer<T>::SeparatedMoeSsmMixer(const ModelConfig& cfg, const RouterOptions& o)
    : D(cfg.d_model), Di(cfg.d_inner()), N(cfg.d_state), R(cfg.resolved_dt_rank()), Kc(cfg.d_conv),
      E(o.n_experts), K(o.top_k), cfg_(cfg), router_(o, cfg.d_model) {}

template <typename T>
void SeparatedMoeSsmMixer<T>::register_params(ParamTable& t, const std::string& p) {
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

template <typename T>
void SeparatedMoeSsmMixer<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
  // The dense initialisation tensor by tensor (draws keyed by name, so E = 1 equals dense);
  // it fills the first branch's A_log and D, which every branch then copies.
  SsmCore<CpuBackend<T>> dense(cfg_);
  dense.conv_w = conv_w_; dense.conv_b = conv_b_; dense.x_proj = x_proj_;
  dense.dt_proj_w = dt_w_; dense.dt_proj_b = dt_b_; dense.A_log = A_log_; dense.D_skip = D_;
  dense.init_params(params, t, seed);
  for (idx_t e = 1; e < E; ++e) {
    for (idx_t i = 0; i < Di * N; ++i) params[A_log_ + e * Di * N + i] = params[A_log_ + i];
    for (idx_t i = 0; i < Di; ++i) params[D_ + e * Di + i] = params[D_ + i];
  }
  init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(cfg_.n_layer)));
  router_.init_params(params, t, seed);
}

template <typename T>
void SeparatedMoeSsmMixer<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  planned_B_ = B;
  planned_T_ = T_;
  training_ = training;
  const idx_t M = B * T_, XW = R + 2 * N;
  rows_.assign(size_t(M * K), 0);
  xz_ = a.carve(M * 2 * Di);
  xc_ = a.carve(M * Di);
  xdbl_ = a.carve(E * M * XW);
  delta_ = a.carve(E * M * Di);
  A_ = a.carve(E * Di * N);
  chunk_states_ = a.carve(E * B * scan_num_chunks(T_) * Di * N);
  ybr_ = a.carve(E * M * Di);
  y_ = a.carve(M * Di);
  router_.plan(a, B, T_, training);
  if (training) {
    dxz_ = a.carve(M * 2 * Di);
    dy_ = a.carve(M * Di);
    dybr_ = a.carve(E * M * Di);
    dxc_ = a.carve(M * Di);
    dxc_e_ = a.carve(M * Di);
    dz_e_ = a.carve(M * Di);
    dxdbl_ = a.carve(M * XW);
    ddelta_ = a.carve(M * Di);
    dA_ = a.carve(Di * N);
  }
}

namespace {
// The scan of branch e over B sequences (everything but the state and gradient pointers).
template <typename T>
ScanParams<T> branch_scan(idx_t e, const T* xc, const T* xz, const T* xdbl, const T* delta,
                          const T* A, const T* Dskip, const T* bias, T* chunk_states, T* y,
                          idx_t B, idx_t T_, idx_t Di, idx_t N, idx_t R) {
  const idx_t M = B * T_, XW = R + 2 * N;
  ScanParams<T> p;
  p.B = B; p.T_ = T_; p.Di = Di; p.N = N;
  p.u = xc; p.u_ld = Di;
  p.delta = delta + e * M * Di; p.delta_ld = Di;
  p.Bm = xdbl + e * M * XW + R; p.B_ld = XW;
  p.Cm = xdbl + e * M * XW + R + N; p.C_ld = XW;
  p.z = xz + Di; p.z_ld = 2 * Di;
  p.A = A + e * Di * N; p.D = Dskip + e * Di; p.delta_bias = bias + e * Di;
  p.out = y + e * M * Di; p.out_ld = Di;
  p.chunk_states = chunk_states + e * B * scan_num_chunks(T_) * Di * N;
  return p;
}
}  // namespace

template <typename T>
double SeparatedMoeSsmMixer<T>::forward_cpu(T* out, const T* u, const T* params, idx_t B, idx_t T_,
                                        const T* state_in, T* state_out) {
  CHECK(B <= planned_B_ && T_ <= planned_T_, "SeparatedMoeSsmMixer: called with B=", B, " T=", T_,
        " but planned for B=", planned_B_, " T=", planned_T_);
  const idx_t M = B * T_, XW = R + 2 * N, conv_n = B * Di * (Kc - 1);
  cpu::matmul_forward(xz_, 2 * Di, u, D, params + in_proj_, (const T*)nullptr, M, 2 * Di, D);
  cpu::causal_conv1d_forward(xc_, Di, state_out, xz_, 2 * Di, state_in, params + conv_w_,
                             params + conv_b_, B, T_, Di, Kc, true);
  const double aux = router_.forward(u, D, params, M);
  cpu::ssm_a_forward(A_, params + A_log_, E * Di * N);
  for (idx_t e = 0; e < E; ++e) {
    T* xd = xdbl_ + e * M * XW;
    cpu::matmul_forward(xd, XW, xc_, Di, params + x_proj_ + e * XW * Di, (const T*)nullptr, M, XW, Di);
    cpu::matmul_forward(delta_ + e * M * Di, Di, xd, XW, params + dt_w_ + e * Di * R,
                        (const T*)nullptr, M, Di, R);
    ScanParams<T> p = branch_scan(e, xc_, xz_, xdbl_, delta_, A_, params + D_, params + dt_b_,
                                  chunk_states_, ybr_, B, T_, Di, N, R);
    p.h0 = state_in ? state_in + conv_n + e * B * Di * N : nullptr;
    p.h_last = state_out ? state_out + conv_n + e * B * Di * N : nullptr;
    cpu::selective_scan_forward(p);
  }
  cpu::moe_permute_plan_stacked(rows_.data(), router_.topk_index(), M, E, K);
  cpu::moe_unpermute_forward(y_, Di, ybr_, Di, router_.topk_weight(), rows_.data(), M, K, Di);
  cpu::matmul_forward(out, D, y_, Di, params + out_proj_, (const T*)nullptr, M, D, Di);
  return aux;
}

template <typename T>
void SeparatedMoeSsmMixer<T>::backward_cpu(T* du, T* grads, const T* dout, const T* u, const T* params,
                                       idx_t B, idx_t T_, const T* state_in, double aux_grad) {
  CHECK(training_, "SeparatedMoeSsmMixer: backward needs an arena planned for training");
  const idx_t M = B * T_, XW = R + 2 * N, conv_n = B * Di * (Kc - 1);
  cpu::matmul_backward(dy_, Di, grads + out_proj_, (T*)nullptr, dout, D, y_, Di,
                       params + out_proj_, M, D, Di);
  // Branch output gradients: g·dy where chosen, 0 elsewhere (the branch still carries state).
  cpu::fill(dybr_, T(0), E * M * Di);
  cpu::moe_unpermute_backward(dybr_, Di, router_.topk_weight_grad(), dy_, Di, ybr_, Di, router_.topk_weight(),
                              rows_.data(), M, K, Di);
  cpu::fill(dxc_, T(0), M * Di);
  cpu::fill(dxz_ + Di, 2 * Di, T(0), M, Di);  // the z half: branches add their gate gradients
  const int32_t* offsets = router_.offsets();  // expert e has offsets[e+1] - offsets[e] slots
  for (idx_t e = 0; e < E; ++e) {
    if (offsets[e + 1] == offsets[e]) continue;  // no token reads branch e: every gradient through it is 0
    const T* xd = xdbl_ + e * M * XW;
    ScanParams<T> p = branch_scan(e, xc_, xz_, xdbl_, delta_, A_, params + D_, params + dt_b_,
                                  chunk_states_, ybr_, B, T_, Di, N, R);
    p.h0 = state_in ? state_in + conv_n + e * B * Di * N : nullptr;
    cpu::fill(dA_, T(0), Di * N);
    ScanGrads<T> g;
    g.dout = dybr_ + e * M * Di; g.dout_ld = Di;
    g.du = dxc_e_; g.du_ld = Di;
    g.ddelta = ddelta_; g.ddelta_ld = Di;
    g.dB = dxdbl_ + R; g.dB_ld = XW;
    g.dC = dxdbl_ + R + N; g.dC_ld = XW;
    g.dz = dz_e_; g.dz_ld = Di;
    g.dA = dA_; g.dD = grads + D_ + e * Di; g.ddelta_bias = grads + dt_b_ + e * Di;
    cpu::selective_scan_backward(g, p);
    cpu::ssm_a_backward(grads + A_log_ + e * Di * N, dA_, A_ + e * Di * N, Di * N);
    cpu::add_forward(dxc_, Di, dxc_, Di, dxc_e_, Di, M, Di);
    cpu::add_forward(dxz_ + Di, 2 * Di, dxz_ + Di, 2 * Di, dz_e_, Di, M, Di);
    cpu::matmul_backward(dxdbl_, XW, grads + dt_w_ + e * Di * R, (T*)nullptr, ddelta_, Di, xd, XW,
                         params + dt_w_ + e * Di * R, M, Di, R);
    cpu::matmul_backward(dxc_, Di, grads + x_proj_ + e * XW * Di, (T*)nullptr, dxdbl_, XW, xc_, Di,
                         params + x_proj_ + e * XW * Di, M, XW, Di, /*din_accumulate=*/true);
  }
  cpu::causal_conv1d_backward(dxz_, 2 * Di, grads + conv_w_, grads + conv_b_, dxc_, Di, xz_, 2 * Di,
                              state_in, params + conv_w_, params + conv_b_, B, T_, Di, Kc, true);
  cpu::matmul_backward(du, D, grads + in_proj_, (T*)nullptr, dxz_, 2 * Di, u, D,
                       params + in_proj_, M, 2 * Di, D);
  router_.backward(du, D, grads, u, D, params, M, aux_grad);
}

template <typename T>
MixerCounts SeparatedMoeSsmMixer<T>::counts() const {
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

template <typename T>
Json SeparatedMoeSsmMixer<T>::stats() const {
  return router_.stats("separated_moe_ssm");
}

template class SeparatedMoeSsmMixer<float>;
template class SeparatedMoeSsmMixer<double>;

}  // namespace moessm
