// AttentionMixer<Bk>: the `attention` layer, causal multi-head attention with rotary position
// embeddings, an optional sliding window (Samba's SWA) and grouped-query heads (Llama / Jamba /
// Samba), in the pre-norm residual stack like every layer (h = h + attention(rmsnorm(h))):
//   qkv = u · [q_proj; k_proj; v_proj]ᵀ          [B, T, (H + 2·Hkv)·hd]   (one GEMM)
//   q, k = rope(q, k) at positions P_b + t         (ops/rope.h, in place)
//   y   = attention(q, k, v; window, KV cache)     [B, T, H·hd]            (ops/attention.h)
//   out = y · o_projᵀ                              [B, T, D]
// Options: n_heads H (required), n_kv_heads Hkv (default H; divides H), head_dim hd (default
// D / H; even), window W (0 = full causal; token t attends t−W+1..t), rope_theta (10000),
// max_context (4096; the KV cache bound, below). Anything else is an error naming the option.
// Parameters (Llama / Jamba names, prefix backbone.layers.{i}.self_attn.), no biases:
//   q_proj.weight [H·hd, D], k_proj.weight [Hkv·hd, D], v_proj.weight [Hkv·hd, D],
//   o_proj.weight [D, H·hd]   (q, k, v adjacent in the table: one [(H+2Hkv)·hd, D] GEMM)
// Recurrent state (decode, chunked prefill, state files): a ring-buffer KV cache of C slots,
//   C = W when 0 < W <= max_context (sliding window: memory constant however long the decode),
//   C = max_context otherwise (full attention, or a window wider than max_context),
// as parts [k_cache: C·Hkv·hd Act][v_cache: C·Hkv·hd Act][pos: 1 F] per sequence, pos the
// number of tokens the state stands for (roped keys are cached, so positions are absolute).
// A zero state is the empty cache at position 0. max_positions() bounds the positions one
// state may reach: max_context when C = max_context (a full cache would drop keys the layer
// must see; the CPU op checks it per call, the decoder checks the model's bound on the host),
// 2^24 for a sliding window (positions exact in the fp32 state). docs/hybrid.md.
#pragma once
#include "model/mixer.h"

namespace moessm {

struct AttentionOptions {
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0, window = 0, max_context = 4096;
  double rope_theta = 10000.0;
  int64_t cache_len() const { return window > 0 && window <= max_context ? window : max_context; }
  // Parses and validates a layer spec (where = "mixer 'attention'").
  static AttentionOptions parse(const Json& spec, const std::string& where, int64_t d_model);
};
constexpr int64_t kMaxAttentionContext = int64_t(1) << 20;
// "Other" FLOPs of attention per (head, visible key): the softmax's max, subtract, exp, sum and
// scale; per rotated element of rope: two multiplies and an add.
constexpr double kAttentionSoftmaxFlops = 5.0;
constexpr double kRopeFlopsPerElement = 3.0;

template <typename Bk>
class AttentionMixer : public Mixer<Bk> {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using F = typename Bk::F;
  using Ctx = typename Bk::Ctx;
  AttentionMixer(const ModelConfig& cfg, const MixerSpec& spec);
  std::string type() const override { return "attention"; }
  const char* param_scope() const override { return "self_attn"; }
  void register_params(ParamTable& table, const std::string& prefix) override;
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const override;
  idx_t state_size() const override { return 2 * C_ * Hkv_ * hd_ + 1; }
  std::vector<StatePart> state_parts() const override;
  int64_t max_positions() const override;
  void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) override;
  void plan_scratch(typename Bk::Arena& arena, idx_t B, idx_t T_) override;
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) override;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) override;
  MixerCounts counts() const override;
  const AttentionOptions& options() const { return opt_; }
  idx_t cache_len() const { return C_; }

 private:
  typename Bk::AttnParams attn_params(const void* state_in, idx_t B, idx_t T_) const;
  // The typed parts of a state block of B sequences.
  Act* k_cache(void* s) const { return static_cast<Act*>(s); }
  Act* v_cache(void* s, idx_t B) const { return k_cache(s) + B * C_ * Hkv_ * hd_; }
  F* pos(void* s, idx_t B) const { return reinterpret_cast<F*>(v_cache(s, B) + B * C_ * Hkv_ * hd_); }

  AttentionOptions opt_;
  idx_t D_, H_, Hkv_, hd_, C_, Nqkv_;
  int n_layer_;
  int64_t count_context_;  // the sequence length attention FLOPs are counted at
  std::string prefix_;
  size_t qkv_ = 0, o_ = 0;  // table offsets (k_proj, v_proj follow q_proj)
  Act *qkv_buf_ = nullptr, *y_ = nullptr, *dqkv_ = nullptr, *dy_ = nullptr;
  F *lse_ = nullptr, *delta_ = nullptr;
  idx_t planned_M_ = 0, planned_BT_ = 0;
};

}  // namespace moessm
