// Tokenizer interface: text <-> token ids.
// Implementations: byte-level (256 ids, the trivial option) and byte-level BPE loaded from a
// Hugging Face tokenizer.json (GPT-2 / GPT-NeoX schema). load() accepts a path to a
// tokenizer.json, or the word "byte". Errors name the file and the field.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moessm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;     // number of ids (max id + 1)
  virtual int32_t eot_id() const = 0;         // end-of-text id, or -1 when the tokenizer has none
  virtual std::string kind() const = 0;       // "byte" or "bpe"

  static std::unique_ptr<Tokenizer> load(const std::string& path_or_byte);
};

}  // namespace moessm
