// Byte-level BPE: tokenizer.json reader and writer, encoder and decoder (see bpe_tokenizer.h).
#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <queue>

#include "core/check.h"
#include "io/file_util.h"

namespace moessm {

namespace {

constexpr int64_t kMaxVocab = int64_t(1) << 26;  // guards against an absurd id allocating gigabytes
constexpr int64_t kMaxIdGap = 65536;              // unused ids a tokenizer.json may leave between its tokens
constexpr size_t kMaxCachedWord = 256;           // longer pre-tokens are merged without caching
constexpr size_t kMaxCacheEntries = 1 << 20;

bool opt_bool(const Json& obj, const char* key, bool def, const std::string& what) {
  const Json* v = obj.get(key);
  if (!v || v->is_null()) return def;
  return v->as_bool(what + "." + key);
}

std::string opt_string(const Json& obj, const char* key, const std::string& what) {
  const Json* v = obj.get(key);
  if (!v || v->is_null()) return "";
  return v->as_string(what + "." + key);
}

const std::string& type_of(const Json& obj, const std::string& what) {
  CHECK(obj.is_object(), what, ": expected an object, found ", obj.kind_name());
  const Json* t = obj.get("type");
  CHECK(t != nullptr, what, ".type: missing");
  return t->as_string(what + ".type");
}

// Length of the UTF-8 whitespace character (Unicode White_Space) starting at p[i], else 0.
size_t space_at(const unsigned char* p, size_t i, size_t n) {
  unsigned c = p[i];
  if (c == ' ' || (c >= '\t' && c <= '\r')) return 1;
  if (c == 0xC2 && i + 1 < n && (p[i + 1] == 0x85 || p[i + 1] == 0xA0)) return 2;
  if (c == 0xE1 && i + 2 < n && p[i + 1] == 0x9A && p[i + 2] == 0x80) return 3;  // U+1680
  if (c == 0xE2 && i + 2 < n) {
    unsigned b = p[i + 1], d = p[i + 2];
    if (b == 0x80 && (d <= 0x8A || d == 0xA8 || d == 0xA9 || d == 0xAF)) return 3;  // U+2000..200A, 2028, 2029, 202F
    if (b == 0x81 && d == 0x9F) return 3;                                          // U+205F
  }
  if (c == 0xE3 && i + 2 < n && p[i + 1] == 0x80 && p[i + 2] == 0x80) return 3;  // U+3000
  return 0;
}

// Length of the whitespace character ending just before p[end], else 0.
size_t space_before(const unsigned char* p, size_t begin, size_t end) {
  for (size_t len = 1; len <= 3 && len <= end - begin; ++len)
    if (space_at(p, end - len, end) == len) return len;
  return 0;
}

// single_word boundary test (HF: alphanumeric neighbours). Non-ASCII bytes count as word
// characters unless they are whitespace: an approximation of Unicode alphanumerics.
bool word_char_before(const unsigned char* p, size_t begin, size_t end) {
  if (end == begin) return false;
  unsigned c = p[end - 1];
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
  return space_before(p, begin, end) == 0;
}
bool word_char_at(const unsigned char* p, size_t i, size_t n) {
  if (i >= n) return false;
  unsigned c = p[i];
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
  return space_at(p, i, n) == 0;
}

// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    size_t ok = 0;  // bytes of a valid prefix
    if (len > 0) {
      ok = 1;
      for (size_t k = 1; k < len && i + k < n; ++k) {
        unsigned b = p[i + k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
        ++ok;
      }
    }
    if (len > 0 && ok == len) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max<size_t>(ok, 1);
    }
  }
  return out;
}

}  // namespace

