// JSON parser and writer for moessm::Json (RFC 8259, strict).
// Contracts: objects keep insertion order and a duplicate key is an error; \uXXXX escapes
// (surrogate pairs included) become UTF-8 and raw strings must be valid UTF-8; integers written
// without fraction or exponent that fit int64 stay exact; anything after the top-level value
// other than whitespace is an error. Every parse error reads "SOURCE:LINE:COLUMN: expected X,
// found Y" (columns count bytes, from 1). dump() writes the shortest decimal form of a double
// that reads back bit-identically (std::to_chars), so parse(dump(x)) == x.
#include "core/json.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "core/check.h"
#include "io/file_util.h"

namespace moessm {

namespace {

constexpr int kMaxDepth = 512;  // deeper nesting is refused instead of overflowing the stack

// Length of the valid UTF-8 sequence starting at s[i] (1..4), or 0 when it is invalid
// (bad lead byte, missing continuation, overlong form, surrogate, above U+10FFFF).
size_t utf8_sequence_length(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
  else return 0;
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return len;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  Parser(const std::string& text, const std::string& source) : s_(text), source_(source) {}

  Json parse_document() {
    if (s_.compare(0, 3, "\xEF\xBB\xBF") == 0) i_ = 3;  // a UTF-8 byte order mark is ignored
    skip_ws();
    Json v = parse_value();
    skip_ws();
    if (i_ != s_.size()) fail(i_, "expected end of input after the JSON value");
    return v;
  }

 private:
  const std::string& s_;
  const std::string& source_;
  size_t i_ = 0;
  int depth_ = 0;

  bool eof() const { return i_ >= s_.size(); }
  char peek() const { return s_[i_]; }

  std::string found_at(size_t pos) const {
    if (pos >= s_.size()) return "end of input";
    unsigned char c = static_cast<unsigned char>(s_[pos]);
    if (c >= 0x20 && c < 0x7F) return str_cat("'", static_cast<char>(c), "'");
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02X", c);
    return str_cat("byte ", buf);
  }

  // "SOURCE:LINE:COL: <what>, found <what is there>"
  [[noreturn]] void fail(size_t pos, const std::string& expected, const std::string& found = "") const {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < pos && k < s_.size(); ++k) {
      if (s_[k] == '\n') { ++line; col = 1; } else { ++col; }
    }
    FAIL(source_, ":", line, ":", col, ": ", expected, ", found ", found.empty() ? found_at(pos) : found);
  }

  void skip_ws() {
    while (!eof() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++i_;
  }

  void expect_literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) fail(i_, str_cat("expected '", word, "'"));
    i_ += n;
  }

  Json parse_value() {
    if (eof()) fail(i_, "expected a value");
    char c = peek();
    switch (c) {
      case '{': return parse_object();
      case '[': return parse_array();
      case '"': return Json(parse_string());
      case 't': expect_literal("true"); return Json(true);
      case 'f': expect_literal("false"); return Json(false);
      case 'n': expect_literal("null"); return Json();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail(i_, "expected a value (object, array, string, number, true, false or null)");
    }
  }

  void enter(size_t pos) {
    if (++depth_ > kMaxDepth) fail(pos, str_cat("expected at most ", kMaxDepth, " levels of nesting"),
                                   "deeper nesting");
  }

  Json parse_object() {
    enter(i_);
    ++i_;  // '{'
    Json::Object members;
    std::unordered_set<std::string> seen;
    skip_ws();
    if (!eof() && peek() == '}') {
      ++i_;
      --depth_;
      return Json::object(std::move(members));
    }
    for (;;) {
      skip_ws();
      if (eof() || peek() != '"') fail(i_, "expected a string key");
      size_t key_pos = i_;
      std::string key = parse_string();
      if (!seen.insert(key).second)
        fail(key_pos, "expected unique keys in an object", str_cat("duplicate key \"", key, "\""));
      skip_ws();
      if (eof() || peek() != ':') fail(i_, str_cat("expected ':' after key \"", key, "\""));
      ++i_;
      skip_ws();
      Json v = parse_value();
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (!eof() && peek() == ',') { ++i_; continue; }
      if (!eof() && peek() == '}') { ++i_; break; }
      fail(i_, "expected ',' or '}' in object");
    }
    --depth_;
    Json out;
    out.as_object_mut() = std::move(members);  // keys already checked unique
    return out;
  }

