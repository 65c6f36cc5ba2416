// NumPy .npy files (see npy.h). Writing produces exactly what numpy.save writes for a C-ordered
// float32 array: magic "\x93NUMPY", version 1.0, a little-endian u16 header length, the header
// dict "{'descr': '<f4', 'fortran_order': False, 'shape': (...), }" padded with spaces and
// ending in '\n' so the data starts at a multiple of 64 bytes. Reading accepts versions 1.0,
// 2.0 and 3.0 (u32 header length), dtypes <f4, <f8, <i4 and <i8, and requires the data size
// to match the shape exactly (a truncated or over-long file is an error). Fortran order is
// accepted only where it equals C order (at most one dimension).
#include "io/npy.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "core/check.h"
#include "io/file_util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.cpp assumes a little-endian host"
#endif

namespace moessm {

namespace {

const char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;

std::string shape_tuple(const Shape& shape) {
  std::string t = "(";
  for (size_t i = 0; i < shape.size(); ++i) t += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) t += ",";
  return t + ")";
}

// A reader for the Python literal numpy writes as the header: a dict of str keys whose values
// are strs, True/False or tuples of ints.
class HeaderParser {
 public:
  HeaderParser(std::string text, const std::string& path) : s_(std::move(text)), path_(path) {}

  std::string descr;
  bool fortran_order = false;
  Shape shape;

  void parse() {
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    ws();
    expect('{');
    for (;;) {
      ws();
      if (peek() == '}') break;
      std::string key = str();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        descr = str();
        seen_descr = true;
      } else if (key == "fortran_order") {
        fortran_order = boolean();
        seen_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        seen_shape = true;
      } else {
        fail(str_cat("one of the keys 'descr', 'fortran_order', 'shape'"), str_cat("'", key, "'"));
      }
      ws();
      if (peek() == ',') { ++i_; continue; }
      if (peek() == '}') break;
      fail("',' or '}'");
    }
    ++i_;
    ws();
    if (i_ != s_.size()) fail("end of the header dict");
    if (!seen_descr) fail_missing("descr");
    if (!seen_fortran) fail_missing("fortran_order");
    if (!seen_shape) fail_missing("shape");
  }

 private:
  const std::string s_;
  const std::string& path_;
  size_t i_ = 0;

  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  std::string found() const {
    if (i_ >= s_.size()) return "end of header";
    return str_cat("'", s_.substr(i_, 12), "'");
  }
  [[noreturn]] void fail(const std::string& expected, const std::string& found_what = "") const {
    FAIL(path_, ": .npy header at offset ", i_, ": expected ", expected, ", found ",
         found_what.empty() ? found() : found_what);
  }
  [[noreturn]] void fail_missing(const char* key) const {
    FAIL(path_, ": .npy header: missing key '", key, "' in ", s_);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) fail(str_cat("'", c, "'"));
    ++i_;
  }
  std::string str() {
    char q = peek();
    if (q != '\'' && q != '"') fail("a quoted string");
    size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) fail("a closing quote");
    std::string out = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) { i_ += 4; return true; }
    if (s_.compare(i_, 5, "False") == 0) { i_ += 5; return false; }
    fail("True or False");
  }
  Shape tuple() {
    expect('(');
    Shape out;
    for (;;) {
      ws();
      if (peek() == ')') break;
      size_t start = i_;
      int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        int d = peek() - '0';
        if (v > (std::numeric_limits<int64_t>::max() - d) / 10) fail("a dimension that fits int64");
        v = v * 10 + d;
        ++i_;
      }
      if (i_ == start) fail("a non-negative integer dimension");
      out.push_back(v);
      ws();
      if (peek() == ',') { ++i_; continue; }
      if (peek() == ')') break;
      fail("',' or ')' in shape");
    }
    ++i_;
    return out;
  }
};

template <typename T>
void convert(const char* src, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    out[i] = static_cast<float>(v);
  }
}

}  // namespace

