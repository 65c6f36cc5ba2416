// Tests for src/tokenizer: the byte tokenizer, the GPT-2 byte-level BPE read from the vendored
// tokenizer.json (reference encodings, special tokens, whole-corpus round trip and speed, Unicode
// and whitespace edge cases), the BPE trainer (exact vocab size, determinism, tie rule, a naive
// recount-everything trainer as the reference for the incremental one, reload) and the errors
// for bad inputs, plus the `moessm tokenizer` CLI.
// Golden ids come from outside references: the README's encodings (three tokenizers agree) and,
// for the edge cases and per-novel token counts, tokenizers.js (npm @huggingface/tokenizers
// 0.2.0) with its ByteLevel regex using \p{White_Space}, the Oniguruma \s that HF's Rust
// tokenizers uses (JavaScript's own \s differs on U+FEFF and U+0085).
// moessm's FAIL (core/check.h) and GoogleTest's FAIL share a name; these tests use ADD_FAILURE.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "core/check.h"
#include "io/json.h"
#include "io/file_util.h"
#include "testing.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace moessm {
namespace {

using Ids = std::vector<int32_t>;

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

std::string gpt2_path() { return path_join(testing::source_dir(), "data/tokenizers/gpt2/tokenizer.json"); }

std::string corpus_dir() {
  std::string d = path_join(testing::source_dir(), "data/corpus/austen");
  if (is_directory(d)) return d;
  return "/work/shared/data/corpus/austen";
}

std::vector<std::string> corpus_files() {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(corpus_dir()))
    if (e.path().extension() == ".txt") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// Loaded once: parsing the 2 MB tokenizer.json is the slow part.
const BpeTokenizer& gpt2() {
  static std::unique_ptr<BpeTokenizer> t = BpeTokenizer::from_file(gpt2_path());
  return *t;
}

bool have_pcre2() { return byte_level::have_regex(); }
#define REQUIRE_PCRE2() \
  if (!have_pcre2()) GTEST_SKIP() << "built without PCRE2: byte-level BPE unavailable"

// ---- byte tokenizer -------------------------------------------------------------------------

TEST(ByteTokenizer, IdsAreBytesAndDecodeIsRaw) {
  auto t = Tokenizer::load("byte");
  EXPECT_EQ(t->kind(), "byte");
  EXPECT_EQ(t->vocab_size(), 256);
  EXPECT_EQ(t->eot_id(), -1);
  const std::string text("A\xC3\xA9\0\xFF\n", 6);  // includes NUL and invalid UTF-8
  Ids ids = t->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(text[i]));
  EXPECT_EQ(t->decode(ids), text);
  EXPECT_TRUE(t->encode("").empty());
  expect_error([&] { t->decode({65, 256}); }, {"256", "position 1"});
  expect_error([&] { t->decode({-1}); }, {"-1"});
}

TEST(TokenizerLoad, DispatchAndMissingPath) {
  expect_error([] { Tokenizer::load(""); }, {"byte"});
  expect_error([] { Tokenizer::load("/nonexistent/dir/tokenizer.json"); }, {"/nonexistent/dir/tokenizer.json"});
  expect_error([] { Tokenizer::load(testing::source_dir()); }, {testing::source_dir(), "directory"});
  if (!have_pcre2()) {
    expect_error([] { Tokenizer::load(gpt2_path()); }, {"PCRE2"});
    EXPECT_EQ(Tokenizer::load("byte")->vocab_size(), 256);
  }
}

// ---- GPT-2 reference encodings --------------------------------------------------------------

TEST(Gpt2, ReferenceEncodings) {
  REQUIRE_PCRE2();
  auto t = Tokenizer::load(gpt2_path());
  EXPECT_EQ(t->kind(), "bpe");
  EXPECT_EQ(t->vocab_size(), 50257);
  EXPECT_EQ(t->eot_id(), 50256);
  EXPECT_EQ(t->encode("Hello world"), (Ids{15496, 995}));
  const std::string austen =
      "It is a truth universally acknowledged, that a single man in possession\n"
      "of a good fortune, must be in want of a wife.";
  const Ids want{1026, 318,  257, 3872, 26208, 10810, 11,  326, 257, 2060, 582, 287, 7797, 198,
                 1659, 257,  922, 15807, 11,   1276, 307, 287, 765, 286,  257, 3656, 13};
  EXPECT_EQ(t->encode(austen), want);
  EXPECT_EQ(t->decode(want), austen);
  EXPECT_TRUE(t->encode("").empty());
  EXPECT_EQ(t->decode({}), "");
}

