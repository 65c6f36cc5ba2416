// TrainOptions JSON mapping and validation (see train_options.h).
#include "train/train_options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "core/check.h"

namespace moessm {

namespace {
using O = TrainOptions;
constexpr OnResume K = OnResume::kKept, F = OnResume::kFree, P = OnResume::kPerInvocation;
}  // namespace

const TrainOptionSpec kTrainOptions[] = {
    {"data", &O::data, "prepared data directory (train.bin, val.bin from `moessm prepare`)", K, true},
    {"out", &O::out, "run directory: metrics.jsonl and checkpoint-<step>/ generations, checkpoint -> the newest "
                     "(with --resume: defaults to the resumed run)", P, true},
    {"resume", &O::resume, "run directory to continue (its newest complete checkpoint; the config, data and "
                           "options come from the run unless given)", P, true},
    {"max_steps", &O::max_steps, "optimizer steps in total", F},
    {"batch_size", &O::batch_size, "sequences per micro-batch (per process under mpirun: the global batch is processes × this)", K},
    {"seq_len", &O::seq_len, "tokens per sequence", K},
    {"grad_accum", &O::grad_accum, "micro-batches accumulated per optimizer step", K},
    {"lr", &O::lr, "peak learning rate", K},
    {"min_lr", &O::min_lr, "final learning rate of the cosine decay", K},
    {"warmup_steps", &O::warmup_steps, "linear warm-up steps", K},
    {"weight_decay", &O::weight_decay, "AdamW weight decay (not applied to A_log, D, biases, norms)", K},
    {"beta1", &O::beta1, "AdamW beta1", K},
    {"beta2", &O::beta2, "AdamW beta2", K},
    {"eps", &O::eps, "AdamW epsilon", K},
    {"grad_clip", &O::grad_clip, "clip the global gradient norm to this (0: off)", K},
    {"eval_every", &O::eval_every, "evaluate on the validation split every N steps (and at the end)", F},
    {"eval_tokens", &O::eval_tokens, "validation tokens per evaluation (0: the whole split)", F},
    {"checkpoint_every", &O::checkpoint_every, "write a checkpoint every N steps (and at the end)", F},
    {"log_every", &O::log_every, "print a progress line every N steps", F},
    {"seed", &O::seed, "seed for initialisation and data order", K},
    {"pack_documents", &O::pack_documents,
     "packed documents: every end-of-text id in a row starts a new document, and the conv window and "
     "scan state reset there, so nothing leaks from one document into the next (training and "
     "validation; needs a tokenizer with an end-of-text id; cpu and cuda)", K},
    {"answers_only", &O::answers_only,
     "score the loss (training and validation) only at the answer positions of a `moessm task make` data "
     "directory, as Zoology trains MQAR; the model still reads every token", K},
    {"zero1", &O::zero1,
     "data parallel (mpirun): each rank keeps and updates only its 1/W of the AdamW moments and the "
     "updated weights are all-gathered (ZeRO-1: bitwise the same run, moments memory / W; one process: no effect)", F},
    {"expert_parallel", &O::expert_parallel,
     "expert parallelism (mpirun): groups of N consecutive ranks share each routed layer's experts, each rank "
     "computing its contiguous 1/N of them on the tokens of every rank of its group (all-to-all exchange; "
     "N divides the processes; 1: off; cpu)", F},
    {"device", &O::device, "cpu or cuda (one GPU, every layer type: bf16 activations, fp32 master weights)", F},
    {"halt_after", &O::halt_after, "stop after N steps of this invocation with a checkpoint, as if interrupted (0: off)", P},
    {"overwrite", &O::overwrite, "replace an existing run or checkpoint in the run directory (else refused)", P},
    {"allow_changed_options", &O::allow_changed_options,
     "with --resume: continue although options differ from the run's (batch_size, lr, seed, ...), with a warning", P},
};
const int kNumTrainOptions = sizeof(kTrainOptions) / sizeof(kTrainOptions[0]);

const TrainOptionSpec* find_train_option(const std::string& name) {
  for (const TrainOptionSpec& s : kTrainOptions)
    if (name == s.name) return &s;
  return nullptr;
}

const char* TrainOptionSpec::type_name() const {
  switch (member.index()) {
    case 0: return "text";
    case 1: return "integer";
    case 2: return "number";
    default: return "on/off";
  }
}

Json TrainOptionSpec::get(const TrainOptions& o) const {
  return std::visit([&](auto m) { return Json(o.*m); }, member);
}

void TrainOptionSpec::set(TrainOptions& o, const Json& v, const std::string& what) const {
  if (auto m = std::get_if<std::string O::*>(&member)) o.**m = v.as_string(what);
  else if (auto m = std::get_if<int64_t O::*>(&member)) o.**m = v.as_int(what);
  else if (auto m = std::get_if<double O::*>(&member)) o.**m = v.as_number(what);
  else o.*std::get<bool O::*>(member) = v.as_bool(what);
}

Json TrainOptionSpec::parse_text(const std::string& text, const std::string& what) const {
  switch (member.index()) {
    case 0: return Json(text);
    case 1: {
      char* end = nullptr;
      errno = 0;
      const long long x = std::strtoll(text.c_str(), &end, 10);
      CHECK(!text.empty() && end && *end == '\0', what, " expects an integer, found '", text, "'");
      CHECK(errno != ERANGE, what, ": '", text, "' is out of the range of a 64-bit integer");
      return Json(int64_t(x));
    }
    case 2: {
      char* end = nullptr;
      const double x = std::strtod(text.c_str(), &end);
      CHECK(!text.empty() && end && *end == '\0', what, " expects a number, found '", text, "'");
      return Json(x);  // inf / nan are refused by validate(), naming the option
    }
    default:
      if (text == "true" || text == "1") return Json(true);
      if (text == "false" || text == "0") return Json(false);
      FAIL(what, " is on/off: give it alone, or =true / =false, found '", text, "'");
  }
}

void TrainOptions::apply_json(const Json& j, const std::string& src) {
  CHECK(j.is_object(), src, ": the train options must be a JSON object");
  for (const auto& kv : j.as_object()) {
    const TrainOptionSpec* s = find_train_option(kv.first);
    if (!s) FAIL(src, ": unknown train option '", kv.first, "' (see moessm train --help)");
    s->set(*this, kv.second, src + ": train." + kv.first);
  }
}

Json TrainOptions::to_json() const {
  Json j = Json::object();
  for (const TrainOptionSpec& s : kTrainOptions) j.set(s.name, s.get(*this));
  return j;
}

void TrainOptions::inherit(const Json& saved, const std::string& src) {
  CHECK(saved.is_object(), src, ": the recorded options must be a JSON object");
  for (const auto& kv : saved.as_object()) {
    const TrainOptionSpec* s = find_train_option(kv.first);
    if (s && s->on_resume != OnResume::kPerInvocation) s->set(*this, kv.second, src + ": options." + kv.first);
  }
}

std::vector<std::string> changed_options_on_resume(const Json& saved, const TrainOptions& now) {
  std::vector<std::string> out;
  if (!saved.is_object()) return out;
  for (const TrainOptionSpec& s : kTrainOptions) {
    if (s.on_resume != OnResume::kKept) continue;
    const Json* old = saved.get(s.name);
    if (!old) continue;  // a state from before this option existed
    const Json cur = s.get(now);
    if (*old != cur) out.push_back(std::string(s.name) + ": checkpoint " + old->dump() + ", now " + cur.dump());
  }
  return out;
}

void TrainOptions::validate() const {
  for (const TrainOptionSpec& s : kTrainOptions)
    if (auto m = std::get_if<double O::*>(&s.member))
      CHECK(std::isfinite(this->**m), "train: ", s.name, " must be a finite number, found ", this->**m);
  CHECK(!data.empty(), "train: no data directory (--data or train.data in the config)");
  CHECK(!out.empty(), "train: no run directory (--out or train.out in the config)");
  CHECK(max_steps >= 1, "train: max_steps must be >= 1, got ", max_steps);
  CHECK(batch_size >= 1 && seq_len >= 1 && grad_accum >= 1, "train: batch_size, seq_len and grad_accum must be >= 1");
  // The token buffers of a micro-batch hold batch_size × seq_len ids and counts are 64-bit:
  // bounded products, checked without overflowing.
  constexpr int64_t kMaxMicroBatchTokens = int64_t(1) << 31, kMaxStepTokens = int64_t(1) << 40;
  CHECK(batch_size <= kMaxMicroBatchTokens / seq_len, "train: batch_size × seq_len (", batch_size, " × ", seq_len,
        ") exceeds the limit of ", kMaxMicroBatchTokens, " tokens per micro-batch");
  CHECK(grad_accum <= kMaxStepTokens / (batch_size * seq_len), "train: batch_size × seq_len × grad_accum (", batch_size,
        " × ", seq_len, " × ", grad_accum, ") exceeds the limit of ", kMaxStepTokens, " tokens per step");
  CHECK(lr > 0 && min_lr >= 0 && min_lr <= lr, "train: need 0 <= min_lr <= lr with lr > 0 (lr ", lr, ", min_lr ", min_lr, ")");
  CHECK(warmup_steps >= 0 && eval_every >= 0 && checkpoint_every >= 0 && log_every >= 1 && eval_tokens >= 0 && halt_after >= 0,
        "train: step counts must be non-negative (log_every >= 1)");
  CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps > 0, "train: need 0 <= beta1, beta2 < 1 and eps > 0");
  CHECK(weight_decay >= 0 && grad_clip >= 0, "train: weight_decay and grad_clip must be >= 0");
  CHECK(device == "cpu" || device == "cuda", "train: device must be 'cpu' or 'cuda', found '", device, "'");
  CHECK(expert_parallel >= 1 && expert_parallel <= 65536, "train: expert_parallel must be a group size in [1, 65536], "
        "found ", expert_parallel);
}

}  // namespace moessm
