// safetensors reader and writer (own implementation; format: 8-byte little-endian header length,
// a JSON header mapping tensor names to {dtype, shape, data_offsets:[begin,end]} plus an optional
// "__metadata__" of string->string, then the raw little-endian data; offsets are relative to
// the data section). The reader validates everything a lying file could get wrong (header length
// past the end, bad JSON, unknown dtype, shape/bytes mismatch, offsets outside the data,
// overlapping tensors) and every error names the file and the tensor.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace moessm {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  size_t begin = 0, end = 0;  // byte offsets within the data section
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  static SafetensorsFile from_bytes(std::string bytes, const std::string& source);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const SafetensorsEntry* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const uint8_t* data(const SafetensorsEntry& e) const;

  // Copies tensor `name` into out (converting F32/F64/BF16/F16 to Dst), after checking that it
  // exists and its shape equals `expect`. Errors name the file, the tensor, expected and found.
  template <typename Dst>
  void read_into(const std::string& name, const Shape& expect, Dst* out) const;

 private:
  std::string path_;
  std::string bytes_;
  size_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // `data` must stay valid until write(); it is copied then.
  void add(const std::string& name, DType dtype, const Shape& shape, const void* data);
  void set_metadata(const std::string& key, const std::string& value);
  std::string serialize() const;
  void write(const std::string& path) const;  // atomic

 private:
  struct Item { std::string name; DType dtype; Shape shape; const void* data; };
  std::vector<Item> items_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moessm
