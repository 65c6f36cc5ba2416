// NumPy .npy (format version 1.0) reading and writing for float32 arrays (logits dumps,
// comparisons with PyTorch). Reading also accepts <f8, <i4 and <i8 (converted to float).
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moessm {

void write_npy_f32(const std::string& path, const float* data, const Shape& shape);  // atomic

struct NpyArray {
  Shape shape;
  std::vector<float> data;
};
NpyArray read_npy(const std::string& path);

}  // namespace moessm
