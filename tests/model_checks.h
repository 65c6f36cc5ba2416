// Whole-model checks shared by the model, RoM, Swimba, separated, trainer and GPU tests:
//   - randomize: the real initialisation plus U(±0.1) on every parameter (the real init leaves
//     some tensors constant, which would hide gradient errors);
//   - tiny_mixer_config: a 2-layer D 8 model whose every layer is the given mixer spec;
//   - copy_by_name: weights of one model into another by checkpoint name (E = 1 vs dense);
//   - check_gradients_by_fd: every parameter's gradient of the loss (with an optional carried
//     state) against central finite differences in double, tensor by tensor;
//   - expect_same_outputs_and_grads: two models give the same logits, loss and gradients
//     (compared by name) on the same random batch;
//   - prefill_steps_vs_one_pass: the recurrence invariant of every mixer (DESIGN.md §1): one pass
//     over ids [B, T] equals a prefill of T1 tokens, three single-token steps and then the rest,
//     with the state carried between calls (state_in aliasing state_out, as the decoder does);
//   - init_loss_grads_trace: parameters after init(42), then ce, aux and every gradient of two
//     loss passes on a fixed random batch (bitwise-determinism tests compare two traces);
//   - tiny_stack: the small model of the layer-type tests; cpu_sized: a shipped config at d 32, V 256;
//   - short_run_options: the 60-step CPU training run the config tests use (B 4 × T 32);
//   - make_word_data: a small prepared data directory (byte tokenizer) from a random word
//     sequence, persuasion.txt held out, for trainer tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/prepare.h"
#include "io/file_util.h"
#include "model/language_model.h"
#include "train/train_options.h"
#include "testing.h"

namespace moessm::testing {

template <typename T>
void randomize(LanguageModel<T>& m, uint64_t seed) {
  m.init(seed);
  Rng rng(seed, 99);
  for (auto& p : m.params) p += static_cast<T>(rng.uniform(-0.1, 0.1));
}

inline ModelConfig tiny_mixer_config(const std::string& mixer, int n_layer = 2) {
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": )" + std::to_string(n_layer) +
                  R"(, "vocab_size": 13, "d_state": 3, "d_conv": 3, "expand": 2, "pad_vocab_size_multiple": 8, "mixer": )" +
                  mixer + "}"),
      "test");
}

template <typename T>
void copy_by_name(LanguageModel<T>& to, const LanguageModel<T>& from) {
  from.table().visit([&](const ParamInfo& p) {
    const ParamInfo& q = to.table().at(p.name);
    ASSERT_EQ(p.numel, q.numel) << p.name;
    std::copy(from.params.begin() + p.offset, from.params.begin() + p.offset + p.numel,
              to.params.begin() + q.offset);
  });
}

// Backward of loss(ids, tg) (+ aux losses) against finite differences of every parameter,
// compared per tensor (tolerance 1e-6 · max(1, max |numeric|)). Returns the loss of the pass.
inline LossResult check_gradients_by_fd(LanguageModel<double>& m, const std::vector<int32_t>& ids,
                                        const std::vector<int32_t>& tg, idx_t B, idx_t T,
                                        const std::vector<double>* state = nullptr) {
  const double* s = state ? state->data() : nullptr;
  m.prepare(B, T, true);
  m.zero_grads();
  const LossResult r = m.loss(ids.data(), tg.data(), B, T, true, s);
  const std::vector<double> analytic = m.grads;
  const std::vector<double> numeric = numeric_gradient(m.params, [&] {
    return m.loss(ids.data(), tg.data(), B, T, false, s).total();
  });
  m.table().visit([&](const ParamInfo& p) {
    std::vector<double> a(analytic.begin() + p.offset, analytic.begin() + p.offset + p.numel);
    std::vector<double> n(numeric.begin() + p.offset, numeric.begin() + p.offset + p.numel);
    EXPECT_EQ(compare_gradients(a, n, 1e-6, p.name), "");
  });
  return r;
}

// a and b on one random batch (ids and targets in [0, vocab), B = 2, T = 70: across a scan
// chunk boundary): logits ≤ 1e-12 relative, loss ≤ 1e-12, every gradient of a's tensors ≤ 1e-10
// against b's tensor of the same name.
inline void expect_same_outputs_and_grads(LanguageModel<double>& a, LanguageModel<double>& b,
                                          int32_t vocab) {
  const idx_t B = 2, T = 70, V = a.vocab();
  Rng rng(3);
  std::vector<int32_t> ids(static_cast<size_t>(B * T)), tg(ids.size());
  for (auto& x : ids) x = int32_t(rng.below(uint64_t(vocab)));
  for (auto& x : tg) x = int32_t(rng.below(uint64_t(vocab)));
  std::vector<double> la(static_cast<size_t>(B * T * V)), lb(la.size());
  a.prepare(B, T, true);
  b.prepare(B, T, true);
  a.forward_logits(la.data(), ids.data(), B, T, nullptr, nullptr);
  b.forward_logits(lb.data(), ids.data(), B, T, nullptr, nullptr);
  EXPECT_LT(max_rel_diff(lb.data(), la.data(), la.size()), 1e-12);
  a.zero_grads();
  b.zero_grads();
  const double L1 = a.loss(ids.data(), tg.data(), B, T, true).total();
  const double L2 = b.loss(ids.data(), tg.data(), B, T, true).total();
  EXPECT_NEAR(L1, L2, 1e-12 * std::fabs(L1));
  a.table().visit([&](const ParamInfo& p) {
    const ParamInfo& q = b.table().at(p.name);
    EXPECT_LT(max_rel_diff(b.grads.data() + q.offset, a.grads.data() + p.offset, p.numel), 1e-10) << p.name;
  });
}

