// MixerHarness: one layer (any registered type) on its own in double precision, with its own
// parameter table under a chosen prefix, buffers and a training arena of B×T tokens, for
// layer-level tests: forward, the objective L = Σ out ⊙ R + aux_w · aux with its backward
// (parameter grads and du), and random inputs whose router logits are separated by a margin
// (so a finite-difference step cannot change a top-K set).
// (test_rom.cpp has its own copy of this pattern for "mixer." names; new tests use this one.)
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu_backend.h"
#include "core/check.h"
#include "core/rng.h"
#include "model/mixer_registry.h"
#include "testing.h"

namespace moessm::testing {

struct MixerHarness {
  using Vec = std::vector<double>;
  ModelConfig cfg;
  std::string prefix;
  ParamTable table;
  std::unique_ptr<Mixer<CpuBackend<double>>> mixer;
  Vec params, grads;
  Arena<double> arena;
  idx_t B, T;

  MixerHarness(const ModelConfig& c, const std::string& spec_json, idx_t B_, idx_t T_, uint64_t seed,
               const std::string& prefix_ = "backbone.layers.0.feed_forward.")
      : cfg(c), prefix(prefix_), B(B_), T(T_) {
    MixerSpec spec;
    spec.options = Json::parse(spec_json);
    spec.type = spec.options.at("type").as_string();
    mixer = make_mixer<CpuBackend<double>>(cfg, spec, 0);
    mixer->register_params(table, prefix);
    params.assign(table.total(), 0.0);
    grads.assign(table.total(), 0.0);
    mixer->init_params(params.data(), table, seed);
    Rng rng(seed, 77);
    for (auto& p : params) p += rng.uniform(-0.1, 0.1);  // the real init leaves some tensors constant
    Arena<double> a;
    for (int pass = 0; pass < 2; ++pass) {  // planning pass, then the real one
      mixer->plan_kept(a);
      mixer->plan(a, B, T, true);
      mixer->plan_scratch(a, B, T);
      if (pass == 0) a.allocate_planned();
    }
    arena = std::move(a);
  }
  double* param(const std::string& name) { return params.data() + table.at(prefix + name).offset; }
  const ParamInfo& info(const std::string& name) const { return table.at(prefix + name); }
  idx_t M() const { return B * T; }
  idx_t D() const { return cfg.d_model; }
  // out = layer(u); returns the auxiliary loss it added.
  double forward(Vec& out, const Vec& u, const Vec* state = nullptr) {
    out.assign(size_t(M() * D()), 0.0);
    Vec st_out(state ? state->size() : 0);
    double aux = 0;
    mixer->forward({}, out.data(), u.data(), {params.data(), params.data()}, B, T, state ? state->data() : nullptr,
                   state ? st_out.data() : nullptr, &aux);
    return aux;
  }
  double value(const Vec& u, const Vec& R, double aux_w, const Vec* state = nullptr) {
    Vec out;
    double L = aux_w * forward(out, u, state);
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  }
  // L and its gradients: grads (zeroed first: they accumulate) and du (assigned).
  double value_and_grad(const Vec& u, const Vec& R, double aux_w, Vec* du, const Vec* state = nullptr) {
    const double L = value(u, R, aux_w, state);
    std::fill(grads.begin(), grads.end(), 0.0);
    du->assign(u.size(), 1e3);  // du assigns: a stale value left in it would show as an FD mismatch
    mixer->backward({}, du->data(), grads.data(), R.data(), u.data(), {params.data(), params.data()}, B, T,
                    state ? state->data() : nullptr, aux_w);
    return L;
  }
  // Smallest gap between sorted router logits over every router and token (+inf without one).
  double min_logit_gap(const Vec& u) const {
    double gap = INFINITY;
    for (const ParamInfo& p : table.entries()) {
      if (p.name.find(".router") == std::string::npos) continue;
      const idx_t E = p.shape[0], Dm = p.shape[1];
      for (idx_t m = 0; m < M(); ++m) {
        Vec l(size_t(E), 0.0);
        for (idx_t e = 0; e < E; ++e)
          for (idx_t d = 0; d < Dm; ++d) l[e] += u[m * Dm + d] * params[p.offset + e * Dm + d];
        std::sort(l.begin(), l.end());
        for (idx_t e = 1; e < E; ++e) gap = std::min(gap, l[e] - l[e - 1]);
      }
    }
    return gap;
  }
  Vec separated_input(Rng& rng, double margin = 1e-3) const {
    for (int attempt = 0; attempt < 1000; ++attempt) {
      Vec u = random_vector<double>(size_t(M() * D()), rng);
      if (min_logit_gap(u) > margin) return u;
    }
    FAIL("could not draw an input with router margins > ", margin);
  }
};

}  // namespace moessm::testing
