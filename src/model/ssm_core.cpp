// SsmCore<Bk>: conv1d → x_proj → dt_proj → selective scan (see ssm_core.h). Written once; the
// explicit instantiations at the end make it for every backend this build has.
#include "model/ssm_core.h"

#include <algorithm>
#include <cmath>

#include "backend/backends.h"
#include "core/check.h"
#include "model/init.h"

namespace moessm {

template <typename Bk>
SsmCore<Bk>::SsmCore(const ModelConfig& c, const SsmExpertDims& ex)
    : D(c.d_model), Di(c.d_inner()), N(c.d_state), R(c.resolved_dt_rank()), Kc(c.d_conv),
      experts(ex), dt_min_(c.dt_min), dt_max_(c.dt_max), dt_floor_(c.dt_init_floor) {
  CHECK(ex.conv1d >= 0 && ex.x_proj >= 0 && ex.dt_proj >= 0, "SsmCore: expert dimensions must be >= 0, found conv1d=",
        ex.conv1d, " x_proj=", ex.x_proj, " dt_proj=", ex.dt_proj);
}

namespace {
// The dense shape, with a leading expert dimension when e > 0.
Shape slab(int64_t e, Shape s) {
  if (e > 0) s.insert(s.begin(), e);
  return s;
}
}  // namespace

template <typename Bk>
void SsmCore<Bk>::register_params(ParamTable& t, const std::string& p) {
  conv_w = t.add(p + "conv1d.weight", slab(experts.conv1d, {Di, 1, Kc}), false);
  conv_b = t.add(p + "conv1d.bias", slab(experts.conv1d, {Di}), true);
  // Expert x_proj / dt_proj slabs are read by grouped GEMMs only (RoM's RomLinear): expert slabs.
  // An expert conv1d is read by expert_conv1d for each token's experts: a plain tensor.
  auto add = [&](const std::string& name, int64_t e, Shape s) {
    return e ? t.add_experts(name, slab(e, s), false) : t.add(name, s, false);
  };
  x_proj = add(p + "x_proj.weight", experts.x_proj, {R + 2 * N, Di});
  dt_proj_w = add(p + "dt_proj.weight", experts.dt_proj, {Di, R});
  dt_proj_b = t.add(p + "dt_proj.bias", {Di}, true);
  A_log = t.add(p + "A_log", {Di, N}, true);
  D_skip = t.add(p + "D", {Di}, true);
}

template <typename Bk>
void SsmCore<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  for (const ParamInfo& info : t.entries()) {
    const size_t off = info.offset;
    if (off == conv_w || off == conv_b) {
      // nn.Conv1d default: U(±1/sqrt(fan_in)), fan_in = (in_channels / groups) · Kc = Kc
      Rng rng = param_rng(seed, info.name);
      init_uniform(params + off, info.numel, 1.0 / std::sqrt(double(Kc)), rng);
    } else if (off == x_proj) {
      init_linear(params, info, seed);
    } else if (off == dt_proj_w) {
      Rng rng = param_rng(seed, info.name);
      init_uniform(params + off, info.numel, 1.0 / std::sqrt(double(R)), rng);
    } else if (off == dt_proj_b) {
      // dt ~ exp(U(log dt_min, log dt_max)) clamped >= floor, stored as softplus⁻¹(dt)
      Rng rng = param_rng(seed, info.name);
      for (size_t i = 0; i < info.numel; ++i) {
        double dt = std::exp(rng.uniform(std::log(dt_min_), std::log(dt_max_)));
        dt = std::max(dt, dt_floor_);
        params[off + i] = static_cast<Param>(dt + std::log(-std::expm1(-dt)));
      }
    } else if (off == A_log) {
      for (idx_t c = 0; c < Di; ++c)
        for (idx_t n = 0; n < N; ++n) params[off + c * N + n] = static_cast<Param>(std::log(double(n + 1)));
    } else if (off == D_skip) {
      init_constant(params + off, Di, 1.0);
    }
  }
}

template <typename Bk>
std::vector<StatePart> SsmCore<Bk>::state_parts() const {
  return {{Di * (Kc - 1), dtype_of<Act>()}, {Di * N, dtype_of<F>()}};
}

