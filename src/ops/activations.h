// Elementwise activations: silu(v) = v·σ(v); softplus(v) = log1p(exp(v)), and v when v > 20
// (PyTorch's threshold). Scalar helpers are shared by the ops that fuse them (conv1d, scan).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/op_common.h"

namespace moessm {

// exp for the scan's inner loops. double: std::exp (the reference used by finite-difference
// tests). float: a branch-free Cody-Waite reduction + degree-6 polynomial (max relative error
// ~2e-7, about 2 ulp) that compilers vectorise, unlike libm's expf. Inputs below -87 give the
// smallest normal float's neighbourhood instead of denormals (the scan only uses exp(Δ·A) <= 1).
// NaN in gives NaN out (through r and p), and every step is defined for every input: the
// integer k = round(x / ln 2) is read from the bits of t = x·log2(e) + 1.5·2^23 (for clamped
// finite x, t is an integer in [2^23, 2^24), where bits(t) - bits(1.5·2^23) = t - 1.5·2^23
// exactly) instead of converting a float to int32 (undefined for NaN), and the exponent is built
// with unsigned arithmetic (a left shift of a negative value was undefined). The float
// expressions are the ones used before, so finite results are bit-identical, fused into callers
// too (checked on whole-model logits and gradients, and in tests/test_ops_cpu.cpp).
inline double exp_fast(double x) { return std::exp(x); }
inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504f + 12582912.0f;
  const float k = t - 12582912.0f;                              // round(x / ln 2)
  const float r = (x - k * 0.693145752f) - k * 1.42860677e-6f;  // two-part ln 2
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const uint32_t bits = (tb - 0x4B400000u + 127u) << 23;  // (k + 127) << 23; 0x4B400000 = bits(1.5·2^23)
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <typename T> inline T sigmoid_of(T v) { return T(1) / (T(1) + exp_fast(-v)); }
template <typename T> inline T silu_of(T v) { return v * sigmoid_of(v); }
template <typename T> inline T silu_grad_of(T v) {  // d silu / dv
  T s = sigmoid_of(v);
  return s * (T(1) + v * (T(1) - s));
}
constexpr double kSoftplusThreshold = 20.0;
template <typename T> inline T softplus_of(T v) {
  return v > T(kSoftplusThreshold) ? v : std::log1p(std::exp(v));
}
template <typename T> inline T softplus_grad_of(T v) {  // d softplus / dv
  return v > T(kSoftplusThreshold) ? T(1) : sigmoid_of(v);
}

namespace cpu {
template <typename T> void silu_forward(T* out, const T* x, idx_t n);
template <typename T> void silu_backward(T* dx, const T* dout, const T* x, idx_t n);
template <typename T> void softplus_forward(T* out, const T* x, idx_t n);
template <typename T> void softplus_backward(T* dx, const T* dout, const T* x, idx_t n);
}  // namespace cpu

}  // namespace moessm
