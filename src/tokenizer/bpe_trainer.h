// Trains a GPT-2-style byte-level BPE and returns it as a tokenizer.json document
// (BpeTokenizer::make_json), readable by BpeTokenizer and by Hugging Face `tokenizers`.
//
// Vocabulary layout for vocab_size N: ids 0..255 are the 256 bytes in GPT-2's byte-to-unicode
// order (base_order()), ids 256..N-2 the learned tokens in the order they were created, and
// N-1 is "<|endoftext|>" (an added special token; occurrences in the training text are cut out
// and never learned from). Pre-tokenization is the GPT-2 regex, as at encode time.
//
// Algorithm: count pre-token words once (word -> frequency); keep pair counts and, per pair, the
// words it occurs in; each merge rewrites only the words that hold the chosen pair and applies
// the count deltas. The next pair is the highest count, ties broken by the lexicographically
// smallest (left bytes, right bytes), so training is deterministic. A merge whose result
// spells an existing token reuses that id (vocab grows by learned *distinct* tokens), so the
// result has exactly N ids unless the corpus runs out of pairs first (then fewer; reported).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "io/json.h"
#include "tokenizer/byte_level.h"

namespace moessm {

struct BpeTrainOptions {
  int32_t vocab_size = 4096;                    // total ids including bytes and <|endoftext|>
  std::function<void(const std::string&)> log;  // progress lines; may be empty
};

struct BpeTrainStats {
  int64_t bytes = 0, pretokens = 0, distinct_words = 0;
  int32_t merges = 0, vocab_size = 0;
  double count_seconds = 0, merge_seconds = 0;
};

class BpeTrainer {
 public:
  BpeTrainer();  // throws when built without PCRE2
  void add_text(std::string_view text);  // one document: counts its pre-token words
  Json train(const BpeTrainOptions& opt, BpeTrainStats* stats = nullptr) const;

 private:
  byte_level::Splitter splitter_;
  std::unordered_map<std::string, int64_t> words_;
  int64_t bytes_ = 0, pretokens_ = 0;
  double count_seconds_ = 0;
};

}  // namespace moessm
