// SwimbaMixer: the MoE-parameterised SSM (DESIGN.md §3, arXiv 2603.06938). ONE state trajectory;
// experts emit the scan's input-dependent parameter streams and the router mixes them in
// parameter space before the single scan:
//   (x, z) = split(u · in_projᵀ);  xc = silu(conv1d(x))
//   route on u (router_input "u", router.weight [E, D]) or xc ("conv", router.weight [E, Di])
//   per chosen expert i:  (dt_low^i, B^i, C^i) = split(xc · x_proj[i]ᵀ)        x_proj [E, R+2N, Di]
//                         dts^i = dt_low^i · dt_proj[i]ᵀ  (dt_proj [E, Di, R] with expert_dt_proj,
//                                                         else the shared [Di, R])
//   mix "pre":  Δ = softplus(Σ g_i dts^i + dt_proj.bias)      (softplus and bias inside the scan)
//   mix "post": Δ = Σ g_i softplus(dts^i + dt_proj.bias)      (scan with delta_softplus = false)
//   B = Σ g_i B^i, C = Σ g_i C^i;  y = selective_scan(xc, Δ, A = -exp(A_log), B, C, D, gate z)
//   out = y · out_projᵀ
// Shared: in_proj.weight, conv1d.weight/bias, dt_proj.bias, A_log, D, out_proj.weight (HF names,
// same shapes as dense). With E = 1 it is the dense mixer (router weight 1).
// Only the K chosen experts' projections run per token: slots are grouped by expert (the router's
// moe_permute plan), each expert runs one GEMM over its slots (grouped_matmul), moe_unpermute with
// the router weights does the mixing.
// With mix "pre" and a shared dt_proj, Σ g_i dt_proj(dt_low^i) = dt_proj(Σ g_i dt_low^i): the
// dt_low streams are mixed first and dt_proj runs once per token.
// Options: n_experts (8), top_k (2), normalize_topk (true), aux_coef (0.01), z_coef (0),
// mix ("pre"), expert_dt_proj (false), router_input ("u"). Recurrent state: as dense
// (conv [B, Di, Kc-1] then ssm [B, Di, N]).
// Written once for every backend (it calls only Bk's ops).
#pragma once
#include "model/mixer.h"
#include "model/moe_router.h"

namespace moessm {

struct SwimbaOptions {
  RouterOptions router;
  bool mix_post = false, expert_dt_proj = false, route_on_conv = false;
  static SwimbaOptions parse(const MixerSpec& spec);  // rejects unknown options
};

template <typename Bk>
class SwimbaMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using F = typename Bk::F;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  SwimbaMixer(const ModelConfig& cfg, const MixerSpec& spec)
      : SwimbaMixer(cfg, SwimbaOptions::parse(spec)) {}
  SwimbaMixer(const ModelConfig& cfg, const SwimbaOptions& opt);
  std::string type() const override { return "swimba"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override { return Di * (Kc - 1) + Di * N; }
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

  // Read-only views of the last forward (diagnostics and tests), [B·T, ·] token-major, in
  // backend memory: the effective Δ (after softplus) is written to delta_out[B·T, Di].
  void effective_delta(const Ctx& ctx, Act* delta_out, const Param* params, idx_t BT) const;
  const Act* conv_output() const { return xc_; }      // xc [B·T, Di]
  const Act* mixed_streams() const { return xmix_; }  // (dt_low, B, C) [B·T, R+2N]; dt_low only
                                                      // meaningful for pre + shared dt_proj
  const MoeRouter<Bk>& router() const { return router_; }

  const idx_t D, Di, N, R, Kc, E, K;
  const bool mix_post, expert_dt_proj, route_on_conv;

 private:
  bool mixes_dt_low() const { return !mix_post && !expert_dt_proj; }
  // The single scan over the mixed streams (forward and backward): all but the carried states.
  typename Bk::ScanParams scan_params(const Param* params, idx_t B, idx_t T_) const;
  const ModelConfig cfg_;
  MoeRouter<Bk> router_;
  std::string prefix_;
  size_t in_proj_ = 0, conv_w_ = 0, conv_b_ = 0, x_proj_ = 0, dt_w_ = 0, dt_b_ = 0, A_log_ = 0,
         D_ = 0, out_proj_ = 0;
  idx_t planned_B_ = 0, planned_T_ = 0;
  bool training_ = false;
  // forward activations
  Act *xz_ = nullptr, *xc_ = nullptr, *xg_ = nullptr, *xs_ = nullptr, *dts_ = nullptr, *xmix_ = nullptr,
      *delta_ = nullptr, *y_ = nullptr, *sp_ = nullptr;
  F *A_ = nullptr, *chunk_states_ = nullptr;
  // backward scratch
  Act *dxz_ = nullptr, *dy_ = nullptr, *dxc_ = nullptr, *dxmix_ = nullptr, *ddelta_ = nullptr, *dxs_ = nullptr,
      *ddts_ = nullptr, *dxg_ = nullptr;
  F* dA_ = nullptr;
};

}  // namespace moessm
