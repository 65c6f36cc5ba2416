// moessm::Json: a JSON value with typed access whose errors name what was being read.
// Parsing and writing go through nlohmann-json (io/json_read.cpp, io/json_write.cpp); this type
// is the tree callers hold, so subtrees can be handed out as const Json& / const Json*.
// Objects keep insertion order (so written configs read like the input); a duplicate key is a
// parse error. Numbers keep whether they were written as integers. Parse errors name the source
// (a file path or "<string>"), the line and column, and what was expected.
// Json has value semantics: a copy is a deep copy (nothing is shared between copies).
// Integers that fit int64 are kept exactly; other numbers are doubles. dump() writes integers
// as integers and doubles in a form that parses back to the same double (a double with an
// integral value keeps a ".0" so it stays a double); it refuses NaN and infinities, which JSON
// cannot represent, and strings that are not valid UTF-8.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>     // kept: users may rely on it through this header
#include <memory>  // kept: as above
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace moessm {

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;                            // null
  Json(std::nullptr_t) {}
  Json(bool b) : kind_(Kind::Bool), b_(b) {}
  Json(int v) : kind_(Kind::Number), num_(v), is_int_(true), int_(v) {}
  Json(int64_t v) : kind_(Kind::Number), num_(static_cast<double>(v)), is_int_(true), int_(v) {}
  Json(uint64_t v);  // values above INT64_MAX become (inexact) doubles, never wrap around
  // Any other integer type (unsigned, long long, size_t where it is not uint64_t, ...).
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Json(T v) : Json(static_cast<std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>(v)) {}
  Json(double v) : kind_(Kind::Number), num_(v) {}
  Json(const char* s) : kind_(Kind::String), str_(s) {}
  Json(std::string s) : kind_(Kind::String), str_(std::move(s)) {}
  static Json array(Array a = {});
  static Json object(Object o = {});

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_integer() const;   // a number with an exact integer value
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }
  const char* kind_name() const;  // "null", "bool", "number", "string", "array", "object"

  // Typed access; a wrong kind throws moessm::Error naming `what` (e.g. "config.json: d_model").
  bool as_bool(const std::string& what = "value") const;
  double as_number(const std::string& what = "value") const;
  int64_t as_int(const std::string& what = "value") const;  // must be an exact integer
  const std::string& as_string(const std::string& what = "value") const;
  const Array& as_array(const std::string& what = "value") const;
  const Object& as_object(const std::string& what = "value") const;
  Array& as_array_mut();    // a null becomes an empty array first; other kinds throw
  Object& as_object_mut();  // a null becomes an empty object first; other kinds throw

  // Object helpers.
  bool has(const std::string& key) const;
  const Json* get(const std::string& key) const;     // nullptr when absent or not an object
  const Json& at(const std::string& key, const std::string& what = "object") const;  // throws if absent
  Json& set(const std::string& key, Json value);     // insert or replace; returns the stored value
  void push_back(Json value);                         // arrays
  size_t size() const;                                // array / object length (other kinds throw)

  std::string dump(int indent = -1) const;  // indent < 0: compact; numbers round-trip exactly

  // Structural equality: same kind and contents, object keys in the same order. Numbers compare
  // by exact value (Json(3) == Json(3.0)).
  bool operator==(const Json& o) const;
  bool operator!=(const Json& o) const { return !(*this == o); }

  // Strict RFC 8259 (a UTF-8 byte order mark at the start is skipped); at most kMaxDepth levels
  // of nesting. Errors read "SOURCE:LINE:COLUMN: <what the parser expected>; found <what is there>".
  static Json parse(const std::string& text, const std::string& source = "<string>");
  // Reads PATH (a regular file of at most kMaxFileBytes, checked before reading) and parses it;
  // errors name the path.
  static Json parse_file(const std::string& path);

  static constexpr int kMaxDepth = 512;                          // deeper nesting is refused
  static constexpr size_t kMaxFileBytes = size_t{256} << 20;    // parse_file's limit (256 MiB)

 private:
  friend struct JsonWriter;  // io/json_write.cpp: reads the number representation for dump()
  Kind kind_ = Kind::Null;
  bool b_ = false;
  double num_ = 0;
  bool is_int_ = false;
  int64_t int_ = 0;
  std::string str_;
  Array arr_;   // std::vector of an incomplete type is allowed as a member since C++17
  Object obj_;
};

}  // namespace moessm
