// CpuMixer<T>: adapter for the mixers whose forward and backward still call the CPU reference ops
// directly (RoM, Swimba, separated MoE-SSM) instead of their backend's ops: it implements the
// Mixer<CpuBackend<T>> interface on top of a plain-pointer forward_cpu / backward_cpu with one
// scalar type T, the state as one T part of state_size() elements per sequence. Such a mixer
// exists on the CPU backends only; the registry's supports() names the CUDA ops it still needs.
// It goes away as each mixer is written against Bk's ops (issue: MoE on CUDA).
#pragma once
#include "backend/cpu_backend.h"
#include "model/mixer.h"

namespace moessm {

template <typename T>
class CpuMixer : public Mixer<CpuBackend<T>> {
 public:
  using Bk = CpuBackend<T>;
  std::vector<StatePart> state_parts() const final { return {{this->state_size(), dtype_of<T>()}}; }
  void forward(const typename Bk::Ctx&, T* out, const T* u, const ParamsRef<Bk>& P, idx_t B, idx_t T_,
               const void* state_in, void* state_out, double* aux) final {
    *aux += forward_cpu(out, u, P.master, B, T_, static_cast<const T*>(state_in), static_cast<T*>(state_out));
  }
  void backward(const typename Bk::Ctx&, T* du, T* grads, const T* dout, const T* u, const ParamsRef<Bk>& P,
                idx_t B, idx_t T_, const void* state_in, double aux_grad) final {
    backward_cpu(du, grads, dout, u, P.master, B, T_, static_cast<const T*>(state_in), aux_grad);
  }

 protected:
  // Returns the layer's auxiliary loss; the state is one [B, state_size()] block of T.
  virtual double forward_cpu(T* out, const T* u, const T* params, idx_t B, idx_t T_, const T* state_in,
                             T* state_out) = 0;
  virtual void backward_cpu(T* du, T* grads, const T* dout, const T* u, const T* params, idx_t B, idx_t T_,
                            const T* state_in, double aux_grad) = 0;
};

}  // namespace moessm