// ---- loading --------------------------------------------------------------------------------

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::string& path) {
  CHECK(file_exists(path), "tokenizer: ", path, ": no such file (expected 'byte' or a path to a tokenizer.json)");
  CHECK(!is_directory(path), "tokenizer: ", path, ": is a directory (expected 'byte' or a path to a tokenizer.json)");
  return from_json(Json::parse_file(path), path);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(const Json& doc, const std::string& src) {
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  CHECK(doc.is_object(), src, ": expected a tokenizer.json object at the top level, found ", doc.kind_name());
  const Json* model_p = doc.get("model");
  CHECK(model_p != nullptr, src, ": model: missing (not a Hugging Face tokenizer.json?)");
  const Json& model = *model_p;
  const std::string mw = src + ": model";
  const std::string& mtype = type_of(model, mw);
  CHECK(mtype == "BPE", src, ": model.type: expected \"BPE\", found \"", mtype, "\"");

  // Model options we do not implement would change the result silently: refuse them.
  const Json* dropout = model.get("dropout");
  CHECK(!dropout || dropout->is_null() || dropout->as_number(mw + ".dropout") == 0.0, src,
        ": model.dropout: BPE dropout is not supported (expected null)");
  CHECK(opt_string(model, "continuing_subword_prefix", mw).empty(), src,
        ": model.continuing_subword_prefix: expected empty for a byte-level BPE");
  CHECK(opt_string(model, "end_of_word_suffix", mw).empty(), src,
        ": model.end_of_word_suffix: expected empty for a byte-level BPE");
  t->fuse_unk_ = opt_bool(model, "fuse_unk", false, mw);
  t->ignore_merges_ = opt_bool(model, "ignore_merges", false, mw);

  // vocab
  const Json* vocab_p = model.get("vocab");
  CHECK(vocab_p != nullptr, src, ": model.vocab: missing");
  const Json::Object& vocab = vocab_p->as_object(src + ": model.vocab");
  int64_t max_id = -1;
  t->vocab_.reserve(vocab.size() * 2);
  for (const auto& kv : vocab) {
    const int64_t id = kv.second.as_int(str_cat(src, ": model.vocab[\"", kv.first, "\"]"));
    CHECK(id >= 0 && id < kMaxVocab, src, ": model.vocab[\"", kv.first, "\"]: id ", id, " is out of range [0, ",
          kMaxVocab, ")");
    CHECK(t->vocab_.emplace(kv.first, static_cast<int32_t>(id)).second, src, ": model.vocab: token \"", kv.first,
          "\" appears twice");
    max_id = std::max(max_id, id);
  }
  // added tokens
  if (const Json* added = doc.get("added_tokens"); added && !added->is_null()) {
    const Json::Array& arr = added->as_array(src + ": added_tokens");
    for (size_t i = 0; i < arr.size(); ++i) {
      const std::string w = str_cat(src, ": added_tokens[", i, "]");
      CHECK(arr[i].is_object(), w, ": expected an object, found ", arr[i].kind_name());
      AddedToken a;
      const int64_t id = arr[i].at("id", w).as_int(w + ".id");
      CHECK(id >= 0 && id < kMaxVocab, w, ".id: ", id, " is out of range [0, ", kMaxVocab, ")");
      a.id = static_cast<int32_t>(id);
      a.content = arr[i].at("content", w).as_string(w + ".content");
      CHECK(!a.content.empty(), w, ".content: must not be empty");
      a.special = opt_bool(arr[i], "special", false, w);
      a.single_word = opt_bool(arr[i], "single_word", false, w);
      a.lstrip = opt_bool(arr[i], "lstrip", false, w);
      a.rstrip = opt_bool(arr[i], "rstrip", false, w);
      a.normalized = opt_bool(arr[i], "normalized", !a.special, w);
      for (const AddedToken& b : t->added_)
        CHECK(b.content != a.content || b.id == a.id, w, ": \"", a.content, "\" was already added with id ", b.id);
      max_id = std::max(max_id, id);
      t->added_.push_back(std::move(a));
    }
  }
  CHECK(max_id >= 0, src, ": model.vocab: is empty");
  // The id tables are sized by the largest id: bound it by the number of tokens the file holds
  // before allocating (ids are unique, so a larger one means a gap of unused ids).
  const int64_t n_tokens = int64_t(vocab.size() + t->added_.size());
  CHECK(max_id < n_tokens + kMaxIdGap, src, ": token id ", max_id, " is far beyond the ", n_tokens,
        " tokens the file defines (at most ", kMaxIdGap, " unused ids are allowed; expected ids 0..", n_tokens - 1, ")");

  // id tables: model tokens first, added tokens override (as HF's decode looks them up first)
  const size_t V = static_cast<size_t>(max_id + 1);
  t->id_text_.assign(V, std::string());
  t->id_used_.assign(V, false);
  for (const auto& kv : vocab) {
    const int32_t id = t->vocab_.at(kv.first);
    CHECK(!t->id_used_[id], src, ": model.vocab: id ", id, " is used by both \"", t->id_text_[id], "\" and \"",
          kv.first, "\"");
    t->id_text_[id] = kv.first;
    t->id_used_[id] = true;
  }
  for (const AddedToken& a : t->added_) {
    t->id_text_[a.id] = a.content;
    t->id_used_[a.id] = true;
  }
  t->id_bytes_.resize(V);
  for (size_t id = 0; id < V; ++id)
    if (!byte_level::from_text(t->id_text_[id], &t->id_bytes_[id])) t->id_bytes_[id] = t->id_text_[id];
  for (int b = 0; b < 256; ++b) {
    auto it = t->vocab_.find(byte_level::byte_to_text(static_cast<uint8_t>(b)));
    t->byte_id_[b] = it == t->vocab_.end() ? -1 : it->second;
  }
  if (std::string unk = opt_string(model, "unk_token", mw); !unk.empty()) {
    auto it = t->vocab_.find(unk);
    CHECK(it != t->vocab_.end(), src, ": model.unk_token: \"", unk, "\" is not in model.vocab");
    t->unk_id_ = it->second;
  }

  // merges
  const Json* merges_p = model.get("merges");
  CHECK(merges_p != nullptr, src, ": model.merges: missing");
  const Json::Array& merges = merges_p->as_array(src + ": model.merges");
  t->merges_.reserve(merges.size() * 2);
  std::string left, right;
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    if (m.is_string()) {
      const std::string& s = m.as_string();
      const size_t sp = s.find(' ');
      CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size(), src, ": model.merges[", i,
            "]: expected \"left right\" (two tokens and one space), found \"", s, "\"");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else {
      CHECK(m.is_array() && m.size() == 2 && m.as_array()[0].is_string() && m.as_array()[1].is_string(), src,
            ": model.merges[", i, "]: expected \"left right\" or [\"left\", \"right\"], found ", m.dump());
      left = m.as_array()[0].as_string();
      right = m.as_array()[1].as_string();
    }
    auto a = t->vocab_.find(left), b = t->vocab_.find(right), c = t->vocab_.find(left + right);
    CHECK(a != t->vocab_.end(), src, ": model.merges[", i, "]: token \"", left, "\" is not in model.vocab");
    CHECK(b != t->vocab_.end(), src, ": model.merges[", i, "]: token \"", right, "\" is not in model.vocab");
    CHECK(c != t->vocab_.end(), src, ": model.merges[", i, "]: merged token \"", left + right,
          "\" is not in model.vocab");
    // A repeated pair keeps its last rank, as HF's map construction does.
    t->merges_[pair_key(a->second, b->second)] = Merge{static_cast<int32_t>(i), c->second};
  }
  t->n_merges_ = merges.size();

  // normalizer: only NFC (assumed already satisfied, see the header) or nothing
  std::function<void(const Json&, const std::string&)> check_norm = [&](const Json& n, const std::string& w) {
    if (n.is_null()) return;
    const std::string& ty = type_of(n, w);
    if (ty == "Sequence") {
      const Json::Array& arr = n.at("normalizers", w).as_array(w + ".normalizers");
      for (size_t i = 0; i < arr.size(); ++i) check_norm(arr[i], str_cat(w, ".normalizers[", i, "]"));
      return;
    }
    CHECK(ty == "NFC", w, ".type: normalizer \"", ty, "\" is not supported (expected null or NFC)");
  };
  if (const Json* n = doc.get("normalizer")) check_norm(*n, src + ": normalizer");

  // pre_tokenizer: Split* then ByteLevel, possibly nested in Sequences
  const Json* pre = doc.get("pre_tokenizer");
  CHECK(pre && !pre->is_null(), src, ": pre_tokenizer: missing; a byte-level BPE needs a ByteLevel pre_tokenizer");
  bool have_byte_level = false;
  std::function<void(const Json&, const std::string&)> add_pre = [&](const Json& p, const std::string& w) {
    const std::string& ty = type_of(p, w);
    CHECK(!have_byte_level, w, ".type: \"", ty, "\" after ByteLevel is not supported (ByteLevel must be the last step)");
    if (ty == "Sequence") {
      const Json::Array& arr = p.at("pretokenizers", w).as_array(w + ".pretokenizers");
      for (size_t i = 0; i < arr.size(); ++i) add_pre(arr[i], str_cat(w, ".pretokenizers[", i, "]"));
    } else if (ty == "ByteLevel") {
      have_byte_level = true;
      t->add_prefix_space_ = opt_bool(p, "add_prefix_space", true, w);
      if (opt_bool(p, "use_regex", true, w))
        t->byte_level_regex_ = std::make_unique<byte_level::Splitter>(byte_level::kGpt2Pattern, false, w);
    } else if (ty == "Split") {
      const Json& pat = p.at("pattern", w);
      const Json* rx = pat.get("Regex");
      const Json* lit = pat.get("String");
      CHECK(rx || lit, w, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}, found ", pat.dump());
      const std::string& behavior = p.at("behavior", w).as_string(w + ".behavior");
      CHECK(behavior == "Isolated" || behavior == "Removed", w, ".behavior: \"", behavior,
            "\" is not supported (expected Isolated or Removed)");
      CHECK(!opt_bool(p, "invert", false, w), w, ".invert: true is not supported");
      SplitStep s;
      s.splitter = std::make_unique<byte_level::Splitter>(
          rx ? rx->as_string(w + ".pattern.Regex") : lit->as_string(w + ".pattern.String"), !rx, w);
      s.keep_matches = behavior == "Isolated";
      t->steps_.push_back(std::move(s));
    } else {
      FAIL(w, ".type: pre-tokenizer \"", ty, "\" is not supported (expected ByteLevel, Split or Sequence)");
    }
  };
  add_pre(*pre, src + ": pre_tokenizer");
  CHECK(have_byte_level, src, ": pre_tokenizer: no ByteLevel step; only byte-level BPE is supported");

  const Json* dec = doc.get("decoder");
  CHECK(dec && !dec->is_null(), src, ": decoder: missing; a byte-level BPE needs a ByteLevel decoder");
  const std::string& dty = type_of(*dec, src + ": decoder");
  CHECK(dty == "ByteLevel", src, ": decoder.type: expected \"ByteLevel\", found \"", dty, "\"");

  // added-token lookup tables, longest first within each first byte
  for (int k = 0; k < 2; ++k) t->added_by_byte_[k].assign(256, {});
  for (size_t i = 0; i < t->added_.size(); ++i) {
    const AddedToken& a = t->added_[i];
    t->added_by_byte_[a.normalized ? 1 : 0][static_cast<unsigned char>(a.content[0])].push_back(static_cast<int32_t>(i));
  }
  for (int k = 0; k < 2; ++k)
    for (auto& v : t->added_by_byte_[k])
      std::stable_sort(v.begin(), v.end(), [&](int32_t x, int32_t y) {
        return t->added_[x].content.size() > t->added_[y].content.size();
      });
  t->eot_id_ = t->token_to_id("<|endoftext|>");
  return t;
}

