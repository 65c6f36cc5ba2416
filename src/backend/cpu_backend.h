// CpuBackend<T>: the CPU side of the backend contract (docs/design.md, "Backends"). A layer is
// written once against a backend Bk and calls only Bk's ops; CpuBackend<float> runs models,
// CpuBackend<double> runs them in double precision for finite-difference tests.
//
// Element types (every backend names the same five):
//   Act    activations between ops (the token streams)            T
//   Weight GEMM operand copy of the weights                        T (the master buffer itself)
//   Param  master weights and their gradients                      T
//   F      "fp32 streams": residual, norm statistics, scan state,   T
//          A = -exp(A_log), losses
// Buffers come from an Arena (typed carve<U>, int32 routing plans too); Ctx is the execution
// context passed to every op (on the CPU only the expert-parallel group; the stream on CUDA). Every op forwards to the
// reference implementation in moessm::cpu with the arguments unchanged, so CPU results are the
// reference's to the bit.
#pragma once
#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "core/arena.h"
#include "dist/expert_exchange.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/delta_softplus.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/expert_conv1d.h"
#include "ops/grouped_matmul.h"
#include "ops/kv_cache.h"
#include "ops/routed_gemv.h"
#include "ops/matmul.h"
#include "ops/moe_permute.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/router_topk.h"
#include "ops/selective_scan.h"
#include "ops/ssm_a.h"
#include "ops/swiglu.h"

namespace moessm {

template <typename T>
struct CpuBackend {
  using Act = T;
  using Weight = T;
  using Param = T;
  using F = T;
  using Arena = moessm::Arena<T>;
  // experts: expert parallelism (dist/expert_exchange.h): the grouped expert GEMMs run across
  // this group's ranks, each computing its own experts on every rank's tokens, with the model's
  // expert slabs holding this rank's experts only (ExpertShard; nullptr: locally).
  struct Ctx {
    dist::Communicator* experts = nullptr;
  };
  using ScanParams = moessm::ScanParams<T>;
  using ScanGrads = moessm::ScanGrads<T>;
  using AttnParams = moessm::AttentionParams<T, T>;
  static constexpr bool kOnDevice = false;
  static constexpr const char* kName = std::is_same_v<T, double> ? "cpu (f64)" : "cpu (f32)";
  static constexpr const char* kDevice = "cpu";
  // Rows of the LM head and loss processed at once (bounds the [rows, V] logits buffer).
  static constexpr idx_t kHeadChunkRows = 256;

  template <typename U> using Buffer = std::vector<U>;
  // A zero-filled buffer of n elements.
  template <typename U> static void alloc(Buffer<U>& b, size_t n) { b.assign(n, U(0)); }
  static Ctx make_ctx(int /*device*/) { return {}; }
  static std::string describe(const Ctx&) { return kName; }
  // Whether the grouped expert GEMMs exchange rows across an expert group (then this rank's
  // expert slabs hold its own experts only: nothing else may read them).
  static bool experts_exchanged(const Ctx& c) { return c.experts && c.experts->world_size() > 1; }
  static void destroy_ctx(Ctx&) {}

  // ---- memory ----
  template <typename U> static void zero(const Ctx&, U* p, idx_t n) {
    if constexpr (std::is_floating_point_v<U>) cpu::fill(p, U(0), n);
    else std::fill(p, p + n, U(0));
  }
  template <typename U> static void copy(const Ctx&, U* dst, const U* src, idx_t n) {
    if (n > 0 && dst != src) std::memcpy(dst, src, size_t(n) * sizeof(U));
  }
  // Host <-> backend memory (plain copies on the CPU).
  template <typename U> static void to_host(const Ctx& c, U* host, const U* mem, idx_t n) { copy(c, host, mem, n); }
  template <typename U> static void from_host(const Ctx& c, U* mem, const U* host, idx_t n) { copy(c, mem, host, n); }
  static void sync(const Ctx&) {}
  // F stream -> Act stream (same type on the CPU: a copy only when the buffers differ).
  static void f_to_act(const Ctx& c, Act* out, const F* in, idx_t n) { copy(c, out, in, n); }
  // Refreshes the GEMM copy of the weights from the master buffer (none on the CPU).
  static void refresh_weights(const Ctx&, Weight*, const Param*, idx_t) {}