// Returns max |pieces - one pass| / max |one pass| over all logits. Token ids are drawn in
// [0, vocab) from `seed`. T1 + 3 < T.
inline double prefill_steps_vs_one_pass(LanguageModel<double>& m, idx_t B, idx_t T, idx_t T1,
                                        int32_t vocab, uint64_t seed = 6) {
  const idx_t V = m.vocab();
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  for (auto& x : ids) x = int32_t(rng.below(uint64_t(vocab)));
  std::vector<double> full(static_cast<size_t>(B * T * V)), parts(full.size());
  m.prepare(B, T, false);
  m.forward_logits(full.data(), ids.data(), B, T, nullptr, nullptr);
  std::vector<double> state(static_cast<size_t>(m.state_size() * B), 0.0);
  auto run = [&](idx_t t0, idx_t len, bool first) {
    std::vector<int32_t> seg(static_cast<size_t>(B * len));
    for (idx_t b = 0; b < B; ++b)
      for (idx_t t = 0; t < len; ++t) seg[b * len + t] = ids[b * T + t0 + t];
    std::vector<double> out(static_cast<size_t>(B * len * V));
    m.prepare(B, len, false);
    m.forward_logits(out.data(), seg.data(), B, len, first ? nullptr : state.data(), state.data());
    for (idx_t b = 0; b < B; ++b)
      for (idx_t t = 0; t < len; ++t)
        for (idx_t v = 0; v < V; ++v) parts[(b * T + t0 + t) * V + v] = out[(b * len + t) * V + v];
  };
  run(0, T1, true);
  for (idx_t t = T1; t < T1 + 3; ++t) run(t, 1, false);  // three single-token steps
  run(T1 + 3, T - T1 - 3, false);
  return max_rel_diff(parts.data(), full.data(), full.size());
}

// <temp>/data prepared from n_words random words (90% train, the rest persuasion.txt).
// "step:loss[ val val_loss]" of every line of a metrics.jsonl (trainer and crash-loop tests).
inline std::vector<float> init_loss_grads_trace(const ModelConfig& cfg, idx_t B = 2, idx_t T = 40) {
  Rng rng(9);
  std::vector<int32_t> ids(size_t(B * T)), tg(ids.size());
  for (auto& x : ids) x = int32_t(rng.below(13));
  for (auto& x : tg) x = int32_t(rng.below(13));
  LanguageModel<float> m(cfg);
  m.init(42);
  m.prepare(B, T, true);
  std::vector<float> out(m.params.begin(), m.params.end());
  for (int rep = 0; rep < 2; ++rep) {
    m.zero_grads();
    const LossResult r = m.loss(ids.data(), tg.data(), B, T, true);
    out.push_back(float(r.ce));
    out.push_back(float(r.aux));
    out.insert(out.end(), m.grads.begin(), m.grads.end());
  }
  return out;
}

// A D 8, V 13 (padded to 16), N 3 stack of n_layer layers from a JSON list body ("mamba", {...}):
// the layer-type tests' model (test_mlp, test_attention).
inline ModelConfig tiny_stack(const std::string& layers, int n_layer) {
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": )" + std::to_string(n_layer) +
                  R"(, "vocab_size": 13, "d_state": 3, "d_conv": 3, "expand": 2, "pad_vocab_size_multiple": 8,
                     "layers": [)" + layers + "]}"),
      "test.json");
}

// A shipped config (its JSON) shrunk for the CPU training tests: vocab 256 (the byte-level word
// data of make_word_data), d_model 32.
inline ModelConfig cpu_sized(Json j, const std::string& name) {
  j.set("vocab_size", 256);
  j.set("d_model", 32);
  return ModelConfig::from_json(j, name);
}

inline TrainOptions short_run_options(const std::string& data) {
  TrainOptions o;
  o.data = data;
  o.out = data + "/../run";
  o.max_steps = 60;
  o.batch_size = 4;
  o.seq_len = 32;
  o.lr = 3e-3;
  o.min_lr = 3e-4;
  o.warmup_steps = 5;
  o.eval_every = 0;
  o.eval_tokens = 2048;
  o.checkpoint_every = 0;
  o.log_every = 100;
  return o;
}

inline std::vector<std::string> loss_fields(const std::string& metrics) {
  std::istringstream in(read_file(metrics));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line);
    out.push_back(std::to_string(j.at("step").as_int()) + ":" + j.at("loss").dump() +
                  (j.has("val_loss") ? " val " + j.at("val_loss").dump() : ""));
  }
  return out;
}

inline std::string make_word_data(const std::string& tag, int n_words) {
  const std::string dir = temp_dir(tag);
  std::string text;
  Rng rng(11);
  const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "Emma ", "walked ", "home.\n"};
  for (int i = 0; i < n_words; ++i) text += words[rng.below(9)];
  write_file_atomic(dir + "/a.txt", text.substr(0, text.size() * 9 / 10));
  write_file_atomic(dir + "/persuasion.txt", text.substr(text.size() * 9 / 10));
  PrepareOptions o;
  o.inputs = {dir + "/a.txt", dir + "/persuasion.txt"};
  o.out_dir = dir + "/data";
  prepare_data(o);
  return dir + "/data";
}

}  // namespace moessm::testing
