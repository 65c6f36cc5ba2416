// MoeMlpMixer<Bk>: the `moe_mlp` layer, E SwiGLU experts chosen per token by top-K routing
// (MoE-Mamba / Jamba / Mixtral feed-forward), plus an optional always-on shared expert
// (DeepSeek-MoE / Qwen-MoE), in the pre-norm residual stack like every layer:
//   route u with MoeRouter (logits = u · router.weightᵀ, softmax, top-K, normalize_topk,
//     Switch aux loss and z-loss: exactly RoM's router, model/moe_router.h)
//   o_t = Σ_{i∈S_t} g[t,i] · down_i( silu(gate_i(u_t)) ⊙ up_i(u_t) )  [+ shared(u_t)]
// Tokens are grouped by expert with the router's moe_permute plan (gathered once), the expert
// GEMMs are grouped_matmul over [E, ...] slabs, the SwiGLU gate runs on the grouped rows, and
// moe_unpermute puts the rows back weighted by g. Dropless (no capacity limit).
//
// Options (anything else is an error naming it). Router fields (RouterOptions::parse with its
// defaults): n_experts (E, 8), top_k (K, 2, 1 <= K <= E), normalize_topk (true), aux_coef (0.01),
// z_coef (0). Own: d_ff (each expert's hidden size F; default default_d_ff(D)),
// shared_expert (false), shared_d_ff (the shared expert's hidden size; default d_ff; only with
// shared_expert: true).
// Parameters (Jamba's names, prefix backbone.layers.{i}.feed_forward.):
//   router.weight [E, D]
//   experts.gate_proj.weight [E, F, D], experts.up_proj.weight [E, F, D],
//   experts.down_proj.weight [E, D, F]                    (llama.cpp's ffn_*_exps slabs)
//   shared_expert.{gate_proj,up_proj,down_proj}.weight      [Fs, D], [Fs, D], [D, Fs]
// forward() adds the router's L_aux + L_z to *aux. No recurrent state (state_size 0).
// stats(): MoeRouter::stats("moe_mlp") of the last forward. docs/hybrid.md.
#pragma once
#include <memory>

#include "model/mixer.h"
#include "model/moe_router.h"
#include "model/swiglu_ffn.h"

namespace moessm {

struct MoeMlpOptions {
  RouterOptions router;  // RouterOptions' own defaults: E 8, K 2, normalize_topk
  int64_t d_ff = 0;      // 0 until parsed: default_d_ff(D)
  bool shared_expert = false;
  int64_t shared_d_ff = 0;
  static MoeMlpOptions parse(const Json& spec, const std::string& where, int64_t d_model);
};

template <typename Bk>
class MoeMlpMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using F = typename Bk::F;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  MoeMlpMixer(const ModelConfig& cfg, const MixerSpec& spec);
  std::string type() const override { return "moe_mlp"; }
  const char* param_scope() const override { return "feed_forward"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override { return 0; }
  std::vector<StatePart> state_parts() const override { return {}; }
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) override;
  void plan_kept(typename Bk::Arena& arena) override { router_.plan_kept(arena); }
  void plan_scratch(typename Bk::Arena& arena, idx_t B, idx_t T_) override;
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) override;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) override;
  MixerCounts counts() const override;
  Json stats() const override { return router_.stats("moe_mlp"); }
  bool supports_seq_idx() const override { return true; }  // per token: nothing crosses tokens
  const MoeMlpOptions& options() const { return opt_; }
  const MoeRouter<Bk>& router() const { return router_; }

 private:
  MoeMlpOptions opt_;
  const idx_t D, Fx, E, K;  // Fx: an expert's hidden size
  const int n_layer_;
  std::string prefix_;
  MoeRouter<Bk> router_;
  std::unique_ptr<SwigluFfn<Bk>> shared_;
  size_t gate_ = 0, up_ = 0, down_ = 0;  // expert slabs
  idx_t planned_M_ = 0, last_M_ = 0;
  // grouped rows [M·K, ·]: gathered input, gate|up, SwiGLU output, expert outputs; their grads
  Act *x_g_ = nullptr, *h_g_ = nullptr, *a_g_ = nullptr, *y_g_ = nullptr;
  Act *dx_g_ = nullptr, *dh_g_ = nullptr, *da_g_ = nullptr, *dy_g_ = nullptr;
};

}  // namespace moessm
