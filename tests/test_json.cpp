// Tests for io/json (nlohmann-json underneath): parsing (order, duplicates, escapes, exact
// integers, error positions, byte order mark, bounded files), writing (escaping, round-trip
// doubles, indentation), value semantics and the typed accessors' error messages. Parse error
// texts are nlohmann's ("expected ..."); the SOURCE:LINE:COLUMN in front and "found ..." are ours.
#include "io/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/check.h"
#include "core/rng.h"
#include "io/file_util.h"
#include "expect_error.h"
#include "testing.h"

namespace moessm {
namespace {

// The message of the moessm::Error thrown by f (fails the test when nothing is thrown).
using testing::error_of;

TEST(Json, ParsesScalarsAndContainers) {
  Json j = Json::parse(R"( {"a": 1, "b": [true, false, null], "c": "x", "d": -2.5e3, "e": {}} )");
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 5u);
  EXPECT_EQ(j.at("a").as_int(), 1);
  EXPECT_TRUE(j.at("a").is_integer());
  EXPECT_EQ(j.at("b").size(), 3u);
  EXPECT_TRUE(j.at("b").as_array()[0].as_bool());
  EXPECT_FALSE(j.at("b").as_array()[1].as_bool());
  EXPECT_TRUE(j.at("b").as_array()[2].is_null());
  EXPECT_EQ(j.at("c").as_string(), "x");
  EXPECT_EQ(j.at("d").as_number(), -2500.0);
  EXPECT_TRUE(j.at("e").is_object());
  EXPECT_EQ(j.at("e").size(), 0u);
  EXPECT_EQ(j.get("zzz"), nullptr);
  EXPECT_FALSE(j.has("zzz"));
  EXPECT_TRUE(j.has("c"));
}

TEST(Json, ObjectsKeepInsertionOrder) {
  Json j = Json::parse(R"({"zeta": 1, "alpha": 2, "mid": 3})");
  const auto& o = j.as_object();
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].first, "zeta");
  EXPECT_EQ(o[1].first, "alpha");
  EXPECT_EQ(o[2].first, "mid");
  EXPECT_EQ(j.dump(), R"({"zeta":1,"alpha":2,"mid":3})");

  Json built;
  built.set("b", 1);
  built.set("a", 2);
  built.set("b", 3);  // replace keeps the position
  EXPECT_EQ(built.dump(), R"({"b":3,"a":2})");
}

TEST(Json, DuplicateKeysAreAnError) {
  EXPECT_ERROR_HAS(Json::parse("{\"a\": 1,\n \"a\": 2}", "cfg.json"), "cfg.json:2:2", "duplicate key \"a\"");
  EXPECT_ERROR_HAS(Json::object({{"k", 1}, {"k", 2}}), "duplicate key \"k\"");
  // The position is the duplicate's opening quote, escaped quotes in the key notwithstanding.
  EXPECT_ERROR_HAS(Json::parse(R"({"q\"\\": 1, "q\"\\": 2})"), "1:14", "duplicate key \"q\"\\\"");
  EXPECT_NO_THROW(Json::parse(R"({"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]})"));  // per object
}

TEST(Json, ErrorsNameSourceLineAndColumn) {
  EXPECT_ERROR_HAS(Json::parse("{\n  \"a\": 1,\n  \"b\" 2\n}", "model/config.json"),
                   "model/config.json:3:7", "expected ':'", "found '2'");
  EXPECT_ERROR_HAS(Json::parse("[1, 2,]"), "<string>:1:7", "expected '[', '{', or a literal", "found ']'");
  EXPECT_ERROR_HAS(Json::parse("{\"a\": 1,}"), "1:9", "object key", "expected string literal");
  EXPECT_ERROR_HAS(Json::parse("[1 2]"), "1:4", "parsing array", "expected ']'");
  EXPECT_ERROR_HAS(Json::parse(""), "1:1", "expected '[', '{', or a literal", "end of input");
  // A token cut short by the end of input: the position is the end.
  EXPECT_ERROR_HAS(Json::parse("\"abc"), "1:5", "missing closing quote", "end of input");
  EXPECT_ERROR_HAS(Json::parse("tru"), "1:4", "invalid literal", "'tru'");
  EXPECT_ERROR_HAS(Json::parse("[nul]"), "1:5", "invalid literal", "nul", "found ']'");
  EXPECT_ERROR_HAS(Json::parse("\"a\tb\""), "1:3", "control character");
  EXPECT_ERROR_HAS(Json::parse("\"\\x\""), "1:3", "forbidden character after backslash");
}

