// Recurrent decoding (src/infer): prefill + steps equal one forward pass, state hand-off through
// state files, sampling (greedy, seeded, top-k / top-p filters), constant memory per generated
// token, and the `generate` / `logits --state-in` / `grads --state-in` commands end to end.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <new>
#include <sstream>

#include "core/check.h"
#include "infer/decoder.h"
#include "infer/generator.h"
#include "infer/sampler.h"
#include "infer/state_file.h"
#include "io/safetensors.h"
#include "io/npy.h"
#include "model/checkpoint.h"
#include "model/language_model.h"
#include "ops/selective_scan.h"
#include "testing.h"

// Counts C++ heap allocations while enabled (the constant-memory test asserts there are none in
// the step loop). Replacing the global operator new is allowed for a program.
static std::atomic<bool> g_count_allocs{false};
static std::atomic<long> g_allocs{0};
static void* volatile g_sink = nullptr;
void* operator new(size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

using namespace moessm;
using namespace moessm::testing;

namespace {

ModelConfig tiny_config(int64_t d_state = 4) {
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": 16, "n_layer": 2, "vocab_size": 37, "d_state": )" +
                  std::to_string(d_state) + R"(, "d_conv": 4, "expand": 2, "pad_vocab_size_multiple": 8})"),
      "test");
}

// Random but well-scaled parameters (the real init leaves some tensors constant).
void randomize(LanguageModel<float>& m, uint64_t seed) {
  m.init(seed);
  Rng rng(seed, 99);
  for (auto& p : m.params) p += static_cast<float>(rng.uniform(-0.1, 0.1));
}

std::vector<int32_t> random_ids(size_t n, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& x : ids) x = int32_t(rng.below(uint64_t(vocab)));
  return ids;
}

// One forward over ids[B, T] from a zero state (or `state`): logits [B, T, V].
std::vector<float> full_logits(LanguageModel<float>& m, const std::vector<int32_t>& ids, idx_t B,
                               idx_t T, const float* state = nullptr) {
  std::vector<float> out(static_cast<size_t>(B * T * m.vocab()));
  m.prepare(B, T, false);
  m.forward_logits(out.data(), ids.data(), B, T, state, nullptr);
  return out;
}

// Columns [t0, t0+len) of ids[B, T].
std::vector<int32_t> slice(const std::vector<int32_t>& ids, idx_t B, idx_t T, idx_t t0, idx_t len) {
  std::vector<int32_t> s(static_cast<size_t>(B * len));
  for (idx_t b = 0; b < B; ++b)
    for (idx_t t = 0; t < len; ++t) s[b * len + t] = ids[b * T + t0 + t];
  return s;
}

// max |a - full[:, t, :]| / max |full[:, t, :]| for a = [B, V].
double rel_diff_at(const float* a, const std::vector<float>& full, idx_t B, idx_t T, idx_t t, idx_t V) {
  std::vector<float> ref(static_cast<size_t>(B * V));
  for (idx_t b = 0; b < B; ++b)
    std::copy_n(&full[(b * T + t) * V], V, &ref[b * V]);
  return max_rel_diff(a, ref.data(), ref.size());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::vector<int32_t>> read_id_lines(const std::string& path) {
  std::vector<std::vector<int32_t>> lines;
  std::istringstream in(read_text(path));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> v;
    int32_t x;
    while (ls >> x) v.push_back(x);
    lines.push_back(v);
  }
  return lines;
}

}  // namespace

