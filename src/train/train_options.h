// TrainOptions: every knob of `moessm train`. Values come from the model config's "train" object
// (strict: unknown keys are errors) and are overridden by command-line flags of the same name
// (with '-' for '_', e.g. --max-steps). Defaults suit a small CPU model.
//
// Each option is declared once, in kTrainOptions (train_options.cpp): its name, the member it
// sets (whose C++ type is the option's type: text, integer, number or on/off), its help text and
// how a resumed run treats it. The command line and the config both go through that table, so
// an option parses the same way from either (an integer flag takes an integer, a number flag a
// number, an on/off option is a bare flag or a JSON boolean).
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "io/json.h"

namespace moessm {

struct TrainOptions {
  std::string data, out, resume, device = "cpu";
  int64_t max_steps = 1000, batch_size = 16, seq_len = 128, grad_accum = 1;
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;
  int64_t warmup_steps = 50, eval_every = 100, eval_tokens = 65536, checkpoint_every = 200;
  int64_t log_every = 10, seed = 1337, halt_after = 0;
  bool overwrite = false, allow_changed_options = false;
  bool pack_documents = false;  // reset the recurrent state at every end-of-text (data/packing.h)
  bool answers_only = false;    // task data: score only the answer positions (data/tasks.h)
  bool zero1 = false;           // data parallel: shard the AdamW moments over the ranks (ZeRO-1)
  int64_t expert_parallel = 1;  // ranks per expert group (dist/expert_exchange.h); 1: off

  // Applies a JSON object of options (keys as the field names); errors name `source` and the key.
  void apply_json(const Json& j, const std::string& source);
  Json to_json() const;  // every option
  // Takes the options a resumed run inherits from its checkpoint's recorded options (`saved`,
  // the trainer state's "options"): every kKept and kFree one; unknown keys are ignored.
  void inherit(const Json& saved, const std::string& source);
  void validate() const;
};

using TrainOptionMember = std::variant<std::string TrainOptions::*, int64_t TrainOptions::*,
                                       double TrainOptions::*, bool TrainOptions::*>;

// How `--resume` treats an option.
enum class OnResume {
  kKept,          // inherited from the run's state; a different value is refused (or, with
                  // --allow-changed-options, warned about), naming the field
  kFree,          // inherited from the run's state, may change freely (cadences, max_steps, device)
  kPerInvocation  // belongs to one invocation, never inherited (out, resume, halt_after, ...)
};

struct TrainOptionSpec {
  const char* name;
  TrainOptionMember member;
  const char* help;
  OnResume on_resume;
  bool is_path = false;  // a file-system path (UTF-8 checked by the flag parser)

  const char* type_name() const;  // "text", "integer", "number" or "on/off"
  bool is_flag() const { return std::holds_alternative<bool TrainOptions::*>(member); }
  Json get(const TrainOptions& o) const;
  // Sets the option from a JSON value of its type; errors name `what`.
  void set(TrainOptions& o, const Json& v, const std::string& what) const;
  // The JSON value of command-line text for this option (the same value the config would hold):
  // integers and numbers must be the whole text; on/off takes true/false/1/0.
  Json parse_text(const std::string& text, const std::string& what) const;
};

extern const TrainOptionSpec kTrainOptions[];
extern const int kNumTrainOptions;
const TrainOptionSpec* find_train_option(const std::string& name);  // nullptr when unknown

// The options of a resumed run that differ from those recorded in its checkpoint (`saved`, the
// state's "options"), one line each, "name: checkpoint OLD, now NEW"; only kKept options.
std::vector<std::string> changed_options_on_resume(const Json& saved, const TrainOptions& now);

}  // namespace moessm
