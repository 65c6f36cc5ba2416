// The `attention` layer (docs/hybrid.md) and its ops in double precision on the CPU:
// - rope: the Llama rotate-half formula, norm preserved, in place = out of place, backward
//   against finite differences, positions taken from the state's start positions;
// - attention: against a naive masked-softmax reference (the full T×T score matrix), backward
//   against finite differences for full / windowed attention, GQA and a ring-buffer cache that
//   wrapped; window >= T equals full causal attention bitwise; cached keys + new tokens equal
//   one pass over the whole sequence; kv_cache_append's ring layout;
// - the layer: finite-difference gradients of every parameter and the input (MHA, GQA,
//   windowed, with a carried KV cache), option errors naming the field, names and accounting
//   (attention FLOPs count the window);
// - models: prefill + single steps equal one pass for Samba-, Jamba- and RoM-style stacks,
//   also with a window smaller than the prompt and prefill chunks longer than the window (the
//   ring buffer wraps inside one call); whole-model finite differences with a carried state;
//   a state file round trip; the decoder's max_context bound; bitwise determinism; checkpoint
//   round trip with Llama names; the example configs; a short training run of the Samba-style
//   config.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "expect_error.h"
#include "infer/decoder.h"
#include "infer/state_file.h"
#include "io/safetensors.h"
#include "mixer_harness.h"
#include "model/attention_mixer.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/language_model.h"
#include "model_checks.h"
#include "ops/attention.h"
#include "ops/kv_cache.h"
#include "ops/rope.h"
#include "testing.h"
#include "io/file_util.h"
#include "train/trainer.h"

using namespace moessm;
using namespace moessm::testing;
using Vec = std::vector<double>;

