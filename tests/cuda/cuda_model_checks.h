// Helpers the model-level GPU tests share (tests/cuda/test_*model*_cuda.cpp): random ids and
// shifted targets, an initialised parameter vector with generic norms, a random carried state,
// one forward (logits) + loss + backward (grads) on the CPU model in T or on the CUDA model in
// Act from the same fp32 parameters, the relative L2 error, and the model-level comparisons of
// the MoE and feed-forward stacks (fp32 against the CPU with the routing, bf16 within bounds).
#pragma once
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/cuda_backend.h"
#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/rng.h"
#include "gpu_testing.h"
#include "infer/decoder.h"
#include "infer/generator.h"
#include "model/language_model.h"
#include "train/train_backend.h"
#include "train/trainer.h"

namespace moessm::gputest {

// A stack of the given layer specs (JSON each) at the GPU model tests' awkward sizes: D 40
// (Di 80), N 12, V 300 (padded 304).
inline ModelConfig stack_config(const std::vector<std::string>& layers, int64_t d_model = 40) {
  std::string list;
  for (const auto& l : layers) list += (list.empty() ? "" : ", ") + l;
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": )" + std::to_string(d_model) + R"(, "n_layer": )" + std::to_string(layers.size()) +
                  R"(, "vocab_size": 300, "d_state": 12, "pad_vocab_size_multiple": 8, "layers": [)" + list + "]}"),
      "test");
}

inline std::vector<int32_t> random_ids(size_t n, int32_t V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = int32_t(r.below(uint64_t(V)));
  return v;
}

// Next-token targets per row, the last position ignored (as `moessm grads`).
inline std::vector<int32_t> shifted(const std::vector<int32_t>& ids, idx_t B, idx_t T) {
  std::vector<int32_t> t(ids.size());
  for (idx_t b = 0; b < B; ++b)
    for (idx_t i = 0; i < T; ++i) t[b * T + i] = i + 1 < T ? ids[b * T + i + 1] : -1;
  return t;
}

template <typename T>
LanguageModel<T> cpu_model(const ModelConfig& cfg, const std::vector<float>& params) {
  LanguageModel<T> m(cfg);
  for (size_t i = 0; i < params.size(); ++i) m.params[i] = T(params[i]);
  return m;
}

struct Outputs {
  std::vector<double> logits, grads;
  double loss = 0, aux = 0;  // cross-entropy; the layers' auxiliary (load-balancing) loss
  Json stats;                 // the layers' routing statistics of the loss pass
};

// Logits, then the loss with its backward, of a prepared-for-training model m (any backend) on
// ids [B, T] with an optional carried state block s in m's memory and an optional host document
// index seq [B, T] (packed documents).
template <typename M>
Outputs forward_and_grads(M& m, const std::vector<int32_t>& ids, idx_t B, idx_t T_, const void* s,
                          const int32_t* seq = nullptr) {
  Outputs o;
  std::vector<typename M::HostLogit> logits(size_t(B * T_ * m.vocab()));
  m.forward_logits(logits.data(), ids.data(), B, T_, s, nullptr, seq);
  const auto tg = shifted(ids, B, T_);
  m.zero_grads();
  const LossResult r = m.loss(ids.data(), tg.data(), B, T_, true, s, nullptr, seq);
  o.loss = r.ce;
  o.aux = r.aux;
  o.stats = m.stats();
  std::vector<typename M::Param> grads(m.table().total());
  m.download_grads(grads.data());
  o.logits.assign(logits.begin(), logits.end());
  o.grads.assign(grads.begin(), grads.end());
  return o;
}

template <typename T>
Outputs run_cpu(const ModelConfig& cfg, const std::vector<float>& params, const std::vector<int32_t>& ids, idx_t B,
                idx_t T_, const std::vector<float>* state, const int32_t* seq = nullptr) {
  LanguageModel<T> m = cpu_model<T>(cfg, params);
  std::vector<T> st;
  if (state) st.assign(state->begin(), state->end());
  m.prepare(B, T_, true);
  return forward_and_grads(m, ids, B, T_, state ? st.data() : nullptr, seq);
}

