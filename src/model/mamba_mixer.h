// MambaMixer: the dense Mamba-1 mixer (DESIGN.md §1), HF / mamba_ssm parameter names:
//   (x, z) = split(u · in_projᵀ);  y = SsmCore(x, z);  out = y · out_projᵀ
#pragma once
#include "model/mixer.h"
#include "model/ssm_core.h"

namespace moessm {

template <typename T>
class MambaMixer : public Mixer<T> {
 public:
  MambaMixer(const ModelConfig& cfg, const MixerSpec& spec);
  std::string type() const override { return "mamba"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(T* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override { return core_.state_size(); }
  void plan(Arena<T>& arena, idx_t B, idx_t T_, bool training) override;
  double forward(T* out, const T* u, const T* params, idx_t B, idx_t T_, const T* state_in,
                 T* state_out) override;
  void backward(T* du, T* grads, const T* dout, const T* u, const T* params, idx_t B, idx_t T_,
                const T* state_in, double aux_grad) override;
  MixerCounts counts() const override;

 private:
  SsmCore<T> core_;
  const idx_t D, Di;
  const int n_layer_;
  std::string prefix_;
  size_t in_proj_ = 0, out_proj_ = 0;
  T *xz_ = nullptr, *y_ = nullptr, *dxz_ = nullptr, *dy_ = nullptr;
};

}  // namespace moessm
