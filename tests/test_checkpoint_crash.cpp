// Crash safety of checkpoint writes, through the CLI: `moessm train` is killed (the fs-step hook
// MOESSM_FAIL_AT_FS_STEP of io/file_util, _exit(137) before the step) at every file-system step
// of one checkpoint write and at the metrics appends around it; after that first crash the
// newest completed checkpoint must be the one resume finds; the resumed run is killed again at a
// step of its own checkpoint write; a last resume runs to the end. The final model, optimizer
// state and per-step losses must be byte-identical to an uninterrupted run, and the run
// directory must hold only metrics.jsonl, checkpoint-6/ and the checkpoint link.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "io/file_util.h"
#include "io/json.h"
#include "model/checkpoint.h"
#include "model_checks.h"
#include "testing.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

struct Step { long long n; std::string op, path; };

// The "moessm-fs-step N OP PATH" lines of a traced run's output.
std::vector<Step> parse_trace(const std::string& out) {
  std::vector<Step> steps;
  std::istringstream in(out);
  std::string line;
  const std::string tag = "moessm-fs-step ";
  while (std::getline(in, line)) {
    if (line.rfind(tag, 0) != 0) continue;
    std::istringstream ls(line.substr(tag.size()));
    Step s;
    ls >> s.n >> s.op;
    std::getline(ls, s.path);
    steps.push_back(s);
  }
  return steps;
}

// [first, last] fs steps of the checkpoint write of generation `gen`: from the first step on
// checkpoint-<gen> to the removal of the generation before it.
std::pair<long long, long long> write_range(const std::vector<Step>& steps, int gen, int before) {
  long long first = -1, last = -1;
  const std::string g = "/" + checkpoint_generation_name(gen), old = "/" + checkpoint_generation_name(before);
  for (const Step& s : steps) {
    if (first < 0 && s.path.find(g) != std::string::npos) first = s.n;
    if (first >= 0 && s.op == "remove" && s.path.size() >= old.size() &&
        s.path.compare(s.path.size() - old.size(), old.size(), old) == 0)
      last = s.n;
  }
  return {first, last};
}

std::string env_fail(long long n) { return "MOESSM_FAIL_AT_FS_STEP=" + std::to_string(n); }

}  // namespace

