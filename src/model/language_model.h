// Model<Bk>: embedding → per layer h = h + mixer(rmsnorm(h)) → rmsnorm_f → head tied to the
// embedding (DESIGN.md §1), written once for every backend (src/backend/): it calls only Bk's
// ops, and its layers come from the mixer registry. LanguageModel<T> = Model<CpuBackend<T>> is
// the CPU model (T = float for use, double for gradient tests).
//
// Memory: parameters live in one flat master buffer described by table() (Bk::Buffer: a host
// vector on the CPU, device memory on CUDA), grads mirror it; for bf16 activations a GEMM copy
// of the whole buffer feeds the matrix products (refresh_weights after every change of the
// master, done by upload_params / init and the fused AdamW). The residual stream, norm
// statistics and losses are F (fp32 on CUDA). Activations come from one arena planned by
// prepare(B, T, training); calls may use any T' <= T with the same B. Training keeps every
// layer's activations for backward; inference shares one set across layers.
//
// Recurrent state (decode / chunked prefill): one block per layer in backend memory, layer l
// holding mixer(l).state_bytes(B) bytes in the typed parts the mixer lists; state_byte_offset(l,
// B) locates it. On the CPU backends the block is the host layout of state files (elements:
// state_offset(l, B)); state_to_host / state_from_host exchange it as fp32 on every backend.
//
// The LM head and cross-entropy run in row chunks of Bk::kHeadChunkRows, so a [B·T, V] logits
// buffer is never held in training, and the head's backward is fused into the loss pass. The
// loss and every layer's auxiliary loss are summed in backend memory and read once per call.
//
// Packed documents: forward_logits and loss take an optional host seq_idx [B,T] (int32, the
// document of each token; rule in ops/op_common.h), copied to backend memory and handed to every
// layer (Mixer::set_seq_idx) for that call's forward and backward; nullptr = one document per row.
// seq_idx_missing() says why a model cannot take one ("" when it can).
#pragma once
#include <memory>
#include <vector>

#include "backend/cpu_backend.h"
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
// decided.
template <typename Bk>
struct ModelLayout {
  std::vector<std::unique_ptr<Mixer<Bk>>> mixers;
  size_t emb = 0, norm_f = 0;
  std::vector<size_t> norm;  // per layer
};
template <typename Bk>
ModelLayout<Bk> register_model(const ModelConfig& cfg, ParamTable& table);
// Whole-model accounting per token (DESIGN.md §5): the mixers' counts plus embedding, tied head
// and norms.
template <typename Bk>
MixerCounts count_model(const ModelConfig& cfg, const std::vector<std::unique_ptr<Mixer<Bk>>>& mixers);
// "" when these layers on backend Bk take packed documents (seq_idx), else the reason: the first
// layer that does not honour it, or the op Bk lacks (host-side: no device work, so the trainer
// asks it of register_model's layers before it touches the run directory).
template <typename Bk>
std::string seq_idx_missing(const std::vector<std::unique_ptr<Mixer<Bk>>>& mixers);

template <typename Bk>
class Model {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using F = typename Bk::F;
  using Ctx = typename Bk::Ctx;
  // Logits delivered to the host: the scalar on the CPU (double in gradient tests), fp32 on CUDA.
  using HostLogit = std::conditional_t<Bk::kOnDevice, float, Act>;

  // shard: expert parallelism's storage split (core/params.h): the table keeps only this rank's
  // experts of every expert slab (host backends; training only).
  explicit Model(const ModelConfig& cfg, int device = 0, ExpertShard shard = {});
  Model(Model&&) noexcept = default;  // buffers keep their addresses; the stream moves along
  Model& operator=(Model&&) noexcept = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  const Ctx& ctx() const { return ctx_.c; }
  // Expert parallelism (dist/expert_exchange.h, docs/distributed.md): every routed layer's grouped
  // expert GEMMs run across `group`'s ranks (nullptr: locally again). Host backends only.
  void set_expert_group(dist::Communicator* group);
  Param* param(const std::string& name) { return params.data() + table_.at(name).offset; }

  typename Bk::template Buffer<Param> params, grads;  // same layout as table(), backend memory

  void init(uint64_t seed);  // initialises on the host (the whole tensors, then this shard), then uploads
  void zero_grads();
  // Host copies of the master weights / gradients in the table's layout (fp32 on CUDA).
  void upload_params(const Param* host);
  void download_params(Param* host) const;
  void download_grads(Param* host) const;
  // The per-position cross-entropy of the last loss() pass, B·T values in row order (positions
  // whose target was ignored hold 0), copied to the host in double.
  std::vector<double> row_losses() const;
  // The GEMM operand copy (== params.data() unless the activations are bf16).
  const typename Bk::Weight* gemm_weights() const;
  typename Bk::Weight* gemm_weights_mut();
  // After writing params directly (tests, optimisers that do not refresh): rebuild the GEMM copy.
  void refresh_weights();