namespace {

ModelConfig tiny(const std::string& layers, int n_layer) { return tiny_stack(layers, n_layer); }

// ---- a naive reference: the whole masked score matrix of one (b, h) ----------------------------

struct OpCase {
  idx_t B = 2, T = 7, H = 4, Hkv = 2, hd = 4, W = 0, C = 0;
  std::vector<double> pos;  // [B] start positions (empty: none)
  idx_t row() const { return (H + 2 * Hkv) * hd; }  // fused q|k|v token stride
};

AttentionParams<double, double> params_of(const OpCase& c, const Vec& qkv, const Vec* kc, const Vec* vc) {
  AttentionParams<double, double> p;
  p.q = qkv.data();
  p.k = qkv.data() + c.H * c.hd;
  p.v = qkv.data() + (c.H + c.Hkv) * c.hd;
  p.q_ld = p.k_ld = p.v_ld = c.row();
  if (kc) {
    p.k_cache = kc->data();
    p.v_cache = vc->data();
    p.C = c.C;
  }
  p.pos0 = c.pos.empty() ? nullptr : c.pos.data();
  p.B = c.B;
  p.T = c.T;
  p.H = c.H;
  p.Hkv = c.Hkv;
  p.hd = c.hd;
  p.window = c.W;
  return p;
}

// out [B, T, H·hd] of attention over the full sequences kk, vv [B, L, Hkv·hd] whose last T
// positions are the queries q [B, T, H·hd]: softmax over an explicit masked L-row of scores.
Vec naive_attention(const Vec& q, const Vec& kk, const Vec& vv, idx_t B, idx_t T, idx_t L, idx_t H, idx_t Hkv,
                    idx_t hd, idx_t W) {
  Vec out(size_t(B * T * H * hd), 0.0);
  for (idx_t b = 0; b < B; ++b)
    for (idx_t h = 0; h < H; ++h)
      for (idx_t t = 0; t < T; ++t) {
        const idx_t i = L - T + t, g = h / (H / Hkv);
        Vec s(size_t(L), -INFINITY);
        double mx = -INFINITY;
        for (idx_t j = 0; j < L; ++j) {
          const bool visible = j <= i && (W == 0 || j > i - W);
          if (!visible) continue;
          double d = 0;
          for (idx_t x = 0; x < hd; ++x) d += q[((b * T + t) * H + h) * hd + x] * kk[((b * L + j) * Hkv + g) * hd + x];
          s[size_t(j)] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (idx_t j = 0; j < L; ++j) sum += std::exp(s[size_t(j)] - mx);
        for (idx_t j = 0; j < L; ++j) {
          const double pj = std::exp(s[size_t(j)] - mx) / sum;
          for (idx_t x = 0; x < hd; ++x)
            out[((b * T + t) * H + h) * hd + x] += pj * vv[((b * L + j) * Hkv + g) * hd + x];
        }
      }
  return out;
}

// The q, k, v blocks of a fused [B, T, row] buffer as contiguous arrays.
Vec block(const Vec& qkv, const OpCase& c, idx_t off, idx_t width) {
  Vec r(size_t(c.B * c.T * width));
  for (idx_t m = 0; m < c.B * c.T; ++m)
    for (idx_t x = 0; x < width; ++x) r[m * width + x] = qkv[m * c.row() + off + x];
  return r;
}

// Σ out ⊙ R of attention_forward and, with backward, d/d(qkv) of it (assigned).
double attention_objective(const OpCase& c, const Vec& qkv, const Vec* kc, const Vec* vc, const Vec& R,
                           Vec* dqkv = nullptr) {
  const idx_t Y = c.H * c.hd;
  Vec out(size_t(c.B * c.T * Y)), lse(size_t(c.B * c.H * c.T));
  const auto p = params_of(c, qkv, kc, vc);
  cpu::attention_forward(out.data(), Y, lse.data(), p);
  double L = 0;
  for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
  if (dqkv) {
    dqkv->assign(qkv.size(), 1e3);  // stale values would show
    Vec delta(lse.size());
    cpu::attention_backward(dqkv->data(), c.row(), dqkv->data() + Y, c.row(), dqkv->data() + Y + c.Hkv * c.hd,
                            c.row(), delta.data(), R.data(), Y, out.data(), Y, lse.data(), p);
  }
  return L;
}

}  // namespace

// ---- rope -----------------------------------------------------------------------------------

TEST(RopeOp, RotateHalfFormulaNormInPlaceAndFiniteDifferences) {
  const idx_t B = 2, T = 5, nh = 3, hd = 6, ld = nh * hd + 2;
  const double theta = 500.0;
  Rng rng(1);
  Vec x = random_vector<double>(size_t(B * T * ld), rng);
  const Vec pos0 = {0.0, 7.0};  // sequence 1 starts at position 7
  Vec y(x.size(), 0.0);
  cpu::rope_forward(y.data(), ld, x.data(), ld, pos0.data(), B, T, nh, hd, theta);
  for (idx_t b = 0; b < B; ++b)
    for (idx_t t = 0; t < T; ++t)
      for (idx_t h = 0; h < nh; ++h) {
        const idx_t o = (b * T + t) * ld + h * hd;
        double n0 = 0, n1 = 0;
        for (idx_t i = 0; i < hd / 2; ++i) {
          const double a = double(pos0[size_t(b)] + t) * std::pow(theta, -2.0 * i / hd);
          EXPECT_NEAR(y[o + i], x[o + i] * std::cos(a) - x[o + i + hd / 2] * std::sin(a), 1e-14);
          EXPECT_NEAR(y[o + i + hd / 2], x[o + i + hd / 2] * std::cos(a) + x[o + i] * std::sin(a), 1e-14);
        }
        for (idx_t i = 0; i < hd; ++i) {
          n0 += x[o + i] * x[o + i];
          n1 += y[o + i] * y[o + i];
        }
        EXPECT_NEAR(n0, n1, 1e-13);
      }
  Vec z = x;
  cpu::rope_forward(z.data(), ld, z.data(), ld, pos0.data(), B, T, nh, hd, theta);  // in place
  for (idx_t m = 0; m < B * T; ++m)
    for (idx_t i = 0; i < nh * hd; ++i) EXPECT_EQ(z[m * ld + i], y[m * ld + i]);
  // position 0 (no pos0) is the identity
  Vec id(x.size(), 0.0);
  cpu::rope_forward(id.data(), ld, x.data(), ld, (const double*)nullptr, B, 1, nh, hd, theta);
  for (idx_t i = 0; i < nh * hd; ++i) EXPECT_EQ(id[i], x[i]);
  // backward against finite differences (the padding columns: 0 in both)
  Vec R = random_vector<double>(size_t(B * T * nh * hd), rng);
  auto objective = [&] {
    Vec o(size_t(B * T * nh * hd));
    cpu::rope_forward(o.data(), nh * hd, x.data(), ld, pos0.data(), B, T, nh, hd, theta);
    double L = 0;
    for (size_t i = 0; i < o.size(); ++i) L += o[i] * R[i];
    return L;
  };
  Vec dx(x.size(), 0.0);
  cpu::rope_backward(dx.data(), ld, R.data(), nh * hd, pos0.data(), B, T, nh, hd, theta);
  EXPECT_EQ(compare_gradients(dx, numeric_gradient(x, objective), 1e-8, "dx"), "");
  EXPECT_EQ(decode_rope_position(0.49), 0);
  EXPECT_EQ(decode_rope_position(-3.0), 0);
  EXPECT_EQ(decode_rope_position(41.0), 41);
}

// ---- attention op -----------------------------------------------------------------------------

TEST(AttentionOp, MatchesTheNaiveMaskedSoftmax) {
  for (idx_t W : {0, 1, 3, 7, 20})
    for (idx_t Hkv : {1, 2, 4}) {
      OpCase c;
      c.W = W;
      c.Hkv = Hkv;
      Rng rng(uint64_t(W * 10 + Hkv));
      const Vec qkv = random_vector<double>(size_t(c.B * c.T * c.row()), rng, -2, 2);
      Vec out(size_t(c.B * c.T * c.H * c.hd)), lse(size_t(c.B * c.H * c.T));
      cpu::attention_forward(out.data(), c.H * c.hd, lse.data(), params_of(c, qkv, nullptr, nullptr));
      const Vec ref = naive_attention(block(qkv, c, 0, c.H * c.hd), block(qkv, c, c.H * c.hd, Hkv * c.hd),
                                      block(qkv, c, (c.H + Hkv) * c.hd, Hkv * c.hd), c.B, c.T, c.T, c.H, Hkv, c.hd, W);
      EXPECT_LE(max_rel_diff(out.data(), ref.data(), out.size()), 1e-14) << "W=" << W << " Hkv=" << Hkv;
      // W = 1: each token sees only itself, so out = its own v and lse = its own score
      if (W == 1)
        for (idx_t t = 0; t < c.T; ++t)
          for (idx_t x = 0; x < c.hd; ++x)
            EXPECT_NEAR(out[t * c.H * c.hd + x], qkv[t * c.row() + (c.H + Hkv) * c.hd + x], 1e-14);
    }
}

TEST(AttentionOp, WindowAtLeastTEqualsFullCausalAttentionBitwise) {
  OpCase c;
  Rng rng(3);
  const Vec qkv = random_vector<double>(size_t(c.B * c.T * c.row()), rng, -2, 2);
  Vec full(size_t(c.B * c.T * c.H * c.hd)), lse0(size_t(c.B * c.H * c.T));
  cpu::attention_forward(full.data(), c.H * c.hd, lse0.data(), params_of(c, qkv, nullptr, nullptr));
  for (idx_t W : {c.T, c.T + 1, idx_t(1000)}) {
    c.W = W;
    Vec out(full.size()), lse(lse0.size());
    cpu::attention_forward(out.data(), c.H * c.hd, lse.data(), params_of(c, qkv, nullptr, nullptr));
    EXPECT_EQ(0, std::memcmp(out.data(), full.data(), full.size() * sizeof(double))) << W;
    EXPECT_EQ(0, std::memcmp(lse.data(), lse0.data(), lse.size() * sizeof(double))) << W;
  }
  c.W = c.T - 1;  // a window smaller than T differs
  Vec out(full.size()), lse(lse0.size());
  cpu::attention_forward(out.data(), c.H * c.hd, lse.data(), params_of(c, qkv, nullptr, nullptr));
  EXPECT_GT(max_rel_diff(out.data(), full.data(), full.size()), 1e-6);
}

TEST(AttentionOp, BackwardMatchesFiniteDifferences) {
  struct V {
    idx_t W, Hkv, C;
    std::vector<double> pos;
  };
  // full, window, GQA, MQA; with caches: full attention within the cache, a window whose ring
  // wrapped (positions 9 and 12 in a 3-slot cache), a window with a larger cache
  const std::vector<V> variants = {{0, 4, 0, {}},       {3, 2, 0, {}},        {0, 1, 0, {}},
                                   {0, 2, 6, {2, 5}},   {3, 2, 3, {9, 12}},   {4, 1, 6, {1, 30}}};
  uint64_t seed = 20;
  for (const V& v : variants) {
    OpCase c;
    c.W = v.W;
    c.Hkv = v.Hkv;
    c.C = v.C;
    c.pos = v.pos;
    c.T = 5;
    SCOPED_TRACE("W=" + std::to_string(c.W) + " Hkv=" + std::to_string(c.Hkv) + " C=" + std::to_string(c.C));
    Rng rng(++seed);
    Vec qkv = random_vector<double>(size_t(c.B * c.T * c.row()), rng, -1.5, 1.5);
    const Vec kc = random_vector<double>(size_t(c.B * c.C * c.Hkv * c.hd), rng), vc = random_vector<double>(kc.size(), rng);
    const Vec R = random_vector<double>(size_t(c.B * c.T * c.H * c.hd), rng);
    const Vec* k = c.C ? &kc : nullptr;
    const Vec* vv = c.C ? &vc : nullptr;
    Vec d;
    attention_objective(c, qkv, k, vv, R, &d);
    const Vec num = numeric_gradient(qkv, [&] { return attention_objective(c, qkv, k, vv, R); });
    EXPECT_EQ(compare_gradients(d, num, 1e-7, "dqkv"), "");
  }
}

// Keys of the first P positions in the ring cache + T new tokens = the last T rows of one pass
// over P + T tokens (the cache wrapped: P > C for the window).
TEST(AttentionOp, CachedKeysPlusNewTokensEqualOnePass) {
  for (idx_t W : {0, 3, 4}) {
    const idx_t B = 2, P = 9, T = 4, L = P + T, H = 4, Hkv = 2, hd = 4;
    const idx_t C = W > 0 ? W : 16;
    OpCase all;
    all.B = B, all.T = L, all.H = H, all.Hkv = Hkv, all.hd = hd, all.W = W;
    Rng rng(uint64_t(40 + W));
    const Vec qkv = random_vector<double>(size_t(B * L * all.row()), rng, -2, 2);
    Vec full(size_t(B * L * H * hd)), lse(size_t(B * H * L));
    cpu::attention_forward(full.data(), H * hd, lse.data(), params_of(all, qkv, nullptr, nullptr));
    // the cache after the first P positions, appended in two calls (5 then 4 tokens)
    Vec kc(size_t(B * C * Hkv * hd), 0.0), vc(kc.size(), 0.0), pos(size_t(B), 0.0);
    for (auto [t0, n] : {std::pair<idx_t, idx_t>{0, 5}, {5, 4}}) {
      Vec kn(size_t(B * n * Hkv * hd)), vn(kn.size());
      for (idx_t b = 0; b < B; ++b)
        for (idx_t t = 0; t < n; ++t)
          for (idx_t x = 0; x < Hkv * hd; ++x) {
            kn[(b * n + t) * Hkv * hd + x] = qkv[(b * L + t0 + t) * all.row() + H * hd + x];
            vn[(b * n + t) * Hkv * hd + x] = qkv[(b * L + t0 + t) * all.row() + (H + Hkv) * hd + x];
          }
      cpu::kv_cache_append(kc.data(), vc.data(), pos.data(), kn.data(), Hkv * hd, vn.data(), Hkv * hd, B, n, C, Hkv, hd);
    }
    EXPECT_EQ(pos, (Vec{double(P), double(P)}));
    OpCase tail = all;
    tail.T = T;
    tail.C = C;
    tail.pos = pos;
    Vec qkv_tail(size_t(B * T * all.row()));
    for (idx_t b = 0; b < B; ++b)
      std::copy_n(&qkv[(b * L + P) * all.row()], T * all.row(), &qkv_tail[b * T * all.row()]);
    Vec out(size_t(B * T * H * hd)), lse_t(size_t(B * H * T));
    cpu::attention_forward(out.data(), H * hd, lse_t.data(), params_of(tail, qkv_tail, &kc, &vc));
    for (idx_t b = 0; b < B; ++b)
      EXPECT_LE(max_rel_diff(&out[b * T * H * hd], &full[(b * L + P) * H * hd], size_t(T * H * hd)), 1e-14) << W;
  }
}

TEST(AttentionOp, KvCacheAppendKeepsTheLastCPositionsInSlotPModC) {
  const idx_t B = 1, C = 3, Hkv = 1, hd = 2;
  Vec kc(size_t(C * hd), -1.0), vc(kc.size(), -1.0), pos = {0.0};
  Vec k(size_t(5 * hd)), v(k.size());
  for (idx_t t = 0; t < 5; ++t)
    for (idx_t x = 0; x < hd; ++x) k[t * hd + x] = 10.0 * t + x, v[t * hd + x] = -10.0 * t - x;
  cpu::kv_cache_append(kc.data(), vc.data(), pos.data(), k.data(), hd, v.data(), hd, B, 5, C, Hkv, hd);
  EXPECT_EQ(pos[0], 5.0);
  // positions 2, 3, 4 in slots 2, 0, 1
  EXPECT_EQ(kc, (Vec{30, 31, 40, 41, 20, 21}));
  EXPECT_EQ(vc, (Vec{-30, -31, -40, -41, -20, -21}));
  cpu::kv_cache_append(kc.data(), vc.data(), pos.data(), k.data(), hd, v.data(), hd, B, 1, C, Hkv, hd);  // position 5
  EXPECT_EQ(kc, (Vec{30, 31, 40, 41, 0, 1}));
  EXPECT_EQ(pos[0], 6.0);
}

TEST(AttentionOp, AMissingKeyIsAnErrorNamingThePosition) {
  OpCase c;
  c.C = 4;
  c.pos = {5.0, 0.0};  // full attention at position 5 with 4 cached positions: key 0 is gone
  Rng rng(1);
  const Vec qkv = random_vector<double>(size_t(c.B * c.T * c.row()), rng);
  const Vec kc(size_t(c.B * c.C * c.Hkv * c.hd), 0.0);
  Vec out(size_t(c.B * c.T * c.H * c.hd)), lse(size_t(c.B * c.H * c.T));
  EXPECT_ERROR_HAS(cpu::attention_forward(out.data(), c.H * c.hd, lse.data(), params_of(c, qkv, &kc, &kc)),
                   "sequence 0", "position 5", "cache holds 4");
  c.Hkv = 3;
  EXPECT_ERROR_HAS(cpu::attention_forward(out.data(), c.H * c.hd, lse.data(), params_of(c, qkv, nullptr, nullptr)),
                   "n_kv_heads 3", "n_heads 4");
}

// ---- the layer --------------------------------------------------------------------------------

namespace {
const char* kPrefix = "backbone.layers.0.self_attn.";

// A valid carried state for the harness's layer: random cached keys and values, start
// positions `pos` (one per sequence).
Vec attention_state(const MixerHarness& h, const std::vector<double>& pos, Rng& rng) {
  const auto& m = dynamic_cast<const AttentionMixer<CpuBackend<double>>&>(*h.mixer);
  const idx_t n = h.B * m.cache_len() * m.options().n_kv_heads * m.options().head_dim;
  Vec s = random_vector<double>(size_t(2 * n), rng);
  s.insert(s.end(), pos.begin(), pos.end());
  EXPECT_EQ(s.size(), size_t(h.B * h.mixer->state_size()));
  return s;
}

void check_layer_gradients(const std::string& spec, uint64_t seed, const std::vector<double>& pos = {}) {
  SCOPED_TRACE(spec);
  MixerHarness h(tiny(spec, 1), spec, 2, 6, seed, kPrefix);
  Rng rng(seed, 5);
  const Vec u = random_vector<double>(size_t(h.M() * h.D()), rng);
  const Vec R = random_vector<double>(u.size(), rng);
  const Vec st = pos.empty() ? Vec() : attention_state(h, pos, rng);
  const Vec* s = pos.empty() ? nullptr : &st;
  Vec du;
  h.value_and_grad(u, R, 0.0, &du, s);
  const Vec analytic = h.grads;
  const Vec num_p = numeric_gradient(h.params, [&] { return h.value(u, R, 0.0, s); });
  h.table.visit([&](const ParamInfo& p) {
    Vec a(analytic.begin() + p.offset, analytic.begin() + p.offset + p.numel);
    Vec n(num_p.begin() + p.offset, num_p.begin() + p.offset + p.numel);
    EXPECT_EQ(compare_gradients(a, n, 1e-6, p.name), "");
    double mx = 0;
    for (double v : n) mx = std::max(mx, std::fabs(v));
    EXPECT_GT(mx, 1e-4) << p.name << ": the objective should depend on every tensor";
  });
  Vec uu = u;
  const Vec num_u = numeric_gradient(uu, [&] { return h.value(uu, R, 0.0, s); });
  EXPECT_EQ(compare_gradients(du, num_u, 1e-6, "du"), "");
}
}  // namespace

TEST(AttentionMixer, GradientsMatchFiniteDifferences) {
  check_layer_gradients(R"({"type": "attention", "n_heads": 2})", 1);                               // MHA, hd 4
  check_layer_gradients(R"({"type": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 6, "window": 3})", 2);
  check_layer_gradients(R"({"type": "attention", "n_heads": 2, "n_kv_heads": 1, "rope_theta": 50.0})", 3);
  // with a carried KV cache: full attention at positions 3 and 7 of a 10-position cache; a
  // window of 3 whose 3-slot ring wrapped (positions 8 and 20)
  check_layer_gradients(R"({"type": "attention", "n_heads": 2, "max_context": 16})", 4, {3, 7});
  check_layer_gradients(R"({"type": "attention", "n_heads": 4, "n_kv_heads": 2, "window": 3})", 5, {8, 20});
}

TEST(AttentionMixer, WindowAtLeastTEqualsFullAttention) {
  const idx_t T = 6;
  MixerHarness full(tiny(R"("mlp")", 1), R"({"type": "attention", "n_heads": 2, "n_kv_heads": 1})", 2, T, 3, kPrefix);
  MixerHarness win(tiny(R"("mlp")", 1), R"({"type": "attention", "n_heads": 2, "n_kv_heads": 1, "window": 6})", 2, T, 4,
                   kPrefix);
  win.params = full.params;
  Rng rng(1);
  const Vec u = random_vector<double>(size_t(full.M() * full.D()), rng), R = random_vector<double>(u.size(), rng);
  Vec o1, o2, du1, du2;
  full.forward(o1, u);
  win.forward(o2, u);
  EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(double)));
  full.value_and_grad(u, R, 0, &du1);
  win.value_and_grad(u, R, 0, &du2);
  EXPECT_EQ(0, std::memcmp(du1.data(), du2.data(), du1.size() * sizeof(double)));
  EXPECT_EQ(0, std::memcmp(full.grads.data(), win.grads.data(), full.grads.size() * sizeof(double)));
}

