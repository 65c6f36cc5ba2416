// CUDA grouped_matmul (see ops/grouped_matmul.h). Forward with rows <= kGroupedGemvMaxRows: the
// device-side grouped GEMV (grouped_gemv.cu; no host sync, graph-capturable: decoding).
// Otherwise, and always in backward: one cuBLASLt GEMM per expert with rows, after ONE small
// device-to-host copy of the offsets (E+1 int32) per call unless the caller passes the host copy
// it already has (the router copies once per forward; backward reuses it); that copy
// synchronises the stream, so this path is for training and prefill and cannot be captured in
// a CUDA graph. Expert weight
// gradients accumulate through the fp32 GEMM (deterministic: no atomics).
#include <cuda_bf16.h>

#include <algorithm>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "ops/cuda/grouped_gemv.h"
#include "ops/grouped_matmul.h"
#include "ops/matmul.h"

namespace moessm::cuda {

namespace {
// The offsets on the host: the caller's copy when it has one (no sync), else one copy (a sync).
std::vector<int32_t> host_offsets(const int32_t* offsets, const int32_t* known, idx_t E, cudaStream_t stream) {
  std::vector<int32_t> h(static_cast<size_t>(E + 1));
  if (known) {
    std::copy(known, known + E + 1, h.begin());
  } else {
    CUDA_CHECK(cudaMemcpyAsync(h.data(), offsets, h.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  CHECK(h[0] == 0, "grouped_matmul: offsets[0] must be 0, found ", h[0]);
  for (idx_t e = 0; e < E; ++e) CHECK(h[e + 1] >= h[e], "grouped_matmul: offsets decrease at expert ", e);
  return h;
}
}  // namespace

template <typename T>
void grouped_matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                            const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows, const int32_t* known_offsets,
                            cudaStream_t stream) {
  CHECK(rows >= 0, "grouped_matmul_forward: rows=", rows, " must be >= 0");
  if (rows <= kGroupedGemvMaxRows) {
    grouped_gemv_forward<T>(out, out_ld, in, in_ld, weight, w_stride, offsets, E, N, Kd, rows, stream);
    return;
  }
  const std::vector<int32_t> off = host_offsets(offsets, known_offsets, E, stream);
  CHECK(off[size_t(E)] == rows, "grouped_matmul_forward: offsets[E]=", off[size_t(E)], " but rows=", rows,
        " (the grouped row count M*K)");
  for (idx_t e = 0; e < E; ++e) {
    const idx_t r0 = off[e], rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    matmul_forward<T>(out + r0 * out_ld, out_ld, in + r0 * in_ld, in_ld, weight + e * w_stride, nullptr, rows, N, Kd,
                      false, stream);
  }
}

template <typename T>
void grouped_matmul_backward(T* din, idx_t din_ld, float* dweight, const T* dout, idx_t dout_ld, const T* in,
                             idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N,
                             idx_t Kd, bool din_accumulate, const int32_t* known_offsets, cudaStream_t stream) {
  const std::vector<int32_t> off = host_offsets(offsets, known_offsets, E, stream);
  for (idx_t e = 0; e < E; ++e) {
    const idx_t r0 = off[e], rows = off[e + 1] - off[e];
    if (rows == 0) continue;
    matmul_backward<T>(din ? din + r0 * din_ld : nullptr, din_ld, dweight ? dweight + e * w_stride : nullptr, nullptr,
                       dout + r0 * dout_ld, dout_ld, in + r0 * in_ld, in_ld, weight + e * w_stride, rows, N, Kd,
                       din_accumulate, stream);
  }
}

template void grouped_matmul_forward<float>(float*, idx_t, const float*, idx_t, const float*, idx_t, const int32_t*,
                                            idx_t, idx_t, idx_t, idx_t, const int32_t*, cudaStream_t);
template void grouped_matmul_forward<__nv_bfloat16>(__nv_bfloat16*, idx_t, const __nv_bfloat16*, idx_t,
                                                    const __nv_bfloat16*, idx_t, const int32_t*, idx_t, idx_t, idx_t,
                                                    idx_t, const int32_t*, cudaStream_t);
template void grouped_matmul_backward<float>(float*, idx_t, float*, const float*, idx_t, const float*, idx_t,
                                             const float*, idx_t, const int32_t*, idx_t, idx_t, idx_t, bool,
                                             const int32_t*, cudaStream_t);
template void grouped_matmul_backward<__nv_bfloat16>(__nv_bfloat16*, idx_t, float*, const __nv_bfloat16*, idx_t,
                                                     const __nv_bfloat16*, idx_t, const __nv_bfloat16*, idx_t,
                                                     const int32_t*, idx_t, idx_t, idx_t, bool, const int32_t*,
                                                     cudaStream_t);

}  // namespace moessm::cuda