// The model on the CUDA backend (Model<CudaBackend<Act>>, the CPU's layer code): the state lives
// in a device block in the backend layout, exchanged with the host fp32 layout.
template <typename Act>
Outputs run_cuda(const ModelConfig& cfg, const std::vector<float>& params, const std::vector<int32_t>& ids,
                 idx_t B, idx_t T_, const std::vector<float>* state, const int32_t* seq = nullptr) {
  Model<CudaBackend<Act>> m(cfg);
  m.upload_params(params.data());
  m.prepare(B, T_, true);
  DeviceBuffer st(m.state_bytes(B));
  if (state) {  // the exchange round-trips (bf16 conv parts hold bf16-rounded values)
    m.state_from_host(st.data(), state->data(), B);
    std::vector<float> back(state->size());
    m.state_to_host(back.data(), st.data(), B);
    const double rel = std::is_same_v<Act, float> ? 0.0 : 4e-3;  // bf16: 2^-9 relative rounding
    for (size_t i = 0; i < back.size(); ++i) EXPECT_NEAR(back[i], (*state)[i], rel * std::fabs((*state)[i])) << i;
  }
  return forward_and_grads(m, ids, B, T_, state ? st.data() : nullptr, seq);
}

// Greedy decoding of `prompts` for n new tokens on the CPU decoder (the reference the CUDA graph
// generator is compared with) and the options both use.
inline GenerateOptions greedy_options(int64_t n) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = n;
  return o;
}
inline std::vector<SlotOutput> cpu_greedy(const ModelConfig& cfg, const std::vector<float>& params,
                                          const std::vector<std::vector<int32_t>>& prompts, int64_t n) {
  LanguageModel<float> host = cpu_model<float>(cfg, params);
  Decoder<float> dec(host, idx_t(prompts.size()));
  Generator<float> gen(dec, greedy_options(n));
  return gen.run(prompts);
}

inline std::vector<float> init_params(const ModelConfig& cfg, uint64_t seed) {
  LanguageModel<float> m(cfg);
  m.init(seed);
  // Move the norms and D away from their constant init so their gradients are generic.
  Rng r(seed + 1);
  for (const ParamInfo& p : m.table().entries())
    if (p.no_decay && p.name.find("A_log") == std::string::npos)
      for (size_t i = 0; i < p.numel; ++i) m.params[p.offset + i] += float(r.uniform(-0.2, 0.2));
  return m.params;
}

inline std::vector<float> random_state(const ModelConfig& cfg, idx_t B, uint64_t seed) {
  LanguageModel<float> m(cfg);
  Rng r(seed);
  std::vector<float> s(size_t(B * m.state_size()));
  for (auto& x : s) x = float(r.uniform(-0.5, 0.5));
  return s;
}

