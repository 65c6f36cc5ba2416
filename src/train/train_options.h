// TrainOptions: every knob of `moessm train`. Values come from the model config's "train" object
// (strict: unknown keys are errors) and are overridden by command-line flags of the same name
// (with '-' for '_', e.g. --max-steps). Defaults suit a small CPU model.
#pragma once
#include <cstdint>
#include <string>

#include "io/json.h"

namespace moessm {

struct TrainOptions {
  std::string data, out, resume, device = "cpu";
  int64_t max_steps = 1000, batch_size = 16, seq_len = 128, grad_accum = 1;
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;
  int64_t warmup_steps = 50, eval_every = 100, eval_tokens = 65536, checkpoint_every = 200;
  int64_t log_every = 10, seed = 1337, halt_after = 0;

  // Applies a JSON object of options (keys as the field names); errors name `source` and the key.
  void apply_json(const Json& j, const std::string& source);
  Json to_json() const;
  void validate() const;
};

// The option names with help text, in order (used for flags, --help and docs).
struct TrainOptionDoc { const char* name; const char* help; };
extern const TrainOptionDoc kTrainOptionDocs[];
extern const int kNumTrainOptionDocs;

}  // namespace moessm