// prefill(T) + step×M == forward(T+M), for T and M below and above the scan chunk, and with the
// prefill split into several pieces.
TEST(Decoder, PrefillThenStepsEqualOneForwardPass) {
  LanguageModel<float> m(tiny_config());
  randomize(m, 1);
  const idx_t B = 2, V = m.vocab();
  const idx_t small = 5, large = kScanChunk + 7;
  for (idx_t T : {small, large})
    for (idx_t M : {small, large})
      for (idx_t chunk : {idx_t(0), idx_t(16)}) {
        const idx_t L = T + M;
        std::vector<int32_t> ids = random_ids(size_t(B * L), 37, uint64_t(T * 1000 + M));
        std::vector<float> full = full_logits(m, ids, B, L);
        Decoder<float> dec(m, B, chunk);
        dec.prefill(slice(ids, B, L, 0, T).data(), T);
        double worst = rel_diff_at(dec.logits(), full, B, L, T - 1, V);
        std::vector<int32_t> tok(B);
        for (idx_t i = 0; i < M; ++i) {
          for (idx_t b = 0; b < B; ++b) tok[b] = ids[b * L + T + i];
          dec.step(tok.data());
          worst = std::max(worst, rel_diff_at(dec.logits(), full, B, L, T + i, V));
        }
        EXPECT_LE(worst, 1e-5) << "T=" << T << " M=" << M << " prefill_chunk=" << chunk;
        EXPECT_EQ(dec.tokens_consumed(), L);
      }
}

// Save the state after T1 tokens, load it, continue with T2 tokens: equals T1+T2 in one go.
TEST(StateFile, ChunkedPrefillThroughAFileEqualsOnePass) {
  LanguageModel<float> m(tiny_config());
  randomize(m, 2);
  const idx_t B = 2, T1 = kScanChunk + 6, T2 = 9, L = T1 + T2, V = m.vocab();
  std::vector<int32_t> ids = random_ids(size_t(B * L), 37, 3);
  std::vector<float> full = full_logits(m, ids, B, L);
  const std::string path = temp_dir("gen_state") + "/s.safetensors";
  {
    Decoder<float> dec(m, B);
    dec.prefill(slice(ids, B, L, 0, T1).data(), T1);
    save_state_file(path, m, B, dec.state(), dec.logits(), {T1, T1}, {ids[T1 - 1], ids[L + T1 - 1]});
  }
  StateSnapshot<float> s = load_state_file(path, m, B);
  EXPECT_EQ(s.batch, B);
  EXPECT_EQ(s.tokens_consumed, (std::vector<int64_t>{T1, T1}));
  EXPECT_EQ(s.last_token, (std::vector<int32_t>{ids[T1 - 1], ids[L + T1 - 1]}));
  ASSERT_EQ(s.next_logits.size(), size_t(B * V));
  EXPECT_LE(rel_diff_at(s.next_logits.data(), full, B, L, T1 - 1, V), 1e-5);
  std::vector<float> part = full_logits(m, slice(ids, B, L, T1, T2), B, T2, s.state.data());
  double worst = 0;
  for (idx_t t = 0; t < T2; ++t) {
    std::vector<float> row(static_cast<size_t>(B * V));
    for (idx_t b = 0; b < B; ++b) std::copy_n(&part[(b * T2 + t) * V], V, &row[b * V]);
    worst = std::max(worst, rel_diff_at(row.data(), full, B, L, T1 + t, V));
  }
  EXPECT_LE(worst, 1e-5);
  // The decoder resumes from the loaded state too.
  Decoder<float> dec(m, B);
  dec.load(s.state.data(), s.next_logits.data(), T1);
  dec.prefill(slice(ids, B, L, T1, T2).data(), T2);
  EXPECT_LE(rel_diff_at(dec.logits(), full, B, L, L - 1, V), 1e-5);
}

TEST(StateFile, RejectsAStateOfAnotherModel) {
  LanguageModel<float> m(tiny_config(4));
  randomize(m, 4);
  const std::string dir = temp_dir("gen_reject");
  const std::string path = dir + "/s.safetensors";
  Decoder<float> dec(m, 1);
  std::vector<int32_t> ids = {1, 2, 3};
  dec.prefill(ids.data(), 3);
  save_state_file(path, m, 1, dec.state(), dec.logits(), {3}, {3});

  LanguageModel<float> other(tiny_config(5));  // another d_state: another state shape
  randomize(other, 4);
  std::string e = error_of([&] { load_state_file(path, other); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("different model"), std::string::npos) << e;
  EXPECT_NE(e.find("d_state=4"), std::string::npos) << e;
  EXPECT_NE(e.find("d_state=5"), std::string::npos) << e;

  LanguageModel<float> reseeded(tiny_config(4));  // same architecture, other weights
  randomize(reseeded, 5);
  e = error_of([&] { load_state_file(path, reseeded); });
  EXPECT_NE(e.find("different weights"), std::string::npos) << e;

  e = error_of([&] { load_state_file(path, m, 4); });
  EXPECT_NE(e.find("holds 1 sequence slot(s) but 4 are needed"), std::string::npos) << e;

  save_model(dir + "/ckpt", m);  // a safetensors file that is not a state file
  e = error_of([&] { load_state_file(dir + "/ckpt/model.safetensors", m); });
  EXPECT_NE(e.find("not a moessm state file"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] { load_state_file(path, m, 1); }), "");
}