  idx_t vocab() const { return V_; }  // padded vocabulary (the logits' width)
  int n_layers() const { return int(mixers_.size()); }
  Mixer<Bk>& mixer(int l) { return *mixers_[l]; }
  idx_t state_size() const;                       // elements per sequence, all layers
  // The most positions one state may stand for (the smallest nonzero Mixer::max_positions();
  // 0 = unbounded): the attention layers' KV caches bound decoding.
  int64_t max_positions() const;
  idx_t state_offset(int layer, idx_t B) const;   // host layout: start of layer's block in a [B] state
  size_t state_bytes(idx_t B) const;              // backend layout: the whole state of B sequences
  size_t state_byte_offset(int layer, idx_t B) const;
  // Backend state block of B sequences <-> host fp32 in the host layout (state files).
  void state_to_host(float* host, const void* state, idx_t B) const;
  void state_from_host(void* state, const float* host, idx_t B) const;

  // Sizes the activation arena for batches of at most B×T tokens; `training` adds backward's needs.
  void prepare(idx_t B, idx_t T_, bool training);

  // logits[B,T,V] (host) for ids[B,T] (host). state_in / state_out: the whole-model state of B
  // sequences in backend memory, optional, may alias.
  void forward_logits(HostLogit* logits, const int32_t* ids, idx_t B, idx_t T_, const void* state_in,
                      void* state_out, const int32_t* seq_idx = nullptr);
  // Device-facing, capturable in a CUDA graph (no host sync, no allocation): runs ids_mem
  // [B, T] (backend memory) and writes the logits of each sequence's LAST position to
  // logits_mem [B, V] (backend memory).
  void forward_last_logits(Act* logits_mem, const int32_t* ids_mem, idx_t B, idx_t T_, const void* state_in,
                           void* state_out);
  // Mean cross-entropy of targets[B,T] (host; entries < 0 ignored) + aux losses. With
  // backward=true, gradients of that total are ACCUMULATED into grads (call zero_grads() first).
  // One host sync (the loss values).
  LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T_, bool backward,
                  const void* state_in = nullptr, void* state_out = nullptr, const int32_t* seq_idx = nullptr);
  // "" when every layer and this backend's ops take packed documents (seq_idx), else the reason
  // (the first layer that does not, or the backend op that is missing).
  std::string seq_idx_missing() const;

  MixerCounts counts() const;  // whole model, per token (embedding/head/norms included)
  Json stats() const;          // per-layer mixer statistics of the last forward (MoE load)

 private:
  // seq_idx_mem: backend memory [B,T] or nullptr (every layer is told either way).
  void forward_body(const int32_t* ids_mem, idx_t B, idx_t T_, const void* state_in, void* state_out,
                    bool want_aux = true, const int32_t* seq_idx_mem = nullptr);
  // Copies a host seq_idx [B,T] to backend memory (nullptr stays nullptr).
  const int32_t* upload_seq_idx(const int32_t* seq_idx, idx_t BT);
  void backward_body(idx_t B, idx_t T_, const void* state_in);
  void carve(typename Bk::Arena& a, idx_t B, idx_t T_, bool training);
  ParamsRef<Bk> params_ref() const { return {params.data(), gemm_weights()}; }
  F* resid(int l) { return training_ ? resid_[l] : resid_[0]; }

  ModelConfig cfg_;
  ParamTable table_;
  std::vector<std::unique_ptr<Mixer<Bk>>> mixers_;
  idx_t D_, V_;
  size_t emb_ = 0, norm_f_ = 0;
  std::vector<size_t> norm_;
  std::vector<size_t> state_seq_bytes_;  // per layer: bytes of one sequence's state (a block is B×)
  // The execution context (the CUDA stream), owned: destroyed with the model, moved with it.
  struct OwnedCtx {
    Ctx c{};
    bool owned = false;
    OwnedCtx() = default;
    OwnedCtx(OwnedCtx&& o) noexcept : c(o.c), owned(o.owned) { o.owned = false; }
    OwnedCtx& operator=(OwnedCtx&& o) noexcept {
      std::swap(c, o.c);
      std::swap(owned, o.owned);
      return *this;
    }
    ~OwnedCtx() {
      if (owned) Bk::destroy_ctx(c);
    }
    operator const Ctx&() const { return c; }
  };
  OwnedCtx ctx_;
  typename Bk::template Buffer<typename Bk::Weight> gemm_copy_;  // bf16 activations only
  typename Bk::Arena arena_;
  idx_t max_B_ = 0, max_T_ = 0, head_rows_ = 0;
  bool training_ = false;
  // activations
  std::vector<F*> resid_;            // L+1 (training) or 1
  std::vector<Act*> normed_;         // per layer (training) or one shared
  std::vector<F*> rstd_;
  Act *mix_out_ = nullptr, *hf_ = nullptr, *logits_chunk_ = nullptr, *dhf_ = nullptr, *du_ = nullptr,
      *dres_act_ = nullptr;
  idx_t last_loss_rows_ = 0;  // B·T of the last loss() pass (row_losses())
  F *rstd_f_ = nullptr, *lse_ = nullptr, *row_loss_ = nullptr, *dloss_ = nullptr, *dres_ = nullptr,
    *logits_stage_ = nullptr;
  int32_t *ids_mem_ = nullptr, *targets_mem_ = nullptr, *seq_idx_mem_ = nullptr;
  double* sums_ = nullptr;  // [0] loss sum, [1] aux sum (backend memory)
};

template <typename T>
using LanguageModel = Model<CpuBackend<T>>;

}  // namespace moessm