// ---- writing --------------------------------------------------------------------------------

Json BpeTokenizer::make_json(const std::vector<std::string>& vocab,
                             const std::vector<std::pair<std::string, std::string>>& merges,
                             const std::vector<AddedToken>& added) {
  auto byte_level_obj = [](bool prefix, bool trim) {
    Json o = Json::object();
    o.set("type", "ByteLevel");
    o.set("add_prefix_space", prefix);
    o.set("trim_offsets", trim);
    o.set("use_regex", true);
    return o;
  };
  Json doc = Json::object();
  doc.set("version", "1.0");
  doc.set("truncation", nullptr);
  doc.set("padding", nullptr);
  Json at = Json::array();
  for (const AddedToken& a : added) {
    Json o = Json::object();
    o.set("id", a.id);
    o.set("content", a.content);
    o.set("single_word", a.single_word);
    o.set("lstrip", a.lstrip);
    o.set("rstrip", a.rstrip);
    o.set("normalized", a.normalized);
    o.set("special", a.special);
    at.push_back(std::move(o));
  }
  doc.set("added_tokens", std::move(at));
  doc.set("normalizer", nullptr);
  doc.set("pre_tokenizer", byte_level_obj(false, true));
  doc.set("post_processor", byte_level_obj(true, false));
  doc.set("decoder", byte_level_obj(true, true));
  Json model = Json::object();
  model.set("type", "BPE");
  model.set("dropout", nullptr);
  model.set("unk_token", nullptr);
  model.set("continuing_subword_prefix", "");
  model.set("end_of_word_suffix", "");
  model.set("fuse_unk", false);
  model.set("byte_fallback", false);
  Json::Object v;  // built directly: Json::set would search the keys for every insert
  v.reserve(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) v.emplace_back(vocab[i], Json(static_cast<int64_t>(i)));
  model.set("vocab", Json::object(std::move(v)));
  Json::Array m;
  m.reserve(merges.size());
  for (const auto& p : merges) {
    CHECK(p.first.find(' ') == std::string::npos && p.second.find(' ') == std::string::npos,
          "tokenizer: merge (\"", p.first, "\", \"", p.second, "\") contains a space: not a byte-level spelling");
    m.emplace_back(p.first + " " + p.second);
  }
  model.set("merges", Json::array(std::move(m)));
  doc.set("model", std::move(model));
  return doc;
}

