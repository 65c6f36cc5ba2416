// The --device / --dtype options of the commands that run a loaded model (logits, grads, eval,
// task eval) and the one way they run it: the host model itself on the CPU, or the same model on
// the CUDA backend (fp32 or bf16 activations) with the host's weights.
#pragma once
#include <string>

#include "backend/backends.h"
#include "cli/command.h"
#include "core/check.h"
#include "model/language_model.h"

namespace moessm::cli {

inline void device_options(Args& a) {
  a.option("device", "cpu or cuda (one GPU; every layer type the registry runs on cuda)", "cpu")
      .option("dtype", "with --device cuda: float32 (the reference path) or bfloat16 (training's "
                       "precision: bf16 activations and GEMM operands, fp32 master weights)", "float32");
}

// Validates --device (and that this build has CUDA when it is asked for); true for cuda.
inline bool on_cuda(const Args& a) {
  const std::string d = a.str("device");
  CHECK(d == "cpu" || d == "cuda", "--device must be cpu or cuda, found '", d, "'");
#ifndef MOESSM_CUDA
  CHECK(d == "cpu", "--device cuda: this build has no CUDA backend (configure with -DMOESSM_CUDA=ON where nvcc exists)");
#endif
  return d == "cuda";
}

// Runs fn(model) on the device and precision the flags ask for.
template <typename Fn>
void with_model(const Args& a, LanguageModel<float>& host, Fn&& fn) {
  const std::string dt = a.str("dtype");
  CHECK(dt == "float32" || dt == "bfloat16", "--dtype must be float32 or bfloat16, found '", dt, "'");
  if (!on_cuda(a)) return fn(host);
#ifdef MOESSM_CUDA
  auto run = [&](auto tag) {
    Model<CudaBackend<decltype(tag)>> m(host.config());
    m.upload_params(host.params.data());
    fn(m);
  };
  if (dt == "float32") run(float());
  else run(__nv_bfloat16());
#endif
}

}  // namespace moessm::cli