  // ---- ops (argument order as in the op headers: outputs, inputs, weights, sizes) ----
  static void matmul_forward(const Ctx&, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const Weight* w,
                             idx_t M, idx_t N, idx_t K, bool accumulate = false) {
    cpu::matmul_forward(out, out_ld, in, in_ld, w, (const T*)nullptr, M, N, K, accumulate);
  }
  static void matmul_backward(const Ctx&, Act* din, idx_t din_ld, Param* dw, const Act* dout, idx_t dout_ld,
                              const Act* in, idx_t in_ld, const Weight* w, idx_t M, idx_t N, idx_t K,
                              bool din_accumulate = false) {
    cpu::matmul_backward(din, din_ld, dw, (T*)nullptr, dout, dout_ld, in, in_ld, w, M, N, K, din_accumulate);
  }
  static void conv_forward(const Ctx&, Act* out, idx_t out_ld, Act* state_out, const Act* x, idx_t x_ld,
                           const Act* state_in, const int32_t* seq_idx, const Param* w, const Param* bias, idx_t B,
                           idx_t T_, idx_t Di, idx_t Kc, bool silu) {
    cpu::causal_conv1d_forward(out, out_ld, state_out, x, x_ld, state_in, seq_idx, w, bias, B, T_, Di, Kc, silu);
  }
  static void conv_backward(const Ctx&, Act* dx, idx_t dx_ld, Param* dw, Param* dbias, const Act* dout,
                            idx_t dout_ld, const Act* x, idx_t x_ld, const Act* state_in, const int32_t* seq_idx,
                            const Param* w, const Param* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu) {
    cpu::causal_conv1d_backward(dx, dx_ld, dw, dbias, dout, dout_ld, x, x_ld, state_in, seq_idx, w, bias, B, T_, Di,
                                Kc, silu);
  }
  static void ssm_a_forward(const Ctx&, F* A, const Param* A_log, idx_t n) { cpu::ssm_a_forward(A, A_log, n); }
  static void ssm_a_backward(const Ctx&, Param* dA_log, const F* dA, const F* A, idx_t n) {
    cpu::ssm_a_backward(dA_log, dA, A, n);
  }
  // Packed documents (ScanParams::seq_idx) are supported by every op here.
  static void scan_forward(const Ctx&, const ScanParams& p) { cpu::selective_scan_forward(p); }
  static void scan_backward(const Ctx&, const ScanGrads& g, const ScanParams& p) { cpu::selective_scan_backward(g, p); }
  // The CPU scan can keep Δ from its forward for the backward (saves two softplus per element).
  static void set_delta_saved(ScanParams& p, T* buf) { p.delta_saved = buf; }
  static constexpr bool kScanSavesDelta = true;

