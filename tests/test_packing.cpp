// Packed documents (seq_idx, the rule in ops/op_common.h) on the CPU:
// - a packed row gives the outputs, carried states and gradients of its documents run one by one
//   (selective_scan, causal_conv1d, and whole models of every sequence-mixing layer type);
// - the scan's and the conv's backward with seq_idx against finite differences in double;
// - a constant seq_idx (one document per row) gives bit for bit what nullptr gives;
// - the trainer's document index from end-of-text separators, edge cases included.
// Error budget of the packed-vs-separate comparisons (fp64): both sides do the same operations
// on each document; only sums that span documents (dA, dD, dΔ-bias, dw, dbias and parameter
// gradients, a few hundred O(1) terms) are added in another order, each rounding step costing at
// most eps·|partial sum| ≈ 2.2e-16 · 300 ≈ 7e-14 relative: kSame = 1e-12 leaves a margin of ~15.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/rng.h"
#include "data/packing.h"
#include "model/language_model.h"
#include "ops/activations.h"
#include "ops/causal_conv1d.h"
#include "ops/selective_scan.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;

namespace {

using Vec = std::vector<double>;
using Idx = std::vector<int32_t>;
constexpr double kSame = 1e-12;  // packed vs separate, fp64 (see the top of the file)
constexpr double kFdTol = 1e-7;  // finite differences, as test_ops_cpu.cpp

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// One document of a packed batch: row b, tokens [t0, t0 + len).
struct Doc {
  idx_t b, t0, len;
  bool first, last;  // the row's first / last document
};

// Documents of rows with the given lengths (each row's sum is T) and a seq_idx for them whose
// values change at every document start but are not simply 0, 1, 2 (only changes count).
std::vector<Doc> layout(const std::vector<std::vector<idx_t>>& rows, idx_t T, Idx& seq) {
  std::vector<Doc> docs;
  seq.assign(rows.size() * size_t(T), 0);
  for (size_t b = 0; b < rows.size(); ++b) {
    idx_t t0 = 0;
    for (size_t d = 0; d < rows[b].size(); ++d) {
      const idx_t len = rows[b][d];
      docs.push_back({idx_t(b), t0, len, d == 0, d + 1 == rows[b].size()});
      for (idx_t t = t0; t < t0 + len; ++t) seq[b * T + t] = int32_t(7 * b + (d % 2 ? 100 + d : 3 - d));
      t0 += len;
    }
    EXPECT_EQ(t0, T) << "row " << b << " lengths do not add up to T";
  }
  return docs;
}

// Tokens [t0, t0+len) of row b of a [B,T,X] array, as a [1,len,X] array; put() writes one back.
Vec slice(const Vec& v, idx_t T, idx_t X, const Doc& d) {
  return Vec(v.begin() + (d.b * T + d.t0) * X, v.begin() + (d.b * T + d.t0 + d.len) * X);
}
void put(Vec& dst, const Vec& src, idx_t T, idx_t X, const Doc& d) {
  std::copy(src.begin(), src.end(), dst.begin() + (d.b * T + d.t0) * X);
}
Vec row_of(const Vec& v, idx_t per_row, idx_t b) { return Vec(v.begin() + b * per_row, v.begin() + (b + 1) * per_row); }
void add_to(Vec& acc, const Vec& v) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += v[i];
}

// ---- selective scan -------------------------------------------------------------------------

struct ScanIn {
  idx_t B, T, Di, N;
  Vec u, delta, Bm, Cm, z, A, D, bias, h0, dout, dh_last;
  bool with_h0 = true, with_dh_last = true;
};
struct ScanOut {
  Vec out, h_last, du, ddelta, dB, dC, dz, dA, dD, dbias, dh0;
};

