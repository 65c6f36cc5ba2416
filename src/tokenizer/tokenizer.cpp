// Tokenizer::load dispatch and the byte tokenizer.
// "byte" selects ByteTokenizer; anything else is a path to a Hugging Face tokenizer.json, which
// must describe a byte-level BPE model (see bpe_tokenizer.h). Errors name the path and field.
#include "tokenizer/tokenizer.h"

#include "core/check.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_tokenizer.h"

namespace moessm {

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(ids[i] >= 0 && ids[i] < 256, "byte tokenizer: decode: id ", ids[i], " at position ", i,
          " is out of range: expected 0..255");
    out[i] = static_cast<char>(ids[i]);
  }
  return out;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path_or_byte) {
  if (path_or_byte == "byte") return std::make_unique<ByteTokenizer>();
  CHECK(!path_or_byte.empty(), "tokenizer: expected 'byte' or a path to a tokenizer.json, found an empty string");
  return BpeTokenizer::from_file(path_or_byte);
}

}  // namespace moessm
