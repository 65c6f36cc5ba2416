// MlpMixer<Bk>: the `mlp` layer, a dense SwiGLU feed-forward (Llama / Samba) in the pre-norm
// residual stack like every layer (the model applies h = h + mlp(rmsnorm(h)), DESIGN.md §1):
//   out = down_proj( silu(gate_proj(u)) ⊙ up_proj(u) )       (SwigluFfn, model/swiglu_ffn.h)
// Options: d_ff (hidden size F; default default_d_ff(D) = 8·D/3 rounded up to a multiple of 64).
// No biases. Anything else is an error naming the option.
// Parameters (Jamba's names, prefix backbone.layers.{i}.feed_forward.):
//   gate_proj.weight [F, D], up_proj.weight [F, D], down_proj.weight [D, F]
// No recurrent state (state_size 0): prefill and steps need nothing carried. docs/hybrid.md.
#pragma once
#include "model/mixer.h"
#include "model/swiglu_ffn.h"

namespace moessm {

template <typename Bk>
class MlpMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  MlpMixer(const ModelConfig& cfg, const MixerSpec& spec);
  std::string type() const override { return "mlp"; }
  const char* param_scope() const override { return "feed_forward"; }
  void register_params(ParamTable& table, const std::string& prefix) override { ffn_.register_params(table, prefix); }
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override {
    ffn_.init_params(params, table, seed);
  }
  idx_t state_size() const override { return 0; }
  std::vector<StatePart> state_parts() const override { return {}; }
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) override;
  void plan_scratch(typename Bk::Arena& arena, idx_t B, idx_t T_) override { ffn_.plan_scratch(arena, B * T_); }
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) override;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) override;
  MixerCounts counts() const override { return ffn_.counts(); }
  bool supports_seq_idx() const override { return true; }  // per token: nothing crosses tokens
  idx_t d_ff() const { return ffn_.F; }

 private:
  SwigluFfn<Bk> ffn_;
};

}  // namespace moessm
