// Helpers for the GPU tests (tests/cuda/test_*.cpp): skipping cleanly without a GPU, device
// buffers from host vectors, bf16 rounding on the host and the error-budget measure.
// Error budget (flash-attention style): a fast path's error against an fp64 reference may be at
// most kBudget × the error of a naive run at the same precision (the CPU float reference on the
// same inputs, bf16-stored outputs rounded to bf16) against the same fp64 reference, plus a
// small floor relative to the reference's magnitude so that exact ties (error 0) don't demand 0.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "core/device_buffer.h"
#include "core/rng.h"
#include "core/dtype.h"

namespace moessm::gputest {

inline bool gpu_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_GPU()                                                                    \
  do {                                                                                   \
    if (!::moessm::gputest::gpu_available())                                             \
      GTEST_SKIP() << "no CUDA device present (cudaGetDeviceCount failed or returned 0)"; \
  } while (0)

constexpr double kBudget = 3.0;

inline float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }
inline std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = f32_to_bf16(v[i]);
  return o;
}
inline std::vector<float> from_bf16_bits(const std::vector<uint16_t>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_f32(v[i]);
  return o;
}
inline std::vector<float> rounded(const std::vector<float>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = round_bf16(v[i]);
  return o;
}
template <typename T> std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}
template <typename T> std::vector<float> to_float(const std::vector<T>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// max |a - ref| / max |ref| (NaN anywhere → +inf). Only the first n elements when n given.
template <typename A>
double rel_err(const std::vector<A>& a, const std::vector<double>& ref, size_t n = size_t(-1)) {
  n = std::min({n, a.size(), ref.size()});
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - ref[i]);
    if (std::isnan(d)) return INFINITY;
    num = std::max(num, d);
    den = std::max(den, std::fabs(ref[i]));
  }
  return den > 0 ? num / den : num;
}

// Checks err_fast <= kBudget·err_naive + floor and reports all three.
inline void expect_within_budget(const std::string& what, double err_fast, double err_naive,
                                 double floor) {
  EXPECT_LE(err_fast, kBudget * err_naive + floor)
      << what << ": fast-path error " << err_fast << " vs naive error " << err_naive
      << " (budget " << kBudget << "x + " << floor << ")";
}

// A device buffer holding `v` poisoned elsewhere: the size may exceed v (tail poisoned NaN).
template <typename T> DeviceBuffer upload(const std::vector<T>& v) { return DeviceBuffer::from_host(v); }
inline DeviceBuffer poisoned_f32(size_t n) {
  return DeviceBuffer::from_host(std::vector<float>(n, std::nanf("")));
}
inline DeviceBuffer poisoned_bf16(size_t n) {
  return DeviceBuffer::from_host(std::vector<uint16_t>(n, uint16_t(0x7fc0)));
}

// ---- op-test values: drawn in double, moved to and from device buffers ----
// Values drawn in double, exactly representable in float (and in bf16 when `round`).
inline std::vector<double> rnd(size_t n, Rng& rng, double lo = -1, double hi = 1, bool round = false) {
  std::vector<double> v(n);
  for (auto& x : v) {
    x = rng.uniform(lo, hi);
    x = round ? round_bf16(float(x)) : double(float(x));
  }
  return v;
}
template <typename T> std::vector<T> as(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }
template <typename T> std::vector<double> dbl(const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); }
inline std::vector<double> rounded_d(const std::vector<double>& v) {
  std::vector<double> o(v);
  for (auto& x : o) x = round_bf16(float(x));
  return o;
}
inline DeviceBuffer up_bf16(const std::vector<double>& v) {
  return DeviceBuffer::from_host(to_bf16_bits(to_float(v)));
}
inline DeviceBuffer up_f32(const std::vector<double>& v) { return DeviceBuffer::from_host(to_float(v)); }
inline std::vector<double> down_bf16(const DeviceBuffer& b) {
  return to_double(from_bf16_bits(b.to_host<uint16_t>()));
}
inline std::vector<double> down_f32(const DeviceBuffer& b) { return to_double(b.to_host<float>()); }
// Device element type T's buffer from / to doubles.
template <typename T> DeviceBuffer up(const std::vector<double>& v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return up_bf16(v);
  else return up_f32(v);
}
template <typename T> std::vector<double> down(const DeviceBuffer& b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return down_bf16(b);
  else return down_f32(b);
}
}  // namespace moessm::gputest
