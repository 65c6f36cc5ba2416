// LanguageModel implementation (see language_model.h).
#include "model/language_model.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "model/init.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"

namespace moessm {

template <typename T>
ModelLayout<T> register_model(const ModelConfig& cfg, ParamTable& table) {
  const idx_t D = cfg.d_model, V = cfg.padded_vocab();
  ModelLayout<T> m;
  m.emb = table.add("backbone.embeddings.weight", {V, D}, false);
  for (int l = 0; l < int(cfg.n_layer); ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    m.norm.push_back(table.add(p + "norm.weight", {D}, true));
    m.mixers.push_back(make_mixer<T>(cfg, cfg.layers[l], l));
    m.mixers.back()->register_params(table, p + "mixer.");
  }
  m.norm_f = table.add("backbone.norm_f.weight", {D}, true);
  return m;
}

template <typename T>
LanguageModel<T>::LanguageModel(const ModelConfig& cfg)
    : cfg_(cfg), D_(cfg.d_model), V_(cfg.padded_vocab()) {
  ModelLayout<T> layout = register_model<T>(cfg, table_);
  mixers_ = std::move(layout.mixers);
  emb_ = layout.emb;
  norm_ = layout.norm;
  norm_f_ = layout.norm_f;
  params.assign(table_.total(), T(0));
  grads.assign(table_.total(), T(0));
}

template <typename T>
void LanguageModel<T>::init(uint64_t seed) {
  std::fill(params.begin(), params.end(), T(0));
  {
    const ParamInfo& e = table_.at("backbone.embeddings.weight");
    Rng rng = param_rng(seed, e.name);
    init_normal(params.data() + e.offset, e.numel, cfg_.embedding_init_std, rng);
  }
  for (size_t off : norm_) init_constant(params.data() + off, D_, 1.0);
  init_constant(params.data() + norm_f_, D_, 1.0);
  for (auto& m : mixers_) m->init_params(params.data(), table_, seed);
}

template <typename T>
void LanguageModel<T>::zero_grads() {
  std::fill(grads.begin(), grads.end(), T(0));
}

template <typename T>
idx_t LanguageModel<T>::state_size() const {
  idx_t s = 0;
  for (const auto& m : mixers_) s += m->state_size();
  return s;
}

template <typename T>
idx_t LanguageModel<T>::state_offset(int layer, idx_t B) const {
  idx_t s = 0;
  for (int l = 0; l < layer; ++l) s += B * mixers_[l]->state_size();
  return s;
}

template <typename T>
void LanguageModel<T>::carve(Arena<T>& a, idx_t B, idx_t T_, bool training) {
  const idx_t BT = B * T_, L = cfg_.n_layer;
  resid_.assign(L + 1, nullptr);
  normed_.assign(L, nullptr);
  rstd_.assign(L, nullptr);
  for (idx_t l = 0; l <= L; ++l) resid_[l] = a.carve(BT * D_);
  for (idx_t l = 0; l < L; ++l) {
    normed_[l] = a.carve(BT * D_);
    rstd_[l] = a.carve(BT);
  }
  mix_out_ = a.carve(BT * D_);
  hf_ = a.carve(BT * D_);
  rstd_f_ = a.carve(BT);
  const idx_t rows = std::min<idx_t>(BT, kHeadChunkRows);
  logits_chunk_ = a.carve(rows * V_);
  lse_ = a.carve(rows);
  row_loss_ = a.carve(rows);
  dloss_ = a.carve(rows);
  if (training) {
    dres_ = a.carve(BT * D_);
    du_ = a.carve(BT * D_);
    dhf_ = a.carve(BT * D_);
  }
  for (auto& m : mixers_) m->plan(a, B, T_, training);
}

template <typename T>
void LanguageModel<T>::prepare(idx_t B, idx_t T_, bool training) {
  CHECK(B > 0 && T_ > 0, "prepare: batch ", B, " and length ", T_, " must be positive");
  if (B == max_B_ && T_ == max_T_ && training == training_) return;
  Arena<T> a;               // planning pass: the same carve() calls only count
  carve(a, B, T_, training);
  a.allocate_planned();
  carve(a, B, T_, training);  // real pass: hands out pointers
  arena_ = std::move(a);      // moving keeps the heap buffer, so the pointers stay valid
  max_B_ = B;
  max_T_ = T_;
  training_ = training;
}

template <typename T>
void LanguageModel<T>::forward_body(const int32_t* ids, idx_t B, idx_t T_, const T* state_in,
                                    T* state_out, double* aux) {
  CHECK(B == max_B_ && T_ == max_T_, "model prepared for B=", max_B_, " T=", max_T_,
        ", called with B=", B, " T=", T_);
  const idx_t BT = B * T_;
  const T* P = params.data();
  cpu::embedding_forward(resid_[0], ids, P + emb_, BT, V_, D_);
  double aux_sum = 0;
  for (int l = 0; l < n_layers(); ++l) {
    cpu::rmsnorm_forward(normed_[l], rstd_[l], resid_[l], P + norm_[l], BT, D_, cfg_.norm_eps);
    const idx_t so = state_offset(l, B);
    aux_sum += mixers_[l]->forward(mix_out_, normed_[l], P, B, T_, state_in ? state_in + so : nullptr,
                                   state_out ? state_out + so : nullptr);
    cpu::add_forward(resid_[l + 1], D_, resid_[l], D_, mix_out_, D_, BT, D_);  // residual
  }
  cpu::rmsnorm_forward(hf_, rstd_f_, resid_[n_layers()], P + norm_f_, BT, D_, cfg_.norm_eps);
  if (aux) *aux = aux_sum;
}

template <typename T>
void LanguageModel<T>::forward_logits(T* logits, const int32_t* ids, idx_t B, idx_t T_,
                                      const T* state_in, T* state_out) {
  forward_body(ids, B, T_, state_in, state_out, nullptr);
  cpu::matmul_forward(logits, V_, hf_, D_, params.data() + emb_, (const T*)nullptr, B * T_, V_, D_);
}

template <typename T>
LossResult LanguageModel<T>::loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T_,
                                  bool backward, const T* state_in, T* state_out) {
  CHECK(!backward || training_, "loss(backward=true) needs prepare(..., training=true)");
  LossResult r;
  forward_body(ids, B, T_, state_in, state_out, &r.aux);
  const idx_t BT = B * T_;
  for (idx_t i = 0; i < BT; ++i) {
    CHECK(targets[i] < V_, "target id ", targets[i], " at position ", i, " is outside the vocabulary [0, ", V_, ")");
    if (targets[i] >= 0) ++r.count;
  }
  CHECK(r.count > 0, "loss: no targets to score (all ignored)");
  const T* E = params.data() + emb_;
  double sum = 0;
  for (idx_t r0 = 0; r0 < BT; r0 += kHeadChunkRows) {
    const idx_t rows = std::min<idx_t>(kHeadChunkRows, BT - r0);
    cpu::matmul_forward(logits_chunk_, V_, hf_ + r0 * D_, D_, E, (const T*)nullptr, rows, V_, D_);
    cpu::cross_entropy_forward(row_loss_, lse_, logits_chunk_, targets + r0, rows, V_);
    cpu::accumulate_sum(&sum, row_loss_, rows);
    if (backward) {
      cpu::fill(dloss_, T(1.0 / double(r.count)), rows);
      cpu::cross_entropy_backward(logits_chunk_, dloss_, logits_chunk_, lse_, targets + r0, rows, V_);
      cpu::matmul_backward(dhf_ + r0 * D_, D_, grads.data() + emb_, (T*)nullptr, logits_chunk_, V_,
                           hf_ + r0 * D_, D_, E, rows, V_, D_);
    }
  }
  r.ce = sum / double(r.count);
  if (!backward) return r;

  T* G = grads.data();
  const T* P = params.data();
  const int L = n_layers();
  cpu::rmsnorm_backward(dres_, G + norm_f_, dhf_, resid_[L], P + norm_f_, rstd_f_, BT, D_);
  for (int l = L - 1; l >= 0; --l) {
    const idx_t so = state_offset(l, B);
    mixers_[l]->backward(du_, G, dres_, normed_[l], P, B, T_, state_in ? state_in + so : nullptr, 1.0);
    cpu::rmsnorm_backward(dres_, G + norm_[l], du_, resid_[l], P + norm_[l], rstd_[l], BT, D_,
                          /*dx_accumulate=*/true);
  }
  cpu::embedding_backward(G + emb_, dres_, ids, BT, V_, D_);
  return r;
}

