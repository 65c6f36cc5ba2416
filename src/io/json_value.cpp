// moessm::Json's value side: construction, typed access with errors naming `what`, object and
// array helpers, structural equality. Parsing is in io/json_read.cpp, writing in
// io/json_write.cpp (both through nlohmann-json).
#include "io/json.h"

#include <cmath>
#include <limits>
#include <unordered_set>

#include "core/check.h"

namespace moessm {

namespace {

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

}  // namespace moessm
