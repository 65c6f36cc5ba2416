// Json::parse and Json::parse_file through nlohmann-json's SAX parser (RFC 8259, strict).
// nlohmann does the lexing and the grammar: escapes (surrogate pairs included) become UTF-8, raw
// strings must be valid UTF-8, a UTF-8 byte order mark at the start is skipped, anything after the
// top-level value is an error, and a number too large for a double is an error. The handler here
// builds the Json tree and adds what nlohmann lets through: a duplicate key in an object is an
// error, and so is nesting deeper than Json::kMaxDepth. Integers that fit int64 stay exact; larger
// ones become doubles. Every error reads "SOURCE:LINE:COLUMN: <what>; found <what is there>",
// LINE and COLUMN counted from 1 (columns in bytes) and computed here from the byte position.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/file_util.h"
#include "io/json.h"

namespace moessm {

namespace {

using NJson = nlohmann::json;  // only its parser is used; the tree built is a moessm::Json

// Hands nlohmann the text byte by byte and records how many bytes it has taken, so the handler
// can place its own errors (nlohmann's SAX events carry no position).
class CountingIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  CountingIterator(const char* base, const char* p, size_t* taken) : base_(base), p_(p), taken_(taken) {}
  reference operator*() const { return *p_; }
  CountingIterator& operator++() {
    ++p_;
    *taken_ = static_cast<size_t>(p_ - base_);
    return *this;
  }
  CountingIterator operator++(int) {
    CountingIterator old = *this;
    ++*this;
    return old;
  }
  bool operator==(const CountingIterator& o) const { return p_ == o.p_; }
  bool operator!=(const CountingIterator& o) const { return p_ != o.p_; }

 private:
  const char* base_;
  const char* p_;
  size_t* taken_;
};

// What is at byte `index` of the text, for error messages.
std::string found_at(const std::string& text, size_t index) {
  if (index >= text.size()) return "end of input";
  unsigned char c = static_cast<unsigned char>(text[index]);
  if (c >= 0x20 && c < 0x7F) return str_cat("'", static_cast<char>(c), "'");
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", c);
  return str_cat("byte ", buf);
}

// "SOURCE:LINE:COLUMN: " for byte `index` (index == text.size() is the end of input).
std::string where(const std::string& source, const std::string& text, size_t index) {
  size_t line = 1, col = 1;
  for (size_t k = 0; k < index && k < text.size(); ++k) {
    if (text[k] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return str_cat(source, ":", line, ":", col, ": ");
}

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line L,
// column C: " prefix (the position is given by where(), counted from the byte offset).
std::string message_of(const NJson::exception& e) {
  std::string m = e.what();
  if (m.rfind("[json.exception.", 0) == 0) {
    size_t cut = m.find("] ");
    if (cut != std::string::npos) m.erase(0, cut + 2);
  }
  if (m.rfind("parse error", 0) == 0) {
    size_t cut = m.find(": ");
    if (cut != std::string::npos) m.erase(0, cut + 2);
  }
  return m;
}

// Builds the Json tree from nlohmann's SAX events. Containers under construction are kept on a
// stack of pointers: a container's element vector only grows after its open child is closed,
// so the pointers stay valid.
class TreeBuilder : public nlohmann::json_sax<NJson> {
 public:
  TreeBuilder(const std::string& text, const std::string& source, const size_t& taken)
      : text_(text), source_(source), taken_(taken) {}

  Json take() { return std::move(root_); }

  bool null() override { return add(Json()); }
  bool boolean(bool v) override { return add(Json(v)); }
  bool number_integer(number_integer_t v) override { return add(Json(static_cast<int64_t>(v))); }
  // Above INT64_MAX Json keeps a (rounded) double, as for any integer beyond int64.
  bool number_unsigned(number_unsigned_t v) override { return add(Json(static_cast<uint64_t>(v))); }
  bool number_float(number_float_t v, const string_t&) override { return add(Json(static_cast<double>(v))); }
  bool string(string_t& v) override { return add(Json(std::move(v))); }
  bool binary(binary_t&) override { FAIL(where(source_, text_, taken_), "binary values are not JSON"); }

  bool start_object(std::size_t) override { return open(Json::object()); }
  bool key(string_t& k) override {
    // The key's closing quote is the last byte nlohmann has taken (no look-ahead after a string).
    if (!keys_.back().insert(k).second)
      FAIL(where(source_, text_, key_start(taken_ - 1)), "expected unique keys in an object; found duplicate key \"",
           k, "\"");
    key_ = std::move(k);
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(Json::array()); }
  bool end_array() override { return close(); }

  bool parse_error(std::size_t position, const std::string&, const NJson::exception& e) override {
    // nlohmann's position counts the bytes read, the end of input included: the offending byte
    // is the last one read (a token cut short by the end of input points at the end).
    size_t index = position == 0 ? 0 : std::min(position - 1, text_.size());
    FAIL(where(source_, text_, index), message_of(e), "; found ", found_at(text_, index));
  }

 private:
  const std::string& text_;
  const std::string& source_;
  const size_t& taken_;
  Json root_;
  std::vector<Json*> open_;                        // containers being filled, innermost last
  std::vector<std::unordered_set<std::string>> keys_;  // keys seen, per open object
  std::string key_;                                // the key of the next object member

  // Stores v where the parser is (top level, array element or object member); returns where.
  Json* place(Json v) {
    if (open_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json& parent = *open_.back();
    if (parent.is_array()) {
      Json::Array& a = parent.as_array_mut();
      a.push_back(std::move(v));
      return &a.back();
    }
    Json::Object& o = parent.as_object_mut();
    o.emplace_back(std::move(key_), std::move(v));  // key checked unique in key()
    return &o.back().second;
  }
  bool add(Json v) {
    place(std::move(v));
    return true;
  }
  bool open(Json container) {
    if (open_.size() >= static_cast<size_t>(Json::kMaxDepth))
      FAIL(where(source_, text_, taken_ - 1), "expected at most ", Json::kMaxDepth,
           " levels of nesting; found deeper nesting");
    bool is_object = container.is_object();
    open_.push_back(place(std::move(container)));
    if (is_object) keys_.emplace_back();
    return true;
  }
  bool close() {
    if (open_.back()->is_object()) keys_.pop_back();
    open_.pop_back();
    return true;
  }

  // Index of the opening quote of the string whose closing quote is at `close`: the nearest '"'
  // before it that is not escaped (a '"' inside a string is always preceded by an odd number of
  // backslashes). Only used to point a duplicate-key error at the key's first byte.
  size_t key_start(size_t close) const {
    for (size_t i = close; i-- > 0;) {
      if (text_[i] != '"') continue;
      size_t backslashes = 0;
      while (backslashes < i && text_[i - backslashes - 1] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return i;
    }
    return close;
  }
};

}  // namespace

Json Json::parse(const std::string& text, const std::string& source) {
  size_t taken = 0;
  const char* b = text.data();
  TreeBuilder builder(text, source, taken);
  bool ok = NJson::sax_parse(CountingIterator(b, b, &taken), CountingIterator(b, b + text.size(), &taken),
                             &builder);
  CHECK(ok, where(source, text, taken), "JSON parse stopped");  // errors throw first; kept as a guard
  return builder.take();
}

Json Json::parse_file(const std::string& path) {
  return parse(read_regular_file(path, kMaxFileBytes), path);
}

}  // namespace moessm
