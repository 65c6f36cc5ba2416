// Fuzzes the token shard reader (data/shards.h: decode_shard from memory, read_shard_header and
// read_shard on a per-process temporary file). Malformed shards must give a moessm::Error. An
// accepted shard must hold ids below its vocab_size, agree with its header, re-encode to the same
// bytes, and feed a DataLoader (a training batch and the evaluation batches) without error when
// it has enough tokens.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/loader.h"
#include "data/shards.h"
#include "fuzz_util.h"

using namespace moessm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::TempInput input("shard", ".bin");
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  bool decoded = false;
  try {
    auto shard = std::make_shared<Shard>(decode_shard(bytes, "fuzz.bin"));
    decoded = true;
    const ShardHeader& h = shard->header;
    fuzz::fuzz_check(shard->ids.size() == h.num_tokens, "ids == num_tokens");
    for (int32_t id : shard->ids)
      fuzz::fuzz_check(id >= 0 && uint32_t(id) < h.vocab_size, "id < vocab_size");
    fuzz::fuzz_check(encode_shard(shard->ids.data(), shard->ids.size(), h.vocab_size,
                                  h.tokenizer_hash, h.tokenizer_desc) == bytes,
                     "decode -> encode gives the same bytes");
    const int64_t B = 2, T = 3;
    if (shard->ids.size() >= size_t(T) + 1) {
      DataLoader loader(shard, 1234);
      std::vector<int32_t> in(B * T), tg(B * T);
      loader.next_batch(in.data(), tg.data(), B, T);
      const int64_t nb = loader.val_batches(B, T);
      for (int64_t i = 0; i < nb && i < 4; ++i) loader.val_batch(i, in.data(), tg.data(), B, T);
    }
  } catch (const Error&) {
  }
  const std::string& path = input.write(data, size);
  bool read_ok = false;
  try {
    (void)read_shard_header(path);
    Shard s = read_shard(path);
    read_ok = true;
  } catch (const Error&) {
  }
  fuzz::fuzz_check(read_ok == decoded, "read_shard agrees with decode_shard");
  return 0;
}
