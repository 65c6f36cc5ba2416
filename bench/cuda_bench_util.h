// Shared helpers for the CUDA benchmarks (bench_scan, bench_ops): event timing (median after
// warm-up), random device fills (never zeros: they can run faster than real data), the two
// ceilings measured in the same run (cuBLASLt bf16 8192³ TFLOP/s; device-to-device copy GB/s
// counting read + write), a printed table and a JSON writer.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "io/json.h"
#include "backend/cuda_backend.h"
#include "model/config.h"
#include "infer/cuda/cuda_generator.h"
#include "model/language_model.h"
#include "train/train_backend.h"
#include "ops/matmul.h"

namespace moessm::bench {

// Median milliseconds of `reps` timed calls of fn after `warm` untimed ones.
inline double time_ms(const std::function<void()>& fn, int warm = 3, int reps = 20) {
  for (int i = 0; i < warm; ++i) fn();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a, nullptr));
    fn();
    CUDA_CHECK(cudaEventRecord(b, nullptr));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median wall-clock milliseconds of `reps` calls of fn (each ending in a stream sync) after
// `warm` untimed ones: for whole steps that include host work.
inline double median_ms(const std::function<void()>& fn, int warm, int reps) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < warm; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// A model config of L layers of width D over V tokens; `mixer` (JSON) for every layer when given.
inline ModelConfig config(idx_t D, idx_t L, idx_t V, const std::string& mixer = "") {
  Json j = Json::object();
  j.set("d_model", D);
  j.set("n_layer", L);
  j.set("vocab_size", V);
  if (!mixer.empty()) j.set("mixer", Json::parse(mixer));
  return ModelConfig::from_json(j, "bench");
}

// n pseudo-random token ids in [0, V) (xorshift; the same for one seed).
inline std::vector<int32_t> ids_of(size_t n, int32_t V, uint64_t seed) {
  std::vector<int32_t> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    x = int32_t(s % uint64_t(V));
  }
  return v;
}

