// Fuzzes reading a training checkpoint's trainer_state.json the way `moessm train --resume`
// does (src/train/trainer.cpp): Json::parse, then "step" (integer), "elapsed_s" (number) and
// "loader" (DataLoader::State::from_json), then DataLoader::restore against a fixed 64-token
// shard and one batch drawn from the restored stream. Malformed input must give a moessm::Error;
// an accepted state must survive to_json() -> from_json().
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/loader.h"
#include "data/shards.h"
#include "fuzz_util.h"
#include "io/json.h"

using namespace moessm;

namespace {

std::shared_ptr<const Shard> fixed_shard() {
  static std::shared_ptr<const Shard> s = [] {
    std::vector<int32_t> ids(64);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7) % 50);
    return std::make_shared<const Shard>(
        decode_shard(encode_shard(ids.data(), ids.size(), 50, 1, "fuzz"), "fixed.bin"));
  }();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string sp = "run/checkpoint/trainer_state.json";
  try {
    Json st = Json::parse(std::string(reinterpret_cast<const char*>(data), size), sp);
    const int64_t step = st.at("step", sp).as_int(sp + ": step");
    const double elapsed = st.at("elapsed_s", sp).as_number(sp + ": elapsed_s");
    (void)step;
    (void)elapsed;
    DataLoader::State s = DataLoader::State::from_json(st.at("loader", sp));
    fuzz::fuzz_check(DataLoader::State::from_json(s.to_json()) == s, "loader state round trip");
    DataLoader loader(fixed_shard(), 0);
    loader.restore(s);
    fuzz::fuzz_check(loader.state().seed == s.seed && loader.state().step == s.step, "restored");
    std::vector<int32_t> in(2 * 8), tg(2 * 8);
    loader.next_batch(in.data(), tg.data(), 2, 8);
  } catch (const Error&) {
  }
  return 0;
}