TEST(Gpt2, EdgeCasesMatchReference) {
  REQUIRE_PCRE2();
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"\U0001F600\U0001F44D\U0001F3FD \U0001F468\u200D\U0001F469\u200D\U0001F467",
       {47249, 222, 41840, 235, 8582, 237, 121, 50169, 101, 447, 235, 41840, 102, 447, 235, 41840, 100}},
      {"Hello  world\n\n  x\t\n", {15496, 220, 995, 628, 220, 2124, 197, 198}},
      {"\u00a0nbsp \xC2\x85nel\u3000end", {1849, 77, 24145, 220, 126, 227, 4954, 5099, 222, 437}},
      {"don't DON'T I'll we're", {9099, 470, 23917, 6, 51, 314, 1183, 356, 821}},
      {"\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u6807\u70b9\u3002",
       {40792, 23877, 229, 27764, 245, 163, 105, 99, 38184, 233, 46237, 243, 171, 120, 234, 43718, 229, 163, 224,
        117, 16764}},
      {"e\u0301 \ufb01 \U0001D7D9\U0001D7DA\U0001D7DB \u0661\u0662\u0663",
       {68, 136, 223, 27332, 105, 223, 220, 47728, 253, 247, 47728, 253, 248, 47728, 253, 249, 18923, 94, 149, 95,
        149, 96}},
      {"   leading and trailing   ", {220, 220, 3756, 290, 25462, 220, 220, 220}},
      {" <|endoftext|> x<|endoftext|>", {220, 50256, 2124, 50256}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(gpt2().encode(c.first), c.second) << "text: " << c.first;
    EXPECT_EQ(gpt2().decode(c.second), c.first);
  }
}

TEST(Gpt2, SpecialTokenIsCutOutBeforePreTokenization) {
  REQUIRE_PCRE2();
  const BpeTokenizer& t = gpt2();
  const std::string a = "The end.", b = "\nChapter 2";
  Ids want = t.encode(a);
  want.push_back(50256);
  for (int32_t id : t.encode(b)) want.push_back(id);
  EXPECT_EQ(t.encode(a + "<|endoftext|>" + b), want);
  EXPECT_EQ(t.encode("<|endoftext|><|endoftext|>"), (Ids{50256, 50256}));
  EXPECT_EQ(t.token_to_id("<|endoftext|>"), 50256);
  EXPECT_EQ(t.id_to_token(50256), "<|endoftext|>");
  EXPECT_EQ(t.decode({50256}), "<|endoftext|>");
  // An incomplete marker is ordinary text.
  Ids partial = t.encode("<|endoftext|");
  EXPECT_EQ(std::count(partial.begin(), partial.end(), 50256), 0);
  EXPECT_EQ(t.decode(partial), "<|endoftext|");
}

