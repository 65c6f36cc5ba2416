// SwigluFfn<Bk>: one dense SwiGLU feed-forward block, the building block of the `mlp` layer and
// of `moe_mlp`'s shared expert (docs/hybrid.md):
//   h   = u · [gate_proj; up_proj]ᵀ          [M, 2F]  (one GEMM: the two tensors are adjacent
//                                                      in the parameter table, so [2F, D])
//   a   = silu(h[:, :F]) ⊙ h[:, F:]          [M, F]   (ops/swiglu.h)
//   out = a · down_projᵀ                     [M, D]   (=, or += with accumulate)
// F = d_ff. Tensors under the prefix it is given: gate_proj.weight [F, D], up_proj.weight [F, D],
// down_proj.weight [D, F]; no biases (Llama). Initialisation: nn.Linear (U(±1/sqrt(fan_in))),
// down_proj scaled by 1/sqrt(n_layer) like Mamba's out_proj (residual-branch scaling).
// Backward follows the forward of the same u: du (=, or += with accumulate), weight grads +=.
// Written once against Bk's ops; no recurrent state.
#pragma once
#include <string>

#include "core/params.h"
#include "model/mixer.h"

namespace moessm {

template <typename Bk>
class SwigluFfn {
 public:
  using Act = typename Bk::Act;
  using Param = typename Bk::Param;
  using Ctx = typename Bk::Ctx;
  SwigluFfn(idx_t d_model, idx_t d_ff, int n_layer) : D(d_model), F(d_ff), n_layer_(n_layer) {}
  void register_params(ParamTable& table, const std::string& prefix);
  void init_params(Param* params, const ParamTable& table, uint64_t seed) const;
  void plan(typename Bk::Arena& arena, idx_t M);           // forward activations (h, a)
  void plan_scratch(typename Bk::Arena& arena, idx_t M);   // backward only (dh, da)
  void forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t M, bool accumulate) const;
  void backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u, const ParamsRef<Bk>& P,
                idx_t M, bool du_accumulate) const;
  MixerCounts counts() const;  // parameters and forward FLOPs per token

  const idx_t D, F;

 private:
  int n_layer_;
  std::string prefix_;
  size_t gate_up_ = 0, down_ = 0;  // table offsets (up_proj follows gate_proj)
  Act *h_ = nullptr, *a_ = nullptr, *dh_ = nullptr, *da_ = nullptr;
  idx_t planned_M_ = 0;
};

// The default hidden size of a SwiGLU block for d_model D: Llama's 2/3 of 4·D (so the three
// matrices hold as many weights as a 4·D two-matrix MLP), rounded up to a multiple of 64:
// 64 · ceil(floor(8·D/3) / 64). D 128 → 384, D 768 → 2048.
int64_t default_d_ff(int64_t d_model);
constexpr int64_t kMaxDff = int64_t(1) << 20;
// Reads the integer option `key` (a hidden size) of a layer spec: `fallback` when absent; an
// error naming `where`, the option, the range [1, 2^20] and the value found otherwise.
int64_t parse_d_ff(const Json& spec, const char* key, const std::string& where, int64_t fallback);

// FLOPs per hidden element of the SwiGLU gate silu(a)·b: σ's exp, add and divide, then two
// multiplies (counted as "other" FLOPs).
constexpr double kSwigluFlopsPerElement = 5.0;

}  // namespace moessm
