// The trainer, on the CPU or one GPU (TrainBackend, --device): AdamW (decay excluded for A_log, D, biases, norms via the parameter table),
// warm-up + cosine schedule, global-norm clipping, gradient accumulation, periodic evaluation,
// metrics as JSON lines, atomic checkpoints with everything needed to resume bit-exactly
// (model, optimizer moments, data-loader position, step), NaN/Inf detection.
//
// Run directory layout:
//   <out>/metrics.jsonl     one JSON object per step: step, loss, lr, grad_norm, tokens_per_s,
//                           elapsed_s (+ val_loss and expert load at evaluations)
//   <out>/checkpoint/       config.json, model.safetensors (loadable by generate/logits/grads),
//                           optimizer.safetensors (exp_avg.*, exp_avg_sq.*), trainer_state.json,
//                           tokenizer.json (copied from the data directory when present)
// A checkpoint is written to checkpoint.tmp/ and swapped in with renames, so an interruption
// at any point leaves a complete checkpoint (checkpoint/ or, mid-swap, checkpoint.old/).
#pragma once
#include <string>

#include "model/config.h"
#include "train/train_options.h"

namespace moessm {

struct TrainResult {
  int64_t last_step = 0;
  double last_loss = 0, last_val_loss = -1, unigram_entropy = 0;
  bool halted = false;
};

TrainResult train_model(const ModelConfig& cfg, const TrainOptions& opts);

// Finds the checkpoint directory of a run directory (checkpoint/, or checkpoint.old/ after an
// interrupted swap); returns "" when there is none.
std::string find_run_checkpoint(const std::string& run_dir);

}  // namespace moessm