TEST(AttentionMixer, BadOptionsAreErrorsNamingTheFileLayerAndField) {
  auto cfg = [](const std::string& layer) { return tiny(R"("mamba", )" + layer, 2); };
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention"})"), "test.json", "layers[1]", "'n_heads' is required");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 3})"), "layers[1]", "head_dim", "8 / 3");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 4, "n_kv_heads": 3})"), "'n_kv_heads'", "divide");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 2, "n_kv_heads": 4})"), "'n_kv_heads'", "[1, 2]");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 2, "head_dim": 5})"), "'head_dim'", "even");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 2, "window": -1})"), "'window'", "found -1");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 2, "max_context": 0})"), "'max_context'", "[1, 1048576]");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 2, "rope_theta": 0})"), "'rope_theta'", "positive");
  EXPECT_ERROR_HAS(cfg(R"({"type": "attention", "n_heads": 2, "bias": true})"), "unknown option 'bias'", "n_kv_heads");
  // the CUDA kernel's head size limit is named for cuda (the CPU reference takes any size)
  const ModelConfig big = tiny(R"({"type": "attention", "n_heads": 1, "head_dim": 256})", 1);
  EXPECT_EQ(mixer_missing_op(big, big.layers[0], "cpu"), "");
  EXPECT_EQ(mixer_missing_op(big, big.layers[0], "cuda"), "attention with head_dim 256 (cuda: head_dim <= 128)");
  EXPECT_ERROR_HAS(check_model_supported(big, "cuda"), "layer 0", "attention on cuda", "head_dim <= 128");
}

