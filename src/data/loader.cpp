// DataLoader (see loader.h): counter-based random windows for training, ordered windows for eval.
#include "data/loader.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/rng.h"

namespace moessm {
namespace {

// Streams for (step, row): a fixed salt keeps data sampling apart from other users of the same
// seed (weight init, dropout); rows get the low 24 bits, so B may be up to 2^24 and steps up to
// 2^40 before two (step, row) pairs could share a stream.
constexpr uint64_t kRowBits = 24;
const uint64_t kSamplingSalt = stream_id("moessm.data.sample");

uint64_t window_stream(uint64_t step, uint64_t row) {
  return kSamplingSalt ^ ((step << kRowBits) | row);
}

std::string shard_name(const Shard& s) { return s.path.empty() ? std::string("<in-memory shard>") : s.path; }

// targets[0..T) = ids[first..first+T), -1 where the shard's mask says a token is not scored.
void copy_targets(const Shard& sh, int32_t* targets, uint64_t first, int64_t T) {
  std::memcpy(targets, sh.ids.data() + first, sizeof(int32_t) * size_t(T));
  if (!sh.scored.empty())
    for (int64_t t = 0; t < T; ++t)
      if (!sh.scored[first + uint64_t(t)]) targets[t] = -1;
}

}  // namespace

Json DataLoader::State::to_json() const {
  // Json integers are int64: the u64 -> int64 -> u64 round trip is exact for any value.
  Json j = Json::object();
  j.set("seed", Json(static_cast<int64_t>(seed)));
  j.set("step", Json(static_cast<int64_t>(step)));
  j.set("num_tokens", Json(static_cast<int64_t>(num_tokens)));
  return j;
}

DataLoader::State DataLoader::State::from_json(const Json& j) {
  CHECK(j.is_object(), "data loader state: expected an object, found ", j.kind_name());
  State s;
  s.seed = static_cast<uint64_t>(j.at("seed", "data loader state").as_int("data loader state: seed"));
  s.step = static_cast<uint64_t>(j.at("step", "data loader state").as_int("data loader state: step"));
  if (const Json* n = j.get("num_tokens")) s.num_tokens = static_cast<uint64_t>(n->as_int("data loader state: num_tokens"));
  return s;
}

DataLoader::DataLoader(std::shared_ptr<const Shard> shard, uint64_t seed)
    : shard_(std::move(shard)), seed_(seed) {
  CHECK(shard_ != nullptr, "DataLoader: null shard");
  CHECK(shard_->scored.empty() || shard_->scored.size() == shard_->ids.size(), shard_name(*shard_),
        ": scored mask of ", shard_->scored.size(), " entries for ", shard_->ids.size(), " tokens");
}

DataLoader::DataLoader(const std::string& shard_path, uint64_t seed)
    : DataLoader(std::make_shared<const Shard>(read_shard(shard_path)), seed) {}

void DataLoader::check_shape(int64_t B, int64_t T) const {
  CHECK(B >= 1 && T >= 1, "DataLoader: batch shape: expected B >= 1 and T >= 1, found B=", B, " T=", T);
  CHECK(B < (int64_t(1) << kRowBits), "DataLoader: batch size B: expected < ", int64_t(1) << kRowBits,
        ", found ", B);
  CHECK(num_tokens() >= uint64_t(T) + 1, shard_name(*shard_), ": has ", num_tokens(),
        " tokens, fewer than the T+1 = ", T + 1,
        " a window needs (use a shorter sequence length or more data)");
}

void DataLoader::batch_at(uint64_t step, int32_t* inputs, int32_t* targets, int64_t B, int64_t T,
                          int64_t first_row) const {
  check_shape(B, T);
  CHECK(first_row >= 0 && first_row <= (int64_t(1) << kRowBits) - B, "DataLoader: first row of a batch shard: "
        "expected 0 <= first_row and first_row + B <= ", int64_t(1) << kRowBits, ", found first_row=", first_row,
        " B=", B);
  const int32_t* ids = shard_->ids.data();
  const uint64_t starts = num_tokens() - uint64_t(T);  // window [s, s+T] needs s+T <= n-1
  for (int64_t r = 0; r < B; ++r) {
    Rng rng(seed_, window_stream(step, uint64_t(first_row + r)));
    uint64_t s = rng.below(starts);
    std::memcpy(inputs + r * T, ids + s, sizeof(int32_t) * size_t(T));
    copy_targets(*shard_, targets + r * T, s + 1, T);
  }
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets, int64_t B, int64_t T, int64_t first_row) {
  batch_at(step_, inputs, targets, B, T, first_row);
  ++step_;
}

void DataLoader::restore(const State& s) {
  CHECK(s.num_tokens == 0 || s.num_tokens == num_tokens(), shard_name(*shard_),
        ": data loader state: num_tokens: the state was saved for a shard of ", s.num_tokens,
        " tokens, this shard has ", num_tokens(), " (a different data set?)");
  seed_ = s.seed;
  step_ = s.step;
}

int64_t DataLoader::num_windows(int64_t T) const {
  CHECK(T >= 1, "DataLoader: T: expected >= 1, found ", T);
  return num_tokens() < 1 ? 0 : int64_t((num_tokens() - 1) / uint64_t(T));
}

int64_t DataLoader::val_batches(int64_t B, int64_t T) const {
  check_shape(B, T);
  return (num_windows(T) + B - 1) / B;
}

int64_t DataLoader::val_batch(int64_t i, int32_t* inputs, int32_t* targets, int64_t B,
                              int64_t T) const {
  return val_batch(i, inputs, targets, B, T, 0, B);
}

int64_t DataLoader::val_batch(int64_t i, int32_t* inputs, int32_t* targets, int64_t B, int64_t T,
                              int64_t first_row, int64_t rows) const {
  const int64_t nb = val_batches(B, T);
  CHECK(i >= 0 && i < nb, shard_name(*shard_), ": validation batch index: expected 0 <= i < ", nb,
        " (B=", B, ", T=", T, "), found ", i);
  CHECK(first_row >= 0 && rows >= 1 && first_row <= B - rows, shard_name(*shard_),
        ": validation batch shard: expected rows [first_row, first_row + rows) inside the batch of B=", B,
        ", found first_row=", first_row, " rows=", rows);
  const int64_t nw = num_windows(T);
  const int32_t* ids = shard_->ids.data();
  int64_t real = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t w = i * B + first_row + r;
    if (w < nw) {
      std::memcpy(inputs + r * T, ids + w * T, sizeof(int32_t) * size_t(T));
      copy_targets(*shard_, targets + r * T, uint64_t(w * T + 1), T);
      ++real;
    } else {
      std::fill(inputs + r * T, inputs + (r + 1) * T, 0);
      std::fill(targets + r * T, targets + (r + 1) * T, -1);
    }
  }
  return real;
}

}  // namespace moessm
