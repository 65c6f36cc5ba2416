// Elementwise activations: silu(v) = v·σ(v); softplus(v) = log1p(exp(v)), and v when v > 20
// (PyTorch's threshold). Scalar helpers are shared by the ops that fuse them (conv1d, scan).
#pragma once
#include <cmath>

#include "ops/op_common.h"

namespace moessm {

template <typename T> inline T sigmoid_of(T v) { return T(1) / (T(1) + std::exp(-v)); }
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
