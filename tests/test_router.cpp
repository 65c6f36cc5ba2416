// Router op (ops/router_topk.h): softmax and top-K against a brute-force reference, ties to the
// lower index, the backward against central finite differences in double, and the Switch aux loss
// and z-loss (values and gradients). Routing is piecewise constant in the logits, so every FD
// test draws logits whose top-K margins (gap between the K-th and (K+1)-th probability, and
// between chosen experts) exceed kMinMargin ≫ the FD step, resampling rows that do not.
// MoeRouter (the layer every routed mixer uses): options over a mixer's defaults, the weight name,
// the grouping plan and chosen() against the op's routing, and its backward against FD.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu_backend.h"
#include "core/check.h"
#include "model/moe_router.h"
#include "ops/moe_permute.h"
#include "ops/router_topk.h"
#include "testing.h"

using namespace moessm;
using namespace moessm::testing;
using Vec = std::vector<double>;

namespace {

constexpr double kMinMargin = 1e-3;  // in logit units; the FD step is 1e-6

// Random logits [M,E] whose sorted values are pairwise separated by kMinMargin (so the top-K set
// and its order cannot change under an FD perturbation).
Vec separated_logits(idx_t M, idx_t E, Rng& rng, double scale = 2.0) {
  Vec l(M * E);
  for (idx_t m = 0; m < M; ++m) {
    for (;;) {
      for (idx_t i = 0; i < E; ++i) l[m * E + i] = rng.uniform(-scale, scale);
      Vec s(l.begin() + m * E, l.begin() + (m + 1) * E);
      std::sort(s.begin(), s.end());
      bool ok = true;
      for (idx_t i = 1; i < E; ++i) ok = ok && s[i] - s[i - 1] > kMinMargin;
      if (ok) break;
    }
  }
  return l;
}

struct Routed {
  Vec probs, w;
  std::vector<int32_t> idx;
};

Routed route(const Vec& logits, idx_t M, idx_t E, idx_t K, bool norm) {
  Routed r;
  r.probs.resize(M * E);
  r.w.resize(M * K);
  r.idx.resize(M * K);
  cpu::router_topk_forward(r.probs.data(), r.idx.data(), r.w.data(), logits.data(), M, E, K, norm);
  return r;
}

}  // namespace

TEST(RouterTopK, ForwardMatchesBruteForceReference) {
  Rng rng(1);
  for (idx_t E : {1, 3, 8})
    for (idx_t K = 1; K <= std::min<idx_t>(E, 3); ++K)
      for (bool norm : {false, true}) {
        const idx_t M = 6;
        Vec logits = separated_logits(M, E, rng);
        Routed r = route(logits, M, E, K, norm);
        for (idx_t m = 0; m < M; ++m) {
          double mx = -1e300, s = 0;
          for (idx_t i = 0; i < E; ++i) mx = std::max(mx, logits[m * E + i]);
          for (idx_t i = 0; i < E; ++i) s += std::exp(logits[m * E + i] - mx);
          std::vector<int32_t> order(E);
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(),
                           [&](int32_t a, int32_t b) { return logits[m * E + a] > logits[m * E + b]; });
          double topsum = 0;
          for (idx_t k = 0; k < K; ++k) topsum += std::exp(logits[m * E + order[k]] - mx) / s;
          for (idx_t i = 0; i < E; ++i)
            EXPECT_NEAR(r.probs[m * E + i], std::exp(logits[m * E + i] - mx) / s, 1e-15);
          for (idx_t k = 0; k < K; ++k) {
            EXPECT_EQ(r.idx[m * K + k], order[k]) << "E=" << E << " K=" << K << " m=" << m;
            const double p = std::exp(logits[m * E + order[k]] - mx) / s;
            EXPECT_NEAR(r.w[m * K + k], norm ? p / topsum : p, 1e-15);
          }
        }
      }
}

TEST(RouterTopK, TiesGoToTheLowerIndex) {
  const idx_t E = 5, K = 3;
  Vec logits = {0.5, 1.0, 1.0, 0.2, 1.0};  // three-way tie for the top
  Routed r = route(logits, 1, E, K, false);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{1, 2, 4}));
  Vec flat(E, 0.0);  // all equal: the first K experts
  r = route(flat, 1, E, 2, true);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{0, 1}));
  EXPECT_DOUBLE_EQ(r.w[0], 0.5);
  EXPECT_THROW(route(flat, 1, E, 6, false), Error);  // K > E is a contract violation
}

