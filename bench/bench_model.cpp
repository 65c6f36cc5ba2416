// bench_model: the CUDA model end to end (issue 7's model-level benchmarks), shipped code only:
//   1. one dense Mamba layer (D 1024, B 8, T 2048), forward and forward+backward: the difference
//      between a 2-layer and a 1-layer model with a 16-token vocabulary (so embedding, head and
//      loss cancel; what remains is one layer plus its residual norm);
//   2. a training step of the 24-layer D 768 V 50280 model at B 8 × T 2048 (loss, backward,
//      global norm, AdamW + bf16 weight refresh): tokens/s and MFU = GEMM FLOPs (DESIGN.md §5,
//      3 × forward) per second over the measured bf16 GEMM ceiling;
//   3. decode of that model (CUDA-graph steps, device sampling): ms/token at batch 1 and 64
//      after a 16-token prompt; prefill of a 2048-token prompt (batch 1).
// Ceilings measured in the same run: cuBLASLt bf16 8192³ TFLOP/s and device copy GB/s.
// Times are medians of wall-clock-timed calls that end in a stream sync, after warm-up.
// Reference: mamba_ssm / PyTorch on an H100 of this workplace (numbers in issue 7).
// Usage: bench_model [--json FILE] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "infer/cuda/cuda_generator.h"
#include "model/accounting.h"
#include "model/language_model.h"
#include "backend/cuda_backend.h"
#include "train/train_backend.h"

using namespace moessm;
using bf16 = __nv_bfloat16;

namespace {

using bench::config;
using bench::ids_of;
using bench::median_ms;

// fwd and fwd+bwd ms of a model of L layers (loss path, bf16; bench::model_ms).
std::pair<double, double> model_ms(idx_t D, idx_t L, idx_t V, idx_t B, idx_t T, int reps) {
  return bench::model_ms(config(D, L, V), B, T, reps);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string json = bench::json_path(argc, argv);
  const bool quick = bench::has_flag(argc, argv, "--quick");
  const int reps = quick ? 3 : 10;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const bench::Ceilings ceil = bench::measure_ceilings();
  std::printf("device: %s\nceilings: cuBLASLt bf16 8192^3 %.0f TFLOP/s; device copy %.0f GB/s (read+write)\n", prop.name,
              ceil.gemm_tflops, ceil.copy_gbs);

  // 1. one layer
  const auto l1 = model_ms(1024, 1, 16, 8, 2048, reps), l2 = model_ms(1024, 2, 16, 8, 2048, reps);
  const double layer_f = l2.first - l1.first, layer_fb = l2.second - l1.second;
  std::printf("\n[layer] dense Mamba layer D 1024, B 8, T 2048 (bf16): fwd %.3f ms, fwd+bwd %.3f ms "
              "(mamba_ssm on H100: 1.06 / 4.48 ms; target fwd+bwd <= 3.2 ms)\n", layer_f, layer_fb);

  // 2. training step
  const ModelConfig big = config(768, 24, 50280);
  const idx_t B = 8, T = 2048;
  double step_ms = 0, tok_s = 0, mfu = 0, gemm_flops_tok = 0;
  {
    const bench::TrainStep t = bench::train_step(big, B, T, reps);
    step_ms = t.step_ms;
    tok_s = t.tokens_per_s;
    gemm_flops_tok = 3.0 * t.counts.gemm_flops;
    mfu = gemm_flops_tok * tok_s / (ceil.gemm_tflops * 1e12);
    std::printf("[train] 24 x D768, V 50280, B 8 x T 2048: %.1f ms/step, %.0f tokens/s, MFU %.1f%% "
                "(GEMM %.3f GFLOP/token incl. backward); PyTorch+mamba_ssm on H100: 141k tokens/s, ~14%%; "
                "target >= 2.5x = 352k tokens/s\n", step_ms, tok_s, 100 * mfu, gemm_flops_tok / 1e9);
  }

  // 3. decode and prefill
  double dec_ms[2] = {0, 0}, dec_gemv_ms = 0, prefill_ms = 0;
  {
    Model<CudaBackend<bf16>> m(big);
    m.init(1);
    const idx_t batches[2] = {1, 64};
    for (int k = 0; k < 2; ++k) {
      const bench::DecodeTimes d = bench::decode(m, batches[k], quick ? 64 : 256);
      dec_ms[k] = d.ms_per_token;
      std::printf("[decode] batch %lld: %.3f ms/token (%lld steps; %.0f tokens/s)%s\n", (long long)batches[k], dec_ms[k],
                  (long long)d.steps, d.tokens_per_s, k == 0 ? "; mamba_ssm generate on H100: 0.73 ms/token, target <= 0.3" : "");
    }
    // The same batch-1 decode with the GEMV kernel for the M <= 8 products (ops/matmul.h's variant).
    cuda::matmul_set_small_m_gemv(true);
    dec_gemv_ms = bench::decode(m, 1, quick ? 64 : 256).ms_per_token;
    cuda::matmul_set_small_m_gemv(false);
    std::printf("[decode] batch 1 with the GEMV kernel for the few-row products: %.3f ms/token (%.3fx cuBLASLt's)\n",
                dec_gemv_ms, dec_gemv_ms / dec_ms[0]);
    m.prepare(1, 2048, false);
    const auto ids = ids_of(2048, 50257, 8);
    DeviceBuffer ids_dev = DeviceBuffer::from_host(ids), logits(size_t(50280) * sizeof(bf16) + 256),
                 state(m.state_bytes(1));
    prefill_ms = median_ms([&] {
      CUDA_CHECK(cudaMemsetAsync(state.data(), 0, state.bytes(), m.ctx().stream));
      m.forward_last_logits(logits.as<bf16>(), ids_dev.as<int32_t>(), 1, 2048, state.data(), state.data());
      CUDA_CHECK(cudaStreamSynchronize(m.ctx().stream));
    }, 2, reps);
    std::printf("[prefill] 2048-token prompt, batch 1: %.3f ms (mamba_ssm on H100: 21.4 ms, target <= 3 ms)\n", prefill_ms);
  }

  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_model: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f,
                 "{\"device\": \"%s\", \"ceilings\": {\"gemm_bf16_8192_tflops\": %.1f, \"copy_gbs\": %.1f},\n"
                 " \"layer_d1024_b8_t2048\": {\"fwd_ms\": %.4f, \"fwd_bwd_ms\": %.4f},\n"
                 " \"train_24x768_v50280_b8_t2048\": {\"step_ms\": %.3f, \"tokens_per_s\": %.0f, \"mfu\": %.4f, "
                 "\"gemm_flops_per_token_train\": %.0f},\n"
                 " \"decode_ms_per_token\": {\"batch1\": %.4f, \"batch64\": %.4f, \"batch1_gemv\": %.4f}, "
                 "\"prefill_2048_ms\": %.4f}\n",
                 prop.name, ceil.gemm_tflops, ceil.copy_gbs, layer_f, layer_fb, step_ms, tok_s, mfu, gemm_flops_tok,
                 dec_ms[0], dec_ms[1], dec_gemv_ms, prefill_ms);
    std::fclose(f);
  }
  return 0;
}
