// Tests for io/safetensors (and the io/file_util helpers checkpoints are written through):
// round trips for several dtypes, metadata, reading with conversion, a hand-built file that
// follows the published format byte for byte, and one test per way a file can lie, each
// checking that the error names the file and the tensor.
#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <initializer_list>

#include "core/check.h"
#include "core/rng.h"
#include "io/file_util.h"
#include "expect_error.h"
#include "testing.h"

namespace moessm {
namespace {

using testing::error_of;

// A file in the published layout: u64 little-endian header length, header, data.
std::string make_file(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}

TEST(Safetensors, RoundTripSeveralDtypes) {
  Rng rng(7);
  std::vector<float> f32 = testing::random_vector<float>(6, rng);
  std::vector<double> f64 = testing::random_vector<double>(5, rng);
  std::vector<uint16_t> bf16, f16;
  std::vector<float> src16 = testing::random_vector<float>(4, rng, -3, 3);
  for (float v : src16) {
    bf16.push_back(f32_to_bf16(v));
    f16.push_back(f32_to_f16(v));
  }
  std::vector<int64_t> i64 = {1, -2, 1LL << 40};
  std::vector<int32_t> i32 = {7, -8};
  std::vector<uint8_t> u8 = {0, 255, 3};
  float scalar = 3.25f;

  SafetensorsWriter w;
  w.add("z.f32", DType::F32, {2, 3}, f32.data());
  w.add("a.f64", DType::F64, {5}, f64.data());
  w.add("m.bf16", DType::BF16, {2, 2}, bf16.data());
  w.add("m.f16", DType::F16, {4}, f16.data());
  w.add("ints64", DType::I64, {3}, i64.data());
  w.add("ints32", DType::I32, {1, 2}, i32.data());
  w.add("bytes", DType::U8, {3}, u8.data());
  w.add("scalar", DType::F32, {}, &scalar);
  w.add("empty", DType::F32, {0, 4}, nullptr);
  std::string bytes = w.serialize();

  SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "mem.safetensors");
  EXPECT_EQ(f.path(), "mem.safetensors");
  const char* order[] = {"z.f32", "a.f64", "m.bf16", "m.f16", "ints64", "ints32", "bytes", "scalar", "empty"};
  ASSERT_EQ(f.entries().size(), 9u);
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(f.entries()[i].name, order[i]);  // insertion order

  const SafetensorsEntry* e = f.find("m.bf16");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, DType::BF16);
  EXPECT_EQ(e->shape, Shape({2, 2}));
  EXPECT_EQ(std::memcmp(f.data(*e), bf16.data(), 8), 0);
  EXPECT_EQ(std::memcmp(f.data(*f.find("ints64")), i64.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.data(*f.find("ints32")), i32.data(), 8), 0);
  EXPECT_EQ(std::memcmp(f.data(*f.find("bytes")), u8.data(), 3), 0);
  EXPECT_EQ(f.find("empty")->shape, Shape({0, 4}));
  EXPECT_EQ(f.find("nope"), nullptr);

  std::vector<float> got(6);
  f.read_into("z.f32", {2, 3}, got.data());
  EXPECT_EQ(got, f32);
  std::vector<double> gotd(5);
  f.read_into("a.f64", {5}, gotd.data());
  EXPECT_EQ(gotd, f64);
  std::vector<float> got16(4);
  f.read_into("m.bf16", {2, 2}, got16.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got16[i], bf16_to_f32(bf16[i]));
  std::vector<double> got16d(4);
  f.read_into("m.f16", {4}, got16d.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got16d[i], double(f16_to_f32(f16[i])));
  std::vector<float> down(5);
  f.read_into("a.f64", {5}, down.data());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(down[i], float(f64[i]));
  std::vector<double> up(6);
  f.read_into("z.f32", {2, 3}, up.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(up[i], double(f32[i]));
  float s = 0;
  f.read_into("scalar", {}, &s);
  EXPECT_EQ(s, 3.25f);
  f.read_into<float>("empty", {0, 4}, nullptr);
}

TEST(Safetensors, LayoutFollowsTheFormat) {
  std::vector<float> a = {1.0f, 2.0f};
  std::vector<uint16_t> b = {f32_to_bf16(0.5f)};
  SafetensorsWriter w;
  w.add("a", DType::F32, {2}, a.data());
  w.add("b", DType::BF16, {1}, b.data());
  std::string bytes = w.serialize();
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header = bytes.substr(8, n);
  std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}})";
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.find_first_not_of(' ', json.size()), std::string::npos);  // space padding
  EXPECT_EQ(bytes.size(), 8 + n + 10);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, a.data(), 8), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + 8, b.data(), 2), 0);
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);  // omitted when empty

  // A file written by hand from the specification (unpadded header, metadata last) reads.
  float v[3] = {1.5f, -2.0f, 0.25f};
  std::string hand = make_file(
      R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}})",
      std::string(reinterpret_cast<const char*>(v), 12));
  SafetensorsFile f = SafetensorsFile::from_bytes(hand, "hand.safetensors");
  float got[3];
  f.read_into("w", {3}, got);
  EXPECT_EQ(std::memcmp(got, v, 12), 0);
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST(Safetensors, MetadataRoundTrip) {
  float x = 1;
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("config", R"({"d_model": 64, "note": "quotes \" and \\ kept"})");
  w.set_metadata("step", "1200");
  w.set_metadata("step", "1300");  // replaces
  w.add("x", DType::F32, {1}, &x);
  SafetensorsFile f = SafetensorsFile::from_bytes(w.serialize(), "meta.safetensors");
  ASSERT_EQ(f.metadata().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("config"), R"({"d_model": 64, "note": "quotes \" and \\ kept"})");
  EXPECT_EQ(f.metadata().at("step"), "1300");
  EXPECT_EQ(f.entries().size(), 1u);
}