TEST(RouterTopK, BackwardMatchesFiniteDifferences) {
  Rng rng(2);
  for (idx_t E : {1, 2, 4, 7})
    for (idx_t K = 1; K <= std::min<idx_t>(E, 3); ++K)
      for (bool norm : {false, true})
        for (bool with_dprobs : {false, true}) {
          const idx_t M = 5;
          Vec logits = separated_logits(M, E, rng);
          Vec Rw = random_vector<double>(M * K, rng), Rp = random_vector<double>(M * E, rng);
          auto loss = [&] {
            Routed r = route(logits, M, E, K, norm);
            double s = 0;
            for (idx_t i = 0; i < M * K; ++i) s += Rw[i] * r.w[i];
            if (with_dprobs)
              for (idx_t i = 0; i < M * E; ++i) s += Rp[i] * r.probs[i];
            return s;
          };
          Routed r = route(logits, M, E, K, norm);
          Vec dl(M * E);
          cpu::router_topk_backward(dl.data(), Rw.data(), with_dprobs ? Rp.data() : nullptr,
                                    r.probs.data(), r.idx.data(), r.w.data(), M, E, K, norm);
          Vec num = numeric_gradient(logits, loss);
          EXPECT_EQ(compare_gradients(dl, num, 1e-8, "dlogits"), "")
              << "E=" << E << " K=" << K << " normalize=" << norm << " dprobs=" << with_dprobs;
        }
}

TEST(RouterAuxLoss, EqualsCoefficientUnderUniformRoutingAndGrowsOtherwise) {
  const double coef = 0.01;
  for (idx_t E : {1, 2, 4, 8})
    for (idx_t K = 1; K <= std::min<idx_t>(E, 2); ++K) {
      // Uniform: p = 1/E everywhere, slots spread evenly (token m's k-th slot → (m·K + k) mod E).
      const idx_t M = 4 * E;
      Vec probs(M * E, 1.0 / double(E));
      std::vector<int32_t> idx(M * K);
      for (idx_t s = 0; s < M * K; ++s) idx[s] = int32_t(s % E);
      Vec load(E);
      const double uniform = cpu::router_aux_loss_forward(load.data(), probs.data(), idx.data(), M, E, K, coef);
      EXPECT_NEAR(uniform, coef, 1e-15) << "E=" << E << " K=" << K;
      for (idx_t i = 0; i < E; ++i) EXPECT_NEAR(load[i], 1.0 / double(E), 1e-15);
      // With K = E every token uses every expert, so f is uniform whatever p is: nothing can grow.
      if (K == E) continue;
      // Collapsed: every token's probability and slots favour expert 0.
      Vec pc(M * E, 0.0);
      std::vector<int32_t> ic(M * K);
      for (idx_t m = 0; m < M; ++m) {
        pc[m * E] = 0.7;
        for (idx_t i = 1; i < E; ++i) pc[m * E + i] = 0.3 / double(E - 1);
        for (idx_t k = 0; k < K; ++k) ic[m * K + k] = int32_t(k);
      }
      const double collapsed = cpu::router_aux_loss_forward((double*)nullptr, pc.data(), ic.data(), M, E, K, coef);
      EXPECT_GT(collapsed, uniform * 1.05) << "E=" << E << " K=" << K;
    }
}

TEST(RouterAuxLoss, GradientThroughTheRouterMatchesFiniteDifferences) {
  Rng rng(3);
  const double coef = 0.3;
  for (idx_t E : {2, 4})
    for (idx_t K = 1; K <= 2; ++K)
      for (bool norm : {false, true}) {
        const idx_t M = 9;
        Vec logits = separated_logits(M, E, rng);
        Vec Rw = random_vector<double>(M * K, rng);
        auto loss = [&] {
          Routed r = route(logits, M, E, K, norm);
          double s = cpu::router_aux_loss_forward((double*)nullptr, r.probs.data(), r.idx.data(), M, E, K, coef);
          s += cpu::router_z_loss_forward(logits.data(), M, E, 0.7 * coef);
          for (idx_t i = 0; i < M * K; ++i) s += Rw[i] * r.w[i];
          return s;
        };
        Routed r = route(logits, M, E, K, norm);
        const double dloss = 1.0;
        Vec dprobs(M * E, 0.0), dl(M * E);
        cpu::router_aux_loss_backward(dprobs.data(), dloss, r.idx.data(), M, E, K, coef);
        cpu::router_topk_backward(dl.data(), Rw.data(), dprobs.data(), r.probs.data(), r.idx.data(),
                                  r.w.data(), M, E, K, norm);
        cpu::router_z_loss_backward(dl.data(), dloss, logits.data(), M, E, 0.7 * coef);
        Vec num = numeric_gradient(logits, loss);
        EXPECT_EQ(compare_gradients(dl, num, 1e-8, "dlogits (aux + z + weights)"), "")
            << "E=" << E << " K=" << K << " normalize=" << norm;
      }
}

