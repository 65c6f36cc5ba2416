// bench_attention: the CUDA attention kernels (ops/attention.h) that the `attention` layer runs,
// bf16, 16 heads × 64, B·T = 16k tokens: T 2048 (B 8) and T 8192 (B 2) with full causal
// attention, T 8192 with Samba's 2048-token sliding window, and 8 heads × 128 at T 2048 (all on
// the tensor-core kernels; the forward also with 16 query rows per warp, the default taking 32
// at head sizes up to 64). Median CUDA-event times after
// warm-up of the forward and of forward + backward (delta, dk/dv, dq), with TFLOP/s counting only
// the visible (causal / windowed) scores: forward 4·hd per (head, query, visible key), backward
// 2.5× that (five products to the forward's two, flash-attention's convention), and the ratio to
// the cuBLASLt bf16 GEMM ceiling measured in the same run.
// Then issue 15's stack figures: a Samba-style 130M-class model (samba_config below: 24 layers of
// (mamba, mlp, attention with a 2048-token window, mlp) at D 768, V 50280: 132.0M parameters as measured) and
// the dense Mamba model of the same width and depth: a training step at B 4 × T 4096 (Samba's
// training context; the window is what attention pays for) in tokens/s, and decode ms/token at
// batch 1 (CUDA graphs, the 2048-slot ring-buffer KV cache).
// Usage: bench_attention [--json FILE] [--quick]   (bench/attention_vs_sdpa.py compares with torch SDPA)
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "backend/cuda_backend.h"
#include "infer/cuda/cuda_generator.h"
#include "model/language_model.h"
#include "ops/attention.h"
#include "ops/cuda/attention_mma.cuh"
#include "train/train_backend.h"

using namespace moessm;
using bf16 = __nv_bfloat16;

namespace {
struct Case {
  idx_t B, T, H, Hkv, hd, W;
};
struct Row {
  Case c;
  double fwd_ms, fwd_tflops, fb_ms, fb_tflops;
  double fwd16_ms;  // the tensor-core forward with 16 query rows per warp (the default takes 32 at hd <= 64)
};
// Forward FLOPs: 4·hd per (batch, head, query, visible key).
double forward_flops(const Case& c) {
  return 4.0 * double(c.hd) * double(c.B * c.H) * attention_mean_keys(double(c.T), double(c.W)) * double(c.T);
}

// Samba's layer pattern (arXiv 2406.07522) at the 130M class: (mamba, SwiGLU mlp of 2048,
// sliding-window attention of 12 heads × 64 with a 2048-token window, mlp) × 6, D 768.
ModelConfig samba_config() {
  Json layers = Json::array();
  for (int g = 0; g < 6; ++g) {
    layers.push_back(Json::parse(R"({"type": "mamba"})"));
    layers.push_back(Json::parse(R"({"type": "mlp", "d_ff": 2048})"));
    layers.push_back(Json::parse(R"({"type": "attention", "n_heads": 12, "window": 2048, "rope_theta": 10000.0})"));
    layers.push_back(Json::parse(R"({"type": "mlp", "d_ff": 2048})"));
  }
  Json j = Json::object();
  j.set("d_model", 768);
  j.set("n_layer", 24);
  j.set("vocab_size", 50280);
  j.set("layers", layers);
  return ModelConfig::from_json(j, "bench_attention samba_config");
}
}  // namespace

