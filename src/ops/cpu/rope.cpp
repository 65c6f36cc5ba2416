// CPU rope (contract in ops/rope.h): the reference, parallel over tokens.
#include "ops/rope.h"

#include <cmath>

#include "core/check.h"

namespace moessm::cpu {

namespace {
void check_sizes(const char* op, idx_t B, idx_t T_, idx_t nh, idx_t hd, idx_t out_ld, idx_t in_ld, double theta) {
  CHECK(B >= 0 && T_ >= 0 && nh >= 1, op, ": sizes B=", B, " T=", T_, " nh=", nh, " must be >= 0 (nh >= 1)");
  CHECK(hd >= 2 && hd % 2 == 0, op, ": head_dim must be even and >= 2, got ", hd);
  CHECK(out_ld >= nh * hd && in_ld >= nh * hd, op, ": token strides ", out_ld, " and ", in_ld,
        " must be >= nh·hd = ", nh * hd);
  CHECK(theta > 0, op, ": theta must be > 0, got ", theta);
}

// sign = +1: the forward rotation; -1: its transpose (the backward).
template <typename T>
void rotate(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* pos0, idx_t B, idx_t T_, idx_t nh, idx_t hd,
            double theta, double sign) {
  const idx_t half = hd / 2;
#pragma omp parallel for schedule(static)
  for (idx_t m = 0; m < B * T_; ++m) {
    const idx_t b = m / T_, t = m % T_;
    const int64_t p = (pos0 ? decode_rope_position(double(pos0[b])) : 0) + t;
    for (idx_t i = 0; i < half; ++i) {
      const double a = double(p) * std::pow(theta, -2.0 * double(i) / double(hd));
      const double c = std::cos(a), s = sign * std::sin(a);
      for (idx_t h = 0; h < nh; ++h) {
        const T* x = in + m * in_ld + h * hd;
        T* y = out + m * out_ld + h * hd;
        const double x0 = double(x[i]), x1 = double(x[i + half]);
        y[i] = T(x0 * c - x1 * s);
        y[i + half] = T(x1 * c + x0 * s);
      }
    }
  }
}
}  // namespace

template <typename T>
void rope_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* pos0, idx_t B, idx_t T_, idx_t nh,
                  idx_t hd, double theta) {
  check_sizes("rope_forward", B, T_, nh, hd, out_ld, in_ld, theta);
  rotate(out, out_ld, in, in_ld, pos0, B, T_, nh, hd, theta, 1.0);
}

template <typename T>
void rope_backward(T* din, idx_t din_ld, const T* dout, idx_t dout_ld, const T* pos0, idx_t B, idx_t T_, idx_t nh,
                   idx_t hd, double theta) {
  check_sizes("rope_backward", B, T_, nh, hd, din_ld, dout_ld, theta);
  rotate(din, din_ld, dout, dout_ld, pos0, B, T_, nh, hd, theta, -1.0);
}

#define MOESSM_CPU_ROPE(T)                                                                                  \
  template void rope_forward<T>(T*, idx_t, const T*, idx_t, const T*, idx_t, idx_t, idx_t, idx_t, double);  \
  template void rope_backward<T>(T*, idx_t, const T*, idx_t, const T*, idx_t, idx_t, idx_t, idx_t, double);
MOESSM_CPU_ROPE(float)
MOESSM_CPU_ROPE(double)

}  // namespace moessm::cpu