ScanIn random_scan(idx_t B, idx_t T, idx_t Di, idx_t N, uint64_t seed) {
  Rng rng(seed);
  ScanIn s{B, T, Di, N};
  s.u = random_vector<double>(B * T * Di, rng);
  s.delta = random_vector<double>(B * T * Di, rng, -3, 1);
  s.Bm = random_vector<double>(B * T * N, rng);
  s.Cm = random_vector<double>(B * T * N, rng);
  s.z = random_vector<double>(B * T * Di, rng);
  s.A = random_vector<double>(Di * N, rng, -2.0, -0.1);
  s.D = random_vector<double>(Di, rng);
  s.bias = random_vector<double>(Di, rng, -1, 0.5);
  s.h0 = random_vector<double>(B * Di * N, rng);
  s.dout = random_vector<double>(B * T * Di, rng);
  s.dh_last = random_vector<double>(B * Di * N, rng);
  return s;
}

ScanParams<double> scan_params(ScanIn& s, ScanOut& o, Vec& chunks, const int32_t* seq_idx) {
  const idx_t B = s.B, T = s.T, Di = s.Di, N = s.N;
  o.out.assign(B * T * Di, 0.0);
  o.h_last.assign(B * Di * N, 0.0);
  chunks.assign(B * scan_num_chunks(T) * Di * N, 0.0);
  ScanParams<double> p;
  p.B = B; p.T_ = T; p.Di = Di; p.N = N;
  p.u = s.u.data(); p.u_ld = Di; p.delta = s.delta.data(); p.delta_ld = Di;
  p.Bm = s.Bm.data(); p.B_ld = N; p.Cm = s.Cm.data(); p.C_ld = N;
  p.z = s.z.data(); p.z_ld = Di;
  p.A = s.A.data(); p.D = s.D.data(); p.delta_bias = s.bias.data();
  p.h0 = s.with_h0 ? s.h0.data() : nullptr;
  p.seq_idx = seq_idx;
  p.out = o.out.data(); p.out_ld = Di; p.h_last = o.h_last.data(); p.chunk_states = chunks.data();
  return p;
}

ScanOut run_scan(ScanIn& s, const int32_t* seq_idx) {
  const idx_t B = s.B, T = s.T, Di = s.Di, N = s.N;
  ScanOut o;
  Vec chunks;
  ScanParams<double> p = scan_params(s, o, chunks, seq_idx);
  cpu::selective_scan_forward(p);
  o.du.assign(B * T * Di, 0.0); o.ddelta.assign(B * T * Di, 0.0); o.dz.assign(B * T * Di, 0.0);
  o.dB.assign(B * T * N, 0.0); o.dC.assign(B * T * N, 0.0);
  o.dA.assign(Di * N, 0.0); o.dD.assign(Di, 0.0); o.dbias.assign(Di, 0.0); o.dh0.assign(B * Di * N, 0.0);
  ScanGrads<double> g;
  g.dout = s.dout.data(); g.dout_ld = Di; g.dh_last = s.with_dh_last ? s.dh_last.data() : nullptr;
  g.du = o.du.data(); g.du_ld = Di; g.ddelta = o.ddelta.data(); g.ddelta_ld = Di;
  g.dB = o.dB.data(); g.dB_ld = N; g.dC = o.dC.data(); g.dC_ld = N; g.dz = o.dz.data(); g.dz_ld = Di;
  g.dA = o.dA.data(); g.dD = o.dD.data(); g.ddelta_bias = o.dbias.data(); g.dh0 = o.dh0.data();
  cpu::selective_scan_backward(g, p);
  return o;
}

void expect_close(const Vec& a, const Vec& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_LE(max_rel_diff(a.data(), b.data(), a.size()), tol) << what;
}

}  // namespace