template <typename Bk>
void SsmCore<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  planned_B_ = B;
  planned_T_ = T_;
  training_ = training;
  const idx_t BT = B * T_;
  xc_ = a.template carve<Act>(BT * Di);
  xdbl_ = a.template carve<Act>(BT * (R + 2 * N));
  delta_ = a.template carve<Act>(BT * Di);
  chunk_states_ = a.template carve<F>(B * scan_num_chunks(T_) * Di * N);
  A_ = a.template carve<F>(Di * N);
  if (training) {
    if (Bk::kScanSavesDelta) delta_saved_ = a.template carve<Act>(BT * Di);
    dxc_ = a.template carve<Act>(BT * Di);
    dxdbl_ = a.template carve<Act>(BT * (R + 2 * N));
    ddelta_ = a.template carve<Act>(BT * Di);
    dA_ = a.template carve<F>(Di * N);
  }
}

template <typename Bk>
typename Bk::ScanParams SsmCore<Bk>::scan_params(const Act* z, idx_t z_ld, const Param* params, idx_t B,
                                                 idx_t T_, const F* h0) const {
  const idx_t XW = R + 2 * N;
  typename Bk::ScanParams p;
  p.B = B; p.T_ = T_; p.Di = Di; p.N = N;
  p.u = xc_; p.u_ld = Di;
  p.delta = delta_; p.delta_ld = Di;
  p.Bm = xdbl_ + R; p.B_ld = XW;
  p.Cm = xdbl_ + R + N; p.C_ld = XW;
  p.z = z; p.z_ld = z_ld;
  p.A = A_; p.D = params + D_skip; p.delta_bias = params + dt_proj_b;
  p.h0 = h0;
  p.seq_idx = seq_idx_;
  p.chunk_states = chunk_states_;
  return p;
}

template <typename Bk>
void SsmCore<Bk>::forward(const Ctx& ctx, Act* out, idx_t out_ld, const Act* x, idx_t x_ld, const Act* z,
                          idx_t z_ld, const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in,
                          void* state_out, const int32_t* seq_idx) {
  CHECK(B <= planned_B_ && T_ <= planned_T_, "SsmCore: called with B=", B, " T=", T_,
        " but planned for B=", planned_B_, " T=", planned_T_);
  ctx_ = ctx;
  gemm_ = P.gemm;
  seq_idx_ = seq_idx;
  const Param* params = P.master;
  const idx_t BT = B * T_;
  const size_t ssm_at = ssm_state_byte_offset(B);
  const Act* conv_state_in = static_cast<const Act*>(state_in);
  const F* ssm_state_in = state_in ? reinterpret_cast<const F*>(static_cast<const char*>(state_in) + ssm_at) : nullptr;
  Act* conv_state_out = static_cast<Act*>(state_out);
  F* ssm_state_out = state_out ? reinterpret_cast<F*>(static_cast<char*>(state_out) + ssm_at) : nullptr;
  conv_forward(xc_, conv_state_out, x, x_ld, conv_state_in, params, B, T_);
  x_proj_forward(xdbl_, xc_, params, BT);
  dt_proj_forward(delta_, xdbl_, params, BT);
  Bk::ssm_a_forward(ctx, A_, params + A_log, Di * N);
  typename Bk::ScanParams p = scan_params(z, z_ld, params, B, T_, ssm_state_in);
  p.out = out; p.out_ld = out_ld;
  p.h_last = ssm_state_out;
  if (training_) Bk::set_delta_saved(p, delta_saved_);
  Bk::scan_forward(ctx, p);
}

template <typename Bk>
void SsmCore<Bk>::backward(const Ctx& ctx, Act* dx, idx_t dx_ld, Act* dz, idx_t dz_ld, Param* grads,
                           const Act* dout, idx_t dout_ld, const Act* x, idx_t x_ld, const Act* z, idx_t z_ld,
                           const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in,
                           const int32_t* seq_idx) {
  CHECK(training_, "SsmCore: backward needs an arena planned for training");
  ctx_ = ctx;
  gemm_ = P.gemm;
  seq_idx_ = seq_idx;
  const Param* params = P.master;
  const idx_t BT = B * T_, XW = R + 2 * N;
  const Act* conv_state_in = static_cast<const Act*>(state_in);
  const F* ssm_state_in =
      state_in ? reinterpret_cast<const F*>(static_cast<const char*>(state_in) + ssm_state_byte_offset(B)) : nullptr;
  typename Bk::ScanParams p = scan_params(z, z_ld, params, B, T_, ssm_state_in);
  Bk::set_delta_saved(p, delta_saved_);
  p.out = dxc_;  // not written by backward; validate() only wants a valid pointer
  p.out_ld = Di;
  Bk::zero(ctx, dA_, Di * N);
  typename Bk::ScanGrads g;
  g.dout = dout; g.dout_ld = dout_ld;
  g.du = dxc_; g.du_ld = Di;
  g.ddelta = ddelta_; g.ddelta_ld = Di;
  g.dB = dxdbl_ + R; g.dB_ld = XW;
  g.dC = dxdbl_ + R + N; g.dC_ld = XW;
  g.dz = dz; g.dz_ld = dz_ld;
  g.dA = dA_; g.dD = grads + D_skip; g.ddelta_bias = grads + dt_proj_b;
  Bk::scan_backward(ctx, g, p);
  Bk::ssm_a_backward(ctx, grads + A_log, dA_, A_, Di * N);
  dt_proj_backward(dxdbl_, grads, ddelta_, xdbl_, params, BT);
  x_proj_backward(dxc_, grads, dxdbl_, xc_, params, BT);
  conv_backward(dx, dx_ld, grads, dxc_, x, x_ld, conv_state_in, params, B, T_);
}

