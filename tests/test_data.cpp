// Tests for the data pipeline: token shards (round trip, every malformed header), the DataLoader
// (determinism, exact resume, target shift, ordered validation windows) and prepare (library and
// CLI, including the error cases). Expected values are computed from the inputs, never pasted.
// moessm's FAIL (core/check.h) and GoogleTest's FAIL share a name; these tests use ADD_FAILURE.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/check.h"
#include "io/json.h"
#include "core/rng.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "io/file_util.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"

namespace moessm {
namespace {

// Runs f, expecting a moessm::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << parts.front() << "'";
  } catch (const Error& e) {
    std::string m = e.what();
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "message: " << m << "\nmissing: " << p;
  }
}

std::vector<int32_t> random_ids(size_t n, uint32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(vocab));
  v.back() = static_cast<int32_t>(vocab - 1);  // the largest id must survive too
  return v;
}

std::vector<int32_t> iota_ids(size_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::shared_ptr<const Shard> mem_shard(std::vector<int32_t> ids, uint32_t vocab) {
  auto s = std::make_shared<Shard>();
  s->header.vocab_size = vocab;
  s->header.num_tokens = ids.size();
  s->ids = std::move(ids);
  return s;
}

// ---- shards -------------------------------------------------------------------------------

void check_round_trip(uint32_t vocab, size_t n, uint32_t expect_width) {
  const std::string dir = testing::temp_dir("shard_rt");
  const std::string path = dir + "/s.bin";
  std::vector<int32_t> ids = random_ids(n, vocab, vocab);
  write_shard(path, ids.data(), ids.size(), vocab, 0x0123456789abcdefull, "bpe gpt2/tokenizer.json");
  EXPECT_EQ(read_file(path).size(), kShardHeaderBytes + n * expect_width);
  Shard s = read_shard(path);
  EXPECT_EQ(s.path, path);
  EXPECT_EQ(s.header.version, kShardVersion);
  EXPECT_EQ(s.header.id_bytes, expect_width);
  EXPECT_EQ(s.header.vocab_size, vocab);
  EXPECT_EQ(s.header.num_tokens, n);
  EXPECT_EQ(s.header.tokenizer_hash, 0x0123456789abcdefull);
  EXPECT_EQ(s.header.tokenizer_desc, "bpe gpt2/tokenizer.json");
  EXPECT_EQ(s.ids, ids);
  ShardHeader h = read_shard_header(path);
  EXPECT_EQ(h.num_tokens, n);
  EXPECT_EQ(h.id_bytes, expect_width);
}

TEST(Shard, RoundTripUint16) {
  check_round_trip(256, 1000, 2);
  check_round_trip(50257, 4097, 2);
  check_round_trip(65535, 300, 2);  // the largest vocabulary stored as uint16
}

TEST(Shard, RoundTripUint32) {
  check_round_trip(65536, 300, 4);  // the smallest vocabulary stored as uint32
  check_round_trip(200000, 5000, 4);
}

TEST(Shard, EmptyShardRoundTrips) {
  const std::string path = testing::temp_dir("shard_empty") + "/e.bin";
  write_shard(path, nullptr, 0, 256, 1, "byte");
  Shard s = read_shard(path);
  EXPECT_EQ(s.header.num_tokens, 0u);
  EXPECT_TRUE(s.ids.empty());
}

TEST(Shard, LittleEndianOnDisk) {
  std::vector<int32_t> ids = {0x1234, 0x0001};
  std::string b = encode_shard(ids.data(), ids.size(), 65535, 0, "");
  EXPECT_EQ(std::memcmp(b.data(), "MOESSMTK", 8), 0);
  EXPECT_EQ((unsigned char)b[8], 1);                      // version, low byte first
  EXPECT_EQ((unsigned char)b[12], 2);                     // id_bytes
  EXPECT_EQ((unsigned char)b[16], 0xFF);                  // vocab 65535 = 0xFFFF
  EXPECT_EQ((unsigned char)b[24], 2);                     // num_tokens
  EXPECT_EQ((unsigned char)b[kShardHeaderBytes], 0x34);   // first id, low byte first
  EXPECT_EQ((unsigned char)b[kShardHeaderBytes + 1], 0x12);
  std::vector<int32_t> wide = {0x00012345};
  std::string w = encode_shard(wide.data(), 1, 0x20000, 0, "");
  EXPECT_EQ((unsigned char)w[kShardHeaderBytes + 0], 0x45);
  EXPECT_EQ((unsigned char)w[kShardHeaderBytes + 2], 0x01);
}

TEST(Shard, WriterRejectsBadInput) {
  const std::string path = testing::temp_dir("shard_w") + "/w.bin";
  std::vector<int32_t> ids = {1, 2, 256};
  expect_error([&] { write_shard(path, ids.data(), ids.size(), 256, 0, "byte"); },
               {path, "token 2", "[0, 256)", "256"});
  ids = {1, -1};
  expect_error([&] { write_shard(path, ids.data(), ids.size(), 256, 0, "byte"); }, {"token 1", "-1"});
  expect_error([&] { write_shard(path, ids.data(), 1, 0, 0, "byte"); }, {"vocab_size", ">= 1"});
  expect_error([&] { write_shard(path, ids.data(), 1, 256, 0, std::string(kShardDescBytes + 1, 'x')); },
               {"tokenizer_desc", "129"});
  EXPECT_FALSE(file_exists(path));  // nothing written on error
}

// One valid shard's bytes, a field patched, written to a file and read: the error must name the
// file, the field and the expected and found values.
class MalformedShard : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("shard_bad");
    ids_ = random_ids(10, 256, 7);
    good_ = encode_shard(ids_.data(), ids_.size(), 256, 42, "byte");
  }
  static void put32(std::string& b, size_t off, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[off + i] = char((v >> (8 * i)) & 0xFF);
  }
  static void put64(std::string& b, size_t off, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[off + i] = char((v >> (8 * i)) & 0xFF);
  }
  // Writes bytes and expects both read_shard and (when header-only is enough) read_shard_header
  // to fail with all of parts plus the path.
  void expect_bad(const std::string& bytes, std::vector<std::string> parts, bool header_detects = true) {
    const std::string path = dir_ + "/bad" + std::to_string(count_++) + ".bin";
    write_file_atomic(path, bytes);
    parts.push_back(path);
    expect_error([&] { read_shard(path); }, parts);
    if (header_detects) expect_error([&] { read_shard_header(path); }, parts);
    else EXPECT_NO_THROW(read_shard_header(path));
  }
  std::string dir_, good_;
  std::vector<int32_t> ids_;
  int count_ = 0;
};

