// The attention ops and layer (docs/hybrid.md) on the CUDA backend against the CPU (GPU
// machine; label "gpu"):
//   - rope (float, bf16) against the fp64 reference at large positions (angles in double);
//   - kv_cache_append equal to the CPU's bit for bit (ring slots and the advanced position);
//   - the flash-style attention kernels, forward (out, lse) and backward (dq, dk, dv), against
//     the fp64 CPU reference at awkward sizes (T not a multiple of the 64-row tile, GQA / MQA,
//     windows, head_dim 16..128, a ring-buffer cache that wrapped, single-token decode), within
//     the error budget of the CPU float run (fp32 tight; bf16 against the float run rounded to
//     bf16), padding of the fused buffers untouched; bitwise equal across two runs; the
//     "mma_" cases (rows and head size multiples of 8 elements, no cache) run bf16 on the
//     tensor-core kernels (attention_mma.cu), and say so;
//   - Samba-, Jamba- and RoM-style stacks: fp32 logits, loss and every gradient against the CPU
//     (with and without a carried state), bf16 within the model tests' relative-L2 bounds,
//     prefill + single steps equal one pass (the window's ring wraps), CUDA-graph greedy decoding
//     equals the CPU's, two training runs bitwise equal.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../expect_error.h"
#include "../model_checks.h"
#include "../testing.h"
#include "core/check.h"
#include "cuda_model_checks.h"
#include "gpu_testing.h"
#include "infer/cuda/cuda_generator.h"
#include "model/language_model.h"
#include "ops/attention.h"
#include "ops/cuda/attention_mma.cuh"
#include "ops/kv_cache.h"
#include "ops/rope.h"

using namespace moessm;
using namespace moessm::gputest;
using bf16 = __nv_bfloat16;