TEST(Gpt2, ByteLevelTables) {
  // GPT-2's first 256 ids are the bytes in base_order(), spelled by byte_to_text.
  REQUIRE_PCRE2();
  const auto& order = byte_level::base_order();
  std::set<int> seen;
  for (int i = 0; i < 256; ++i) {
    seen.insert(order[i]);
    EXPECT_EQ(gpt2().id_to_token(i), byte_level::byte_to_text(order[i])) << i;
    EXPECT_EQ(byte_level::byte_from_codepoint(byte_level::byte_to_codepoint(static_cast<uint8_t>(i))), i);
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(byte_level::byte_to_text(' '), "\u0120");  // "Ġ"
  EXPECT_EQ(byte_level::byte_to_text('\n'), "\u010a");  // "Ċ"
}

TEST(Gpt2, InvalidUtf8AndPartialCharacters) {
  REQUIRE_PCRE2();
  const BpeTokenizer& t = gpt2();
  // Invalid UTF-8 never matches the pre-tokenizer regex; it still encodes, and decode() (raw
  // bytes) gives it back.
  const std::string bad = std::string("ok \xFF\xFE broken \xE2\x82 end") + std::string(1, '\0');
  Ids ids = t.encode(bad);
  EXPECT_EQ(t.decode(ids), bad);
  // One token of a multi-byte character: raw bytes from decode(), U+FFFD from decode_lossy().
  Ids emoji = t.encode("\U0001F600");
  ASSERT_GE(emoji.size(), 2u);
  EXPECT_EQ(t.decode({emoji[0]}), std::string("\U0001F600").substr(0, t.decode({emoji[0]}).size()));
  EXPECT_EQ(t.decode_lossy({emoji[0]}), "\uFFFD");
  EXPECT_EQ(t.decode_lossy(emoji), "\U0001F600");
  std::string joined;
  for (int32_t id : emoji) joined += t.decode({id});
  EXPECT_EQ(joined, "\U0001F600");
  expect_error([&] { t.decode({15496, 50257}); }, {"50257", "position 1"});
  expect_error([&] { t.decode({-3}); }, {"-3"});
}

// The whole corpus: exact round trip, token counts from tokenizers.js, and encode speed.
TEST(Gpt2, CorpusRoundTripCountsAndSpeed) {
  REQUIRE_PCRE2();
  const std::map<std::string, size_t> want = {
      {"emma.txt", 220986},         {"mansfieldpark.txt", 216334}, {"northangerabbey.txt", 105383},
      {"persuasion.txt", 115079},   {"prideprejudice.txt", 167305}, {"sensesensibility.txt", 168241}};
  const BpeTokenizer& t = gpt2();
  size_t bytes = 0, tokens = 0;
  double enc_s = 0, enc_cpu = 0;  // wall and CPU time (the CPU time is robust to a busy machine)
  for (const std::string& f : corpus_files()) {
    const std::string text = read_file(f);
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    Ids ids = t.encode(text);
    enc_cpu += double(std::clock() - c0) / CLOCKS_PER_SEC;
    enc_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(t.decode(ids) == text) << f << ": decode(encode(text)) differs";
    const std::string name = std::filesystem::path(f).filename().string();
    if (want.count(name)) EXPECT_EQ(ids.size(), want.at(name)) << name;
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 50256) << name;
    bytes += text.size();
    tokens += ids.size();
  }
  ASSERT_GT(bytes, 1000000u) << "corpus not found in " << corpus_dir();
  std::printf("[ gpt2 ] encoded %zu bytes -> %zu tokens in %.3f s wall, %.3f s CPU (%.1f MB/s CPU)\n", bytes,
              tokens, enc_s, enc_cpu, bytes / enc_cpu / 1e6);
  EXPECT_LT(enc_cpu, 10.0) << "BPE encode is far slower than expected (a few seconds at most for 4 MB)";
}

// ---- tokenizer.json variants ----------------------------------------------------------------

std::string write_json(const std::string& dir, const std::string& name, const Json& doc) {
  const std::string p = path_join(dir, name);
  write_file_atomic(p, doc.dump(1));
  return p;
}

// A small byte-level BPE: 256 bytes, merges "h e", "l l", "he ll", and <|endoftext|>.
Json tiny_json() {
  std::vector<std::string> vocab;
  for (int i = 0; i < 256; ++i) vocab.push_back(byte_level::byte_to_text(byte_level::base_order()[i]));
  vocab.push_back("he");
  vocab.push_back("ll");
  vocab.push_back("hell");
  vocab.push_back("<|endoftext|>");
  AddedToken eot;
  eot.id = 259;
  eot.content = "<|endoftext|>";
  eot.special = true;
  return BpeTokenizer::make_json(vocab, {{"h", "e"}, {"l", "l"}, {"he", "ll"}}, {eot});
}

Json& model_of(Json& doc) {
  for (auto& kv : doc.as_object_mut())
    if (kv.first == "model") return kv.second;
  throw Error("no model");
}

