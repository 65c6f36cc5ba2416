// bench_scan: the CUDA selective scan (the shipped kernel, src/ops/cuda/selective_scan.cu),
// forward and forward+backward, bf16 u/Δ/B/C/z and fp32 A/D/Δ-bias, at the two sizes
// (B 8, Di 2048, T 2048, N 16 and B 2, Di 2048, T 8192, N 16), with the ceilings measured in the
// same run (cuBLASLt bf16 8192³ TFLOP/s; device copy GB/s counting read + write).
// Times are medians of CUDA-event-timed runs after warm-up. GB/s counts the essential bytes
// (every token-stream input read once, every output written once; chunk states extra, listed).
// Rows for each kernel-lab variant: the automatic choice first (forward 4 states per lane,
// backward 2 at N <= 64), then both directions forced to 2, then to 4, then
// forced time-segment counts (1 = the sequential scan; 0 in the table = automatic). Reference: mamba_ssm's
// selective_scan_fn on an H100 of this workplace (issue 7). Usage: bench_scan [--json FILE]
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "ops/selective_scan.h"

using namespace moessm;
using bf16 = __nv_bfloat16;

namespace {

struct Size {
  idx_t B, Di, T, N;
  double ref_fwd_ms, ref_fb_ms;  // mamba_ssm on the H100 (issue 7)
};

struct Row {
  std::string name, config;
  idx_t B, Di, T, N;
  int npt, segments;
  double fwd_ms, bwd_ms, fb_ms, fwd_gbs, fb_gbs, ref_fwd_ms, ref_fb_ms, fwd_bytes, fb_bytes, state_bytes;
};

Row run(const Size& s, int npt, int segments) {
  const idx_t B = s.B, T = s.T, Di = s.Di, N = s.N;
  const size_t tok = static_cast<size_t>(B * T * Di), bc = static_cast<size_t>(B * T * N);
  const size_t st = static_cast<size_t>(B * scan_num_chunks(T) * Di * N);
  DeviceBuffer u(tok * 2), dl(tok * 2), z(tok * 2), out(tok * 2), Bm(bc * 2), Cm(bc * 2);
  DeviceBuffer dout(tok * 2), du(tok * 2), ddl(tok * 2), dz(tok * 2), dB(bc * 2), dC(bc * 2);
  DeviceBuffer A(static_cast<size_t>(Di * N) * 4), D(static_cast<size_t>(Di) * 4), bias(static_cast<size_t>(Di) * 4), cs(st * 4);
  DeviceBuffer dA(static_cast<size_t>(Di * N) * 4), dD(static_cast<size_t>(Di) * 4), dbias(static_cast<size_t>(Di) * 4), hl(static_cast<size_t>(B * Di * N) * 4);
  bench::fill_bf16(u.as<bf16>(), tok, -1, 1, 11);
  bench::fill_bf16(dl.as<bf16>(), tok, -1, 1, 12);
  bench::fill_bf16(z.as<bf16>(), tok, -2, 2, 13);
  bench::fill_bf16(dout.as<bf16>(), tok, -1, 1, 14);
  bench::fill_bf16(Bm.as<bf16>(), bc, -1, 1, 15);
  bench::fill_bf16(Cm.as<bf16>(), bc, -1, 1, 16);
  {  // mamba_ssm initialisation: A = -(n+1), D = 1, Δ-bias = softplus⁻¹(dt), dt ∈ [1e-3, 1e-1]
    std::vector<float> a(static_cast<size_t>(Di * N)), d(static_cast<size_t>(Di), 1.f), b(static_cast<size_t>(Di));
    for (idx_t c = 0; c < Di; ++c) {
      for (idx_t n = 0; n < N; ++n) a[static_cast<size_t>(c * N + n)] = -float(n + 1);
      const double dt = std::exp(std::log(1e-3) + (std::log(1e-1) - std::log(1e-3)) * double((c * 7919) % Di) / double(Di));
      b[static_cast<size_t>(c)] = float(dt + std::log(-std::expm1(-dt)));
    }
    A.upload(a);
    D.upload(d);
    bias.upload(b);
  }
  cuda::ScanParamsT<bf16> p;
  p.B = B; p.T_ = T; p.Di = Di; p.N = N;
  p.u = u.as<bf16>(); p.u_ld = Di; p.delta = dl.as<bf16>(); p.delta_ld = Di;
  p.Bm = Bm.as<bf16>(); p.B_ld = N; p.Cm = Cm.as<bf16>(); p.C_ld = N; p.z = z.as<bf16>(); p.z_ld = Di;
  p.A = A.as<float>(); p.D = D.as<float>(); p.delta_bias = bias.as<float>();
  p.out = out.as<bf16>(); p.out_ld = Di; p.h_last = hl.as<float>(); p.chunk_states = cs.as<float>();
  cuda::ScanGradsT<bf16> g;
  g.dout = dout.as<bf16>(); g.dout_ld = Di; g.du = du.as<bf16>(); g.du_ld = Di;
  g.ddelta = ddl.as<bf16>(); g.ddelta_ld = Di; g.dB = dB.as<bf16>(); g.dB_ld = N; g.dC = dC.as<bf16>(); g.dC_ld = N;
  g.dz = dz.as<bf16>(); g.dz_ld = Di; g.dA = dA.as<float>(); g.dD = dD.as<float>(); g.ddelta_bias = dbias.as<float>();

  cuda::selective_scan_set_states_per_thread(npt);
  cuda::selective_scan_set_segments(segments);
  Row r;
  r.config = cuda::selective_scan_config_name(B, Di, N);
  r.fwd_ms = bench::time_ms([&] { cuda::selective_scan_forward(p, nullptr); });
  r.bwd_ms = bench::time_ms([&] { cuda::selective_scan_backward(g, p, nullptr); });
  r.fb_ms = bench::time_ms([&] {
    cuda::selective_scan_forward(p, nullptr);
    cuda::selective_scan_backward(g, p, nullptr);
  });
  cuda::selective_scan_set_states_per_thread(0);
  cuda::selective_scan_set_segments(0);
  r.segments = segments;  // 0 = automatic
  r.name = "scan B" + std::to_string(B) + " T" + std::to_string(T);
  r.B = B; r.Di = Di; r.T = T; r.N = N; r.npt = npt;  // 0 = the automatic choice (its config string says which)
  r.ref_fwd_ms = s.ref_fwd_ms;
  r.ref_fb_ms = s.ref_fb_ms;
  // Essential bytes: fwd reads u, Δ, z, B, C and writes out; bwd reads u, Δ, z, dout, B, C and
  // writes du, dΔ, dz, dB, dC (bf16 everywhere).
  r.fwd_bytes = double(4 * tok + 2 * bc) * 2;
  r.fb_bytes = r.fwd_bytes + double(7 * tok + 4 * bc) * 2;
  r.state_bytes = double(st) * 4;
  r.fwd_gbs = r.fwd_bytes / (r.fwd_ms * 1e-3) / 1e9;
  r.fb_gbs = r.fb_bytes / (r.fb_ms * 1e-3) / 1e9;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (!bench::have_gpu()) {
    std::printf("bench_scan: no CUDA device present; skipped\n");
    return 0;
  }
  const std::string json = bench::json_path(argc, argv);
  const std::string dev = bench::device_name();
  const bench::Ceilings ceil = bench::measure_ceilings();
  std::printf("device: %s\nceilings: cuBLASLt bf16 8192^3 %.0f TFLOP/s; device copy %.0f GB/s (read+write)\n",
              dev.c_str(), ceil.gemm_tflops, ceil.copy_gbs);
  // The two shapes, then batch-1 prefill of the 24 x 768 model's width (no reference).
  const Size sizes[] = {{8, 2048, 2048, 16, 0.58, 3.01}, {2, 2048, 8192, 16, 0.74, 3.29}, {1, 1536, 2048, 16, 0, 0}};
  std::vector<Row> rows;
  for (const Size& s : sizes) {
    rows.push_back(run(s, 0, 0));  // the shipped choice first
    rows.push_back(run(s, 2, 0));  // both directions at 2 states per lane
    rows.push_back(run(s, 4, 0));  // both at 4
    for (int seg : {1, 2, 4, 8, 16, 32}) rows.push_back(run(s, 0, seg));
  }

  std::printf("\n%-16s %4s %4s %9s %9s %9s %8s %8s %9s %9s %8s\n", "case", "npt", "seg", "fwd ms", "bwd ms",
              "fwd+bwd", "fwd GB/s", "f+b GB/s", "ref fwd", "ref f+b", "f+b/ref");
  for (const Row& r : rows)
    std::printf("%-16s %4d %4d %9.3f %9.3f %9.3f %8.0f %8.0f %9.2f %9.2f %8.2f\n", r.name.c_str(), r.npt, r.segments,
                r.fwd_ms, r.bwd_ms, r.fb_ms, r.fwd_gbs, r.fb_gbs, r.ref_fwd_ms, r.ref_fb_ms, r.ref_fb_ms > 0 ? r.fb_ms / r.ref_fb_ms : 0.0);
  std::printf("target: fwd+bwd <= 2.4 ms (issue 7); bandwidth floor of the essential bytes at the copy ceiling: "
              "fwd %.3f ms, fwd+bwd %.3f ms (B8 T2048)\n",
              rows[0].fwd_bytes / (ceil.copy_gbs * 1e9) * 1e3, rows[0].fb_bytes / (ceil.copy_gbs * 1e9) * 1e3);
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_scan: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"ceilings\": {\"gemm_bf16_8192_tflops\": %.1f, \"copy_gbs\": %.1f},\n  \"scan\": [\n",
                 dev.c_str(), ceil.gemm_tflops, ceil.copy_gbs);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "    {\"B\": %lld, \"Di\": %lld, \"T\": %lld, \"N\": %lld, \"states_per_lane\": %d, \"segments\": %d, \"config\": \"%s\", "
                   "\"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwd_bwd_ms\": %.4f, \"fwd_gbs\": %.1f, \"fwd_bwd_gbs\": %.1f, "
                   "\"essential_fwd_bytes\": %.0f, \"essential_fwd_bwd_bytes\": %.0f, \"chunk_state_bytes\": %.0f, "
                   "\"ref_fwd_ms\": %.2f, \"ref_fwd_bwd_ms\": %.2f}%s\n",
                   (long long)r.B, (long long)r.Di, (long long)r.T, (long long)r.N, r.npt, r.segments, r.config.c_str(), r.fwd_ms,
                   r.bwd_ms, r.fb_ms, r.fwd_gbs, r.fb_gbs, r.fwd_bytes, r.fb_bytes, r.state_bytes, r.ref_fwd_ms,
                   r.ref_fb_ms, i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  return 0;
}