  Json parse_array() {
    enter(i_);
    ++i_;  // '['
    Json::Array items;
    skip_ws();
    if (!eof() && peek() == ']') {
      ++i_;
      --depth_;
      return Json::array(std::move(items));
    }
    for (;;) {
      skip_ws();
      items.push_back(parse_value());
      skip_ws();
      if (!eof() && peek() == ',') { ++i_; continue; }
      if (!eof() && peek() == ']') { ++i_; break; }
      fail(i_, "expected ',' or ']' in array");
    }
    --depth_;
    return Json::array(std::move(items));
  }

  uint32_t parse_hex4() {
    if (i_ + 4 > s_.size()) fail(i_, "expected 4 hex digits after \\u");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_ + k];
      uint32_t d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail(i_ + k, "expected a hex digit in \\u escape");
      v = v * 16 + d;
    }
    i_ += 4;
    return v;
  }

  std::string parse_string() {
    size_t start = i_;
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      // Copy a run of plain ASCII bytes at once.
      size_t run = i_;
      while (run < s_.size()) {
        unsigned char c = static_cast<unsigned char>(s_[run]);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++run;
      }
      out.append(s_, i_, run - i_);
      i_ = run;
      if (eof()) fail(start, "expected a closing '\"' for this string", "end of input");
      unsigned char c = static_cast<unsigned char>(peek());
      if (c == '"') { ++i_; return out; }
      if (c < 0x20) fail(i_, "expected an escaped control character (e.g. \\n) in string");
      if (c >= 0x80) {
        size_t len = utf8_sequence_length(s_, i_);
        if (len == 0) fail(i_, "expected valid UTF-8 in string");
        out.append(s_, i_, len);
        i_ += len;
        continue;
      }
      // Backslash escape.
      size_t esc = i_;
      ++i_;
      if (eof()) fail(i_, "expected an escape character after '\\'");
      char e = peek();
      ++i_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF)
            fail(esc, "expected a high surrogate (\\uD800-\\uDBFF) before a low surrogate",
                 str_cat("unpaired low surrogate"));
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.compare(i_, 2, "\\u") != 0)
              fail(i_, "expected a \\uDC00-\\uDFFF low surrogate after a high surrogate");
            size_t low_pos = i_;
            i_ += 2;
            uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF)
              fail(low_pos, "expected a \\uDC00-\\uDFFF low surrogate after a high surrogate",
                   str_cat("\\u", s_.substr(low_pos + 2, 4)));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail(i_ - 1, "expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX");
      }
    }
  }

  Json parse_number() {
    size_t start = i_;
    const auto digit = [&] { return !eof() && peek() >= '0' && peek() <= '9'; };
    if (peek() == '-') ++i_;
    if (!digit()) fail(i_, "expected a digit in number");
    if (peek() == '0') {
      ++i_;
      if (digit()) fail(i_, "expected no leading zeros in number");
    } else {
      while (digit()) ++i_;
    }
    bool integral = true;
    if (!eof() && peek() == '.') {
      integral = false;
      ++i_;
      if (!digit()) fail(i_, "expected a digit after '.' in number");
      while (digit()) ++i_;
    }
    if (!eof() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++i_;
      if (!eof() && (peek() == '+' || peek() == '-')) ++i_;
      if (!digit()) fail(i_, "expected a digit in the exponent of number");
      while (digit()) ++i_;
    }
    const char* b = s_.data() + start;
    const char* e = s_.data() + i_;
    if (integral) {
      int64_t v = 0;
      auto r = std::from_chars(b, e, v);
      if (r.ec == std::errc() && r.ptr == e) return Json(v);
      // Out of int64 range: fall through to a (rounded) double, as other JSON readers do.
    }
    double d = 0;
    auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc::result_out_of_range) {
      // from_chars reports both overflow and underflow; underflow reads as zero (or the nearest
      // denormal), overflow has no finite value and is an error.
      double probe = std::strtod(std::string(b, e).c_str(), nullptr);
      if (std::isinf(probe))
        fail(start, "expected a number within the range of a double", std::string(b, e));
      d = probe;
    } else if (r.ec != std::errc() || r.ptr != e) {
      fail(start, "expected a number", std::string(b, e));
    }
    return Json(d);
  }
};

