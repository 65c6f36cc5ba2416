// `moessm init`, `moessm logits`, `moessm grads`: create a checkpoint, dump logits as .npy and
// parameter gradients as safetensors, for comparisons with PyTorch / transformers.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <type_traits>
#include <vector>

#include "cli/command.h"
#include "cli/device_model.h"
#include "core/check.h"
#include "infer/state_file.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/mixer_registry.h"
#include "model/token_ids.h"
#include "ops/matmul.h"
#include "backend/backends.h"

namespace moessm::cli {
namespace {

// A state block in the model's backend memory holding `host` (a state file's fp32 state of B
// sequences), or an empty block when there is none.
template <typename Bk>
typename Bk::template Buffer<uint8_t> state_block(const Model<Bk>& m, const StateSnapshot<float>& s, idx_t B) {
  typename Bk::template Buffer<uint8_t> buf;
  if (s.state.empty()) return buf;
  Bk::alloc(buf, m.state_bytes(B));
  m.state_from_host(buf.data(), s.state.data(), B);
  return buf;
}

int cmd_init(int argc, char** argv) {
  Args a("init", "Write a freshly initialised checkpoint (config.json + model.safetensors).");
  a.path("config", "model config JSON (see configs/)", "", true)
      .path("out", "output checkpoint directory", "", true)
      .option("seed", "initialisation seed", "0")
      .flag("overwrite", "replace a checkpoint or training run already in --out (else refused)");
  if (!a.parse(argc, argv)) return 0;
  const std::string existing = existing_output(a.str("out"));
  CHECK(existing.empty() || a.on("overwrite"), "moessm init: '", a.str("out"), "' already holds ", existing,
        "; pass --overwrite to replace it");
  ModelConfig cfg = ModelConfig::from_file(a.str("config"));
  LanguageModel<float> model(cfg);
  model.init(static_cast<uint64_t>(a.integer("seed")));
  save_model(a.str("out"), model);
  std::printf("%s", describe_counts(model.counts()).c_str());
  std::vector<std::pair<std::string, MixerCounts>> layers;
  for (int l = 0; l < model.n_layers(); ++l) layers.emplace_back(model.mixer(l).type(), model.mixer(l).counts());
  std::printf("%s", describe_layer_counts(layers).c_str());
  std::printf("wrote %s (%d layers, d_model %lld, vocab %lld padded to %lld)\n", a.str("out").c_str(),
              model.n_layers(), (long long)cfg.d_model, (long long)cfg.vocab_size, (long long)model.vocab());
  return 0;
}

int cmd_logits(int argc, char** argv) {
  Args a("logits", "Run the model on token ids and write float32 logits [B, T, V] as .npy.");
  a.path("model", "checkpoint directory", "", true)
      .path("ids", "text file: whitespace-separated token ids, one sequence per line (lines may differ in length: rows are right-padded, padded positions are NaN in the logits and not scored)", "", true)
      .path("out", "output .npy path", "", true)
      .path("state-in", "initial recurrent state (a state file, one slot per line of ids)");
  device_options(a);
  if (!a.parse(argc, argv)) return 0;
  on_cuda(a);  // validates --device
  check_model_supported(load_model_config(a.str("model")), a.str("device"));  // before loading weights
  auto model = load_model<float>(a.str("model"));
  TokenBatch tb = read_token_ids(a.str("ids"), model->config().vocab_size);
  const idx_t V = model->vocab();
  std::vector<float> logits(static_cast<size_t>(tb.B * tb.T * V));
  StateSnapshot<float> s0;
  if (a.has("state-in")) s0 = load_state_file(a.str("state-in"), *model, tb.B);
  with_model(a, *model, [&](auto& m) {
    auto st = state_block(m, s0, tb.B);
    m.prepare(tb.B, tb.T, false);
    m.forward_logits(logits.data(), tb.ids.data(), tb.B, tb.T, s0.state.empty() ? nullptr : st.data(), nullptr);
  });
  // Ragged rows: the padded positions hold no prediction.
  for (int64_t b = 0; b < tb.B; ++b)
    std::fill(logits.begin() + (b * tb.T + tb.lengths[b]) * V, logits.begin() + (b + 1) * tb.T * V,
              std::numeric_limits<float>::quiet_NaN());
  write_npy_f32(a.str("out"), logits.data(), {tb.B, tb.T, V});
  std::printf("wrote %s [%lld, %lld, %lld]\n", a.str("out").c_str(), (long long)tb.B, (long long)tb.T, (long long)V);
  return 0;
}

int cmd_grads(int argc, char** argv) {
  Args a("grads",
         "Mean next-token cross-entropy over each line of ids (targets = ids shifted by one);\n"
         "writes every parameter's gradient (fp32, checkpoint names) and the loss as\n"
         "__metadata__[\"loss\"].");
  a.path("model", "checkpoint directory", "", true)
      .path("ids", "text file: whitespace-separated token ids, one sequence per line (lines may differ in length: rows are right-padded, padded positions are NaN in the logits and not scored)", "", true)
      .path("out", "output .safetensors path", "", true)
      .path("state-in", "initial recurrent state (a state file, one slot per line of ids)");
  device_options(a);
  if (!a.parse(argc, argv)) return 0;
  on_cuda(a);  // validates --device
  check_model_supported(load_model_config(a.str("model")), a.str("device"));  // before loading weights
  auto model = load_model<float>(a.str("model"));
  TokenBatch tb = read_token_ids(a.str("ids"), model->config().vocab_size);
  CHECK(tb.T >= 2, a.str("ids"), ": sequences need at least 2 ids to have a next-token target");
  std::vector<int32_t> targets(tb.ids.size());
  for (int64_t b = 0; b < tb.B; ++b)
    for (int64_t t = 0; t < tb.T; ++t)
      targets[b * tb.T + t] = t + 1 < tb.lengths[b] ? tb.ids[b * tb.T + t + 1] : -1;  // padding not scored
  StateSnapshot<float> s0;
  if (a.has("state-in")) s0 = load_state_file(a.str("state-in"), *model, tb.B);
  LossResult r;
  with_model(a, *model, [&](auto& m) {
    auto st = state_block(m, s0, tb.B);
    m.prepare(tb.B, tb.T, true);
    m.zero_grads();
    r = m.loss(tb.ids.data(), targets.data(), tb.B, tb.T, true, s0.state.empty() ? nullptr : st.data());
    if constexpr (!std::is_same_v<std::decay_t<decltype(m)>, LanguageModel<float>>) m.download_grads(model->grads.data());
  });
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", r.total());
  save_tensors(a.str("out"), model->table(), model->grads.data(), {{"loss", buf}});
  std::printf("loss %s (%lld targets); wrote %s\n", buf, (long long)r.count, a.str("out").c_str());
  return 0;
}

}  // namespace
REGISTER_COMMAND("init", "write a freshly initialised checkpoint", cmd_init);
REGISTER_COMMAND("logits", "dump logits [B,T,V] for token ids as .npy", cmd_logits);
REGISTER_COMMAND("grads", "dump parameter gradients of the next-token loss as safetensors", cmd_grads);
}  // namespace moessm::cli