TEST(BpeJson, PairMergesPrefixSpaceSequenceAndNonSpecialAddedTokens) {
  REQUIRE_PCRE2();
  const std::string dir = testing::temp_dir("tok_variants");
  Json doc = tiny_json();
  auto tiny = BpeTokenizer::from_json(doc, "tiny");
  EXPECT_EQ(tiny->vocab_size(), 260);
  EXPECT_EQ(tiny->eot_id(), 259);
  EXPECT_EQ(tiny->num_merges(), 3u);
  EXPECT_EQ(tiny->encode("hello"), (Ids{258, 78}));  // "hell" "o"
  EXPECT_EQ(tiny->decode({258, 78}), "hello");

  // merges as [a, b] pairs give the same tokenizer
  Json pairs = doc;
  Json::Array arr;
  for (const Json& m : model_of(doc).at("merges").as_array()) {
    const std::string& s = m.as_string();
    arr.push_back(Json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)}));
  }
  model_of(pairs).set("merges", Json::array(arr));
  auto tp = Tokenizer::load(write_json(dir, "pairs.json", pairs));
  EXPECT_EQ(tp->encode("hello hell"), tiny->encode("hello hell"));

  // ByteLevel inside a Sequence with add_prefix_space: " " is prepended to each segment that
  // does not start with one (segments are split by added tokens first).
  Json seq = doc;
  Json bl = Json::object();
  bl.set("type", "ByteLevel");
  bl.set("add_prefix_space", true);
  bl.set("trim_offsets", true);
  bl.set("use_regex", true);
  Json pre = Json::object();
  pre.set("type", "Sequence");
  pre.set("pretokenizers", Json::array({bl}));
  seq.set("pre_tokenizer", pre);
  auto ts = Tokenizer::load(write_json(dir, "seq.json", seq));
  const int32_t space = tiny->token_to_id("\u0120");
  Ids want = {space, 258, 78, 259, space, 258};
  EXPECT_EQ(ts->encode("hello<|endoftext|>hell"), want);
  EXPECT_EQ(ts->encode(" hello"), tiny->encode(" hello"));

  // Non-special added token with rstrip; leftmost-longest between added tokens.
  Json added = doc;
  Json::Array at = added.at("added_tokens").as_array();
  Json extra = Json::object();
  extra.set("id", 260);
  extra.set("content", "<x>");
  extra.set("rstrip", true);
  extra.set("normalized", true);
  extra.set("special", false);
  at.push_back(extra);
  Json longer = Json::object();
  longer.set("id", 261);
  longer.set("content", "<x>>");
  longer.set("special", false);
  at.push_back(longer);
  added.set("added_tokens", Json::array(at));
  auto ta = BpeTokenizer::from_json(added, "added");
  EXPECT_EQ(ta->vocab_size(), 262);
  EXPECT_EQ(ta->encode("he<x>   ll"), (Ids{256, 260, 257}));
  EXPECT_EQ(ta->encode("<x>>"), (Ids{261}));
  EXPECT_EQ(ta->decode({260}), "<x>");
}

