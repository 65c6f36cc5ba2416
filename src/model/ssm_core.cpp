// SsmCore: conv1d → x_proj → dt_proj → selective scan (see ssm_core.h).
#include "model/ssm_core.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "ops/causal_conv1d.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/selective_scan.h"
#include "ops/ssm_a.h"

namespace moessm {

template <typename T>
SsmCore<T>::SsmCore(const ModelConfig& c, const SsmExpertDims& ex)
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

template <typename T>
void SsmCore<T>::register_params(ParamTable& t, const std::string& p) {
  conv_w = t.add(p + "conv1d.weight", slab(experts.conv1d, {Di, 1, Kc}), false);
  conv_b = t.add(p + "conv1d.bias", slab(experts.conv1d, {Di}), true);
  x_proj = t.add(p + "x_proj.weight", slab(experts.x_proj, {R + 2 * N, Di}), false);
  dt_proj_w = t.add(p + "dt_proj.weight", slab(experts.dt_proj, {Di, R}), false);
  dt_proj_b = t.add(p + "dt_proj.bias", {Di}, true);
  A_log = t.add(p + "A_log", {Di, N}, true);
  D_skip = t.add(p + "D", {Di}, true);
}

template <typename T>
void SsmCore<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
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
        params[off + i] = static_cast<T>(dt + std::log(-std::expm1(-dt)));
      }
    } else if (off == A_log) {
      for (idx_t c = 0; c < Di; ++c)
        for (idx_t n = 0; n < N; ++n) params[off + c * N + n] = static_cast<T>(std::log(double(n + 1)));
    } else if (off == D_skip) {
      init_constant(params + off, Di, 1.0);
    }
  }
}

template <typename T>
void SsmCore<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  planned_B_ = B;
  planned_T_ = T_;
  training_ = training;
  const idx_t BT = B * T_;
  xc_ = a.carve(BT * Di);
  xdbl_ = a.carve(BT * (R + 2 * N));
  delta_ = a.carve(BT * Di);
  chunk_states_ = a.carve(B * scan_num_chunks(T_) * Di * N);
  A_ = a.carve(Di * N);
  if (training) {
    delta_saved_ = a.carve(BT * Di);
    dxc_ = a.carve(BT * Di);
    dxdbl_ = a.carve(BT * (R + 2 * N));
    ddelta_ = a.carve(BT * Di);
    dA_ = a.carve(Di * N);
  }
}

template <typename T>
void SsmCore<T>::forward(T* out, idx_t out_ld, const T* x, idx_t x_ld, const T* z, idx_t z_ld,
                         const T* params, idx_t B, idx_t T_, const T* state_in, T* state_out) {
  CHECK(B <= planned_B_ && T_ <= planned_T_, "SsmCore: called with B=", B, " T=", T_,
        " but planned for B=", planned_B_, " T=", planned_T_);
  const idx_t BT = B * T_, XW = R + 2 * N;
  const T* conv_state_in = state_in;
  const T* ssm_state_in = state_in ? state_in + B * Di * (Kc - 1) : nullptr;
  T* conv_state_out = state_out;
  T* ssm_state_out = state_out ? state_out + B * Di * (Kc - 1) : nullptr;
  conv_forward(xc_, conv_state_out, x, x_ld, conv_state_in, params, B, T_);
  x_proj_forward(xdbl_, xc_, params, BT);
  dt_proj_forward(delta_, xdbl_, params, BT);
  cpu::ssm_a_forward(A_, params + A_log, Di * N);
  ScanParams<T> p;
  p.B = B; p.T_ = T_; p.Di = Di; p.N = N;
  p.u = xc_; p.u_ld = Di;
  p.delta = delta_; p.delta_ld = Di;
  p.Bm = xdbl_ + R; p.B_ld = XW;
  p.Cm = xdbl_ + R + N; p.C_ld = XW;
  p.z = z; p.z_ld = z_ld;
  p.A = A_; p.D = params + D_skip; p.delta_bias = params + dt_proj_b;
  p.h0 = ssm_state_in;
  p.out = out; p.out_ld = out_ld;
  p.h_last = ssm_state_out;
  p.chunk_states = chunk_states_;
  p.delta_saved = training_ ? delta_saved_ : nullptr;
  cpu::selective_scan_forward(p);
}

