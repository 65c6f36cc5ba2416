// The trivial tokenizer: one id per byte (256 ids, id = byte value), no end-of-text id.
// decode() returns the raw bytes, so any byte string round-trips, valid UTF-8 or not.
#pragma once
#include "tokenizer/tokenizer.h"

namespace moessm {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;  // ids must be in [0, 256)
  int32_t vocab_size() const override { return 256; }
  int32_t eot_id() const override { return -1; }
  std::string kind() const override { return "byte"; }
};

}  // namespace moessm
