// Synthetic recall tasks (see tasks.h).
#include "data/tasks.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"
#include "core/rng.h"
#include "data/shards.h"
#include "io/file_util.h"

namespace moessm {

namespace {
constexpr int32_t kNoise = 0, kSep = 1, kTrigger = 2, kFirst = 3;

// k distinct values from [0, n) in random order.
std::vector<int32_t> distinct(Rng& r, int64_t n, int64_t k) {
  std::vector<int32_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  for (int64_t i = 0; i < k; ++i) std::swap(all[size_t(i)], all[size_t(i + int64_t(r.below(uint64_t(n - i))))]);
  all.resize(size_t(k));
  return all;
}
}  // namespace

int64_t task_vocab_size(const TaskOptions& o) {
  return o.task == "mqar" ? kFirst + 2 * o.symbols : kFirst + o.symbols;
}

void TaskOptions::validate() const {
  CHECK(task == "mqar" || task == "copy" || task == "induction", "task: '", task,
        "' is not a task (expected mqar, copy or induction)");
  CHECK(symbols >= 2 && task_vocab_size(*this) <= 256, "task ", task, ": symbols ", symbols,
        " must be >= 2 and leave the ids below 256 (mqar: symbols <= 126, others: <= 253)");
  CHECK(length >= 4 && length <= 65536, "task ", task, ": length ", length, " must be in [4, 65536]");
  if (task == "mqar") {
    CHECK(pairs >= 1 && pairs <= symbols && 4 * pairs <= length, "task mqar: pairs ", pairs,
          " must be in [1, symbols] with 4·pairs <= length (", length, ")");
  } else if (task == "copy") {
    CHECK(pairs >= 1 && 2 * pairs + 1 < length, "task copy: pairs (data tokens) ", pairs,
          " must be >= 1 with 2·pairs + 1 < length (", length, ")");
  }
}

Json TaskOptions::to_json() const {
  Json j = Json::object();
  j.set("task", task);
  j.set("length", length);
  j.set("pairs", pairs);
  j.set("symbols", symbols);
  j.set("seed", int64_t(seed));
  return j;
}

TaskOptions TaskOptions::from_json(const Json& j, const std::string& where) {
  TaskOptions o;
  o.task = j.at("task", where).as_string(where + ": task");
  o.length = j.at("length", where).as_int();
  o.pairs = j.at("pairs", where).as_int();
  o.symbols = j.at("symbols", where).as_int();
  o.seed = uint64_t(j.at("seed", where).as_int());
  o.validate();
  return o;
}

TaskExample make_task_example(const TaskOptions& o, uint64_t index) {
  Rng r(o.seed, index);
  TaskExample ex;
  ex.ids.assign(size_t(o.length), kNoise);
  ex.answer.assign(size_t(o.length), 0);
  const int64_t L = o.length, S = o.symbols;
  if (o.task == "mqar") {
    const int32_t key0 = kFirst, val0 = kFirst + int32_t(S);
    const std::vector<int32_t> keys = distinct(r, S, o.pairs), vals = distinct(r, S, o.pairs);
    for (int64_t i = 0; i < o.pairs; ++i) {
      ex.ids[size_t(2 * i)] = key0 + keys[size_t(i)];
      ex.ids[size_t(2 * i + 1)] = val0 + vals[size_t(i)];
    }
    const std::vector<int32_t> order = distinct(r, o.pairs, o.pairs);
    const int64_t q0 = L - 2 * o.pairs;  // queries fill the end; noise between pairs and queries
    for (int64_t i = 0; i < o.pairs; ++i) {
      const int32_t p = order[size_t(i)];
      ex.ids[size_t(q0 + 2 * i)] = key0 + keys[size_t(p)];
      ex.ids[size_t(q0 + 2 * i + 1)] = val0 + vals[size_t(p)];
      ex.answer[size_t(q0 + 2 * i + 1)] = 1;
    }
  } else if (o.task == "copy") {
    const int64_t region = L - o.pairs - 1;
    std::vector<int32_t> where = distinct(r, region, o.pairs);
    std::sort(where.begin(), where.end());
    for (int64_t i = 0; i < o.pairs; ++i) {
      const int32_t tok = kFirst + int32_t(r.below(uint64_t(S)));
      ex.ids[size_t(where[size_t(i)])] = tok;
      ex.ids[size_t(region + 1 + i)] = tok;
      ex.answer[size_t(region + 1 + i)] = 1;
    }
    ex.ids[size_t(region)] = kSep;
  } else {  // induction
    for (int64_t t = 0; t < L; ++t) ex.ids[size_t(t)] = kFirst + int32_t(r.below(uint64_t(S)));
    const int64_t p = int64_t(r.below(uint64_t(L / 2 - 1)));
    const int32_t x = kFirst + int32_t(r.below(uint64_t(S)));
    ex.ids[size_t(p)] = kTrigger;
    ex.ids[size_t(p + 1)] = x;
    ex.ids[size_t(L - 2)] = kTrigger;
    ex.ids[size_t(L - 1)] = x;
    ex.answer[size_t(L - 1)] = 1;
  }
  return ex;
}

void write_task_data(const TaskOptions& o, int64_t train_examples, int64_t val_examples, const std::string& dir) {
  o.validate();
  CHECK(train_examples >= 1 && val_examples >= 1, "task data: need at least one train and one validation example, found ",
        train_examples, " and ", val_examples);
  CHECK(train_examples <= (int64_t(1) << 28) && val_examples <= (int64_t(1) << 28) &&
            (train_examples + val_examples) * o.length <= (int64_t(1) << 28),
        "task data: ", train_examples, " + ", val_examples, " examples of ", o.length,
        " tokens are more than 2^28 tokens (1 GiB of ids in memory): ask for fewer examples");
  make_dirs(dir);
  const uint32_t V = uint32_t(task_vocab_size(o));
  const std::string desc = "task " + o.task;
  auto split = [&](uint64_t first, int64_t n, const std::string& file) {
    std::vector<int32_t> ids;
    ids.reserve(size_t(n * o.length));
    for (int64_t i = 0; i < n; ++i) {
      const TaskExample ex = make_task_example(o, first + uint64_t(i));
      ids.insert(ids.end(), ex.ids.begin(), ex.ids.end());
    }
    write_shard(path_join(dir, file), ids.data(), ids.size(), V, tokenizer_hash("byte"), desc);
    return int64_t(ids.size());
  };
  const int64_t nt = split(0, train_examples, "train.bin"), nv = split(uint64_t(train_examples), val_examples, "val.bin");
  Json meta = Json::object();
  meta.set("format", "moessm-data");
  meta.set("version", 1);
  Json tok = Json::object();
  tok.set("kind", "byte");  // the shards' ids are < 256; no text tokenizer belongs to a task
  meta.set("tokenizer", tok);
  meta.set("vocab_size", int64_t(V));
  meta.set("task", o.to_json());
  Json tr = Json::object(), va = Json::object();
  tr.set("file", "train.bin");
  tr.set("tokens", nt);
  tr.set("examples", train_examples);
  va.set("file", "val.bin");
  va.set("tokens", nv);
  va.set("examples", val_examples);
  meta.set("train", tr);
  meta.set("val", va);
  write_file_atomic(path_join(dir, "meta.json"), meta.dump(2) + "\n");
}

std::vector<uint8_t> task_answer_flags(const TaskOptions& o, uint64_t first, int64_t n) {
  std::vector<uint8_t> flags;
  flags.reserve(size_t(n * o.length));
  for (int64_t i = 0; i < n; ++i) {
    const TaskExample ex = make_task_example(o, first + uint64_t(i));
    flags.insert(flags.end(), ex.answer.begin(), ex.answer.end());
  }
  return flags;
}

TaskOptions read_task_options(const std::string& dir) {
  const std::string mj = path_join(dir, "meta.json");
  CHECK(file_exists(mj), dir, ": no meta.json (make task data with `moessm task make`)");
  const Json meta = Json::parse_file(mj);
  const Json* t = meta.get("task");
  CHECK(t, mj, ": no field 'task' (not a task data directory: make one with `moessm task make`)");
  return TaskOptions::from_json(*t, mj + ": task");
}

}  // namespace moessm