TEST_F(MalformedShard, ShorterThanHeader) {
  expect_bad("", {"header", "256", "found a file of 0 bytes"});
  expect_bad(good_.substr(0, 100), {"header", "256", "100 bytes"});
}

TEST_F(MalformedShard, Magic) {
  std::string b = good_;
  b[0] = 'X';
  expect_bad(b, {"magic", "\"MOESSMTK\"", "\"XOESSMTK\""});
  b = good_;
  b[7] = '\0';
  expect_bad(b, {"magic", "\\x00"});
}

TEST_F(MalformedShard, Version) {
  std::string b = good_;
  put32(b, 8, 2);
  expect_bad(b, {"version", "expected 1", "found 2"});
  put32(b, 8, 0);
  expect_bad(b, {"version", "found 0"});
}

TEST_F(MalformedShard, IdBytes) {
  std::string b = good_;
  put32(b, 12, 3);
  expect_bad(b, {"id_bytes", "expected 2 or 4", "found 3"});
  put32(b, 12, 4);  // a valid width, but not the one vocab 256 implies
  expect_bad(b, {"id_bytes", "expected 2 for vocab_size 256", "found 4"});
}

TEST_F(MalformedShard, VocabSize) {
  std::string b = good_;
  put32(b, 16, 0);
  expect_bad(b, {"vocab_size", ">= 1", "found 0"});
  put32(b, 16, 70000);  // would need 4-byte ids
  expect_bad(b, {"id_bytes", "expected 4 for vocab_size 70000", "found 2"});
}

TEST_F(MalformedShard, DescriptionLengthAndPadding) {
  std::string b = good_;
  put32(b, 20, 129);
  expect_bad(b, {"tokenizer_desc_len", "<= 128", "found 129"});
  b = good_;
  b[40 + 4 + 3] = 'z';  // after the 4-byte "byte"
  expect_bad(b, {"tokenizer_desc padding", "found 0x7a", "offset 47"});
}