TEST(PackedScan, PackedRowsEqualTheirDocumentsRunSeparately) {
  // T = 140 spans several chunks and three 64-token CPU backward windows; row 0 has document
  // starts at 64 and 128 (chunk and window starts) and a one-token document; row 1 starts one in
  // the middle of a chunk; row 2 is one document (h0 throughout).
  static_assert(64 % kScanChunk == 0, "the starts below sit on chunk starts");
  const idx_t T = 140, Di = 3, N = 4;
  Idx seq;
  const std::vector<Doc> docs = layout({{64, 1, 63, 12}, {5, T - 5}, {T}}, T, seq);
  const idx_t B = 3;
  ScanIn all = random_scan(B, T, Di, N, 11);
  const ScanOut packed = run_scan(all, seq.data());

  ScanOut sep;
  sep.out.assign(B * T * Di, 0.0); sep.du = sep.ddelta = sep.dz = sep.out;
  sep.dB.assign(B * T * N, 0.0); sep.dC = sep.dB;
  sep.h_last.assign(B * Di * N, 0.0); sep.dh0 = sep.h_last;
  sep.dA.assign(Di * N, 0.0); sep.dD.assign(Di, 0.0); sep.dbias.assign(Di, 0.0);
  for (const Doc& d : docs) {
    ScanIn s{1, d.len, Di, N};
    s.u = slice(all.u, T, Di, d); s.delta = slice(all.delta, T, Di, d); s.z = slice(all.z, T, Di, d);
    s.Bm = slice(all.Bm, T, N, d); s.Cm = slice(all.Cm, T, N, d); s.dout = slice(all.dout, T, Di, d);
    s.A = all.A; s.D = all.D; s.bias = all.bias;
    s.h0 = row_of(all.h0, Di * N, d.b); s.with_h0 = d.first;               // h0: the first document's
    s.dh_last = row_of(all.dh_last, Di * N, d.b); s.with_dh_last = d.last;  // dh_last: the last one's
    const ScanOut o = run_scan(s, nullptr);
    put(sep.out, o.out, T, Di, d); put(sep.du, o.du, T, Di, d); put(sep.ddelta, o.ddelta, T, Di, d);
    put(sep.dz, o.dz, T, Di, d); put(sep.dB, o.dB, T, N, d); put(sep.dC, o.dC, T, N, d);
    if (d.last) std::copy(o.h_last.begin(), o.h_last.end(), sep.h_last.begin() + d.b * Di * N);
    if (d.first) std::copy(o.dh0.begin(), o.dh0.end(), sep.dh0.begin() + d.b * Di * N);
    add_to(sep.dA, o.dA); add_to(sep.dD, o.dD); add_to(sep.dbias, o.dbias);
  }
  // Per-token streams do the same arithmetic on both sides.
  expect_close(packed.out, sep.out, kSame, "out");
  expect_close(packed.h_last, sep.h_last, kSame, "h_last (the last document's state)");
  expect_close(packed.du, sep.du, kSame, "du");
  expect_close(packed.ddelta, sep.ddelta, kSame, "ddelta");
  expect_close(packed.dz, sep.dz, kSame, "dz");
  expect_close(packed.dB, sep.dB, kSame, "dB");
  expect_close(packed.dC, sep.dC, kSame, "dC");
  expect_close(packed.dh0, sep.dh0, kSame, "dh0 (from the first document only)");
  expect_close(packed.dA, sep.dA, kSame, "dA");
  expect_close(packed.dD, sep.dD, kSame, "dD");
  expect_close(packed.dbias, sep.dbias, kSame, "ddelta_bias");
  // And the reset is real: without seq_idx the outputs after the first start differ.
  ScanIn again = all;
  const ScanOut leaky = run_scan(again, nullptr);
  EXPECT_GT(std::abs(leaky.out[(0 * T + 64) * Di] - packed.out[(0 * T + 64) * Di]), 1e-6);
}

TEST(PackedScan, ChunkStateAtADocumentStartIsZero) {
  const idx_t T = 2 * kScanChunk, Di = 2, N = 3;
  Idx seq;
  layout({{kScanChunk, kScanChunk}}, T, seq);
  ScanIn s = random_scan(1, T, Di, N, 12);
  ScanOut o;
  Vec chunks;
  ScanParams<double> p = scan_params(s, o, chunks, seq.data());
  cpu::selective_scan_forward(p);
  for (idx_t i = 0; i < Di * N; ++i) {
    EXPECT_EQ(chunks[i], s.h0[i]) << "chunk 0 starts from h0";
    EXPECT_EQ(chunks[Di * N + i], 0.0) << "chunk 1 starts a document: the state it saves is 0";
  }
}

