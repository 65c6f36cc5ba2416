// attention: causal multi-head softmax attention with an optional sliding window, grouped-query
// heads and an optional ring-buffer KV cache of earlier positions (the `attention` layer,
// docs/hybrid.md). All positions are absolute: the new tokens of sequence b sit at positions
// P_b + t (t < T), P_b = decode_rope_position(pos0[b]) (ops/rope.h; 0 without pos0).
//
//   query (b, t, h) at position qp = P_b + t, head h reads kv head g = h / (H / Hkv) (GQA)
//   visible keys: positions kp with 0 <= kp <= qp and, with window W > 0, kp > qp − W
//     (token t attends t−W+1 .. t); kp >= P_b comes from the new k / v (row kp − P_b), kp < P_b
//     from the cache slot kp mod C (the cache holds positions P_b − C .. P_b − 1)
//   s_j   = (q · k_j) / sqrt(hd)
//   lse   = log Σ_j exp(s_j)                        saved per (b, h, t) for the backward
//   out   = Σ_j exp(s_j − lse) · v_j
// backward (assign), with delta = Σ_d dout ⊙ out per (b, h, t) (written to the `delta` scratch):
//   p_j = exp(s_j − lse),  dp_j = dout · v_j,  ds_j = p_j (dp_j − delta)
//   dq  = Σ_j ds_j k_j / sqrt(hd);  dk_j = Σ_{queries} ds_j q / sqrt(hd);  dv_j = Σ p_j dout
//   (dk, dv only for the new keys: the cache is a constant input)
//
// Shapes (token-major, heads contiguous, token strides *_ld):
//   q, out, dq, dout [B, T, H, hd];  k, v, dk, dv [B, T, Hkv, hd];  lse, delta [B, H, T] (F)
//   k_cache, v_cache [B, C, Hkv, hd] contiguous (position p of sequence b in slot p mod C)
// Requirements: H % Hkv == 0, hd even is not needed here (rope needs it); every key a query can
// see must be present: with a cache the earliest visible position of the first query,
// max(0, P_b − W + 1) (W > 0) or 0, must be >= P_b − C, i.e. P_b <= C or (W > 0 and C >= W − 1).
// The CPU checks this per sequence (positions are in host memory); the CUDA twin checks
// C >= W − 1 for a window and leaves P_b <= C of full attention to the caller (the layer's
// max_positions(), checked by the decoder on the host).
#pragma once
#include <cmath>

#include "ops/op_common.h"

namespace moessm {

// One plain struct of pointers and sizes shared by forward and backward (STYLE 10).
// Elem: element type of q, k, v and the cache; Pos: the F stream type of pos0.
template <typename Elem, typename Pos>
struct AttentionParams {
  const Elem *q = nullptr, *k = nullptr, *v = nullptr;
  idx_t q_ld = 0, k_ld = 0, v_ld = 0;
  const Elem *k_cache = nullptr, *v_cache = nullptr;  // optional, [B, C, Hkv, hd]
  const Pos* pos0 = nullptr;                          // optional, [B]
  idx_t C = 0;                                     // ring slots (0 without a cache)
  idx_t B = 0, T = 0, H = 0, Hkv = 0, hd = 0;
  idx_t window = 0;  // W; 0 = full causal attention
};

// Keys visible on average per query over a sequence of L tokens (from position 0):
// (1/L) Σ_{t<L} min(t+1, W) (W = 0: t+1). The accounting's attention FLOPs use it.
inline double attention_mean_keys(double L, double W) {
  if (L <= 0) return 0;
  if (W <= 0 || W >= L) return (L + 1) / 2;
  return (W * (W + 1) / 2 + (L - W) * W) / L;
}

namespace cpu {
template <typename T>
void attention_forward(T* out, idx_t out_ld, T* lse, const AttentionParams<T, T>& p);
template <typename T>
void attention_backward(T* dq, idx_t dq_ld, T* dk, idx_t dk_ld, T* dv, idx_t dv_ld, T* delta, const T* dout,
                        idx_t dout_ld, const T* out, idx_t out_ld, const T* lse, const AttentionParams<T, T>& p);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
// CUDA twin (src/ops/cuda/attention.cu), same contract, T = float or __nv_bfloat16, F = fp32
// (lse, delta, pos0). Flash-attention style: tiles of kAttnTile queries × kAttnTile keys in shared
// memory, online softmax in fp32, no T×T matrix in memory. Forward: one block per (b, h, query
// tile). Backward: delta per row, then one pass over query tiles per (b, kv head, key tile)
// for dk / dv (the H/Hkv query heads of the group summed in a fixed order) and one pass over key
// tiles per (b, h, query tile) for dq: no atomics, bitwise repeatable. hd <= kAttnMaxHeadDim
// (a CHECK names larger sizes). bf16 passes without a cache, with hd a multiple of 8 and 16-byte
// aligned rows, run on tensor cores (src/ops/cuda/attention_mma.cu); the rest on scalar FMAs.
namespace moessm::cuda {
constexpr int kAttnTile = 64;
constexpr int kAttnMaxHeadDim = 128;
template <typename T>
void attention_forward(T* out, idx_t out_ld, float* lse, const AttentionParams<T, float>& p, cudaStream_t stream);
template <typename T>
void attention_backward(T* dq, idx_t dq_ld, T* dk, idx_t dk_ld, T* dv, idx_t dv_ld, float* delta, const T* dout,
                        idx_t dout_ld, const T* out, idx_t out_ld, const float* lse,
                        const AttentionParams<T, float>& p, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
