// rope: rotary position embedding (RoFormer; Llama's "rotate half" layout), applied to the
// heads of q or k in place or out of place, for the `attention` layer (docs/hybrid.md).
//   For head vector x[hd] of the token at position p (hd even, half = hd/2, i < half):
//     f_i = theta^(-2i/hd),  a = p · f_i
//     out[i]        = x[i] · cos a − x[i+half] · sin a
//     out[i+half]   = x[i+half] · cos a + x[i] · sin a
//   backward (the transposed rotation, assign):
//     din[i]        = dout[i] · cos a + dout[i+half] · sin a
//     din[i+half]   = dout[i+half] · cos a − dout[i] · sin a
// Shapes: [B, T, nh, hd] token-major with token stride *_ld (>= nh·hd; heads contiguous), so the
// q and k column blocks of one fused [B, T, (H+2Hkv)·hd] projection are rotated in place.
// Position of token (b, t): pos0[b] + t, where pos0 [B] is a per-sequence start position held in
// an F stream (the attention layer's state; nullptr = 0 for every sequence). A stored position
// x is read as the integer floor(x + 0.5) when x >= 0.5, else 0 (decode_rope_position), on every
// device, so a random or zero state means position 0. Angles are formed in double on every
// device (positions up to 2^24 keep full precision). out may alias in (each pair is read before
// it is written). Element order never matters (no reduction): results are bitwise repeatable.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/op_common.h"

namespace moessm {

// The integer position a stored position value stands for (see above).
inline int64_t decode_rope_position(double x) { return x >= 0.5 ? int64_t(std::floor(x + 0.5)) : 0; }
// Positions are exact in the fp32 state up to 2^24; the attention layer bounds them there.
constexpr int64_t kMaxRopePosition = int64_t(1) << 24;
constexpr double kDefaultRopeTheta = 10000.0;

namespace cpu {
template <typename T>
void rope_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* pos0, idx_t B, idx_t T_, idx_t nh,
                  idx_t hd, double theta);
template <typename T>
void rope_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const T* pos0, idx_t B, idx_t T_, idx_t nh,
                   idx_t hd, double theta);
}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
// CUDA twin (src/ops/cuda/rope.cu), same contract, T = float or __nv_bfloat16, pos0 fp32 (the
// CUDA backend's F): one thread per rotated pair, values in fp32, angles in double, rounded to T
// once. Graph-capturable, no workspace, no atomics.
namespace moessm::cuda {
template <typename T>
void rope_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const float* pos0, idx_t B, idx_t T_, idx_t nh,
                  idx_t hd, double theta, cudaStream_t stream);
template <typename T>
void rope_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const float* pos0, idx_t B, idx_t T_,
                   idx_t nh, idx_t hd, double theta, cudaStream_t stream);
}  // namespace moessm::cuda
#endif
