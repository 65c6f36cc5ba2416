// Core: Philox known-answer vector and stream reproducibility, dtype conversions, the parameter
// table and its visitor, the two-pass arena, CHECK messages, tensor views.
#include <gtest/gtest.h>

#include <cmath>
#include <omp.h>
#include <vector>

#include "core/arena.h"
#include "core/check.h"
#include "core/dtype.h"
#include "core/params.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace moessm;

TEST(Rng, PhiloxKnownAnswer) {
  // Random123's known-answer test for philox4x32_10: counter 0, key 0.
  uint32_t out[4];
  philox4x32(0, 0, out);
  EXPECT_EQ(out[0], 0x6627e8d5u);
  EXPECT_EQ(out[1], 0xe169c58du);
  EXPECT_EQ(out[2], 0xbc57ac4cu);
  EXPECT_EQ(out[3], 0x9b00dbd8u);
}

TEST(Rng, StreamsAreReproducibleAndIndependentOfThreadCount) {
  Rng a(42, 7), b(42, 7), c(42, 8), d(43, 7);
  std::vector<uint32_t> va, vb, vc, vd;
  for (int i = 0; i < 100; ++i) {
    va.push_back(a.next_u32());
    vb.push_back(b.next_u32());
    vc.push_back(c.next_u32());
    vd.push_back(d.next_u32());
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  EXPECT_NE(va, vd);
  // Restoring the counter resumes the stream exactly.
  Rng e(42, 7);
  e.set_counter(37);
  EXPECT_EQ(e.next_u32(), va[37]);
  // Per-row streams filled by any number of threads give the same matrix.
  auto fill = [](int threads) {
    std::vector<double> m(64 * 16);
#pragma omp parallel for num_threads(threads)
    for (int r = 0; r < 64; ++r) {
      Rng rng(5, uint64_t(r));
      for (int j = 0; j < 16; ++j) m[r * 16 + j] = rng.normal();
    }
    return m;
  };
  EXPECT_EQ(fill(1), fill(3));
}

TEST(Rng, DistributionsHaveTheRightMoments) {
  Rng r(1);
  double s = 0, s2 = 0, mn = 1, mx = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double u = r.uniform();
    mn = std::min(mn, u);
    mx = std::max(mx, u);
    double z = r.normal();
    s += z;
    s2 += z * z;
  }
  EXPECT_GE(mn, 0.0);
  EXPECT_LT(mx, 1.0);
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
  std::vector<int> hist(5, 0);
  for (int i = 0; i < 50000; ++i) ++hist[r.below(5)];
  for (int h : hist) EXPECT_NEAR(h, 10000, 400);
}

TEST(DType, Bf16AndF16RoundToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly half-way between two bf16 values: ties to even (1.0)
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (float v : {0.0f, 1.5f, -2.75f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  DType t;
  EXPECT_TRUE(dtype_from_name("BF16", &t));
  EXPECT_EQ(t, DType::BF16);
  EXPECT_FALSE(dtype_from_name("F8", &t));
  EXPECT_EQ(dtype_size(DType::F64), 8u);
}

TEST(ParamTable, OffsetsVisitorAndDuplicates) {
  ParamTable t;
  EXPECT_EQ(t.add("a.weight", {3, 4}, false), 0u);
  EXPECT_EQ(t.add("a.bias", {4}, true), 12u);
  EXPECT_EQ(t.add("experts", {2, 3, 5}, false), 16u);
  EXPECT_EQ(t.total(), 46u);
  std::vector<std::string> names;
  size_t sum = 0;
  t.visit([&](const ParamInfo& p) {
    names.push_back(p.name);
    sum += p.numel;
  });
  EXPECT_EQ(names, (std::vector<std::string>{"a.weight", "a.bias", "experts"}));
  EXPECT_EQ(sum, t.total());
  EXPECT_TRUE(t.at("a.bias").no_decay);
  EXPECT_THROW(t.add("a.bias", {1}, true), Error);
  EXPECT_THROW(t.at("nope"), Error);
  EXPECT_EQ(t.find("nope"), nullptr);
}

TEST(Arena, PlanningPassSizesTheRealPass) {
  auto carve_all = [](Arena<float>& a, std::vector<float*>* out) {
    out->clear();
    out->push_back(a.carve(10));
    out->push_back(a.carve(100));
    out->push_back(a.carve(1));
  };
  Arena<float> a;
  std::vector<float*> ptrs;
  carve_all(a, &ptrs);
  EXPECT_EQ(ptrs[0], nullptr);
  const size_t planned = a.used();
  EXPECT_EQ(planned, 16u + 112u + 16u);  // 64-byte aligned blocks
  a.allocate_planned();
  carve_all(a, &ptrs);
  EXPECT_EQ(a.used(), planned);
  EXPECT_EQ(a.capacity(), planned);
  EXPECT_EQ(ptrs[1] - ptrs[0], 16);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ptrs[2]) % 64, reinterpret_cast<uintptr_t>(ptrs[0]) % 64);
  EXPECT_THROW(a.carve(1), Error);  // more than planned
}

TEST(Check, MessagesNameWhatFailed) {
  try {
    const int d_model = -3;
    CHECK(d_model > 0, "config.json: field 'd_model' must be positive, found ", d_model);
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("config.json: field 'd_model' must be positive, found -3"), std::string::npos) << m;
    EXPECT_NE(m.find("test_core.cpp"), std::string::npos) << m;
  }
  try {
    CHECK(1 == 2);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 == 2"), std::string::npos);
  }
}

TEST(TensorView, ShapesAndContiguity) {
  std::vector<float> buf(24);
  TensorView v(buf.data(), DType::F32, {2, 3, 4});
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v.nbytes(), 96u);
  EXPECT_TRUE(v.contiguous());
  v.strides = {12, 4, 1};
  EXPECT_TRUE(v.contiguous());
  v.strides = {24, 4, 1};
  EXPECT_FALSE(v.contiguous());
  EXPECT_EQ(shape_str({2, 3}), "[2, 3]");
  EXPECT_THROW(shape_numel({2, -1}), Error);
  EXPECT_EQ(shape_numel({3, 0, 5}), 0);
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({int64_t(1) << 31, int64_t(1) << 31}), int64_t(1) << 62);
  EXPECT_THROW(shape_numel({int64_t(1) << 32, int64_t(1) << 32}), Error);
  EXPECT_THROW(shape_numel({int64_t(1) << 32, int64_t(1) << 32, 0}), Error);  // as numpy
}