TEST_F(MalformedShard, Reserved) {
  std::string b = good_;
  b[255] = 1;
  expect_bad(b, {"reserved", "found 0x1", "offset 255"});
  b = good_;
  b[168] = char(0xff);
  expect_bad(b, {"reserved", "found 0xff", "offset 168"});
}

TEST_F(MalformedShard, NumTokensVsFileSize) {
  expect_bad(good_.substr(0, good_.size() - 2), {"num_tokens", "10 tokens", "found a file of 274 bytes"});
  expect_bad(good_.substr(0, good_.size() - 1), {"num_tokens", "275 bytes"});
  expect_bad(good_ + std::string(2, '\0'), {"num_tokens", "278 bytes"});
  std::string b = good_;
  put64(b, 24, 11);
  expect_bad(b, {"num_tokens", "header says 11", "276 bytes"});
  put64(b, 24, ~uint64_t(0) / 2 + 5);  // n·id_bytes would overflow
  expect_bad(b, {"num_tokens", "276 bytes"});
}

TEST_F(MalformedShard, IdOutOfVocabulary) {
  std::string b = good_;
  b[kShardHeaderBytes + 2 * 6] = char(0x00);
  b[kShardHeaderBytes + 2 * 6 + 1] = char(0x01);  // id 256 at index 6
  expect_bad(b, {"ids[6]", "< vocab_size 256", "found 256"}, /*header_detects=*/false);
}

TEST(Shard, TokenizerHash) {
  EXPECT_EQ(tokenizer_hash("byte"), stream_id("byte"));
  const std::string p = testing::temp_dir("tokhash") + "/t.json";
  write_file_atomic(p, std::string("{\"a\":1}"));
  EXPECT_EQ(tokenizer_hash(p), stream_id("{\"a\":1}"));
  EXPECT_NE(tokenizer_hash(p), tokenizer_hash("byte"));
}

// ---- loader -------------------------------------------------------------------------------

struct Batch {
  std::vector<int32_t> x, y;
  bool operator==(const Batch& o) const { return x == o.x && y == o.y; }
};
Batch draw(DataLoader& dl, int64_t B, int64_t T) {
  Batch b{std::vector<int32_t>(B * T), std::vector<int32_t>(B * T)};
  dl.next_batch(b.x.data(), b.y.data(), B, T);
  return b;
}

TEST(DataLoader, SameSeedSameBatches) {
  auto shard = mem_shard(random_ids(5000, 1000, 3), 1000);
  DataLoader a(shard, 1234), b(shard, 1234);
  for (int s = 0; s < 20; ++s) EXPECT_TRUE(draw(a, 4, 32) == draw(b, 4, 32)) << "step " << s;
  EXPECT_EQ(a.state().step, 20u);
}

TEST(DataLoader, DifferentSeedDifferentBatches) {
  auto shard = mem_shard(iota_ids(100000), 100000);
  DataLoader a(shard, 1), b(shard, 2);
  int same = 0;
  for (int s = 0; s < 10; ++s) same += draw(a, 8, 16) == draw(b, 8, 16);
  EXPECT_EQ(same, 0);
  // Consecutive steps of one loader differ too.
  DataLoader c(shard, 1);
  EXPECT_FALSE(draw(c, 8, 16) == draw(c, 8, 16));
}

TEST(DataLoader, RestoreMidwayContinuesExactly) {
  auto shard = mem_shard(random_ids(3000, 50257, 9), 50257);
  DataLoader a(shard, 77);
  for (int s = 0; s < 7; ++s) draw(a, 3, 24);
  // Save through JSON text, as a checkpoint would.
  const std::string saved = a.state().to_json().dump();
  std::vector<Batch> expect;
  for (int s = 0; s < 5; ++s) expect.push_back(draw(a, 3, 24));

  DataLoader b(shard, 999);  // another seed: restore must replace it
  DataLoader::State st = DataLoader::State::from_json(Json::parse(saved));
  EXPECT_EQ(st.seed, 77u);
  EXPECT_EQ(st.step, 7u);
  EXPECT_EQ(st.num_tokens, 3000u);
  b.restore(st);
  EXPECT_TRUE(b.state() == st);
  for (int s = 0; s < 5; ++s) EXPECT_TRUE(draw(b, 3, 24) == expect[s]) << "step " << 7 + s;
  EXPECT_TRUE(a.state() == b.state());
}