// Uniform values in [lo, hi) (xorshift on the host, uploaded in slabs).
inline void fill_f32(float* d, size_t n, float lo, float hi, uint64_t seed) {
  std::vector<float> h(std::min<size_t>(n, size_t(1) << 22));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : h) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    x = lo + (hi - lo) * float((s >> 11) * (1.0 / 9007199254740992.0));
  }
  for (size_t off = 0; off < n; off += h.size()) {
    const size_t k = std::min(h.size(), n - off);
    CUDA_CHECK(cudaMemcpy(d + off, h.data(), k * sizeof(float), cudaMemcpyHostToDevice));
  }
  device_sync();  // landed before any stream's kernels read it
}
inline void fill_bf16(__nv_bfloat16* d, size_t n, float lo, float hi, uint64_t seed) {
  DeviceBuffer tmp(std::min<size_t>(n, size_t(1) << 24) * sizeof(float));
  const size_t slab = tmp.count<float>();
  for (size_t off = 0; off < n; off += slab) {
    const size_t k = std::min(slab, n - off);
    fill_f32(tmp.as<float>(), k, lo, hi, seed + off);
    cuda::convert_f32_to_bf16(d + off, tmp.as<float>(), idx_t(k), nullptr);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

struct Ceilings {
  double gemm_tflops = 0, copy_gbs = 0;
};

inline Ceilings measure_ceilings() {
  Ceilings c;
  const idx_t n = 8192;
  DeviceBuffer A(size_t(n * n) * 2), B(size_t(n * n) * 2), C(size_t(n * n) * 2);
  fill_bf16(A.as<__nv_bfloat16>(), size_t(n * n), -1, 1, 1);
  fill_bf16(B.as<__nv_bfloat16>(), size_t(n * n), -1, 1, 2);
  const double ms = time_ms([&] {
    cuda::gemm<__nv_bfloat16, __nv_bfloat16>(false, true, n, n, n, 1.f, A.as<__nv_bfloat16>(), n,
                                             B.as<__nv_bfloat16>(), n, 0.f, C.as<__nv_bfloat16>(), n, nullptr);
  }, 3, 10);
  c.gemm_tflops = 2.0 * double(n) * n * n / (ms * 1e-3) / 1e12;
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer X(bytes), Y(bytes);
  fill_f32(X.as<float>(), bytes / 4, -1, 1, 3);
  const double cms = time_ms([&] { CUDA_CHECK(cudaMemcpyAsync(Y.data(), X.data(), bytes, cudaMemcpyDeviceToDevice, nullptr)); }, 3, 10);
  c.copy_gbs = 2.0 * double(bytes) / (cms * 1e-3) / 1e9;
  return c;
}

inline std::string device_name() {
  cudaDeviceProp p;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// --json <path>: the file to write (empty: none).
inline std::string json_path(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--json") return argv[i + 1];
  return "";
}

// Whether a flag (e.g. --quick) is among the arguments.
inline bool has_flag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == flag) return true;
  return false;
}

// fwd and fwd+bwd ms (loss path) of the model cfg at B × T on Model<CudaBackend<bf16>> (bf16
// activations, fp32 master weights), random ids below cfg.vocab_size.
inline std::pair<double, double> model_ms(const ModelConfig& cfg, idx_t B, idx_t T, int reps) {
  Model<CudaBackend<__nv_bfloat16>> m(cfg);
  m.init(1);
  m.prepare(B, T, true);
  const int32_t V = int32_t(cfg.vocab_size);
  const auto ids = ids_of(size_t(B * T), V, 3), tg = ids_of(size_t(B * T), V, 4);
  const double f = median_ms([&] { m.loss(ids.data(), tg.data(), B, T, false); }, 2, reps);
  const double fb = median_ms([&] { m.zero_grads(); m.loss(ids.data(), tg.data(), B, T, true); }, 2, reps);
  return {f, fb};
}

// One training step (loss, backward, global norm, AdamW + bf16 weight refresh) of cfg at B × T
// on the CUDA trainer: median ms, tokens/s, the GPU memory the run holds (cudaMemGetInfo
// before and after) and the model's accounting.
struct TrainStep {
  double step_ms = 0, tokens_per_s = 0, mem_gib = 0;
  MixerCounts counts;
};
inline TrainStep train_step(const ModelConfig& cfg, idx_t B, idx_t T, int reps) {
  size_t free0 = 0, total = 0;
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  TrainStep r;
  {
    auto be = make_train_backend("cuda", cfg);
    be->init(1);
    be->prepare(B, T);
    const int32_t V = int32_t(std::min<int64_t>(cfg.vocab_size, 50257));
    const auto ids = ids_of(size_t(B * T), V, 5), tg = ids_of(size_t(B * T), V, 6);
    TrainOptions o;
    int64_t step = 0;
    r.step_ms = median_ms([&] {
      be->zero_grads();
      be->loss(ids.data(), tg.data(), B, T, true);
      const double g = be->grad_norm_squared();
      be->adamw_step(o, 1e-4, ++step, g > 1 ? 1.0 / std::sqrt(g) : 1.0);
    }, 2, reps);
    size_t free1 = 0;
    CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    r.mem_gib = double(free0 - free1) / double(1ull << 30);
    r.counts = be->counts();
  }
  r.tokens_per_s = double(B * T) / (r.step_ms * 1e-3);
  return r;
}

// Decoding with the CUDA-graph generator after a 16-token prompt (sampling on the device): the
// second of two runs (the first captures the graph), per step.
struct DecodeTimes {
  double ms_per_token = 0, tokens_per_s = 0;
  int64_t steps = 0;
};
inline DecodeTimes decode(Model<CudaBackend<__nv_bfloat16>>& m, idx_t batch, int64_t new_tokens) {
  GenerateOptions o;
  o.max_new_tokens = new_tokens;
  o.sampling.temperature = 1.0;
  o.eot_id = -1;
  cuda::CudaGenerator<__nv_bfloat16> gen(m, batch, o, 2048);
  std::vector<std::vector<int32_t>> prompts(size_t(batch), ids_of(16, 50257, 7));
  gen.run(prompts);  // warm-up (graph capture, algorithm choice)
  gen.reset_state();
  gen.run(prompts);
  DecodeTimes d;
  d.steps = gen.stats().steps;
  d.ms_per_token = 1e3 * gen.stats().step_seconds / double(d.steps);
  d.tokens_per_s = double(gen.stats().generated_tokens) / gen.stats().step_seconds;
  return d;
}

}  // namespace moessm::bench
