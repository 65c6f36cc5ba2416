// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (GPT-2 / GPT-NeoX schema),
// encoding exactly as the HF `tokenizers` library does with add_special_tokens=False:
//   1. added_tokens are cut out first (leftmost-longest; non-"normalized" ones on the raw text,
//      then "normalized" ones in what is left; lstrip/rstrip absorb neighbouring whitespace);
//      each becomes its own id and is never merged with its neighbours.
//   2. the rest goes through pre_tokenizer: ByteLevel (add_prefix_space, use_regex with the GPT-2
//      pattern), optionally inside a Sequence after Split steps (Regex/String, Isolated/Removed).
//   3. every pre-token is spelled in byte-level characters and merged by model.merges rank
//      (lowest rank first, leftmost first), with ignore_merges honoured.
// Supported fields and the errors for others (each names the file and the field):
//   model.type "BPE"; model.vocab {token: id}; model.merges as "a b" strings or [a, b] pairs
//   (every token and every merged result must be in model.vocab); model.unk_token, fuse_unk,
//   ignore_merges; dropout must be null, continuing_subword_prefix/end_of_word_suffix empty.
//   normalizer: null, or NFC / a Sequence of NFC, which is NOT applied: text is assumed to be in
//   NFC already (true of nearly all text; decomposed accents would encode differently from HF).
//   decoder: ByteLevel. post_processor: ignored (we never add BOS/EOS on our own).
// decode() returns the raw bytes of the tokens (HF then applies from_utf8_lossy; the two agree
// whenever the bytes are valid UTF-8, and raw bytes let token-by-token output be concatenated).
// decode_lossy() is HF's exact result. Out-of-range ids are errors (HF skips them silently).
// Thread safety: a loaded tokenizer is immutable; encode/decode may run concurrently.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/json.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"

namespace moessm {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

class BpeTokenizer final : public Tokenizer {
 public:
  static std::unique_ptr<BpeTokenizer> from_file(const std::string& path);
  // `source` names the document in errors (normally its path).
  static std::unique_ptr<BpeTokenizer> from_json(const Json& doc, const std::string& source);

  // A tokenizer.json document for a GPT-2-style byte-level BPE: vocab[i] is the byte-level
  // spelling of id i, merges are (left, right) spellings in rank order, added tokens follow.
  // Uses the same fields and defaults as GPT-2's tokenizer.json, merges as "a b" strings (which
  // every tokenizers version reads).
  static Json make_json(const std::vector<std::string>& vocab,
                        const std::vector<std::pair<std::string, std::string>>& merges,
                        const std::vector<AddedToken>& added);

  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;  // raw bytes
  std::string decode_lossy(const std::vector<int32_t>& ids) const;     // HF: invalid UTF-8 -> U+FFFD
  int32_t vocab_size() const override { return static_cast<int32_t>(id_text_.size()); }
  int32_t eot_id() const override { return eot_id_; }
  std::string kind() const override { return "bpe"; }

  int32_t token_to_id(const std::string& text) const;  // byte-level spelling or added token; -1 if none
  const std::string& id_to_token(int32_t id) const;    // "" for an id nobody uses
  size_t num_merges() const { return n_merges_; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

 private:
  struct Merge {
    int32_t rank, id;
  };
  struct SplitStep {  // one Split pre-tokenizer
    std::unique_ptr<byte_level::Splitter> splitter;
    bool keep_matches = true;  // Isolated keeps matches and gaps; Removed keeps only the gaps
  };
  using Cache = std::unordered_map<std::string, std::vector<int32_t>>;

  BpeTokenizer() = default;
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // Encoding stages (see the header comment).
  void encode_text(std::string_view text, bool normalized_pass, Cache& cache, std::vector<int32_t>& out) const;
  void pre_tokenize(std::string_view piece, size_t step, Cache& cache, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, Cache& cache, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void check_id(int32_t id, size_t pos) const;

  // Vocabulary: model tokens and added tokens share the id space.
  std::vector<std::string> id_text_;    // spelling per id ("" = unused id)
  std::vector<std::string> id_bytes_;   // what decode emits per id (ByteLevel decoder rule)
  std::vector<bool> id_used_;
  std::unordered_map<std::string, int32_t> vocab_;  // model.vocab
  std::unordered_map<uint64_t, Merge> merges_;      // (left id, right id) -> rank, result id
  size_t n_merges_ = 0;
  int32_t byte_id_[256];                            // id of each single-byte token, -1 if absent
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, ignore_merges_ = false;
  int32_t eot_id_ = -1;

  std::vector<AddedToken> added_;
  std::vector<std::vector<int32_t>> added_by_byte_[2];  // [normalized][first byte] -> indices, longest first

  std::vector<SplitStep> steps_;                         // Split steps before ByteLevel
  bool add_prefix_space_ = false;
  std::unique_ptr<byte_level::Splitter> byte_level_regex_;  // null when use_regex is false
};

}  // namespace moessm
