// CudaBackend<Act>: the CUDA side of the backend contract (docs/design.md, "Backends"), built
// only with MOESSM_CUDA. Every op forwards to its twin in moessm::cuda (src/ops/cuda) on the
// context's stream; nothing here synchronises except to_host / logits_to_host.
//
// Element types (mamba_ssm's precision policy):
//   Act    activations between ops          __nv_bfloat16 (training, decode) or float (reference)
//   Weight GEMM operand copy of the weights  Act: a bf16 copy of the master buffer, refreshed by
//                                            refresh_weights and the fused AdamW; for Act = float
//                                            the master buffer itself
//   Param  master weights and gradients      float
//   F      residual, norm statistics, scan   float
//          state, A, losses
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/device_arena.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
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

template <> constexpr DType dtype_of<__nv_bfloat16>() { return DType::BF16; }

template <typename ActT>
struct CudaBackend {
  static_assert(std::is_same_v<ActT, float> || std::is_same_v<ActT, __nv_bfloat16>, "Act: float or bf16");
  using Act = ActT;
  using Weight = ActT;
  using Param = float;
  using F = float;
  using Arena = DeviceArena;
  struct Ctx {
    cudaStream_t stream = nullptr;
  };
  using ScanParams = cuda::ScanParamsT<Act>;
  using ScanGrads = cuda::ScanGradsT<Act>;
  using AttnParams = moessm::AttentionParams<Act, float>;
  static constexpr bool kOnDevice = true;
  static constexpr bool kActIsF32 = std::is_same_v<Act, float>;
  static constexpr const char* kName = kActIsF32 ? "cuda (f32)" : "cuda (bf16 activations, fp32 master weights)";
  static constexpr const char* kDevice = "cuda";
  static constexpr idx_t kHeadChunkRows = 4096;

  template <typename U> using Buffer = DeviceVector<U>;
  template <typename U> static void alloc(Buffer<U>& b, size_t n) { b.resize(n); }
  // Selects `device` and creates the stream every op of this model runs on (a clear error when
  // there is no usable GPU).
  static Ctx make_ctx(int device);
  static void destroy_ctx(Ctx& c);
  static std::string describe(const Ctx& c);  // "cuda (NVIDIA H200, bf16 activations, ...)"
  static bool experts_exchanged(const Ctx&) { return false; }  // no expert parallelism on CUDA yet

