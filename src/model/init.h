// Parameter initialisers (mamba_ssm conventions, DESIGN.md §1). Each tensor draws from its own
// RNG stream keyed by (seed, tensor name), so initialisation does not depend on table order or
// thread count.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "core/params.h"
#include "core/rng.h"

namespace moessm {

inline Rng param_rng(uint64_t seed, const std::string& name) { return Rng(seed, stream_id(name)); }

template <typename T> void init_uniform(T* p, size_t n, double bound, Rng& rng) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(rng.uniform(-bound, bound));
}
template <typename T> void init_normal(T* p, size_t n, double std, Rng& rng) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(std * rng.normal());
}
template <typename T> void init_constant(T* p, size_t n, double v) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(v);
}

// nn.Linear default (kaiming-uniform, a = sqrt(5)): U(±1/sqrt(fan_in)) with fan_in = last dim.
template <typename T> void init_linear(T* params, const ParamInfo& info, uint64_t seed, double scale = 1.0) {
  Rng rng = param_rng(seed, info.name);
  const double fan_in = static_cast<double>(info.shape.back());
  init_uniform(params + info.offset, info.numel, scale / std::sqrt(fan_in), rng);
}

}  // namespace moessm