template <typename T>
void SsmCore<T>::backward(T* dx, idx_t dx_ld, T* dz, idx_t dz_ld, T* grads, const T* dout,
                          idx_t dout_ld, const T* x, idx_t x_ld, const T* z, idx_t z_ld,
                          const T* params, idx_t B, idx_t T_, const T* state_in) {
  CHECK(training_, "SsmCore: backward needs an arena planned for training");
  const idx_t BT = B * T_, XW = R + 2 * N;
  ScanParams<T> p;
  p.B = B; p.T_ = T_; p.Di = Di; p.N = N;
  p.u = xc_; p.u_ld = Di;
  p.delta = delta_; p.delta_ld = Di;
  p.Bm = xdbl_ + R; p.B_ld = XW;
  p.Cm = xdbl_ + R + N; p.C_ld = XW;
  p.z = z; p.z_ld = z_ld;
  p.A = A_; p.D = params + D_skip; p.delta_bias = params + dt_proj_b;
  p.h0 = state_in ? state_in + B * Di * (Kc - 1) : nullptr;
  p.chunk_states = chunk_states_;
  p.delta_saved = delta_saved_;
  p.out = dxc_;  // not written by backward; validate() only wants a valid pointer
  p.out_ld = Di;
  cpu::fill(dA_, T(0), Di * N);
  ScanGrads<T> g;
  g.dout = dout; g.dout_ld = dout_ld;
  g.du = dxc_; g.du_ld = Di;
  g.ddelta = ddelta_; g.ddelta_ld = Di;
  g.dB = dxdbl_ + R; g.dB_ld = XW;
  g.dC = dxdbl_ + R + N; g.dC_ld = XW;
  g.dz = dz; g.dz_ld = dz_ld;
  g.dA = dA_; g.dD = grads + D_skip; g.ddelta_bias = grads + dt_proj_b;
  cpu::selective_scan_backward(g, p);
  cpu::ssm_a_backward(grads + A_log, dA_, A_, Di * N);
  dt_proj_backward(dxdbl_, grads, ddelta_, xdbl_, params, BT);
  x_proj_backward(dxc_, grads, dxdbl_, xc_, params, BT);
  conv_backward(dx, dx_ld, grads, dxc_, x, x_ld, state_in, params, B, T_);
}

template <typename T>
void SsmCore<T>::conv_forward(T* xc, T* conv_state_out, const T* x, idx_t x_ld,
                              const T* conv_state_in, const T* params, idx_t B, idx_t T_) {
  CHECK(experts.conv1d == 0, "SsmCore: conv1d has ", experts.conv1d, " experts; the dense stage has none");
  cpu::causal_conv1d_forward(xc, Di, conv_state_out, x, x_ld, conv_state_in, params + conv_w,
                             params + conv_b, B, T_, Di, Kc, true);
}

template <typename T>
void SsmCore<T>::conv_backward(T* dx, idx_t dx_ld, T* grads, const T* dxc, const T* x, idx_t x_ld,
                               const T* conv_state_in, const T* params, idx_t B, idx_t T_) {
  cpu::causal_conv1d_backward(dx, dx_ld, grads + conv_w, grads + conv_b, dxc, Di, x, x_ld,
                              conv_state_in, params + conv_w, params + conv_b, B, T_, Di, Kc, true);
}

template <typename T>
void SsmCore<T>::x_proj_forward(T* xdbl, const T* xc, const T* params, idx_t BT) {
  CHECK(experts.x_proj == 0, "SsmCore: x_proj has ", experts.x_proj, " experts; the dense stage has none");
  cpu::matmul_forward(xdbl, R + 2 * N, xc, Di, params + x_proj, (const T*)nullptr, BT, R + 2 * N, Di);
}

template <typename T>
void SsmCore<T>::x_proj_backward(T* dxc, T* grads, const T* dxdbl, const T* xc, const T* params,
                                 idx_t BT) {
  // xdbl = xc · x_projᵀ ; dxc += dxdbl · x_proj
  cpu::matmul_backward(dxc, Di, grads + x_proj, (T*)nullptr, dxdbl, R + 2 * N, xc, Di,
                       params + x_proj, BT, R + 2 * N, Di, /*din_accumulate=*/true);
}

template <typename T>
void SsmCore<T>::dt_proj_forward(T* delta, const T* xdbl, const T* params, idx_t BT) {
  CHECK(experts.dt_proj == 0, "SsmCore: dt_proj has ", experts.dt_proj, " experts; the dense stage has none");
  cpu::matmul_forward(delta, Di, xdbl, R + 2 * N, params + dt_proj_w, (const T*)nullptr, BT, Di, R);
}

template <typename T>
void SsmCore<T>::dt_proj_backward(T* dxdbl, T* grads, const T* ddelta, const T* xdbl,
                                  const T* params, idx_t BT) {
  // delta = dt_low · dt_projᵀ  (dt_low = xdbl[:, :R])
  cpu::matmul_backward(dxdbl, R + 2 * N, grads + dt_proj_w, (T*)nullptr, ddelta, Di, xdbl,
                       R + 2 * N, params + dt_proj_w, BT, Di, R);
}

template <typename T>
MixerCounts SsmCore<T>::counts() const {
  MixerCounts c;
  const int64_t p = Di * Kc + Di + (R + 2 * N) * Di + Di * R + Di + Di * N + Di;
  c.total_params = c.active_params = p;
  c.gemm_flops = 2.0 * double((R + 2 * N) * Di + Di * R);
  c.conv_flops = 2.0 * double(Di * Kc);
  c.scan_flops = 7.0 * double(Di * N);  // 6 flops + 1 exp per (c, n), DESIGN.md §5
  return c;
}

template class SsmCore<float>;
template class SsmCore<double>;

}  // namespace moessm
