// Json::dump through nlohmann-json's serializer.
// Contracts: the value is copied into an nlohmann::ordered_json (objects keep their order; an
// integer stays an int64, a double stays a double) and written by nlohmann, which prints a double
// in a short form that reads back bit-identically and keeps ".0" on integral doubles. NaN and
// infinities are refused (nlohmann would write null), and so is a string or key that is not
// valid UTF-8 (nlohmann's strict error handler); both errors say what was wrong.
#include <cmath>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/json.h"

namespace moessm {

struct JsonWriter {
  using NJson = nlohmann::ordered_json;

  static NJson convert(const Json& v) {
    switch (v.kind_) {
      case Json::Kind::Null: return nullptr;
      case Json::Kind::Bool: return v.b_;
      case Json::Kind::Number:
        if (v.is_int_) return v.int_;
        if (!std::isfinite(v.num_))
          FAIL("cannot write ", v.num_, " as JSON: NaN and infinities have no JSON representation");
        return v.num_;
      case Json::Kind::String: return v.str_;
      case Json::Kind::Array: {
        NJson out = NJson::array();
        auto& items = out.get_ref<NJson::array_t&>();
        items.reserve(v.arr_.size());
        for (const Json& e : v.arr_) items.push_back(convert(e));
        return out;
      }
      case Json::Kind::Object: {
        NJson out = NJson::object();
        // ordered_map's own insert looks the key up first (quadratic for a 50k-entry vocab);
        // Json's keys are already unique, so append to the underlying vector directly.
        auto& members = static_cast<NJson::object_t::Container&>(out.get_ref<NJson::object_t&>());
        members.reserve(v.obj_.size());
        for (const auto& kv : v.obj_) members.emplace_back(kv.first, convert(kv.second));
        return out;
      }
    }
    return nullptr;
  }
};

std::string Json::dump(int indent) const {
  JsonWriter::NJson n = JsonWriter::convert(*this);
  try {
    return n.dump(indent);
  } catch (const JsonWriter::NJson::type_error& e) {
    // e.g. "[json.exception.type_error.316] invalid UTF-8 byte at index 0: 0xFF"
    std::string what = e.what();
    size_t cut = what.find("] ");
    FAIL("cannot write JSON: ", cut == std::string::npos ? what : what.substr(cut + 2),
         " (strings and keys must be valid UTF-8)");
  }
}

}  // namespace moessm
