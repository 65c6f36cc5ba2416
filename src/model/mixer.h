// Mixer: the per-layer sequence mixer interface every layer type implements (dense Mamba, RoM,
// Swimba, separated MoE-SSM, later attention ...). A model is a list of mixers built from the
// config's per-layer list by make_mixer().
//
// Contract:
// - register_params() appends the layer's tensors to the model's ParamTable (names prefixed with
//   e.g. "backbone.layers.3.mixer."), remembering their offsets; every call then receives the base
//   pointer of the flat parameter (or gradient) buffer.
// - plan() carves every activation the layer needs from the arena (the same calls size the arena
//   in its planning pass and hand out pointers in the real pass); forward/backward allocate nothing.
// - forward(out[B,T,D], u[B,T,D]) with optional recurrent state: state_in / state_out point to a
//   block of B·state_size() elements whose layout the mixer owns; they may alias (decode step:
//   T = 1). Returns the auxiliary loss the layer adds to the objective (0 for dense).
// - backward() must follow the forward of the same inputs: du assigns, parameter grads accumulate;
//   aux_grad is dLoss/d(aux loss) (1 in training).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/arena.h"
#include "io/json.h"
#include "core/params.h"
#include "model/config.h"
#include "ops/op_common.h"

namespace moessm {

// Per-token accounting (DESIGN.md §5). FLOPs are forward FLOPs per token.
struct MixerCounts {
  int64_t total_params = 0, active_params = 0;
  double gemm_flops = 0, scan_flops = 0, conv_flops = 0, router_flops = 0, other_flops = 0;
  double forward_flops() const { return gemm_flops + scan_flops + conv_flops + router_flops + other_flops; }
  MixerCounts& operator+=(const MixerCounts& o);
};

template <typename T>
class Mixer {
 public:
  virtual ~Mixer() = default;
  virtual std::string type() const = 0;
  virtual void register_params(ParamTable& table, const std::string& prefix) = 0;
  // Initialises this layer's slices of `params` (seeded per tensor name: thread-count independent).
  virtual void init_params(T* params, const ParamTable& table, uint64_t seed) const = 0;
  virtual idx_t state_size() const = 0;  // recurrent state elements per sequence
  virtual void plan(Arena<T>& arena, idx_t B, idx_t T_, bool training) = 0;
  virtual double forward(T* out, const T* u, const T* params, idx_t B, idx_t T_,
                         const T* state_in, T* state_out) = 0;
  virtual void backward(T* du, T* grads, const T* dout, const T* u, const T* params, idx_t B,
                        idx_t T_, const T* state_in, double aux_grad) = 0;
  virtual MixerCounts counts() const = 0;
  // Routing statistics of the last forward (per-expert load etc.); null for dense mixers.
  virtual Json stats() const { return Json(); }
};

// Builds the mixer for one layer from its spec (validates the spec's options).
template <typename T>
std::unique_ptr<Mixer<T>> make_mixer(const ModelConfig& cfg, const MixerSpec& spec, int layer);

}  // namespace moessm
