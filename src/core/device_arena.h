// DeviceArena: the device twin of Arena (core/arena.h) for the CUDA model. One cudaMalloc sized
// up front; typed blocks are carved in a fixed order in two passes: a planning pass that only
// counts bytes, then the real pass over the allocation (the same code runs both, so the size
// can never disagree with the use). Blocks are 256-byte aligned (cuBLASLt and vector loads).
// Nothing is allocated during a forward, backward or decode step.
#pragma once
#include <cstddef>

#include "core/check.h"
#include "core/device_buffer.h"

namespace moessm {

class DeviceArena {
 public:
  template <typename U>
  U* carve(size_t n) {
    const size_t at = used_;
    used_ += (n * sizeof(U) + 255) / 256 * 256;
    high_ = used_ > high_ ? used_ : high_;
    if (!buf_.data()) return nullptr;  // planning pass
    CHECK(used_ <= buf_.bytes(), "device arena overflow: need ", used_, " bytes, have ", buf_.bytes(),
          " (the plan and the use disagree)");
    return reinterpret_cast<U*>(static_cast<char*>(buf_.data()) + at);
  }
  // After the planning pass: allocates exactly what was counted and rewinds for the real pass.
  void allocate_planned() {
    buf_.resize(high_ ? high_ : 256);
    used_ = high_ = 0;
  }
  void reset() {  // back to planning (frees the allocation)
    buf_.release();
    used_ = high_ = 0;
  }
  // Layers that never live at the same time share space: rewind to a mark (the planned size is
  // the high-water mark).
  size_t mark() const { return used_; }
  void rewind(size_t m) { used_ = m; }
  size_t bytes() const { return buf_.bytes(); }

 private:
  DeviceBuffer buf_;
  size_t used_ = 0, high_ = 0;
};

}  // namespace moessm