std::string format_double(double v) {
  if (!std::isfinite(v))
    FAIL("cannot write ", v, " as JSON: NaN and infinities have no JSON representation");
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that round-trips
  std::string s(buf, r.ptr);
  // Keep the value a double when read back: "3" would come back as the integer 3.
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

void dump_string(std::string& out, const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) >= 0x80) {
      size_t len = utf8_sequence_length(s, i);
      if (len == 0)
        FAIL("cannot write string as JSON: invalid UTF-8 at byte ", i, " of \"",
             s.substr(0, 40), s.size() > 40 ? "...\"" : "\"");
      i += len;
    } else {
      ++i;
    }
  }
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04X", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void newline(std::string& out, int indent, int level) {
  out += '\n';
  out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
}

// The exact-value test for a double against int64: true when d is integral and inside
// [-2^63, 2^63), so the cast is defined.
bool double_fits_int64(double d) {
  return std::isfinite(d) && std::trunc(d) == d && d >= -9223372036854775808.0 &&
         d < 9223372036854775808.0;
}

}  // namespace

Json::Json(uint64_t v) : kind_(Kind::Number), num_(static_cast<double>(v)) {
  if (v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    is_int_ = true;
    int_ = static_cast<int64_t>(v);
  }
}

Json Json::array(Array a) {
  Json j;
  j.kind_ = Kind::Array;
  j.arr_ = std::move(a);
  return j;
}

Json Json::object(Object o) {
  std::unordered_set<std::string> seen;
  for (const auto& kv : o) CHECK(seen.insert(kv.first).second, "Json::object: duplicate key \"", kv.first, "\"");
  Json j;
  j.kind_ = Kind::Object;
  j.obj_ = std::move(o);
  return j;
}

bool Json::is_integer() const {
  return kind_ == Kind::Number && (is_int_ || double_fits_int64(num_));
}

const char* Json::kind_name() const {
  switch (kind_) {
    case Kind::Null: return "null";
    case Kind::Bool: return "bool";
    case Kind::Number: return "number";
    case Kind::String: return "string";
    case Kind::Array: return "array";
    case Kind::Object: return "object";
  }
  return "?";
}

namespace {
// What a value is, for error messages: "number 3.5", "string \"abc\"", "array of 2 elements".
std::string describe(const Json& v) {
  switch (v.kind()) {
    case Json::Kind::Null: return "null";
    case Json::Kind::Bool: return v.as_bool() ? "true" : "false";
    case Json::Kind::Number: {
      double d = v.as_number();
      if (!std::isfinite(d)) return str_cat("number ", d);
      return str_cat("number ", v.dump());
    }
    case Json::Kind::String: {
      const std::string& s = v.as_string();
      std::string shown = s.size() > 40 ? s.substr(0, 40) + "..." : s;
      return str_cat("string \"", shown, "\"");
    }
    case Json::Kind::Array: return str_cat("array of ", v.size(), " elements");
    case Json::Kind::Object: return str_cat("object with ", v.size(), " keys");
  }
  return "?";
}
}  // namespace

bool Json::as_bool(const std::string& what) const {
  if (kind_ != Kind::Bool) FAIL(what, ": expected a bool, found ", describe(*this));
  return b_;
}

double Json::as_number(const std::string& what) const {
  if (kind_ != Kind::Number) FAIL(what, ": expected a number, found ", describe(*this));
  return num_;
}

int64_t Json::as_int(const std::string& what) const {
  if (kind_ != Kind::Number) FAIL(what, ": expected an integer, found ", describe(*this));
  if (is_int_) return int_;
  if (!double_fits_int64(num_)) FAIL(what, ": expected an integer, found ", describe(*this));
  return static_cast<int64_t>(num_);
}

const std::string& Json::as_string(const std::string& what) const {
  if (kind_ != Kind::String) FAIL(what, ": expected a string, found ", describe(*this));
  return str_;
}

const Json::Array& Json::as_array(const std::string& what) const {
  if (kind_ != Kind::Array) FAIL(what, ": expected an array, found ", describe(*this));
  return arr_;
}

