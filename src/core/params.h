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
  Shape shape;               // as stored in this table's buffer
  DType dtype = DType::F32;  // storage dtype in checkpoints (master copy is the buffer's type)
  size_t offset = 0;         // elements from the buffer start
  size_t numel = 0;
  bool no_decay = false;     // excluded from AdamW weight decay (A_log, D, biases, norms)
  // Expert slabs (add_experts): [E, ...] whose blocks only grouped expert GEMMs read. In a
  // sharded table `shape` holds experts [expert_lo, expert_lo + shape[0]) of full_shape[0].
  bool experts = false;
  size_t expert_lo = 0;
  Shape full_shape;          // the whole tensor (== shape unless sharded)
};

// Expert parallelism's storage split (docs/distributed.md): this table is rank `rank` of an
// expert group of `size` ranks and keeps only its shard_of(E, size, rank) experts of every slab
// added with add_experts. size 1: whole tensors.
struct ExpertShard {
  int rank = 0, size = 1;
};

class ParamTable {
 public:
  explicit ParamTable(ExpertShard shard = {});
  // Appends a tensor; returns its offset. Names must be unique.
  size_t add(const std::string& name, Shape shape, bool no_decay, DType dtype = DType::F32);
  // Appends an expert slab of shape [E, ...] (E = shape[0]) that only grouped expert GEMMs read
  // (ops/grouped_matmul.h); a sharded table keeps this rank's experts only and returns the
  // offset of its first one.
  size_t add_experts(const std::string& name, Shape shape, bool no_decay, DType dtype = DType::F32);
  bool sharded() const { return shard_.size > 1; }
  ExpertShard shard() const { return shard_; }
  // The same tensors whole (full shapes, offsets laid out again in table order): the layout of
  // checkpoints and of an unsharded model.
  ParamTable full() const;
  // The table rank `shard.rank` of such a group holds (from any table of the same tensors).
  ParamTable with_shard(ExpertShard shard) const;
  // Between this table's buffer and one of full()'s layout: local_from_full copies this rank's
  // part out of a full buffer; full_from_local writes it into one (the rest untouched).
  void local_from_full(const float* full, float* local) const;
  void full_from_local(const float* local, float* full) const;
  const ParamInfo* find(const std::string& name) const;  // nullptr when absent
  const ParamInfo& at(const std::string& name) const;    // CHECKs presence
  const std::vector<ParamInfo>& entries() const { return entries_; }
  size_t total() const { return total_; }

  // The one visitor: calls fn(info) for every tensor in table order.
  void visit(const std::function<void(const ParamInfo&)>& fn) const {
    for (const ParamInfo& p : entries_) fn(p);
  }

 private:
  size_t append(ParamInfo p);
  // fn(local offset, full offset, count) for each tensor's part held here.
  template <typename Fn>
  void for_each_part(Fn fn) const;

  std::vector<ParamInfo> entries_;
  size_t total_ = 0;
  ExpertShard shard_;
};

}  // namespace moessm
