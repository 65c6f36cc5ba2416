// The `attention` layer (see attention_mixer.h), instantiated for every backend.
#include "model/attention_mixer.h"

#include <cmath>

#include "backend/backends.h"
#include "core/check.h"
#include "model/init.h"
#include "ops/attention.h"
#include "ops/rope.h"

namespace moessm {

namespace {
int64_t int_option(const Json& spec, const char* key, const std::string& where, int64_t lo, int64_t hi,
                   int64_t fallback) {
  const Json* v = spec.get(key);
  if (!v) return fallback;
  CHECK(v->is_integer() && v->as_int() >= lo && v->as_int() <= hi, where, ": option '", key,
        "' must be an integer in [", lo, ", ", hi, "], found ", v->dump());
  return v->as_int();
}
}  // namespace

AttentionOptions AttentionOptions::parse(const Json& spec, const std::string& where, int64_t d_model) {
  for (const auto& kv : spec.as_object(where))
    CHECK(kv.first == "type" || kv.first == "n_heads" || kv.first == "n_kv_heads" || kv.first == "head_dim" ||
              kv.first == "window" || kv.first == "rope_theta" || kv.first == "max_context",
          where, ": unknown option '", kv.first,
          "' (attention takes n_heads, n_kv_heads, head_dim, window, rope_theta, max_context; it has no biases)");
  AttentionOptions o;
  CHECK(spec.get("n_heads"), where, ": option 'n_heads' is required");
  o.n_heads = int_option(spec, "n_heads", where, 1, 4096, 0);
  o.n_kv_heads = int_option(spec, "n_kv_heads", where, 1, o.n_heads, o.n_heads);
  CHECK(o.n_heads % o.n_kv_heads == 0, where, ": option 'n_kv_heads' (", o.n_kv_heads,
        ") must divide 'n_heads' (", o.n_heads, ")");
  if (!spec.get("head_dim"))
    CHECK(d_model % o.n_heads == 0 && (d_model / o.n_heads) % 2 == 0, where, ": the default head_dim d_model / n_heads = ",
          d_model, " / ", o.n_heads, " must be an even integer; give 'head_dim'");
  o.head_dim = int_option(spec, "head_dim", where, 2, 1024, d_model / o.n_heads);
  CHECK(o.head_dim % 2 == 0, where, ": option 'head_dim' must be even (rotary halves), found ", o.head_dim);
  o.max_context = int_option(spec, "max_context", where, 1, kMaxAttentionContext, 4096);
  o.window = int_option(spec, "window", where, 0, kMaxRopePosition, 0);
  if (const Json* v = spec.get("rope_theta")) {
    CHECK(v->is_number() && v->as_number() > 0 && std::isfinite(v->as_number()), where,
          ": option 'rope_theta' must be a positive number, found ", v->dump());
    o.rope_theta = v->as_number();
  }
  return o;
}

template <typename Bk>
AttentionMixer<Bk>::AttentionMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : opt_(AttentionOptions::parse(spec.options, "mixer 'attention'", cfg.d_model)),
      D_(cfg.d_model),
      H_(opt_.n_heads),
      Hkv_(opt_.n_kv_heads),
      hd_(opt_.head_dim),
      C_(opt_.cache_len()),
      Nqkv_((opt_.n_heads + 2 * opt_.n_kv_heads) * opt_.head_dim),
      n_layer_(int(cfg.n_layer)),
      count_context_(opt_.max_context) {
  if (const Json* s = cfg.train.is_object() ? cfg.train.get("seq_len") : nullptr; s && s->is_integer() && s->as_int() > 0)
    count_context_ = s->as_int();
}

template <typename Bk>
void AttentionMixer<Bk>::register_params(ParamTable& t, const std::string& p) {
  prefix_ = p;
  qkv_ = t.add(p + "q_proj.weight", {H_ * hd_, D_}, false);
  const size_t k = t.add(p + "k_proj.weight", {Hkv_ * hd_, D_}, false);
  const size_t v = t.add(p + "v_proj.weight", {Hkv_ * hd_, D_}, false);
  // The fused q|k|v GEMM reads the three as one [(H+2Hkv)·hd, D] block.
  CHECK(k == qkv_ + size_t(H_ * hd_ * D_) && v == k + size_t(Hkv_ * hd_ * D_),
        "AttentionMixer: k_proj and v_proj must follow q_proj in the parameter table");
  o_ = t.add(p + "o_proj.weight", {D_, H_ * hd_}, false);
}

template <typename Bk>
void AttentionMixer<Bk>::init_params(Param* params, const ParamTable& t, uint64_t seed) const {
  for (const char* n : {"q_proj.weight", "k_proj.weight", "v_proj.weight"}) init_linear(params, t.at(prefix_ + n), seed);
  init_linear(params, t.at(prefix_ + "o_proj.weight"), seed, 1.0 / std::sqrt(double(n_layer_)));
}

template <typename Bk>
std::vector<StatePart> AttentionMixer<Bk>::state_parts() const {
  return {{C_ * Hkv_ * hd_, dtype_of<Act>()}, {C_ * Hkv_ * hd_, dtype_of<Act>()}, {1, dtype_of<F>()}};
}

template <typename Bk>
int64_t AttentionMixer<Bk>::max_positions() const {
  return C_ == opt_.window ? kMaxRopePosition : opt_.max_context;
}

template <typename Bk>
void AttentionMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool) {
  planned_M_ = B * T_;
  planned_BT_ = B * T_;
  qkv_buf_ = a.template carve<Act>(B * T_ * Nqkv_);
  y_ = a.template carve<Act>(B * T_ * H_ * hd_);
  lse_ = a.template carve<F>(B * H_ * T_);
}

