// prepare_data (see prepare.h): read and validate the inputs, choose the split, tokenise, write.
#include "data/prepare.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "core/check.h"
#include "data/shards.h"
#include "io/file_util.h"
#include "tokenizer/tokenizer.h"

namespace moessm {
namespace {

namespace fs = std::filesystem;

std::string base_name(const std::string& path) {
  size_t s = path.find_last_of('/');
  return s == std::string::npos ? path : path.substr(s + 1);
}

// Files, with each directory replaced by its *.txt files in name order.
std::vector<std::string> expand_inputs(const std::vector<std::string>& in, const char* what) {
  std::vector<std::string> out;
  for (const std::string& p : in) {
    CHECK(!p.empty(), "prepare: ", what, ": empty file name in the list");
    if (!is_directory(p)) {
      out.push_back(p);
      continue;
    }
    std::vector<std::string> txt;
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_regular_file() && e.path().extension() == ".txt") txt.push_back(e.path().string());
    CHECK(!txt.empty(), "prepare: ", what, ": directory ", p, " has no *.txt files");
    std::sort(txt.begin(), txt.end());
    out.insert(out.end(), txt.begin(), txt.end());
  }
  for (const std::string& f : out)
    CHECK(first_invalid_utf8(f) == std::string::npos, "prepare: ", what, ": the file name '", f,
          "' is not valid UTF-8 (meta.json records the sources, and JSON holds UTF-8 only)");
  return out;
}

std::string canonical_or_self(const std::string& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(p, ec);
  return ec ? p : c.string();
}

// Line and column (1-based) of a byte offset, for friendlier UTF-8 errors.
std::pair<size_t, size_t> line_col(const std::string& s, size_t off) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < off && i < s.size(); ++i) {
    if (s[i] == '\n') { ++line; col = 1; } else { ++col; }
  }
  return {line, col};
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Doc {
  std::string path;
  uint64_t bytes = 0;
  std::vector<int32_t> ids;
  bool val = false;
};

// Joins the ids of docs, with eot (if >= 0) between consecutive documents.
std::vector<int32_t> join(const std::vector<const Doc*>& docs, int32_t eot) {
  size_t n = 0;
  for (const Doc* d : docs) n += d->ids.size() + 1;
  std::vector<int32_t> out;
  out.reserve(n);
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i > 0 && eot >= 0) out.push_back(eot);
    out.insert(out.end(), docs[i]->ids.begin(), docs[i]->ids.end());
  }
  return out;
}

}  // namespace

size_t first_invalid_utf8(const std::string& s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return k < n && (p[k] & 0xC0) == 0x80; };
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }          // no overlong 3-byte forms
    else if (c == 0xED) { len = 3; hi = 0x9F; }          // no UTF-16 surrogates
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }          // no overlong 4-byte forms
    else if (c == 0xF4) { len = 4; hi = 0x8F; }          // nothing above U+10FFFF
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return i;                                       // 0x80..0xC1, 0xF5..0xFF
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (!cont(i + k)) return i;
    i += len;
  }
  return std::string::npos;
}

std::string data_dir_tokenizer(const std::string& dir) {
  std::string tj = path_join(dir, "tokenizer.json");
  if (file_exists(tj)) return tj;
  std::string mj = path_join(dir, "meta.json");
  CHECK(file_exists(mj), dir, ": not a prepared data directory: expected tokenizer.json or meta.json, found neither");
  Json meta = Json::parse_file(mj);
  const std::string& kind = meta.at("tokenizer", mj).at("kind", mj + ": tokenizer").as_string(mj + ": tokenizer.kind");
  CHECK(kind == "byte", mj, ": tokenizer.kind: is '", kind, "' but ", tj, " is missing (copy the tokenizer.json there)");
  return "byte";
}