TEST(Safetensors, WriteAndOpenFile) {
  std::string dir = testing::temp_dir("safetensors");
  std::string path = path_join(dir, "model.safetensors");
  std::vector<float> w1 = {1, 2, 3, 4};
  SafetensorsWriter w;
  w.add("backbone.embeddings.weight", DType::F32, {2, 2}, w1.data());
  w.set_metadata("format", "pt");
  w.write(path);
  w1[0] = 99;  // rewriting replaces the file atomically
  w.write(path);
  EXPECT_FALSE(file_exists(path + ".tmp." + std::to_string(::getpid())));
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  std::vector<float> got(4);
  f.read_into("backbone.embeddings.weight", {2, 2}, got.data());
  EXPECT_EQ(got, w1);
  EXPECT_ERROR_HAS(SafetensorsFile::open(path_join(dir, "missing.safetensors")), "missing.safetensors",
                   "No such file");
  // A corrupt file on disk: the error names the path.
  std::string bad = path_join(dir, "bad.safetensors");
  write_file_atomic(bad, std::string("\x10\x00\x00", 3));
  EXPECT_ERROR_HAS(SafetensorsFile::open(bad), bad, "expected at least 8");
}

TEST(Safetensors, ReadIntoChecksPresenceShapeAndDtype) {
  std::vector<float> a(6, 1.0f);
  int64_t ids[2] = {1, 2};
  SafetensorsWriter w;
  w.add("a", DType::F32, {2, 3}, a.data());
  w.add("ids", DType::I64, {2}, ids);
  SafetensorsFile f = SafetensorsFile::from_bytes(w.serialize(), "ckpt.safetensors");
  std::vector<float> out(6);
  EXPECT_ERROR_HAS(f.read_into("b", {2, 3}, out.data()), "missing tensor 'b' in ckpt.safetensors");
  EXPECT_ERROR_HAS(f.read_into("a", {3, 2}, out.data()),
                   "tensor 'a' in ckpt.safetensors has shape [2, 3], expected [3, 2]");
  EXPECT_ERROR_HAS(f.read_into("a", {6}, out.data()), "has shape [2, 3], expected [6]");
  EXPECT_ERROR_HAS(f.read_into("ids", {2}, out.data()), "tensor 'ids' in ckpt.safetensors",
                   "dtype I64", "expected a floating dtype");
}

TEST(Safetensors, EmptyTensorsReadIntoNullDestination) {
  // An empty tensor's destination is often an empty vector's data(), i.e. nullptr. Before the
  // fix read_into passed it to memcpy (undefined even for 0 bytes; UBSan: nonnull-attribute).
  SafetensorsWriter w;
  w.add("e32", DType::F32, {0}, nullptr);
  w.add("e64", DType::F64, {2, 0}, nullptr);
  w.add("e16", DType::BF16, {0, 3}, nullptr);
  float one = 1.0f;
  w.add("x", DType::F32, {1}, &one);
  SafetensorsFile f = SafetensorsFile::from_bytes(w.serialize(), "empty.safetensors");
  ASSERT_EQ(f.entries().size(), 4u);
  std::vector<float> none_f;
  std::vector<double> none_d;
  f.read_into<float>("e32", {0}, none_f.data());
  f.read_into<double>("e32", {0}, none_d.data());
  f.read_into<float>("e64", {2, 0}, none_f.data());
  f.read_into<double>("e64", {2, 0}, none_d.data());
  f.read_into<float>("e16", {0, 3}, none_f.data());
  float x = 0;
  f.read_into<float>("x", {1}, &x);
  EXPECT_EQ(x, 1.0f);
  EXPECT_EQ(f.find("e32")->begin, f.find("e32")->end);
}

