// ParamTable bookkeeping.
#include "core/params.h"

#include "core/check.h"
#include "core/shard.h"

#include <algorithm>

namespace moessm {

ParamTable::ParamTable(ExpertShard shard) : shard_(shard) {
  CHECK(shard.size >= 1 && shard.rank >= 0 && shard.rank < shard.size, "expert shard: rank ", shard.rank,
        " of a group of ", shard.size);
}

size_t ParamTable::append(ParamInfo p) {
  CHECK(find(p.name) == nullptr, "parameter '", p.name, "' registered twice");
  p.numel = static_cast<size_t>(shape_numel(p.shape));
  if (p.full_shape.empty()) p.full_shape = p.shape;
  p.offset = total_;
  total_ += p.numel;
  entries_.push_back(std::move(p));
  return entries_.back().offset;
}

size_t ParamTable::add(const std::string& name, Shape shape, bool no_decay, DType dtype) {
  ParamInfo p;
  p.name = name;
  p.shape = std::move(shape);
  p.dtype = dtype;
  p.no_decay = no_decay;
  return append(std::move(p));
}

size_t ParamTable::add_experts(const std::string& name, Shape shape, bool no_decay, DType dtype) {
  CHECK(!shape.empty() && shape[0] >= 1, "expert slab '", name, "' needs a leading expert dimension, found ",
        shape_str(shape));
  ParamInfo p;
  p.name = name;
  p.full_shape = shape;
  const RankSlice mine = rank_slice(size_t(shape[0]), shard_.size, shard_.rank);
  shape[0] = int64_t(mine.size());
  p.shape = std::move(shape);
  p.dtype = dtype;
  p.no_decay = no_decay;
  p.experts = true;
  p.expert_lo = mine.lo;
  return append(std::move(p));
}

ParamTable ParamTable::full() const {
  ParamTable t;
  for (const ParamInfo& p : entries_) {
    ParamInfo q = p;
    q.shape = p.full_shape;
    q.expert_lo = 0;
    t.append(std::move(q));
  }
  return t;
}

ParamTable ParamTable::with_shard(ExpertShard shard) const {
  ParamTable t(shard);
  for (const ParamInfo& p : entries_) {
    if (p.experts) t.add_experts(p.name, p.full_shape, p.no_decay, p.dtype);
    else t.add(p.name, p.full_shape, p.no_decay, p.dtype);
  }
  return t;
}

template <typename Fn>
void ParamTable::for_each_part(Fn fn) const {
  size_t full_at = 0;
  for (const ParamInfo& p : entries_) {
    const size_t full_numel = size_t(shape_numel(p.full_shape));
    const size_t per_expert = p.experts ? full_numel / size_t(p.full_shape[0]) : 0;
    fn(p.offset, full_at + p.expert_lo * per_expert, p.numel);
    full_at += full_numel;
  }
}

void ParamTable::local_from_full(const float* full, float* local) const {
  for_each_part([&](size_t lo, size_t fo, size_t n) { std::copy(full + fo, full + fo + n, local + lo); });
}

void ParamTable::full_from_local(const float* local, float* full) const {
  for_each_part([&](size_t lo, size_t fo, size_t n) { std::copy(local + lo, local + lo + n, full + fo); });
}

const ParamInfo* ParamTable::find(const std::string& name) const {
  for (const ParamInfo& p : entries_)
    if (p.name == name) return &p;
  return nullptr;
}

const ParamInfo& ParamTable::at(const std::string& name) const {
  const ParamInfo* p = find(name);
  CHECK(p != nullptr, "no parameter named '", name, "'");
  return *p;
}

}  // namespace moessm