template <typename T>
MixerCounts count_model(const ModelConfig& cfg, const std::vector<std::unique_ptr<Mixer<T>>>& mixers) {
  MixerCounts c;
  for (const auto& m : mixers) c += m->counts();
  const int64_t emb = cfg.padded_vocab() * cfg.d_model, norms = (cfg.n_layer + 1) * cfg.d_model;
  c.total_params += emb + norms;
  c.active_params += emb + norms;
  c.gemm_flops += 2.0 * double(emb);  // tied head
  return c;
}

template <typename T>
MixerCounts LanguageModel<T>::counts() const {
  return count_model(cfg_, mixers_);
}

template <typename T>
Json LanguageModel<T>::stats() const {
  Json layers = Json::array();
  bool any = false;
  for (const auto& m : mixers_) {
    Json s = m->stats();
    any = any || !s.is_null();
    layers.push_back(s);
  }
  return any ? layers : Json();
}

template class LanguageModel<float>;
template class LanguageModel<double>;
template ModelLayout<float> register_model<float>(const ModelConfig&, ParamTable&);
template ModelLayout<double> register_model<double>(const ModelConfig&, ParamTable&);
template MixerCounts count_model<float>(const ModelConfig&, const std::vector<std::unique_ptr<Mixer<float>>>&);
template MixerCounts count_model<double>(const ModelConfig&, const std::vector<std::unique_ptr<Mixer<double>>>&);

}  // namespace moessm