void write_npy_f32(const std::string& path, const float* data, const Shape& shape) {
  const size_t n = static_cast<size_t>(shape_numel(shape));
  CHECK(data || n == 0, "write_npy_f32 '", path, "': shape ", shape_str(shape), " but no data");
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_tuple(shape) + ", }";
  const size_t prefix = kMagicLen + 2 + 2;  // magic, version, u16 header length
  header.append((kAlign - (prefix + header.size() + 1) % kAlign) % kAlign, ' ');
  header += '\n';
  CHECK(header.size() <= 0xFFFF, "write_npy_f32 '", path, "': header of ", header.size(),
        " bytes for shape ", shape_str(shape), " exceeds the 65535 bytes of format 1.0");
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data), n * sizeof(float));
  write_file_atomic(path, out);
}

NpyArray read_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  CHECK(bytes.size() >= kMagicLen + 4, path, ": file is ", bytes.size(),
        " bytes, too short for a .npy file (at least 10)");
  CHECK(bytes.compare(0, kMagicLen, kMagic, kMagicLen) == 0, path,
        ": not a .npy file: expected the magic \"\\x93NUMPY\" at the start");
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(bytes[k]); };
  const int major = byte(6), minor = byte(7);
  size_t header_start, header_len;
  if (major == 1 && minor == 0) {
    header_start = 10;
    header_len = byte(8) | (byte(9) << 8);
  } else if ((major == 2 || major == 3) && minor == 0) {
    CHECK(bytes.size() >= 12, path, ": .npy version ", major, ".0: file is ", bytes.size(),
          " bytes, expected at least 12");
    header_start = 12;
    header_len = static_cast<size_t>(byte(8)) | (static_cast<size_t>(byte(9)) << 8) |
                 (static_cast<size_t>(byte(10)) << 16) | (static_cast<size_t>(byte(11)) << 24);
  } else {
    FAIL(path, ": .npy format version ", major, ".", minor, " is not supported, expected 1.0, 2.0 or 3.0");
  }
  CHECK(header_len <= bytes.size() - header_start, path, ": .npy header length is ", header_len,
        " bytes, but only ", bytes.size() - header_start, " bytes follow (truncated file?)");

  HeaderParser h(bytes.substr(header_start, header_len), path);
  h.parse();

  size_t item;
  if (h.descr == "<f4" || h.descr == "<i4") item = 4;
  else if (h.descr == "<f8" || h.descr == "<i8") item = 8;
  else FAIL(path, ": .npy dtype '", h.descr, "' is not supported, expected '<f4', '<f8', '<i4' or '<i8'");
  CHECK(!h.fortran_order || h.shape.size() <= 1, path, ": .npy array of shape ", shape_str(h.shape),
        " is in Fortran order, expected C order (fortran_order False)");

  const size_t data_start = header_start + header_len;
  const size_t have = bytes.size() - data_start;
  // numel * item must equal the bytes present; compute with an overflow guard.
  // As in numpy, the non-zero dimensions' product must not overflow even when a zero
  // dimension makes the array empty.
  size_t want = item;
  bool overflow = false, empty = false;
  for (int64_t d : h.shape) {
    if (d == 0) { empty = true; continue; }
    if (want > static_cast<size_t>(std::numeric_limits<int64_t>::max()) / static_cast<size_t>(d))
      overflow = true;
    else want *= static_cast<size_t>(d);
  }
  CHECK(!overflow || !empty, path, ": .npy shape ", shape_str(h.shape),
        " has more elements than int64 counts (ignoring its zero dimension), as numpy refuses too");
  if (empty) want = 0;
  CHECK(!overflow && want == have, path, ": .npy data for shape ", shape_str(h.shape), " of '",
        h.descr, "' should be ", overflow ? std::string("more than any file holds")
                                          : str_cat(want, " bytes"),
        ", found ", have, " bytes", have < want ? " (truncated file)" : "");

  NpyArray out;
  out.shape = h.shape;
  const size_t n = want / item;
  if (n == 0) return out;
  out.data.resize(n);
  const char* src = bytes.data() + data_start;
  if (h.descr == "<f4") std::memcpy(out.data.data(), src, n * sizeof(float));
  else if (h.descr == "<f8") convert<double>(src, n, out.data.data());
  else if (h.descr == "<i4") convert<int32_t>(src, n, out.data.data());
  else convert<int64_t>(src, n, out.data.data());
  return out;
}

}  // namespace moessm