TEST(Safetensors, WriterRejectsBadInput) {
  float x = 0;
  SafetensorsWriter w;
  w.add("x", DType::F32, {1}, &x);
  EXPECT_ERROR_HAS(w.add("x", DType::F32, {1}, &x), "tensor 'x' added twice");
  EXPECT_ERROR_HAS(w.add("__metadata__", DType::F32, {1}, &x), "reserved");
  EXPECT_ERROR_HAS(w.add("y", DType::F32, {2}, nullptr), "tensor 'y'", "no data");
  EXPECT_ERROR_HAS(w.add("", DType::F32, {1}, &x), "empty tensor name");
}

// ---- one test per lie ---------------------------------------------------------------------

const std::string kFile = "lying.safetensors";
const std::string kGoodEntry = R"("ok":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

TEST(SafetensorsLies, FileShorterThanEightBytes) {
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes("", kFile), kFile, "file is 0 bytes", "at least 8");
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes("abcdefg", kFile), kFile, "file is 7 bytes");
}

TEST(SafetensorsLies, HeaderLengthPastEndOfFile) {
  std::string bytes = make_file("{}", "");
  uint64_t n = 1000;
  std::memcpy(&bytes[0], &n, 8);
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(bytes, kFile), kFile, "header length is 1000",
                   "only 2 bytes follow");
}

TEST(SafetensorsLies, AbsurdHeaderLength) {
  std::string bytes = make_file("{}", "");
  uint64_t n = 1ULL << 62;
  std::memcpy(&bytes[0], &n, 8);
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(bytes, kFile), kFile, "header length is 4611686018427387904",
                   "expected at most");
}

TEST(SafetensorsLies, HeaderNotJson) {
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file("{\"a\": nope}", ""), kFile),
                   kFile + " (safetensors header):1:8", "invalid literal", "found 'o'");  // where "nope" stops being null
  // Truncated header text.
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file("{" + kGoodEntry, std::string(8, '\0')), kFile),
                   kFile, "unexpected end of input; expected '}'");
}

TEST(SafetensorsLies, HeaderNotAnObject) {
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file("[1, 2]", ""), kFile), kFile,
                   "expected a JSON object, found array");
}

TEST(SafetensorsLies, EntryNotAnObject) {
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(R"({"w": 3})", ""), kFile), kFile,
                   "tensor 'w'", "expected an object");
}

TEST(SafetensorsLies, MissingDtype) {
  std::string h = R"({"w":{"shape":[2],"data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(8, '\0')), kFile), kFile,
                   "tensor 'w'", "missing field \"dtype\"");
}

TEST(SafetensorsLies, MissingShape) {
  std::string h = R"({"w":{"dtype":"F32","data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(8, '\0')), kFile), kFile,
                   "tensor 'w'", "missing field \"shape\"");
}

TEST(SafetensorsLies, MissingDataOffsets) {
  std::string h = R"({"w":{"dtype":"F32","shape":[2]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(8, '\0')), kFile), kFile,
                   "tensor 'w'", "missing field \"data_offsets\"");
}

TEST(SafetensorsLies, UnknownDtype) {
  std::string h = R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(2, '\0')), kFile), kFile,
                   "tensor 'w'", "unknown dtype \"F8_E4M3\"", "expected one of");
  std::string h2 = R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h2, std::string(8, '\0')), kFile), kFile,
                   "tensor 'w': dtype", "expected a string", "number 32");
}

TEST(SafetensorsLies, BadShape) {
  std::string neg = R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(neg, std::string(8, '\0')), kFile), kFile,
                   "tensor 'w': shape[1]", "non-negative", "-1");
  std::string frac = R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(frac, std::string(8, '\0')), kFile),
                   "tensor 'w': shape[0]", "expected an integer", "2.5");
  std::string str = R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(str, std::string(8, '\0')), kFile),
                   "tensor 'w': shape", "expected an array");
  // A shape whose byte count overflows 64 bits must not wrap around to a small number.
  std::string huge =
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(huge, ""), kFile), kFile, "tensor 'w'",
                   "larger than any file");
  // A zero dimension empties the tensor but does not excuse the others from counting in int64.
  std::string huge_empty =
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(huge_empty, ""), kFile), kFile,
                   "tensor 'w'", "[4294967296, 4294967296, 0]", "larger than any file");
  std::string empty = R"({"w":{"dtype":"F32","shape":[3,0,5],"data_offsets":[0,0]}})";
  SafetensorsFile f = SafetensorsFile::from_bytes(make_file(empty, ""), kFile);
  ASSERT_NE(f.find("w"), nullptr);
  EXPECT_EQ(f.find("w")->shape, (Shape{3, 0, 5}));
}

