// bench_ops: the other CUDA ops of the dense model at the layer / model sizes
// (D 1024 layer at B 8 × T 2048; the 24-layer D 768 V 50280 model's head and optimiser):
// cuBLASLt bf16 GEMMs of the Mamba layer (in_proj, x_proj, out_proj; forward and the two
// backward products), causal conv1d + SiLU, fused rmsnorm + residual, the fused cross-entropy
// over V 50280, AdamW and the gradient norm. Median CUDA-event times after warm-up, achieved
// TFLOP/s (GEMMs) or GB/s (essential bytes), with the ceilings measured in the same run.
// Usage: bench_ops [--json FILE]
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "ops/adamw.h"
#include "ops/causal_conv1d.h"
#include "ops/cross_entropy.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"

using namespace moessm;
using bf16 = __nv_bfloat16;

namespace {
struct Row {
  std::string name;
  double ms, rate;
  const char* unit;
};
}  // namespace

int main(int argc, char** argv) {
  if (!bench::have_gpu()) {
    std::printf("bench_ops: no CUDA device present; skipped\n");
    return 0;
  }
  const std::string json = bench::json_path(argc, argv);
  const bench::Ceilings ceil = bench::measure_ceilings();
  std::vector<Row> rows;
  const idx_t B = 8, T = 2048, D = 1024, Di = 2048, N = 16, R = 64, M = B * T;

  // GEMMs of one Mamba layer (bf16 operands, fp32 accumulation).
  {
    struct G { const char* name; idx_t n, k; };
    const G gs[] = {{"in_proj  [M,2Di]x[D]", 2 * Di, D}, {"x_proj   [M,R+2N]x[Di]", R + 2 * N, Di}, {"out_proj [M,D]x[Di]", D, Di}};
    for (const G& g : gs) {
      DeviceBuffer in(static_cast<size_t>(M * g.k) * 2), w(static_cast<size_t>(g.n * g.k) * 2), out(static_cast<size_t>(M * g.n) * 2), dw(static_cast<size_t>(g.n * g.k) * 4);
      bench::fill_bf16(in.as<bf16>(), static_cast<size_t>(M * g.k), -1, 1, 1);
      bench::fill_bf16(w.as<bf16>(), static_cast<size_t>(g.n * g.k), -1, 1, 2);
      bench::fill_bf16(out.as<bf16>(), static_cast<size_t>(M * g.n), -1, 1, 3);
      const double flops = 2.0 * double(M) * g.n * g.k;
      double ms = bench::time_ms([&] { cuda::matmul_forward<bf16>(out.as<bf16>(), g.n, in.as<bf16>(), g.k, w.as<bf16>(), nullptr, M, g.n, g.k, false, nullptr); });
      rows.push_back({std::string(g.name) + " fwd", ms, flops / (ms * 1e-3) / 1e12, "TFLOP/s"});
      ms = bench::time_ms([&] { cuda::matmul_backward<bf16>(in.as<bf16>(), g.k, dw.as<float>(), nullptr, out.as<bf16>(), g.n, in.as<bf16>(), g.k, w.as<bf16>(), M, g.n, g.k, false, nullptr); });
      rows.push_back({std::string(g.name) + " bwd", ms, 2 * flops / (ms * 1e-3) / 1e12, "TFLOP/s"});
    }
  }
  // conv1d + SiLU over x inside the in_proj output (token stride 2Di).
  {
    DeviceBuffer xz(static_cast<size_t>(M * 2 * Di) * 2), out(static_cast<size_t>(M * Di) * 2), dx(static_cast<size_t>(M * Di) * 2), w(static_cast<size_t>(Di * 4) * 4), b(static_cast<size_t>(Di) * 4),
        dw(static_cast<size_t>(Di * 4) * 4), db(static_cast<size_t>(Di) * 4);
    bench::fill_bf16(xz.as<bf16>(), static_cast<size_t>(M * 2 * Di), -1, 1, 4);
    bench::fill_f32(w.as<float>(), static_cast<size_t>(Di * 4), -0.5, 0.5, 5);
    bench::fill_f32(b.as<float>(), static_cast<size_t>(Di), -0.5, 0.5, 6);
    const double bytes = double(M * Di) * 2 * 2;
    double ms = bench::time_ms([&] { cuda::causal_conv1d_forward<bf16>(out.as<bf16>(), Di, nullptr, xz.as<bf16>(), 2 * Di, nullptr, nullptr, w.as<float>(), b.as<float>(), B, T, Di, 4, true, nullptr); });
    rows.push_back({"conv1d+silu fwd", ms, bytes / (ms * 1e-3) / 1e9, "GB/s"});
    ms = bench::time_ms([&] { cuda::causal_conv1d_backward<bf16>(dx.as<bf16>(), Di, dw.as<float>(), db.as<float>(), out.as<bf16>(), Di, xz.as<bf16>(), 2 * Di, nullptr, nullptr, w.as<float>(), b.as<float>(), B, T, Di, 4, true, nullptr); });
    rows.push_back({"conv1d+silu bwd", ms, 1.5 * bytes / (ms * 1e-3) / 1e9, "GB/s"});
  }
  // rmsnorm fused with the residual add (fp32 residual, bf16 output / delta).
  {
    DeviceBuffer h(static_cast<size_t>(M * D) * 4), delta(static_cast<size_t>(M * D) * 2), out(static_cast<size_t>(M * D) * 2), rs(static_cast<size_t>(M) * 4), w(static_cast<size_t>(D) * 4), dw(static_cast<size_t>(D) * 4);
    bench::fill_f32(h.as<float>(), static_cast<size_t>(M * D), -1, 1, 7);
    bench::fill_bf16(delta.as<bf16>(), static_cast<size_t>(M * D), -1e-3f, 1e-3f, 8);
    bench::fill_f32(w.as<float>(), static_cast<size_t>(D), 0.5, 1.5, 9);
    double ms = bench::time_ms([&] { cuda::rmsnorm_add_forward<bf16>(out.as<bf16>(), rs.as<float>(), h.as<float>(), delta.as<bf16>(), w.as<float>(), M, D, 1e-5, nullptr); });
    rows.push_back({"rmsnorm+residual fwd", ms, double(M * D) * (4 + 2 + 4 + 2) / (ms * 1e-3) / 1e9, "GB/s"});
    ms = bench::time_ms([&] { cuda::rmsnorm_backward<bf16>(h.as<float>(), dw.as<float>(), out.as<bf16>(), h.as<float>(), w.as<float>(), rs.as<float>(), M, D, true, nullptr); });
    rows.push_back({"rmsnorm bwd (+dw)", ms, double(M * D) * (2 + 4 + 4 + 4) / (ms * 1e-3) / 1e9, "GB/s"});
  }
  // Fused cross-entropy over V 50280, bf16 logits in place, rows B·T.
  {
    const idx_t V = 50280;
    DeviceBuffer logits(static_cast<size_t>(M * V) * 2), loss(static_cast<size_t>(M) * 4), lse(static_cast<size_t>(M) * 4);
    std::vector<int32_t> tg(static_cast<size_t>(M));
    for (idx_t i = 0; i < M; ++i) tg[static_cast<size_t>(i)] = int32_t((i * 7919) % V);
    DeviceBuffer t = DeviceBuffer::from_host(tg);
    bench::fill_bf16(logits.as<bf16>(), static_cast<size_t>(M * V), -4, 4, 10);
    const double ms = bench::time_ms([&] { cuda::cross_entropy_forward_backward<bf16>(loss.as<float>(), lse.as<float>(), logits.as<bf16>(), logits.as<bf16>(), t.as<int32_t>(), 1.f / float(M), M, V, nullptr); }, 1, 5);
    rows.push_back({"cross-entropy fused V50280", ms, double(M * V) * 2 * 2 / (ms * 1e-3) / 1e9, "GB/s"});
  }
  // AdamW and gradient norm over 130M parameters.
  {
    const idx_t n = 130000000;
    DeviceBuffer p(static_cast<size_t>(n) * 4), m(static_cast<size_t>(n) * 4), v(static_cast<size_t>(n) * 4), g(static_cast<size_t>(n) * 4), p16(static_cast<size_t>(n) * 2), nsq(8), sc(4);
    bench::fill_f32(p.as<float>(), static_cast<size_t>(n), -1, 1, 11);
    bench::fill_f32(g.as<float>(), static_cast<size_t>(n), -1, 1, 12);
    m.fill_bytes(0);
    v.fill_bytes(0);
    double ms = bench::time_ms([&] { cuda::grad_norm_squared(nsq.as<double>(), g.as<float>(), n, nullptr); });
    rows.push_back({"grad norm 130M", ms, double(n) * 4 / (ms * 1e-3) / 1e9, "GB/s"});
    cuda::clip_scale(sc.as<float>(), nsq.as<double>(), 1.0, 1.0, nullptr);
    ms = bench::time_ms([&] { cuda::adamw_update(p.as<float>(), p16.as<bf16>(), m.as<float>(), v.as<float>(), g.as<float>(), n, 1e-4, 0.9, 0.95, 1e-8, 0.1, 10, 1.0, sc.as<float>(), nullptr); });
    rows.push_back({"adamw 130M (+bf16 copy)", ms, double(n) * (4 * 4 + 3 * 4 + 2) / (ms * 1e-3) / 1e9, "GB/s"});
  }

  std::printf("ceilings: cuBLASLt bf16 8192^3 %.0f TFLOP/s; device copy %.0f GB/s (read+write)\n", ceil.gemm_tflops, ceil.copy_gbs);
  std::printf("%-30s %10s %10s\n", "op (B8 T2048 D1024 Di2048)", "ms", "rate");
  for (const Row& r : rows) std::printf("%-30s %10.3f %8.0f %s\n", r.name.c_str(), r.ms, r.rate, r.unit);
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (!f) return 1;
    std::fprintf(f, "{\"ceilings\": {\"gemm_bf16_8192_tflops\": %.1f, \"copy_gbs\": %.1f}, \"ops\": [\n", ceil.gemm_tflops, ceil.copy_gbs);
    for (size_t i = 0; i < rows.size(); ++i)
      std::fprintf(f, "  {\"name\": \"%s\", \"ms\": %.4f, \"rate\": %.1f, \"unit\": \"%s\"}%s\n", rows[i].name.c_str(), rows[i].ms,
                   rows[i].rate, rows[i].unit, i + 1 < rows.size() ? "," : "");
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}
