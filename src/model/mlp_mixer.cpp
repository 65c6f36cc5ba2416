// The `mlp` layer (see mlp_mixer.h), instantiated for every backend.
#include "model/mlp_mixer.h"

#include "backend/backends.h"
#include "core/check.h"

namespace moessm {

namespace {
int64_t mlp_d_ff(const ModelConfig& cfg, const MixerSpec& spec) {
  for (const auto& kv : spec.options.as_object("mixer 'mlp'"))
    CHECK(kv.first == "type" || kv.first == "d_ff", "mixer 'mlp': unknown option '", kv.first,
          "' (mlp takes d_ff; it has no biases)");
  return parse_d_ff(spec.options, "d_ff", "mixer 'mlp'", default_d_ff(cfg.d_model));
}
}  // namespace

template <typename Bk>
MlpMixer<Bk>::MlpMixer(const ModelConfig& cfg, const MixerSpec& spec)
    : ffn_(cfg.d_model, mlp_d_ff(cfg, spec), int(cfg.n_layer)) {}

template <typename Bk>
void MlpMixer<Bk>::plan(typename Bk::Arena& a, idx_t B, idx_t T_, bool) {
  ffn_.plan(a, B * T_);
}

template <typename Bk>
void MlpMixer<Bk>::forward(const Ctx& ctx, Act* out, const Act* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
                           const void*, void*, double*) {
  ffn_.forward(ctx, out, u, P, B * T_, /*accumulate=*/false);
}

template <typename Bk>
void MlpMixer<Bk>::backward(const Ctx& ctx, Act* du, Param* grads, const Act* dout, const Act* u,
                            const ParamsRef<Bk>& P, idx_t B, idx_t T_, const void*, double) {
  ffn_.backward(ctx, du, grads, dout, u, P, B * T_, /*du_accumulate=*/false);
}

MOESSM_INSTANTIATE_FOR_BACKENDS(MlpMixer)

}  // namespace moessm
