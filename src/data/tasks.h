// Synthetic recall tasks that need no data (issue 13, item 2): example generators, a prepared
// data directory the trainer reads directly, and the answer positions accuracy is measured on.
//
//   mqar        multi-query associative recall (Zoology): `pairs` key-value pairs, then every key
//               again in a random order, each followed by its value. Keys and values are drawn
//               without repetition inside an example from disjoint ranges. Answers: the values
//               after the queried keys.
//   copy        selective copying (the Mamba paper): `pairs` data tokens at random positions of a
//               region of length - 2·pairs - 1 noise tokens, a separator, then the data tokens in
//               order. Answers: the tokens after the separator.
//   induction   induction heads: random tokens, a trigger token followed by a random token x at a
//               random position in the first half, and the trigger again as the second-to-last
//               token. Answer: x, the last token.
// Token ids (all < 256): 0 noise / padding, 1 separator, 2 trigger, then each task's own ranges
// (task_vocab_size() ids in all). An example's `answer[t]` is 1 where ids[t] is an answer: the
// model must predict it from ids[0..t-1]. Examples are a pure function of (options, seed, index).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/json.h"

namespace moessm {

struct TaskOptions {
  std::string task = "mqar";  // mqar, copy, induction
  int64_t length = 64;        // tokens per example
  int64_t pairs = 8;          // mqar: key-value pairs; copy: data tokens (unused by induction)
  int64_t symbols = 64;       // distinct keys / values / data / random tokens
  uint64_t seed = 0;
  // Checks the task name and that the sizes fit (each message names the option).
  void validate() const;
  Json to_json() const;
  static TaskOptions from_json(const Json& j, const std::string& where);
};

struct TaskExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> answer;
};

// Ids the task uses: every id of its examples is below this (<= 256).
int64_t task_vocab_size(const TaskOptions& o);
// Example `index` of the stream (seed, index): deterministic.
TaskExample make_task_example(const TaskOptions& o, uint64_t index);

// The answer flags of examples [first, first + n) of the stream, concatenated as the shards hold
// their ids (1 where the token is an answer): the trainer's answers_only mask.
std::vector<uint8_t> task_answer_flags(const TaskOptions& o, uint64_t first, int64_t n);

// A prepared data directory (train.bin, val.bin, meta.json with the task's options under
// "task"): train examples 0 .. train-1, validation examples train .. train+val-1, concatenated.
// The shards carry the byte tokenizer's hash (the ids are < 256; no tokenizer.json).
void write_task_data(const TaskOptions& o, int64_t train_examples, int64_t val_examples, const std::string& dir);
// The options a task data directory was made with (its meta.json "task").
TaskOptions read_task_options(const std::string& dir);

}  // namespace moessm