// The metadata of a valid state file with some fields replaced (tensors copied unchanged).
void rewrite_state_metadata(const std::string& from, const std::string& to,
                            const std::map<std::string, std::string>& changes) {
  SafetensorsFile f = SafetensorsFile::open(from);
  SafetensorsWriter w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, changes.count(k) ? changes.at(k) : v);
  for (const SafetensorsEntry& e : f.entries()) w.add(e.name, e.dtype, e.shape, f.data(e));
  w.write(to);
}

TEST(StateFile, LyingMetadataIsRejectedBeforeAllocating) {
  LanguageModel<float> m(tiny_config(4));
  randomize(m, 4);
  const std::string dir = temp_dir("gen_lying_meta");
  const std::string path = dir + "/s.safetensors", bad = dir + "/bad.safetensors";
  Decoder<float> dec(m, 1);
  std::vector<int32_t> ids = {1, 2, 3};
  dec.prefill(ids.data(), 3);
  save_state_file(path, m, 1, dec.state(), dec.logits(), {3}, {3});
  // A batch of 100000 with matching lists: the tensors hold one slot. The shapes are compared
  // before the state block (100000 x state size) is allocated, and the error says why.
  std::string zeros = "0";
  for (int i = 1; i < 100000; ++i) zeros += ",0";
  rewrite_state_metadata(path, bad, {{"batch", "100000"}, {"tokens_consumed", zeros}, {"last_token", zeros}});
  std::string e = error_of([&] { load_state_file(bad, m); });
  EXPECT_NE(e.find(bad), std::string::npos) << e;
  EXPECT_NE(e.find("tensor 'state.layers.0'"), std::string::npos) << e;
  EXPECT_NE(e.find("metadata 'batch' 100000"), std::string::npos) << e;
  // Out-of-range numbers are errors naming the field, not silently saturated or narrowed.
  rewrite_state_metadata(path, bad, {{"tokens_consumed", "99999999999999999999"}});
  e = error_of([&] { load_state_file(bad, m); });
  EXPECT_NE(e.find("metadata 'tokens_consumed'"), std::string::npos) << e;
  EXPECT_NE(e.find("out of the int64 range"), std::string::npos) << e;
  rewrite_state_metadata(path, bad, {{"tokens_consumed", "-4"}});
  e = error_of([&] { load_state_file(bad, m); });
  EXPECT_NE(e.find("metadata 'tokens_consumed': slot 0 has -4"), std::string::npos) << e;
  rewrite_state_metadata(path, bad, {{"last_token", "4294967296"}});
  e = error_of([&] { load_state_file(bad, m); });
  EXPECT_NE(e.find("metadata 'last_token': slot 0 has 4294967296"), std::string::npos) << e;
  rewrite_state_metadata(path, bad, {{"last_token", "-1"}});  // "unknown" is allowed
  EXPECT_EQ(error_of([&] { load_state_file(bad, m); }), "");
}