template <typename Bk>
void AttentionMixer<Bk>::plan_scratch(typename Bk::Arena& a, idx_t B, idx_t T_) {
  dqkv_ = a.template carve<Act>(B * T_ * Nqkv_);
  dy_ = a.template carve<Act>(B * T_ * H_ * hd_);
  delta_ = a.template carve<F>(B * H_ * T_);
}

template <typename Bk>
typename Bk::AttnParams AttentionMixer<Bk>::attn_params(const void* state_in, idx_t B, idx_t T_) const {
  typename Bk::AttnParams p;
  p.q = qkv_buf_;
  p.k = qkv_buf_ + H_ * hd_;
  p.v = qkv_buf_ + (H_ + Hkv_) * hd_;
  p.q_ld = p.k_ld = p.v_ld = Nqkv_;
  if (state_in) {
    void* s = const_cast<void*>(state_in);
    p.k_cache = k_cache(s);
    p.v_cache = v_cache(s, B);
    p.pos0 = pos(s, B);
    p.C = C_;
  }
  p.B = B;
  p.T = T_;
  p.H = H_;
  p.Hkv = Hkv_;
  p.hd = hd_;
  p.window = opt_.window;
  return p;
}

template <typename Bk>
void AttentionMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                                 const void* state_in, void* state_out, double*) {
  CHECK(B * T_ <= planned_M_, "AttentionMixer: called with ", B * T_, " tokens but planned for ", planned_M_);
  CHECK(!state_out || max_positions() != opt_.max_context || T_ <= opt_.max_context,
        "attention: a pass of ", T_, " tokens that writes a state needs T <= max_context (", opt_.max_context,
        "): the KV cache holds max_context positions");
  const F* pos0 = state_in ? pos(const_cast<void*>(state_in), B) : nullptr;
  Bk::matmul_forward(ctx, qkv_buf_, Nqkv_, u, D_, P.gemm + qkv_, B * T_, Nqkv_, D_);
  Bk::rope_forward(ctx, qkv_buf_, Nqkv_, qkv_buf_, Nqkv_, pos0, B, T_, H_, hd_, opt_.rope_theta);
  Bk::rope_forward(ctx, qkv_buf_ + H_ * hd_, Nqkv_, qkv_buf_ + H_ * hd_, Nqkv_, pos0, B, T_, Hkv_, hd_,
                   opt_.rope_theta);
  Bk::attention_forward(ctx, y_, H_ * hd_, lse_, attn_params(state_in, B, T_));
  Bk::matmul_forward(ctx, out, D_, y_, H_ * hd_, P.gemm + o_, B * T_, D_, H_ * hd_);
  if (state_out) {
    const idx_t bytes = idx_t(this->state_bytes(B));
    if (!state_in) Bk::zero(ctx, static_cast<uint8_t*>(state_out), bytes);
    else if (state_in != state_out)
      Bk::copy(ctx, static_cast<uint8_t*>(state_out), static_cast<const uint8_t*>(state_in), bytes);
    Bk::kv_cache_append(ctx, k_cache(state_out), v_cache(state_out, B), pos(state_out, B), qkv_buf_ + H_ * hd_, Nqkv_,
                        qkv_buf_ + (H_ + Hkv_) * hd_, Nqkv_, B, T_, C_, Hkv_, hd_);
  }
}

template <typename Bk>
void AttentionMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                                  const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in, double) {
  CHECK(dqkv_ && dy_ && delta_, "AttentionMixer: backward needs an arena planned for training (plan_scratch)");
  const F* pos0 = state_in ? pos(const_cast<void*>(state_in), B) : nullptr;
  const idx_t M = B * T_, Y = H_ * hd_;
  Bk::matmul_backward(ctx, dy_, Y, grads + o_, dout, D_, y_, Y, P.gemm + o_, M, D_, Y);
  Bk::attention_backward(ctx, dqkv_, Nqkv_, dqkv_ + Y, Nqkv_, dqkv_ + Y + Hkv_ * hd_, Nqkv_, delta_, dy_, Y, y_, Y,
                         lse_, attn_params(state_in, B, T_));
  Bk::rope_backward(ctx, dqkv_, Nqkv_, dqkv_, Nqkv_, pos0, B, T_, H_, hd_, opt_.rope_theta);
  Bk::rope_backward(ctx, dqkv_ + Y, Nqkv_, dqkv_ + Y, Nqkv_, pos0, B, T_, Hkv_, hd_, opt_.rope_theta);
  Bk::matmul_backward(ctx, du, D_, grads + qkv_, dqkv_, Nqkv_, u, D_, P.gemm + qkv_, M, Nqkv_, D_);
}

template <typename Bk>
MixerCounts AttentionMixer<Bk>::counts() const {
  MixerCounts c;
  const int64_t w = D_ * Nqkv_ + H_ * hd_ * D_;
  c.total_params = c.active_params = w;
  c.gemm_flops = 2.0 * double(w);
  const double keys = attention_mean_keys(double(count_context_), double(opt_.window));
  c.attention_flops = 4.0 * double(H_ * hd_) * keys;  // q·k and p·v: 2·hd each per (head, key)
  c.other_flops = kAttentionSoftmaxFlops * double(H_) * keys + kRopeFlopsPerElement * double((H_ + Hkv_) * hd_);
  return c;
}

MOESSM_INSTANTIATE_FOR_BACKENDS(AttentionMixer)

}  // namespace moessm
