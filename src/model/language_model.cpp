// Model<Bk> implementation (see language_model.h), instantiated for every backend.
#include "model/language_model.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/backends.h"
#include "core/check.h"
#include "model/init.h"
#include "model/mixer_registry.h"

namespace moessm {

template <typename Bk>
ModelLayout<Bk> register_model(const ModelConfig& cfg, ParamTable& table) {
  const idx_t D = cfg.d_model, V = cfg.padded_vocab();
  ModelLayout<Bk> m;
  m.emb = table.add("backbone.embeddings.weight", {V, D}, false);
  for (int l = 0; l < int(cfg.n_layer); ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    m.norm.push_back(table.add(p + "norm.weight", {D}, true));
    m.mixers.push_back(make_mixer<Bk>(cfg, cfg.layers[l], l));
    m.mixers.back()->register_params(table, p + m.mixers.back()->param_scope() + ".");
  }
  m.norm_f = table.add("backbone.norm_f.weight", {D}, true);
  return m;
}

template <typename Bk>
Model<Bk>::Model(const ModelConfig& cfg, int device, ExpertShard shard)
    : cfg_(cfg), table_(shard), D_(cfg.d_model), V_(cfg.padded_vocab()) {
  CHECK(shard.size == 1 || !Bk::kOnDevice, "expert-sharded storage on ", Bk::kName,
        ": host backends only (docs/distributed.md)");
  ModelLayout<Bk> layout = register_model<Bk>(cfg, table_);
  mixers_ = std::move(layout.mixers);
  emb_ = layout.emb;
  norm_ = layout.norm;
  norm_f_ = layout.norm_f;
  for (const auto& m : mixers_) state_seq_bytes_.push_back(m->state_bytes(1));
  ctx_.c = Bk::make_ctx(device);
  ctx_.owned = true;
  Bk::alloc(params, table_.total());
  Bk::alloc(grads, table_.total());
  if constexpr (!std::is_same_v<typename Bk::Weight, Param>) Bk::alloc(gemm_copy_, table_.total());
}

template <typename Bk>
const typename Bk::Weight* Model<Bk>::gemm_weights() const {
  if constexpr (std::is_same_v<typename Bk::Weight, Param>) return params.data();
  else return gemm_copy_.data();
}
template <typename Bk>
typename Bk::Weight* Model<Bk>::gemm_weights_mut() {
  if constexpr (std::is_same_v<typename Bk::Weight, Param>) return params.data();
  else return gemm_copy_.data();
}
template <typename Bk>
void Model<Bk>::refresh_weights() {
  Bk::refresh_weights(ctx_, gemm_weights_mut(), params.data(), idx_t(table_.total()));
}

template <typename Bk>
void Model<Bk>::set_expert_group(dist::Communicator* group) {
  if constexpr (Bk::kOnDevice) {
    CHECK(group == nullptr || group->world_size() == 1, "expert parallelism on ", Bk::kName,
          ": not yet (host backends only; docs/distributed.md)");
  } else {
    ctx_.c.experts = group;
  }
}

namespace {
// The initial weights of every tensor whole, in the layout of `table` (unsharded): the mixers
// and norm offsets registered against it.
template <typename Bk, typename Param>
void init_whole(std::vector<Param>& host, const ModelConfig& cfg, const std::vector<std::unique_ptr<Mixer<Bk>>>& mixers,
                const std::vector<size_t>& norm, size_t norm_f, const ParamTable& table, uint64_t seed) {
  host.assign(table.total(), Param(0));
  {
    const ParamInfo& e = table.at("backbone.embeddings.weight");
    Rng rng = param_rng(seed, e.name);
    init_normal(host.data() + e.offset, e.numel, cfg.embedding_init_std, rng);
  }
  for (size_t off : norm) init_constant(host.data() + off, cfg.d_model, 1.0);
  init_constant(host.data() + norm_f, cfg.d_model, 1.0);
  for (auto& m : mixers) m->init_params(host.data(), table, seed);
}
}  // namespace

template <typename Bk>
void Model<Bk>::init(uint64_t seed) {
  std::vector<Param> host;
  if (!table_.sharded()) {
    init_whole(host, cfg_, mixers_, norm_, norm_f_, table_, seed);
  } else {  // the whole model's draws (in a layout of its own), then this rank's part
    ParamTable whole;
    const ModelLayout<Bk> layout = register_model<Bk>(cfg_, whole);
    std::vector<Param> all;
    init_whole(all, cfg_, layout.mixers, layout.norm, layout.norm_f, whole, seed);
    host.resize(table_.total());
    if constexpr (std::is_same_v<Param, float>) table_.local_from_full(all.data(), host.data());
    else FAIL("expert-sharded storage: fp32 master weights only");
  }
  upload_params(host.data());
}

template <typename Bk>
void Model<Bk>::upload_params(const Param* host) {
  Bk::from_host(ctx_, params.data(), host, idx_t(table_.total()));
  refresh_weights();
}
template <typename Bk>
void Model<Bk>::download_params(Param* host) const {
  Bk::to_host(ctx_, host, params.data(), idx_t(table_.total()));
}
template <typename Bk>
void Model<Bk>::download_grads(Param* host) const {
  Bk::to_host(ctx_, host, grads.data(), idx_t(table_.total()));
}

template <typename Bk>
std::vector<double> Model<Bk>::row_losses() const {
  const idx_t n = last_loss_rows_;
  std::vector<F> f(static_cast<size_t>(n));
  Bk::to_host(ctx_, f.data(), row_loss_, n);
  return std::vector<double>(f.begin(), f.end());
}

template <typename Bk>
void Model<Bk>::zero_grads() {
  Bk::zero(ctx_, grads.data(), idx_t(grads.size()));
}

// ---- state ------------------------------------------------------------------------------------

template <typename Bk>
idx_t Model<Bk>::state_size() const {
  idx_t s = 0;
  for (const auto& m : mixers_) s += m->state_size();
  return s;
}

template <typename Bk>
int64_t Model<Bk>::max_positions() const {
  int64_t m = 0;
  for (const auto& x : mixers_)
    if (const int64_t p = x->max_positions(); p > 0 && (m == 0 || p < m)) m = p;
  return m;
}

template <typename Bk>
idx_t Model<Bk>::state_offset(int layer, idx_t B) const {
  idx_t s = 0;
  for (int l = 0; l < layer; ++l) s += B * mixers_[l]->state_size();
  return s;
}

template <typename Bk>
size_t Model<Bk>::state_byte_offset(int layer, idx_t B) const {
  size_t s = 0;
  for (int l = 0; l < layer; ++l) s += size_t(B) * state_seq_bytes_[l];  // parts have no padding
  return s;
}

template <typename Bk>
size_t Model<Bk>::state_bytes(idx_t B) const {
  return state_byte_offset(n_layers(), B);
}

namespace {
// One typed state part <-> fp32 on the host.
template <typename Bk, typename U>
void part_to_host(const typename Bk::Ctx& c, float* host, const void* mem, idx_t n) {
  std::vector<U> tmp(static_cast<size_t>(n));
  Bk::to_host(c, tmp.data(), static_cast<const U*>(mem), n);
  for (idx_t i = 0; i < n; ++i) host[i] = float(tmp[i]);
}
template <typename Bk, typename U>
void part_from_host(const typename Bk::Ctx& c, void* mem, const float* host, idx_t n) {
  std::vector<U> tmp(static_cast<size_t>(n));
  for (idx_t i = 0; i < n; ++i) tmp[i] = U(host[i]);
  Bk::from_host(c, static_cast<U*>(mem), tmp.data(), n);
}
}  // namespace

template <typename Bk>
void Model<Bk>::state_to_host(float* host, const void* state, idx_t B) const {
  for (int l = 0; l < n_layers(); ++l) {
    const std::vector<StatePart> parts = mixers_[l]->state_parts();
    const char* base = static_cast<const char*>(state) + state_byte_offset(l, B);
    float* dst = host + state_offset(l, B);
    for (size_t i = 0; i < parts.size(); ++i) {
      const idx_t n = B * parts[i].per_seq;
      const void* src = base + state_part_offset(parts, i, B);
      if (parts[i].dtype == dtype_of<Act>()) part_to_host<Bk, Act>(ctx_, dst, src, n);
      else part_to_host<Bk, F>(ctx_, dst, src, n);
      dst += n;
    }
  }
}

template <typename Bk>
void Model<Bk>::state_from_host(void* state, const float* host, idx_t B) const {
  for (int l = 0; l < n_layers(); ++l) {
    const std::vector<StatePart> parts = mixers_[l]->state_parts();
    char* base = static_cast<char*>(state) + state_byte_offset(l, B);
    const float* src = host + state_offset(l, B);
    for (size_t i = 0; i < parts.size(); ++i) {
      const idx_t n = B * parts[i].per_seq;
      void* dst = base + state_part_offset(parts, i, B);
      if (parts[i].dtype == dtype_of<Act>()) part_from_host<Bk, Act>(ctx_, dst, src, n);
      else part_from_host<Bk, F>(ctx_, dst, src, n);
      src += n;
    }
  }
}

// ---- arena ------------------------------------------------------------------------------------

template <typename Bk>
void Model<Bk>::carve(typename Bk::Arena& a, idx_t B, idx_t T_, bool training) {
  const idx_t BT = B * T_, L = cfg_.n_layer;
  resid_.assign(training ? L + 1 : 1, nullptr);
  for (auto& r : resid_) r = a.template carve<F>(BT * D_);
  normed_.assign(L, nullptr);
  rstd_.assign(L, nullptr);
  for (idx_t l = 0; l < L; ++l) {
    if (l == 0 || training) {
      normed_[l] = a.template carve<Act>(BT * D_);
      rstd_[l] = a.template carve<F>(BT);
    } else {  // inference: every layer reuses layer 0's buffers
      normed_[l] = normed_[0];
      rstd_[l] = rstd_[0];
    }
  }
  mix_out_ = a.template carve<Act>(BT * D_);
  hf_ = a.template carve<Act>(BT * D_);
  rstd_f_ = a.template carve<F>(BT);
  head_rows_ = std::min<idx_t>(BT, Bk::kHeadChunkRows);
  logits_chunk_ = a.template carve<Act>(head_rows_ * V_);
  logits_stage_ = Bk::kOnDevice && !std::is_same_v<Act, F> ? a.template carve<F>(head_rows_ * V_) : nullptr;
  lse_ = a.template carve<F>(head_rows_);
  row_loss_ = a.template carve<F>(BT);
  dloss_ = a.template carve<F>(head_rows_);
  ids_mem_ = a.template carve<int32_t>(BT);
  targets_mem_ = a.template carve<int32_t>(BT);
  seq_idx_mem_ = a.template carve<int32_t>(BT);
  sums_ = a.template carve<double>(2);
  if (training) {
    dhf_ = a.template carve<Act>(BT * D_);
    du_ = a.template carve<Act>(BT * D_);
    dres_ = a.template carve<F>(BT * D_);
    dres_act_ = std::is_same_v<Act, F> ? nullptr : a.template carve<Act>(BT * D_);
  }
  // Each layer's activations; in inference the layers run one after the other and share space.
  for (auto& m : mixers_) m->plan_kept(a);
  const size_t mark = a.mark();
  for (auto& m : mixers_) {
    if (!training) a.rewind(mark);
    m->plan(a, B, T_, training);
  }
  // Backward scratch: one region every layer's backward shares.
  if (training) {
    const size_t scratch = a.mark();
    for (auto& m : mixers_) {
      a.rewind(scratch);
      m->plan_scratch(a, B, T_);
    }
  }
}

template <typename Bk>
void Model<Bk>::prepare(idx_t B, idx_t T_, bool training) {
  CHECK(B > 0 && T_ > 0, "prepare: batch ", B, " and length ", T_, " must be positive");
  if (B == max_B_ && T_ == max_T_ && training == training_) return;
  Bk::sync(ctx_);
  typename Bk::Arena a;      // planning pass: the same carve() calls only count
  carve(a, B, T_, training);
  a.allocate_planned();
  carve(a, B, T_, training);  // real pass: hands out pointers
  arena_ = std::move(a);      // moving keeps the buffer, so the pointers stay valid
  max_B_ = B;
  max_T_ = T_;
  training_ = training;
}

// ---- forward ----------------------------------------------------------------------------------

template <typename Bk>
std::string seq_idx_missing(const std::vector<std::unique_ptr<Mixer<Bk>>>& mixers) {
  for (size_t l = 0; l < mixers.size(); ++l)
    if (!mixers[l]->supports_seq_idx())
      return str_cat("layer ", l, " (", mixers[l]->type(), ") does not take packed documents (seq_idx)");
  return "";
}

template <typename Bk>
std::string Model<Bk>::seq_idx_missing() const {
  return moessm::seq_idx_missing(mixers_);
}

template <typename Bk>
const int32_t* Model<Bk>::upload_seq_idx(const int32_t* seq_idx, idx_t BT) {
  if (!seq_idx) return nullptr;
  const std::string missing = seq_idx_missing();
  CHECK(missing.empty(), "model: packed documents (seq_idx) refused: ", missing);
  Bk::from_host(ctx_, seq_idx_mem_, seq_idx, BT);
  return seq_idx_mem_;
}

template <typename Bk>
void Model<Bk>::forward_body(const int32_t* ids_mem, idx_t B, idx_t T_, const void* state_in, void* state_out,
                             bool want_aux, const int32_t* seq_idx_mem) {
  CHECK(B == max_B_ && T_ >= 1 && T_ <= max_T_, "model prepared for B=", max_B_, " T<=", max_T_,
        ", called with B=", B, " T=", T_);
  CHECK(!(training_ && state_out), "model: a training pass does not write a carried state");
  const idx_t BT = B * T_;
  const ParamsRef<Bk> P = params_ref();
  const Param* W = params.data();
  const double eps = cfg_.norm_eps;
  for (auto& m : mixers_) m->set_seq_idx(seq_idx_mem);  // for this forward and its backward
  Bk::embedding_forward(ctx_, resid(0), ids_mem, W + emb_, BT, V_, D_);
  Bk::zero(ctx_, sums_ + 1, 1);  // the layers' auxiliary losses are added here
  for (int l = 0; l < n_layers(); ++l) {
    // h_l = h_{l-1} + mixer_{l-1}(...) fused with the norm of layer l (residual in F)
    if (l == 0) {
      Bk::rmsnorm_forward(ctx_, normed_[0], rstd_[0], resid(0), W + norm_[0], BT, D_, eps);
    } else {
      Bk::copy(ctx_, resid(l), resid(l - 1), BT * D_);
      Bk::rmsnorm_add_forward(ctx_, normed_[l], rstd_[l], resid(l), mix_out_, W + norm_[l], BT, D_, eps);
    }
    const char* sin = state_in ? static_cast<const char*>(state_in) + state_byte_offset(l, B) : nullptr;
    char* sout = state_out ? static_cast<char*>(state_out) + state_byte_offset(l, B) : nullptr;
    mixers_[l]->forward(ctx_, mix_out_, normed_[l], P, B, T_, sin, sout, want_aux ? sums_ + 1 : nullptr);
  }
  const int L = n_layers();
  Bk::copy(ctx_, resid(L), resid(L - 1), BT * D_);
  Bk::rmsnorm_add_forward(ctx_, hf_, rstd_f_, resid(L), mix_out_, W + norm_f_, BT, D_, eps);
}

template <typename Bk>
void Model<Bk>::forward_last_logits(Act* logits_mem, const int32_t* ids_mem, idx_t B, idx_t T_,
                                    const void* state_in, void* state_out) {
  forward_body(ids_mem, B, T_, state_in, state_out, /*want_aux=*/false);  // decoding: no auxiliary loss
  // row b·T + T-1 of hf for each b: a strided view with ld = T·D
  Bk::matmul_forward(ctx_, logits_mem, V_, hf_ + (T_ - 1) * D_, T_ * D_, gemm_weights() + emb_, B, V_, D_);
}

template <typename Bk>
void Model<Bk>::forward_logits(HostLogit* logits, const int32_t* ids, idx_t B, idx_t T_, const void* state_in,
                               void* state_out, const int32_t* seq_idx) {
  const idx_t BT = B * T_;
  if constexpr (Bk::kOnDevice) {
    for (idx_t i = 0; i < BT; ++i)
      CHECK(ids[i] >= 0 && ids[i] < cfg_.vocab_size, "token id ", ids[i], " at position ", i,
            " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
  }
  CHECK(B == max_B_ && T_ <= max_T_, "model prepared for B=", max_B_, " T<=", max_T_, ", called with B=", B,
        " T=", T_);
  Bk::from_host(ctx_, ids_mem_, ids, BT);
  forward_body(ids_mem_, B, T_, state_in, state_out, true, upload_seq_idx(seq_idx, BT));
  if constexpr (!Bk::kOnDevice) {
    // Host memory: the whole [B·T, V] product at once, straight into the caller's buffer.
    Bk::matmul_forward(ctx_, logits, V_, hf_, D_, gemm_weights() + emb_, BT, V_, D_);
  } else {
    for (idx_t r0 = 0; r0 < BT; r0 += head_rows_) {
      const idx_t rows = std::min(head_rows_, BT - r0);
      Bk::matmul_forward(ctx_, logits_chunk_, V_, hf_ + r0 * D_, D_, gemm_weights() + emb_, rows, V_, D_);
      Bk::logits_to_host(ctx_, logits + r0 * V_, logits_chunk_, logits_stage_, rows * V_);
    }
  }
}

// ---- loss and backward ------------------------------------------------------------------------

template <typename Bk>
LossResult Model<Bk>::loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T_, bool backward,
                           const void* state_in, void* state_out, const int32_t* seq_idx) {
  CHECK(!backward || training_, "loss(backward=true) needs prepare(..., training=true)");
  CHECK(B == max_B_ && T_ <= max_T_, "model prepared for B=", max_B_, " T<=", max_T_, ", called with B=", B,
        " T=", T_);
  LossResult r;
  const idx_t BT = B * T_;
  for (idx_t i = 0; i < BT; ++i) {
    if (Bk::kOnDevice)
      CHECK(ids[i] >= 0 && ids[i] < cfg_.vocab_size, "token id ", ids[i], " at position ", i,
            " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
    CHECK(targets[i] < V_, "target id ", targets[i], " at position ", i, " is outside the vocabulary [0, ", V_, ")");
    if (targets[i] >= 0) ++r.count;
  }
  CHECK(r.count > 0, "loss: no targets to score (all ignored)");
  Bk::from_host(ctx_, ids_mem_, ids, BT);
  Bk::from_host(ctx_, targets_mem_, targets, BT);
  forward_body(ids_mem_, B, T_, state_in, state_out, true, upload_seq_idx(seq_idx, BT));
  const typename Bk::Weight* E = gemm_weights() + emb_;
  const double scale = 1.0 / double(r.count);
  for (idx_t r0 = 0; r0 < BT; r0 += head_rows_) {
    const idx_t rows = std::min(head_rows_, BT - r0);
    Bk::matmul_forward(ctx_, logits_chunk_, V_, hf_ + r0 * D_, D_, E, rows, V_, D_);
    if (backward) {
      // logits → dlogits in place, then the head's backward at once
      Bk::cross_entropy_forward_backward(ctx_, row_loss_ + r0, lse_, logits_chunk_, logits_chunk_,
                                         targets_mem_ + r0, scale, rows, V_, dloss_);
      Bk::matmul_backward(ctx_, dhf_ + r0 * D_, D_, grads.data() + emb_, logits_chunk_, V_, hf_ + r0 * D_, D_, E,
                          rows, V_, D_);
    } else {
      Bk::cross_entropy_forward(ctx_, row_loss_ + r0, lse_, logits_chunk_, targets_mem_ + r0, rows, V_);
    }
  }
  Bk::sum_to(ctx_, sums_, row_loss_, BT);
  last_loss_rows_ = BT;
  if (backward) backward_body(B, T_, state_in);
  double host_sums[2] = {0, 0};
  Bk::to_host(ctx_, host_sums, sums_, 2);
  r.ce = host_sums[0] / double(r.count);
  r.aux = host_sums[1];
  return r;
}

template <typename Bk>
void Model<Bk>::backward_body(idx_t B, idx_t T_, const void* state_in) {
  const idx_t BT = B * T_;
  const ParamsRef<Bk> P = params_ref();
  const Param* W = params.data();
  Param* G = grads.data();
  const int L = n_layers();
  Bk::rmsnorm_backward(ctx_, dres_, G + norm_f_, dhf_, resid(L), W + norm_f_, rstd_f_, BT, D_, false);
  for (int l = L - 1; l >= 0; --l) {
    const Act* dout;
    if constexpr (std::is_same_v<Act, F>) {
      dout = dres_;
    } else {
      Bk::f_to_act(ctx_, dres_act_, dres_, BT * D_);
      dout = dres_act_;
    }
    const char* sin = state_in ? static_cast<const char*>(state_in) + state_byte_offset(l, B) : nullptr;
    mixers_[l]->backward(ctx_, du_, G, dout, normed_[l], P, B, T_, sin, 1.0);
    Bk::rmsnorm_backward(ctx_, dres_, G + norm_[l], du_, resid(l), W + norm_[l], rstd_[l], BT, D_,
                         /*dx_accumulate=*/true);
  }
  Bk::embedding_backward(ctx_, G + emb_, dres_, ids_mem_, BT, V_, D_);
}

template <typename Bk>
MixerCounts count_model(const ModelConfig& cfg, const std::vector<std::unique_ptr<Mixer<Bk>>>& mixers) {
  MixerCounts c;
  for (const auto& m : mixers) c += m->counts();
  const int64_t emb = cfg.padded_vocab() * cfg.d_model, norms = (cfg.n_layer + 1) * cfg.d_model;
  c.total_params += emb + norms;
  c.active_params += emb + norms;
  c.gemm_flops += 2.0 * double(emb);  // tied head
  return c;
}

template <typename Bk>
MixerCounts Model<Bk>::counts() const {
  return count_model(cfg_, mixers_);
}

template <typename Bk>
Json Model<Bk>::stats() const {
  Json layers = Json::array();
  bool any = false;
  for (const auto& m : mixers_) {
    Json s = m->stats();
    any = any || !s.is_null();
    layers.push_back(s);
  }
  return any ? layers : Json();
}

#define MOESSM_MODEL_FUNCTIONS(Bk)                                                                   \
  template ModelLayout<Bk> register_model<Bk>(const ModelConfig&, ParamTable&);                     \
  template MixerCounts count_model<Bk>(const ModelConfig&, const std::vector<std::unique_ptr<Mixer<Bk>>>&);     \
  template std::string seq_idx_missing<Bk>(const std::vector<std::unique_ptr<Mixer<Bk>>>&);
MOESSM_INSTANTIATE_FOR_BACKENDS(Model)
MOESSM_MODEL_FUNCTIONS(CpuBackend<float>)
MOESSM_MODEL_FUNCTIONS(CpuBackend<double>)
#ifdef MOESSM_CUDA
MOESSM_MODEL_FUNCTIONS(CudaBackend<float>)
MOESSM_MODEL_FUNCTIONS(CudaBackend<__nv_bfloat16>)
#endif

}  // namespace moessm
