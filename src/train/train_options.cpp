// TrainOptions JSON mapping and validation (see train_options.h).
#include "train/train_options.h"

#include "core/check.h"

namespace moessm {

const TrainOptionDoc kTrainOptionDocs[] = {
    {"data", "prepared data directory (train.bin, val.bin from `moessm prepare`)"},
    {"out", "run directory: metrics.jsonl and checkpoint/ (model + optimizer + state)"},
    {"resume", "run directory to resume from (its checkpoint/)"},
    {"max_steps", "optimizer steps in total"},
    {"batch_size", "sequences per micro-batch"},
    {"seq_len", "tokens per sequence"},
    {"grad_accum", "micro-batches accumulated per optimizer step"},
    {"lr", "peak learning rate"},
    {"min_lr", "final learning rate of the cosine decay"},
    {"warmup_steps", "linear warm-up steps"},
    {"weight_decay", "AdamW weight decay (not applied to A_log, D, biases, norms)"},
    {"beta1", "AdamW beta1"},
    {"beta2", "AdamW beta2"},
    {"eps", "AdamW epsilon"},
    {"grad_clip", "clip the global gradient norm to this (0: off)"},
    {"eval_every", "evaluate on the validation split every N steps (and at the end)"},
    {"eval_tokens", "validation tokens per evaluation (0: the whole split)"},
    {"checkpoint_every", "write a checkpoint every N steps (and at the end)"},
    {"log_every", "print a progress line every N steps"},
    {"seed", "seed for initialisation and data order"},
    {"device", "cpu or cuda (one GPU: dense Mamba layers, bf16 activations, fp32 master weights)"},
    {"halt_after", "stop after N steps of this invocation with a checkpoint, as if interrupted (0: off)"},
};
const int kNumTrainOptionDocs = sizeof(kTrainOptionDocs) / sizeof(kTrainOptionDocs[0]);

void TrainOptions::apply_json(const Json& j, const std::string& src) {
  CHECK(j.is_object(), src, ": the train options must be a JSON object");
  for (const auto& kv : j.as_object()) {
    const std::string& k = kv.first;
    const Json& v = kv.second;
    const std::string what = src + ": train." + k;
    auto integer = [&](int64_t* dst) { *dst = v.as_int(what); };
    auto number = [&](double* dst) { *dst = v.as_number(what); };
    if (k == "data") data = v.as_string(what);
    else if (k == "out") out = v.as_string(what);
    else if (k == "resume") resume = v.as_string(what);
    else if (k == "max_steps") integer(&max_steps);
    else if (k == "batch_size") integer(&batch_size);
    else if (k == "seq_len") integer(&seq_len);
    else if (k == "grad_accum") integer(&grad_accum);
    else if (k == "lr") number(&lr);
    else if (k == "min_lr") number(&min_lr);
    else if (k == "warmup_steps") integer(&warmup_steps);
    else if (k == "weight_decay") number(&weight_decay);
    else if (k == "beta1") number(&beta1);
    else if (k == "beta2") number(&beta2);
    else if (k == "eps") number(&eps);
    else if (k == "grad_clip") number(&grad_clip);
    else if (k == "eval_every") integer(&eval_every);
    else if (k == "eval_tokens") integer(&eval_tokens);
    else if (k == "checkpoint_every") integer(&checkpoint_every);
    else if (k == "log_every") integer(&log_every);
    else if (k == "seed") integer(&seed);
    else if (k == "halt_after") integer(&halt_after);
    else if (k == "device") device = v.as_string(what);
    else FAIL(src, ": unknown train option '", k, "' (see moessm train --help)");
  }
}

Json TrainOptions::to_json() const {
  Json j = Json::object();
  j.set("data", data);
  j.set("out", out);
  j.set("max_steps", max_steps);
  j.set("batch_size", batch_size);
  j.set("seq_len", seq_len);
  j.set("grad_accum", grad_accum);
  j.set("lr", lr);
  j.set("min_lr", min_lr);
  j.set("warmup_steps", warmup_steps);
  j.set("weight_decay", weight_decay);
  j.set("beta1", beta1);
  j.set("beta2", beta2);
  j.set("eps", eps);
  j.set("grad_clip", grad_clip);
  j.set("eval_every", eval_every);
  j.set("eval_tokens", eval_tokens);
  j.set("checkpoint_every", checkpoint_every);
  j.set("log_every", log_every);
  j.set("seed", seed);
  j.set("device", device);
  return j;
}

void TrainOptions::validate() const {
  CHECK(!data.empty(), "train: no data directory (--data or train.data in the config)");
  CHECK(!out.empty(), "train: no run directory (--out or train.out in the config)");
  CHECK(max_steps >= 1, "train: max_steps must be >= 1, got ", max_steps);
  CHECK(batch_size >= 1 && seq_len >= 1 && grad_accum >= 1, "train: batch_size, seq_len and grad_accum must be >= 1");
  CHECK(lr > 0 && min_lr >= 0 && min_lr <= lr, "train: need 0 <= min_lr <= lr with lr > 0 (lr ", lr, ", min_lr ", min_lr, ")");
  CHECK(warmup_steps >= 0 && eval_every >= 0 && checkpoint_every >= 0 && log_every >= 1 && eval_tokens >= 0 && halt_after >= 0,
        "train: step counts must be non-negative (log_every >= 1)");
  CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps > 0, "train: need 0 <= beta1, beta2 < 1 and eps > 0");
  CHECK(weight_decay >= 0 && grad_clip >= 0, "train: weight_decay and grad_clip must be >= 0");
  CHECK(device == "cpu" || device == "cuda", "train: device must be 'cpu' or 'cuda', found '", device, "'");
}

}  // namespace moessm