  // ---- memory ----
  template <typename U> static void zero(const Ctx& c, U* p, idx_t n) {
    if (n > 0) CUDA_CHECK(cudaMemsetAsync(p, 0, size_t(n) * sizeof(U), c.stream));
  }
  template <typename U> static void copy(const Ctx& c, U* dst, const U* src, idx_t n) {
    if (n > 0 && dst != src)
      CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * sizeof(U), cudaMemcpyDeviceToDevice, c.stream));
  }
  template <typename U> static void to_host(const Ctx& c, U* host, const U* mem, idx_t n) {
    if (n > 0) CUDA_CHECK(cudaMemcpyAsync(host, mem, size_t(n) * sizeof(U), cudaMemcpyDeviceToHost, c.stream));
    CUDA_CHECK(cudaStreamSynchronize(c.stream));
  }
  template <typename U> static void from_host(const Ctx& c, U* mem, const U* host, idx_t n) {
    if (n > 0) CUDA_CHECK(cudaMemcpyAsync(mem, host, size_t(n) * sizeof(U), cudaMemcpyHostToDevice, c.stream));
    CUDA_CHECK(cudaStreamSynchronize(c.stream));  // the host buffer may be reused at once
  }
  static void sync(const Ctx& c) { CUDA_CHECK(cudaStreamSynchronize(c.stream)); }
  static void f_to_act(const Ctx& c, Act* out, const F* in, idx_t n) {
    if constexpr (kActIsF32) copy(c, out, in, n);
    else cuda::convert_f32_to_bf16(out, in, n, c.stream);
  }
  static void refresh_weights(const Ctx& c, Weight* gemm, const Param* master, idx_t n) {
    if constexpr (!kActIsF32) cuda::convert_f32_to_bf16(gemm, master, n, c.stream);
  }

  // ---- ops ----
  static void matmul_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const Weight* w,
                             idx_t M, idx_t N, idx_t K, bool accumulate = false) {
    cuda::matmul_forward<Act>(out, out_ld, in, in_ld, w, nullptr, M, N, K, accumulate, c.stream);
  }
  static void matmul_backward(const Ctx& c, Act* din, idx_t din_ld, Param* dw, const Act* dout, idx_t dout_ld,
                              const Act* in, idx_t in_ld, const Weight* w, idx_t M, idx_t N, idx_t K,
                              bool din_accumulate = false) {
    cuda::matmul_backward<Act>(din, din_ld, dw, nullptr, dout, dout_ld, in, in_ld, w, M, N, K, din_accumulate,
                               c.stream);
  }
  static void conv_forward(const Ctx& c, Act* out, idx_t out_ld, Act* state_out, const Act* x, idx_t x_ld,
                           const Act* state_in, const int32_t* seq_idx, const Param* w, const Param* bias, idx_t B,
                           idx_t T_, idx_t Di, idx_t Kc, bool silu) {
    cuda::causal_conv1d_forward<Act>(out, out_ld, state_out, x, x_ld, state_in, seq_idx, w, bias, B, T_, Di, Kc,
                                     silu, c.stream);
  }
  static void conv_backward(const Ctx& c, Act* dx, idx_t dx_ld, Param* dw, Param* dbias, const Act* dout,
                            idx_t dout_ld, const Act* x, idx_t x_ld, const Act* state_in, const int32_t* seq_idx,
                            const Param* w, const Param* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, bool silu) {
    cuda::causal_conv1d_backward<Act>(dx, dx_ld, dw, dbias, dout, dout_ld, x, x_ld, state_in, seq_idx, w, bias, B,
                                      T_, Di, Kc, silu, c.stream);
  }
  static void ssm_a_forward(const Ctx& c, F* A, const Param* A_log, idx_t n) { cuda::ssm_a_forward(A, A_log, n, c.stream); }
  static void ssm_a_backward(const Ctx& c, Param* dA_log, const F* dA, const F* A, idx_t n) {
    cuda::ssm_a_backward(dA_log, dA, A, n, c.stream);
  }
  // Packed documents: the conv and scan kernels both take seq_idx (ops/op_common.h's rule).
  static void scan_forward(const Ctx& c, const ScanParams& p) { cuda::selective_scan_forward<Act>(p, c.stream); }
  static void scan_backward(const Ctx& c, const ScanGrads& g, const ScanParams& p) {
    cuda::selective_scan_backward<Act>(g, p, c.stream);
  }
  static void set_delta_saved(ScanParams&, Act*) {}  // the CUDA backward recomputes Δ
  static constexpr bool kScanSavesDelta = false;

  static void embedding_forward(const Ctx& c, F* out, const int32_t* ids, const Param* table, idx_t rows, idx_t V,
                                idx_t D) {
    cuda::embedding_forward(out, ids, table, rows, V, D, c.stream);
  }
  static void embedding_backward(const Ctx& c, Param* dtable, const F* dout, const int32_t* ids, idx_t rows,
                                 idx_t V, idx_t D) {
    cuda::embedding_backward(dtable, dout, ids, rows, V, D, c.stream);
  }
  static void rmsnorm_forward(const Ctx& c, Act* out, F* rstd, const F* x, const Param* w, idx_t rows, idx_t D,
                              double eps) {
    cuda::rmsnorm_forward<Act>(out, rstd, x, w, rows, D, eps, c.stream);
  }
  static void rmsnorm_add_forward(const Ctx& c, Act* out, F* rstd, F* residual, const Act* delta, const Param* w,
                                  idx_t rows, idx_t D, double eps) {
    cuda::rmsnorm_add_forward<Act>(out, rstd, residual, delta, w, rows, D, eps, c.stream);
  }
  static void rmsnorm_backward(const Ctx& c, F* dx, Param* dw, const Act* dout, const F* x, const Param* w,
                               const F* rstd, idx_t rows, idx_t D, bool dx_accumulate) {
    cuda::rmsnorm_backward<Act>(dx, dw, dout, x, w, rstd, rows, D, dx_accumulate, c.stream);
  }
  static void cross_entropy_forward(const Ctx& c, F* loss, F* lse, const Act* logits, const int32_t* targets,
                                    idx_t rows, idx_t V) {
    cuda::cross_entropy_forward<Act>(loss, lse, logits, targets, rows, V, c.stream);
  }
  static void cross_entropy_forward_backward(const Ctx& c, F* loss, F* lse, Act* dlogits, const Act* logits,
                                             const int32_t* targets, double dloss_scale, idx_t rows, idx_t V,
                                             F*) {
    cuda::cross_entropy_forward_backward<Act>(loss, lse, dlogits, logits, targets, float(dloss_scale), rows, V,
                                              c.stream);
  }
  static void sum_to(const Ctx& c, double* out, const F* x, idx_t n) { cuda::sum(out, x, n, c.stream); }
  // ---- elementwise and MoE ops (the CPU backend's list, same arguments) ----
  static void add_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* a, idx_t a_ld, const Act* b, idx_t b_ld,
                          idx_t M, idx_t X) {
    cuda::add_forward<Act>(out, out_ld, a, a_ld, b, b_ld, M, X, c.stream);
  }
  static void fill_rows(const Ctx& c, Act* out, idx_t out_ld, Act value, idx_t M, idx_t X) {
    cuda::fill<Act>(out, out_ld, value, M, X, c.stream);
  }
  static void add_scalars(const Ctx& c, double* dst, const double* src, idx_t n) {
    cuda::add_forward<double>(dst, n, dst, n, src, n, 1, n, c.stream);
  }
  // The router GEMM: Act operands (the bf16 copy of the router weight), fp32 accumulation and
  // fp32 logits.
  static void router_logits_forward(const Ctx& c, F* logits, const Act* in, idx_t in_ld, const Weight* w, idx_t M,
                                    idx_t E, idx_t Din) {
    cuda::gemm<Act, float>(false, true, M, E, Din, 1.f, in, in_ld, w, Din, 0.f, logits, E, c.stream);
  }
  // dlogits is rounded to Act in `scratch` [M, E] to be a GEMM operand (bf16 only).
  static void router_logits_backward(const Ctx& c, Act* din, idx_t din_ld, Param* dw, const F* dlogits, Act* scratch,
                                     const Act* in, idx_t in_ld, const Weight* w, idx_t M, idx_t E, idx_t Din) {
    const Act* g = nullptr;
    if constexpr (kActIsF32) {
      g = dlogits;
    } else {
      cuda::convert_f32_to_bf16(scratch, dlogits, M * E, c.stream);
      g = scratch;
    }
    cuda::matmul_backward<Act>(din, din_ld, dw, nullptr, g, E, in, in_ld, w, M, E, Din, /*din_accumulate=*/true,
                               c.stream);
  }
  static void router_topk_forward(const Ctx& c, F* probs, int32_t* idx, F* w, const F* logits, idx_t M, idx_t E,
                                  idx_t K, bool normalize) {
    cuda::router_topk_forward(probs, idx, w, logits, M, E, K, normalize, c.stream);
  }
  static void router_topk_backward(const Ctx& c, F* dlogits, const F* dw, const F* dprobs, const F* probs,
                                   const int32_t* idx, const F* w, idx_t M, idx_t E, idx_t K, bool normalize) {
    cuda::router_topk_backward(dlogits, dw, dprobs, probs, idx, w, M, E, K, normalize, c.stream);
  }
  static void router_aux_loss_forward(const Ctx& c, double* loss, double* load, const F* probs, const int32_t* idx,
                                      idx_t M, idx_t E, idx_t K, double coef) {
    cuda::router_aux_loss_forward(loss, load, probs, idx, M, E, K, coef, c.stream);
  }
  static void router_aux_loss_backward(const Ctx& c, F* dprobs, double dloss, const int32_t* idx, idx_t M, idx_t E,
                                       idx_t K, double coef) {
    cuda::router_aux_loss_backward(dprobs, dloss, idx, M, E, K, coef, c.stream);
  }
  static void router_z_loss_forward(const Ctx& c, double* loss, const F* logits, idx_t M, idx_t E, double coef) {
    cuda::router_z_loss_forward(loss, logits, M, E, coef, c.stream);
  }
  static void router_z_loss_backward(const Ctx& c, F* dlogits, double dloss, const F* logits, idx_t M, idx_t E,
                                     double coef) {
    cuda::router_z_loss_backward(dlogits, dloss, logits, M, E, coef, c.stream);
  }
  static void moe_permute_plan(const Ctx& c, int32_t* offsets, int32_t* row_of_slot, const int32_t* idx, idx_t M,
                               idx_t E, idx_t K) {
    cuda::moe_permute_plan(offsets, row_of_slot, idx, M, E, K, c.stream);
  }
  static void moe_permute_plan_stacked(const Ctx& c, int32_t* row_of_slot, const int32_t* idx, idx_t M, idx_t E,
                                       idx_t K) {
    cuda::moe_permute_plan_stacked(row_of_slot, idx, M, E, K, c.stream);
  }
  static void moe_permute_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* in, idx_t in_ld,
                                  const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
    cuda::moe_permute_forward<Act>(out, out_ld, in, in_ld, row_of_slot, M, K, X, c.stream);
  }
  static void moe_permute_backward(const Ctx& c, Act* din, idx_t din_ld, const Act* dout, idx_t dout_ld,
                                   const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X, bool accumulate) {
    cuda::moe_permute_backward<Act>(din, din_ld, dout, dout_ld, row_of_slot, M, K, X, accumulate, c.stream);
  }
  static void moe_unpermute_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const F* w,
                                    const int32_t* row_of_slot, idx_t M, idx_t K, idx_t X) {
    cuda::moe_unpermute_forward<Act>(out, out_ld, in, in_ld, w, row_of_slot, M, K, X, c.stream);
  }
  static void moe_unpermute_backward(const Ctx& c, Act* din, idx_t din_ld, F* dw, const Act* dout, idx_t dout_ld,
                                     const Act* in, idx_t in_ld, const F* w, const int32_t* row_of_slot, idx_t M,
                                     idx_t K, idx_t X, bool dw_accumulate) {
    cuda::moe_unpermute_backward<Act>(din, din_ld, dw, dout, dout_ld, in, in_ld, w, row_of_slot, M, K, X,
                                      dw_accumulate, c.stream);
  }
  static void grouped_matmul_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const Weight* w,
                                     idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows,
                                     const int32_t* known_offsets) {
    cuda::grouped_matmul_forward<Act>(out, out_ld, in, in_ld, w, w_stride, offsets, E, N, Kd, rows, known_offsets,
                                      c.stream);
  }
  static void routed_gemv_forward(const Ctx& c, Act* lo, idx_t lo_ld, const F* c_lo, Act* hi, idx_t hi_ld,
                                  const F* c_hi, idx_t split, const Act* in, idx_t in_ld, const Weight* w,
                                  idx_t w_stride, const int32_t* idx, idx_t M, idx_t K, idx_t N, idx_t Kd) {
    cuda::routed_gemv_forward<Act>(lo, lo_ld, c_lo, hi, hi_ld, c_hi, split, in, in_ld, w, w_stride, idx, M, K, N, Kd,
                                   c.stream);
  }
  static void grouped_matmul_backward(const Ctx& c, Act* din, idx_t din_ld, Param* dw, const Act* dout, idx_t dout_ld,
                                      const Act* in, idx_t in_ld, const Weight* w, idx_t w_stride,
                                      const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, bool din_accumulate,
                                      const int32_t* known_offsets) {
    cuda::grouped_matmul_backward<Act>(din, din_ld, dw, dout, dout_ld, in, in_ld, w, w_stride, offsets, E, N, Kd,
                                       din_accumulate, known_offsets, c.stream);
  }
  // The plan's offsets [E+1] on the host for the grouped GEMMs of one layer, copied once per
  // routing (one stream sync per router forward instead of one per grouped GEMM); nullptr when
  // the forward's GEMMs take the device GEMV path (rows <= kGroupedGemvMaxRows: decoding, which
  // must not synchronise), in which case a backward copies them itself.
  static const int32_t* offsets_on_host(const Ctx& c, int32_t* host, const int32_t* offsets, idx_t E, idx_t rows) {
    if (rows <= kGroupedGemvMaxRows) return nullptr;
    to_host(c, host, offsets, E + 1);
    return host;
  }
  static void expert_conv_forward(const Ctx& c, Act* out, idx_t out_ld, Act* pre, Act* state_out, Act* work,
                                  const Act* x, idx_t x_ld, const Act* state_in, const int32_t* idx, const Param* w,
                                  const Param* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K) {
    cuda::expert_conv1d_forward<Act>(out, out_ld, pre, state_out, work, x, x_ld, state_in, idx, w, bias, B, T_, Di, Kc,
                                     E, K, c.stream);
  }
  static void expert_conv_backward(const Ctx& c, Act* dx, idx_t dx_ld, Param* dw, Param* dbias, Act* dpre_work,
                                   Act* dx_work, const Act* dout, idx_t dout_ld, const Act* x, idx_t x_ld,
                                   const Act* state_in, const Act* pre, const int32_t* idx, const Param* w,
                                   const Param* bias, idx_t B, idx_t T_, idx_t Di, idx_t Kc, idx_t E, idx_t K) {
    cuda::expert_conv1d_backward<Act>(dx, dx_ld, dw, dbias, dpre_work, dx_work, dout, dout_ld, x, x_ld, state_in, pre,
                                      idx, w, bias, B, T_, Di, Kc, E, K, c.stream);
  }
  static void swiglu_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* a, idx_t a_ld, const Act* b,
                             idx_t b_ld, idx_t M, idx_t X) {
    cuda::swiglu_forward<Act>(out, out_ld, a, a_ld, b, b_ld, M, X, c.stream);
  }
  static void swiglu_backward(const Ctx& c, Act* da, idx_t da_ld, Act* db, idx_t db_ld, const Act* dout,
                              idx_t dout_ld, const Act* a, idx_t a_ld, const Act* b, idx_t b_ld, idx_t M, idx_t X) {
    cuda::swiglu_backward<Act>(da, da_ld, db, db_ld, dout, dout_ld, a, a_ld, b, b_ld, M, X, c.stream);
  }
  static void delta_softplus_forward(const Ctx& c, Act* out, const Act* x, const Param* bias, idx_t M, idx_t Di) {
    cuda::delta_softplus_forward<Act>(out, x, bias, M, Di, c.stream);
  }
  static void delta_softplus_backward(const Ctx& c, Act* dx, Param* dbias, const Act* dout, const Act* x,
                                      const Param* bias, idx_t M, idx_t Di) {
    cuda::delta_softplus_backward<Act>(dx, dbias, dout, x, bias, M, Di, c.stream);
  }
  // ---- attention (ops/rope.h, attention.h, kv_cache.h) ----
  static void rope_forward(const Ctx& c, Act* out, idx_t out_ld, const Act* in, idx_t in_ld, const F* pos0, idx_t B,
                           idx_t T_, idx_t nh, idx_t hd, double theta) {
    cuda::rope_forward<Act>(out, out_ld, in, in_ld, pos0, B, T_, nh, hd, theta, c.stream);
  }
  static void rope_backward(const Ctx& c, Act* din, idx_t din_ld, const Act* dout, idx_t dout_ld, const F* pos0,
                            idx_t B, idx_t T_, idx_t nh, idx_t hd, double theta) {
    cuda::rope_backward<Act>(din, din_ld, dout, dout_ld, pos0, B, T_, nh, hd, theta, c.stream);
  }
  static void attention_forward(const Ctx& c, Act* out, idx_t out_ld, F* lse, const AttnParams& p) {
    cuda::attention_forward<Act>(out, out_ld, lse, p, c.stream);
  }
  static void attention_backward(const Ctx& c, Act* dq, idx_t dq_ld, Act* dk, idx_t dk_ld, Act* dv, idx_t dv_ld,
                                 F* delta, const Act* dout, idx_t dout_ld, const Act* out, idx_t out_ld,
                                 const F* lse, const AttnParams& p) {
    cuda::attention_backward<Act>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, out, out_ld, lse, p,
                                  c.stream);
  }
  static void kv_cache_append(const Ctx& c, Act* k_cache, Act* v_cache, F* pos0, const Act* k, idx_t k_ld,
                              const Act* v, idx_t v_ld, idx_t B, idx_t T_, idx_t C, idx_t Hkv, idx_t hd) {
    cuda::kv_cache_append<Act>(k_cache, v_cache, pos0, k, k_ld, v, v_ld, B, T_, C, Hkv, hd, c.stream);
  }
  // ---- optimiser ----
  static void grad_norm_squared(const Ctx& c, double* out, const Param* g, idx_t n) {
    cuda::grad_norm_squared(out, g, n, c.stream);
  }
  // The fused AdamW also refreshes the bf16 GEMM copy (for Act = float there is none).
  static void adamw_update(const Ctx& c, Param* p, Weight* gemm, Param* m, Param* v, const Param* g, idx_t n,
                           double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                           double grad_scale) {
    if constexpr (kActIsF32)
      cuda::adamw_update(p, m, v, g, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale, c.stream);
    else
      cuda::adamw_update(p, gemm, m, v, g, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale, nullptr, c.stream);
  }
  // Logits [n elements] as fp32 on the host; `staging` holds n F elements (bf16 only).
  static void logits_to_host(const Ctx& c, float* host, const Act* logits, F* staging, idx_t n) {
    if constexpr (kActIsF32) {
      to_host(c, host, logits, n);
    } else {
      cuda::convert_bf16_to_f32(staging, logits, n, c.stream);
      to_host(c, host, staging, n);
    }
  }
};

}  // namespace moessm