TEST(Sampler, FiltersAHandMadeDistribution) {
  // p = [0.1, 0.4, 0.2, 0.3] as logits (up to a constant).
  const std::vector<double> p = {0.1, 0.4, 0.2, 0.3};
  std::vector<float> logits;
  for (double x : p) logits.push_back(float(std::log(x) + 3.0));
  std::vector<int32_t> ids(4);
  std::vector<double> probs(4);
  auto run = [&](double temperature, int64_t k, double top_p) {
    SamplingParams sp;
    sp.temperature = temperature;
    sp.top_k = k;
    sp.top_p = top_p;
    return candidate_distribution(logits.data(), 4, sp, ids.data(), probs.data());
  };
  const double tol = 1e-6;
  ASSERT_EQ(run(1, 0, 1), 4);  // no filter: all ids in id order
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(ids[i], i);
    EXPECT_NEAR(probs[i], p[i], tol);
  }
  ASSERT_EQ(run(1, 2, 1), 2);  // top-k 2: ids 1 (0.4) and 3 (0.3), renormalised over 0.7
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 3);
  EXPECT_NEAR(probs[0], 0.4 / 0.7, tol);
  EXPECT_NEAR(probs[1], 0.3 / 0.7, tol);
  ASSERT_EQ(run(1, 0, 0.65), 2);  // 0.4 < 0.65 <= 0.4 + 0.3
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 3);
  EXPECT_NEAR(probs[0], 0.4 / 0.7, tol);
  ASSERT_EQ(run(1, 0, 0.35), 1);  // the most likely token alone already has the mass
  EXPECT_EQ(ids[0], 1);
  EXPECT_NEAR(probs[0], 1.0, tol);
  ASSERT_EQ(run(1, 0, 0.95), 4);  // 0.9 < 0.95: everything stays, sorted
  EXPECT_EQ(ids[3], 0);
  // top-k then top-p: after k=3 the masses are 4/9, 3/9, 2/9; 7/9 >= 0.75 keeps two.
  ASSERT_EQ(run(1, 3, 0.75), 2);
  EXPECT_NEAR(probs[0], 4.0 / 7.0, tol);
  ASSERT_EQ(run(1, 3, 0.8), 3);  // 7/9 < 0.8
  EXPECT_NEAR(probs[2], 2.0 / 9.0, tol);
  // Temperature 2: p^(1/2), renormalised.
  ASSERT_EQ(run(2, 0, 1), 4);
  double z = 0;
  for (double x : p) z += std::sqrt(x);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(probs[i], std::sqrt(p[i]) / z, tol);
  // Ties rank the lower id first; greedy picks the lowest id among the maxima.
  std::vector<float> tie = {0.5f, 2.0f, 2.0f, 1.0f};
  SamplingParams k1;
  k1.top_k = 1;
  ASSERT_EQ(candidate_distribution(tie.data(), 4, k1, ids.data(), probs.data()), 1);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(argmax_token(tie.data(), 4), 1);

  // Drawing follows the filtered distribution and never leaves it.
  SamplingParams sp;
  sp.top_k = 2;
  Sampler s(1, 4, sp, 11);
  int counts[4] = {0, 0, 0, 0};
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(0, logits.data())];
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_NEAR(double(counts[1]) / n, 0.4 / 0.7, 0.015);
  // Only ids below the vocabulary limit are candidates.
  Sampler limited(1, 2, SamplingParams(), 3);
  for (int i = 0; i < 200; ++i) EXPECT_LT(limited.sample(0, logits.data()), 2);
  EXPECT_NE(error_of([] { SamplingParams q; q.top_p = 0; q.validate(); }).find("--top-p"), std::string::npos);
}

TEST(Generator, GreedyIsDeterministicAndMatchesTheFullForward) {
  LanguageModel<float> m(tiny_config());
  randomize(m, 6);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 30;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {7, 7, 7, 7, 7}};
  auto gen = [&](const GenerateOptions& opts) {
    Decoder<float> dec(m, 2);
    Generator<float> g(dec, opts);
    auto out = g.run(prompts);
    return std::vector<std::vector<int32_t>>{out[0].generated, out[1].generated};
  };
  auto a = gen(o), b = gen(o);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a[0].size(), 30u);
  // Each greedy token is the argmax of one forward pass over everything before it.
  for (int s = 0; s < 2; ++s) {
    std::vector<int32_t> seq = prompts[s];
    seq.insert(seq.end(), a[s].begin(), a[s].end());
    const idx_t L = idx_t(seq.size()), V = m.vocab();
    std::vector<float> full = full_logits(m, seq, 1, L);
    for (size_t i = 0; i < a[s].size(); ++i)
      EXPECT_EQ(a[s][i], argmax_token(&full[(5 + i - 1) * V], 37)) << "slot " << s << " token " << i;
  }
  // top-k = 1 at any temperature is greedy.
  GenerateOptions k1 = o;
  k1.sampling.temperature = 0.7;
  k1.sampling.top_k = 1;
  EXPECT_EQ(gen(k1), a);
}

