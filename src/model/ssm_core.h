// SsmCore: the part of the Mamba-1 mixer between the input projection and the output projection,
// shared by the dense mixer and by RoM (where only in_proj / out_proj become experts):
//   xc = silu(conv1d(x));  (dt_low, B, C) = split(xc · x_projᵀ);  delta = dt_low · dt_projᵀ;
//   out = selective_scan(xc, delta, A=-exp(A_log), B, C, D, dt_proj.bias, gate z)
// It owns the parameters conv1d.weight/bias, x_proj.weight, dt_proj.weight/bias, A_log, D
// (registered under the mixer's prefix) and its activations. Inputs x and z are [B,T,Di] views
// with token strides (normally the two halves of in_proj's [B,T,2Di] output).
// Recurrent state per sequence: conv [Di, Kc-1] then ssm [Di, N]; a block for B sequences is
// laid out [B, Di, Kc-1] followed by [B, Di, N].
#pragma once
#include <string>

#include "core/arena.h"
#include "core/params.h"
#include "model/config.h"
#include "model/mixer.h"
#include "ops/op_common.h"

namespace moessm {

template <typename T>
class SsmCore {
 public:
  explicit SsmCore(const ModelConfig& cfg);
  void register_params(ParamTable& table, const std::string& prefix);
  void init_params(T* params, const ParamTable& table, uint64_t seed) const;
  idx_t state_size() const { return Di * (Kc - 1) + Di * N; }
  void plan(Arena<T>& arena, idx_t B, idx_t T_, bool training);
  // out[B,T,Di] (token stride out_ld) = gated scan output.
  void forward(T* out, idx_t out_ld, const T* x, idx_t x_ld, const T* z, idx_t z_ld,
               const T* params, idx_t B, idx_t T_, const T* state_in, T* state_out);
  // dx, dz assign (token strides as given); parameter grads accumulate.
  void backward(T* dx, idx_t dx_ld, T* dz, idx_t dz_ld, T* grads, const T* dout, idx_t dout_ld,
                const T* x, idx_t x_ld, const T* z, idx_t z_ld, const T* params, idx_t B, idx_t T_,
                const T* state_in);
  MixerCounts counts() const;  // conv, x_proj, dt_proj, scan

  const idx_t D, Di, N, R, Kc;
  // parameter offsets
  size_t conv_w = 0, conv_b = 0, x_proj = 0, dt_proj_w = 0, dt_proj_b = 0, A_log = 0, D_skip = 0;

 private:
  const double dt_min_, dt_max_, dt_floor_;
  idx_t planned_B_ = 0, planned_T_ = 0;
  bool training_ = false;
  // activations [B,T,...]
  T *xc_ = nullptr, *xdbl_ = nullptr, *delta_ = nullptr, *chunk_states_ = nullptr, *A_ = nullptr;
  // backward scratch
  T *dxc_ = nullptr, *dxdbl_ = nullptr, *ddelta_ = nullptr, *dA_ = nullptr;
};

}  // namespace moessm
