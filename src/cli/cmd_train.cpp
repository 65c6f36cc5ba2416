// `moessm train`: train a model described by a JSON config on a prepared data directory.
// Every train option is a flag declared from kTrainOptions (its type from the table), so a flag
// and the config's "train" object parse the same value the same way. With --resume RUN the
// run's checkpoint supplies the model config, the data directory and the options (the run
// directory defaults to RUN); the config and flags may still override them, checked by the
// trainer against the checkpoint. Started by mpirun, the processes train one model data-parallel
// (dist/dist.h, docs/distributed.md): only rank 0 prints; a resume with another number of
// processes inherits the batch_size that keeps the recorded global batch.
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/command.h"
#include "core/check.h"
#include "dist/dist.h"
#include "io/file_util.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "train/trainer.h"

namespace moessm::cli {
namespace {

std::string flag_name(const char* option) {
  std::string s = option;
  for (char& c : s)
    if (c == '_') c = '-';
  return s;
}

int cmd_train(int argc, char** argv) {
  Args a("train",
         "Train a model on a prepared data directory. Options come from the config's \"train\"\n"
         "object and are overridden by these flags. Writes <out>/metrics.jsonl and checkpoint\n"
         "generations <out>/checkpoint-<step>/ (<out>/checkpoint links to the newest; the run\n"
         "directory is usable as --model by generate, logits and grads). `train --resume RUN`\n"
         "needs nothing else: the config, data, options and run directory come from RUN.");
  a.path("config", "model config JSON (with an optional \"train\" object); with --resume: the run's own config");
  const TrainOptions defaults;
  for (int i = 0; i < kNumTrainOptions; ++i) {
    const TrainOptionSpec& s = kTrainOptions[i];
    const Json d = s.get(defaults);
    const std::string def = d.is_string() ? d.as_string() : d.dump();
    if (s.is_flag()) a.flag(flag_name(s.name), s.help);
    else if (s.is_path) a.path(flag_name(s.name), s.help, def);
    else a.option(flag_name(s.name), std::string(s.help) + " [" + s.type_name() + "]", def);
  }
  a.flag("print-options", "print the resolved options (run state, config, flags) as JSON and exit without training");
  if (!a.parse(argc, argv)) return 0;
  dist::Communicator& comm = dist::world();  // joins the MPI world when started by mpirun

  Json overrides = Json::object();
  for (int i = 0; i < kNumTrainOptions; ++i) {
    const TrainOptionSpec& s = kTrainOptions[i];
    const std::string flag = flag_name(s.name);
    if (a.has(flag)) overrides.set(s.name, s.parse_text(a.str(flag), "--" + flag));
  }
  ModelConfig cfg;
  const bool have_config = a.has("config");
  if (have_config) cfg = ModelConfig::from_file(a.str("config"));
  // The run to resume (a flag, else the config's train.resume).
  std::string resume;
  if (const Json* r = overrides.get("resume")) resume = r->as_string();
  else if (have_config && cfg.train.is_object() && cfg.train.get("resume"))
    resume = cfg.train.at("resume").as_string(a.str("config") + ": train.resume");
  CHECK(have_config || !resume.empty(), "moessm train: missing required option --config (or --resume RUN)");

  TrainOptions o;
  if (!resume.empty()) {
    const std::string ck = find_run_checkpoint(resume);
    CHECK(!ck.empty(), "--resume ", resume, ": no complete checkpoint found (expected ",
          path_join(resume, "checkpoint-<step>"), "/ with its ", kCheckpointMarker, " marker)");
    const Json state = read_trainer_state(ck);
    o.inherit(state.at("options"), path_join(ck, "trainer_state.json"));
    inherit_batch_for_world(o, state, comm.world_size());
    if (!have_config) cfg = load_model_config(ck);
  }
  if (have_config && !cfg.train.is_null()) o.apply_json(cfg.train, a.str("config"));
  o.apply_json(overrides, "command line");
  if (!o.resume.empty() && o.out.empty()) o.out = o.resume;
  if (a.on("print-options")) {
    if (comm.is_lead()) std::printf("%s\n", o.to_json().dump(2).c_str());
    return 0;
  }
  TrainResult r = train_model(cfg, o, comm);
  if (r.last_val_loss >= 0 && comm.is_lead()) {
    const double gain = r.unigram_entropy - r.last_val_loss;
    std::printf("done: step %lld, train loss %.4f, validation loss %.4f (unigram baseline %.4f, %.3f nats %s)\n",
                (long long)r.last_step, r.last_loss, r.last_val_loss, r.unigram_entropy, std::fabs(gain),
                gain >= 0 ? "below" : "ABOVE: the model predicts worse than token frequencies");
  }
  return 0;
}

}  // namespace
REGISTER_COMMAND("train", "train a model on a prepared data directory", cmd_train);
}  // namespace moessm::cli
