// safetensors reader and writer (see safetensors.h for the format).
// Reader: the whole file is held in memory; every header entry is validated before any tensor
// can be read (dtype known, shape of non-negative ints, data_offsets [begin, end] inside the data
// section with end - begin == numel * dtype_size, no two tensors sharing bytes). A header longer
// than 100 MB is refused as absurd (the limit the reference implementation uses).
// Writer: header entries in insertion order, "__metadata__" first and only when non-empty, the
// header padded with spaces to a multiple of 8 bytes, tensor data contiguous in the same order.
// Data is little-endian on disk and in memory (checked at compile time).
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/check.h"
#include "io/json.h"
#include "io/file_util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.cpp assumes a little-endian host"
#endif

namespace moessm {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string offsets_str(size_t b, size_t e) { return str_cat("[", b, ", ", e, "]"); }

// Reads a non-negative integer field, naming `what` in every error.
uint64_t non_negative(const Json& v, const std::string& what) {
  int64_t x = v.as_int(what);
  CHECK(x >= 0, what, ": expected a non-negative integer, found ", x);
  return static_cast<uint64_t>(x);
}

// Converts n elements of src (stored as dtype t, possibly unaligned) to Dst.
// Returns false when t is not a floating dtype. With n == 0, out may be null (an empty tensor
// read into an empty vector's data()): nothing is touched then (memcpy with a null pointer is
// undefined even for 0 bytes).
template <typename Dst>
bool convert_floats(DType t, const uint8_t* src, size_t n, Dst* out) {
  switch (t) {
    case DType::F32:
      if constexpr (std::is_same_v<Dst, float>) {
        if (n > 0) std::memcpy(out, src, n * sizeof(float));  // out may be null when n == 0
      } else {
        for (size_t i = 0; i < n; ++i) {
          float v;
          std::memcpy(&v, src + 4 * i, 4);
          out[i] = static_cast<Dst>(v);
        }
      }
      return true;
    case DType::F64:
      if constexpr (std::is_same_v<Dst, double>) {
        if (n > 0) std::memcpy(out, src, n * sizeof(double));  // out may be null when n == 0
      } else {
        for (size_t i = 0; i < n; ++i) {
          double v;
          std::memcpy(&v, src + 8 * i, 8);
          out[i] = static_cast<Dst>(v);
        }
      }
      return true;
    case DType::BF16:
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = static_cast<Dst>(t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h));
      }
      return true;
    default:
      return false;
  }
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return from_bytes(read_file(path), path);
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& source) {
  SafetensorsFile f;
  f.path_ = source;
  f.bytes_ = std::move(bytes);
  const size_t total = f.bytes_.size();
  CHECK(total >= 8, source, ": file is ", total,
        " bytes, expected at least 8 (the little-endian header length)");
  uint64_t header_len;
  std::memcpy(&header_len, f.bytes_.data(), 8);
  CHECK(header_len <= kMaxHeaderBytes, source, ": header length is ", header_len,
        " bytes, expected at most ", kMaxHeaderBytes, " (corrupt or not a safetensors file)");
  CHECK(header_len <= total - 8, source, ": header length is ", header_len,
        " bytes, but only ", total - 8, " bytes follow the length field (truncated file?)");
  f.data_start_ = 8 + static_cast<size_t>(header_len);
  const size_t data_size = total - f.data_start_;

  Json header = Json::parse(f.bytes_.substr(8, header_len), source + " (safetensors header)");
  CHECK(header.is_object(), source, ": safetensors header: expected a JSON object, found ",
        header.kind_name());

  for (const auto& [name, v] : header.as_object()) {
    if (name == "__metadata__") {
      const std::string what = str_cat(source, ": __metadata__");
      for (const auto& [k, mv] : v.as_object(what))
        f.metadata_[k] = mv.as_string(str_cat(what, ": key \"", k, "\""));
      continue;
    }
    const std::string what = str_cat(source, ": tensor '", name, "'");
    v.as_object(what);
    SafetensorsEntry e;
    e.name = name;

    const Json* dtype = v.get("dtype");
    CHECK(dtype, what, ": missing field \"dtype\"");
    const std::string& dname = dtype->as_string(what + ": dtype");
    CHECK(dtype_from_name(dname, &e.dtype), what, ": unknown dtype \"", dname,
          "\", expected one of F64, F32, F16, BF16, I64, I32, U32, U16, U8");

    const Json* shape = v.get("shape");
    CHECK(shape, what, ": missing field \"shape\"");
    const Json::Array& dims = shape->as_array(what + ": shape");
    // numel * dtype size must fit the data section, so it is computed with an overflow guard.
    uint64_t nbytes = dtype_size(e.dtype);
    bool too_big = false;
    for (size_t i = 0; i < dims.size(); ++i) {
      uint64_t d = non_negative(dims[i], str_cat(what, ": shape[", i, "]"));
      CHECK(d <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what, ": shape[", i,
            "] = ", d, " is out of range");
      e.shape.push_back(static_cast<int64_t>(d));
      // A zero dimension empties the tensor, but the others must still count (as numpy demands).
      if (d == 0) continue;
      if (nbytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / d) too_big = true;
      else nbytes *= d;
    }
    CHECK(!too_big, what, ": shape ", shape_str(e.shape), " (", dname,
          ") is larger than any file could hold");
    if (std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end()) nbytes = 0;

    const Json* offs = v.get("data_offsets");
    CHECK(offs, what, ": missing field \"data_offsets\"");
    const Json::Array& o = offs->as_array(what + ": data_offsets");
    CHECK(o.size() == 2, what, ": data_offsets: expected [begin, end], found ", o.size(),
          " elements");
    uint64_t begin = non_negative(o[0], what + ": data_offsets[0]");
    uint64_t end = non_negative(o[1], what + ": data_offsets[1]");
    CHECK(begin <= end, what, ": data_offsets ", offsets_str(begin, end),
          ": expected begin <= end");
    CHECK(end <= data_size, what, ": data_offsets ", offsets_str(begin, end),
          " run past the end of the data section (", data_size, " bytes)");
    CHECK(end - begin == nbytes, what, ": data_offsets ", offsets_str(begin, end), " cover ",
          end - begin, " bytes, expected ", nbytes, " for shape ", shape_str(e.shape), " of ",
          dname);
    e.begin = static_cast<size_t>(begin);
    e.end = static_cast<size_t>(end);
    f.entries_.push_back(std::move(e));
  }

  // Overlaps: sort byte ranges and compare each against the furthest-reaching one before it.
  std::vector<const SafetensorsEntry*> by_begin;
  for (const auto& e : f.entries_)
    if (e.end > e.begin) by_begin.push_back(&e);
  std::sort(by_begin.begin(), by_begin.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  const SafetensorsEntry* reach = nullptr;
  for (const SafetensorsEntry* e : by_begin) {
    if (reach && reach->end > e->begin)
      FAIL(source, ": tensors '", reach->name, "' (bytes ", offsets_str(reach->begin, reach->end),
           ") and '", e->name, "' (bytes ", offsets_str(e->begin, e->end),
           ") overlap; expected disjoint data_offsets");
    if (!reach || e->end > reach->end) reach = e;
  }
  return f;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

const uint8_t* SafetensorsFile::data(const SafetensorsEntry& e) const {
  return reinterpret_cast<const uint8_t*>(bytes_.data()) + data_start_ + e.begin;
}

template <typename Dst>
void SafetensorsFile::read_into(const std::string& name, const Shape& expect, Dst* out) const {
  const SafetensorsEntry* e = find(name);
  CHECK(e, "missing tensor '", name, "' in ", path_);
  CHECK(e->shape == expect, "tensor '", name, "' in ", path_, " has shape ", shape_str(e->shape),
        ", expected ", shape_str(expect));
  size_t n = static_cast<size_t>(shape_numel(e->shape));
  if (!convert_floats(e->dtype, data(*e), n, out))
    FAIL("tensor '", name, "' in ", path_, " has dtype ", dtype_name(e->dtype),
         ", expected a floating dtype (F32, F64, BF16 or F16)");
}

template void SafetensorsFile::read_into<float>(const std::string&, const Shape&, float*) const;
template void SafetensorsFile::read_into<double>(const std::string&, const Shape&, double*) const;

void SafetensorsWriter::add(const std::string& name, DType dtype, const Shape& shape,
                            const void* data) {
  CHECK(!name.empty(), "safetensors writer: empty tensor name");
  CHECK(name != "__metadata__", "safetensors writer: \"__metadata__\" is reserved, not a tensor name");
  for (const Item& it : items_)
    CHECK(it.name != name, "safetensors writer: tensor '", name, "' added twice");
  int64_t n = shape_numel(shape);
  CHECK(data || n == 0, "safetensors writer: tensor '", name, "' has shape ", shape_str(shape),
        " but no data");
  items_.push_back({name, dtype, shape, data});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::string SafetensorsWriter::serialize() const {
  Json header = Json::object();
  if (!metadata_.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata_) meta.set(k, v);
    header.set("__metadata__", std::move(meta));
  }
  size_t offset = 0;
  for (const Item& it : items_) {
    size_t nbytes = static_cast<size_t>(shape_numel(it.shape)) * dtype_size(it.dtype);
    Json dims = Json::array();
    for (int64_t d : it.shape) dims.push_back(d);
    Json entry = Json::object();
    entry.set("dtype", dtype_name(it.dtype));
    entry.set("shape", std::move(dims));
    entry.set("data_offsets", Json::array({Json(offset), Json(offset + nbytes)}));
    header.as_object_mut().emplace_back(it.name, std::move(entry));  // names checked unique in add()
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t len = text.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += text;
  for (const Item& it : items_) {
    size_t nbytes = static_cast<size_t>(shape_numel(it.shape)) * dtype_size(it.dtype);
    if (nbytes) out.append(static_cast<const char*>(it.data), nbytes);
  }
  return out;
}

void SafetensorsWriter::write(const std::string& path) const { write_file_atomic(path, serialize()); }

}  // namespace moessm
