// ParamTable bookkeeping.
#include "core/params.h"

#include "core/check.h"

namespace moessm {

size_t ParamTable::add(const std::string& name, Shape shape, bool no_decay, DType dtype) {
  CHECK(find(name) == nullptr, "parameter '", name, "' registered twice");
  ParamInfo p;
  p.name = name;
  p.numel = static_cast<size_t>(shape_numel(shape));
  p.shape = std::move(shape);
  p.dtype = dtype;
  p.offset = total_;
  p.no_decay = no_decay;
  total_ += p.numel;
  entries_.push_back(std::move(p));
  return entries_.back().offset;
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
