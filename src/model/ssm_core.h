// SsmCore<Bk>: the part of the Mamba-1 mixer between the input projection and the output
// projection, shared by the dense mixer and by RoM (where only in_proj / out_proj become experts),
// written once for every backend (it calls only Bk's ops):
//   xc = silu(conv1d(x));  (dt_low, B, C) = split(xc · x_projᵀ);  delta = dt_low · dt_projᵀ;
//   out = selective_scan(xc, delta, A=-exp(A_log), B, C, D, dt_proj.bias, gate z)
// It owns the parameters conv1d.weight/bias, x_proj.weight, dt_proj.weight/bias, A_log, D
// (registered under the mixer's prefix) and its activations. Inputs x and z are [B,T,Di] views
// with token strides (normally the two halves of in_proj's [B,T,2Di] output).
// Recurrent state per sequence: conv [Di, Kc-1] (Act) then ssm [Di, N] (F, fp32 on CUDA); a
// block for B sequences is laid out [B, Di, Kc-1] followed by [B, Di, N] (state_parts()).
// Expert hook (RoM's experts_in ablation, every backend): SsmExpertDims gives conv1d (weight and
// bias), x_proj.weight and dt_proj.weight an extra leading expert dimension E (same names; 0 =
// the dense shapes, the default), and the three stages conv / x_proj / dt_proj are virtual so a
// derived core can route them. The defaults are the dense ops and refuse expert slabs. The
// stages read the call's context, GEMM weights and document index from ctx() / gemm_weights() /
// seq_idx() (set on entry to forward / backward), so their signatures carry only the master
// parameters. Packed documents: seq_idx [B,T] (ops/op_common.h, nullptr = one per row) reaches
// the conv and the scan, forward and backward.
#pragma once
#include <string>
#include <vector>

#include "core/params.h"
#include "model/config.h"
#include "model/mixer.h"
#include "ops/op_common.h"

namespace moessm {

// Leading expert dimension of the small modules' weights (0 = dense shapes, no leading dim).
struct SsmExpertDims {
  int64_t conv1d = 0, x_proj = 0, dt_proj = 0;
};

template <typename Bk>
class SsmCore {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using F = typename Bk::F;
  using Ctx = typename Bk::Ctx;
  explicit SsmCore(const ModelConfig& cfg, const SsmExpertDims& experts = SsmExpertDims());
  virtual ~SsmCore() = default;
  void register_params(ParamTable& table, const std::string& prefix);
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const;
  idx_t state_size() const { return Di * (Kc - 1) + Di * N; }
  std::vector<StatePart> state_parts() const;
  // Byte offset of the ssm part in a state block of B sequences (after the conv part).
  size_t ssm_state_byte_offset(idx_t B) const { return size_t(B * Di * (Kc - 1)) * sizeof(Act); }
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training);
  // out[B,T,Di] (token stride out_ld) = gated scan output; seq_idx [B,T] optional (see above).
  void forward(const Ctx& ctx, Act* out, idx_t out_ld, const Act* x, idx_t x_ld, const Act* z, idx_t z_ld,
               const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in, void* state_out,
               const int32_t* seq_idx);
  // dx, dz assign (token strides as given); parameter grads accumulate. seq_idx as in forward.
  void backward(const Ctx& ctx, Act* dx, idx_t dx_ld, Act* dz, idx_t dz_ld, Param* grads, const Act* dout,
                idx_t dout_ld, const Act* x, idx_t x_ld, const Act* z, idx_t z_ld, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, const int32_t* seq_idx);
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
  virtual void conv_forward(Act* xc, Act* conv_state_out, const Act* x, idx_t x_ld,
                            const Act* conv_state_in, const Param* params, idx_t B, idx_t T_);
  virtual void conv_backward(Act* dx, idx_t dx_ld, Param* grads, const Act* dxc, const Act* x, idx_t x_ld,
                             const Act* conv_state_in, const Param* params, idx_t B, idx_t T_);
  virtual void x_proj_forward(Act* xdbl, const Act* xc, const Param* params, idx_t BT);
  virtual void x_proj_backward(Act* dxc, Param* grads, const Act* dxdbl, const Act* xc, const Param* params,
                               idx_t BT);
  virtual void dt_proj_forward(Act* delta, const Act* xdbl, const Param* params, idx_t BT);
  virtual void dt_proj_backward(Act* dxdbl, Param* grads, const Act* ddelta, const Act* xdbl,
                                const Param* params, idx_t BT);
  const Ctx& ctx() const { return ctx_; }
  const typename Bk::Weight* gemm_weights() const { return gemm_; }
  const int32_t* seq_idx() const { return seq_idx_; }

 private:
  // The scan's arguments (forward and backward read the same streams).
  typename Bk::ScanParams scan_params(const Act* z, idx_t z_ld, const Param* params, idx_t B, idx_t T_,
                                      const F* h0) const;
  const double dt_min_, dt_max_, dt_floor_;
  idx_t planned_B_ = 0, planned_T_ = 0;
  bool training_ = false;
  Ctx ctx_{};
  const typename Bk::Weight* gemm_ = nullptr;
  const int32_t* seq_idx_ = nullptr;
  // activations [B,T,...]
  Act *xc_ = nullptr, *xdbl_ = nullptr, *delta_ = nullptr;
  F *chunk_states_ = nullptr, *A_ = nullptr;
  // backward scratch
  Act *delta_saved_ = nullptr, *dxc_ = nullptr, *dxdbl_ = nullptr, *ddelta_ = nullptr;
  F* dA_ = nullptr;
};

}  // namespace moessm
