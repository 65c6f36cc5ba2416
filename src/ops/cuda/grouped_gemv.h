// The small-rows path of cuda::grouped_matmul_forward (ops/grouped_matmul.h), kept apart because
// its kernel is device code (grouped_gemv.cu) while grouped_matmul.cpp is host code. Reads the
// offsets on the device only: no host sync, graph-capturable. Also the small-M path of the dense
// cuda::matmul_forward (offsets = nullptr: one group, weight 0). Internal to src/ops/cuda/.
#pragma once
#include <cstdint>

#include "ops/op_common.h"

namespace moessm::cuda {
// Rows up to which the dense matmul_forward takes the GEMV (one pass over the weight: the
// kernel's row tile); beyond, cuBLASLt.
constexpr idx_t kDenseGemvMaxRows = 8;

// out[r, :] = W_e · in[r, :] (+ out[r, :] when accumulate) for every grouped row r < rows
// (rows <= kGroupedGemvMaxRows); offsets == nullptr: all rows use weight 0 (E must be 1).
template <typename T>
void grouped_gemv_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                          const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows, cudaStream_t stream,
                          bool accumulate = false);
}  // namespace moessm::cuda