TEST(RouterZLoss, ValueAndGradient) {
  Rng rng(4);
  const idx_t M = 6, E = 4;
  Vec logits = random_vector<double>(M * E, rng, -3, 3);
  double expect = 0;
  for (idx_t m = 0; m < M; ++m) {
    double s = 0;
    for (idx_t i = 0; i < E; ++i) s += std::exp(logits[m * E + i]);
    expect += std::log(s) * std::log(s);
  }
  expect *= 0.25 / double(M);
  EXPECT_NEAR(cpu::router_z_loss_forward(logits.data(), M, E, 0.25), expect, 1e-14);
  Vec dl(M * E, 0.0);
  cpu::router_z_loss_backward(dl.data(), 2.0, logits.data(), M, E, 0.25);  // dloss = 2
  Vec num = numeric_gradient(logits, [&] { return 2.0 * cpu::router_z_loss_forward(logits.data(), M, E, 0.25); });
  EXPECT_EQ(compare_gradients(dl, num, 1e-8, "dlogits (z-loss)"), "");
}

TEST(RouterTopK, FloatAgreesWithDouble) {
  Rng rng(5);
  const idx_t M = 32, E = 8, K = 2;
  Vec ld = separated_logits(M, E, rng);
  std::vector<float> lf(ld.begin(), ld.end()), pf(M * E), wf(M * K);
  std::vector<int32_t> idf(M * K);
  cpu::router_topk_forward(pf.data(), idf.data(), wf.data(), lf.data(), M, E, K, true);
  Routed r = route(ld, M, E, K, true);
  EXPECT_EQ(idf, r.idx);
  for (idx_t i = 0; i < M * K; ++i) EXPECT_NEAR(wf[i], r.w[i], 1e-6);
}

TEST(MoeRouter, OptionsKeepTheMixersDefaultsAndRejectBadValues) {
  RouterOptions rom;
  rom.top_k = 1;
  rom.normalize_topk = false;
  RouterOptions o = RouterOptions::parse(Json::parse(R"({"type": "x", "n_experts": 4})"), "w", rom);
  EXPECT_EQ(o.n_experts, 4);
  EXPECT_EQ(o.top_k, 1);
  EXPECT_FALSE(o.normalize_topk);
  o = RouterOptions::parse(Json::parse(R"({"top_k": 3, "normalize_topk": true, "z_coef": 0.5})"), "w", rom);
  EXPECT_EQ(o.n_experts, 8);
  EXPECT_EQ(o.top_k, 3);
  EXPECT_TRUE(o.normalize_topk);
  EXPECT_DOUBLE_EQ(o.z_coef, 0.5);
  EXPECT_DOUBLE_EQ(o.aux_coef, 0.01);
  o = RouterOptions::parse(Json::parse("{}"), "w");  // the generic defaults
  EXPECT_EQ(o.top_k, 2);
  EXPECT_TRUE(o.normalize_topk);
  auto err = [](const char* spec) {
    try {
      RouterOptions::parse(Json::parse(spec), "mixer 'q'");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"n_experts": 2, "top_k": 3})").find("mixer 'q': option 'top_k'"), std::string::npos);
  EXPECT_NE(err(R"({"n_experts": 1})").find("top_k must be in [1, n_experts=1], found 2"), std::string::npos);
  EXPECT_NE(err(R"({"aux_coef": -0.1})").find("'aux_coef' must be a number >= 0"), std::string::npos);
  EXPECT_NE(err(R"({"normalize_topk": 1})").find("'normalize_topk' must be true or false"), std::string::npos);
}

