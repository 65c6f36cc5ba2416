// Learning-rate schedule: linear warm-up from 0 to `lr` over `warmup` steps, then cosine decay to
// `min_lr` at `max_steps` (constant min_lr after). Steps count from 1.
#pragma once
#include <cmath>
#include <cstdint>

namespace moessm {

inline double lr_at(int64_t step, double lr, double min_lr, int64_t warmup, int64_t max_steps) {
  if (warmup > 0 && step <= warmup) return lr * double(step) / double(warmup);
  if (step >= max_steps || max_steps <= warmup) return min_lr;
  const double progress = double(step - warmup) / double(max_steps - warmup);
  return min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * (lr - min_lr);
}

}  // namespace moessm