TEST(DataLoader, StateJsonRoundTripsLargeSeeds) {
  DataLoader::State s{~uint64_t(0) - 5, (uint64_t(1) << 40) + 3, 123};
  DataLoader::State r = DataLoader::State::from_json(Json::parse(s.to_json().dump()));
  EXPECT_TRUE(r == s);
  expect_error([] { DataLoader::State::from_json(Json::parse("{\"seed\": 1}")); }, {"step"});
  expect_error([] { DataLoader::State::from_json(Json::parse("[1]")); }, {"data loader state", "object"});
}

TEST(DataLoader, RestoreRejectsOtherShard) {
  auto shard = mem_shard(iota_ids(500), 500);
  DataLoader a(shard, 1);
  DataLoader::State st = a.state();
  st.num_tokens = 499;
  expect_error([&] { a.restore(st); }, {"num_tokens", "499", "500"});
}

TEST(DataLoader, BatchDependsOnlyOnSeedStepRow) {
  auto shard = mem_shard(iota_ids(10000), 10000);
  DataLoader a(shard, 5);
  std::vector<int32_t> x8(8 * 16), y8(8 * 16), x3(3 * 16), y3(3 * 16);
  a.batch_at(41, x8.data(), y8.data(), 8, 16);
  a.batch_at(41, x3.data(), y3.data(), 3, 16);
  EXPECT_TRUE(std::equal(x3.begin(), x3.end(), x8.begin()));  // rows don't depend on B
  EXPECT_EQ(a.state().step, 0u);                               // batch_at does not advance
  DataLoader b(shard, 5);
  b.restore({5, 41, 0});
  Batch nb = draw(b, 8, 16);
  EXPECT_EQ(nb.x, x8);
  EXPECT_EQ(nb.y, y8);
}

TEST(DataLoader, TargetsAreInputsShiftedByOne) {
  // ids = 0..n-1, so every row must be a contiguous in-range window and targets = inputs + 1.
  const int64_t n = 300, B = 16, T = 20;
  auto shard = mem_shard(iota_ids(n), n);
  DataLoader dl(shard, 11);
  std::vector<int> start_seen(n, 0);
  for (int s = 0; s < 200; ++s) {
    Batch b = draw(dl, B, T);
    for (int64_t r = 0; r < B; ++r) {
      const int32_t st = b.x[r * T];
      ASSERT_GE(st, 0);
      ASSERT_LE(st + T, n - 1);  // the window's last target is a real token
      start_seen[st]++;
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_EQ(b.x[r * T + t], st + t);
        ASSERT_EQ(b.y[r * T + t], b.x[r * T + t] + 1);
        if (t + 1 < T) ASSERT_EQ(b.y[r * T + t], b.x[r * T + t + 1]);
      }
    }
  }
  // 3200 draws over 280 possible starts: every start, including both ends, shows up.
  for (int64_t s = 0; s <= n - T - 1; ++s) EXPECT_GT(start_seen[s], 0) << "start " << s;
}

TEST(DataLoader, ShardShorterThanWindowIsAnError) {
  const std::string path = testing::temp_dir("loader_short") + "/tiny.bin";
  std::vector<int32_t> ids = iota_ids(16);
  write_shard(path, ids.data(), ids.size(), 256, 0, "byte");
  DataLoader dl(path, 0);
  std::vector<int32_t> x(16), y(16);
  expect_error([&] { dl.next_batch(x.data(), y.data(), 1, 16); }, {path, "16 tokens", "T+1 = 17"});
  expect_error([&] { dl.val_batches(1, 16); }, {path, "T+1 = 17"});
  EXPECT_NO_THROW(dl.next_batch(x.data(), y.data(), 1, 15));  // exactly T+1 tokens is enough
  expect_error([&] { dl.next_batch(x.data(), y.data(), 0, 15); }, {"B=0"});
}

