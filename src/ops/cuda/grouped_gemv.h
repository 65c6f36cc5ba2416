// The small-rows path of cuda::grouped_matmul_forward (ops/grouped_matmul.h), kept apart because
// its kernel is device code (grouped_gemv.cu) while grouped_matmul.cpp is host code. Reads the
// offsets on the device only: no host sync, graph-capturable. Internal to src/ops/cuda/.
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm::cuda {
// out[r, :] = W_e · in[r, :] for every grouped row r < rows (rows <= kGroupedGemvMaxRows).
template <typename T>
void grouped_gemv_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                          const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows, cudaStream_t stream);
}  // namespace moessm::cuda