TEST(Json, RejectsTrailingGarbage) {
  EXPECT_ERROR_HAS(Json::parse("{} x"), "1:4", "expected end of input", "found 'x'");
  EXPECT_ERROR_HAS(Json::parse("1 2"), "1:3", "expected end of input");
  EXPECT_ERROR_HAS(Json::parse("[1]]"), "1:4");
  EXPECT_ERROR_HAS(Json::parse("truex"), "1:5");
  EXPECT_NO_THROW(Json::parse(" \t\r\n[1]\n\n "));
}

TEST(Json, ByteOrderMarkAtTheStartIsIgnored) {
  EXPECT_EQ(Json::parse("\xEF\xBB\xBF{\"a\": 1}").at("a").as_int(), 1);
  EXPECT_ERROR_HAS(Json::parse("\xEF\xBB\xBF{\n\"a\" 1}", "bom.json"), "bom.json:2:5", "expected ':'");
  EXPECT_ERROR_HAS(Json::parse("[1]\xEF\xBB\xBF"), "1:4", "expected end of input", "byte 0xEF");
}

TEST(Json, StrictNumberGrammar) {
  EXPECT_ERROR_HAS(Json::parse("01"), "1:2", "expected end of input");  // no leading zeros
  EXPECT_ERROR_HAS(Json::parse("1."), "digit after '.'");
  EXPECT_ERROR_HAS(Json::parse("1e"), "exponent");
  EXPECT_ERROR_HAS(Json::parse("-"), "expected digit after '-'");
  EXPECT_ERROR_HAS(Json::parse("+1"), "1:1", "invalid literal", "found '+'");
  EXPECT_ERROR_HAS(Json::parse(".5"), "1:1", "invalid literal");
  EXPECT_ERROR_HAS(Json::parse("NaN"), "1:1", "invalid literal");
  EXPECT_ERROR_HAS(Json::parse("[1e999]", "big.json"), "big.json:1:6", "number overflow", "1e999");
  EXPECT_EQ(Json::parse("1e-400").as_number(), 0.0);  // underflow reads as zero
  EXPECT_EQ(Json::parse("-0").as_int(), 0);
  EXPECT_TRUE(std::signbit(Json::parse("-0.0").as_number()));
}