TEST(BpeJson, BadInputsNameFileAndField) {
  const std::string dir = testing::temp_dir("tok_bad");
  auto load = [](const std::string& p) { return [p] { Tokenizer::load(p); }; };

  const std::string missing = path_join(dir, "missing.json");
  expect_error(load(missing), {missing});

  const std::string malformed = path_join(dir, "malformed.json");
  write_file_atomic(malformed, std::string("{\"model\": {\"type\": \"BPE\", "));
  expect_error(load(malformed), {malformed});

  Json doc = tiny_json();
  Json wp = doc;
  model_of(wp).set("type", "WordPiece");
  const std::string wpp = write_json(dir, "wordpiece.json", wp);
  expect_error(load(wpp), {wpp, "model.type", "BPE", "WordPiece"});

  Json unknown = doc;
  Json::Array merges = model_of(unknown).at("merges").as_array();
  merges.push_back("zz q");
  model_of(unknown).set("merges", Json::array(merges));
  const std::string up = write_json(dir, "unknown_merge.json", unknown);
  expect_error(load(up), {up, "model.merges[3]", "zz"});

  Json unknown_result = doc;
  merges = model_of(unknown_result).at("merges").as_array();
  merges.push_back("a b");
  model_of(unknown_result).set("merges", Json::array(merges));
  expect_error(load(write_json(dir, "result.json", unknown_result)), {"model.merges[3]", "\"ab\""});

  Json bad_merge = doc;
  model_of(bad_merge).set("merges", Json::array({Json(17)}));
  expect_error(load(write_json(dir, "bad_merge.json", bad_merge)), {"model.merges[0]"});

  Json no_vocab = doc;
  Json::Object mo;
  for (const auto& kv : model_of(no_vocab).as_object())
    if (kv.first != "vocab") mo.push_back(kv);
  no_vocab.set("model", Json::object(mo));
  expect_error(load(write_json(dir, "no_vocab.json", no_vocab)), {"model.vocab"});

  Json no_model = Json::object();
  no_model.set("version", "1.0");
  expect_error(load(write_json(dir, "no_model.json", no_model)), {"no_model.json", "model"});

  Json norm = doc;
  Json lower = Json::object();
  lower.set("type", "Lowercase");
  norm.set("normalizer", lower);
  expect_error(load(write_json(dir, "norm.json", norm)), {"normalizer.type", "Lowercase"});

  Json dec = doc;
  Json wpd = Json::object();
  wpd.set("type", "WordPiece");
  dec.set("decoder", wpd);
  expect_error(load(write_json(dir, "decoder.json", dec)), {"decoder.type", "ByteLevel"});

  Json pre = doc;
  Json ws = Json::object();
  ws.set("type", "Whitespace");
  pre.set("pre_tokenizer", ws);
  expect_error(load(write_json(dir, "pre.json", pre)), {"pre_tokenizer.type", "Whitespace"});

  Json dup = doc;
  Json::Object vo = model_of(dup).at("vocab").as_object();
  vo.back().second = Json(0);  // <|endoftext|> takes id 0, already "!"
  model_of(dup).set("vocab", Json::object(vo));
  expect_error(load(write_json(dir, "dup.json", dup)), {"model.vocab", "id 0"});

  Json bad_added = doc;
  Json tok = Json::object();
  tok.set("content", "<pad>");
  bad_added.set("added_tokens", Json::array({tok}));
  expect_error(load(write_json(dir, "added.json", bad_added)), {"added_tokens[0]", "id"});
}

// ---- training -------------------------------------------------------------------------------

// Reference trainer: recount every pair of every word before each merge; same tie rule.
std::vector<std::pair<std::string, std::string>> naive_train(const std::map<std::string, int64_t>& words,
                                                             size_t vocab_without_eot) {
  std::vector<std::pair<std::vector<std::string>, int64_t>> ws;
  for (const auto& kv : words) {
    std::vector<std::string> s;
    for (char c : kv.first) s.emplace_back(1, c);
    ws.emplace_back(s, kv.second);
  }
  std::set<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.insert(std::string(1, static_cast<char>(b)));
  std::set<std::pair<std::string, std::string>> done;
  std::vector<std::pair<std::string, std::string>> rules;
  while (vocab.size() < vocab_without_eot) {
    std::map<std::pair<std::string, std::string>, int64_t> cnt;
    for (const auto& w : ws)
      for (size_t i = 0; i + 1 < w.first.size(); ++i) cnt[{w.first[i], w.first[i + 1]}] += w.second;
    if (cnt.empty()) break;
    auto best = cnt.begin();  // std::map order = smallest pair first among equal counts
    for (auto it = cnt.begin(); it != cnt.end(); ++it)
      if (it->second > best->second) best = it;
    const auto pr = best->first;
    vocab.insert(pr.first + pr.second);
    if (done.insert(pr).second) rules.push_back(pr);
    for (auto& w : ws) {
      std::vector<std::string> out;
      for (size_t i = 0; i < w.first.size();) {
        if (i + 1 < w.first.size() && w.first[i] == pr.first && w.first[i + 1] == pr.second) {
          out.push_back(pr.first + pr.second);
          i += 2;
        } else {
          out.push_back(w.first[i++]);
        }
      }
      w.first = out;
    }
  }
  return rules;
}

std::vector<std::pair<std::string, std::string>> merges_as_bytes(const Json& doc) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Json& m : doc.at("model").at("merges").as_array()) {
    const std::string& s = m.as_string();
    std::string a, b;
    EXPECT_TRUE(byte_level::from_text(s.substr(0, s.find(' ')), &a));
    EXPECT_TRUE(byte_level::from_text(s.substr(s.find(' ') + 1), &b));
    out.emplace_back(a, b);
  }
  return out;
}

