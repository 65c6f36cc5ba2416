// Fuzzes loading a Hugging Face tokenizer.json (tokenizer/tokenizer.h: Tokenizer::load on a
// per-process temporary file, i.e. BpeTokenizer::from_file). Malformed files must give a
// moessm::Error. A tokenizer that loads must encode a fixed text and the first bytes of the
// input itself, every id it returns must be in range, and decoding them must not fail.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

using namespace moessm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::TempInput input("tokenizer", ".json");
  const std::string& path = input.write(data, size);
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(path);
  } catch (const Error&) {
    return 0;
  }
  fuzz::fuzz_check(tok->vocab_size() > 0, "a loaded tokenizer has ids");
  fuzz::fuzz_check(tok->eot_id() >= -1 && tok->eot_id() < tok->vocab_size(), "eot id in range");
  const std::string texts[] = {
      "Hello, world! It's 2024 -- a test.\n\tTabs and  spaces\xc3\xa9\xe2\x82\xac",
      std::string(reinterpret_cast<const char*>(data), size < 256 ? size : 256)};
  for (const std::string& text : texts) {
    try {
      std::vector<int32_t> ids = tok->encode(text);
      for (int32_t id : ids) fuzz::fuzz_check(id >= 0 && id < tok->vocab_size(), "encoded id in range");
      (void)tok->decode(ids);
    } catch (const Error&) {
      // e.g. a vocabulary without some byte's token: a named error is fine.
    }
  }
  return 0;
}