TEST(PackedScan, BackwardMatchesFiniteDifferences) {
  // Starts at t = 3 and at the chunk start 64, a one-token last document in row 0; row 1 one
  // document; h0 and dh_last given (they belong to the first and the last document).
  const idx_t T = 70, Di = 2, N = 3;
  Idx seq;
  layout({{3, 61, 5, 1}, {T}}, T, seq);
  ScanIn s = random_scan(2, T, Di, N, 13);
  ScanOut o;
  Vec chunks;
  ScanParams<double> p = scan_params(s, o, chunks, seq.data());
  auto f = [&] {
    cpu::selective_scan_forward(p);
    return dot(o.out, s.dout) + dot(o.h_last, s.dh_last);
  };
  f();
  const ScanOut g = run_scan(s, seq.data());
  EXPECT_EQ(compare_gradients(g.du, numeric_gradient(s.u, f), kFdTol, "du"), "");
  EXPECT_EQ(compare_gradients(g.ddelta, numeric_gradient(s.delta, f), kFdTol, "ddelta"), "");
  EXPECT_EQ(compare_gradients(g.dB, numeric_gradient(s.Bm, f), kFdTol, "dB"), "");
  EXPECT_EQ(compare_gradients(g.dC, numeric_gradient(s.Cm, f), kFdTol, "dC"), "");
  EXPECT_EQ(compare_gradients(g.dz, numeric_gradient(s.z, f), kFdTol, "dz"), "");
  EXPECT_EQ(compare_gradients(g.dA, numeric_gradient(s.A, f), kFdTol, "dA"), "");
  EXPECT_EQ(compare_gradients(g.dD, numeric_gradient(s.D, f), kFdTol, "dD"), "");
  EXPECT_EQ(compare_gradients(g.dbias, numeric_gradient(s.bias, f), kFdTol, "ddelta_bias"), "");
  EXPECT_EQ(compare_gradients(g.dh0, numeric_gradient(s.h0, f), kFdTol, "dh0"), "");
}

TEST(PackedScan, ConstantSeqIdxIsBitwiseNullptr) {
  const idx_t B = 2, T = kScanChunk + 9, Di = 3, N = 5;
  const Idx seq(B * T, 42);
  ScanIn a = random_scan(B, T, Di, N, 14), b = a;
  const ScanOut x = run_scan(a, seq.data()), y = run_scan(b, nullptr);
  for (const auto& [u, v, what] : {std::tuple{&x.out, &y.out, "out"}, {&x.h_last, &y.h_last, "h_last"},
                                   {&x.du, &y.du, "du"}, {&x.ddelta, &y.ddelta, "ddelta"}, {&x.dB, &y.dB, "dB"},
                                   {&x.dC, &y.dC, "dC"}, {&x.dz, &y.dz, "dz"}, {&x.dA, &y.dA, "dA"},
                                   {&x.dD, &y.dD, "dD"}, {&x.dbias, &y.dbias, "dbias"}, {&x.dh0, &y.dh0, "dh0"}})
    EXPECT_EQ(std::memcmp(u->data(), v->data(), u->size() * sizeof(double)), 0) << what;
}

// ---- causal conv1d --------------------------------------------------------------------------