template <typename Bk>
void SsmCore<Bk>::conv_forward(Act* xc, Act* conv_state_out, const Act* x, idx_t x_ld, const Act* conv_state_in,
                               const Param* params, idx_t B, idx_t T_) {
  CHECK(experts.conv1d == 0, "SsmCore: conv1d has ", experts.conv1d, " experts; the dense stage has none");
  Bk::conv_forward(ctx_, xc, Di, conv_state_out, x, x_ld, conv_state_in, seq_idx_, params + conv_w, params + conv_b,
                   B, T_, Di, Kc, true);
}

template <typename Bk>
void SsmCore<Bk>::conv_backward(Act* dx, idx_t dx_ld, Param* grads, const Act* dxc, const Act* x, idx_t x_ld,
                                const Act* conv_state_in, const Param* params, idx_t B, idx_t T_) {
  Bk::conv_backward(ctx_, dx, dx_ld, grads + conv_w, grads + conv_b, dxc, Di, x, x_ld, conv_state_in, seq_idx_,
                    params + conv_w, params + conv_b, B, T_, Di, Kc, true);
}

template <typename Bk>
void SsmCore<Bk>::x_proj_forward(Act* xdbl, const Act* xc, const Param*, idx_t BT) {
  CHECK(experts.x_proj == 0, "SsmCore: x_proj has ", experts.x_proj, " experts; the dense stage has none");
  Bk::matmul_forward(ctx_, xdbl, R + 2 * N, xc, Di, gemm_ + x_proj, BT, R + 2 * N, Di);
}

template <typename Bk>
void SsmCore<Bk>::x_proj_backward(Act* dxc, Param* grads, const Act* dxdbl, const Act* xc, const Param*,
                                  idx_t BT) {
  // xdbl = xc · x_projᵀ ; dxc += dxdbl · x_proj
  Bk::matmul_backward(ctx_, dxc, Di, grads + x_proj, dxdbl, R + 2 * N, xc, Di, gemm_ + x_proj, BT, R + 2 * N, Di,
                      /*din_accumulate=*/true);
}

template <typename Bk>
void SsmCore<Bk>::dt_proj_forward(Act* delta, const Act* xdbl, const Param*, idx_t BT) {
  CHECK(experts.dt_proj == 0, "SsmCore: dt_proj has ", experts.dt_proj, " experts; the dense stage has none");
  Bk::matmul_forward(ctx_, delta, Di, xdbl, R + 2 * N, gemm_ + dt_proj_w, BT, Di, R);
}

template <typename Bk>
void SsmCore<Bk>::dt_proj_backward(Act* dxdbl, Param* grads, const Act* ddelta, const Act* xdbl, const Param*,
                                   idx_t BT) {
  // delta = dt_low · dt_projᵀ  (dt_low = xdbl[:, :R])
  Bk::matmul_backward(ctx_, dxdbl, R + 2 * N, grads + dt_proj_w, ddelta, Di, xdbl, R + 2 * N, gemm_ + dt_proj_w, BT,
                      Di, R);
}

template <typename Bk>
MixerCounts SsmCore<Bk>::counts() const {
  MixerCounts c;
  const int64_t p = Di * Kc + Di + (R + 2 * N) * Di + Di * R + Di + Di * N + Di;
  c.total_params = c.active_params = p;
  c.gemm_flops = 2.0 * double((R + 2 * N) * Di + Di * R);
  c.conv_flops = 2.0 * double(Di * Kc);
  c.scan_flops = 7.0 * double(Di * N);  // 6 flops + 1 exp per (c, n), DESIGN.md §5
  return c;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(SsmCore)

}  // namespace moessm