TEST(SafetensorsLies, BadDataOffsets) {
  std::string three = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(three, std::string(8, '\0')), kFile),
                   "tensor 'w'", "expected [begin, end], found 3 elements");
  std::string neg = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(neg, std::string(8, '\0')), kFile),
                   "tensor 'w': data_offsets[0]", "non-negative");
}

TEST(SafetensorsLies, BeginAfterEnd) {
  std::string h = R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(8, '\0')), kFile), kFile,
                   "tensor 'w'", "data_offsets [8, 0]", "begin <= end");
}

TEST(SafetensorsLies, OffsetsOutsideDataSection) {
  std::string h = "{" + kGoodEntry + R"(,"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(12, '\0')), kFile), kFile,
                   "tensor 'w'", "data_offsets [8, 16]", "past the end of the data section (12 bytes)");
}

TEST(SafetensorsLies, ByteCountDisagreesWithShape) {
  std::string h = R"({"w":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(12, '\0')), kFile), kFile,
                   "tensor 'w'", "cover 8 bytes, expected 12", "[3, 2]", "BF16");
}

TEST(SafetensorsLies, OverlappingTensors) {
  std::string h = R"({"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                  R"("third":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},)"
                  R"("second":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(24, '\0')), kFile), kFile,
                   "'first' (bytes [0, 16])", "'second' (bytes [12, 20])", "overlap");
  // A tensor nested inside an earlier, longer one.
  std::string nested = R"({"big":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},)"
                       R"("a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(nested, std::string(10, '\0')), kFile),
                   "'big'", "'a'", "overlap");
  // Empty tensors share an offset with their neighbours without overlapping.
  std::string empty = R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                      R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(make_file(empty, std::string(8, '\0')), kFile));
}

TEST(SafetensorsLies, DuplicateTensorName) {
  std::string h = "{" + kGoodEntry + "," + kGoodEntry + "}";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(8, '\0')), kFile), kFile,
                   "duplicate key \"ok\"");
}

TEST(SafetensorsLies, MetadataNotStrings) {
  std::string h = "{" + kGoodEntry + R"(,"__metadata__":{"step":1200}})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h, std::string(8, '\0')), kFile), kFile,
                   "__metadata__: key \"step\"", "expected a string", "number 1200");
  std::string h2 = "{" + kGoodEntry + R"(,"__metadata__":["x"]})";
  EXPECT_ERROR_HAS(SafetensorsFile::from_bytes(make_file(h2, std::string(8, '\0')), kFile), kFile,
                   "__metadata__", "expected an object");
}

// ---- io/file_util -------------------------------------------------------------------------

TEST(FileUtil, PathJoin) {
  EXPECT_EQ(path_join("a", "b"), "a/b");
  EXPECT_EQ(path_join("a/", "b"), "a/b");
  EXPECT_EQ(path_join("", "b"), "b");
  EXPECT_EQ(path_join("a", ""), "a");
  EXPECT_EQ(path_join("a", "/abs"), "/abs");
}

TEST(FileUtil, MakeDirsWriteAndRead) {
  std::string dir = testing::temp_dir("file_util");
  std::string deep = path_join(dir, "x/y/z");
  make_dirs(deep);
  make_dirs(deep + "/");  // idempotent, trailing slash fine
  EXPECT_TRUE(is_directory(deep));
  std::string path = path_join(deep, "f.bin");
  EXPECT_FALSE(file_exists(path));
  std::string payload("a\0b\xff", 4);
  write_file_atomic(path, payload);
  EXPECT_TRUE(file_exists(path));
  EXPECT_FALSE(is_directory(path));
  EXPECT_EQ(read_file(path), payload);
  write_file_atomic(path, std::string("second"));
  EXPECT_EQ(read_file(path), "second");
  write_file_atomic(path, nullptr, 0);
  EXPECT_EQ(read_file(path), "");
  EXPECT_FALSE(file_exists(path + ".tmp." + std::to_string(::getpid())));

  // Errors name the path and the reason.
  EXPECT_ERROR_HAS(make_dirs(path + "/sub"), path, "not a directory");
  EXPECT_ERROR_HAS(read_file(path_join(dir, "nope")), path_join(dir, "nope"), "No such file");
  EXPECT_ERROR_HAS(read_file(dir), dir, "Is a directory");
  std::string unwritable = path_join(dir, "no/such/dir/f.bin");
  EXPECT_ERROR_HAS(write_file_atomic(unwritable, std::string("x")), unwritable, "No such file");
}

}  // namespace
}  // namespace moessm