namespace {

struct ConvIn {
  idx_t B, T, Di, Kc;
  bool silu = true;
  Vec x, w, bias, state, dout;
  bool with_state = true;
};
struct ConvOut {
  Vec out, state_out, dx, dw, dbias;
};

ConvIn random_conv(idx_t B, idx_t T, idx_t Di, idx_t Kc, uint64_t seed) {
  Rng rng(seed);
  ConvIn c{B, T, Di, Kc};
  c.x = random_vector<double>(B * T * Di, rng);
  c.w = random_vector<double>(Di * Kc, rng);
  c.bias = random_vector<double>(Di, rng);
  c.state = random_vector<double>(B * Di * (Kc - 1), rng);
  c.dout = random_vector<double>(B * T * Di, rng);
  return c;
}

ConvOut run_conv(const ConvIn& c, const int32_t* seq_idx) {
  ConvOut o;
  const idx_t S = c.Kc - 1;
  o.out.assign(c.B * c.T * c.Di, 0.0);
  o.state_out.assign(c.B * c.Di * S, -1.0);
  o.dx.assign(c.B * c.T * c.Di, 0.0);
  o.dw.assign(c.Di * c.Kc, 0.0);
  o.dbias.assign(c.Di, 0.0);
  const double* st = c.with_state ? c.state.data() : nullptr;
  cpu::causal_conv1d_forward(o.out.data(), c.Di, o.state_out.data(), c.x.data(), c.Di, st, seq_idx, c.w.data(),
                             c.bias.data(), c.B, c.T, c.Di, c.Kc, c.silu);
  cpu::causal_conv1d_backward(o.dx.data(), c.Di, o.dw.data(), o.dbias.data(), c.dout.data(), c.Di, c.x.data(), c.Di,
                              st, seq_idx, c.w.data(), c.bias.data(), c.B, c.T, c.Di, c.Kc, c.silu);
  return o;
}

}  // namespace

TEST(PackedConv, PackedRowsEqualTheirDocumentsRunSeparately) {
  // Documents shorter than Kc - 1 (the state_out of a 1- or 2-token last document has zeros
  // before its start), one longer than a 64-token segment of the CUDA kernel, state_in given.
  const idx_t T = 80, Di = 3, Kc = 4, S = Kc - 1;
  Idx seq;
  const std::vector<Doc> docs = layout({{2, 5, 1, 70, 2}, {T}, {66, 13, 1}, {1, T - 1}}, T, seq);
  const idx_t B = 4;
  for (bool silu : {true, false}) {
    ConvIn all = random_conv(B, T, Di, Kc, 21);
    all.silu = silu;
    const ConvOut packed = run_conv(all, seq.data());
    ConvOut sep;
    sep.out.assign(B * T * Di, 0.0); sep.dx = sep.out;
    sep.state_out.assign(B * Di * S, 0.0);
    sep.dw.assign(Di * Kc, 0.0); sep.dbias.assign(Di, 0.0);
    for (const Doc& d : docs) {
      ConvIn c{1, d.len, Di, Kc, silu};
      c.x = slice(all.x, T, Di, d); c.dout = slice(all.dout, T, Di, d);
      c.w = all.w; c.bias = all.bias;
      c.state = row_of(all.state, Di * S, d.b); c.with_state = d.first;  // state_in: the first document's
      const ConvOut o = run_conv(c, nullptr);
      put(sep.out, o.out, T, Di, d); put(sep.dx, o.dx, T, Di, d);
      if (d.last) std::copy(o.state_out.begin(), o.state_out.end(), sep.state_out.begin() + d.b * Di * S);
      add_to(sep.dw, o.dw); add_to(sep.dbias, o.dbias);
    }
    const std::string tag = silu ? " (silu)" : " (linear)";
    expect_close(packed.out, sep.out, kSame, "out" + tag);
    expect_close(packed.state_out, sep.state_out, kSame, "state_out (the last document's inputs)" + tag);
    expect_close(packed.dx, sep.dx, kSame, "dx" + tag);
    expect_close(packed.dw, sep.dw, kSame, "dw" + tag);
    expect_close(packed.dbias, sep.dbias, kSame, "dbias" + tag);
  }
}

