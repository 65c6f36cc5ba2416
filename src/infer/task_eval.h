// Accuracy of a model on a synthetic recall task (data/tasks.h): n fresh examples from index
// `first` (a range the training data never used), run B at a time with teacher forcing; an answer
// is correct when the argmax of the logits at the position before it is the answer token (ties
// → lower id, over the real vocabulary only), an example when all its answers are. Works on any
// Model<Bk> (CPU or CUDA): it only calls prepare and forward_logits.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/check.h"
#include "data/tasks.h"

namespace moessm {

struct TaskAccuracy {
  int64_t examples = 0, answers = 0, correct_answers = 0, correct_examples = 0;
  double answer_accuracy() const { return answers ? double(correct_answers) / double(answers) : 0.0; }
  double example_accuracy() const { return examples ? double(correct_examples) / double(examples) : 0.0; }
};

// The index the evaluation examples start from: far above any train / validation example.
constexpr uint64_t kTaskEvalFirstIndex = uint64_t(1) << 40;

template <typename M>
TaskAccuracy task_accuracy(M& model, const TaskOptions& o, uint64_t first, int64_t n, int64_t B) {
  o.validate();
  CHECK(n >= 1 && B >= 1, "task accuracy: need n >= 1 examples and B >= 1, found ", n, " and ", B);
  CHECK(task_vocab_size(o) <= model.config().vocab_size, "task ", o.task, ": its ", task_vocab_size(o),
        " ids exceed the model's vocab_size ", model.config().vocab_size);
  const int64_t T = o.length, V = model.vocab(), Vreal = model.config().vocab_size;
  B = std::min(B, n);
  model.prepare(B, T, false);
  std::vector<int32_t> ids(size_t(B * T));
  std::vector<typename M::HostLogit> logits(size_t(B * T * V));
  TaskAccuracy acc;
  for (int64_t e0 = 0; e0 < n; e0 += B) {
    const int64_t real = std::min(B, n - e0);
    std::vector<TaskExample> ex;
    for (int64_t b = 0; b < B; ++b) {
      ex.push_back(make_task_example(o, first + uint64_t(e0 + std::min(b, real - 1))));
      std::copy(ex.back().ids.begin(), ex.back().ids.end(), ids.begin() + b * T);
    }
    model.forward_logits(logits.data(), ids.data(), B, T, nullptr, nullptr);
    for (int64_t b = 0; b < real; ++b) {
      bool all = true;
      for (int64_t t = 1; t < T; ++t) {
        if (!ex[size_t(b)].answer[size_t(t)]) continue;
        const auto* row = logits.data() + (b * T + t - 1) * V;
        const int64_t best = std::max_element(row, row + Vreal) - row;
        const bool ok = best == ex[size_t(b)].ids[size_t(t)];
        ++acc.answers;
        acc.correct_answers += ok;
        all = all && ok;
      }
      ++acc.examples;
      acc.correct_examples += all;
    }
  }
  return acc;
}

}  // namespace moessm