TEST(AttentionMixer, NamesShapesStateAndAccounting) {
  const idx_t D = 8, H = 4, Hkv = 2, hd = 6, W = 5, C = 5;
  LanguageModel<float> m(tiny(R"("mamba", {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 6, "window": 5},
      {"type": "attention", "n_heads": 2, "max_context": 32})", 3));
  const std::string p = "backbone.layers.1.self_attn.";
  EXPECT_EQ(m.table().at(p + "q_proj.weight").shape, (Shape{H * hd, D}));
  EXPECT_EQ(m.table().at(p + "k_proj.weight").shape, (Shape{Hkv * hd, D}));
  EXPECT_EQ(m.table().at(p + "v_proj.weight").shape, (Shape{Hkv * hd, D}));
  EXPECT_EQ(m.table().at(p + "o_proj.weight").shape, (Shape{D, H * hd}));
  for (const ParamInfo& i : m.table().entries())
    if (i.name.rfind(p, 0) == 0) EXPECT_FALSE(i.no_decay) << i.name;
  // state: the ring of C = W slots for the window; max_context slots for full attention
  EXPECT_EQ(m.mixer(1).state_size(), 2 * C * Hkv * hd + 1);
  EXPECT_EQ(m.mixer(2).state_size(), 2 * 32 * 2 * 4 + 1);
  EXPECT_EQ(m.mixer(1).max_positions(), kMaxRopePosition);
  EXPECT_EQ(m.mixer(2).max_positions(), 32);
  EXPECT_EQ(m.max_positions(), 32);
  const MixerCounts c = m.mixer(1).counts();
  EXPECT_EQ(c.total_params, D * (H + 2 * Hkv) * hd + H * hd * D);
  EXPECT_EQ(c.active_params, c.total_params);
  EXPECT_DOUBLE_EQ(c.gemm_flops, 2.0 * double(c.total_params));
  // counted at max_context (4096: no train section): a window of 5 sees 5 keys but the first 4
  const double keys = (5.0 * 6 / 2 + (4096 - 5) * 5.0) / 4096;
  EXPECT_DOUBLE_EQ(attention_mean_keys(4096, W), keys);
  EXPECT_DOUBLE_EQ(c.attention_flops, 4.0 * H * hd * keys);
  EXPECT_DOUBLE_EQ(c.other_flops, kAttentionSoftmaxFlops * H * keys + kRopeFlopsPerElement * (H + Hkv) * hd);
  EXPECT_EQ(c.scan_flops + c.conv_flops + c.router_flops, 0.0);
  // full attention counts the causal mean (L+1)/2 over its context (here max_context 32)
  EXPECT_DOUBLE_EQ(m.mixer(2).counts().attention_flops, 4.0 * 2 * 4 * (33.0 / 2));
  EXPECT_DOUBLE_EQ(m.counts().attention_flops, c.attention_flops + m.mixer(2).counts().attention_flops);
  // a train section's seq_len sets the counted context
  Json j = m.config().to_json();
  j.set("train", Json::parse(R"({"seq_len": 64})"));
  LanguageModel<float> m64(ModelConfig::from_json(j, "t"));
  EXPECT_DOUBLE_EQ(m64.mixer(2).counts().attention_flops, 4.0 * 2 * 4 * (65.0 / 2));
  EXPECT_DOUBLE_EQ(m64.mixer(1).counts().attention_flops, 4.0 * H * hd * attention_mean_keys(64, W));
}

// ---- models -----------------------------------------------------------------------------------

namespace {
const char* kSambaLike = R"("mamba", {"type": "mlp", "d_ff": 16}, {"type": "attention", "n_heads": 2, "window": 5},
                            {"type": "mlp", "d_ff": 16})";
const char* kJambaLike = R"("mamba", {"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 8},
                            {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 4, "max_context": 64},
                            {"type": "mlp", "d_ff": 16})";
