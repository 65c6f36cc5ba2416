// Fuzzes the JSON parser (io/json.h: Json::parse) and the model config reader on its result
// (model/config.h: ModelConfig::from_json and from_checkpoint_json). Malformed input must give
// a moessm::Error. Accepted JSON must survive dump() -> parse() unchanged; an accepted config
// must survive to_json() -> from_json() and to_checkpoint_json() -> from_checkpoint_json().
#include <cstdint>
#include <string>

#include "core/check.h"
#include "fuzz_util.h"
#include "io/json.h"
#include "model/config.h"

using namespace moessm;

namespace {

void check_config(const ModelConfig& cfg) {
  const std::string once = cfg.to_json().dump();
  fuzz::fuzz_check(ModelConfig::from_json(cfg.to_json(), "re-read").to_json().dump() == once,
                   "config to_json -> from_json round trip");
  const ModelConfig ck = ModelConfig::from_checkpoint_json(cfg.to_checkpoint_json(), "config.json");
  fuzz::fuzz_check(ck.to_json().dump() == once, "config checkpoint json round trip");
  (void)cfg.padded_vocab();
  (void)cfg.resolved_dt_rank();
  (void)cfg.d_inner();
  (void)cfg.all_dense();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Json j;
  try {
    j = Json::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
  } catch (const Error&) {
    return 0;
  }
  try {
    const std::string text = j.dump();
    fuzz::fuzz_check(Json::parse(text, "dumped") == j, "JSON dump -> parse round trip");
    fuzz::fuzz_check(Json::parse(j.dump(2), "dumped, indented") == j, "JSON dump(2) round trip");
  } catch (const Error&) {
    fuzz::fuzz_check(false, "dump of a parsed value must not fail");
  }
  try {
    check_config(ModelConfig::from_json(j, "fuzz.json"));
  } catch (const Error&) {
  }
  try {
    check_config(ModelConfig::from_checkpoint_json(j, "fuzz/config.json"));
  } catch (const Error&) {
  }
  return 0;
}
