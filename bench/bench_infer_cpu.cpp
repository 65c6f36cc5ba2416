// bench_infer_cpu: CPU inference speed, the two phases llama.cpp's llama-bench reports, on the
// shipped decoder (src/infer/decoder.h, CPU fp32):
//   prefill  "pp": one batch-1 prompt of P tokens (default 512) through Decoder::prefill from a
//                   zero state; tokens/s = P / time
//   decode   "tg": G single-token steps (default 128) at batch 1 after that prompt, each step's
//                   next token the argmax of the last logits (greedy; sampling is not timed)
// Models: configs/demo.json's shape (the README demo; llama.cpp's figures for it, measured on
// the 2-core development machine with its own GGUF conversion of the demo checkpoint, 2 threads:
// pp 20.9k, tg 7.76k tokens/s, issue 12) and configs/bench_24x768.json (mamba-130m-sized), both
// with random weights (speed does not depend on the values). Every phase is run R times (default
// 5); the median and the range are printed, and the ratio to llama.cpp's figure where one exists.
// Threads: whatever OpenMP is given (OMP_NUM_THREADS); set OMP_WAIT_POLICY=passive on a busy
// machine (docs/inference.md). Usage: bench_infer_cpu [--json FILE] [--reps R] [--prompt P]
//   [--gen G] [--config PATH ...] (default configs: the two above, relative to the source tree)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "infer/decoder.h"
#include "model/config.h"
#include "model/language_model.h"
#include "ops/matmul.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace moessm;

namespace {

struct Result {
  std::string config;
  int64_t params = 0;
  double pp_med = 0, pp_lo = 0, pp_hi = 0, tg_med = 0, tg_lo = 0, tg_hi = 0;  // tokens/s
  double ref_pp = 0, ref_tg = 0;                                              // llama.cpp (0: none)
};

double seconds_since(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

void med_range(std::vector<double> v, double& med, double& lo, double& hi) {
  std::sort(v.begin(), v.end());
  med = v[v.size() / 2];
  lo = v.front();
  hi = v.back();
}

Result run(const std::string& path, int reps, idx_t P, idx_t G) {
  const ModelConfig cfg = ModelConfig::from_file(path);
  LanguageModel<float> m(cfg);
  m.init(1);
  Decoder<float> dec(m, 1);
  const idx_t Vreal = cfg.vocab_size;
  std::vector<int32_t> prompt(static_cast<size_t>(P));
  for (idx_t i = 0; i < P; ++i) prompt[static_cast<size_t>(i)] = int32_t((i * 2654435761u) % uint64_t(Vreal));
  std::vector<double> pp, tg;
  for (int r = 0; r < reps + 1; ++r) {  // the first repetition warms caches and is not counted
    dec.reset();
    auto a = std::chrono::steady_clock::now();
    dec.prefill(prompt.data(), P);
    const double tp = seconds_since(a);
    int32_t tok = 0;
    a = std::chrono::steady_clock::now();
    for (idx_t g = 0; g < G; ++g) {
      const float* lg = dec.logits();
      tok = int32_t(std::max_element(lg, lg + Vreal) - lg);
      dec.step(&tok);
    }
    const double tt = seconds_since(a);
    if (r == 0) continue;
    pp.push_back(double(P) / tp);
    tg.push_back(double(G) / tt);
  }
  Result res;
  res.config = path;
  res.params = m.table().total();
  med_range(pp, res.pp_med, res.pp_lo, res.pp_hi);
  med_range(tg, res.tg_med, res.tg_lo, res.tg_hi);
  if (path.find("demo.json") != std::string::npos) {
    res.ref_pp = 20.9e3;
    res.ref_tg = 7.76e3;
  }
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json;
  int reps = 5;
  idx_t P = 512, G = 128;
  std::vector<std::string> configs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_infer_cpu: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    auto count = [&](long hi) -> int {  // a whole number in [1, hi], else a message naming the flag
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > hi) {
        std::fprintf(stderr, "bench_infer_cpu: %s expects a whole number in [1, %ld], found '%s'\n", a.c_str(), hi, v.c_str());
        std::exit(2);
      }
      return int(n);
    };
    if (a == "--json") json = value();
    else if (a == "--reps") reps = count(1000);
    else if (a == "--prompt") P = count(1 << 20);
    else if (a == "--gen") G = count(1 << 20);
    else if (a == "--config") configs.push_back(value());
    else {
      std::fprintf(stderr, "usage: bench_infer_cpu [--json FILE] [--reps R] [--prompt P] [--gen G] [--config PATH ...]\n");
      return 2;
    }
  }
  if (configs.empty()) configs = {MOESSM_SOURCE_DIR "/configs/demo.json", MOESSM_SOURCE_DIR "/configs/bench_24x768.json"};
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  const bool blas1 = cpu::blas_single_threaded_for_inference();  // as moessm generate does
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  std::printf("bench_infer_cpu: batch 1, prompt %lld tokens, %lld generated, %d repetitions, %d threads, OMP_WAIT_POLICY=%s, "
              "BLAS threads %s\n",
              (long long)P, (long long)G, reps, threads, wait ? wait : "(unset)", blas1 ? "1" : "OPENBLAS_NUM_THREADS");
  std::vector<Result> rows;
  try {
    for (const std::string& c : configs) rows.push_back(run(c, reps, P, G));
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_infer_cpu: %s\n", e.what());
    return 1;
  }
  std::printf("\n%-34s %11s %22s %8s %22s %8s\n", "model", "params", "prefill tok/s [range]", "vs llama", "decode tok/s [range]", "vs llama");
  for (const Result& r : rows) {
    const std::string name = r.config.substr(r.config.find_last_of('/') + 1);
    char pp[64], tg[64], rp[16] = "-", rt[16] = "-";
    std::snprintf(pp, sizeof(pp), "%.0f [%.0f-%.0f]", r.pp_med, r.pp_lo, r.pp_hi);
    std::snprintf(tg, sizeof(tg), "%.0f [%.0f-%.0f]", r.tg_med, r.tg_lo, r.tg_hi);
    if (r.ref_pp > 0) std::snprintf(rp, sizeof(rp), "%.2fx", r.pp_med / r.ref_pp);
    if (r.ref_tg > 0) std::snprintf(rt, sizeof(rt), "%.2fx", r.tg_med / r.ref_tg);
    std::printf("%-34s %11lld %22s %8s %22s %8s\n", name.c_str(), (long long)r.params, pp, rp, tg, rt);
  }
  std::printf("llama.cpp reference (demo model only, 2 threads on the 2-core machine): pp 20.9k, tg 7.76k tokens/s\n");
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_infer_cpu: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f, "{\"threads\": %d, \"prompt\": %lld, \"gen\": %lld, \"reps\": %d, \"rows\": [\n", threads, (long long)P,
                 (long long)G, reps);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Result& r = rows[i];
      std::fprintf(f,
                   "  {\"config\": \"%s\", \"params\": %lld, \"prefill_tps\": %.1f, \"prefill_tps_min\": %.1f, "
                   "\"prefill_tps_max\": %.1f, \"decode_tps\": %.1f, \"decode_tps_min\": %.1f, \"decode_tps_max\": %.1f, "
                   "\"llama_prefill_tps\": %.1f, \"llama_decode_tps\": %.1f}%s\n",
                   r.config.c_str(), (long long)r.params, r.pp_med, r.pp_lo, r.pp_hi, r.tg_med, r.tg_lo, r.tg_hi,
                   r.ref_pp, r.ref_tg, i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}