PrepareResult prepare_data(const PrepareOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  auto log = [&](const std::string& s) { if (opt.log) opt.log(s); };
  CHECK(!opt.out_dir.empty(), "prepare: --out: an output directory is required");
  CHECK(opt.val_fraction > 0 && opt.val_fraction < 1, "prepare: --val-fraction: expected 0 < F < 1, found ",
        opt.val_fraction);
  CHECK(opt.min_split_tokens >= 1, "prepare: min_split_tokens: expected >= 1, found ", opt.min_split_tokens);

  // ---- inputs and the split rule -------------------------------------------------------------
  std::vector<std::string> inputs = expand_inputs(opt.inputs, "--input");
  std::vector<std::string> vals = expand_inputs(opt.val_inputs, "--val");
  CHECK(!inputs.empty() || !vals.empty(), "prepare: --input: no input files given");
  for (const auto& [list, what] : {std::make_pair(&inputs, "--input"), std::make_pair(&vals, "--val")}) {
    std::vector<std::string> seen;  // a file may be in both lists (then it is validation), not twice in one
    for (const std::string& p : *list) {
      std::string c = canonical_or_self(p);
      CHECK(std::find(seen.begin(), seen.end(), c) == seen.end(), "prepare: ", what, ": ", p,
            " is listed more than once");
      seen.push_back(c);
    }
  }

  std::vector<Doc> docs;
  std::string rule;
  auto add = [&](const std::string& p, bool val) {
    for (Doc& d : docs)
      if (canonical_or_self(d.path) == canonical_or_self(p)) { d.val = d.val || val; return; }
    docs.push_back({p, 0, {}, val});
  };
  if (!vals.empty()) {
    rule = "val-files";
    for (const auto& p : inputs) add(p, false);
    for (const auto& p : vals) add(p, true);
  } else {
    size_t npers = std::count_if(inputs.begin(), inputs.end(),
                                 [](const std::string& p) { return base_name(p) == "persuasion.txt"; });
    rule = (npers == 1 && inputs.size() > 1) ? "persuasion" : "fraction";
    for (const auto& p : inputs) add(p, rule == "persuasion" && base_name(p) == "persuasion.txt");
  }
  CHECK(rule == "fraction" || std::any_of(docs.begin(), docs.end(), [](const Doc& d) { return !d.val; }),
        "prepare: every input is a validation file; the training split would be empty (give --input files not in --val)");

  // ---- tokenizer -----------------------------------------------------------------------------
  std::string tok_src = opt.tokenizer.empty() ? std::string("byte") : opt.tokenizer;
  if (tok_src != "byte" && is_directory(tok_src)) tok_src = data_dir_tokenizer(tok_src);
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(tok_src);
  const int32_t vocab = tok->vocab_size(), eot = tok->eot_id();
  CHECK(vocab >= 1, tok_src, ": vocab_size: expected >= 1, found ", vocab);
  const uint64_t thash = tokenizer_hash(tok_src);
  std::string desc = tok->kind();
  if (tok_src != "byte") {
    fs::path tp(tok_src);
    std::string tail = tp.parent_path().filename().string();
    desc += " " + (tail.empty() ? "" : tail + "/") + tp.filename().string();
  }
  if (desc.size() > kShardDescBytes) desc.resize(kShardDescBytes);  // ASCII in practice
  log(str_cat("tokenizer: ", tok_src, " (", tok->kind(), ", vocab ", vocab,
              eot >= 0 ? str_cat(", end-of-text id ", eot) : std::string(", no end-of-text id"), ")"));

  // ---- read, validate, tokenise --------------------------------------------------------------
  uint64_t input_bytes = 0;
  for (Doc& d : docs) {
    std::string text = read_regular_file(d.path, kMaxTextFileBytes);
    d.bytes = text.size();
    input_bytes += d.bytes;
    CHECK(!text.empty(), d.path, ": input file is empty (0 bytes)");
    size_t bad = first_invalid_utf8(text);
    if (bad != std::string::npos) {
      auto lc = line_col(text, bad);
      char b[8];
      std::snprintf(b, sizeof b, "0x%02x", static_cast<unsigned char>(text[bad]));
      FAIL(d.path, ": not valid UTF-8: invalid or truncated sequence starting with byte ", b,
           " at byte offset ", bad, " (line ", lc.first, ", column ", lc.second,
           "); convert the file to UTF-8 first");
    }
    d.ids = tok->encode(text);
    log(str_cat("  ", d.path, ": ", d.bytes, " bytes -> ", d.ids.size(), " tokens",
                d.val ? " (val)" : ""));
  }

  // ---- split ---------------------------------------------------------------------------------
  std::vector<int32_t> train, val;
  std::vector<PrepareSource> sources;
  if (rule == "fraction") {
    std::vector<const Doc*> all;
    for (const Doc& d : docs) all.push_back(&d);
    std::vector<int32_t> stream = join(all, eot);
    const uint64_t total = stream.size();
    CHECK(total >= uint64_t(2 * opt.min_split_tokens), "prepare: input too short: ", total,
          " tokens in all (", input_bytes, " bytes in ", docs.size(),
          " file(s)); at least ", 2 * opt.min_split_tokens, " are needed (", opt.min_split_tokens,
          " per split)");
    uint64_t nval = std::max<uint64_t>(1, uint64_t(std::llround(double(total) * opt.val_fraction)));
    CHECK(nval >= uint64_t(opt.min_split_tokens) && total - nval >= uint64_t(opt.min_split_tokens),
          "prepare: input too short for --val-fraction ", opt.val_fraction, ": ", total,
          " tokens give a validation split of ", nval, " and a training split of ", total - nval,
          " tokens; each needs at least ", opt.min_split_tokens,
          " (add text, raise --val-fraction or name validation files with --val)");
    const uint64_t cut = total - nval;
    train.assign(stream.begin(), stream.begin() + cut);
    val.assign(stream.begin() + cut, stream.end());
    uint64_t pos = 0;
    for (size_t i = 0; i < docs.size(); ++i) {
      if (i > 0 && eot >= 0) ++pos;
      uint64_t a = pos, b = pos + docs[i].ids.size();
      pos = b;
      std::string split = b <= cut ? "train" : a >= cut ? "val" : "train+val";
      sources.push_back({docs[i].path, docs[i].bytes, docs[i].ids.size(), split});
    }
  } else {
    std::vector<const Doc*> tr, va;
    for (const Doc& d : docs) {
      (d.val ? va : tr).push_back(&d);
      sources.push_back({d.path, d.bytes, d.ids.size(), d.val ? "val" : "train"});
    }
    train = join(tr, eot);
    val = join(va, eot);
    auto files = [](const std::vector<const Doc*>& v) {
      std::string s;
      for (const Doc* d : v) s += (s.empty() ? "" : ", ") + d->path + " (" + std::to_string(d->bytes) + " bytes)";
      return s;
    };
    CHECK(train.size() >= uint64_t(opt.min_split_tokens), "prepare: input too short: the training split has ",
          train.size(), " tokens, at least ", opt.min_split_tokens, " are needed (files: ", files(tr), ")");
    CHECK(val.size() >= uint64_t(opt.min_split_tokens), "prepare: input too short: the validation split has ",
          val.size(), " tokens, at least ", opt.min_split_tokens, " are needed (files: ", files(va), ")");
  }

  // ---- write ---------------------------------------------------------------------------------
  make_dirs(opt.out_dir);
  const std::string train_path = path_join(opt.out_dir, "train.bin");
  const std::string val_path = path_join(opt.out_dir, "val.bin");
  write_shard(train_path, train.data(), train.size(), uint32_t(vocab), thash, desc);
  write_shard(val_path, val.data(), val.size(), uint32_t(vocab), thash, desc);
  const bool copy_tok = tok_src != "byte";
  if (copy_tok) {
    const std::string dst = path_join(opt.out_dir, "tokenizer.json");
    if (canonical_or_self(dst) != canonical_or_self(tok_src)) write_file_atomic(dst, read_regular_file(tok_src, kMaxTokenizerBytes));
  }

  PrepareResult r;
  r.tokenizer_kind = tok->kind();
  r.vocab_size = vocab;
  r.eot_id = eot;
  r.train_tokens = train.size();
  r.val_tokens = val.size();
  r.input_bytes = input_bytes;
  r.split_rule = rule;
  r.sources = sources;

  Json tj = Json::object();
  tj.set("kind", tok->kind());
  tj.set("source", tok_src);
  tj.set("file", copy_tok ? Json("tokenizer.json") : Json());
  tj.set("hash", hex64(thash));
  tj.set("vocab_size", vocab);
  tj.set("eot_id", eot);
  auto split_json = [&](const char* file, uint64_t n) {
    Json s = Json::object();
    s.set("file", file);
    s.set("tokens", Json(int64_t(n)));
    return s;
  };
  Json sj = Json::array();
  for (const PrepareSource& s : sources) {
    Json o = Json::object();
    o.set("path", s.path);
    o.set("bytes", Json(int64_t(s.bytes)));
    o.set("tokens", Json(int64_t(s.tokens)));
    o.set("split", s.split);
    sj.push_back(o);
  }
  Json split = Json::object();
  split.set("rule", rule);
  if (rule == "fraction") split.set("val_fraction", opt.val_fraction);
  Json meta = Json::object();
  meta.set("format", "moessm-data");
  meta.set("version", 1);
  meta.set("tokenizer", tj);
  meta.set("vocab_size", vocab);
  meta.set("id_bytes", int(shard_id_bytes(uint32_t(vocab))));
  meta.set("train", split_json("train.bin", train.size()));
  meta.set("val", split_json("val.bin", val.size()));
  meta.set("split", split);
  meta.set("input_bytes", Json(int64_t(input_bytes)));
  meta.set("sources", sj);
  write_file_atomic(path_join(opt.out_dir, "meta.json"), meta.dump(2) + "\n");
  r.meta = meta;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace moessm