// ---- encoding -------------------------------------------------------------------------------

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  Cache cache;
  encode_text(text, false, cache, out);
  return out;
}

void BpeTokenizer::encode_text(std::string_view text, bool normalized_pass, Cache& cache,
                               std::vector<int32_t>& out) const {
  auto next_stage = [&](std::string_view gap) {
    if (gap.empty()) return;
    if (!normalized_pass) encode_text(gap, true, cache, out);
    else pre_tokenize(gap, 0, cache, out);
  };
  const auto& table = added_by_byte_[normalized_pass ? 1 : 0];
  bool any = false;
  for (const auto& v : table) any = any || !v.empty();
  if (!any) return next_stage(text);

  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t gap = 0;  // start of the text not yet emitted
  for (size_t i = 0; i < n; ++i) {
    const auto& cands = table[p[i]];
    if (cands.empty()) continue;
    const AddedToken* hit = nullptr;
    for (int32_t k : cands) {
      const AddedToken& a = added_[k];
      if (a.content.size() > n - i || text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word && (word_char_before(p, 0, i) || word_char_at(p, i + a.content.size(), n))) continue;
      hit = &a;
      break;
    }
    if (!hit) continue;
    size_t start = i, end = i + hit->content.size();
    if (hit->lstrip)
      while (start > gap) {
        size_t l = space_before(p, gap, start);
        if (l == 0) break;
        start -= l;
      }
    if (hit->rstrip)
      while (end < n) {
        size_t l = space_at(p, end, n);
        if (l == 0) break;
        end += l;
      }
    next_stage(text.substr(gap, start - gap));
    out.push_back(hit->id);
    gap = end;
    i = end - 1;
  }
  next_stage(text.substr(gap));
}