int main(int argc, char** argv) {
  if (!bench::have_gpu()) {
    std::printf("bench_attention: no CUDA device present; skipped\n");
    return 0;
  }
  const std::string json = bench::json_path(argc, argv);
  const bool quick = bench::has_flag(argc, argv, "--quick");
  const bench::Ceilings ceil = bench::measure_ceilings();
  const std::vector<Case> cases = {{8, 2048, 16, 16, 64, 0}, {2, 8192, 16, 16, 64, 0}, {2, 8192, 16, 16, 64, 2048},
                                   {8, 2048, 8, 8, 128, 0}};
  std::vector<Row> rows;
  for (const Case& c : cases) {
    const idx_t M = c.B * c.T, Y = c.H * c.hd, KV = c.Hkv * c.hd, row = Y + 2 * KV;
    DeviceBuffer qkv(size_t(M * row) * 2), out(size_t(M * Y) * 2), dout(size_t(M * Y) * 2), dqkv(size_t(M * row) * 2),
        lse(size_t(c.B * c.H * c.T) * 4), delta(size_t(c.B * c.H * c.T) * 4);
    bench::fill_bf16(qkv.as<bf16>(), size_t(M * row), -1, 1, 1);
    bench::fill_bf16(dout.as<bf16>(), size_t(M * Y), -1, 1, 2);
    AttentionParams<bf16, float> p;
    p.q = qkv.as<bf16>();
    p.k = p.q + Y;
    p.v = p.q + Y + KV;
    p.q_ld = p.k_ld = p.v_ld = row;
    p.B = c.B, p.T = c.T, p.H = c.H, p.Hkv = c.Hkv, p.hd = c.hd, p.window = c.W;
    auto fwd = [&] { cuda::attention_forward<bf16>(out.as<bf16>(), Y, lse.as<float>(), p, nullptr); };
    auto bwd = [&] {
      cuda::attention_backward<bf16>(dqkv.as<bf16>(), row, dqkv.as<bf16>() + Y, row, dqkv.as<bf16>() + Y + KV, row,
                                     delta.as<float>(), dout.as<bf16>(), Y, out.as<bf16>(), Y, lse.as<float>(), p,
                                     nullptr);
    };
    const double f_ms = bench::time_ms(fwd, 2, 10);
    const double f16_ms = bench::time_ms(
        [&] { cuda::attention_mma::forward(out.as<bf16>(), Y, lse.as<float>(), p, nullptr, 16); }, 2, 10);
    const double fb_ms = bench::time_ms([&] { fwd(); bwd(); }, 2, 10);
    const double fl = forward_flops(c);
    rows.push_back({c, f_ms, fl / (f_ms * 1e-3) / 1e12, fb_ms, 3.5 * fl / (fb_ms * 1e-3) / 1e12, f16_ms});
  }
  std::printf("bench_attention on %s: bf16 on the tensor-core kernels (attention_mma.cu: mma.sync m16n8k16, "
              "tiles of 64 keys, online softmax in fp32)\n", bench::device_name().c_str());
  std::printf("%-34s %10s %9s %7s %12s %9s %7s %14s\n", "case", "fwd ms", "TFLOP/s", "ceil%", "fwd+bwd ms", "TFLOP/s",
              "ceil%", "fwd 16 rows/w");
  for (const Row& r : rows) {
    char name[96];
    std::snprintf(name, sizeof name, "B %lld T %lld H %lld×%lld %s", (long long)r.c.B, (long long)r.c.T,
                  (long long)r.c.H, (long long)r.c.hd,
                  r.c.W ? ("window " + std::to_string(r.c.W)).c_str() : "causal");
    std::printf("%-34s %10.3f %9.1f %6.1f%% %12.3f %9.1f %6.1f%% %11.3f ms\n", name, r.fwd_ms, r.fwd_tflops,
                100 * r.fwd_tflops / ceil.gemm_tflops, r.fb_ms, r.fb_tflops, 100 * r.fb_tflops / ceil.gemm_tflops,
                r.fwd16_ms);
  }
  std::printf("ceiling: cuBLASLt bf16 8192^3 %.0f TFLOP/s (FLOPs count visible keys only; fwd+bwd = 3.5x fwd)\n",
              ceil.gemm_tflops);

  // The Samba-style stack beside the dense Mamba model of the same width and depth.
  const int reps = quick ? 3 : 7;
  const ModelConfig samba = samba_config(), dense = bench::config(768, 24, 50280);
  const bench::TrainStep ts = bench::train_step(samba, 4, 4096, reps), td = bench::train_step(dense, 4, 4096, reps);
  auto decode_ms = [&](const ModelConfig& cfg) {
    Model<CudaBackend<bf16>> m(cfg);
    m.init(1);
    return bench::decode(m, 1, quick ? 64 : 256).ms_per_token;
  };
  const double ds = decode_ms(samba), dd = decode_ms(dense);
  std::printf("\n[samba] 24 layers (mamba, mlp 2048, attention 12x64 window 2048, mlp) x 6, D 768, V 50280: "
              "%.1fM parameters\n", double(ts.counts.total_params) / 1e6);
  std::printf("[train] B 4 x T 4096: Samba-style %.0f tokens/s (%.1f ms, %.1f GiB); dense Mamba 24 x 768 %.0f tokens/s "
              "(%.1f ms): %.3fx dense\n", ts.tokens_per_s, ts.step_ms, ts.mem_gib, td.tokens_per_s, td.step_ms,
              ts.tokens_per_s / td.tokens_per_s);
  std::printf("[decode] batch 1: Samba-style %.3f ms/token, dense %.3f ms/token: %.3fx dense\n", ds, dd, ds / dd);
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    CHECK(f, "bench_attention: cannot write ", json);
    std::fprintf(f, "{\"device\": \"%s\", \"ceilings\": {\"gemm_bf16_8192_tflops\": %.1f}, \"cases\": [\n",
                 bench::device_name().c_str(), ceil.gemm_tflops);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "  {\"B\": %lld, \"T\": %lld, \"H\": %lld, \"Hkv\": %lld, \"hd\": %lld, \"window\": %lld, "
                   "\"fwd_ms\": %.4f, \"fwd_tflops\": %.2f, \"fwd_bwd_ms\": %.4f, \"fwd_bwd_tflops\": %.2f, "
                   "\"fwd_16rows_ms\": %.4f}%s\n",
                   (long long)r.c.B, (long long)r.c.T, (long long)r.c.H, (long long)r.c.Hkv, (long long)r.c.hd,
                   (long long)r.c.W, r.fwd_ms, r.fwd_tflops, r.fb_ms, r.fb_tflops, r.fwd16_ms, i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "],\n \"samba_24x768\": {\"params\": %lld, \"train_b4_t4096_tokens_per_s\": %.0f, "
                    "\"train_mem_gib\": %.2f, \"decode_b1_ms_per_token\": %.4f},\n",
                 (long long)ts.counts.total_params, ts.tokens_per_s, ts.mem_gib, ds);
    std::fprintf(f, " \"dense_24x768\": {\"train_b4_t4096_tokens_per_s\": %.0f, \"decode_b1_ms_per_token\": %.4f}}\n",
                 td.tokens_per_s, dd);
    std::fclose(f);
    std::printf("wrote %s\n", json.c_str());
  }
  return 0;
}
