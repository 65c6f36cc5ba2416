// TensorView: a non-owning view (pointer, dtype, device, shape, strides in elements).
// Ops take raw pointers and sizes (llm.c style); views are for I/O, checkpoints and tests,
// where shape and dtype must be checked against what a file claims.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace moessm {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 3]"

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  Shape shape;
  Shape strides;  // elements; empty means contiguous row-major

  TensorView() = default;
  TensorView(void* d, DType t, Shape s, Device dev = Device::CPU)
      : data(d), dtype(t), device(dev), shape(std::move(s)) {}

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool contiguous() const;
  template <typename T> T* ptr() const { return static_cast<T*>(data); }
};

}  // namespace moessm
