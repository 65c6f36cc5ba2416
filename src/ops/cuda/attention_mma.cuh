// attention_mma.cuh: the tensor-core path of the CUDA attention op (ops/attention.h's contract),
// internal to src/ops/cuda/attention*.cu. It takes bf16 passes without a KV cache (training and
// cache-free prefill) whose head size is a multiple of 8 (up to 128; the kernels are compiled for
// HD 32, 48, 64, 96 and 128 and zero-fill the columns past hd) and whose rows are 16-byte aligned
// (every pointer, and every *_ld a multiple of 8 elements); everything else stays on the scalar
// kernels of attention.cu. Without a cache only relative positions matter, so pos0 is not read.
#pragma once
#include <cuda_bf16.h>

#include <initializer_list>

#include "ops/attention.h"

namespace moessm::cuda::attention_mma {

// True when the pass fits the tensor-core kernels (sizes, no cache, alignment of every pointer
// and row stride named).
bool eligible(const AttentionParams<__nv_bfloat16, float>& p, std::initializer_list<idx_t> lds,
              std::initializer_list<const void*> ptrs);

// rows_per_warp: 16 or 32 query rows per warp (32 only at head sizes <= 64; ignored above), 0 =
// automatic (32 where it applies and T > 64). Both are meant to give bitwise the same result (the
// extra key tiles a taller block visits are fully masked for the rows that do not need them;
// tests/cuda/test_attention_cuda.cpp checks it).
void forward(__nv_bfloat16* out, idx_t out_ld, float* lse, const AttentionParams<__nv_bfloat16, float>& p,
             cudaStream_t stream, int rows_per_warp = 0);

// dq, dk, dv (assign) from dout, the saved lse and delta = rowsum(dout ⊙ out) (already computed).
void backward(__nv_bfloat16* dq, idx_t dq_ld, __nv_bfloat16* dk, idx_t dk_ld, __nv_bfloat16* dv, idx_t dv_ld,
              const float* delta, const __nv_bfloat16* dout, idx_t dout_ld, const float* lse,
              const AttentionParams<__nv_bfloat16, float>& p, cudaStream_t stream);

}  // namespace moessm::cuda::attention_mma