const char* kRomLike = R"({"type": "rom", "n_experts": 3, "top_k": 1}, "mlp",
                          {"type": "attention", "n_heads": 2, "n_kv_heads": 1, "window": 7}, "mlp")";
}  // namespace

TEST(AttentionModel, PrefillAndStepsEqualOnePassForEveryStack) {
  for (const char* layers : {kSambaLike, kJambaLike, kRomLike}) {
    SCOPED_TRACE(layers);
    LanguageModel<double> m(tiny(layers, 4));
    randomize(m, 3);
    // a prompt of 13 (> window 5 / 7: the ring wraps inside one call), 3 steps, 24 more in one call
    EXPECT_LT(prefill_steps_vs_one_pass(m, 2, 40, 13, 13), 1e-12);
  }
}

// The decoder with prefill chunks of 3 and of 7 (shorter and longer than the window) and steps.
TEST(AttentionModel, DecoderChunksAndStepsEqualOnePass) {
  LanguageModel<double> m(tiny(kSambaLike, 4));
  randomize(m, 4);
  const idx_t B = 2, L = 30, P = 17, V = m.vocab();
  Rng rng(2);
  std::vector<int32_t> ids(size_t(B * L));
  for (auto& x : ids) x = int32_t(rng.below(13));
  std::vector<double> full(size_t(B * L * V));
  m.prepare(B, L, false);
  m.forward_logits(full.data(), ids.data(), B, L, nullptr, nullptr);
  for (idx_t chunk : {3, 7}) {
    Decoder<double> dec(m, B, chunk);
    std::vector<int32_t> pre(size_t(B * P));
    for (idx_t b = 0; b < B; ++b) std::copy_n(&ids[b * L], P, &pre[b * P]);
    dec.prefill(pre.data(), P);
    double worst = 0;
    for (idx_t t = P;; ++t) {
      for (idx_t b = 0; b < B; ++b)
        worst = std::max(worst, max_rel_diff(dec.logits(b), &full[(b * L + t - 1) * V], size_t(V)));
      if (t == L) break;
      std::vector<int32_t> tok = {ids[t], ids[L + t]};
      dec.step(tok.data());
    }
    EXPECT_LT(worst, 1e-12) << "chunk " << chunk;
  }
}