TEST(DataLoader, ValidationWindowsCoverTheSplitInOrder) {
  const int64_t n = 103, T = 10, B = 3;  // (103-1)/10 = 10 windows -> 4 batches, last with 1 row
  std::vector<int32_t> ids = random_ids(n, 500, 21);
  auto shard = mem_shard(ids, 500);
  DataLoader dl(shard, 0);
  ASSERT_EQ(dl.num_windows(T), 10);
  ASSERT_EQ(dl.val_batches(B, T), 4);
  std::vector<int32_t> all_x, all_y;
  int64_t rows_total = 0;
  for (int64_t i = 0; i < dl.val_batches(B, T); ++i) {
    std::vector<int32_t> x(B * T), y(B * T);
    int64_t rows = dl.val_batch(i, x.data(), y.data(), B, T);
    EXPECT_EQ(rows, i < 3 ? 3 : 1);
    rows_total += rows;
    all_x.insert(all_x.end(), x.begin(), x.begin() + rows * T);
    all_y.insert(all_y.end(), y.begin(), y.begin() + rows * T);
    for (int64_t k = rows * T; k < B * T; ++k) {  // padding rows are ignored by the loss
      EXPECT_EQ(y[k], -1);
      EXPECT_EQ(x[k], 0);
    }
  }
  EXPECT_EQ(rows_total, 10);
  EXPECT_EQ(all_x, std::vector<int32_t>(ids.begin(), ids.begin() + 100));
  EXPECT_EQ(all_y, std::vector<int32_t>(ids.begin() + 1, ids.begin() + 101));
  // Stateless: asking again gives the same batch; out of range is an error.
  std::vector<int32_t> x1(B * T), y1(B * T), x2(B * T), y2(B * T);
  dl.val_batch(1, x1.data(), y1.data(), B, T);
  dl.val_batch(1, x2.data(), y2.data(), B, T);
  EXPECT_EQ(x1, x2);
  expect_error([&] { dl.val_batch(4, x1.data(), y1.data(), B, T); }, {"validation batch index", "found 4"});
  // Exact fit: n-1 divisible by T leaves no token unused.
  auto exact = mem_shard(iota_ids(41), 41);
  EXPECT_EQ(DataLoader(exact, 0).num_windows(10), 4);
}

// ---- prepare -------------------------------------------------------------------------------

std::string write_text(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string p = dir + "/" + name;
  write_file_atomic(p, text);
  return p;
}

std::string sentence_text(int n, int salt) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "Line " + std::to_string(i * 7 + salt) + " of a small test document.\n";
  return s;
}

// The expected joined stream, built from the tokenizer directly.
std::vector<int32_t> expected_join(const Tokenizer& tok, const std::vector<std::string>& texts) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (i > 0 && tok.eot_id() >= 0) out.push_back(tok.eot_id());
    auto ids = tok.encode(texts[i]);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

