// SeparatedMoeSsmMixer: the separated MoE-SSM baseline Swimba is compared against (DESIGN.md §4).
// E complete selective SSMs ("branches"), each with its own state trajectory over ALL tokens;
// the router only mixes their outputs:
//   (x, z) = split(u · in_projᵀ);  xc = silu(conv1d(x))                          shared
//   for every branch e (every token):
//     (dt_low, B, C) = split(xc · x_proj[e]ᵀ);  Δ = softplus(dt_low · dt_proj[e]ᵀ + dt_proj.bias[e])
//     y^e = selective_scan(xc, Δ, A = -exp(A_log[e]), B, C, D[e], gate silu(z))
//   y_t = Σ_{e∈S_t} g[t,e] · y^e_t ;  out = y · out_projᵀ                         shared out_proj
// Parameters (prefix backbone.layers.{i}.mixer.):
//   shared:     in_proj.weight [2Di, D], conv1d.weight [Di, 1, Kc], conv1d.bias [Di],
//               out_proj.weight [D, Di], router.weight [E, D]
//   per branch: x_proj.weight [E, R+2N, Di], dt_proj.weight [E, Di, R], dt_proj.bias [E, Di],
//               A_log [E, Di, N], D [E, Di]
// The SiLU(z) gate is elementwise and shared, so gating each branch before the mix equals
// gating the mix; each branch is then exactly the dense SsmCore, and E = 1 is the dense mixer.
// Cost: every branch runs its x_proj, dt_proj and scan on every token (a branch's state needs
// all tokens), so GEMM and scan work grow linearly in E; counts() says so.
// Options: n_experts (8), top_k (2), normalize_topk (true), aux_coef (0.01), z_coef (0); the
// router reads u. Recurrent state per sequence: conv [Di, Kc-1] and E ssm states [Di, N]; a block
// for B sequences is [B, Di, Kc-1] (Act) followed by [E, B, Di, N] (F): two state parts.
// Written once for every backend (it calls only Bk's ops).
#pragma once
#include <vector>

#include "model/mixer.h"
#include "model/moe_router.h"

namespace moessm {

template <typename Bk>
class SeparatedMoeSsmMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using F = typename Bk::F;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  SeparatedMoeSsmMixer(const ModelConfig& cfg, const MixerSpec& spec);
  SeparatedMoeSsmMixer(const ModelConfig& cfg, const RouterOptions& opt);
  std::string type() const override { return "separated_moe_ssm"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override { return Di * (Kc - 1) + E * Di * N; }
  std::vector<StatePart> state_parts() const override;
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) override;
  void plan_kept(typename Bk::Arena& arena) override { router_.plan_kept(arena); }
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) override;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) override;
  MixerCounts counts() const override;
  Json stats() const override;
  bool supports_seq_idx() const override { return true; }  // conv and scan take seq_idx
  const MoeRouter<Bk>& router() const { return router_; }

  const idx_t D, Di, N, R, Kc, E, K;

 private:
  typename Bk::ScanParams branch_scan(idx_t e, const Param* params, idx_t B, idx_t T_) const;
  const ModelConfig cfg_;
  MoeRouter<Bk> router_;
  std::string prefix_;
  size_t in_proj_ = 0, conv_w_ = 0, conv_b_ = 0, x_proj_ = 0, dt_w_ = 0, dt_b_ = 0, A_log_ = 0,
         D_ = 0, out_proj_ = 0;
  idx_t planned_B_ = 0, planned_T_ = 0;
  bool training_ = false;
  int32_t* rows_ = nullptr;  // [M·K] slot (t,k) → row e·M + t of ybr_
  // forward activations; per-branch tensors have a leading E
  Act *xz_ = nullptr, *xc_ = nullptr, *xdbl_ = nullptr, *delta_ = nullptr, *ybr_ = nullptr, *y_ = nullptr;
  F *A_ = nullptr, *chunk_states_ = nullptr;
  // backward scratch
  Act *dxz_ = nullptr, *dy_ = nullptr, *dybr_ = nullptr, *dxc_ = nullptr, *dxc_e_ = nullptr, *dz_e_ = nullptr,
      *dxdbl_ = nullptr, *ddelta_ = nullptr;
  F* dA_ = nullptr;
};

}  // namespace moessm
