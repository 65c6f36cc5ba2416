// bench_moe: the MoE mixers on CUDA (issue 11's table), shipped code only, bf16 activations:
//   1. one layer, D 1024, B 8, T 2048, forward and forward+backward: dense Mamba, RoM (E 8,
//      top-1), Swimba (E 8, top-2, normalize_topk) and the separated MoE-SSM (E 4, top-2), each
//      as the difference between a 2-layer and a 1-layer model of that mixer with a 16-token
//      vocabulary (embedding, head and loss cancel); ratio to our dense layer;
//   2. grouped GEMM over 16384 routed tokens, E 8, top-1 (uniform routing, ≈ 2048 rows per
//      expert) at RoM's in_proj (Kd 1024 → N 4096) and out_proj (2048 → 1024) shapes, forward
//      and backward, against one dense GEMM of the same FLOPs measured in the same run;
//   3. a training step of the 24 × D 768, V 50280 model at B 8 × T 2048, dense and with every
//      mixer RoM (E 8, top-1): tokens/s, the ratio, and GPU memory in use after the step;
//   4. decode at batch 1 (CUDA graphs, device sampling) of both models: ms/token and the ratio.
// The peer (PyTorch RoM/Swimba in ../shared/peer) is measured in the same lease by its own
// script; bench/moe_vs_peer.py prints both side by side.
// Usage: bench_moe [--json FILE] [--quick]
//        bench_moe --profile dense|rom|swimba|separated: one fwd+bwd of a 1-layer model of that
//        mixer between cudaProfilerStart/Stop, for `ncu --profile-from-start off` (per-kernel
//        times; tools/ncu_summary.py sums them by kernel).
#include <cuda_profiler_api.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "infer/cuda/cuda_generator.h"
#include "model/language_model.h"
#include "ops/grouped_matmul.h"
#include "ops/moe_permute.h"
#include "train/train_backend.h"

using namespace moessm;
using bf16 = __nv_bfloat16;
using bench::config;
using bench::ids_of;
using bench::median_ms;