TEST(MoeRouter, NamedWeightGroupingPlanChosenAndBackwardAgainstFiniteDifferences) {
  const idx_t B = 2, T = 5, M = B * T, Din = 6, E = 4, K = 2;
  RouterOptions opt;
  opt.n_experts = E;
  opt.top_k = K;
  opt.z_coef = 0.3;
  using Bk = CpuBackend<double>;
  MoeRouter<Bk> r(opt, Din, "router_gate_proj");
  ParamTable table;
  table.add("other.weight", {3}, false);
  r.register_params(table, "layer.");
  const ParamInfo& w = table.at("layer.router_gate_proj.weight");
  EXPECT_EQ(w.shape, (Shape{E, Din}));
  Vec params(table.total(), 0.0), grads(table.total(), 0.0);
  r.init_params(params.data(), table, 5);
  for (size_t i = 0; i < w.numel; ++i) EXPECT_NE(params[w.offset + i], 0.0);
  EXPECT_EQ(params[0], 0.0);  // only its own tensor

  Bk::Arena arena;
  r.plan_kept(arena);
  r.plan(arena, B, T, true);  // the planning pass counts, then the real pass carves
  arena.allocate_planned();
  r.plan_kept(arena);
  r.plan(arena, B, T, true);

  // Inputs whose logits are separated (no FD step can change the top-K set).
  const ParamsRef<Bk> P{params.data(), params.data()};
  auto route = [&](const double* x, idx_t x_ld) {
    double aux = 0;
    r.forward(Bk::Ctx{}, &aux, x, x_ld, P, M);
    return aux;
  };
  Rng rng(9);
  const idx_t ld = Din + 1;  // token stride > Din
  Vec in(M * ld, 0.0);
  for (;;) {
    for (auto& x : in) x = rng.uniform(-1, 1);
    route(in.data(), ld);
    bool ok = true;
    for (idx_t m = 0; m < M; ++m) {
      Vec l(E);
      for (idx_t e = 0; e < E; ++e) {
        l[e] = 0;
        for (idx_t c = 0; c < Din; ++c) l[e] += in[m * ld + c] * params[w.offset + e * Din + c];
      }
      std::sort(l.begin(), l.end());
      for (idx_t e = 1; e < E; ++e) ok = ok && l[e] - l[e - 1] > kMinMargin;
    }
    if (ok) break;
  }
  const double aux = route(in.data(), ld);
  EXPECT_DOUBLE_EQ(aux, r.aux_loss() + r.z_loss());
  EXPECT_GT(r.z_loss(), 0.0);
  // grouping plan = moe_permute_plan of the routing; load = the experts' shares of the slots
  std::vector<int32_t> offsets(E + 1), rows(M * K);
  cpu::moe_permute_plan(offsets.data(), rows.data(), r.topk_index(), M, E, K);
  EXPECT_EQ(std::vector<int32_t>(r.offsets(), r.offsets() + E + 1), offsets);
  EXPECT_EQ(std::vector<int32_t>(r.row_of_slot(), r.row_of_slot() + M * K), rows);
  double load_sum = 0;
  const std::vector<double> load = r.load();
  for (idx_t e = 0; e < E; ++e) {
    load_sum += load[e];
    EXPECT_DOUBLE_EQ(load[e], double(offsets[e + 1] - offsets[e]) / double(M * K));
  }
  EXPECT_NEAR(load_sum, 1.0, 1e-15);
  const Json st = r.stats("rom");
  EXPECT_EQ(st.as_object().front().first, "type");
  EXPECT_EQ(st.at("type").as_string(), "rom");
  EXPECT_EQ(st.at("tokens").as_int(), M);
  EXPECT_TRUE(r.stats().get("type") == nullptr);

  // L = Σ Rw · w + a · (aux + z): backward with topk_weight_grad() = Rw and aux_grad = a.
  Vec Rw = random_vector<double>(M * K, rng);
  const double a = 1.7;
  auto loss = [&] {
    const double x = route(in.data(), ld);
    double s = a * x;
    for (idx_t i = 0; i < M * K; ++i) s += Rw[i] * r.topk_weight()[i];
    return s;
  };
  loss();
  std::copy(Rw.begin(), Rw.end(), r.topk_weight_grad());
  Vec din(M * ld, 0.5);  // accumulates onto what is there
  r.backward(Bk::Ctx{}, din.data(), ld, grads.data(), in.data(), ld, P, M, a);
  Vec dw(grads.begin() + w.offset, grads.begin() + w.offset + w.numel);
  Vec dx;
  for (idx_t m = 0; m < M; ++m)
    for (idx_t c = 0; c < ld; ++c) dx.push_back(din[m * ld + c] - 0.5);
  Vec num_in = numeric_gradient(in, loss);
  EXPECT_EQ(compare_gradients(dx, num_in, 1e-8, "din"), "");
  Vec wv(params.begin() + w.offset, params.begin() + w.offset + w.numel);
  Vec num_w = numeric_gradient(wv, [&] {
    std::copy(wv.begin(), wv.end(), params.begin() + w.offset);
    return loss();
  });
  EXPECT_EQ(compare_gradients(dw, num_w, 1e-8, "router weight"), "");
}