TEST(Generator, SeededSamplingRepeatsAndSeedsDiffer) {
  LanguageModel<float> m(tiny_config());
  randomize(m, 7);
  auto gen = [&](uint64_t seed, idx_t B) {
    GenerateOptions o;
    o.sampling.temperature = 1.0;
    o.max_new_tokens = 40;
    o.seed = seed;
    Decoder<float> dec(m, B);
    Generator<float> g(dec, o);
    auto out = g.run(std::vector<std::vector<int32_t>>(size_t(B), {3, 1, 4}));
    std::vector<std::vector<int32_t>> r;
    for (auto& x : out) r.push_back(x.generated);
    return r;
  };
  auto a = gen(5, 3), b = gen(5, 3), c = gen(6, 3);
  EXPECT_EQ(a, b);
  EXPECT_NE(a[0], c[0]);
  EXPECT_NE(a[0], a[1]);  // each slot has its own random stream
}

TEST(Generator, RaggedPromptsAreFedExactlyAndEotStops) {
  LanguageModel<float> m(tiny_config());
  randomize(m, 8);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 12;
  // Slot 1's longer prompt is fed by steps while slot 0 already generates; each slot must get
  // what it gets alone.
  const std::vector<int32_t> p0 = {1, 2}, p1 = {5, 6, 7, 8, 9, 10, 11};
  auto alone = [&](const std::vector<int32_t>& p) {
    Decoder<float> dec(m, 1);
    Generator<float> g(dec, o);
    return g.run({p})[0].generated;
  };
  Decoder<float> dec(m, 2);
  Generator<float> g(dec, o);
  auto out = g.run({p0, p1});
  EXPECT_EQ(out[0].generated, alone(p0));
  EXPECT_EQ(out[1].generated, alone(p1));
  EXPECT_EQ(g.stats().forced_tokens, 5);
  // An end-of-text id stops the slot and is kept.
  GenerateOptions e = o;
  e.eot_id = out[0].generated[3];
  Decoder<float> d2(m, 1);
  Generator<float> g2(d2, e);
  auto r = g2.run({p0})[0];
  EXPECT_TRUE(r.stopped_at_eot);
  EXPECT_EQ(r.generated.back(), e.eot_id);
  EXPECT_LE(r.generated.size(), 4u);
}

// Memory per generated token is constant: 500 steps (with sampling) allocate nothing and move no
// buffer; the only state is the fixed [B · state_size] block.
TEST(Decoder, MemoryDoesNotGrowWithGeneratedTokens) {
  LanguageModel<float> m(tiny_config());
  randomize(m, 9);
  const idx_t B = 3;
  Decoder<float> dec(m, B);
  Sampler s(B, 37, SamplingParams(), 1);
  std::vector<int32_t> prompt = random_ids(size_t(B * 20), 37, 10), tok(B);
  dec.prefill(prompt.data(), 20);
  for (idx_t b = 0; b < B; ++b) tok[b] = s.sample(b, dec.logits(b));
  dec.step(tok.data());  // the first step plans the (B, 1) arena
  const auto before = dec.buffers();
  EXPECT_EQ(dec.state_numel(), B * m.state_size());
  EXPECT_EQ(before.state_cap, size_t(B * m.state_size()));
  g_allocs = 0;
  g_count_allocs = true;
  g_sink = new std::vector<int>(8);  // the counter itself works
  g_count_allocs = false;
  EXPECT_EQ(g_allocs.load(), 2);
  delete static_cast<std::vector<int>*>(g_sink);
  g_allocs = 0;
  g_count_allocs = true;
  for (int i = 0; i < 500; ++i) {
    for (idx_t b = 0; b < B; ++b) tok[b] = s.sample(b, dec.logits(b));
    dec.step(tok.data());
  }
  g_count_allocs = false;
  const auto after = dec.buffers();
  EXPECT_EQ(g_allocs.load(), 0) << "heap allocations during 500 decode steps";
  EXPECT_EQ(after.state, before.state);
  EXPECT_EQ(after.logits, before.logits);
  EXPECT_EQ(after.prefill_logits, before.prefill_logits);
  EXPECT_EQ(after.state_cap, before.state_cap);
  EXPECT_EQ(after.logits_cap, before.logits_cap);
  EXPECT_EQ(after.prefill_logits_cap, before.prefill_logits_cap);
  EXPECT_EQ(dec.tokens_consumed(), 20 + 501);
  for (idx_t i = 0; i < dec.state_numel(); ++i) ASSERT_TRUE(std::isfinite(dec.state()[i]));
}