TEST(AttentionModel, GradientsMatchFiniteDifferencesWithACarriedState) {
  LanguageModel<double> m(tiny(R"("mamba", {"type": "attention", "n_heads": 2, "n_kv_heads": 1, "window": 3},
      {"type": "attention", "n_heads": 2, "max_context": 12})", 3));
  randomize(m, 5);
  const idx_t B = 2, T = 4;
  // the state after 6 tokens (the window's 3-slot ring wrapped)
  std::vector<int32_t> pre = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
  std::vector<double> state(size_t(m.state_size() * B), 0.0), scratch(size_t(B * 6 * m.vocab()));
  m.prepare(B, 6, false);
  m.forward_logits(scratch.data(), pre.data(), B, 6, nullptr, state.data());
  std::vector<int32_t> ids = {1, 4, 7, 2, 9, 12, 0, 3};
  std::vector<int32_t> tg = {4, 7, 2, -1, 12, 0, 3, 11};
  check_gradients_by_fd(m, ids, tg, B, T, &state);  // (without a state: the layer tests above)
}

// Save the decoder state after T1 tokens in a state file, load it into a new decoder, continue:
// equals one pass (the KV cache and its position travel in the file).
TEST(AttentionModel, StateFileRoundTripContinuesTheSequence) {
  LanguageModel<float> m(tiny(kJambaLike, 4));
  randomize(m, 6);
  const idx_t B = 2, T1 = 11, T2 = 6, L = T1 + T2, V = m.vocab();
  Rng rng(3);
  std::vector<int32_t> ids(size_t(B * L));
  for (auto& x : ids) x = int32_t(rng.below(13));
  std::vector<float> full(size_t(B * L * V));
  m.prepare(B, L, false);
  m.forward_logits(full.data(), ids.data(), B, L, nullptr, nullptr);
  auto slice = [&](idx_t t0, idx_t n) {
    std::vector<int32_t> s(size_t(B * n));
    for (idx_t b = 0; b < B; ++b) std::copy_n(&ids[b * L + t0], n, &s[b * n]);
    return s;
  };
  const std::string path = temp_dir("attn_state") + "/s.safetensors";
  {
    Decoder<float> dec(m, B);
    dec.prefill(slice(0, T1).data(), T1);
    save_state_file(path, m, B, dec.state(), dec.logits(), {T1, T1}, {ids[T1 - 1], ids[L + T1 - 1]});
  }
  StateSnapshot<float> s = load_state_file(path, m, B);
  Decoder<float> dec(m, B);
  dec.load(s.state.data(), s.next_logits.data(), T1);
  dec.prefill(slice(T1, T2).data(), T2);
  for (idx_t b = 0; b < B; ++b) EXPECT_LE(max_rel_diff(dec.logits(b), &full[(b * L + L - 1) * V], size_t(V)), 1e-5);
}

TEST(AttentionModel, DecoderRefusesPositionsBeyondMaxContext) {
  LanguageModel<float> m(tiny(R"("mamba", {"type": "attention", "n_heads": 2, "max_context": 8})", 2));
  randomize(m, 1);
  Decoder<float> dec(m, 1, 4);
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6};
  dec.prefill(ids.data(), 6);
  dec.step(ids.data());
  dec.step(ids.data());  // 8 positions: the cache is full
  EXPECT_ERROR_HAS(dec.step(ids.data()), "8 + 1 tokens", "bound of 8 positions", "max_context");
  dec.reset();
  dec.prefill(ids.data(), 6);  // a reset state starts again at position 0
  // a sliding window is not bounded by its cache
  LanguageModel<float> w(tiny(R"("mamba", {"type": "attention", "n_heads": 2, "window": 4, "max_context": 8})", 2));
  randomize(w, 1);
  Decoder<float> dw(w, 1, 4);
  for (int i = 0; i < 3; ++i) dw.prefill(ids.data(), 6);
  EXPECT_EQ(dw.tokens_consumed(), 18);
}

