// `moessm task make` / `moessm task eval`: the synthetic recall tasks of data/tasks.h as a
// prepared data directory the trainer reads directly, and a model's accuracy on fresh examples.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/command.h"
#include "cli/device_model.h"
#include "core/check.h"
#include "data/tasks.h"
#include "infer/task_eval.h"
#include "io/file_util.h"
#include "io/json.h"
#include "model/checkpoint.h"
#include "model/mixer_registry.h"

namespace moessm::cli {
namespace {

const char* kUsage =
    "usage: moessm task make --task mqar|copy|induction --out DIR [options]   (see --help)\n"
    "       moessm task eval --model DIR --data DIR [--examples N] [--device cuda]\n"
    "Synthetic recall tasks (no data needed): multi-query associative recall (mqar), selective\n"
    "copying (copy) and induction heads (induction). `make` writes a prepared data directory\n"
    "(train.bin, val.bin, meta.json) for `moessm train --data DIR`; `eval` measures a trained\n"
    "model's accuracy on fresh examples of the task the directory was made with.\n";

int make_action(int argc, char** argv) {
  Args a("task make", "Write a synthetic task as a prepared data directory (train.bin, val.bin, meta.json).");
  a.option("task", "mqar, copy or induction", "mqar")
      .path("out", "output data directory", "", true)
      .option("length", "tokens per example", "64")
      .option("pairs", "mqar: key-value pairs; copy: data tokens to copy", "8")
      .option("symbols", "distinct keys / values / data tokens", "64")
      .option("seed", "example stream seed", "0")
      .option("train-examples", "training examples", "20000")
      .option("val-examples", "validation examples", "1000")
      .flag("overwrite", "replace a data directory already in --out");
  if (!a.parse(argc, argv)) return 0;
  CHECK(!file_exists(path_join(a.str("out"), "meta.json")) || a.on("overwrite"), "moessm task make: '", a.str("out"),
        "' already holds a data directory; pass --overwrite to replace it");
  TaskOptions o;
  o.task = a.str("task");
  o.length = a.integer("length");
  o.pairs = a.integer("pairs");
  o.symbols = a.integer("symbols");
  o.seed = uint64_t(a.integer("seed"));
  write_task_data(o, a.integer("train-examples"), a.integer("val-examples"), a.str("out"));
  std::printf("wrote %s: task %s, %lld + %lld examples of %lld tokens, %lld ids\n", a.str("out").c_str(),
              o.task.c_str(), (long long)a.integer("train-examples"), (long long)a.integer("val-examples"),
              (long long)o.length, (long long)task_vocab_size(o));
  return 0;
}

int eval_action(int argc, char** argv) {
  Args a("task eval", "Accuracy of a model on fresh examples of the task a data directory holds.");
  a.path("model", "checkpoint or training run directory", "", true)
      .path("data", "the task data directory (moessm task make)", "", true)
      .option("examples", "fresh examples to score", "1000")
      .option("batch", "examples per forward pass", "32")
      .path("json", "also write the result as JSON");
  device_options(a);
  if (!a.parse(argc, argv)) return 0;
  const TaskOptions o = read_task_options(a.str("data"));
  check_model_supported(load_model_config(a.str("model")), on_cuda(a) ? "cuda" : "cpu");
  auto model = load_model<float>(a.str("model"));
  const int64_t n = a.integer("examples"), B = a.integer("batch");
  CHECK(n >= 1 && n <= (int64_t(1) << 24), "--examples must be in [1, 16777216], found ", n);
  CHECK(B >= 1 && B * o.length <= (int64_t(1) << 22), "--batch ", B, " × length ", o.length,
        " must be >= 1 and at most 4194304 tokens per pass (lower --batch)");
  TaskAccuracy acc;
  with_model(a, *model, [&](auto& m) { acc = task_accuracy(m, o, kTaskEvalFirstIndex, n, B); });
  std::printf("task %s (length %lld, pairs %lld, symbols %lld): answer accuracy %.4f (%lld / %lld), example "
              "accuracy %.4f (%lld / %lld)\n",
              o.task.c_str(), (long long)o.length, (long long)o.pairs, (long long)o.symbols, acc.answer_accuracy(),
              (long long)acc.correct_answers, (long long)acc.answers, acc.example_accuracy(),
              (long long)acc.correct_examples, (long long)acc.examples);
  if (a.has("json")) {
    Json j = o.to_json();
    j.set("model", a.str("model"));
    j.set("examples", acc.examples);
    j.set("answers", acc.answers);
    j.set("answer_accuracy", acc.answer_accuracy());
    j.set("example_accuracy", acc.example_accuracy());
    write_file_atomic(a.str("json"), j.dump(1) + "\n");
  }
  return 0;
}

int cmd_task(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string action = argv[1];
  if (action == "make") return make_action(argc - 1, argv + 1);
  if (action == "eval") return eval_action(argc - 1, argv + 1);
  FAIL("moessm task: unknown action '", action, "' (expected make or eval; see --help)");
}

}  // namespace
REGISTER_COMMAND("task", "synthetic recall tasks (mqar, copy, induction): make data, measure accuracy", cmd_task);
}  // namespace moessm::cli
