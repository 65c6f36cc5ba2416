// bench_matmul_cpu: the CPU linear layer at decode shapes (M = B rows, T = 1), the shipped
// cpu::matmul_forward (rows <= 8: the small-M path, four input rows per weight-row load) against
// two baselines measured in the same run:
//   - gemm: the same product through cpu::gemm (OpenBLAS when linked; what M > 8 uses), and
//   - one-chain: the previous small-M kernel kept here as a lab variant (each dot product one
//     dependent chain of vector FMAs, every input row re-reading the weight row).
// Shapes: the 24 x 768 model's LM head (50,280 x 768) and in_proj (3,072 x 768). Times are
// medians of 15 runs after 3 warm-up runs; GFLOP/s counts 2·M·N·K. Usage: bench_matmul_cpu
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "ops/matmul.h"

using namespace moessm;

namespace {

double median_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < 15; ++i) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The previous small-M kernel (lab variant): one accumulator chain per (row, output).
void one_chain(float* out, const float* in, const float* w, idx_t M, idx_t N, idx_t K) {
#pragma omp parallel for schedule(static)
  for (idx_t n = 0; n < N; ++n)
    for (idx_t m = 0; m < M; ++m) {
      const float* x = in + m * K;
      const float* wr = w + n * K;
      float acc = 0;
#pragma omp simd reduction(+ : acc)
      for (idx_t k = 0; k < K; ++k) acc += wr[k] * x[k];
      out[m * N + n] = acc;
    }
}

}  // namespace

int main() {
  std::printf("cpu matmul at decode shapes (backend %s)\n", cpu::matmul_backend_name());
  std::printf("%-22s %3s %10s %10s %10s %9s %9s %8s\n", "weight [N x K]", "M", "shipped ms", "gemm ms",
              "1-chain ms", "GFLOP/s", "vs gemm", "vs 1ch");
  Rng rng(1);
  const idx_t shapes[2][2] = {{50280, 768}, {3072, 768}};
  for (const auto& s : shapes) {
    const idx_t N = s[0], K = s[1];
    std::vector<float> w(static_cast<size_t>(N * K)), x(static_cast<size_t>(8 * K));
    for (auto& v : w) v = float(rng.uniform(-1, 1));
    for (auto& v : x) v = float(rng.uniform(-1, 1));
    std::vector<float> out(static_cast<size_t>(8 * N));
    for (idx_t M : {1, 4, 8}) {
      const double ship = median_ms([&] {
        cpu::matmul_forward(out.data(), N, x.data(), K, w.data(), (const float*)nullptr, M, N, K);
      });
      const double gemm = median_ms([&] {
        cpu::gemm<float>(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, out.data(), N);
      });
      const double chain = median_ms([&] { one_chain(out.data(), x.data(), w.data(), M, N, K); });
      char name[32];
      std::snprintf(name, sizeof name, "%lld x %lld", (long long)N, (long long)K);
      std::printf("%-22s %3lld %10.3f %10.3f %10.3f %9.1f %8.2fx %7.2fx\n", name, (long long)M, ship, gemm, chain,
                  2.0 * double(M * N * K) / (ship * 1e6), gemm / ship, chain / ship);
    }
  }
  return 0;
}
