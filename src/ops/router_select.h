// The top-K choice of router_topk, shared by the CPU reference and the CUDA kernel (one thread
// per token row there), so both pick the same experts: repeated arg-max over the not-yet-chosen
// experts with strict '>' (ties → the lower index), K small (O(K·E) beats sorting).
#pragma once
#include <cstdint>

#include "ops/op_common.h"

#ifdef __CUDACC__
#define MOESSM_HOST_DEVICE __host__ __device__
#else
#define MOESSM_HOST_DEVICE
#endif

namespace moessm {

// id[0..K-1] = the K largest entries of p[0..E-1] in descending order (ties: lower index first).
template <typename T>
MOESSM_HOST_DEVICE inline void router_select_topk(int32_t* id, const T* p, idx_t E, idx_t K) {
  for (idx_t k = 0; k < K; ++k) {
    int32_t best = -1;
    for (idx_t i = 0; i < E; ++i) {
      bool taken = false;
      for (idx_t j = 0; j < k; ++j) taken = taken || id[j] == int32_t(i);
      if (taken) continue;
      if (best < 0 || p[i] > p[best]) best = int32_t(i);
    }
    id[k] = best;
  }
}

}  // namespace moessm