  static void embedding_forward(const Ctx&, F* out, const int32_t* ids, const Param* table, idx_t rows, idx_t V,
                                idx_t D) {
    cpu::embedding_forward(out, ids, table, rows, V, D);
  }
  static void embedding_backward(const Ctx&, Param* dtable, const F* dout, const int32_t* ids, idx_t rows, idx_t V,
                                 idx_t D) {
    cpu::embedding_backward(dtable, dout, ids, rows, V, D);
  }
  static void rmsnorm_forward(const Ctx&, Act* out, F* rstd, const F* x, const Param* w, idx_t rows, idx_t D,
                              double eps) {
    cpu::rmsnorm_forward(out, rstd, x, w, rows, D, eps);
  }
  // residual += delta, then out = rmsnorm(residual) (the pre-norm block's residual add).
  static void rmsnorm_add_forward(const Ctx&, Act* out, F* rstd, F* residual, const Act* delta, const Param* w,
                                  idx_t rows, idx_t D, double eps) {
    cpu::add_forward(residual, D, residual, D, delta, D, rows, D);
    cpu::rmsnorm_forward(out, rstd, residual, w, rows, D, eps);
  }
  static void rmsnorm_backward(const Ctx&, F* dx, Param* dw, const Act* dout, const F* x, const Param* w,
                               const F* rstd, idx_t rows, idx_t D, bool dx_accumulate) {
    cpu::rmsnorm_backward(dx, dw, dout, x, w, rstd, rows, D, dx_accumulate);
  }
  static void cross_entropy_forward(const Ctx&, F* loss, F* lse, const Act* logits, const int32_t* targets,
                                    idx_t rows, idx_t V) {
    cpu::cross_entropy_forward(loss, lse, logits, targets, rows, V);
  }
  // Forward, then dlogits = dloss_scale · (softmax − onehot) for every row (in place allowed).
  static void cross_entropy_forward_backward(const Ctx&, F* loss, F* lse, Act* dlogits, const Act* logits,
                                             const int32_t* targets, double dloss_scale, idx_t rows, idx_t V,
                                             F* dloss_scratch) {
    cpu::cross_entropy_forward(loss, lse, logits, targets, rows, V);
    cpu::fill(dloss_scratch, T(dloss_scale), rows);
    cpu::cross_entropy_backward(dlogits, dloss_scratch, logits, lse, targets, rows, V);
  }
  // *out = Σ x (in order, in double).
  static void sum_to(const Ctx&, double* out, const F* x, idx_t n) { *out = cpu::sum(x, n); }
  // ---- elementwise and MoE ops (ops/elementwise.h, router_topk.h, moe_permute.h,
  //      grouped_matmul.h, expert_conv1d.h, delta_softplus.h, swiglu.h) ----
  static void add_forward(const Ctx&, Act* out, idx_t out_ld, const Act* a, idx_t a_ld, const Act* b, idx_t b_ld,
                          idx_t M, idx_t X) {
    cpu::add_forward(out, out_ld, a, a_ld, b, b_ld, M, X);
  }
  static void fill_rows(const Ctx&, Act* out, idx_t out_ld, Act value, idx_t M, idx_t X) {
    cpu::fill(out, out_ld, value, M, X);
  }
  // *dst += *src for n scalars in backend memory (loss accumulators).
  static void add_scalars(const Ctx&, double* dst, const double* src, idx_t n) {
    cpu::add_forward(dst, n, dst, n, src, n, 1, n);
  }
  // logits[M, E] (F) = in · wᵀ (the router's GEMM, accumulated and stored in F).
  static void router_logits_forward(const Ctx&, F* logits, const Act* in, idx_t in_ld, const Weight* w, idx_t M,
                                    idx_t E, idx_t Din) {
    cpu::matmul_forward(logits, E, in, in_ld, w, (const T*)nullptr, M, E, Din);
  }
  // din += dlogits · w; dw += dlogitsᵀ · in. `scratch` ([M, E] Act) holds dlogits as a GEMM
  // operand where Act differs from F (unused here).
  static void router_logits_backward(const Ctx&, Act* din, idx_t din_ld, Param* dw, const F* dlogits, Act*,
                                     const Act* in, idx_t in_ld, const Weight* w, idx_t M, idx_t E, idx_t Din) {
    cpu::matmul_backward(din, din_ld, dw, (T*)nullptr, dlogits, E, in, in_ld, w, M, E, Din, /*din_accumulate=*/true);
  }
  static void router_topk_forward(const Ctx&, F* probs, int32_t* idx, F* w, const F* logits, idx_t M, idx_t E,
                                  idx_t K, bool normalize) {
    cpu::router_topk_forward(probs, idx, w, logits, M, E, K, normalize);
  }
  static void router_topk_backward(const Ctx&, F* dlogits, const F* dw, const F* dprobs, const F* probs,
                                   const int32_t* idx, const F* w, idx_t M, idx_t E, idx_t K, bool normalize) {
    cpu::router_topk_backward(dlogits, dw, dprobs, probs, idx, w, M, E, K, normalize);
  }
  // *loss += L_aux (and load[E] = f_i); *loss += L_z.
  static void router_aux_loss_forward(const Ctx&, double* loss, double* load, const F* probs, const int32_t* idx,
                                      idx_t M, idx_t E, idx_t K, double coef) {
    *loss += cpu::router_aux_loss_forward(load, probs, idx, M, E, K, coef);
  }
  static void router_aux_loss_backward(const Ctx&, F* dprobs, double dloss, const int32_t* idx, idx_t M, idx_t E,
                                       idx_t K, double coef) {
    cpu::router_aux_loss_backward(dprobs, dloss, idx, M, E, K, coef);
  }
  static void router_z_loss_forward(const Ctx&, double* loss, const F* logits, idx_t M, idx_t E, double coef) {
    *loss += cpu::router_z_loss_forward(logits, M, E, coef);
  }
  static void router_z_loss_backward(const Ctx&, F* dlogits, double dloss, const F* logits, idx_t M, idx_t E,
                                     double coef) {
    cpu::router_z_loss_backward(dlogits, dloss, logits, M, E, coef);
  }
  static void moe_permute_plan(const Ctx&, int32_t* offsets, int32_t* row_of_slot, const int32_t* idx, idx_t M,
                               idx_t E, idx_t K) {
    cpu::moe_permute_plan(offsets, row_of_slot, idx, M, E, K);
  }
  static void moe_permute_plan_stacked(const Ctx&, int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E,
                                       idx_t K) {
    cpu::moe_permute_plan_stacked(row_of_slot, idx, M, E, K);
  }
  static void moe_permute_forward(const Ctx&, Act* out, idx_t out_ld, const Act* in, idx_t in_ld,
                                  const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
    cpu::moe_permute_forward(out, out_ld, in, in_ld, row_of_slot, M, K, X);
  }
  static void moe_permute_backward(const Ctx&, Act* din, idx_t din_ld, const Act* dout, idx_t dout_ld,
                                   const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, bool accumulate) {
    cpu::moe_permute_backward(din, din_ld, dout, dout_ld, row_of_slot, M, K, X, accumulate);
  }
  static void moe_unpermute_forward(const Ctx&, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const F* w,
                                    const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
    cpu::moe_unpermute_forward(out, out_ld, in, in_ld, w, row_of_slot, M, K, X);
  }
  static void moe_unpermute_backward(const Ctx&, Act* din, idx_t din_ld, F* dw, const Act* dout, idx_t dout_ld,
                                     const Act* in, idx_t in_ld, const F* w, const int32_t* row_of_slot, idx_t M,
                                     idx_t K, idx_t X, bool dw_accumulate) {
    cpu::moe_unpermute_backward(din, din_ld, dw, dout, dout_ld, in, in_ld, w, row_of_slot, M, K, X, dw_accumulate);
  }
  // `rows` = offsets[E] (M·K), known to the caller (the CUDA twin picks its kernel by it);
  // known_offsets: a host copy of the offsets when the caller has one (offsets_on_host).
  // With an expert group in the context, across its ranks (a collective).
  static void grouped_matmul_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const Weight* w,
                                     idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t,
                                     const int32_t*) {
    if (experts_exchanged(c))
      return dist::expert_parallel_grouped_matmul_forward(*c.experts, out, out_ld, in, in_ld, w, w_stride, offsets, E,
                                                          N, Kd);
    cpu::grouped_matmul_forward(out, out_ld, in, in_ld, w, w_stride, offsets, E, N, Kd);
  }
  static void grouped_matmul_backward(const Ctx& c, Act* din, idx_t din_ld, Param* dw, const Act* dout, idx_t dout_ld,
                                      const Act* in, idx_t in_ld, const Weight* w, idx_t w_stride,
                                      const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, bool din_accumulate,
                                      const int32_t*) {
    if (experts_exchanged(c))
      return dist::expert_parallel_grouped_matmul_backward(*c.experts, din, din_ld, dw, dout, dout_ld, in, in_ld, w,
                                                           w_stride, offsets, E, N, Kd, din_accumulate);
    cpu::grouped_matmul_backward(din, din_ld, dw, dout, dout_ld, in, in_ld, w, w_stride, offsets, E, N, Kd,
                                 din_accumulate);
  }
  // Decode form of an expertised linear (ops/routed_gemv.h): no plan, no grouped rows.
  static void routed_gemv_forward(const Ctx&, Act* lo, idx_t lo_ld, const F* c_lo, Act* hi, idx_t hi_ld,
                                  const F* c_hi, idx_t split, const Act* in, idx_t in_ld, const Weight* w,
                                  idx_t w_stride, const int32_t* idx, idx_t M, idx_t K, idx_t N, idx_t Kd) {
    cpu::routed_gemv_forward(lo, lo_ld, c_lo, hi, hi_ld, c_hi, split, in, in_ld, w, w_stride, idx, M, K, N, Kd);
  }
  // The plan's offsets on the host: here they already are.
  static const int32_t* offsets_on_host(const Ctx&, int32_t*, const int32_t* offsets, idx_t, idx_t) { return offsets; }
  static void expert_conv_forward(const Ctx&, Act* out, idx_t out_ld, Act* pre, Act* state_out, Act* work,
                                  const Act* x, idx_t x_ld, const Act* state_in, const int32_t* idx, const Param* w,
                                  const Param* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K) {
    cpu::expert_conv1d_forward(out, out_ld, pre, state_out, work, x, x_ld, state_in, idx, w, bias, B, T_, Di, Kc, E,
                               K);
  }
  static void expert_conv_backward(const Ctx&, Act* dx, idx_t dx_ld, Param* dw, Param* dbias, Act* dpre_work,
                                   Act* dx_work, const Act* dout, idx_t dout_ld, const Act* x, idx_t x_ld,
                                   const Act* state_in, const Act* pre, const int32_t* idx, const Param* w,
                                   const Param* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K) {
    cpu::expert_conv1d_backward(dx, dx_ld, dw, dbias, dpre_work, dx_work, dout, dout_ld, x, x_ld, state_in, pre, idx,
                                w, bias, B, T_, Di, Kc, E, K);
  }
  // out = silu(a) ⊙ b (ops/swiglu.h: the SwiGLU feed-forward gate); backward assigns da, db.
  static void swiglu_forward(const Ctx&, Act* out, idx_t out_ld, const Act* a, idx_t a_ld, const Act* b, idx_t b_ld,
                             idx_t M, idx_t X) {
    cpu::swiglu_forward(out, out_ld, a, a_ld, b, b_ld, M, X);
  }
  static void swiglu_backward(const Ctx&, Act* da, idx_t da_ld, Act* db, idx_t db_ld, const Act* dout, idx_t dout_ld,
                              const Act* a, idx_t a_ld, const Act* b, idx_t b_ld, idx_t M, idx_t X) {
    cpu::swiglu_backward(da, da_ld, db, db_ld, dout, dout_ld, a, a_ld, b, b_ld, M, X);
  }
  static void delta_softplus_forward(const Ctx&, Act* out, const Act* x, const Param* bias, idx_t M, idx_t Di) {
    cpu::delta_softplus_forward(out, x, bias, M, Di);
  }
  static void delta_softplus_backward(const Ctx&, Act* dx, Param* dbias, const Act* dout, const Act* x,
                                      const Param* bias, idx_t M, idx_t Di) {
    cpu::delta_softplus_backward(dx, dbias, dout, x, bias, M, Di);
  }
  // ---- attention (ops/rope.h, attention.h, kv_cache.h) ----
  static void rope_forward(const Ctx&, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const F* pos0, idx_t B,
                           idx_t T_, idx_t nh, idx_t hd, double theta) {
    cpu::rope_forward(out, out_ld, in, in_ld, pos0, B, T_, nh, hd, theta);
  }
  static void rope_backward(const Ctx&, Act* din, idx_t din_ld, const Act* dout, idx_t dout_ld, const F* pos0,
                            idx_t B, idx_t T_, idx_t nh, idx_t hd, double theta) {
    cpu::rope_backward(din, din_ld, dout, dout_ld, pos0, B, T_, nh, hd, theta);
  }
  static void attention_forward(const Ctx&, Act* out, idx_t out_ld, F* lse, const AttnParams& p) {
    cpu::attention_forward(out, out_ld, lse, p);
  }
  static void attention_backward(const Ctx&, Act* dq, idx_t dq_ld, Act* dk, idx_t dk_ld, Act* dv, idx_t dv_ld,
                                 F* delta, const Act* dout, idx_t dout_ld, const Act* out, idx_t out_ld,
                                 const F* lse, const AttnParams& p) {
    cpu::attention_backward(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, out, out_ld, lse, p);
  }
  static void kv_cache_append(const Ctx&, Act* k_cache, Act* v_cache, F* pos0, const Act* k, idx_t k_ld,
                              const Act* v, idx_t v_ld, idx_t B, idx_t T_, idx_t C, idx_t Hkv, idx_t hd) {
    cpu::kv_cache_append(k_cache, v_cache, pos0, k, k_ld, v, v_ld, B, T_, C, Hkv, hd);
  }
  // ---- optimiser ----
  // *out = Σ g² (in double, fixed order).
  static void grad_norm_squared(const Ctx&, double* out, const Param* g, idx_t n) { *out = cpu::grad_norm_squared(g, n); }
  // One AdamW step over n elements (gradients scaled by grad_scale); `gemm` is the GEMM copy to
  // refresh (the master itself on the CPU).
  static void adamw_update(const Ctx&, Param* p, Weight*, Param* m, Param* v, const Param* g, idx_t n, double lr,
                           double beta1, double beta2, double eps, double weight_decay, int64_t step,
                           double grad_scale) {
    cpu::adamw_update(p, m, v, g, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale);
  }
  // Logits [n elements] as fp32 on the host.
  static void logits_to_host(const Ctx&, float* host, const Act* logits, F*, idx_t n) {
    for (idx_t i = 0; i < n; ++i) host[i] = float(logits[i]);
  }
};

}  // namespace moessm
