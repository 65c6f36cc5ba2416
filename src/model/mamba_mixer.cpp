// Dense Mamba-1 mixer (see mamba_mixer.h), instantiated for every backend.
#include "model/mamba_mixer.h"

#include <cmath>

#include "backend/backends.h"
#include "core/check.h"
#include "model/init.h"

namespace moessm {

template <typename Bk>
MambaMixer<Bk>::MambaMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : core_(cfg), D(cfg.d_model), Di(cfg.d_inner()), n_layer_(int(cfg.n_layer)) {
  for (const auto& kv : spec.options.as_object())
    CHECK(kv.first == "type", "mixer 'mamba': unknown option '", kv.first, "' (the dense mixer takes none)");
}

template <typename Bk>
void MambaMixer<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  // Table order follows the HF checkpoint's natural order.
  core_.register_params(t, p);
  in_proj_ = t.add(p + "in_proj.weight", {2 * Di, D}, false);
  out_proj_ = t.add(p + "out_proj.weight", {D, Di}, false);
}

template <typename Bk>
void MambaMixer<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  core_.init_params(params, t, seed);
  init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  // mamba_ssm rescales out_proj by 1/sqrt(n_layer) (GPT-2 style prenorm residual scaling).
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(n_layer_)));
}

template <typename Bk>
void MambaMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  xz_ = a.template carve<Act>(B * T_ * 2 * Di);
  y_ = a.template carve<Act>(B * T_ * Di);
  core_.plan(a, B, T_, training);
  if (training) {
    dxz_ = a.template carve<Act>(B * T_ * 2 * Di);
    dy_ = a.template carve<Act>(B * T_ * Di);
  }
}

template <typename Bk>
void MambaMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                             const void* state_in, void* state_out, double*) {
  const idx_t BT = B * T_;
  Bk::matmul_forward(ctx, xz_, 2 * Di, u, D, P.gemm + in_proj_, BT, 2 * Di, D);
  core_.forward(ctx, y_, Di, xz_, 2 * Di, xz_ + Di, 2 * Di, P, B, T_, state_in, state_out, this->seq_idx_);
  Bk::matmul_forward(ctx, out, D, y_, Di, P.gemm + out_proj_, BT, D, Di);
}

template <typename Bk>
void MambaMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                              const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in, double) {
  const idx_t BT = B * T_;
  Bk::matmul_backward(ctx, dy_, Di, grads + out_proj_, dout, D, y_, Di, P.gemm + out_proj_, BT, D, Di);
  core_.backward(ctx, dxz_, 2 * Di, dxz_ + Di, 2 * Di, grads, dy_, Di, xz_, 2 * Di, xz_ + Di, 2 * Di, P, B, T_,
                 state_in, this->seq_idx_);
  Bk::matmul_backward(ctx, du, D, grads + in_proj_, dxz_, 2 * Di, u, D, P.gemm + in_proj_, BT, 2 * Di, D);
}

template <typename Bk>
MixerCounts MambaMixer<Bk>::counts() const {
  MixerCounts c = core_.counts();
  const int64_t proj = 2 * Di * D + D * Di;
  c.total_params += proj;
  c.active_params += proj;
  c.gemm_flops += 2.0 * double(proj);
  c.other_flops += 4.0 * double(Di);  // D skip and SiLU(z) gate
  return c;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(MambaMixer)

}  // namespace moessm