// The commands end to end on a tiny checkpoint with the byte tokenizer.
TEST(GenerateCli, EndToEnd) {
  const std::string dir = temp_dir("gen_cli"), ckpt = dir + "/tiny";
  std::string out;
  ASSERT_EQ(run_cli("init --config " + source_dir() + "/configs/tiny_dense.json --out " + ckpt + " --seed 3", &out), 0) << out;

  // Greedy generation; the written ids agree with `moessm logits` on them.
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --prompt Hello --max-new-tokens 20 "
                    "--temperature 0 --ids-out " + dir + "/ids.txt", &out), 0) << out;
  EXPECT_EQ(out.rfind("Hello", 0), 0u) << out;
  EXPECT_NE(out.find("prompt: 5 tokens"), std::string::npos) << out;
  EXPECT_NE(out.find("generated: 20 tokens"), std::string::npos) << out;
  auto lines = read_id_lines(dir + "/ids.txt");
  ASSERT_EQ(lines.size(), 1u);
  ASSERT_EQ(lines[0].size(), 25u);
  EXPECT_EQ(lines[0][0], int32_t('H'));
  ASSERT_EQ(run_cli("logits --model " + ckpt + " --ids " + dir + "/ids.txt --out " + dir + "/l.npy", &out), 0) << out;
  NpyArray l = read_npy(dir + "/l.npy");
  const idx_t V = l.shape[2];
  for (int t = 4; t < 24; ++t) EXPECT_EQ(argmax_token(&l.data[t * V], 256), lines[0][t + 1]) << "position " << t;

  // Same seed → same sample; a batch prints every slot.
  const std::string sample = "generate --model " + ckpt + " --tokenizer byte --prompt Hi --max-new-tokens 15 --seed 4";
  std::string a, b;
  ASSERT_EQ(run_cli(sample + " --ids-out " + dir + "/a.txt", &a), 0) << a;
  ASSERT_EQ(run_cli(sample + " --ids-out " + dir + "/b.txt", &b), 0) << b;
  EXPECT_EQ(read_text(dir + "/a.txt"), read_text(dir + "/b.txt"));
  ASSERT_EQ(run_cli(sample + " --batch 3 --top-k 5 --top-p 0.9", &out), 0) << out;
  EXPECT_NE(out.find("=== slot 2 ==="), std::string::npos) << out;
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --prompt ab --prompt 'xyz w' "
                    "--max-new-tokens 4 --ids-out " + dir + "/two.txt", &out), 0) << out;
  auto two = read_id_lines(dir + "/two.txt");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].size(), 6u);
  EXPECT_EQ(two[1].size(), 9u);

  // State hand-off: "Hello" saved, then " world" continues it == "Hello world" in one go.
  const std::string st = dir + "/hello.state";
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --prompt Hello --max-new-tokens 0 "
                    "--state-out " + st, &out), 0) << out;
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --state-in " + st + " --prompt ' world' "
                    "--temperature 0 --max-new-tokens 10 --ids-out " + dir + "/resumed.txt", &out), 0) << out;
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --prompt 'Hello world' "
                    "--temperature 0 --max-new-tokens 10 --ids-out " + dir + "/whole.txt", &out), 0) << out;
  auto resumed = read_id_lines(dir + "/resumed.txt")[0], whole = read_id_lines(dir + "/whole.txt")[0];
  ASSERT_EQ(resumed.size(), 16u);
  EXPECT_EQ(std::vector<int32_t>(resumed.begin() + 6, resumed.end()),
            std::vector<int32_t>(whole.begin() + 11, whole.end()));
  // Resuming with no prompt samples from the saved next-token logits.
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --state-in " + st +
                    " --temperature 0 --max-new-tokens 3 --ids-out " + dir + "/cont.txt", &out), 0) << out;
  ASSERT_EQ(run_cli("generate --model " + ckpt + " --tokenizer byte --prompt Hello "
                    "--temperature 0 --max-new-tokens 3 --ids-out " + dir + "/ref.txt", &out), 0) << out;
  auto ref = read_id_lines(dir + "/ref.txt")[0];
  EXPECT_EQ(read_id_lines(dir + "/cont.txt")[0], std::vector<int32_t>(ref.begin() + 5, ref.end()));

  // logits --state-in: " world" after the saved "Hello" == the tail of "Hello world".
  {
    std::ofstream(dir + "/world.txt") << "32 119 111 114 108 100\n";
    std::ofstream(dir + "/hw.txt") << "72 101 108 108 111 32 119 111 114 108 100\n";
    std::ofstream(dir + "/pair.txt") << "1 2\n3 4\n";
  }
  ASSERT_EQ(run_cli("logits --model " + ckpt + " --ids " + dir + "/world.txt --state-in " + st + " --out " + dir + "/lw.npy", &out), 0) << out;
  ASSERT_EQ(run_cli("logits --model " + ckpt + " --ids " + dir + "/hw.txt --out " + dir + "/lhw.npy", &out), 0) << out;
  NpyArray lw = read_npy(dir + "/lw.npy"), lhw = read_npy(dir + "/lhw.npy");
  ASSERT_EQ(lw.data.size(), size_t(6 * V));
  EXPECT_LE(max_rel_diff(lw.data.data(), lhw.data.data() + 5 * V, lw.data.size()), 1e-5);

  // grads --state-in: the loss is the one of " world" continuing "Hello".
  ASSERT_EQ(run_cli("grads --model " + ckpt + " --ids " + dir + "/world.txt --state-in " + st + " --out " + dir + "/g.safetensors", &out), 0) << out;
  {
    auto model = load_model<float>(ckpt);
    StateSnapshot<float> s = load_state_file(st, *model, 1);
    std::vector<int32_t> ids = {32, 119, 111, 114, 108, 100}, tg = {119, 111, 114, 108, 100, -1};
    model->prepare(1, 6, false);
    const double loss = model->loss(ids.data(), tg.data(), 1, 6, false, s.state.data()).total();
    const double printed = std::atof(out.substr(out.find("loss ") + 5).c_str());
    EXPECT_NEAR(printed, loss, 1e-5 * std::fabs(loss)) << out;
  }

  // A state of another model is refused with a clear message.
  ASSERT_EQ(run_cli("init --config " + source_dir() + "/configs/tiny_dense.json --out " + dir + "/other --seed 4", &out), 0) << out;
  EXPECT_EQ(run_cli("generate --model " + dir + "/other --tokenizer byte --state-in " + st + " --prompt x", &out), 1);
  EXPECT_NE(out.find("different weights"), std::string::npos) << out;
  EXPECT_EQ(run_cli("logits --model " + ckpt + " --ids " + dir + "/pair.txt --state-in " + st + " --out " + dir + "/x.npy", &out), 1);
  EXPECT_NE(out.find("but 2 are needed"), std::string::npos) << out;
  EXPECT_EQ(run_cli("generate --model " + ckpt + " --prompt x", &out), 1);
  EXPECT_NE(out.find("holds no tokenizer.json"), std::string::npos) << out;
}
