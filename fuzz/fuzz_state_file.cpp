// Fuzzes loading recurrent-state files (infer/state_file.h: load_state_file on a per-process
// temporary file) against a small fixed model: two dense Mamba layers (kModelJson below), weights
// from init(seed 1), so the seed corpus made by fuzz/make_corpus.sh with `moessm init --seed 1`
// and `moessm generate --state-out` carries matching fingerprints.
// Malformed or mismatching files must give a moessm::Error; an accepted one must have the sizes
// the model implies.
#include <cstdint>
#include <memory>
#include <string>

#include "core/check.h"
#include "fuzz_util.h"
#include "infer/state_file.h"
#include "io/json.h"
#include "model/config.h"
#include "model/language_model.h"

using namespace moessm;

namespace {

// Keep identical to the model fuzz/make_corpus.sh writes (the one the corpus was generated with).
const char kModelJson[] = R"({"d_model": 8, "n_layer": 2, "vocab_size": 256, "d_state": 4,
  "d_conv": 4, "expand": 2, "pad_vocab_size_multiple": 8, "mixer": "mamba"})";

LanguageModel<float>& model() {
  static std::unique_ptr<LanguageModel<float>> m = [] {
    auto p = std::make_unique<LanguageModel<float>>(
        ModelConfig::from_json(Json::parse(kModelJson, "state_model.json"), "state_model.json"));
    p->init(1);
    return p;
  }();
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::TempInput input("state", ".safetensors");
  LanguageModel<float>& m = model();
  const std::string& path = input.write(data, size);
  for (idx_t expect : {idx_t(0), idx_t(1)}) {
    try {
      StateSnapshot<float> s = load_state_file(path, m, expect);
      fuzz::fuzz_check(s.batch >= 1, "batch >= 1");
      fuzz::fuzz_check(s.state.size() == size_t(s.batch * m.state_size()), "state size");
      fuzz::fuzz_check(s.next_logits.empty() || s.next_logits.size() == size_t(s.batch * m.vocab()),
                       "logits size");
      fuzz::fuzz_check(s.tokens_consumed.size() == size_t(s.batch) &&
                           s.last_token.size() == size_t(s.batch), "per-slot fields");
    } catch (const Error&) {
    }
  }
  return 0;
}
