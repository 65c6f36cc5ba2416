// Byte-level BPE from a tokenizer.json (first stage: schema checks only).
#include "tokenizer/bpe_tokenizer.h"

#include "core/check.h"
#include "core/json.h"
#include "io/file_util.h"

namespace moessm {

std::unique_ptr<Tokenizer> BpeTokenizer::from_file(const std::string& path) {
  CHECK(file_exists(path), "tokenizer: ", path, ": no such file (expected 'byte' or a tokenizer.json)");
  Json j = Json::parse_file(path);
  const Json& model = j.at("model", path);
  const std::string& type = model.at("type", path + ": model").as_string(path + ": model.type");
  CHECK(type == "BPE", path, ": model.type: expected \"BPE\", found \"", type, "\"");
  FAIL(path, ": byte-level BPE encoding is not implemented yet");
}

}  // namespace moessm