const Json::Object& Json::as_object(const std::string& what) const {
  if (kind_ != Kind::Object) FAIL(what, ": expected an object, found ", describe(*this));
  return obj_;
}

Json::Array& Json::as_array_mut() {
  if (kind_ == Kind::Null) kind_ = Kind::Array;
  if (kind_ != Kind::Array) FAIL("Json::as_array_mut: expected an array, found ", describe(*this));
  return arr_;
}

Json::Object& Json::as_object_mut() {
  if (kind_ == Kind::Null) kind_ = Kind::Object;
  if (kind_ != Kind::Object) FAIL("Json::as_object_mut: expected an object, found ", describe(*this));
  return obj_;
}

bool Json::has(const std::string& key) const { return get(key) != nullptr; }

const Json* Json::get(const std::string& key) const {
  if (kind_ != Kind::Object) return nullptr;
  for (const auto& kv : obj_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const Json& Json::at(const std::string& key, const std::string& what) const {
  const Object& o = as_object(what);
  for (const auto& kv : o)
    if (kv.first == key) return kv.second;
  FAIL(what, ": missing key \"", key, "\"");
}

Json& Json::set(const std::string& key, Json value) {
  Object& o = as_object_mut();
  for (auto& kv : o) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return kv.second;
    }
  }
  o.emplace_back(key, std::move(value));
  return o.back().second;
}

void Json::push_back(Json value) { as_array_mut().push_back(std::move(value)); }

size_t Json::size() const {
  if (kind_ == Kind::Array) return arr_.size();
  if (kind_ == Kind::Object) return obj_.size();
  FAIL("Json::size: expected an array or object, found ", describe(*this));
}

bool Json::operator==(const Json& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::Null: return true;
    case Kind::Bool: return b_ == o.b_;
    case Kind::Number:
      if (is_int_ && o.is_int_) return int_ == o.int_;
      if (!is_int_ && !o.is_int_) return num_ == o.num_;
      {
        const Json& i = is_int_ ? *this : o;
        const Json& d = is_int_ ? o : *this;
        return double_fits_int64(d.num_) && static_cast<int64_t>(d.num_) == i.int_;
      }
    case Kind::String: return str_ == o.str_;
    case Kind::Array: return arr_ == o.arr_;
    case Kind::Object: return obj_ == o.obj_;
  }
  return false;
}

namespace {
void dump_to(std::string& out, const Json& v, int indent, int level) {
  switch (v.kind()) {
    case Json::Kind::Null: out += "null"; return;
    case Json::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Json::Kind::Number:
      // is_integer() also holds for integral doubles; those must keep their ".0".
      out += v.dump();
      return;
    case Json::Kind::String: dump_string(out, v.as_string()); return;
    case Json::Kind::Array: {
      const Json::Array& a = v.as_array();
      if (a.empty()) { out += "[]"; return; }
      out += '[';
      for (size_t k = 0; k < a.size(); ++k) {
        if (k) out += ',';
        if (indent >= 0) newline(out, indent, level + 1);
        dump_to(out, a[k], indent, level + 1);
      }
      if (indent >= 0) newline(out, indent, level);
      out += ']';
      return;
    }
    case Json::Kind::Object: {
      const Json::Object& o = v.as_object();
      if (o.empty()) { out += "{}"; return; }
      out += '{';
      for (size_t k = 0; k < o.size(); ++k) {
        if (k) out += ',';
        if (indent >= 0) newline(out, indent, level + 1);
        dump_string(out, o[k].first);
        out += indent >= 0 ? ": " : ":";
        dump_to(out, o[k].second, indent, level + 1);
      }
      if (indent >= 0) newline(out, indent, level);
      out += '}';
      return;
    }
  }
}
}  // namespace

std::string Json::dump(int indent) const {
  if (kind_ == Kind::Number) return is_int_ ? std::to_string(int_) : format_double(num_);
  std::string out;
  dump_to(out, *this, indent, 0);
  return out;
}

Json Json::parse(const std::string& text, const std::string& source) {
  return Parser(text, source).parse_document();
}

Json Json::parse_file(const std::string& path) { return parse(read_file(path), path); }

}  // namespace moessm