TEST(CheckpointCrash, EveryStepOfACheckpointWriteTwiceInARowResumesToTheSameModel) {
  const std::string data = make_word_data("crash_data", 6000);
  const std::string base = temp_dir("crash");
  const std::string cfg = base + "/cfg.json";
  write_file_atomic(cfg, R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 4,
    "train": {"max_steps": 6, "batch_size": 2, "seq_len": 16, "warmup_steps": 1, "eval_every": 3,
              "eval_tokens": 64, "checkpoint_every": 2, "log_every": 100}})");
  const std::vector<std::string> fresh = {"train", "--config", cfg, "--data", data, "--out"};
  auto train_into = [&](const std::string& dir) {
    std::vector<std::string> a = fresh;
    a.push_back(dir);
    return a;
  };
  const std::string trace = "MOESSM_TRACE_FS_STEPS=1";
  std::string out;

  // The uninterrupted run, traced: its checkpoint write of step 4 (checkpoint-2 exists then).
  const std::string ref = base + "/ref";
  ASSERT_EQ(run_cli_env(train_into(ref), {trace}, &out), 0) << out;
  const std::vector<Step> steps = parse_trace(out);
  const auto [w0, w1] = write_range(steps, 4, 2);
  ASSERT_GT(w0, 1);
  ASSERT_GT(w1, w0 + 10) << out;
  long long marker = -1;  // the rename that publishes checkpoint-4/COMPLETE
  for (const Step& s : steps)
    if (s.op == "rename" && s.path.find("/checkpoint-4/COMPLETE") != std::string::npos &&
        s.path.find("-> ") != std::string::npos && s.path.substr(s.path.find("-> ")).find(".tmp") == std::string::npos)
      marker = s.n;
  ASSERT_GT(marker, w0);
  EXPECT_EQ(steps[w0 - 2].op, "append");  // the metrics line of step 4 comes just before
  EXPECT_EQ(steps[w1].op, "append");      // and that of step 5 just after

  // A resumed run's layout: halted at step 2, then resumed, traced: its first checkpoint write.
  const std::string half = base + "/half";
  std::vector<std::string> h = train_into(half);
  h.insert(h.end(), {"--halt-after", "2"});
  ASSERT_EQ(run_cli_argv(h, &out), 0) << out;
  ASSERT_EQ(run_cli_env({"train", "--resume", half}, {trace}, &out), 0) << out;
  const auto [r0, r1] = write_range(parse_trace(out), 4, 2);
  ASSERT_GT(r1, r0 + 10) << out;
  EXPECT_EQ(read_file(half + "/checkpoint/model.safetensors"), read_file(ref + "/checkpoint/model.safetensors"));

  const std::string ref_model = read_file(ref + "/checkpoint/model.safetensors");
  const std::string ref_opt = read_file(ref + "/checkpoint/optimizer.safetensors");
  const std::vector<std::string> ref_losses = loss_fields(ref + "/metrics.jsonl");
  ASSERT_EQ(ref_losses.size(), 6u);

  // Second crashes per first crash: by default three places of the resumed run's checkpoint
  // write (the same place, the mirror one and a scattered one); MOESSM_CRASH_LOOP_FULL=1 tries
  // every step of it (and the metrics append before it) for every first crash.
  const bool full = std::getenv("MOESSM_CRASH_LOOP_FULL") && std::string(std::getenv("MOESSM_CRASH_LOOP_FULL")) == "1";
  int trials = 0, passed = 0;
  for (long long k = w0 - 1; k <= w1 + 1; ++k) {
    const long long rel = k - w0, span = r1 - r0;
    std::vector<long long> second = {r0 + std::min(std::max(rel, -1LL), span), r0 + std::min(std::max(span - rel, 0LL), span),
                                     r0 + ((rel + 1) * 7 + 3) % (span + 1)};
    if (full) {
      second.clear();
      for (long long k2 = r0 - 1; k2 <= r1; ++k2) second.push_back(k2);
    }
    for (long long k2 : second) {
      ++trials;
      SCOPED_TRACE("first crash at fs step " + std::to_string(k) + ", second at " + std::to_string(k2));
      const std::string dir = base + "/t" + std::to_string(trials);
      ASSERT_EQ(run_cli_env(train_into(dir), {env_fail(k)}, &out), 137) << out;
      // The newest completed checkpoint is the one found, whatever instant the crash hit.
      const std::string ck = find_run_checkpoint(dir);
      ASSERT_EQ(ck, dir + "/" + checkpoint_generation_name(k > marker ? 4 : 2)) << out;
      ASSERT_EQ(run_cli_env({"train", "--resume", dir}, {env_fail(k2)}, &out), 137) << out;
      ASSERT_NE(find_run_checkpoint(dir), "");
      ASSERT_EQ(run_cli_argv({"train", "--resume", dir}, &out), 0) << out;
      EXPECT_EQ(find_run_checkpoint(dir), dir + "/checkpoint-6");
      EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"checkpoint", "checkpoint-6", "metrics.jsonl"}));
      const bool same = read_file(dir + "/checkpoint/model.safetensors") == ref_model &&
                        read_file(dir + "/checkpoint/optimizer.safetensors") == ref_opt &&
                        loss_fields(dir + "/metrics.jsonl") == ref_losses;
      EXPECT_TRUE(same);
      passed += same;
      remove_tree(dir);
    }
  }
  std::printf("crash loop: %lld fs steps in one checkpoint write (+2 metrics appends), %d double-crash trials "
              "(%s), %d bitwise identical\n", w1 - w0 + 1, trials, full ? "full" : "3 second crashes each", passed);
  EXPECT_EQ(passed, trials);
}
