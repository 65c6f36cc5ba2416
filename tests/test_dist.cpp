// Data-parallel training (src/dist/, docs/distributed.md): world size 1 is the identity and trains
// bitwise as before, with or without MPI; the loader's shards are the rows of the global batch;
// `mpirun -np 2` with batch b equals one process with batch 2b within an error budget, two
// 2-rank runs are bitwise equal, a run resumes with another number of processes when the global
// batch is kept (and is refused naming both global batches when not), ZeRO-1 gives bitwise the
// plain run and resumes, and a rank that fails ends the whole run with a message naming it. The
// mpirun cases are skipped only when this build has no MPI launcher (MOESSM_MPIEXEC, from
// CMake's FindMPI).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/check.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "expect_error.h"
#include "io/file_util.h"
#include "model/checkpoint.h"
#include "model/language_model.h"
#include "model_checks.h"
#include "testing.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

const char* kModel = R"({"d_model": 16, "n_layer": 2, "vocab_size": 256, "d_state": 4)";
ModelConfig tiny() { return ModelConfig::from_json(Json::parse(std::string(kModel) + "}"), "test"); }

// The run every case trains: 4 steps, 2 micro-batches each, 16 tokens a row, evaluations at 2 and 4.
std::string cfg_file(const std::string& dir) {
  const std::string path = dir + "/cfg.json";
  write_file_atomic(path, std::string(kModel) + R"(, "train": {"max_steps": 4, "seq_len": 16, "grad_accum": 2,
      "warmup_steps": 1, "eval_every": 2, "eval_tokens": 128, "checkpoint_every": 0, "log_every": 100}})");
  return path;
}

TrainOptions opts_of(const std::string& cfg, const std::string& data, const std::string& out, int64_t batch) {
  TrainOptions o;
  o.apply_json(ModelConfig::from_file(cfg).train, cfg);
  o.data = data;
  o.out = out;
  o.batch_size = batch;
  return o;
}

