// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (GPT-2 / GPT-NeoX schema).
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace moessm {

class BpeTokenizer {
 public:
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
};

}  // namespace moessm
