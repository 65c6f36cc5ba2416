// SsmCore: the part of the Mamba-1 mixer between the input projection and the output projection,
// shared by the dense mixer and by RoM (where only in_proj / out_proj become experts):
//   xc = silu(conv1d(x));  (dt_low, B, C) = split(xc · x_projᵀ);  delta = dt_low · dt_projᵀ;
//   out = selective_scan(xc, delta, A=-exp(A_log), B, C, D, dt_proj.bias, gate z)
// It owns the parameters conv1d.weight/bias, x_proj.weight, dt_proj.weight/bias, A_log, D
// (registered under the mixer's prefix) and its activations. Inputs x and z are [B,T,Di] views
// with token strides (normally the two halves of in_proj's [B,T,2Di] output).
// Recurrent state per sequence: conv [Di, Kc-1] then ssm [Di, N]; a block for B sequences is
// laid out [B, Di, Kc-1] followed by [B, Di, N].
// Expert hook (RoM's experts_in ablation): SsmExpertDims gives conv1d (weight and bias),
// x_proj.weight and dt_proj.weight an extra leading expert dimension E (same names; 0 = the
// dense shapes, the default), and the three stages conv / x_proj / dt_proj are virtual so a
// derived core can route them. The defaults are the dense ops and refuse expert slabs.
#pragma once
#include <string>

#include "core/arena.h"
#include "core/params.h"
#include "model/config.h"
#include "model/mixer.h"
#include "ops/op_common.h"

namespace moessm {

// Leading expert dimension of the small modules' weights (0 = dense shapes, no leading dim).
struct SsmExpertDims {
  int64_t conv1d = 0, x_proj = 0, dt_proj = 0;
};

template <typename T>
class SsmCore {
 public:
  explicit SsmCore(const ModelConfig& cfg, const SsmExpertDims& experts = SsmExpertDims());
  virtual ~SsmCore() = default;
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
  const SsmExpertDims experts;
  // parameter offsets
  size_t conv_w = 0, conv_b = 0, x_proj = 0, dt_proj_w = 0, dt_proj_b = 0, A_log = 0, D_skip = 0;

 protected:
  // The stages a derived core may route. Shapes: x [B,T,Di] (token stride x_ld), xc [B,T,Di],
  // xdbl [B,T,R+2N], delta [B,T,Di] (xc, xdbl, delta contiguous). Backward: dx assigns; dxc
  // ACCUMULATES (+=, it already holds the scan's gradient); dxdbl's dt_low columns [.., 0:R]
  // assign (the B, C columns are left alone); parameter grads accumulate.
  virtual void conv_forward(T* xc, T* conv_state_out, const T* x, idx_t x_ld,
                            const T* conv_state_in, const T* params, idx_t B, idx_t T_);
  virtual void conv_backward(T* dx, idx_t dx_ld, T* grads, const T* dxc, const T* x, idx_t x_ld,
                             const T* conv_state_in, const T* params, idx_t B, idx_t T_);
  virtual void x_proj_forward(T* xdbl, const T* xc, const T* params, idx_t BT);
  virtual void x_proj_backward(T* dxc, T* grads, const T* dxdbl, const T* xc, const T* params,
                               idx_t BT);
  virtual void dt_proj_forward(T* delta, const T* xdbl, const T* params, idx_t BT);
  virtual void dt_proj_backward(T* dxdbl, T* grads, const T* ddelta, const T* xdbl,
                                const T* params, idx_t BT);

 private:
  const double dt_min_, dt_max_, dt_floor_;
  idx_t planned_B_ = 0, planned_T_ = 0;
  bool training_ = false;
  // activations [B,T,...]
  T *xc_ = nullptr, *xdbl_ = nullptr, *delta_ = nullptr, *chunk_states_ = nullptr, *A_ = nullptr;
  // backward scratch
  T *delta_saved_ = nullptr, *dxc_ = nullptr, *dxdbl_ = nullptr, *ddelta_ = nullptr, *dA_ = nullptr;
};

}  // namespace moessm