// ||a - ref||₂ / ||ref||₂
inline double l2_rel(const std::vector<double>& a, const std::vector<double>& ref, size_t off, size_t n) {
  double num = 0, den = 0;
  for (size_t i = off; i < off + n; ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Prefill P tokens of ids [B, T], then T - P single steps carrying the device state (aliased in
// and out, as the decoder does): max |step logits - one-pass logits| / max |one-pass logits|.
inline double prefill_steps_max_rel_diff(Model<CudaBackend<float>>& m, const std::vector<int32_t>& ids, idx_t B, idx_t T,
                                  idx_t P) {
  m.prepare(B, T, false);
  const idx_t V = m.vocab();
  std::vector<float> full(size_t(B * T * V));
  m.forward_logits(full.data(), ids.data(), B, T, nullptr, nullptr);
  DeviceBuffer ids_dev(size_t(B * P) * sizeof(int32_t)), logits_dev(size_t(B * V) * sizeof(float));
  std::vector<int32_t> pre(size_t(B * P));
  for (idx_t b = 0; b < B; ++b)
    for (idx_t t = 0; t < P; ++t) pre[b * P + t] = ids[b * T + t];
  ids_dev.upload(pre);
  DeviceBuffer st(m.state_bytes(B));
  st.fill_bytes(0);
  double worst = 0, scale = 0;
  for (idx_t t = P; t <= T; ++t) {
    if (t == P) {
      m.forward_last_logits(logits_dev.as<float>(), ids_dev.as<int32_t>(), B, P, st.data(), st.data());
    } else {
      std::vector<int32_t> tok(static_cast<size_t>(B));
      for (idx_t b = 0; b < B; ++b) tok[b] = ids[b * T + t - 1];
      ids_dev.upload(tok);
      m.forward_last_logits(logits_dev.as<float>(), ids_dev.as<int32_t>(), B, 1, st.data(), st.data());
    }
    CUDA_CHECK(cudaStreamSynchronize(m.ctx().stream));
    const auto got = logits_dev.to_host<float>();
    for (idx_t b = 0; b < B; ++b)
      for (idx_t v = 0; v < V; ++v) {
        const double r = full[(b * T + t - 1) * V + v];
        worst = std::max(worst, std::fabs(double(got[b * V + v]) - r));
        scale = std::max(scale, std::fabs(r));
      }
  }
  return scale > 0 ? worst / scale : worst;
}

// Four CUDA training steps of cfg from seed 7 on one repeated batch (B 3 × T 90 over ids < V):
// per step the cross-entropy, the auxiliary loss and the squared gradient norm, then every
// parameter after the last step. Two calls must agree bit for bit.
inline std::vector<double> four_step_trace(const ModelConfig& cfg, int32_t V) {
  auto be = make_train_backend("cuda", cfg);
  be->init(7);
  TrainOptions o;
  const idx_t B = 3, T = 90;
  be->prepare(B, T);
  std::vector<double> out;
  for (int step = 1; step <= 4; ++step) {
    const auto ids = random_ids(size_t(B * T), V, 100);
    const auto tg = shifted(ids, B, T);
    be->zero_grads();
    const LossResult r = be->loss(ids.data(), tg.data(), B, T, true);
    out.push_back(r.ce);
    out.push_back(r.aux);
    out.push_back(be->grad_norm_squared());
    be->adamw_step(o, 1e-3, step, 1.0);
  }
  std::vector<float> p, m, v;
  be->download(p, m, v);
  out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The same short training run (120 steps, B 8 × T 64, warm-up 10, lr 3e-3 → 3e-4) of cfg on the
// prepared data directory `data`, on the CPU and on cuda: {cpu result, cuda result}.
inline std::pair<TrainResult, TrainResult> short_run_cpu_and_cuda(const ModelConfig& cfg, const std::string& data) {
  auto train = [&](const std::string& device) {
    TrainOptions o;
    o.data = data;
    o.out = data + "/../run_" + device;
    o.device = device;
    o.max_steps = 120;
    o.batch_size = 8;
    o.seq_len = 64;
    o.lr = 3e-3;
    o.min_lr = 3e-4;
    o.warmup_steps = 10;
    o.eval_every = 0;
    o.eval_tokens = 8192;
    o.checkpoint_every = 0;
    o.log_every = 40;
    return train_model(cfg, o);
  };
  TrainResult cpu = train("cpu");
  return {cpu, train("cuda")};
}

// The routing statistics of two runs (per layer: load exactly, aux and z losses to 1e-6 / 1e-5).
inline void expect_same_routing(const Json& cuda_stats, const Json& cpu_stats, const std::string& tag) {
  ASSERT_TRUE(cuda_stats.is_array() && cpu_stats.is_array()) << tag;
  ASSERT_EQ(cuda_stats.size(), cpu_stats.size()) << tag;
  for (size_t l = 0; l < cpu_stats.size(); ++l) {
    const Json& a = cuda_stats.as_array()[l];
    const Json& b = cpu_stats.as_array()[l];
    if (b.is_null()) continue;  // a dense layer
    const Json::Array& la = a.at("load").as_array();
    const Json::Array& lb = b.at("load").as_array();
    ASSERT_EQ(la.size(), lb.size()) << tag << " layer " << l;
    for (size_t e = 0; e < lb.size(); ++e)
      EXPECT_EQ(la[e].as_number(), lb[e].as_number()) << tag << " layer " << l << " expert " << e;
    EXPECT_NEAR(a.at("aux_loss").as_number(), b.at("aux_loss").as_number(), 1e-6 * std::fabs(b.at("aux_loss").as_number()))
        << tag << " layer " << l;
    EXPECT_NEAR(a.at("z_loss").as_number(), b.at("z_loss").as_number(), 1e-5 * std::fabs(b.at("z_loss").as_number()) + 1e-12)
        << tag << " layer " << l;
  }
}

// fp32 CUDA against the fp64 CPU reference within the fp32 CPU's error budget (logits 2e-5,
// every gradient 2e-4), the loss to 1e-5, and for a routed stack the routing statistics equal to
// the fp32 CPU run's (aux > 0); B 2, T 70, with or without a random carried state; `packed`
// gives each row documents (starts at t = 1, 23, 64 and 65 + b: a chunk start, one token after it)
// through seq_idx.
inline void expect_fp32_model_matches_cpu(const ModelConfig& cfg, bool routed, bool with_state, const std::string& name,
                                          bool packed = false) {
  const idx_t B = 2, T = 70;
  const auto params = init_params(cfg, 3);
  const auto ids = random_ids(size_t(B * T), 300, 4);
  const auto st = random_state(cfg, B, 5);
  const std::vector<float>* s = with_state && !st.empty() ? &st : nullptr;
  std::vector<int32_t> seq(size_t(B * T), 0);
  for (idx_t b = 0; b < B; ++b)
    for (idx_t t = 0, doc = 0; t < T; ++t) {
      if (t == 1 || t == 23 || t == 64 || t == 65 + b) ++doc;
      seq[size_t(b * T + t)] = int32_t(doc);
    }
  const int32_t* sq = packed ? seq.data() : nullptr;
  const Outputs ref = run_cpu<double>(cfg, params, ids, B, T, s, sq);
  const Outputs naive = run_cpu<float>(cfg, params, ids, B, T, s, sq);
  const Outputs fast = run_cuda<float>(cfg, params, ids, B, T, s, sq);
  const std::string tag = name + (s ? " (carried state)" : "") + (packed ? " (packed documents)" : "");
  if (routed) {
    expect_same_routing(fast.stats, naive.stats, tag);
    EXPECT_GT(ref.aux, 0.0) << tag;
    EXPECT_NEAR(fast.aux, ref.aux, 1e-5 * ref.aux) << tag << " aux loss";
  } else {
    EXPECT_EQ(ref.aux, 0.0) << tag;
    EXPECT_EQ(fast.aux, 0.0) << tag;
  }
  expect_within_budget(tag + " logits", rel_err(fast.logits, ref.logits), rel_err(naive.logits, ref.logits), 2e-5);
  EXPECT_NEAR(fast.loss, ref.loss, 1e-5 * std::fabs(ref.loss)) << tag;
  LanguageModel<float> layout(cfg);
  for (const ParamInfo& p : layout.table().entries()) {
    const std::vector<double> r(ref.grads.begin() + p.offset, ref.grads.begin() + p.offset + p.numel);
    const std::vector<double> f(fast.grads.begin() + p.offset, fast.grads.begin() + p.offset + p.numel);
    const std::vector<double> n(naive.grads.begin() + p.offset, naive.grads.begin() + p.offset + p.numel);
    expect_within_budget(tag + " grad " + p.name, rel_err(f, r), rel_err(n, r), 2e-4);
  }
}

// bf16 activations and GEMM operands (fp32 router logits and weights) against the fp64 CPU
// reference: logits within 3% and every gradient within 10% relative L2, the loss within 1%,
// the aux loss within 5%; aggregate bounds only (a route whose top-K margin is below bf16
// resolution may flip). B 2, T 70.
inline void expect_bf16_model_near_reference(const ModelConfig& cfg, bool routed, const std::string& name) {
  const idx_t B = 2, T = 70;
  const auto params = init_params(cfg, 3);
  const auto ids = random_ids(size_t(B * T), 300, 4);
  const Outputs ref = run_cpu<double>(cfg, params, ids, B, T, nullptr);
  const Outputs fast = run_cuda<__nv_bfloat16>(cfg, params, ids, B, T, nullptr);
  EXPECT_LT(l2_rel(fast.logits, ref.logits, 0, ref.logits.size()), 0.03) << name;
  EXPECT_NEAR(fast.loss, ref.loss, 0.01 * std::fabs(ref.loss)) << name;
  if (routed) EXPECT_NEAR(fast.aux, ref.aux, 0.05 * ref.aux) << name;
  LanguageModel<float> layout(cfg);
  for (const ParamInfo& p : layout.table().entries())
    EXPECT_LT(l2_rel(fast.grads, ref.grads, p.offset, p.numel), 0.1) << name << " grad " << p.name;
}

}  // namespace moessm::gputest