TEST(PackedConv, BackwardMatchesFiniteDifferences) {
  const idx_t T = 11, Di = 2, Kc = 4;
  Idx seq;
  layout({{2, 1, 6, 2}, {T}}, T, seq);
  for (bool silu : {true, false}) {
    ConvIn c = random_conv(2, T, Di, Kc, 22);
    c.silu = silu;
    Vec out(c.B * T * Di);
    auto f = [&] {
      cpu::causal_conv1d_forward(out.data(), Di, (double*)nullptr, c.x.data(), Di, c.state.data(), seq.data(),
                                 c.w.data(), c.bias.data(), c.B, T, Di, Kc, silu);
      return dot(out, c.dout);
    };
    const ConvOut g = run_conv(c, seq.data());
    EXPECT_EQ(compare_gradients(g.dx, numeric_gradient(c.x, f), kFdTol, "dx"), "");
    EXPECT_EQ(compare_gradients(g.dw, numeric_gradient(c.w, f), kFdTol, "dw"), "");
    EXPECT_EQ(compare_gradients(g.dbias, numeric_gradient(c.bias, f), kFdTol, "dbias"), "");
    // state_in reaches only the first document (tokens 0, 1 of row 0; all of row 1).
    const Vec ns = numeric_gradient(c.state, f);
    for (idx_t ch = 0; ch < Di; ++ch)
      for (idx_t j = 0; j < Kc - 1; ++j) EXPECT_NE(ns[(1 * Di + ch) * (Kc - 1) + j], 0.0);
    double reach = 0;
    for (idx_t t = 2; t < T; ++t) {  // an output of a later document of row 0 moves with no state entry
      Vec probe(c.dout.size(), 0.0);
      for (idx_t ch = 0; ch < Di; ++ch) probe[t * Di + ch] = 1.0;
      Vec st = c.state;
      auto h = [&] {
        cpu::causal_conv1d_forward(out.data(), Di, (double*)nullptr, c.x.data(), Di, st.data(), seq.data(),
                                   c.w.data(), c.bias.data(), c.B, T, Di, Kc, silu);
        return dot(out, probe);
      };
      for (double v : numeric_gradient(st, h)) reach = std::max(reach, std::abs(v));
    }
    EXPECT_EQ(reach, 0.0) << "the carried state reaches a later document";
  }
}

TEST(PackedConv, ConstantSeqIdxIsBitwiseNullptr) {
  const idx_t B = 2, T = 9, Di = 5, Kc = 4;
  const Idx seq(B * T, -3);
  const ConvIn c = random_conv(B, T, Di, Kc, 23);
  const ConvOut x = run_conv(c, seq.data()), y = run_conv(c, nullptr);
  for (const auto& [u, v, what] : {std::tuple{&x.out, &y.out, "out"}, {&x.state_out, &y.state_out, "state_out"},
                                   {&x.dx, &y.dx, "dx"}, {&x.dw, &y.dw, "dw"}, {&x.dbias, &y.dbias, "dbias"}})
    EXPECT_EQ(std::memcmp(u->data(), v->data(), u->size() * sizeof(double)), 0) << what;
}

// ---- whole models ---------------------------------------------------------------------------

namespace {

ModelConfig pack_config(const std::string& layers) {
  return ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": 2, "vocab_size": 13, "d_state": 3, "d_conv": 3, "expand": 2,
                     "pad_vocab_size_multiple": 8, "layers": )" + layers + "}"),
      "test");
}