namespace {

const char* kRom = R"({"type": "rom", "n_experts": 8, "top_k": 1})";
const char* kSwimba = R"({"type": "swimba", "n_experts": 8, "top_k": 2, "normalize_topk": true})";
const char* kSeparated = R"({"type": "separated_moe_ssm", "n_experts": 4, "top_k": 2})";

// fwd and fwd+bwd ms of an L-layer model of `mixer` (16-token vocabulary, B 8 × T 2048).
std::pair<double, double> model_ms(const std::string& mixer, idx_t L, int reps) {
  return bench::model_ms(config(1024, L, 16, mixer), 8, 2048, reps);
}

struct LayerTimes {
  double fwd = 0, fwd_bwd = 0;
};
LayerTimes layer_ms(const std::string& mixer, int reps) {
  const auto a = model_ms(mixer, 1, reps), b = model_ms(mixer, 2, reps);
  return {b.first - a.first, b.second - a.second};
}

struct GemmRate {
  double grouped_fwd_ms = 0, dense_fwd_ms = 0, grouped_bwd_ms = 0, dense_bwd_ms = 0, flops = 0;
  double serial_fwd_ms = 0, serial_bwd_ms = 0;  // the experts' GEMMs one after another on one stream
};
// Grouped vs dense GEMM at one shape: M routed rows (top-1, uniform over E experts).
GemmRate gemm_rate(idx_t M, idx_t E, idx_t Kd, idx_t N, int reps) {
  std::vector<int32_t> idx = ids_of(size_t(M), int32_t(E), 11), offsets(static_cast<size_t>(E + 1)), rows(static_cast<size_t>(M));
  cpu::moe_permute_plan(offsets.data(), rows.data(), idx.data(), M, E, 1);
  DeviceBuffer off = DeviceBuffer::from_host(offsets);
  DeviceBuffer in(size_t(M * Kd) * sizeof(bf16)), out(size_t(M * N) * sizeof(bf16)), w(size_t(E * N * Kd) * sizeof(bf16)),
      din(size_t(M * Kd) * sizeof(bf16)), dw(size_t(E * N * Kd) * sizeof(float));
  bench::fill_bf16(in.as<bf16>(), size_t(M * Kd), -1, 1, 1);
  bench::fill_bf16(out.as<bf16>(), size_t(M * N), -1, 1, 2);
  bench::fill_bf16(w.as<bf16>(), size_t(E * N * Kd), -0.05f, 0.05f, 3);
  dw.fill_bytes(0);
  GemmRate r;
  r.flops = 2.0 * double(M) * double(Kd) * double(N);
  auto grouped_fwd = [&] {
    cuda::grouped_matmul_forward<bf16>(out.as<bf16>(), N, in.as<bf16>(), Kd, w.as<bf16>(), N * Kd, off.as<int32_t>(),
                                       E, N, Kd, M, offsets.data(), nullptr);
  };
  auto grouped_bwd = [&] {
    cuda::grouped_matmul_backward<bf16>(din.as<bf16>(), Kd, dw.as<float>(), out.as<bf16>(), N, in.as<bf16>(), Kd,
                                        w.as<bf16>(), N * Kd, off.as<int32_t>(), E, N, Kd, false, offsets.data(),
                                        nullptr);
  };
  cuda::set_grouped_matmul_streams(1);
  r.serial_fwd_ms = bench::time_ms(grouped_fwd, 3, reps);
  r.serial_bwd_ms = bench::time_ms(grouped_bwd, 3, reps);
  cuda::set_grouped_matmul_streams(4);
  r.grouped_fwd_ms = bench::time_ms(grouped_fwd, 3, reps);
  r.dense_fwd_ms = bench::time_ms([&] {
    cuda::matmul_forward<bf16>(out.as<bf16>(), N, in.as<bf16>(), Kd, w.as<bf16>(), nullptr, M, N, Kd, false, nullptr);
  }, 3, reps);
  r.grouped_bwd_ms = bench::time_ms(grouped_bwd, 3, reps);
  r.dense_bwd_ms = bench::time_ms([&] {
    cuda::matmul_backward<bf16>(din.as<bf16>(), Kd, dw.as<float>(), nullptr, out.as<bf16>(), N, in.as<bf16>(), Kd,
                                w.as<bf16>(), M, N, Kd, false, nullptr);
  }, 3, reps);
  return r;
}

// --profile: warm up, then one profiled fwd+bwd of a 1-layer model of the named mixer.
int profile(const std::string& which) {
  const std::string mixer = which == "dense" ? "" : which == "rom" ? kRom : which == "swimba" ? kSwimba
                          : which == "separated" ? kSeparated : "?";
  if (mixer == "?") {
    std::fprintf(stderr, "bench_moe --profile: expected dense, rom, swimba or separated, found '%s'\n", which.c_str());
    return 2;
  }
  Model<CudaBackend<bf16>> m(config(1024, 1, 16, mixer));
  m.init(1);
  const idx_t B = 8, T = 2048;
  m.prepare(B, T, true);
  const auto ids = ids_of(size_t(B * T), 16, 3), tg = ids_of(size_t(B * T), 16, 4);
  for (int i = 0; i < 3; ++i) {
    m.zero_grads();
    m.loss(ids.data(), tg.data(), B, T, true);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaProfilerStart());
  m.zero_grads();
  m.loss(ids.data(), tg.data(), B, T, true);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaProfilerStop());
  std::printf("profiled one fwd+bwd of a 1-layer %s model, D 1024, B 8, T 2048\n", which.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--profile") return profile(argv[i + 1]);
  const std::string json = bench::json_path(argc, argv);
  const bool quick = bench::has_flag(argc, argv, "--quick");
  const int reps = quick ? 3 : 10;
  const bench::Ceilings ceil = bench::measure_ceilings();
  std::printf("device: %s\nceilings: cuBLASLt bf16 8192^3 %.0f TFLOP/s; device copy %.0f GB/s\n",
              bench::device_name().c_str(), ceil.gemm_tflops, ceil.copy_gbs);

  // 1. layers
  const LayerTimes dense = layer_ms("", reps), rom = layer_ms(kRom, reps), swimba = layer_ms(kSwimba, reps),
                   sep = layer_ms(kSeparated, reps);
  cuda::set_grouped_matmul_streams(1);
  const LayerTimes rom_one_stream = layer_ms(kRom, reps);
  cuda::set_grouped_matmul_streams(4);
  std::printf("\n[layer] D 1024, B 8, T 2048, bf16 (fwd / fwd+bwd ms, fwd+bwd ratio to our dense)\n");
  const std::pair<const char*, LayerTimes> layers[] = {
      {"dense Mamba", dense}, {"RoM E8 top-1", rom}, {"Swimba E8 top-2 normalize", swimba}, {"separated E4 top-2", sep}};
  for (const auto& l : layers)
    std::printf("  %-28s %7.3f / %7.3f ms   %.3fx dense\n", l.first, l.second.fwd, l.second.fwd_bwd,
                l.second.fwd_bwd / dense.fwd_bwd);
  std::printf("  %-28s %7.3f / %7.3f ms   %.3fx dense\n", "RoM, expert GEMMs 1 stream", rom_one_stream.fwd,
              rom_one_stream.fwd_bwd, rom_one_stream.fwd_bwd / dense.fwd_bwd);

  // 2. grouped GEMM
  const GemmRate in_proj = gemm_rate(16384, 8, 1024, 4096, reps * 2), out_proj = gemm_rate(16384, 8, 2048, 1024, reps * 2);
  std::printf("\n[grouped GEMM] 16384 tokens, E 8, top-1 (~2048 rows per expert), bf16, host offsets (as the router\n"
              "  gives them), experts over 4 streams (one stream in brackets), vs one dense GEMM of equal FLOPs\n");
  const std::pair<const char*, GemmRate> gemms[] = {{"in_proj  1024 -> 4096", in_proj}, {"out_proj 2048 -> 1024", out_proj}};
  for (const auto& g : gemms) {
    const GemmRate& r = g.second;
    std::printf("  %-22s fwd %6.1f TFLOP/s (dense %6.1f: %5.1f%% [%5.1f%%])   bwd %6.1f TFLOP/s (dense %6.1f: %5.1f%% "
                "[%5.1f%%])\n", g.first, r.flops / r.grouped_fwd_ms / 1e9, r.flops / r.dense_fwd_ms / 1e9,
                100 * r.dense_fwd_ms / r.grouped_fwd_ms, 100 * r.dense_fwd_ms / r.serial_fwd_ms,
                2 * r.flops / r.grouped_bwd_ms / 1e9, 2 * r.flops / r.dense_bwd_ms / 1e9,
                100 * r.dense_bwd_ms / r.grouped_bwd_ms, 100 * r.dense_bwd_ms / r.serial_bwd_ms);
  }

  // 3. training
  const bench::TrainStep td = bench::train_step(config(768, 24, 50280), 8, 2048, reps),
                         tr = bench::train_step(config(768, 24, 50280, kRom), 8, 2048, reps);
  std::printf("\n[train] 24 x D768, V 50280, B 8 x T 2048: dense %.0f tokens/s (%.1f ms, %.1f GiB); every mixer RoM E8 "
              "top-1 %.0f tokens/s (%.1f ms, %.1f GiB): %.3fx dense\n",
              td.tokens_per_s, td.step_ms, td.mem_gib, tr.tokens_per_s, tr.step_ms, tr.mem_gib,
              tr.tokens_per_s / td.tokens_per_s);

  // 4. decode
  auto decode_ms = [&](const std::string& mixer) {
    Model<CudaBackend<bf16>> m(config(768, 24, 50280, mixer));
    m.init(1);
    return bench::decode(m, 1, quick ? 64 : 256).ms_per_token;
  };
  const double dd = decode_ms(""), dr = decode_ms(kRom);
  std::printf("[decode] batch 1, 24 x D768: dense %.3f ms/token, RoM %.3f ms/token: %.3fx dense\n", dd, dr, dr / dd);

  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_moe: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f, "{\"device\": \"%s\", \"ceilings\": {\"gemm_bf16_8192_tflops\": %.1f, \"copy_gbs\": %.1f},\n",
                 bench::device_name().c_str(), ceil.gemm_tflops, ceil.copy_gbs);
    std::fprintf(f, " \"layer_d1024_b8_t2048\": {");
    const char* keys[] = {"dense", "rom_e8_k1", "swimba_e8_k2", "separated_e4_k2"};
    for (int i = 0; i < 4; ++i)
      std::fprintf(f, "%s\"%s\": {\"fwd_ms\": %.4f, \"fwd_bwd_ms\": %.4f}", i ? ", " : "", keys[i], layers[i].second.fwd,
                   layers[i].second.fwd_bwd);
    std::fprintf(f, "},\n \"grouped_gemm_16384_e8\": {");
    const char* gkeys[] = {"in_proj", "out_proj"};
    for (int i = 0; i < 2; ++i) {
      const GemmRate& r = gemms[i].second;
      std::fprintf(f, "%s\"%s\": {\"grouped_fwd_tflops\": %.1f, \"dense_fwd_tflops\": %.1f, \"grouped_bwd_tflops\": %.1f, "
                      "\"dense_bwd_tflops\": %.1f, \"one_stream_fwd_tflops\": %.1f, \"one_stream_bwd_tflops\": %.1f}",
                   i ? ", " : "", gkeys[i], r.flops / r.grouped_fwd_ms / 1e9, r.flops / r.dense_fwd_ms / 1e9,
                   2 * r.flops / r.grouped_bwd_ms / 1e9, 2 * r.flops / r.dense_bwd_ms / 1e9,
                   r.flops / r.serial_fwd_ms / 1e9, 2 * r.flops / r.serial_bwd_ms / 1e9);
    }
    std::fprintf(f, "},\n \"train_24x768_v50280_b8_t2048\": {\"dense\": {\"tokens_per_s\": %.0f, \"mem_gib\": %.2f}, "
                    "\"rom_e8_k1\": {\"tokens_per_s\": %.0f, \"mem_gib\": %.2f}},\n",
                 td.tokens_per_s, td.mem_gib, tr.tokens_per_s, tr.mem_gib);
    std::fprintf(f, " \"decode_b1_ms_per_token\": {\"dense\": %.4f, \"rom_e8_k1\": %.4f}}\n", dd, dr);
    std::fclose(f);
  }
  return 0;
}