struct Metrics {
  std::vector<double> loss, val_loss;
};
Metrics metrics_of(const std::string& run) {
  Metrics m;
  std::istringstream in(read_file(run + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    const Json j = Json::parse(line);
    m.loss.push_back(j.at("loss").as_number());
    if (j.has("val_loss")) m.val_loss.push_back(j.at("val_loss").as_number());
  }
  return m;
}

std::vector<float> weights_of(const std::string& run) {
  LanguageModel<float> m(tiny());
  std::vector<float> w(m.table().total());
  read_weights(find_run_checkpoint(run) + "/model.safetensors", m.table(), w.data());
  return w;
}

std::string mpiexec() { return MOESSM_MPIEXEC; }

// `mpirun -np N moessm <args>` without a shell: one thread per rank, allowed as root and on
// fewer cores than ranks. Ends within timeout_s (returns -2 then).
int run_mpi(int np, const std::vector<std::string>& args, std::string* out, double timeout_s = 300) {
  std::vector<std::string> argv = {mpiexec(), "--oversubscribe", "-np", std::to_string(np), "-x", "OMP_NUM_THREADS=1",
                                   binary_dir() + "/moessm"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_argv(argv, {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=passive", "OMPI_ALLOW_RUN_AS_ROOT=1",
                         "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"}, timeout_s, out);
}

#define SKIP_WITHOUT_MPIRUN()                                                                     \
  do {                                                                                            \
    if (mpiexec().empty() || ::access(mpiexec().c_str(), X_OK) != 0)                              \
      GTEST_SKIP() << "no MPI launcher in this build (MOESSM_MPI off or mpirun not installed: "   \
                      "scripts/setup.sh installs openmpi-bin libopenmpi-dev)";                    \
  } while (0)

}  // namespace

TEST(Dist, WorldSizeOneIsTheIdentityWithoutMpi) {
  dist::Communicator& w = dist::world();
  EXPECT_EQ(w.world_size(), 1);
  EXPECT_EQ(w.rank(), 0);
  EXPECT_TRUE(w.is_lead());
  EXPECT_FALSE(w.uses_mpi());  // ctest starts no launcher: MPI is never initialised
  std::vector<float> f = {1.5f, -2.25f, 3e-8f};
  std::vector<double> d = {0.1, 1e300, -7};
  const std::vector<float> f0 = f;
  const std::vector<double> d0 = d;
  w.all_reduce_sum(f.data(), f.size());
  w.all_reduce_sum(d.data(), d.size());
  w.broadcast(f.data(), f.size() * sizeof(float));
  w.barrier();
  EXPECT_EQ(f, f0);
  EXPECT_EQ(d, d0);
  EXPECT_ERROR_HAS(w.broadcast(f.data(), 4, 1), "broadcast: root 1 is not a rank of a world of 1");
}

TEST(Dist, LaunchEnvironmentIsReadAndCheckedNamingTheVariable) {
  dist::world();  // made before the variables below are set
  ::setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  dist::Launch l = dist::launch_from_env();
  EXPECT_EQ(l.size, 3);
  EXPECT_EQ(l.rank, 2);
  EXPECT_EQ(l.size_var, "OMPI_COMM_WORLD_SIZE");
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  EXPECT_ERROR_HAS(dist::launch_from_env(), "OMPI_COMM_WORLD_RANK: expected a rank in [0, 3)", "found 3");
  ::setenv("OMPI_COMM_WORLD_SIZE", "two", 1);
  EXPECT_ERROR_HAS(dist::launch_from_env(), "environment variable OMPI_COMM_WORLD_SIZE: expected a non-negative integer",
                   "found 'two'");
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  ::setenv("PMI_SIZE", "2", 1);
  ::setenv("PMI_RANK", "1", 1);
  l = dist::launch_from_env();
  EXPECT_EQ(l.size, 2);
  EXPECT_EQ(l.rank, 1);
  EXPECT_EQ(l.size_var, "PMI_SIZE");
  ::unsetenv("PMI_SIZE");
  ::unsetenv("PMI_RANK");
  EXPECT_EQ(dist::launch_from_env().size_var, "");
  EXPECT_EQ(dist::launch_from_env().size, 1);
}

TEST(Dist, LoaderShardsAreTheRowsOfTheGlobalBatch) {
  const std::string data = make_word_data("dist_loader", 3000);
  DataLoader one(data + "/train.bin", 7), r0(data + "/train.bin", 7), r1(data + "/train.bin", 7);
  const int64_t b = 3, T = 8;
  std::vector<int32_t> gi(2 * b * T), gt(2 * b * T), si(b * T), st(b * T);
  for (int step = 0; step < 3; ++step) {
    one.next_batch(gi.data(), gt.data(), 2 * b, T);
    r0.next_batch(si.data(), st.data(), b, T, 0);
    EXPECT_EQ(si, std::vector<int32_t>(gi.begin(), gi.begin() + b * T)) << "step " << step;
    EXPECT_EQ(st, std::vector<int32_t>(gt.begin(), gt.begin() + b * T)) << "step " << step;
    r1.next_batch(si.data(), st.data(), b, T, b);
    EXPECT_EQ(si, std::vector<int32_t>(gi.begin() + b * T, gi.end())) << "step " << step;
    EXPECT_EQ(st, std::vector<int32_t>(gt.begin() + b * T, gt.end())) << "step " << step;
  }
  EXPECT_EQ(one.state(), r1.state());  // the position is the step: the same on every rank
  // Validation: the shards of the last (partial) batch; a shard wholly past the end has no real rows.
  DataLoader val(data + "/val.bin", 0);
  const int64_t nw = val.num_windows(T), B = 4, last = val.val_batches(B, T) - 1, real_last = nw - last * B;
  ASSERT_GE(nw, 2 * B);
  std::vector<int32_t> vi(B * T), vt(B * T);
  const int64_t whole = val.val_batch(last, vi.data(), vt.data(), B, T);
  EXPECT_EQ(whole, real_last);
  for (int64_t first = 0; first < B; first += 2) {
    const int64_t real = val.val_batch(last, si.data(), st.data(), B, T, first, 2);
    EXPECT_EQ(real, std::max<int64_t>(0, std::min<int64_t>(2, real_last - first)));
    EXPECT_EQ(std::vector<int32_t>(st.begin(), st.begin() + 2 * T),
              std::vector<int32_t>(vt.begin() + first * T, vt.begin() + (first + 2) * T));
  }
  EXPECT_ERROR_HAS(val.val_batch(0, si.data(), st.data(), B, T, 3, 2), "validation batch shard", "first_row=3 rows=2");
}

// World size 1 through every entry of the distributed path (the CLI's dist::world(), and mpirun
// -np 1: MPI initialised, one rank) trains bitwise what an in-process run without MPI trains.
TEST(Dist, WorldSizeOneTrainsBitwiseTheSameWithAndWithoutMpi) {
  const std::string dir = temp_dir("dist_one"), cfg = cfg_file(dir), data = make_word_data("dist_one_data", 6000);
  train_model(tiny(), opts_of(cfg, data, dir + "/plain", 4));
  std::string out;
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/cli", "--batch-size", "4"}, &out), 0)
      << out;
  const auto ref = loss_fields(dir + "/plain/metrics.jsonl");
  ASSERT_EQ(ref.size(), 4u);
  EXPECT_EQ(loss_fields(dir + "/cli/metrics.jsonl"), ref);
  const std::string weights = read_file(find_run_checkpoint(dir + "/plain") + "/model.safetensors");
  const std::string moments = read_file(find_run_checkpoint(dir + "/plain") + "/optimizer.safetensors");
  EXPECT_EQ(read_file(find_run_checkpoint(dir + "/cli") + "/model.safetensors"), weights);
  SKIP_WITHOUT_MPIRUN();
  ASSERT_EQ(run_mpi(1, {"train", "--config", cfg, "--data", data, "--out", dir + "/mpi1", "--batch-size", "4"}, &out), 0)
      << out;
  EXPECT_EQ(loss_fields(dir + "/mpi1/metrics.jsonl"), ref);
  EXPECT_EQ(read_file(find_run_checkpoint(dir + "/mpi1") + "/model.safetensors"), weights);
  EXPECT_EQ(read_file(find_run_checkpoint(dir + "/mpi1") + "/optimizer.safetensors"), moments);
}

// 2 ranks × batch 2 against 1 process × batch 4: the same rows, the same mean gradient, summed
// in another order. Error budget (fp32, unit roundoff u = 2^-24):
//  - a gradient element is a sum over the N = 4 rows × 16 tokens × 2 micro-batches = 128 token
//    contributions; another summation order changes it by at most γ_N = N·u ≈ 7.6e-6 relative to
//    the sum of the magnitudes (Higham's bound for recursive summation);
//  - AdamW's update lr·m̂/(√v̂+eps) is scale-free in the gradient, so a relative perturbation δ
//    of it moves a weight by at most about 2·δ·lr per step: after S = 4 steps at lr <= 3e-3,
//    |Δw| <= S·2·γ_N·lr ≈ 1.8e-7. We allow 10× that for gradient elements whose magnitude sum
//    exceeds the sum itself (cancellation) and for the small second-order effect of the weights
//    differing in later steps: kWeightTol = 2e-6 (weights are O(0.1-1));
//  - a loss moves with the weights by at most ‖∇L‖₂·‖Δw‖₂ <= gnorm·√P·max|Δw| (P = the
//    parameter count, gnorm ≈ 1.3 here) plus its own fp32 summation: N·u·L relative.
TEST(Dist, TwoRanksEqualOneProcessWithTheGlobalBatchAndAreReproducible) {
  SKIP_WITHOUT_MPIRUN();
  const std::string dir = temp_dir("dist_two"), cfg = cfg_file(dir), data = make_word_data("dist_two_data", 6000);
  train_model(tiny(), opts_of(cfg, data, dir + "/one", 4));
  std::string out;
  for (const char* run : {"/two_a", "/two_b"})
    ASSERT_EQ(run_mpi(2, {"train", "--config", cfg, "--data", data, "--out", dir + run, "--batch-size", "2"}, &out), 0)
        << out;
  // Only rank 0 prints: one progress header, not two.
  EXPECT_NE(out.find("data parallel: 2 processes x batch_size 2 = global batch 4"), std::string::npos) << out;
  size_t headers = 0;
  for (size_t at = out.find("baseline: unigram"); at != std::string::npos; at = out.find("baseline: unigram", at + 1))
    ++headers;
  EXPECT_EQ(headers, 1u) << out;

  const Metrics one = metrics_of(dir + "/one"), two = metrics_of(dir + "/two_a");
  const std::vector<float> w1 = weights_of(dir + "/one"), w2 = weights_of(dir + "/two_a");
  ASSERT_EQ(one.loss.size(), 4u);
  ASSERT_EQ(two.loss.size(), 4u);
  ASSERT_EQ(two.val_loss.size(), 2u);
  const double u = std::ldexp(1.0, -24), N = 4 * 16 * 2, gamma = N * u;
  const double kWeightTol = 10 * 4 * 2 * gamma * 3e-3;
  double max_dw = 0;
  for (size_t i = 0; i < w1.size(); ++i) max_dw = std::max(max_dw, std::fabs(double(w1[i]) - double(w2[i])));
  EXPECT_LE(max_dw, kWeightTol) << "max |w(1 process, batch 4) - w(2 ranks, batch 2)|";
  EXPECT_GT(max_dw, 0.0) << "2 ranks sum the gradient in another order: bitwise equality would be a surprise "
                            "(is the second rank's gradient ignored?)";
  const double kLossTol = 1.3 * std::sqrt(double(w1.size())) * kWeightTol + gamma * 6.0;
  for (size_t i = 0; i < one.loss.size(); ++i) EXPECT_NEAR(two.loss[i], one.loss[i], kLossTol) << "step " << i + 1;
  for (size_t i = 0; i < one.val_loss.size(); ++i)
    EXPECT_NEAR(two.val_loss[i], one.val_loss[i], kLossTol) << "evaluation " << i;
  std::printf("2 ranks vs 1 process: max |dw| %.3g (tol %.3g), max |dloss| %.3g (tol %.3g)\n", max_dw, kWeightTol,
              [&] {
                double m = 0;
                for (size_t i = 0; i < one.loss.size(); ++i) m = std::max(m, std::fabs(two.loss[i] - one.loss[i]));
                return m;
              }(),
              kLossTol);
  // Two 2-rank runs: bitwise equal (the all-reduce sums in rank order, whatever MPI does).
  EXPECT_EQ(loss_fields(dir + "/two_b/metrics.jsonl"), loss_fields(dir + "/two_a/metrics.jsonl"));
  EXPECT_EQ(read_file(find_run_checkpoint(dir + "/two_b") + "/model.safetensors"),
            read_file(find_run_checkpoint(dir + "/two_a") + "/model.safetensors"));
  EXPECT_EQ(read_file(find_run_checkpoint(dir + "/two_b") + "/optimizer.safetensors"),
            read_file(find_run_checkpoint(dir + "/two_a") + "/optimizer.safetensors"));
  const Json st = read_trainer_state(find_run_checkpoint(dir + "/two_a"));
  EXPECT_EQ(st.at("world_size").as_int(), 2);
  EXPECT_EQ(st.at("global_batch").as_int(), 4);
}

// A 2-rank run halted at step 2 resumes in one process (batch_size 4 inherited: the same global
// batch) and ends within the budget above of the uninterrupted 2-rank run; another global batch
// is refused naming both.
TEST(Dist, ResumeWithAnotherNumberOfProcessesKeepsTheGlobalBatch) {
  SKIP_WITHOUT_MPIRUN();
  const std::string dir = temp_dir("dist_resume"), cfg = cfg_file(dir), data = make_word_data("dist_resume_data", 6000);
  std::string out;
  ASSERT_EQ(run_mpi(2, {"train", "--config", cfg, "--data", data, "--out", dir + "/full", "--batch-size", "2"}, &out), 0)
      << out;
  ASSERT_EQ(run_mpi(2, {"train", "--config", cfg, "--data", data, "--out", dir + "/cut", "--batch-size", "2",
                        "--halt-after", "2"}, &out), 0)
      << out;
  TrainOptions bad = opts_of(cfg, data, dir + "/cut", 3);
  bad.resume = dir + "/cut";
  EXPECT_ERROR_HAS(train_model(tiny(), bad),
                   "global batch (processes × batch_size): checkpoint 4 (2 × 2), now 3 (1 × 3)");
  ASSERT_EQ(run_cli_argv({"train", "--resume", dir + "/cut"}, &out), 0) << out;
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
  const Metrics full = metrics_of(dir + "/full"), cut = metrics_of(dir + "/cut");
  ASSERT_EQ(cut.loss.size(), 4u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(cut.loss[i], full.loss[i]) << "step " << i + 1;  // the same 2-rank steps
  const double u = std::ldexp(1.0, -24), kWeightTol = 10 * 4 * 2 * (4 * 16 * 2 * u) * 3e-3;
  const std::vector<float> wf = weights_of(dir + "/full"), wc = weights_of(dir + "/cut");
  double max_dw = 0;
  for (size_t i = 0; i < wf.size(); ++i) max_dw = std::max(max_dw, std::fabs(double(wf[i]) - double(wc[i])));
  EXPECT_LE(max_dw, kWeightTol);
  EXPECT_EQ(read_trainer_state(find_run_checkpoint(dir + "/cut")).at("world_size").as_int(), 1);
  EXPECT_EQ(read_trainer_state(find_run_checkpoint(dir + "/cut")).at("options").at("batch_size").as_int(), 4);
}

// ZeRO-1 (--zero1): the moments sharded over 2 ranks give bitwise the plain 2-rank run (losses,
// weights and the checkpoint's whole moments, gathered onto rank 0); a ZeRO-1 run halted at step
// 2 resumes (zero1 inherited) to bitwise the same end, and its checkpoint resumes in one process.
TEST(Dist, Zero1IsBitwiseThePlainRunAndResumes) {
  SKIP_WITHOUT_MPIRUN();
  const std::string dir = temp_dir("dist_zero1"), cfg = cfg_file(dir), data = make_word_data("dist_zero1_data", 6000);
  std::string out;
  auto run2 = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args = {"train", "--config", cfg, "--data", data, "--out", dir + name, "--batch-size", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_mpi(2, args, &out);
  };
  ASSERT_EQ(run2("/plain", {}), 0) << out;
  ASSERT_EQ(run2("/zero", {"--zero1"}), 0) << out;
  EXPECT_NE(out.find("ZeRO-1: the AdamW moments are sharded over the 2 ranks"), std::string::npos) << out;
  auto bytes = [&](const std::string& run, const char* file) {
    return read_file(find_run_checkpoint(dir + run) + "/" + file);
  };
  EXPECT_EQ(loss_fields(dir + "/zero/metrics.jsonl"), loss_fields(dir + "/plain/metrics.jsonl"));
  EXPECT_EQ(bytes("/zero", "model.safetensors"), bytes("/plain", "model.safetensors"));
  EXPECT_EQ(bytes("/zero", "optimizer.safetensors"), bytes("/plain", "optimizer.safetensors"));
  EXPECT_TRUE(read_trainer_state(find_run_checkpoint(dir + "/zero")).at("options").at("zero1").as_bool());

  ASSERT_EQ(run2("/cut", {"--zero1", "--halt-after", "2"}), 0) << out;
  ASSERT_EQ(run_mpi(2, {"train", "--resume", dir + "/cut"}, &out), 0) << out;
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
  EXPECT_NE(out.find("ZeRO-1: the AdamW moments are sharded"), std::string::npos) << "zero1 is inherited\n" << out;
  EXPECT_EQ(bytes("/cut", "model.safetensors"), bytes("/plain", "model.safetensors"));
  EXPECT_EQ(bytes("/cut", "optimizer.safetensors"), bytes("/plain", "optimizer.safetensors"));

  // one process from the halted ZeRO-1 checkpoint (global batch kept: batch_size 4 inherited)
  ASSERT_EQ(run2("/cut1", {"--zero1", "--halt-after", "2"}), 0) << out;
  ASSERT_EQ(run_cli_argv({"train", "--resume", dir + "/cut1"}, &out), 0) << out;
  EXPECT_NE(out.find("ZeRO-1: one process, nothing to shard"), std::string::npos) << out;
  EXPECT_EQ(read_trainer_state(find_run_checkpoint(dir + "/cut1")).at("world_size").as_int(), 1);
}

// Rank 0 alone checks the run directory: a run into one that already holds a run fails there
// while rank 1 waits for rank 0's weights. The abort ends both, naming the rank, well within the
// timeout (a hang would be killed after it and fail the test).
TEST(Dist, AFailingRankEndsTheWholeRunWithAMessageNamingIt) {
  SKIP_WITHOUT_MPIRUN();
  const std::string dir = temp_dir("dist_fail"), cfg = cfg_file(dir), data = make_word_data("dist_fail_data", 6000);
  std::string out;
  ASSERT_EQ(run_cli_argv({"train", "--config", cfg, "--data", data, "--out", dir + "/run", "--max-steps", "1"}, &out), 0)
      << out;
  const int rc = run_mpi(2, {"train", "--config", cfg, "--data", data, "--out", dir + "/run", "--batch-size", "2"}, &out,
                         120);
  EXPECT_NE(rc, -2) << "the 2-rank run did not end within 120 s:\n" << out;
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("error: rank 0 of 2: train: the run directory"), std::string::npos) << out;
  EXPECT_NE(out.find("already holds"), std::string::npos) << out;
  // --device cuda with 2 processes is refused by every rank before any work.
  const int rc_cuda = run_mpi(2, {"train", "--config", cfg, "--data", data, "--out", dir + "/cuda", "--batch-size", "2",
                                  "--device", "cuda"}, &out, 120);
  EXPECT_NE(rc_cuda, -2) << out;
  EXPECT_NE(rc_cuda, 0) << out;
  EXPECT_NE(out.find("with 2 processes: data-parallel training runs on the CPU only so far"), std::string::npos) << out;
  EXPECT_FALSE(is_directory(dir + "/cuda"));
}