// Packed rows vs their documents run one at a time through the same model: logits, the carried
// state of the last document, the loss and every parameter gradient. Routed layers have
// aux_coef = 0 so the objective is a sum over tokens (the load-balancing loss couples a batch).
void expect_model_packing_exact(const ModelConfig& cfg) {
  const idx_t T = 21, V = cfg.padded_vocab();
  Idx seq;
  const std::vector<Doc> docs = layout({{6, 1, 14}, {T}, {2, 19}}, T, seq);
  const idx_t B = 3;
  LanguageModel<double> m(cfg);
  m.init(5);
  Rng rng(6);
  Idx ids(B * T), targets(B * T);
  for (auto& v : ids) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  for (auto& v : targets) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  targets[4] = -1;  // an ignored target inside a document

  m.prepare(B, T, true);
  m.zero_grads();
  const LossResult packed = m.loss(ids.data(), targets.data(), B, T, true, nullptr, nullptr, seq.data());
  std::vector<double> g_packed(m.table().total());
  m.download_grads(g_packed.data());
  std::vector<double> logits_packed(B * T * V);
  m.prepare(B, T, false);
  std::vector<char> state(m.state_bytes(B));
  m.forward_logits(logits_packed.data(), ids.data(), B, T, nullptr, state.data(), seq.data());
  // The carried state is checked by what it does: a continuation of every row's last document,
  // run from it, gives the logits of that document's separate run continued the same way (the
  // state layout is the mixers' business).
  const idx_t Tc = 4;
  Idx cont(B * Tc);
  for (auto& v : cont) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  std::vector<double> cont_packed(B * Tc * V), cont_sep(B * Tc * V, 0.0);
  m.forward_logits(cont_packed.data(), cont.data(), B, Tc, state.data(), nullptr);
  std::vector<double> g_sep(m.table().total(), 0.0), logits_sep(B * T * V, 0.0);
  double ce_sum = 0;
  int64_t count = 0;
  for (const Doc& d : docs) {
    const Idx di(ids.begin() + d.b * T + d.t0, ids.begin() + d.b * T + d.t0 + d.len);
    const Idx dt(targets.begin() + d.b * T + d.t0, targets.begin() + d.b * T + d.t0 + d.len);
    m.prepare(1, T, true);
    m.zero_grads();
    const LossResult r = m.loss(di.data(), dt.data(), 1, d.len, true);
    std::vector<double> g(m.table().total());
    m.download_grads(g.data());
    for (size_t i = 0; i < g.size(); ++i) g_sep[i] += g[i] * double(r.count);  // mean -> sum
    ce_sum += r.ce * double(r.count);
    count += r.count;
    m.prepare(1, T, false);
    std::vector<double> lg(d.len * V);
    std::vector<char> st(m.state_bytes(1));
    m.forward_logits(lg.data(), di.data(), 1, d.len, nullptr, st.data());
    std::copy(lg.begin(), lg.end(), logits_sep.begin() + (d.b * T + d.t0) * V);
    if (d.last) m.forward_logits(cont_sep.data() + d.b * Tc * V, cont.data() + d.b * Tc, 1, Tc, st.data(), nullptr);
  }
  for (auto& g : g_sep) g /= double(count);
  EXPECT_EQ(packed.count, count);
  EXPECT_NEAR(packed.ce, ce_sum / double(count), kSame * packed.ce);
  EXPECT_LE(max_rel_diff(logits_packed.data(), logits_sep.data(), logits_sep.size()), kSame) << "logits";
  EXPECT_LE(max_rel_diff(cont_packed.data(), cont_sep.data(), cont_sep.size()), kSame)
      << "logits of a continuation from the carried state (the last document's)";
  // Gradients tensor by tensor, each relative to its own size.
  m.table().visit([&](const ParamInfo& p) {
    EXPECT_LE(max_rel_diff(g_packed.data() + p.offset, g_sep.data() + p.offset, p.numel), 1e-10) << p.name;
  });
}

}  // namespace

TEST(PackedModel, DenseMambaEqualsDocumentsRunSeparately) {
  expect_model_packing_exact(pack_config(R"(["mamba", "mamba"])"));
}

TEST(PackedModel, EveryMixerTypeEqualsDocumentsRunSeparately) {
  // RoM (shared conv / scan through SsmCore), Swimba and separated (their own conv / scan calls),
  // and the per-token feed-forward layers in one hybrid stack.
  ModelConfig cfg = ModelConfig::from_json(
      Json::parse(R"({"d_model": 8, "n_layer": 5, "vocab_size": 13, "d_state": 3, "d_conv": 3, "expand": 2,
                     "pad_vocab_size_multiple": 8, "layers": [
                       {"type": "rom", "n_experts": 3, "top_k": 2, "aux_coef": 0},
                       {"type": "swimba", "n_experts": 3, "top_k": 2, "aux_coef": 0},
                       {"type": "separated_moe_ssm", "n_experts": 3, "top_k": 2, "aux_coef": 0},
                       {"type": "mlp"},
                       {"type": "moe_mlp", "n_experts": 3, "top_k": 1, "aux_coef": 0}]})"),
      "test");
  expect_model_packing_exact(cfg);
}

