// Shape helpers for TensorView.
#include "core/tensor.h"

#include "core/check.h"

#include <limits>

namespace moessm {

int64_t shape_numel(const Shape& s) {
  // The product of the non-zero dimensions must fit int64 even when a zero makes the count 0,
  // as numpy demands; a shape from a file cannot overflow here.
  int64_t n = 1;
  bool empty = false;
  for (int64_t d : s) {
    CHECK(d >= 0, "negative dimension in shape ", shape_str(s));
    if (d == 0) { empty = true; continue; }
    CHECK(n <= std::numeric_limits<int64_t>::max() / d, "shape ", shape_str(s),
          " has more elements than int64 counts");
    n *= d;
  }
  return empty ? 0 : n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool TensorView::contiguous() const {
  if (strides.empty()) return true;
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

}  // namespace moessm
