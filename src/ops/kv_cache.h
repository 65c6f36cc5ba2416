// kv_cache_append: writes the k / v rows of T new tokens into the attention layer's ring-buffer
// KV cache and advances the stored start position (the `attention` layer's decode state,
// docs/hybrid.md). State bookkeeping, not differentiated: there is no backward.
//   P_b = decode_rope_position(pos0[b]) (ops/rope.h); new token t has position P_b + t;
//   positions p in [max(P_b, P_b + T − C), P_b + T) are written to slot p mod C (older new
//   tokens would be overwritten within the same call and are skipped); then pos0[b] = P_b + T.
// Slots of positions P_b + T − C .. P_b − 1 keep what they hold, so after the call the cache
// holds positions P_b + T − C .. P_b + T − 1 (those >= 0).
// Shapes: k_cache, v_cache [B, C, Hkv, hd] contiguous (in place); k, v [B, T, Hkv, hd] with token
// strides k_ld, v_ld; pos0 [B] (F).
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {
template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, T* pos0, const T* k, idx_t k_ld, const T* v, idx_t v_ld, idx_t B,
                     idx_t T_, idx_t C, idx_t Hkv, idx_t hd);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
// CUDA twin (src/ops/cuda/kv_cache.cu): one kernel copies the rows (reading pos0), a second
// advances pos0 (stream order makes the pair race-free). Graph-capturable.
namespace moessm::cuda {
template <typename T>
void kv_cache_append(T* k_cache, T* v_cache, float* pos0, const T* k, idx_t k_ld, const T* v, idx_t v_ld, idx_t B,
                     idx_t T_, idx_t C, idx_t Hkv, idx_t hd, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
