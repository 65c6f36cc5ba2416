// Activation arena: one allocation sized up front, carved in a fixed order. carve<U> hands out
// blocks of another element type (int32 routing plans, double accumulators) from the same
// storage; mark()/rewind() let layers that never live at the same time share space (the
// planned size is the high-water mark).
// Layers describe what they need through the same carve() calls in two passes: a planning pass
// (Arena with no storage) that only counts, then the real pass that hands out pointers. Because
// both passes run the same code, the size can never disagree with the use. Nothing is allocated
// during a forward or backward step.
#pragma once
#include <cstddef>
#include <vector>

#include "core/check.h"

namespace moessm {

template <typename T>
class Arena {
 public:
  Arena() = default;                       // planning mode: carve() returns nullptr, counts
  explicit Arena(size_t capacity) : storage_(capacity) {}

  bool planning() const { return storage_.empty() && !sized_; }
  T* carve(size_t n) {
    n = (n + 15) / 16 * 16;  // keep every block 64-byte aligned for float
    size_t at = used_;
    used_ += n;
    high_ = used_ > high_ ? used_ : high_;
    if (planning()) return nullptr;
    CHECK(used_ <= storage_.size(), "activation arena overflow: need ", used_, " elements, have ",
          storage_.size(), " (the plan and the use disagree)");
    return storage_.data() + at;
  }
  template <typename U>
  U* carve(size_t n) {
    static_assert(alignof(U) <= 64, "arena blocks are 64-byte aligned");
    return reinterpret_cast<U*>(carve((n * sizeof(U) + sizeof(T) - 1) / sizeof(T)));
  }
  size_t used() const { return used_; }
  size_t mark() const { return used_; }
  void rewind(size_t m) { used_ = m; }
  void reset() { used_ = high_ = 0; }
  // Turns a planned arena into a real one of exactly the planned size.
  void allocate_planned() {
    storage_.assign(high_ ? high_ : 1, T(0));
    sized_ = true;
    used_ = high_ = 0;
  }
  size_t capacity() const { return storage_.size(); }

 private:
  std::vector<T> storage_;
  size_t used_ = 0, high_ = 0;
  bool sized_ = false;
};

}  // namespace moessm
