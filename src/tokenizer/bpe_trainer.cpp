// Byte-level BPE training with incremental pair counts (see bpe_trainer.h).
#include "tokenizer/bpe_trainer.h"

#include <algorithm>
#include <chrono>
#include <queue>
#include <unordered_set>
#include <vector>

#include "core/check.h"
#include "tokenizer/bpe_tokenizer.h"

namespace moessm {

namespace {

const char* const kEot = "<|endoftext|>";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string printable(const std::string& bytes) {  // for progress lines
  std::string s;
  for (unsigned char c : bytes) {
    if (c == '\n') s += "\\n";
    else if (c < 32 || c == 127) s += str_cat("\\x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
    else s.push_back(static_cast<char>(c));
  }
  return s;
}

}  // namespace

BpeTrainer::BpeTrainer() : splitter_(byte_level::kGpt2Pattern, false, "tokenizer train: pre_tokenizer") {}

void BpeTrainer::add_text(std::string_view text) {
  const auto t0 = std::chrono::steady_clock::now();
  bytes_ += static_cast<int64_t>(text.size());
  std::vector<byte_level::Piece> pieces;
  const std::string_view eot(kEot);
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t hit = text.find(eot, pos);
    if (hit == std::string_view::npos) hit = text.size();
    std::string_view seg = text.substr(pos, hit - pos);
    splitter_.split(seg, &pieces);
    for (const auto& p : pieces) ++words_[std::string(seg.substr(p.begin, p.end - p.begin))];
    pretokens_ += static_cast<int64_t>(pieces.size());
    pos = hit + eot.size();
  }
  count_seconds_ += seconds_since(t0);
}

Json BpeTrainer::train(const BpeTrainOptions& opt, BpeTrainStats* stats) const {
  const int32_t N = opt.vocab_size;
  CHECK(N >= 257, "tokenizer train: --vocab-size: expected at least 257 (256 bytes + <|endoftext|>), found ", N);
  auto log = [&](const std::string& s) { if (opt.log) opt.log(s); };
  const auto t0 = std::chrono::steady_clock::now();

  // Token table: raw bytes per id; the 256 base bytes in GPT-2 order.
  std::vector<std::string> tok;
  std::unordered_map<std::string, int32_t> tok_id;
  int32_t byte_id[256];
  const auto& order = byte_level::base_order();
  for (int i = 0; i < 256; ++i) {
    byte_id[order[i]] = i;
    tok.emplace_back(1, static_cast<char>(order[i]));
    tok_id.emplace(tok.back(), i);
  }

  // Words in sorted order, so nothing depends on hash-map iteration order.
  std::vector<const std::pair<const std::string, int64_t>*> sorted;
  sorted.reserve(words_.size());
  for (const auto& kv : words_) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
  std::vector<std::vector<int32_t>> word(sorted.size());
  std::vector<int64_t> freq(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (unsigned char c : sorted[w]->first) word[w].push_back(byte_id[c]);
    freq[w] = sorted[w]->second;
  }

  std::unordered_map<uint64_t, int64_t> count;               // pair -> weighted occurrences
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words that may hold it
  for (size_t w = 0; w < word.size(); ++w)
    for (size_t i = 0; i + 1 < word[w].size(); ++i) {
      const uint64_t k = pair_key(word[w][i], word[w][i + 1]);
      count[k] += freq[w];
      auto& v = where[k];
      if (v.empty() || v.back() != static_cast<int32_t>(w)) v.push_back(static_cast<int32_t>(w));
    }

  struct Entry {
    int64_t count;
    int32_t a, b;
  };
  // priority_queue pops the "largest": higher count, then the smaller (left, right) bytes.
  auto lower = [&tok](const Entry& x, const Entry& y) {
    if (x.count != y.count) return x.count < y.count;
    if (x.a != y.a) {
      int c = tok[x.a].compare(tok[y.a]);
      if (c != 0) return c > 0;
    }
    return tok[x.b].compare(tok[y.b]) > 0;
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower)> heap(lower);
  for (const auto& kv : count)
    heap.push({kv.second, static_cast<int32_t>(kv.first >> 32), static_cast<int32_t>(kv.first & 0xFFFFFFFFu)});

  log(str_cat("tokenizer train: ", bytes_, " bytes, ", pretokens_, " pre-tokens, ", word.size(),
              " distinct words, ", count.size(), " distinct pairs (counted in ", count_seconds_, " s)"));

  const int32_t target = N - 1;  // learned tokens fill ids up to N-2; <|endoftext|> is N-1
  const int32_t learn = target - 256;
  const int32_t every = std::max<int32_t>(1, learn / 10);
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::unordered_set<uint64_t> merged;
  std::vector<int32_t> seen(word.size(), -1);
  std::unordered_map<uint64_t, int64_t> delta;
  std::vector<int32_t> rewritten;
  int32_t step = 0;
  while (static_cast<int32_t>(tok.size()) < target && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const uint64_t k = pair_key(top.a, top.b);
    auto cit = count.find(k);
    const int64_t cur = cit == count.end() ? 0 : cit->second;
    if (cur != top.count) {
      // Stale entry. A higher current count has its own entry already (pushed on increase).
      if (cur > 0 && cur < top.count) heap.push({cur, top.a, top.b});
      continue;
    }
    const int32_t a = top.a, b = top.b;
    std::string joined = tok[a] + tok[b];
    int32_t nid;
    auto ex = tok_id.find(joined);
    if (ex != tok_id.end()) {
      nid = ex->second;  // the same bytes were built another way before: reuse the id
    } else {
      nid = static_cast<int32_t>(tok.size());
      tok.push_back(joined);
      tok_id.emplace(std::move(joined), nid);
    }
    // A pair merged before can reappear when one of its tokens is rebuilt; the earlier rule
    // already covers it at encode time, so apply it without a duplicate rule.
    if (merged.insert(k).second) merges.emplace_back(a, b);

    // Rewrite the words holding (a, b); accumulate pair-count changes.
    ++step;
    delta.clear();
    std::vector<int32_t> holders = std::move(where[k]);
    where.erase(k);
    for (int32_t w : holders) {
      if (seen[w] == step) continue;
      seen[w] = step;
      const std::vector<int32_t>& s = word[w];
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;
      rewritten.clear();
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          rewritten.push_back(nid);
          i += 2;
        } else {
          rewritten.push_back(s[i++]);
        }
      }
      const int64_t f = freq[w];
      for (size_t i = 0; i + 1 < s.size(); ++i) delta[pair_key(s[i], s[i + 1])] -= f;
      for (size_t i = 0; i + 1 < rewritten.size(); ++i) {
        const uint64_t nk = pair_key(rewritten[i], rewritten[i + 1]);
        delta[nk] += f;
        if (rewritten[i] == nid || rewritten[i + 1] == nid) {
          auto& v = where[nk];
          if (v.empty() || v.back() != w) v.push_back(w);
        }
      }
      word[w] = rewritten;
    }
    for (const auto& kv : delta) {
      if (kv.second == 0) continue;
      int64_t& c = count[kv.first];
      c += kv.second;
      CHECK(c >= 0, "tokenizer train: internal error: negative pair count");
      if (c == 0) count.erase(kv.first);
      else if (kv.second > 0)
        heap.push({c, static_cast<int32_t>(kv.first >> 32), static_cast<int32_t>(kv.first & 0xFFFFFFFFu)});
    }
    if (step % every == 0 || static_cast<int32_t>(tok.size()) == target)
      log(str_cat("tokenizer train: merge ", step, ": vocab ", tok.size() + 1, "/", N, "  '", printable(tok[a]),
                  "' + '", printable(tok[b]), "' (count ", top.count, ")  ", seconds_since(t0), " s"));
  }
  if (static_cast<int32_t>(tok.size()) < target)
    log(str_cat("tokenizer train: warning: the text ran out of pairs after ", merges.size(), " merges; vocab is ",
                tok.size() + 1, " instead of ", N));

  // tokenizer.json
  std::vector<std::string> vocab;
  vocab.reserve(tok.size() + 1);
  for (const std::string& t : tok) vocab.push_back(byte_level::to_text(t));
  vocab.push_back(kEot);
  std::vector<std::pair<std::string, std::string>> merge_text;
  merge_text.reserve(merges.size());
  for (const auto& m : merges) merge_text.emplace_back(vocab[m.first], vocab[m.second]);
  AddedToken eot;
  eot.id = static_cast<int32_t>(tok.size());
  eot.content = kEot;
  eot.special = true;
  eot.normalized = false;
  Json doc = BpeTokenizer::make_json(vocab, merge_text, {eot});

  if (stats) {
    stats->bytes = bytes_;
    stats->pretokens = pretokens_;
    stats->distinct_words = static_cast<int64_t>(word.size());
    stats->merges = static_cast<int32_t>(merges.size());
    stats->vocab_size = static_cast<int32_t>(vocab.size());
    stats->count_seconds = count_seconds_;
    stats->merge_seconds = seconds_since(t0);
  }
  return doc;
}

}  // namespace moessm
