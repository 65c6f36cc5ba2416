// LanguageModel: embedding → per layer h = h + mixer(rmsnorm(h)) → rmsnorm_f → head tied to the
// embedding (DESIGN.md §1). The residual stream is kept in the model's scalar type (fp32 in use;
// fp64 in gradient tests). Parameters live in one flat buffer described by table(); grads mirror
// it. The LM head and cross-entropy run in row chunks, so a [B·T, V] logits buffer is never held
// in training, and the head's backward is fused into the loss pass.
//
// Recurrent state (decode / chunked prefill): one block per layer, layer l holding
// B·mixer(l).state_size() elements (layout owned by the mixer); state_offset(l, B) locates it.
#pragma once
#include <memory>
#include <vector>

#include "core/arena.h"
#include "io/json.h"
#include "core/params.h"
#include "model/config.h"
#include "model/mixer.h"

namespace moessm {

struct LossResult {
  double ce = 0;        // mean next-token cross-entropy over counted targets
  double aux = 0;       // sum of the mixers' auxiliary losses (MoE load balancing, z-loss)
  int64_t count = 0;    // targets counted (target >= 0)
  double total() const { return ce + aux; }
};

// The model's tensors in checkpoint order (embedding; per layer norm + mixer; norm_f) registered
// into a ParamTable, with the mixers that own the layer tensors. The one place the layout is
// decided: LanguageModel and the CUDA model (model/cuda/) both build their table with it.
template <typename T>
struct ModelLayout {
  std::vector<std::unique_ptr<Mixer<T>>> mixers;
  size_t emb = 0, norm_f = 0;
  std::vector<size_t> norm;  // per layer
};
template <typename T>
ModelLayout<T> register_model(const ModelConfig& cfg, ParamTable& table);
// Whole-model accounting per token (DESIGN.md §5): the mixers' counts plus embedding, tied head
// and norms.
template <typename T>
MixerCounts count_model(const ModelConfig& cfg, const std::vector<std::unique_ptr<Mixer<T>>>& mixers);

template <typename T>
class LanguageModel {
 public:
  explicit LanguageModel(const ModelConfig& cfg);
  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  T* param(const std::string& name) { return params.data() + table_.at(name).offset; }

  std::vector<T> params, grads;  // same layout as table()

  void init(uint64_t seed);
  void zero_grads();

  idx_t vocab() const { return V_; }  // padded vocabulary (the logits' width)
  int n_layers() const { return int(mixers_.size()); }
  Mixer<T>& mixer(int l) { return *mixers_[l]; }
  idx_t state_size() const;                       // elements per sequence, all layers
  idx_t state_offset(int layer, idx_t B) const;   // start of layer's block in a [B] state

  // Sizes the activation arena for batches of at most B×T tokens; `training` adds backward's needs.
  void prepare(idx_t B, idx_t T_, bool training);

  // logits[B,T,V] for ids[B,T]. state_in / state_out: the whole-model state for B sequences
  // (B·state_size() elements), optional, may alias.
  void forward_logits(T* logits, const int32_t* ids, idx_t B, idx_t T_, const T* state_in,
                      T* state_out);
  // Mean cross-entropy of targets[B,T] (entries < 0 ignored) + aux losses. With backward=true,
  // gradients of that total are ACCUMULATED into grads (call zero_grads() first).
  LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T_, bool backward,
                  const T* state_in = nullptr, T* state_out = nullptr);

  MixerCounts counts() const;  // whole model, per token (embedding/head/norms included)
  Json stats() const;          // per-layer mixer statistics of the last forward (MoE load)

 private:
  void forward_body(const int32_t* ids, idx_t B, idx_t T_, const T* state_in, T* state_out,
                    double* aux);
  void carve(Arena<T>& a, idx_t B, idx_t T_, bool training);

  ModelConfig cfg_;
  ParamTable table_;
  std::vector<std::unique_ptr<Mixer<T>>> mixers_;
  idx_t D_, V_;
  size_t emb_ = 0, norm_f_ = 0;
  std::vector<size_t> norm_;
  Arena<T> arena_;
  idx_t max_B_ = 0, max_T_ = 0;
  bool training_ = false;
  // activations
  std::vector<T*> resid_, normed_, rstd_;  // resid_ has n_layer+1 entries
  T *mix_out_ = nullptr, *hf_ = nullptr, *rstd_f_ = nullptr;
  T *logits_chunk_ = nullptr, *lse_ = nullptr, *row_loss_ = nullptr, *dloss_ = nullptr;
  T *dres_ = nullptr, *du_ = nullptr, *dhf_ = nullptr;
};

// Rows of the LM head processed at once in loss().
constexpr idx_t kHeadChunkRows = 256;

}  // namespace moessm