TEST(BpeTrain, TieRuleAndMatchesNaiveTrainer) {
  REQUIRE_PCRE2();
  {
    // counts: "ab"+" ab" give (a,b)=2; " cd" twice gives (" ",c)=2 and (c,d)=2: " c" wins (' ' < 'a').
    BpeTrainer tr;
    tr.add_text("ab ab cd cd");
    BpeTrainOptions o;
    o.vocab_size = 258;
    Json doc = tr.train(o);
    auto m = merges_as_bytes(doc);
    ASSERT_EQ(m.size(), 1u);
    EXPECT_EQ(m[0], std::make_pair(std::string(" "), std::string("c")));
  }
  // Incremental counts == recounting from scratch, on a slice of real text with Unicode added.
  std::string text = read_file(corpus_files().front()).substr(0, 20000) +
                     " caf\u00e9 caf\u00e9 na\u00efve \U0001F600\U0001F600 \u4e2d\u6587\u4e2d\u6587 aaaaaaa aaaa aa";
  std::map<std::string, int64_t> words;
  byte_level::Splitter sp(byte_level::kGpt2Pattern, false, "test");
  std::vector<byte_level::Piece> pieces;
  sp.split(text, &pieces);
  for (const auto& p : pieces) ++words[text.substr(p.begin, p.end - p.begin)];
  BpeTrainer tr;
  tr.add_text(text);
  BpeTrainOptions o;
  o.vocab_size = 600;
  BpeTrainStats st;
  Json doc = tr.train(o, &st);
  EXPECT_EQ(st.vocab_size, 600);
  EXPECT_EQ(merges_as_bytes(doc), naive_train(words, 599));
}

TEST(BpeTrain, ExactVocabRoundTripReloadAndDeterminism) {
  REQUIRE_PCRE2();
  const std::vector<std::string> files = corpus_files();
  ASSERT_GE(files.size(), 2u);
  auto train = [&](BpeTrainStats* st) {
    BpeTrainer tr;
    for (size_t i = 0; i < 2; ++i) tr.add_text(read_file(files[i]));
    BpeTrainOptions o;
    o.vocab_size = 1000;
    return tr.train(o, st);
  };
  BpeTrainStats st;
  const auto t0 = std::chrono::steady_clock::now();
  Json doc = train(&st);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ train ] %lld bytes, %lld distinct words -> vocab %d (%d merges) in %.2f s\n",
              (long long)st.bytes, (long long)st.distinct_words, st.vocab_size, st.merges, secs);
  EXPECT_EQ(st.vocab_size, 1000);
  EXPECT_EQ(train(nullptr), doc) << "training is not deterministic";

  const std::string dir = testing::temp_dir("tok_train");
  const std::string path = path_join(dir, "tokenizer.json");
  write_file_atomic(path, doc.dump(2));
  EXPECT_EQ(Json::parse_file(path), doc);
  auto t = Tokenizer::load(path);
  EXPECT_EQ(t->kind(), "bpe");
  EXPECT_EQ(t->vocab_size(), 1000);
  EXPECT_EQ(t->eot_id(), 999);
  auto again = BpeTokenizer::from_json(doc, "in-memory");
  const auto& bt = dynamic_cast<const BpeTokenizer&>(*t);
  for (int32_t id = 0; id < 1000; ++id) ASSERT_EQ(bt.id_to_token(id), again->id_to_token(id));
  for (int i = 0; i < 256; ++i) EXPECT_EQ(bt.id_to_token(i), gpt2().id_to_token(i)) << "byte id " << i;

  const std::string held_out = read_file(files.back());
  Ids ids = t->encode(held_out);
  EXPECT_EQ(ids, again->encode(held_out));
  EXPECT_TRUE(t->decode(ids) == held_out);
  EXPECT_LT(ids.size() * 5, held_out.size() * 2) << "a 1000-token BPE should compress English >2.5x";
  const std::string odd = "\U0001F600 caf\u00e9 \t\n  x<|endoftext|>y \xFF";
  EXPECT_EQ(t->decode(t->encode(odd)), odd);
  Ids e = t->encode("a<|endoftext|>b");
  EXPECT_EQ(e.size(), 3u);
  EXPECT_EQ(e[1], 999);
}