TEST(Json, IntegersStayExact) {
  // 2^53 + 1 is not representable as a double; it must survive as an integer.
  Json j = Json::parse("[9007199254740993, 9223372036854775807, -9223372036854775808, 3.0, 1e2]");
  const auto& a = j.as_array();
  EXPECT_EQ(a[0].as_int(), 9007199254740993LL);
  EXPECT_EQ(a[1].as_int(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(a[2].as_int(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(j.dump(), "[9007199254740993,9223372036854775807,-9223372036854775808,3.0,100.0]");
  // Integral doubles are integers by value (as_int works) and stay doubles when written.
  EXPECT_TRUE(a[3].is_integer());
  EXPECT_EQ(a[3].as_int(), 3);
  EXPECT_EQ(a[4].as_int(), 100);

  // Past int64: a double, no longer an exact integer type but still a number.
  Json big = Json::parse("18446744073709551616");
  EXPECT_TRUE(big.is_number());
  EXPECT_EQ(big.as_number(), 18446744073709551616.0);
  EXPECT_ERROR_HAS(big.as_int("n"), "n: expected an integer");

  EXPECT_EQ(Json(uint64_t(18446744073709551615ULL)).as_number(), 18446744073709551615.0);
  EXPECT_EQ(Json(size_t(7)).as_int(), 7);
  EXPECT_EQ(Json(7u).as_int(), 7);
  EXPECT_EQ(Json(7LL).as_int(), 7);
  EXPECT_EQ(Json(int64_t(-5)).dump(), "-5");
}

TEST(Json, UnicodeEscapesBecomeUtf8) {
  EXPECT_EQ(Json::parse(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");
  // U+1F600 as a surrogate pair.
  EXPECT_EQ(Json::parse(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(Json::parse(R"("a\u0000b")").as_string(), std::string("a\0b", 3));
  EXPECT_EQ(Json::parse(R"("\"\\\/\b\f\n\r\t")").as_string(), "\"\\/\b\f\n\r\t");
  // Raw UTF-8 passes through unchanged.
  EXPECT_EQ(Json::parse("\"\xE6\x97\xA5\xF0\x9F\x98\x80\"").as_string(), "\xE6\x97\xA5\xF0\x9F\x98\x80");

  EXPECT_ERROR_HAS(Json::parse(R"("\ud83d")"), "must be followed by U+DC00..U+DFFF");
  EXPECT_ERROR_HAS(Json::parse(R"("\ud83dx")"), "must be followed by U+DC00..U+DFFF");
  EXPECT_ERROR_HAS(Json::parse(R"("\ud83d\u0041")"), "must be followed by U+DC00..U+DFFF", "\\u0041");
  EXPECT_ERROR_HAS(Json::parse(R"("\ude00")"), "U+DC00..U+DFFF must follow U+D800..U+DBFF");
  EXPECT_ERROR_HAS(Json::parse(R"("\u12G4")"), "1:6", "hex digits");
  // The column is the first byte that cannot continue the sequence (here the closing quote).
  EXPECT_ERROR_HAS(Json::parse("\"\xC3\""), "1:3", "UTF-8");
  EXPECT_ERROR_HAS(Json::parse("\"\xC0\x80\""), "UTF-8");          // overlong NUL
  EXPECT_ERROR_HAS(Json::parse("\"\xED\xA0\x80\""), "UTF-8");      // encoded surrogate
  EXPECT_ERROR_HAS(Json::parse("\"\xF4\x90\x80\x80\""), "UTF-8");  // above U+10FFFF
}

TEST(Json, DumpEscapesStrings) {
  Json s(std::string("q\"b\\n\nt\tc\x01\x1f" "\xC3\xA9\x7f"));
  std::string d = s.dump();
  EXPECT_EQ(d, "\"q\\\"b\\\\n\\nt\\tc\\u0001\\u001f\xC3\xA9\x7f\"");  // nlohmann: lower-case hex
  EXPECT_EQ(Json::parse(d), s);
  EXPECT_ERROR_HAS(Json(std::string("\xFF")).dump(), "invalid UTF-8");
}

TEST(Json, DoublesRoundTripExactly) {
  Rng rng(1234);
  Json arr = Json::array();
  std::vector<double> values = {0.1, 1.0 / 3.0, 1e-300, 4.9e-324, 1.7976931348623157e308,
                                -123456.789, 1e20, 1e22, 5e-7, 100.0, -0.0, 2.5};
  for (int i = 0; i < 2000; ++i) {
    // Random bit patterns cover all exponents; skip the non-finite ones JSON cannot hold.
    uint64_t bits = rng.next_u64();
    double d;
    std::memcpy(&d, &bits, 8);
    if (std::isfinite(d)) values.push_back(d);
    values.push_back(rng.normal());
  }
  for (double v : values) arr.push_back(v);
  Json back = Json::parse(arr.dump());
  ASSERT_EQ(back.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    double got = back.as_array()[i].as_number();
    EXPECT_EQ(std::memcmp(&got, &values[i], 8), 0) << "value " << values[i] << " came back as " << got;
    EXPECT_FALSE(back.as_array()[i].dump().empty());
  }
  EXPECT_EQ(back, arr);
  // Shortest form, and integral doubles keep a marker that they are doubles.
  EXPECT_EQ(Json(0.1).dump(), "0.1");
  EXPECT_EQ(Json(100.0).dump(), "100.0");
  EXPECT_EQ(Json(-0.0).dump(), "-0.0");
  EXPECT_EQ(Json(1e20).dump(), "1e+20");
  EXPECT_ERROR_HAS(Json(std::nan("")).dump(), "NaN");
  EXPECT_ERROR_HAS(Json(INFINITY).dump(), "inf");
}

TEST(Json, DumpWithIndentAndRoundTrip) {
  Json j = Json::object();
  j.set("name", "moessm");
  j.set("layers", Json::array({Json("mamba"), Json("rom")}));
  j.set("empty_a", Json::array());
  j.set("empty_o", Json::object());
  j.set("nested", Json::object({{"x", 1}, {"y", 2.5}}));
  EXPECT_EQ(j.dump(2),
            "{\n"
            "  \"name\": \"moessm\",\n"
            "  \"layers\": [\n"
            "    \"mamba\",\n"
            "    \"rom\"\n"
            "  ],\n"
            "  \"empty_a\": [],\n"
            "  \"empty_o\": {},\n"
            "  \"nested\": {\n"
            "    \"x\": 1,\n"
            "    \"y\": 2.5\n"
            "  }\n"
            "}");
  EXPECT_EQ(j.dump(), R"({"name":"moessm","layers":["mamba","rom"],"empty_a":[],"empty_o":{},"nested":{"x":1,"y":2.5}})");
  EXPECT_EQ(Json::parse(j.dump(2)), j);
  EXPECT_EQ(Json::parse(j.dump()), j);
  EXPECT_EQ(Json::parse(j.dump()).dump(4), j.dump(4));
}

TEST(Json, CopiesAreDeep) {
  Json a = Json::parse(R"({"list": [1, 2], "obj": {"k": "v"}})");
  Json b = a;
  b.set("extra", true);
  const_cast<Json&>(b.at("list")).push_back(3);
  const_cast<Json&>(b.at("obj")).set("k", "changed");
  EXPECT_EQ(a.dump(), R"({"list":[1,2],"obj":{"k":"v"}})");
  EXPECT_EQ(b.dump(), R"({"list":[1,2,3],"obj":{"k":"changed"},"extra":true})");
  Json c;
  c = a;
  c.as_object_mut().clear();
  EXPECT_EQ(a.size(), 2u);
  EXPECT_NE(a, b);
}

TEST(Json, EqualityIsStructural) {
  EXPECT_EQ(Json(3), Json(3.0));
  EXPECT_NE(Json(3), Json(3.5));
  EXPECT_NE(Json(1), Json(true));
  EXPECT_NE(Json("1"), Json(1));
  EXPECT_EQ(Json::parse(R"({"a":1,"b":2})"), Json::parse(R"({ "a" : 1 , "b" : 2 })"));
  EXPECT_NE(Json::parse(R"({"a":1,"b":2})"), Json::parse(R"({"b":2,"a":1})"));
}

TEST(Json, TypedAccessorsNameWhat) {
  Json cfg = Json::parse(R"({"d_model": "big", "n": 2.5, "flag": 1, "layers": {}})");
  EXPECT_ERROR_HAS(cfg.at("d_model").as_int("config.json: d_model"), "config.json: d_model",
                   "expected an integer", "string \"big\"");
  EXPECT_ERROR_HAS(cfg.at("n").as_int("config.json: n"), "config.json: n", "expected an integer",
                   "number 2.5");
  EXPECT_ERROR_HAS(cfg.at("flag").as_bool("config.json: flag"), "expected a bool", "number 1");
  EXPECT_ERROR_HAS(cfg.at("layers").as_array("config.json: layers"), "config.json: layers",
                   "expected an array", "object with 0 keys");
  EXPECT_ERROR_HAS(cfg.at("n").as_string("x"), "x: expected a string", "number 2.5");
  EXPECT_ERROR_HAS(cfg.at("missing", "config.json"), "config.json", "missing key \"missing\"");
  EXPECT_ERROR_HAS(Json(1).at("k", "cfg"), "cfg: expected an object");
  EXPECT_ERROR_HAS(Json(1).size(), "expected an array or object");
  EXPECT_ERROR_HAS(Json("s").as_array_mut(), "expected an array");
  EXPECT_EQ(Json(1).get("k"), nullptr);
}

TEST(Json, DeepNestingIsRefused) {
  std::string deep(100000, '[');
  EXPECT_ERROR_HAS(Json::parse(deep), "levels of nesting");
  std::string ok = std::string(100, '[') + std::string(100, ']');
  EXPECT_NO_THROW(Json::parse(ok));
}

TEST(Json, ParseFileNamesThePath) {
  std::string dir = testing::temp_dir("json");
  std::string good = path_join(dir, "good.json");
  std::string bad = path_join(dir, "bad.json");
  write_file_atomic(good, std::string("{\"vocab_size\": 50280}\n"));
  write_file_atomic(bad, std::string("{\n  \"vocab_size\": 50280,\n}\n"));
  EXPECT_EQ(Json::parse_file(good).at("vocab_size").as_int(), 50280);
  EXPECT_ERROR_HAS(Json::parse_file(bad), bad + ":3:1", "object key", "expected string literal");
  std::string missing = path_join(dir, "missing.json");
  EXPECT_ERROR_HAS(Json::parse_file(missing), missing, "No such file");
}

TEST(Json, ParseFileIsBounded) {
  // Refused before reading: a device that never ends, a directory, a file over the limit.
  EXPECT_ERROR_HAS(Json::parse_file("/dev/zero"), "'/dev/zero' is not a regular file");
  std::string dir = testing::temp_dir("json_bounded");
  EXPECT_ERROR_HAS(Json::parse_file(dir), dir, "not a regular file");
  std::string huge = path_join(dir, "huge.json");
  write_file_atomic(huge, std::string("{}"));
  std::filesystem::resize_file(huge, Json::kMaxFileBytes + 1);  // sparse: nothing is written
  EXPECT_ERROR_HAS(Json::parse_file(huge), huge, std::to_string(Json::kMaxFileBytes + 1) + " bytes",
                   "limit of " + std::to_string(Json::kMaxFileBytes));
  std::filesystem::resize_file(huge, 2);
  EXPECT_EQ(Json::parse_file(huge).size(), 0u);
}

}  // namespace
}  // namespace moessm
