// DataLoader: batches of (inputs, targets) windows from one token shard.
//
// Training (next_batch): B windows of T+1 consecutive tokens at random starts; row r of step s
// draws its start from its own Rng stream (seed, stream(s, r)), so a batch depends only on
// (seed, step, B, T, shard) and not on what was drawn before, the thread count or the host.
// targets[b, t] = inputs[b, t+1] of the same window (next-token prediction). The state is
// (seed, step); state() / restore() and the Json forms let a checkpoint resume the exact stream.
// A row depends on (seed, step, row) only, so a process of a data-parallel run takes rows
// [first_row, first_row + B) of the global batch and W processes together draw exactly the
// rows one process with batch W·B would (docs/distributed.md).
//
// Evaluation (val_batch): the shard cut into non-overlapping windows in order, window w covering
// tokens [w·T, w·T+T] (inputs w·T.., targets w·T+1..), floor((n-1)/T) windows, B per batch; the
// last batch may be partial: its unused rows get inputs 0 and targets -1 (ignored by
// cross_entropy). Stateless: batch i is the same whenever it is asked for. A shard of batch i
// (rows [first_row, first_row + rows) of a batch of B) fills the same rows the whole batch has.
//
// Buffers are row-major [B, T] int32. A shard with fewer than T+1 tokens is an error naming it.
// A shard with a `scored` mask (shards.h) gives target -1 wherever the target token is not scored.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "io/json.h"
#include "data/shards.h"

namespace moessm {

class DataLoader {
 public:
  struct State {
    uint64_t seed = 0;
    uint64_t step = 0;        // batches drawn so far; the next batch is number `step`
    uint64_t num_tokens = 0;  // of the shard it was taken from (checked on restore; 0: unchecked)
    Json to_json() const;
    static State from_json(const Json& j);  // errors name the missing / wrong field
    bool operator==(const State& o) const {
      return seed == o.seed && step == o.step && num_tokens == o.num_tokens;
    }
  };

  DataLoader(std::shared_ptr<const Shard> shard, uint64_t seed);
  DataLoader(const std::string& shard_path, uint64_t seed);  // read_shard(shard_path)

  // Random windows for step `state().step`, then step += 1: rows [first_row, first_row + B) of
  // the step's batch (B rows written; first_row 0 for a single process).
  void next_batch(int32_t* inputs, int32_t* targets, int64_t B, int64_t T, int64_t first_row = 0);
  // The same without advancing: the batch of any step (next_batch == batch_at(step) then ++step).
  void batch_at(uint64_t step, int32_t* inputs, int32_t* targets, int64_t B, int64_t T,
                int64_t first_row = 0) const;

  State state() const { return {seed_, step_, num_tokens()}; }
  void restore(const State& s);  // checks s.num_tokens against this shard unless it is 0

  // Sequential, non-overlapping evaluation windows (see the top of the file).
  int64_t num_windows(int64_t T) const;
  int64_t val_batches(int64_t B, int64_t T) const;  // ceil(num_windows / B)
  // Fills batch i (0 <= i < val_batches); returns the number of real rows (B except maybe last).
  int64_t val_batch(int64_t i, int32_t* inputs, int32_t* targets, int64_t B, int64_t T) const;
  // Rows [first_row, first_row + rows) of batch i of B (rows written); returns the real ones
  // among them (0 when the shard lies wholly past the split's last window).
  int64_t val_batch(int64_t i, int32_t* inputs, int32_t* targets, int64_t B, int64_t T, int64_t first_row,
                    int64_t rows) const;

  uint64_t num_tokens() const { return shard_->ids.size(); }
  const Shard& shard() const { return *shard_; }

 private:
  void check_shape(int64_t B, int64_t T) const;
  std::shared_ptr<const Shard> shard_;
  uint64_t seed_ = 0, step_ = 0;
};

}  // namespace moessm
