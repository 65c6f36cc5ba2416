// The flat parameter buffer and the table that describes it.
// Every model keeps ALL its parameters in one contiguous buffer; a ParamTable lists each tensor
// (name, shape, dtype, offset in elements, no-weight-decay flag). Gradients and AdamW moments are
// buffers of the same length with the same layout, so zeroing grads is one fill, the optimizer
// one loop over the table, a checkpoint one visit. Names are checkpoint names
// (e.g. "backbone.layers.0.mixer.in_proj.weight"). Experts are stacked slabs [E, ...].
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace moessm {

struct ParamInfo {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;  // storage dtype in checkpoints (master copy is the buffer's type)
  size_t offset = 0;         // elements from the buffer start
  size_t numel = 0;
  bool no_decay = false;     // excluded from AdamW weight decay (A_log, D, biases, norms)
};

class ParamTable {
 public:
  // Appends a tensor; returns its offset. Names must be unique.
  size_t add(const std::string& name, Shape shape, bool no_decay, DType dtype = DType::F32);
  const ParamInfo* find(const std::string& name) const;  // nullptr when absent
  const ParamInfo& at(const std::string& name) const;    // CHECKs presence
  const std::vector<ParamInfo>& entries() const { return entries_; }
  size_t total() const { return total_; }

  // The one visitor: calls fn(info) for every tensor in table order.
  void visit(const std::function<void(const ParamInfo&)>& fn) const {
    for (const ParamInfo& p : entries_) fn(p);
  }

 private:
  std::vector<ParamInfo> entries_;
  size_t total_ = 0;
};

}  // namespace moessm
