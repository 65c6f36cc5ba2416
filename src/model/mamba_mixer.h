// MambaMixer<Bk>: the dense Mamba-1 mixer (DESIGN.md §1), HF / mamba_ssm parameter names,
// written once for every backend:
//   (x, z) = split(u · in_projᵀ);  y = SsmCore(x, z);  out = y · out_projᵀ
#pragma once
#include "model/mixer.h"
#include "model/ssm_core.h"

namespace moessm {

template <typename Bk>
class MambaMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  MambaMixer(const ModelConfig& cfg, const MixerSpec& spec);
  std::string type() const override { return "mamba"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override { return core_.state_size(); }
  std::vector<StatePart> state_parts() const override { return core_.state_parts(); }
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) override;
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) override;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) override;
  MixerCounts counts() const override;
  bool supports_seq_idx() const override { return true; }

 private:
  SsmCore<Bk> core_;
  const idx_t D, Di;
  const int n_layer_;
  std::string prefix_;
  size_t in_proj_ = 0, out_proj_ = 0;
  Act *xz_ = nullptr, *y_ = nullptr, *dxz_ = nullptr, *dy_ = nullptr;
};

}  // namespace moessm
