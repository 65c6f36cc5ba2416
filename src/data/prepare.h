// prepare_data: text files -> a self-describing data directory (what `moessm prepare` runs).
//
//   out_dir/train.bin, out_dir/val.bin   token shards (data/shards.h)
//   out_dir/tokenizer.json               copy of the tokenizer file (absent for "byte")
//   out_dir/meta.json                    tokenizer, vocab size, token counts, sources (written
//                                        last: its presence marks a complete directory)
//
// Each input file is one document, tokenised on its own; the documents of a split are joined with
// the tokenizer's end-of-text id between them (nothing between them when it has none).
// Split, first rule that applies: (1) files in val_inputs form the validation split (they are
// removed from inputs if listed there too); (2) when an input is named persuasion.txt (the bundled
// Austen corpus) and there are other inputs, it is the validation split; (3) otherwise the last
// val_fraction of the joined token stream. Each split must have at least min_split_tokens tokens.
// Inputs must be non-empty valid UTF-8; errors name the file (and the byte offset).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/json.h"

namespace moessm {

constexpr int64_t kMinSplitTokens = 32;

struct PrepareOptions {
  std::vector<std::string> inputs;      // files, or directories (= their *.txt files, sorted)
  std::vector<std::string> val_inputs;  // explicit validation files (or directories)
  std::string tokenizer = "byte";       // "byte", a tokenizer.json, or a prepared data dir
  std::string out_dir;
  double val_fraction = 0.05;           // rule (3); 0 < f < 1
  int64_t min_split_tokens = kMinSplitTokens;
  std::function<void(const std::string&)> log;  // progress lines (optional)
};

struct PrepareSource {
  std::string path;
  uint64_t bytes = 0, tokens = 0;
  std::string split;  // "train", "val", or "train+val" (a file cut by the fraction rule)
};

struct PrepareResult {
  std::string tokenizer_kind;  // "byte" or "bpe"
  int32_t vocab_size = 0, eot_id = -1;
  uint64_t train_tokens = 0, val_tokens = 0, input_bytes = 0;
  std::string split_rule;      // "val-files", "persuasion", "fraction"
  std::vector<PrepareSource> sources;
  double seconds = 0;
  Json meta;                   // what was written to meta.json
};

PrepareResult prepare_data(const PrepareOptions& opt);

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates, > U+10FFFF and
// truncated sequences are invalid), or std::string::npos when `s` is valid.
size_t first_invalid_utf8(const std::string& s);

// The tokenizer argument to Tokenizer::load for a prepared data directory: dir/tokenizer.json
// when present, else "byte" when meta.json says so; error otherwise.
std::string data_dir_tokenizer(const std::string& dir);

}  // namespace moessm