void BpeTokenizer::pre_tokenize(std::string_view piece, size_t step, Cache& cache, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  std::vector<byte_level::Piece> pieces;
  if (step < steps_.size()) {
    steps_[step].splitter->split(piece, &pieces);
    for (const auto& pc : pieces)
      if (pc.matched ? steps_[step].keep_matches : true)
        pre_tokenize(piece.substr(pc.begin, pc.end - pc.begin), step + 1, cache, out);
    return;
  }
  std::string prefixed;
  if (add_prefix_space_ && piece[0] != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!byte_level_regex_) return encode_word(piece, cache, out);
  byte_level_regex_->split(piece, &pieces);
  for (const auto& pc : pieces) encode_word(piece.substr(pc.begin, pc.end - pc.begin), cache, out);
}

void BpeTokenizer::encode_word(std::string_view word, Cache& cache, std::vector<int32_t>& out) const {
  if (word.size() > kMaxCachedWord) return merge_word(word, out);
  std::string key(word);
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    std::vector<int32_t> ids;
    merge_word(word, ids);
    it = cache.emplace(std::move(key), std::move(ids)).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

// BPE on one pre-token: a linked list of symbols and a min-heap of (rank, position) for the
// candidate merges. Stale heap entries (a neighbour changed since the push) are skipped by
// re-checking the pair at that position, so every step applies the lowest-ranked merge present,
// leftmost first: the same order as HF's BPE.
void BpeTokenizer::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    auto it = vocab_.find(byte_level::to_text(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> sym;
  sym.reserve(word.size());
  bool last_unk = false;
  for (unsigned char c : word) {
    int32_t id = byte_id_[c];
    if (id >= 0) {
      sym.push_back(id);
      last_unk = false;
    } else if (unk_id_ >= 0) {
      if (!(fuse_unk_ && last_unk)) sym.push_back(unk_id_);
      last_unk = true;
    }  // no unk token: HF drops the character
  }
  const int32_t m = static_cast<int32_t>(sym.size());
  if (m <= 1) {
    out.insert(out.end(), sym.begin(), sym.end());
    return;
  }
  std::vector<int32_t> nxt(m), prv(m);
  for (int32_t i = 0; i < m; ++i) {
    nxt[i] = i + 1 < m ? i + 1 : -1;
    prv[i] = i - 1;
  }
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> heap;
  auto push = [&](int32_t i) {
    auto it = merges_.find(pair_key(sym[i], sym[nxt[i]]));
    if (it != merges_.end()) heap.push((static_cast<uint64_t>(it->second.rank) << 32) | static_cast<uint32_t>(i));
  };
  for (int32_t i = 0; i + 1 < m; ++i) push(i);
  while (!heap.empty()) {
    const uint64_t key = heap.top();
    heap.pop();
    const int32_t i = static_cast<int32_t>(key & 0xFFFFFFFFu);
    const int32_t rank = static_cast<int32_t>(key >> 32);
    const int32_t j = nxt[i];
    if (sym[i] < 0 || j < 0) continue;
    auto it = merges_.find(pair_key(sym[i], sym[j]));
    if (it == merges_.end() || it->second.rank != rank) continue;
    sym[i] = it->second.id;
    sym[j] = -1;
    nxt[i] = nxt[j];
    if (nxt[i] >= 0) prv[nxt[i]] = i;
    if (prv[i] >= 0) push(prv[i]);
    if (nxt[i] >= 0) push(i);
  }
  for (int32_t i = 0; i >= 0; i = nxt[i]) out.push_back(sym[i]);
}

// ---- decoding -------------------------------------------------------------------------------

void BpeTokenizer::check_id(int32_t id, size_t pos) const {
  CHECK(id >= 0 && id < vocab_size() && id_used_[id], "tokenizer: decode: id ", id, " at position ", pos,
        " is not in the vocabulary (", vocab_size(), " ids)");
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    check_id(ids[i], i);
    out += id_bytes_[ids[i]];
  }
  return out;
}

std::string BpeTokenizer::decode_lossy(const std::vector<int32_t>& ids) const { return utf8_lossy(decode(ids)); }

int32_t BpeTokenizer::token_to_id(const std::string& text) const {
  for (const AddedToken& a : added_)
    if (a.content == text) return a.id;
  auto it = vocab_.find(text);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& BpeTokenizer::id_to_token(int32_t id) const {
  static const std::string empty;
  return id >= 0 && id < vocab_size() ? id_text_[id] : empty;
}

}  // namespace moessm
