// The trainer, on the CPU or one GPU (TrainBackend, --device): AdamW (decay excluded for A_log, D, biases, norms via the parameter table),
// warm-up + cosine schedule, global-norm clipping, gradient accumulation, periodic evaluation,
// metrics as JSON lines, atomic checkpoints with everything needed to resume bit-exactly
// (model, optimizer moments, data-loader position, step), NaN/Inf detection.
//
// Run directory layout:
//   <out>/metrics.jsonl     one JSON object per step: step, loss, lr, grad_norm, tokens_per_s,
//                           elapsed_s (+ val_loss and expert load at evaluations)
//   <out>/checkpoint-<step>/  a checkpoint generation: config.json, model.safetensors (loadable
//                           by generate/logits/grads), optimizer.safetensors (exp_avg.*,
//                           exp_avg_sq.*), trainer_state.json, tokenizer.json (copied from the
//                           data directory when present) and, written last, COMPLETE ("<step>\n")
//   <out>/checkpoint        a symbolic link to the newest complete generation
// A checkpoint write: remove a leftover checkpoint-<step>/ of a crashed write, create it, write
// every file (each fsync'ed, renamed into place, the directory fsync'ed), write COMPLETE the same
// way, fsync <out>, point the link at it (atomic rename of a new link), and only then remove
// the older generations. Readers (resume, resolve_model_dir) take the complete generation of
// the highest step, so a crash at any instant of the write, or two crashes in a row, resume from
// the newest checkpoint that was completed. (A run of an older moessm with a checkpoint/ or
// checkpoint.old/ directory is still read.)
//
// Run directories are not replaced silently: a new run (no --resume of the same directory)
// into a directory that already holds a run or a checkpoint is refused unless
// opts.overwrite, which removes the old run's metrics and checkpoints first. A resumed run
// must use the options recorded in the checkpoint for every OnResume::kKept option (each
// difference is named; opts.allow_changed_options continues with a warning) and the same model
// config (the first differing field is named). A torn last line of metrics.jsonl (what a crash
// while appending leaves) is dropped with a warning.
//
// Data parallelism (docs/distributed.md): with a communicator of W processes each rank trains on
// rows [rank·batch_size, (rank+1)·batch_size) of every global batch of W·batch_size rows (the
// rows one process with that batch would draw); the flat gradient buffer is summed over the
// ranks (one deterministic all-reduce) and scaled to the global batch's mean before clipping and
// AdamW, so every rank takes the same step. Losses are averaged over the ranks, validation is
// sharded the same way. Rank 0 alone prints, writes metrics.jsonl and checkpoints (the same files
// as one process; trainer_state.json adds world_size and global_batch). A resumed run must keep
// the global batch (processes × batch_size), not the per-process batch_size. World size 1 takes
// the same path (the all-reduce is the identity). --device cuda takes world size 1 only.
#pragma once
#include <string>

#include "dist/dist.h"
#include "model/config.h"
#include "train/train_options.h"

namespace moessm {

struct TrainResult {
  int64_t last_step = 0;
  double last_loss = 0, last_val_loss = -1, unigram_entropy = 0;
  bool halted = false;
};

TrainResult train_model(const ModelConfig& cfg, const TrainOptions& opts);  // over dist::world()
TrainResult train_model(const ModelConfig& cfg, const TrainOptions& opts, dist::Communicator& comm);

// The newest complete checkpoint of a run directory (see newest_run_checkpoint); "" when none.
std::string find_run_checkpoint(const std::string& run_dir);
// The trainer state (trainer_state.json) of a checkpoint directory, checked: "step" a
// non-negative integer, "options" an object; errors name the file and the field.
Json read_trainer_state(const std::string& checkpoint_dir);
// The first difference between two model configs' JSON (checkpoint's, given), as
// "field: checkpoint A, config B" ("" when equal); nested fields are dotted (layers[1].top_k).
// The global batch (processes × batch_size) a trainer state was recorded with (a state from
// before data-parallel runs: its options' batch_size), and its number of processes (else 1).
int64_t recorded_global_batch(const Json& trainer_state);
int64_t recorded_world_size(const Json& trainer_state);
// A resume with another number of processes inherits batch_size = recorded global batch /
// world_size when that divides evenly (else the recorded batch_size stays, and the trainer
// refuses the different global batch naming both).
void inherit_batch_for_world(TrainOptions& o, const Json& trainer_state, int world_size);
std::string first_config_difference(const Json& checkpoint, const Json& given, const std::string& prefix = "");

}  // namespace moessm