TEST(BpeTrain, SmallTextStopsWhenPairsRunOutAndRejectsTinyVocab) {
  REQUIRE_PCRE2();
  BpeTrainer tr;
  tr.add_text("aaaa");
  BpeTrainOptions o;
  o.vocab_size = 300;
  std::vector<std::string> lines;
  o.log = [&](const std::string& s) { lines.push_back(s); };
  BpeTrainStats st;
  Json doc = tr.train(o, &st);
  EXPECT_EQ(st.vocab_size, 259);  // "aa", "aaaa", then no pair left
  EXPECT_NE(lines.back().find("ran out of pairs"), std::string::npos);
  auto t = BpeTokenizer::from_json(doc, "small");
  EXPECT_EQ(t->encode("aaaa").size(), 1u);
  o.vocab_size = 100;
  expect_error([&] { tr.train(o); }, {"vocab-size", "257"});
}

// ---- CLI ------------------------------------------------------------------------------------

TEST(TokenizerCli, EncodeDecodeTrainAndErrors) {
  std::string out;
  ASSERT_EQ(testing::run_cli("tokenizer --help", &out), 0) << out;
  EXPECT_NE(out.find("encode"), std::string::npos);
  for (const char* action : {"encode", "decode", "train"}) {
    ASSERT_EQ(testing::run_cli(std::string("tokenizer ") + action + " --help", &out), 0) << out;
    EXPECT_TRUE(out.find("--tokenizer") != std::string::npos || out.find("--input") != std::string::npos) << out;
  }
  EXPECT_EQ(testing::run_cli("tokenizer encode --tokenizer byte --text 'Hi!'", &out), 0);
  EXPECT_EQ(out, "72 105 33\n");
  EXPECT_EQ(testing::run_cli("tokenizer decode --tokenizer byte --ids '72 105 33'", &out), 0);
  EXPECT_EQ(out, "Hi!\n");
  EXPECT_NE(testing::run_cli("tokenizer decode --tokenizer byte --ids '72 300'", &out), 0);
  EXPECT_NE(out.find("300"), std::string::npos) << out;
  EXPECT_NE(testing::run_cli("tokenizer frobnicate", &out), 0);
  EXPECT_NE(out.find("frobnicate"), std::string::npos) << out;
  if (!have_pcre2()) return;

  const std::string g = gpt2_path();
  ASSERT_EQ(testing::run_cli("tokenizer encode --tokenizer " + g + " --text 'Hello world'", &out), 0) << out;
  EXPECT_EQ(out, "15496 995\n");
  ASSERT_EQ(testing::run_cli("tokenizer decode --tokenizer " + g + " --ids '15496 995 50256'", &out), 0) << out;
  EXPECT_EQ(out, "Hello world<|endoftext|>\n");
  EXPECT_NE(testing::run_cli("tokenizer decode --tokenizer " + g + " --ids '15496 50257'", &out), 0);
  EXPECT_NE(out.find("50257"), std::string::npos) << out;
  EXPECT_NE(testing::run_cli("tokenizer encode --tokenizer /no/such.json --text x", &out), 0);
  EXPECT_NE(out.find("/no/such.json"), std::string::npos) << out;

  // train: --input repeated and comma-separated
  const std::string dir = testing::temp_dir("tok_cli");
  const std::string a = path_join(dir, "a.txt"), b = path_join(dir, "b.txt"), c = path_join(dir, "c.txt");
  write_file_atomic(a, std::string("the cat sat on the mat. "));
  write_file_atomic(b, std::string("the dog sat on the log. "));
  write_file_atomic(c, std::string("a cat and a dog met on the mat and the log."));
  const std::string outp = path_join(dir, "tok.json");
  ASSERT_EQ(testing::run_cli("tokenizer train --input " + a + "," + b + " --input " + c +
                                 " --vocab-size 270 --out " + outp, &out), 0) << out;
  EXPECT_NE(out.find("vocab 270"), std::string::npos) << out;
  auto t = Tokenizer::load(outp);
  EXPECT_EQ(t->vocab_size(), 270);
  EXPECT_EQ(t->decode(t->encode("the cat met the dog")), "the cat met the dog");
  EXPECT_NE(testing::run_cli("tokenizer train --input " + path_join(dir, "nope.txt") + " --out " + outp, &out), 0);
  EXPECT_NE(out.find("nope.txt"), std::string::npos) << out;
}

}  // namespace
}  // namespace moessm