namespace {

template <typename T> constexpr bool kIsBf16 = std::is_same_v<T, bf16>;

// ---- rope -------------------------------------------------------------------------------------

template <typename T> void rope_case() {
  const idx_t B = 3, Tn = 37, nh = 5, hd = 42, ld = nh * hd + 6;
  Rng rng(5, sizeof(T));
  const std::vector<double> x = rnd(size_t(B * Tn * ld), rng, -2, 2, kIsBf16<T>);
  const std::vector<double> g = rnd(size_t(B * Tn * nh * hd), rng, -1, 1, kIsBf16<T>);
  const std::vector<double> pos = {0, 1234, 100000};  // exact in fp32
  std::vector<double> y_ref(x), dx_ref(x.size(), 7.0);
  cpu::rope_forward(y_ref.data(), ld, x.data(), ld, pos.data(), B, Tn, nh, hd, 10000.0);
  cpu::rope_backward(dx_ref.data(), ld, g.data(), nh * hd, pos.data(), B, Tn, nh, hd, 10000.0);
  DeviceBuffer X = up<T>(x), G = up<T>(g), DX = up<T>(std::vector<double>(x.size(), 7.0)),
               P = up_f32(pos);
  cuda::rope_forward<T>(X.as<T>(), ld, X.as<T>(), ld, P.as<float>(), B, Tn, nh, hd, 10000.0, nullptr);  // in place
  cuda::rope_backward<T>(DX.as<T>(), ld, G.as<T>(), nh * hd, P.as<float>(), B, Tn, nh, hd, 10000.0, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<double> y = down<T>(X), dx = down<T>(DX);
  const double tol = kIsBf16<T> ? 1.0 / 128 : 2e-6;
  EXPECT_LE(rel_err(y, y_ref), tol) << "rope forward";
  for (idx_t m = 0; m < B * Tn; ++m)
    for (idx_t i = nh * hd; i < ld; ++i) {
      ASSERT_EQ(y[m * ld + i], x[m * ld + i]) << "rope wrote into the padding";
      ASSERT_EQ(dx[m * ld + i], 7.0) << "rope_backward wrote into the padding";
    }
  EXPECT_LE(rel_err(dx, dx_ref), tol) << "rope backward";
}

TEST(RopeCuda, MatchesTheFp64ReferenceInPlaceAtLargePositions) {
  REQUIRE_GPU();
  rope_case<float>();
  rope_case<bf16>();
}

TEST(KvCacheCuda, AppendEqualsTheCpuBitForBit) {
  REQUIRE_GPU();
  const idx_t B = 3, C = 7, Hkv = 2, hd = 6, row = Hkv * hd, ld = row + 3;
  Rng rng(2);
  std::vector<float> kc(size_t(B * C * row)), vc(kc.size());
  for (auto& v : kc) v = float(rng.uniform(-1, 1));
  for (auto& v : vc) v = float(rng.uniform(-1, 1));
  std::vector<float> pos = {0.f, 5.f, 40.f};
  DeviceBuffer K = DeviceBuffer::from_host(kc), V = DeviceBuffer::from_host(vc), P = DeviceBuffer::from_host(pos);
  for (idx_t n : {3, 1, 11, 2}) {  // 11 > C: only the last C rows land
    std::vector<float> k(size_t(B * n * ld)), v(k.size());
    for (auto& x : k) x = float(rng.uniform(-1, 1));
    for (auto& x : v) x = float(rng.uniform(-1, 1));
    cpu::kv_cache_append(kc.data(), vc.data(), pos.data(), k.data(), ld, v.data(), ld, B, n, C, Hkv, hd);
    DeviceBuffer Kn = DeviceBuffer::from_host(k), Vn = DeviceBuffer::from_host(v);
    cuda::kv_cache_append<float>(K.as<float>(), V.as<float>(), P.as<float>(), Kn.as<float>(), ld, Vn.as<float>(), ld,
                                 B, n, C, Hkv, hd, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(K.to_host<float>(), kc) << n;
    EXPECT_EQ(V.to_host<float>(), vc) << n;
    EXPECT_EQ(P.to_host<float>(), pos) << n;
  }
}

// ---- attention --------------------------------------------------------------------------------

struct AttnCase {
  const char* name;
  idx_t B, T, H, Hkv, hd, W, C;
  std::vector<double> pos;  // start positions (with a cache)
  bool mma = false;         // rows padded to a multiple of 8: bf16 takes the tensor-core kernels
};

const std::vector<AttnCase>& attn_cases() {
  static const std::vector<AttnCase> c = {
      {"full_gqa_T133_hd64", 2, 133, 4, 2, 64, 0, 0, {}},
      {"window50_mqa_T200_hd40", 1, 200, 6, 1, 40, 50, 0, {}},
      {"full_mha_T77_hd128", 2, 77, 2, 2, 128, 0, 0, {}},
      {"window7_T65_hd16", 3, 65, 4, 4, 16, 7, 0, {}},
      {"single_token_hd96", 2, 1, 3, 1, 96, 0, 0, {}},
      {"cache_window48_wrapped", 2, 70, 4, 2, 32, 48, 48, {100, 3}},
      {"cache_full_decode", 2, 1, 4, 4, 64, 0, 300, {0, 250}},
      {"cache_full_T65", 2, 65, 2, 1, 48, 0, 130, {65, 0}},
      {"cache_window_decode", 4, 1, 8, 2, 128, 2048, 2048, {5000, 2047, 0, 1}},
      {"mma_full_gqa_T133_hd64", 2, 133, 4, 2, 64, 0, 0, {}, true},
      {"mma_window50_mqa_T200_hd128", 1, 200, 4, 1, 128, 50, 0, {}, true},
      {"mma_window64_T300_hd32", 2, 300, 2, 2, 32, 64, 0, {}, true},
      {"mma_single_token_hd64", 1, 1, 2, 1, 64, 0, 0, {}, true},
      {"mma_window130_T520_hd64", 1, 520, 2, 1, 64, 130, 0, {}, true},
      {"mma_window33_gqa_T150_hd40", 2, 150, 4, 2, 40, 33, 0, {}, true},
      {"mma_full_T90_hd48", 1, 90, 3, 3, 48, 0, 0, {}, true},
  };
  return c;
}

struct AttnOut {
  std::vector<double> out, lse, dqkv;
};

// CPU attention on inputs in U: fused q|k|v [B, T, row], caches, pos; forward and backward.
template <typename U>
AttnOut cpu_attention(const AttnCase& c, idx_t row, const std::vector<double>& qkv, const std::vector<double>& kc,
                      const std::vector<double>& vc, const std::vector<double>& dout) {
  const idx_t Y = c.H * c.hd;
  const std::vector<U> x(qkv.begin(), qkv.end()), k(kc.begin(), kc.end()), v(vc.begin(), vc.end()),
      g(dout.begin(), dout.end()), pos(c.pos.begin(), c.pos.end());
  AttentionParams<U, U> p;
  p.q = x.data();
  p.k = x.data() + Y;
  p.v = x.data() + Y + c.Hkv * c.hd;
  p.q_ld = p.k_ld = p.v_ld = row;
  if (c.C) p.k_cache = k.data(), p.v_cache = v.data(), p.C = c.C, p.pos0 = pos.data();
  p.B = c.B, p.T = c.T, p.H = c.H, p.Hkv = c.Hkv, p.hd = c.hd, p.window = c.W;
  std::vector<U> out(size_t(c.B * c.T * Y)), lse(size_t(c.B * c.H * c.T)), delta(lse.size()), d(x.size(), U(0));
  cpu::attention_forward(out.data(), Y, lse.data(), p);
  cpu::attention_backward(d.data(), row, d.data() + Y, row, d.data() + Y + c.Hkv * c.hd, row, delta.data(), g.data(),
                          Y, out.data(), Y, lse.data(), p);
  return {dbl(out), dbl(lse), dbl(d)};
}

template <typename T>
AttnOut cuda_attention(const AttnCase& c, idx_t row, const std::vector<double>& qkv, const std::vector<double>& kc,
                       const std::vector<double>& vc, const std::vector<double>& dout, double sentinel) {
  const idx_t Y = c.H * c.hd;
  DeviceBuffer X = up<T>(qkv), K = up<T>(kc.empty() ? std::vector<double>(1) : kc),
               V = up<T>(vc.empty() ? std::vector<double>(1) : vc), G = up<T>(dout),
               Pp = up_f32(c.pos.empty() ? std::vector<double>(1) : c.pos),
               O = up<T>(std::vector<double>(size_t(c.B * c.T * Y), sentinel)),
               L = up_f32(std::vector<double>(size_t(c.B * c.H * c.T), sentinel)),
               Dl = up_f32(std::vector<double>(size_t(c.B * c.H * c.T), sentinel)),
               D = up<T>(std::vector<double>(qkv.size(), sentinel));
  AttentionParams<T, float> p;
  p.q = X.as<T>();
  p.k = X.as<T>() + Y;
  p.v = X.as<T>() + Y + c.Hkv * c.hd;
  p.q_ld = p.k_ld = p.v_ld = row;
  if (c.C) p.k_cache = K.as<T>(), p.v_cache = V.as<T>(), p.C = c.C, p.pos0 = Pp.as<float>();
  p.B = c.B, p.T = c.T, p.H = c.H, p.Hkv = c.Hkv, p.hd = c.hd, p.window = c.W;
  if constexpr (kIsBf16<T>)  // the cases meant for the tensor-core kernels reach them
    EXPECT_EQ(c.mma, cuda::attention_mma::eligible(p, {Y, row}, {O.as<T>(), D.as<T>(), G.as<T>()})) << c.name;
  cuda::attention_forward<T>(O.as<T>(), Y, L.as<float>(), p, nullptr);
  cuda::attention_backward<T>(D.as<T>(), row, D.as<T>() + Y, row, D.as<T>() + Y + c.Hkv * c.hd, row, Dl.as<float>(),
                              G.as<T>(), Y, O.as<T>(), Y, L.as<float>(), p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  return {down<T>(O), down_f32(L), down<T>(D)};
}

std::vector<double> round_all(std::vector<double> v) {
  for (auto& x : v) x = round_bf16(float(x));
  return v;
}

template <typename T> void attention_case(const AttnCase& c) {
  SCOPED_TRACE(std::string(c.name) + (kIsBf16<T> ? " bf16" : " fp32"));
  const idx_t row = (c.H + 2 * c.Hkv) * c.hd + (c.mma ? 8 : 5);  // padded fused q|k|v rows
  Rng rng(uint64_t(c.T * 131 + c.hd), sizeof(T));
  const std::vector<double> qkv = rnd(size_t(c.B * c.T * row), rng, -2, 2, kIsBf16<T>);
  const std::vector<double> kc = rnd(size_t(c.B * c.C * c.Hkv * c.hd), rng, -2, 2, kIsBf16<T>);
  const std::vector<double> vc = rnd(kc.size(), rng, -1, 1, kIsBf16<T>);
  const std::vector<double> dout = rnd(size_t(c.B * c.T * c.H * c.hd), rng, -1, 1, kIsBf16<T>);
  const AttnOut ref = cpu_attention<double>(c, row, qkv, kc, vc, dout);
  AttnOut naive = cpu_attention<float>(c, row, qkv, kc, vc, dout);
  if (kIsBf16<T>) naive.out = round_all(naive.out), naive.dqkv = round_all(naive.dqkv);
  const double sentinel = 3.0;
  const AttnOut fast = cuda_attention<T>(c, row, qkv, kc, vc, dout, sentinel);
  // the padding columns of dqkv stay untouched; compare them as 0
  std::vector<double> d = fast.dqkv, dn = naive.dqkv, dr = ref.dqkv;
  for (idx_t m = 0; m < c.B * c.T; ++m)
    for (idx_t i = (c.H + 2 * c.Hkv) * c.hd; i < row; ++i) {
      ASSERT_EQ(d[m * row + i], sentinel) << "attention_backward wrote into the padding";
      d[m * row + i] = dn[m * row + i] = dr[m * row + i] = 0;
    }
  const double floor = kIsBf16<T> ? 1.0 / 512 : 1e-6;
  expect_within_budget("out", rel_err(fast.out, ref.out), rel_err(naive.out, ref.out), floor);
  expect_within_budget("lse", rel_err(fast.lse, ref.lse), rel_err(naive.lse, ref.lse), 1e-6);
  expect_within_budget("dq|dk|dv", rel_err(d, dr), rel_err(dn, dr), floor);
  if (!kIsBf16<T>) {
    EXPECT_LE(rel_err(fast.out, ref.out), 1e-5);
    EXPECT_LE(rel_err(d, dr), 1e-4);
  }
  // bitwise repeatable
  const AttnOut again = cuda_attention<T>(c, row, qkv, kc, vc, dout, sentinel);
  EXPECT_EQ(again.out, fast.out);
  EXPECT_EQ(again.lse, fast.lse);
  EXPECT_EQ(again.dqkv, fast.dqkv);
}

class CudaAttentionOp : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaAttentionOp, Fp32MatchesTheCpuTightly) {
  REQUIRE_GPU();
  attention_case<float>(attn_cases()[GetParam()]);
}
TEST_P(CudaAttentionOp, Bf16WithinTheBudget) {
  REQUIRE_GPU();
  attention_case<bf16>(attn_cases()[GetParam()]);
}
INSTANTIATE_TEST_SUITE_P(Sizes, CudaAttentionOp, ::testing::Range<size_t>(0, attn_cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& i) { return attn_cases()[i.param].name; });

template <typename T> void window_at_least_t_equals_full(const AttnCase& full) {
  SCOPED_TRACE(full.name);
  AttnCase win = full;
  win.W = full.T;
  const idx_t row = (full.H + 2 * full.Hkv) * full.hd + (full.mma ? 8 : 5);
  Rng rng(4);
  const std::vector<double> qkv = rnd(size_t(full.B * full.T * row), rng, -2, 2, kIsBf16<T>),
                            dout = rnd(size_t(full.B * full.T * full.H * full.hd), rng, -1, 1, kIsBf16<T>);
  const AttnOut a = cuda_attention<T>(full, row, qkv, {}, {}, dout, 0), b = cuda_attention<T>(win, row, qkv, {}, {}, dout, 0);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.dqkv, b.dqkv);
}

TEST(CudaAttentionOp, WindowAtLeastTEqualsFullBitwiseAndHeadDimLimitIsNamed) {
  REQUIRE_GPU();
  window_at_least_t_equals_full<float>(attn_cases()[0]);
  window_at_least_t_equals_full<bf16>(attn_cases()[9]);  // the tensor-core kernels
  AttentionParams<float, float> p;
  p.B = 1, p.T = 1, p.H = 1, p.Hkv = 1, p.hd = 160, p.q_ld = p.k_ld = p.v_ld = 160;
  EXPECT_ERROR_HAS(cuda::attention_forward<float>(nullptr, 160, nullptr, p, nullptr), "head_dim 160",
                   "cuda: 1..128");
}

// The tensor-core forward with 16 and with 32 query rows per warp: bitwise the same out and lse
// (a taller block's extra key tiles are fully masked for the rows that do not need them).
TEST(CudaAttentionOp, TensorCoreForwardRowsPerWarpAgreeBitwise) {
  REQUIRE_GPU();
  for (const AttnCase& c : attn_cases()) {
    if (!c.mma) continue;
    SCOPED_TRACE(c.name);
    const idx_t Y = c.H * c.hd, row = (c.H + 2 * c.Hkv) * c.hd + 8;
    Rng rng(uint64_t(c.T * 7 + c.hd), 2);
    DeviceBuffer X = up<bf16>(rnd(size_t(c.B * c.T * row), rng, -2, 2, true));
    AttentionParams<bf16, float> p;
    p.q = X.as<bf16>();
    p.k = p.q + Y;
    p.v = p.q + Y + c.Hkv * c.hd;
    p.q_ld = p.k_ld = p.v_ld = row;
    p.B = c.B, p.T = c.T, p.H = c.H, p.Hkv = c.Hkv, p.hd = c.hd, p.window = c.W;
    std::vector<std::vector<double>> outs, lses;
    for (int rows : {16, 32}) {
      DeviceBuffer O = up<bf16>(std::vector<double>(size_t(c.B * c.T * Y), 0.0)),
                   L = up_f32(std::vector<double>(size_t(c.B * c.H * c.T), 0.0));
      cuda::attention_mma::forward(O.as<bf16>(), Y, L.as<float>(), p, nullptr, rows);
      CUDA_CHECK(cudaDeviceSynchronize());
      outs.push_back(down<bf16>(O));
      lses.push_back(down_f32(L));
    }
    EXPECT_EQ(outs[0], outs[1]);
    EXPECT_EQ(lses[0], lses[1]);
  }
}

// ---- stacks -----------------------------------------------------------------------------------

struct Stack {
  const char* name;
  std::vector<std::string> layers;
  bool routed;
};

const std::vector<Stack>& stacks() {
  static const std::vector<Stack> s = {
      {"samba_style",
       {R"("mamba")", R"({"type": "mlp", "d_ff": 96})", R"({"type": "attention", "n_heads": 4, "window": 24})",
        R"({"type": "mlp", "d_ff": 96})"},
       false},
      {"jamba_style",
       {R"("mamba")", R"({"type": "moe_mlp", "n_experts": 4, "top_k": 2, "d_ff": 72})",
        R"({"type": "attention", "n_heads": 4, "n_kv_heads": 2, "max_context": 256})", R"({"type": "mlp", "d_ff": 96})"},
       true},
      {"rom_samba",
       {R"({"type": "rom", "n_experts": 3, "top_k": 2})", R"("mlp")",
        R"({"type": "attention", "n_heads": 2, "n_kv_heads": 1, "head_dim": 32, "window": 9})", R"("mlp")"},
       true},
  };
  return s;
}

class CudaAttentionStack : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaAttentionStack, Fp32LogitsLossAndGradsMatchTheCpu) {
  REQUIRE_GPU();
  const Stack& s = stacks()[GetParam()];
  expect_fp32_model_matches_cpu(stack_config(s.layers), s.routed, false, s.name);
}
TEST_P(CudaAttentionStack, Fp32WithACarriedStateMatchesTheCpu) {
  REQUIRE_GPU();
  const Stack& s = stacks()[GetParam()];
  expect_fp32_model_matches_cpu(stack_config(s.layers), s.routed, true, s.name);
}
// bf16: the jamba stack runs without its moe_mlp layer. With it, the whole stack measured 12.5%
// logits error on the H200 (2026-12-02; fp32 matched the CPU tightly): top-2 routes over 4
// experts whose margins are below bf16 resolution flip, as the mlp/moe_mlp stacks did
// (test_mlp_cuda.cpp checks moe_mlp in bf16 per routed sub-stack). The attention layer (full,
// GQA) stays, between the Mamba and MLP layers.
TEST_P(CudaAttentionStack, Bf16NearTheReference) {
  REQUIRE_GPU();
  const Stack& s = stacks()[GetParam()];
  std::vector<std::string> layers;
  for (const std::string& l : s.layers)
    if (l.find("moe_mlp") == std::string::npos) layers.push_back(l);
  const bool routed = s.routed && layers.size() == s.layers.size();
  expect_bf16_model_near_reference(stack_config(layers), routed, s.name);
}
TEST_P(CudaAttentionStack, PrefillThenStepsEqualTheFullForward) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(stacks()[GetParam()].layers);
  const idx_t B = 2, T = 100, P = 67;  // P > every window: the ring wrapped in the prefill
  const auto params = init_params(cfg, 8);
  const auto ids = random_ids(size_t(B * T), 300, 9);
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  EXPECT_LE(prefill_steps_max_rel_diff(m, ids, B, T, P), 1e-5) << stacks()[GetParam()].name;
}
TEST_P(CudaAttentionStack, TwoTrainingRunsWithOneSeedAreBitwiseEqual) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(stacks()[GetParam()].layers);
  const auto a = four_step_trace(cfg, 300), b = four_step_trace(cfg, 300);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
}
INSTANTIATE_TEST_SUITE_P(Stacks, CudaAttentionStack, ::testing::Range<size_t>(0, 3),
                         [](const ::testing::TestParamInfo<size_t>& i) { return stacks()[i.param].name; });

TEST(CudaAttentionStack, GraphGreedyDecodeEqualsCpuDecode) {
  REQUIRE_GPU();
  const ModelConfig cfg = stack_config(stacks()[0].layers, 48);
  const auto params = init_params(cfg, 21);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 99, 3, 42}, {7, 7, 200, 1, 9, 64, 128, 30, 2}};
  const auto cpu_out = cpu_greedy(cfg, params, prompts, 48);  // 48 steps: past the window of 24
  Model<CudaBackend<float>> m(cfg);
  m.upload_params(params.data());
  cuda::CudaGenerator<float> cg(m, 2, greedy_options(48));
  const auto gpu_out = cg.run(prompts);
  for (size_t b = 0; b < 2; ++b) {
    ASSERT_EQ(cpu_out[b].generated.size(), 48u);
    EXPECT_EQ(gpu_out[b].generated, cpu_out[b].generated) << "slot " << b;
  }
}

}  // namespace
