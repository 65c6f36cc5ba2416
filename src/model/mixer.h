// Mixer<Bk>: the per-layer sequence mixer interface every layer type implements (dense Mamba,
// RoM, Swimba, separated MoE-SSM, the mlp / moe_mlp feed-forward layers, attention ...),
// written once for every backend Bk (src/backend/: CpuBackend<float|double>, CudaBackend<float|bf16>). A model is a list of mixers
// built from the config's per-layer list by the registry (model/mixer_registry.h).
//
// Contract:
// - register_params() appends the layer's tensors to the model's ParamTable (names prefixed with
//   e.g. "backbone.layers.3.mixer."; the last part is param_scope(): "mixer" for the Mamba
//   family, "feed_forward" for the mlp / moe_mlp layers, Jamba's name; "self_attn" for attention), remembering their offsets.
// - init_params() fills this layer's slices of a HOST buffer in the table's layout (the model
//   uploads it): initialisation is host code on every backend, seeded per tensor name.
// - plan() carves every activation the layer needs from the arena (the same calls size the arena
//   in its planning pass and hand out pointers in the real pass); forward/backward allocate nothing.
// - forward(out[B,T,D], u[B,T,D]) reads weights through ParamsRef (master buffer for small
//   parameters, GEMM copy for projection weights; the same buffer on the CPU). The recurrent state
//   of B sequences is a block of state_bytes(B) in backend memory whose typed parts the mixer
//   lists in state_parts() (so the model can exchange it with a host fp32 layout); state_in /
//   state_out are optional and may alias (decode step: T = 1). The auxiliary loss the layer adds
//   to the objective is ADDED to *aux, a scalar in backend memory (no host sync per layer); aux
//   nullptr means no auxiliary loss is wanted (decoding): the layer skips computing it, and
//   stats() keep describing the last forward that did.
// - backward() must follow the forward of the same inputs: du assigns, parameter grads
//   accumulate; aux_grad is dLoss/d(aux loss) (1 in training).
// - stats() describes the routing of the last forward as plain data (null for dense mixers).
// - Packed documents: set_seq_idx(seq_idx) gives the forward and backward that follow a
//   per-token document index [B,T] (int32, backend memory, token stride T; nullptr, the
//   default, = one document per row); the rule is in ops/op_common.h: nothing a layer carries
//   along time (conv window, scan state) crosses a document start, and state_in belongs to the
//   row's first document, state_out to its last. A layer says it honours the index with
//   supports_seq_idx(); one that mixes over time without honouring it keeps the default false,
//   and set_seq_idx refuses a non-null index for it (the model asks first: seq_idx_missing).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "io/json.h"
#include "core/params.h"
#include "model/config.h"
#include "ops/op_common.h"

namespace moessm {

// Per-token accounting (DESIGN.md §5). FLOPs are forward FLOPs per token.
struct MixerCounts {
  int64_t total_params = 0, active_params = 0;
  double gemm_flops = 0, scan_flops = 0, conv_flops = 0, router_flops = 0, other_flops = 0;
  // Attention's q·k and p·v products (4·H·hd per visible key), averaged over the sequence length
  // the layer is counted at: a sliding window counts its window, not the whole context.
  double attention_flops = 0;
  double forward_flops() const {
    return gemm_flops + scan_flops + conv_flops + router_flops + attention_flops + other_flops;
  }
  MixerCounts& operator+=(const MixerCounts& o);
};

// One typed part of a layer's recurrent state: `per_seq` elements per sequence of `dtype`; the
// block for B sequences holds B·per_seq of them; parts follow each other without padding (so a
// CPU block is exactly the host layout of state files).
struct StatePart {
  idx_t per_seq = 0;
  DType dtype = DType::F32;
};
// Bytes of a state block with these parts for B sequences, and the byte offset of part i.
size_t state_block_bytes(const std::vector<StatePart>& parts, idx_t B);
size_t state_part_offset(const std::vector<StatePart>& parts, size_t i, idx_t B);

// The weights a layer reads: master (small parameters: conv, A_log, D, biases, norms, routers)
// and gemm (the GEMM operand copy; == master on the CPU). Both point at offset 0 of the table.
template <typename Bk>
struct ParamsRef {
  const typename Bk::Param* master = nullptr;
  const typename Bk::Weight* gemm = nullptr;
};

template <typename Bk>
class Mixer {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  virtual ~Mixer() = default;
  virtual std::string type() const = 0;
  // The block name in this layer's checkpoint names: backbone.layers.{i}.<param_scope()>.*
  virtual const char* param_scope() const { return "mixer"; }
  virtual void register_params(ParamTable& table, const std::string& prefix) = 0;
  virtual void init_params(Param* host_params, const ParamTable& table, uint64_t seed) const = 0;
  virtual idx_t state_size() const = 0;  // recurrent state elements per sequence (all parts)
  // The most positions (tokens since the zero state) one state of this layer may stand for;
  // 0 = unbounded (the recurrent mixers). The attention layer's KV cache bounds it.
  virtual int64_t max_positions() const { return 0; }
  virtual std::vector<StatePart> state_parts() const = 0;
  size_t state_bytes(idx_t B) const { return state_block_bytes(state_parts(), B); }  // allocates: set-up only
  virtual void plan(typename Bk::Arena& arena, idx_t B, idx_t T_, bool training) = 0;
  virtual void plan_kept(typename Bk::Arena&) {}
  virtual void plan_scratch(typename Bk::Arena&, idx_t /*B*/, idx_t /*T_*/) {}
  virtual void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                       const void* state_in, void* state_out, double* aux) = 0;
  virtual void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                        const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void* state_in, double aux_grad) = 0;
  virtual MixerCounts counts() const = 0;
  virtual Json stats() const { return Json(); }
  virtual bool supports_seq_idx() const { return false; }
  void set_seq_idx(const int32_t* seq_idx) {
    CHECK(!seq_idx || supports_seq_idx(), "layer type '", type(),
          "' does not support packed documents (seq_idx): its state would cross document starts");
    seq_idx_ = seq_idx;
  }

 protected:
  const int32_t* seq_idx_ = nullptr;  // see set_seq_idx
};

}  // namespace moessm
