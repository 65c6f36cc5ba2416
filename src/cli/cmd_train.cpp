// `moessm train`: train a model described by a JSON config on a prepared data directory.
#include <cstdio>
#include <string>

#include "cli/command.h"
#include "core/check.h"
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
         "object and are overridden by these flags. Writes <out>/metrics.jsonl and\n"
         "<out>/checkpoint/ (usable as --model by generate, logits and grads).");
  a.path("config", "model config JSON (with an optional \"train\" object)", "", true);
  TrainOptions defaults;
  Json dj = defaults.to_json();
  for (int i = 0; i < kNumTrainOptionDocs; ++i) {
    const Json* d = dj.get(kTrainOptionDocs[i].name);
    std::string def = d && !d->is_string() ? d->dump() : "";
    const std::string name = kTrainOptionDocs[i].name;
    if (name == "data" || name == "out" || name == "resume") a.path(flag_name(name.c_str()), kTrainOptionDocs[i].help, def);
    else a.option(flag_name(name.c_str()), kTrainOptionDocs[i].help, def);
  }
  if (!a.parse(argc, argv)) return 0;
  ModelConfig cfg = ModelConfig::from_file(a.str("config"));
  TrainOptions o;
  if (!cfg.train.is_null()) o.apply_json(cfg.train, a.str("config"));
  Json overrides = Json::object();
  for (int i = 0; i < kNumTrainOptionDocs; ++i) {
    const std::string key = kTrainOptionDocs[i].name, flag = flag_name(kTrainOptionDocs[i].name);
    if (!a.has(flag)) continue;
    const Json* d = dj.get(key);
    if (d && d->is_integer()) overrides.set(key, a.integer(flag));
    else if (d && d->is_number()) overrides.set(key, a.number(flag));
    else overrides.set(key, a.str(flag));
  }
  o.apply_json(overrides, "command line");
  TrainResult r = train_model(cfg, o);
  if (r.last_val_loss >= 0)
    std::printf("done: step %lld, train loss %.4f, validation loss %.4f (unigram baseline %.4f, %.3f nats below)\n",
                (long long)r.last_step, r.last_loss, r.last_val_loss, r.unigram_entropy,
                r.unigram_entropy - r.last_val_loss);
  return 0;
}

}  // namespace
REGISTER_COMMAND("train", "train a model on a prepared data directory", cmd_train);
}  // namespace moessm::cli