TEST(PackedModel, RefusesLayersWithoutSeqIdxSupport) {
  // RoM's conv1d experts (experts_in conv1d) have no seq_idx yet: the model says so and refuses.
  ModelConfig cfg = pack_config(
      R"([{"type": "rom", "n_experts": 2, "top_k": 1, "experts_in": ["conv_proj", "gate_proj", "out_proj", "conv1d"]},
          "mamba"])");
  LanguageModel<double> m(cfg);
  m.init(1);
  EXPECT_NE(m.seq_idx_missing().find("layer 0 (rom)"), std::string::npos) << m.seq_idx_missing();
  EXPECT_EQ(LanguageModel<double>(pack_config(R"(["mamba", "mlp"])")).seq_idx_missing(), "");
  m.prepare(1, 4, true);
  const Idx ids{1, 2, 3, 4}, tg{2, 3, 4, 5}, seq{0, 0, 1, 1};
  try {
    m.loss(ids.data(), tg.data(), 1, 4, true, nullptr, nullptr, seq.data());
    ADD_FAILURE() << "a packed batch was accepted by a layer that cannot reset";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("packed documents"), std::string::npos) << e.what();
  }
}

// ---- the trainer's document index -------------------------------------------------------------

TEST(Packing, DocumentIndexFromSeparators) {
  const int32_t E = 9;  // the separator (end-of-text) id
  const idx_t T = 6;
  // rows: separator inside; at the row start; at the row end; two in a row; none (a document
  // longer than the row); only separators
  const Idx ids{5, 1, E, 2, 3, 4,  //
                E, 1, 2, 3, 4, 5,  //
                1, 2, 3, 4, 5, E,  //
                1, E, E, 2, 3, 4,  //
                1, 2, 3, 4, 5, 6,  //
                E, E, E, E, E, E};
  const Idx want{0, 0, 1, 1, 1, 1,  // the separator starts the next document
                 0, 0, 0, 0, 0, 0,  // at t = 0 it starts nothing (position 0 never is a start)
                 0, 0, 0, 0, 0, 1,  // at the end: a one-token last document
                 0, 1, 2, 2, 2, 2,  // consecutive: a one-token document between them
                 0, 0, 0, 0, 0, 0,  // no separator: one document
                 0, 1, 2, 3, 4, 5};
  const idx_t B = idx_t(ids.size()) / T;
  Idx seq(ids.size(), -7);
  const int64_t starts = document_index_from_separators(seq.data(), ids.data(), B, T, E);
  EXPECT_EQ(seq, want);
  EXPECT_EQ(starts, 1 + 0 + 1 + 2 + 0 + 5);
  // The index the trainer builds resets the scan exactly where the documents start.
  ScanIn s = random_scan(B, T, 2, 2, 31);
  const ScanOut with = run_scan(s, seq.data());
  for (idx_t b = 0; b < B; ++b)
    for (idx_t t = 1; t < T; ++t) {
      const bool start = ids[b * T + t] == E;
      // at a start the output depends only on token t: h = Δ·B·u (state 0 entering it)
      const idx_t bt = b * T + t;
      for (idx_t c = 0; c < 2; ++c) {
        const double dt = softplus_of(s.delta[bt * 2 + c] + s.bias[c]), u = s.u[bt * 2 + c];
        double y = s.D[c] * u;
        for (idx_t n = 0; n < 2; ++n) y += s.Cm[bt * 2 + n] * dt * s.Bm[bt * 2 + n] * u;
        y *= silu_of(s.z[bt * 2 + c]);
        if (start) EXPECT_NEAR(with.out[bt * 2 + c], y, 1e-14) << "b=" << b << " t=" << t;
      }
    }
}