TEST(AttentionModel, DeterministicInitLossAndGradients) {
  const ModelConfig cfg = tiny(kJambaLike, 4);
  const std::vector<float> a = init_loss_grads_trace(cfg), b = init_loss_grads_trace(cfg);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(AttentionModel, CheckpointRoundTripWithLlamaNames) {
  const ModelConfig cfg = tiny(kSambaLike, 4);
  LanguageModel<float> m(cfg);
  m.init(17);
  const std::string dir = temp_dir("attn_checkpoint") + "/ck";
  save_model(dir, m);
  SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
  for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
    EXPECT_NE(f.find(std::string("backbone.layers.2.self_attn.") + n + ".weight"), nullptr) << n;
  auto back = load_model<float>(dir);
  ASSERT_EQ(back->params.size(), m.params.size());
  EXPECT_EQ(0, std::memcmp(back->params.data(), m.params.data(), m.params.size() * sizeof(float)));
  EXPECT_EQ(back->config().to_json().dump(), cfg.to_json().dump());
}

// The example configs: the layer patterns, the ring buffer of the Samba window, and the
// Jamba-style stack's active weights (top-2 of d_ff 192 = the d_ff 384 MLP).
TEST(AttentionModel, ExampleConfigs) {
  const ModelConfig s = ModelConfig::from_file(source_dir() + "/configs/samba_style_small.json");
  const ModelConfig r = ModelConfig::from_file(source_dir() + "/configs/samba_rom_small.json");
  const ModelConfig j = ModelConfig::from_file(source_dir() + "/configs/jamba_attn_small.json");
  LanguageModel<float> ms(s), mr(r), mj(j);
  const std::vector<std::string> samba = {"mamba", "mlp", "attention", "mlp"}, rom = {"rom", "mlp", "attention", "mlp"};
  for (int l = 0; l < 8; ++l) {
    EXPECT_EQ(ms.mixer(l).type(), samba[size_t(l % 4)]) << l;
    EXPECT_EQ(mr.mixer(l).type(), rom[size_t(l % 4)]) << l;
  }
  EXPECT_EQ(dynamic_cast<AttentionMixer<CpuBackend<float>>&>(ms.mixer(2)).cache_len(), 64);
  EXPECT_EQ(ms.max_positions(), kMaxRopePosition);
  ASSERT_EQ(mj.n_layers(), 16);
  int attention = 0, moe = 0;
  for (int l = 0; l < 16; ++l) {
    attention += mj.mixer(l).type() == "attention";
    moe += mj.mixer(l).type() == "moe_mlp";
    EXPECT_EQ(mj.mixer(l).type() == "attention", l == 8) << l;
  }
  EXPECT_EQ(attention, 1);
  EXPECT_EQ(moe, 4);
  EXPECT_EQ(mj.max_positions(), 4096);
  // attention FLOPs at seq_len 128: the window of 64 counts fewer than the full causal mean
  const double w = ms.mixer(2).counts().attention_flops, f = mj.mixer(8).counts().attention_flops;
  EXPECT_DOUBLE_EQ(w, 4.0 * 128 * attention_mean_keys(128, 64));
  EXPECT_DOUBLE_EQ(f, 4.0 * 128 * 64.5);
  EXPECT_LT(w, f);
}

// configs/samba_style_small.json at d_model 32 (window 16 so that it binds at seq_len 32) on the
// byte-level word data: 60 CPU steps bring the validation loss well below the unigram entropy,
// and the run's checkpoint loads back with its attention layers.
TEST(AttentionModel, SambaStyleConfigTrains) {
  const std::string data = make_word_data("attn_train", 6000);
  std::string text = read_file(source_dir() + "/configs/samba_style_small.json");
  for (size_t at; (at = text.find("\"window\": 64")) != std::string::npos;) text.replace(at, 12, "\"window\": 16");
  const ModelConfig cfg = cpu_sized(Json::parse(text), "samba_style_small.json");
  const TrainOptions o = short_run_options(data);
  const TrainResult r = train_model(cfg, o);
  EXPECT_EQ(r.last_step, 60);
  EXPECT_LT(r.last_val_loss, r.unigram_entropy - 0.3) << "unigram " << r.unigram_entropy;
  auto back = load_model<float>(o.out);
  EXPECT_EQ(back->mixer(2).type(), "attention");
}
