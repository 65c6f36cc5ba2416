// Dense Mamba-1 mixer (see mamba_mixer.h).
#include "model/mamba_mixer.h"

#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "ops/matmul.h"

namespace moessm {

template <typename T>
MambaMixer<T>::MambaMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : core_(cfg), D(cfg.d_model), Di(cfg.d_inner()), n_layer_(int(cfg.n_layer)) {
  for (const auto& kv : spec.options.as_object())
    CHECK(kv.first == "type", "mixer 'mamba': unknown option '", kv.first, "' (the dense mixer takes none)");
}

template <typename T>
void MambaMixer<T>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  // Table order follows the HF checkpoint's natural order.
  core_.register_params(t, p);
  in_proj_ = t.add(p + "in_proj.weight", {2 * Di, D}, false);
  out_proj_ = t.add(p + "out_proj.weight", {D, Di}, false);
}

template <typename T>
void MambaMixer<T>::init_params(T* params, const ParamTable& t, uint64_t seed) const {
  core_.init_params(params, t, seed);
  init_linear(params, t.at(prefix_ + "in_proj.weight"), seed);
  // mamba_ssm rescales out_proj by 1/sqrt(n_layer) (GPT-2 style prenorm residual scaling).
  init_linear(params, t.at(prefix_ + "out_proj.weight"), seed, 1.0 / std::sqrt(double(n_layer_)));
}

template <typename T>
void MambaMixer<T>::plan(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  xz_ = a.carve(B * T_ * 2 * Di);
  y_ = a.carve(B * T_ * Di);
  core_.plan(a, B, T_, training);
  if (training) {
    dxz_ = a.carve(B * T_ * 2 * Di);
    dy_ = a.carve(B * T_ * Di);
  }
}

template <typename T>
double MambaMixer<T>::forward(T* out, const T* u, const T* params, idx_t B, idx_t T_,
                              const T* state_in, T* state_out) {
  const idx_t BT = B * T_;
  cpu::matmul_forward(xz_, 2 * Di, u, D, params + in_proj_, (const T*)nullptr, BT, 2 * Di, D);
  core_.forward(y_, Di, xz_, 2 * Di, xz_ + Di, 2 * Di, params, B, T_, state_in, state_out);
  cpu::matmul_forward(out, D, y_, Di, params + out_proj_, (const T*)nullptr, BT, D, Di);
  return 0.0;
}

template <typename T>
void MambaMixer<T>::backward(T* du, T* grads, const T* dout, const T* u, const T* params, idx_t B,
                             idx_t T_, const T* state_in, double) {
  const idx_t BT = B * T_;
  cpu::matmul_backward(dy_, Di, grads + out_proj_, (T*)nullptr, dout, D, y_, Di, params + out_proj_,
                       BT, D, Di);
  core_.backward(dxz_, 2 * Di, dxz_ + Di, 2 * Di, grads, dy_, Di, xz_, 2 * Di, xz_ + Di, 2 * Di,
                 params, B, T_, state_in);
  cpu::matmul_backward(du, D, grads + in_proj_, (T*)nullptr, dxz_, 2 * Di, u, D, params + in_proj_,
                       BT, 2 * Di, D);
}

template <typename T>
MixerCounts MambaMixer<T>::counts() const {
  MixerCounts c = core_.counts();
  const int64_t proj = 2 * Di * D + D * Di;
  c.total_params += proj;
  c.active_params += proj;
  c.gemm_flops += 2.0 * double(proj);
  c.other_flops += 4.0 * double(Di);  // D skip and SiLU(z) gate
  return c;
}

template class MambaMixer<float>;
template class MambaMixer<double>;

}  // namespace moessm