TEST(Prepare, Utf8Validator) {
  EXPECT_EQ(first_invalid_utf8(""), std::string::npos);
  EXPECT_EQ(first_invalid_utf8("plain ascii\n"), std::string::npos);
  EXPECT_EQ(first_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"), std::string::npos);
  EXPECT_EQ(first_invalid_utf8("ab\xFF"), 2u);                 // never valid
  EXPECT_EQ(first_invalid_utf8("a\x80"), 1u);                  // stray continuation
  EXPECT_EQ(first_invalid_utf8("\xC0\xAF"), 0u);               // overlong '/'
  EXPECT_EQ(first_invalid_utf8("x\xE0\x80\xAF"), 1u);          // overlong 3-byte
  EXPECT_EQ(first_invalid_utf8("xy\xED\xA0\x80"), 2u);         // UTF-16 surrogate
  EXPECT_EQ(first_invalid_utf8("\xF4\x90\x80\x80"), 0u);       // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("ok \xE2\x82"), 3u);            // truncated at the end
  EXPECT_EQ(first_invalid_utf8("ok \xE2(\xAC"), 3u);           // bad continuation
}

TEST(Prepare, ExplicitValFilesByteTokenizer) {
  const std::string dir = testing::temp_dir("prep_val");
  const std::string ta = sentence_text(20, 1), tb = sentence_text(15, 2), tv = sentence_text(10, 3);
  PrepareOptions o;
  o.inputs = {write_text(dir, "a.txt", ta), write_text(dir, "b.txt", tb)};
  o.val_inputs = {write_text(dir, "v.txt", tv)};
  o.inputs.push_back(o.val_inputs[0]);  // also listed as input: it goes to validation only
  o.tokenizer = "byte";
  o.out_dir = dir + "/out";
  PrepareResult r = prepare_data(o);
  auto tok = Tokenizer::load("byte");
  const auto train = expected_join(*tok, {ta, tb}), val = expected_join(*tok, {tv});
  EXPECT_EQ(r.split_rule, "val-files");
  EXPECT_EQ(r.train_tokens, train.size());
  EXPECT_EQ(r.val_tokens, val.size());
  EXPECT_EQ(r.vocab_size, tok->vocab_size());
  EXPECT_EQ(r.input_bytes, ta.size() + tb.size() + tv.size());
  EXPECT_EQ(read_shard(o.out_dir + "/train.bin").ids, train);
  EXPECT_EQ(read_shard(o.out_dir + "/val.bin").ids, val);
  EXPECT_EQ(read_shard(o.out_dir + "/train.bin").header.tokenizer_hash, tokenizer_hash("byte"));

  Json meta = Json::parse_file(o.out_dir + "/meta.json");
  EXPECT_EQ(meta.at("tokenizer").at("kind").as_string(), "byte");
  EXPECT_EQ(meta.at("vocab_size").as_int(), tok->vocab_size());
  EXPECT_EQ(meta.at("train").at("tokens").as_int(), int64_t(train.size()));
  EXPECT_EQ(meta.at("val").at("tokens").as_int(), int64_t(val.size()));
  const auto& src = meta.at("sources").as_array();
  ASSERT_EQ(src.size(), 3u);
  EXPECT_EQ(src[0].at("path").as_string(), o.inputs[0]);
  EXPECT_EQ(src[0].at("bytes").as_int(), int64_t(ta.size()));
  EXPECT_EQ(src[0].at("split").as_string(), "train");
  EXPECT_EQ(src[2].at("split").as_string(), "val");
  EXPECT_FALSE(file_exists(o.out_dir + "/tokenizer.json"));  // nothing to copy for "byte"
  EXPECT_EQ(data_dir_tokenizer(o.out_dir), "byte");
}

TEST(Prepare, PersuasionIsValidationWhenAmongInputs) {
  const std::string dir = testing::temp_dir("prep_pers");
  const std::string te = sentence_text(12, 4), tp = sentence_text(8, 5);
  PrepareOptions o;
  o.inputs = {write_text(dir, "persuasion.txt", tp), write_text(dir, "emma.txt", te)};
  o.out_dir = dir + "/out";
  PrepareResult r = prepare_data(o);
  EXPECT_EQ(r.split_rule, "persuasion");
  EXPECT_EQ(read_shard(o.out_dir + "/val.bin").ids, Tokenizer::load("byte")->encode(tp));
  EXPECT_EQ(read_shard(o.out_dir + "/train.bin").ids, Tokenizer::load("byte")->encode(te));
  // Alone, persuasion.txt falls back to the fraction rule.
  o.inputs = {o.inputs[0]};
  o.val_fraction = 0.25;
  EXPECT_EQ(prepare_data(o).split_rule, "fraction");
}

TEST(Prepare, FractionSplitAndDirectoryInput) {
  const std::string dir = testing::temp_dir("prep_frac");
  const std::string in = dir + "/in";
  make_dirs(in);
  const std::string t1 = sentence_text(40, 6), t2 = sentence_text(30, 7);
  write_text(in, "2.txt", t2);  // directory order is by name, not creation
  write_text(in, "1.txt", t1);
  write_text(in, "skip.md", "not a .txt file");
  PrepareOptions o;
  o.inputs = {in};
  o.val_fraction = 0.25;
  o.out_dir = dir + "/out";
  PrepareResult r = prepare_data(o);
  const auto all = expected_join(*Tokenizer::load("byte"), {t1, t2});
  const uint64_t nval = uint64_t(std::llround(all.size() * 0.25));
  EXPECT_EQ(r.split_rule, "fraction");
  EXPECT_EQ(r.val_tokens, nval);
  EXPECT_EQ(r.train_tokens + r.val_tokens, all.size());
  std::vector<int32_t> joined = read_shard(o.out_dir + "/train.bin").ids;
  auto v = read_shard(o.out_dir + "/val.bin").ids;
  joined.insert(joined.end(), v.begin(), v.end());
  EXPECT_EQ(joined, all);
  ASSERT_EQ(r.sources.size(), 2u);
  EXPECT_EQ(r.sources[0].path, in + "/1.txt");
  EXPECT_EQ(r.sources[0].split, "train");
  EXPECT_EQ(r.sources[1].split, "train+val");  // 25% of the stream lies inside the second file
  Json meta = Json::parse_file(o.out_dir + "/meta.json");
  EXPECT_EQ(meta.at("split").at("val_fraction").as_number(), 0.25);
}

TEST(Prepare, Errors) {
  const std::string dir = testing::temp_dir("prep_err");
  const std::string good = write_text(dir, "good.txt", sentence_text(30, 8));
  PrepareOptions o;
  o.out_dir = dir + "/out";

  o.inputs = {good, write_text(dir, "empty.txt", "")};
  expect_error([&] { prepare_data(o); }, {dir + "/empty.txt", "empty"});

  o.inputs = {write_text(dir, "short.txt", "Too short.")};
  expect_error([&] { prepare_data(o); }, {"too short", "10 tokens", "at least 64"});

  o.inputs = {good};
  o.val_inputs = {write_text(dir, "vshort.txt", "tiny")};
  expect_error([&] { prepare_data(o); }, {"too short", "validation split has 4 tokens", "vshort.txt"});
  o.val_inputs.clear();

  std::string bad = sentence_text(3, 9);
  const size_t off = bad.size() + 6;
  bad += "Hello \xC3\x28 world";  // 0xC3 followed by a non-continuation byte
  o.inputs = {good, write_text(dir, "bad.txt", bad)};
  expect_error([&] { prepare_data(o); }, {dir + "/bad.txt", "UTF-8", "byte offset " + std::to_string(off), "0xc3", "line 4, column 7"});

  o.inputs = {dir + "/missing.txt"};
  expect_error([&] { prepare_data(o); }, {dir + "/missing.txt"});

  o.inputs = {good, good};
  expect_error([&] { prepare_data(o); }, {"listed more than once"});

  o.inputs = {good};
  o.val_inputs = {good};
  expect_error([&] { prepare_data(o); }, {"training split would be empty"});
  o.val_inputs.clear();

  o.val_fraction = 1.5;
  expect_error([&] { prepare_data(o); }, {"--val-fraction", "1.5"});
  EXPECT_FALSE(file_exists(o.out_dir + "/meta.json"));  // no partial data directory
}

// The bundled corpus with the byte tokenizer: counts follow from the file sizes alone.
TEST(Prepare, BundledAustenCorpusByte) {
  const std::string corpus = testing::source_dir() + "/data/corpus/austen";
  PrepareOptions o;
  o.inputs = {corpus};
  o.out_dir = testing::temp_dir("prep_austen") + "/out";
  PrepareResult r = prepare_data(o);
  auto tok = Tokenizer::load("byte");
  uint64_t train_bytes = 0, ntrain = 0;
  for (const char* f : {"emma", "mansfieldpark", "northangerabbey", "prideprejudice", "sensesensibility"}) {
    train_bytes += read_file(corpus + "/" + f + ".txt").size();
    ++ntrain;
  }
  EXPECT_EQ(r.split_rule, "persuasion");
  EXPECT_EQ(r.val_tokens, read_file(corpus + "/persuasion.txt").size());
  EXPECT_EQ(r.train_tokens, train_bytes + (tok->eot_id() >= 0 ? ntrain - 1 : 0));
  DataLoader val(o.out_dir + "/val.bin", 0);
  EXPECT_EQ(val.num_windows(1024), int64_t((r.val_tokens - 1) / 1024));
}

// GPT-2 BPE, when this build has it: the end-of-text id separates documents.
TEST(Prepare, Gpt2JoinsDocumentsWithEndOfText) {
  // Vendored in the repository when the tokenizer work has landed, else the shared data folder.
  std::string tj = testing::source_dir() + "/data/tokenizers/gpt2/tokenizer.json";
  if (!file_exists(tj)) tj = "/work/shared/data/tokenizers/gpt2/tokenizer.json";
  std::unique_ptr<Tokenizer> tok;
  try {
    if (!file_exists(tj)) GTEST_SKIP() << "no GPT-2 tokenizer.json found";
    tok = Tokenizer::load(tj);
  } catch (const Error& e) {
    GTEST_SKIP() << "GPT-2 tokenizer unavailable in this build: " << e.what();
  }
  ASSERT_GE(tok->eot_id(), 0);
  const std::string dir = testing::temp_dir("prep_gpt2");
  const std::string ta = sentence_text(20, 1), tb = sentence_text(20, 2), tv = sentence_text(20, 3);
  PrepareOptions o;
  o.inputs = {write_text(dir, "a.txt", ta), write_text(dir, "b.txt", tb)};
  o.val_inputs = {write_text(dir, "v.txt", tv)};
  o.tokenizer = tj;
  o.out_dir = dir + "/out";
  PrepareResult r = prepare_data(o);
  const auto train = read_shard(o.out_dir + "/train.bin").ids;
  EXPECT_EQ(train, expected_join(*tok, {ta, tb}));
  EXPECT_EQ(std::count(train.begin(), train.end(), tok->eot_id()), 1);
  EXPECT_EQ(r.vocab_size, tok->vocab_size());
  EXPECT_EQ(read_shard_header(o.out_dir + "/train.bin").id_bytes, 2u);
  EXPECT_EQ(read_file(o.out_dir + "/tokenizer.json"), read_file(tj));  // self-describing
  EXPECT_EQ(data_dir_tokenizer(o.out_dir), o.out_dir + "/tokenizer.json");
}

// ---- the CLI --------------------------------------------------------------------------------

TEST(PrepareCli, RunsAndRejectsBadInput) {
  const std::string dir = testing::temp_dir("prep_cli");
  const std::string a = write_text(dir, "a.txt", sentence_text(20, 1));
  const std::string b = write_text(dir, "b.txt", sentence_text(20, 2));
  const std::string v = write_text(dir, "v.txt", sentence_text(20, 3));
  std::string out;

  EXPECT_EQ(testing::run_cli("prepare --help", &out), 0);
  EXPECT_NE(out.find("--val-fraction"), std::string::npos) << out;
  EXPECT_NE(out.find("--tokenizer"), std::string::npos) << out;

  // Comma-separated and repeated --input both count.
  ASSERT_EQ(testing::run_cli("prepare --input " + a + " --input=" + b + " --val " + v +
                                 " --tokenizer byte --out " + dir + "/o1", &out), 0) << out;
  EXPECT_NE(out.find("train"), std::string::npos) << out;
  Json m1 = Json::parse_file(dir + "/o1/meta.json");
  ASSERT_EQ(testing::run_cli("prepare --input " + a + "," + b + " --val " + v + " --out " + dir + "/o2", &out), 0) << out;
  Json m2 = Json::parse_file(dir + "/o2/meta.json");
  EXPECT_EQ(m1.at("train").at("tokens").as_int(), m2.at("train").at("tokens").as_int());
  EXPECT_EQ(m1.at("sources").size(), 3u);
  EXPECT_EQ(read_file(dir + "/o1/train.bin"), read_file(dir + "/o2/train.bin"));
  EXPECT_NE(out.find(std::to_string(m2.at("train").at("tokens").as_int()) + " tokens"), std::string::npos) << out;

  const std::string e = write_text(dir, "e.txt", "");
  EXPECT_NE(testing::run_cli("prepare --input " + e + " --out " + dir + "/o3", &out), 0);
  EXPECT_NE(out.find("empty"), std::string::npos) << out;

  const std::string s = write_text(dir, "s.txt", "short");
  EXPECT_NE(testing::run_cli("prepare --input " + s + " --out " + dir + "/o3", &out), 0);
  EXPECT_NE(out.find("too short"), std::string::npos) << out;

  const std::string bad = write_text(dir, "bad.txt", "abc\xFF");
  EXPECT_NE(testing::run_cli("prepare --input " + a + "," + bad + " --out " + dir + "/o3", &out), 0);
  EXPECT_NE(out.find("bad.txt"), std::string::npos) << out;
  EXPECT_NE(out.find("byte offset 3"), std::string::npos) << out;

  EXPECT_NE(testing::run_cli("prepare --out " + dir + "/o3", &out), 0);
  EXPECT_NE(out.find("--input"), std::string::npos) << out;
  EXPECT_FALSE(file_exists(dir + "/o3/meta.json"));
}

}  // namespace
}  // namespace moessm
