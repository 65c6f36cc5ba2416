// CUDA grouped_matmul (see ops/grouped_matmul.h). Forward with rows <= kGroupedGemvMaxRows: the
// device-side grouped GEMV (grouped_gemv.cu; no host sync, graph-capturable: decoding).
// Otherwise, and always in backward: one cuBLASLt GEMM per expert with rows, after ONE small
// device-to-host copy of the offsets (E+1 int32) per call unless the caller passes the host copy
// it already has (the router copies once per forward; backward reuses it); that copy
// synchronises the stream, so this path is for training and prefill and cannot be captured in
// a CUDA graph. The experts' GEMMs are spread round-robin over the caller's stream and up to
// three side streams of that (device, stream) (fork: the side streams wait on an event of the
// caller's stream; join: the caller's stream waits on each side stream's event), so one expert's
// tail overlaps the next one's start; every expert writes only its own rows and its own weight
// gradient slab, so the result does not depend on the overlap. Expert weight gradients
// accumulate through the fp32 GEMM (deterministic: no atomics).
#include <cuda_bf16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
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

int g_streams = 4;

// Side streams of one (device, stream) and the events that fork and join them.
struct Lanes {
  cudaStream_t side[3] = {};
  cudaEvent_t fork = nullptr, join[3] = {};
};
Lanes& lanes_of(cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, Lanes>* all = new std::map<std::pair<int, cudaStream_t>, Lanes>();
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  Lanes& l = (*all)[{dev, stream}];
  if (!l.fork) {
    CUDA_CHECK(cudaEventCreateWithFlags(&l.fork, cudaEventDisableTiming));
    for (int i = 0; i < 3; ++i) {
      CUDA_CHECK(cudaStreamCreateWithFlags(&l.side[i], cudaStreamNonBlocking));
      CUDA_CHECK(cudaEventCreateWithFlags(&l.join[i], cudaEventDisableTiming));
    }
  }
  return l;
}

// Runs gemm(e, s) for every expert with rows, expert e on lane e mod n of n <= g_streams lanes
// (lane 0 = the caller's stream), forked from and joined back into `stream`.
template <typename Gemm>
void for_each_expert(const std::vector<int32_t>& off, idx_t E, cudaStream_t stream, Gemm&& gemm) {
  idx_t busy = 0;
  for (idx_t e = 0; e < E; ++e) busy += off[e + 1] > off[e];
  const int n = int(std::min<idx_t>(busy, g_streams));
  if (n <= 1) {
    for (idx_t e = 0; e < E; ++e)
      if (off[e + 1] > off[e]) gemm(e, stream);
    return;
  }
  Lanes& l = lanes_of(stream);
  CUDA_CHECK(cudaEventRecord(l.fork, stream));
  for (int i = 0; i + 1 < n; ++i) CUDA_CHECK(cudaStreamWaitEvent(l.side[i], l.fork, 0));
  int lane = 0;
  for (idx_t e = 0; e < E; ++e) {
    if (off[e + 1] == off[e]) continue;
    gemm(e, lane == 0 ? stream : l.side[lane - 1]);
    lane = (lane + 1) % n;
  }
  for (int i = 0; i + 1 < n; ++i) {
    CUDA_CHECK(cudaEventRecord(l.join[i], l.side[i]));
    CUDA_CHECK(cudaStreamWaitEvent(stream, l.join[i], 0));
  }
}
}  // namespace

void set_grouped_matmul_streams(int n) {
  CHECK(n >= 1 && n <= 4, "set_grouped_matmul_streams: n=", n, " must be 1 .. 4");
  g_streams = n;
}

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
  for_each_expert(off, E, stream, [&](idx_t e, cudaStream_t s) {
    const idx_t r0 = off[e], n = off[e + 1] - off[e];
    matmul_forward<T>(out + r0 * out_ld, out_ld, in + r0 * in_ld, in_ld, weight + e * w_stride, nullptr, n, N, Kd,
                      false, s);
  });
}

template <typename T>
void grouped_matmul_backward(T* din, idx_t din_ld, float* dweight, const T* dout, idx_t dout_ld, const T* in,
                             idx_t in_ld, const T* weight, idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N,
                             idx_t Kd, bool din_accumulate, const int32_t* known_offsets, cudaStream_t stream) {
  const std::vector<int32_t> off = host_offsets(offsets, known_offsets, E, stream);
  for_each_expert(off, E, stream, [&](idx_t e, cudaStream_t s) {
    const idx_t r0 = off[e], n = off[e + 1] - off[e];
    matmul_backward<T>(din ? din + r0 * din_ld : nullptr, din_ld, dweight ? dweight + e * w_stride : nullptr, nullptr,
                       dout + r0 * dout_ld, dout_ld, in + r0 * in_ld, in_ld, weight + e * w_stride, n, N, Kd,
                       din_accumulate, s);
  });
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
