// CUDA embedding lookup and its deterministic backward (contract in ops/embedding.h).
// Backward: cub::DeviceRadixSort (stable) orders (id, row) pairs by id; a block per sorted
// position that starts a run of equal ids owns that vocabulary row and adds the run's dout rows
// in increasing row order. No atomics; same summation order as the CPU reference.
#include <cub/device/device_radix_sort.cuh>

#include "ops/cuda/common.cuh"
#include "ops/embedding.h"

namespace moessm::cuda {

namespace {

__global__ void embed_fwd_kernel(float* out, const int32_t* ids, const float* table, idx_t rows,
                                 idx_t V, idx_t D) {
  const idx_t r = blockIdx.x;
  const int32_t id = ids[r];
  const bool ok = id >= 0 && id < V;
  for (idx_t i = threadIdx.x; i < D; i += blockDim.x)
    out[r * D + i] = ok ? table[idx_t(id) * D + i] : __int_as_float(0x7fc00000);
}

__global__ void iota_kernel(int32_t* v, idx_t n) {
  const idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x;
  if (i < n) v[i] = int32_t(i);
}

__global__ void embed_bwd_kernel(float* dtable, const float* dout, const int32_t* sid,
                                 const int32_t* srow, idx_t rows, idx_t V, idx_t D) {
  const idx_t p = blockIdx.x;
  const int32_t id = sid[p];
  if (p > 0 && sid[p - 1] == id) return;  // not the start of a run
  if (id < 0 || id >= V) return;
  idx_t end = p + 1;
  while (end < rows && sid[end] == id) ++end;
  // A frequent token's run can be hundreds of rows: load 8 rows at a time (independent loads in
  // flight), then add them in row order, so the sum is the same as one row at a time.
  constexpr int kAhead = 8;
  for (idx_t i = threadIdx.x; i < D; i += blockDim.x) {
    float acc = dtable[idx_t(id) * D + i];
    idx_t q = p;
    for (; q + kAhead <= end; q += kAhead) {
      float v[kAhead];
#pragma unroll
      for (int j = 0; j < kAhead; ++j) v[j] = dout[idx_t(srow[q + j]) * D + i];
#pragma unroll
      for (int j = 0; j < kAhead; ++j) acc += v[j];
    }
    for (; q < end; ++q) acc += dout[idx_t(srow[q]) * D + i];
    dtable[idx_t(id) * D + i] = acc;
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* ids, const float* table, idx_t rows, idx_t V,
                       idx_t D, cudaStream_t stream) {
  CHECK(rows >= 0 && V > 0 && D > 0, "cuda embedding: rows=", rows, " V=", V, " D=", D);
  CHECK(rows < (idx_t(1) << 31), "cuda embedding: rows=", rows, " exceeds 2^31");
  if (rows == 0) return;
  embed_fwd_kernel<<<unsigned(rows), 256, 0, stream>>>(out, ids, table, rows, V, D);
  CUDA_CHECK_LAUNCH("embed_fwd_kernel");
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, idx_t rows, idx_t V,
                        idx_t D, cudaStream_t stream) {
  CHECK(rows >= 0 && V > 0 && D > 0, "cuda embedding_backward: rows=", rows, " V=", V, " D=", D);
  CHECK(rows < (idx_t(1) << 31), "cuda embedding_backward: rows=", rows, " exceeds 2^31");
  if (rows == 0) return;
  int end_bit = 1;
  while (end_bit < 32 && (idx_t(1) << end_bit) < V) ++end_bit;
  // Ids outside [0, V) are skipped; negative ones sort as large unsigned keys, so sort all 32
  // bits unless every id is known small — we cannot know without a sync, so use 32.
  end_bit = 32;
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const uint32_t*)nullptr,
                                             (uint32_t*)nullptr, (const int32_t*)nullptr,
                                             (int32_t*)nullptr, int(rows), 0, end_bit, stream));
  const size_t arr = (size_t(rows) * sizeof(int32_t) + 255) / 256 * 256;
  char* ws = static_cast<char*>(workspace(3 * arr + temp_bytes, stream));
  int32_t* sid = reinterpret_cast<int32_t*>(ws);
  int32_t* rows_in = reinterpret_cast<int32_t*>(ws + arr);
  int32_t* srow = reinterpret_cast<int32_t*>(ws + 2 * arr);
  void* temp = ws + 3 * arr;
  iota_kernel<<<grid_1d(rows, 256), 256, 0, stream>>>(rows_in, rows);
  CUDA_CHECK_LAUNCH("iota_kernel");
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, reinterpret_cast<const uint32_t*>(ids),
                                             reinterpret_cast<uint32_t*>(sid), rows_in, srow,
                                             int(rows), 0, end_bit, stream));
  embed_bwd_kernel<<<unsigned(rows), 256, 0, stream>>>(dtable, dout, sid, srow, rows, V, D);
  CUDA_CHECK_LAUNCH("embed_bwd_kernel");
}

}  // namespace moessm::cuda
