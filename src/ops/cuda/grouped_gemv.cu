// CUDA grouped GEMV: cuda::grouped_matmul_forward for a few grouped rows (decode; see
// ops/grouped_matmul.h and grouped_gemv.h). Memory-bound on the weights, so every chosen expert's
// W_e is streamed once per tile of kRowTile of its rows and no other expert's weight is read.
// Grid (N / kWarps, min(E, rows)): block y finds the y-th expert with rows from the device
// offsets (a warp ballot scan; blocks past the last such expert exit); each warp owns one output
// row n, its lanes read W_e[n, :] with 16-byte loads (4 floats / 8 bf16, when every row start
// is 16-byte aligned; scalar loads otherwise), dot it with up to kRowTile input rows at once in
// fp32, and reduce the lanes in a fixed butterfly (deterministic). No workspace, no host sync.
// Without offsets (the dense matmul's small-M path) block y = 0 takes every row with weight 0.
#include <cuda_bf16.h>

#include <cstdint>

#include "core/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/grouped_gemv.h"
#include "ops/grouped_matmul.h"

namespace moessm::cuda {

namespace {

constexpr int kWarps = 8;    // output rows per block
constexpr int kRowTile = 8;  // grouped rows sharing one pass over the weight row

template <typename T, int VEC> struct Loader;
template <typename T> struct Loader<T, 1> {
  static __device__ __forceinline__ void load(const T* p, float (&f)[1]) { f[0] = to_f32(p[0]); }
};
template <> struct Loader<float, 4> {
  static __device__ __forceinline__ void load(const float* p, float (&f)[4]) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
  }
};
template <> struct Loader<bf16, 8> {
  static __device__ __forceinline__ void load(const bf16* p, float (&f)[8]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = __bfloat1622float2(h[i]);
      f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
  }
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kWarps * 32)
grouped_gemv_kernel(T* out, idx_t out_ld, const T* __restrict__ in, idx_t in_ld, const T* __restrict__ weight,
                    idx_t w_stride, const int32_t* __restrict__ offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows,
                    bool accumulate) {
  __shared__ idx_t sh[3];  // expert, first row, end row
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (!offsets) {
    if (threadIdx.x == 0) sh[0] = 0, sh[1] = 0, sh[2] = rows;
  } else if (warp == 0) {
    const int target = int(blockIdx.y);
    int seen = 0;
    bool done = false;
    if (lane == 0) sh[0] = -1;
    __syncwarp();
    for (idx_t e0 = 0; e0 < E && !done; e0 += 32) {
      const idx_t e = e0 + lane;
      const bool has_rows = e < E && offsets[e + 1] > offsets[e];
      const unsigned ballot = __ballot_sync(0xffffffffu, has_rows);
      const int in_chunk = __popc(ballot);
      if (seen + in_chunk > target) {
        if (has_rows && seen + __popc(ballot & ((1u << lane) - 1u)) == target) {
          sh[0] = e;
          sh[1] = max(idx_t(0), idx_t(offsets[e]));
          sh[2] = min(rows, idx_t(offsets[e + 1]));  // offsets[E] = rows by contract; never past it
        }
        done = true;
      }
      seen += in_chunk;
    }
  }
  __syncthreads();
  const idx_t e = sh[0], r_begin = sh[1], r_end = sh[2];
  const idx_t n = idx_t(blockIdx.x) * kWarps + warp;
  if (e < 0 || n >= N) return;
  const T* wrow = weight + e * w_stride + n * Kd;
  const idx_t nv = Kd / VEC;
  for (idx_t r0 = r_begin; r0 < r_end; r0 += kRowTile) {
    const int nr = int(min(idx_t(kRowTile), r_end - r0));
    float acc[kRowTile];
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) acc[i] = 0.f;
#pragma unroll 2
    for (idx_t v = lane; v < nv; v += 32) {
      float wv[VEC];
      Loader<T, VEC>::load(wrow + v * VEC, wv);
#pragma unroll
      for (int i = 0; i < kRowTile; ++i) {
        if (i < nr) {
          float xv[VEC];
          Loader<T, VEC>::load(in + (r0 + i) * in_ld + v * VEC, xv);
#pragma unroll
          for (int u = 0; u < VEC; ++u) acc[i] = fmaf(wv[u], xv[u], acc[i]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) {
      const float s = group_sum<32>(acc[i]);
      if (lane == 0 && i < nr) {
        T* o = out + (r0 + i) * out_ld + n;
        *o = from_f32<T>(accumulate ? s + to_f32(*o) : s);
      }
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

template <typename T>
void grouped_gemv_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t w_stride,
                          const int32_t* offsets, idx_t E, idx_t N, idx_t Kd, idx_t rows, cudaStream_t stream,
                          bool accumulate) {
  CHECK(rows >= 0 && rows <= kGroupedGemvMaxRows, "cuda grouped_gemv: rows=", rows, " outside 0..",
        kGroupedGemvMaxRows, " (kGroupedGemvMaxRows)");
  CHECK(E >= 1 && N > 0 && Kd > 0, "cuda grouped_gemv: sizes E=", E, " N=", N, " Kd=", Kd, " must be positive");
  CHECK(offsets || E == 1, "cuda grouped_gemv: without offsets E must be 1, found ", E);
  CHECK(in_ld >= Kd && out_ld >= N, "cuda grouped_gemv: strides in_ld=", in_ld, " out_ld=", out_ld,
        " must be >= Kd=", Kd, " / N=", N);
  if (rows == 0) return;
  constexpr int kVec = 16 / int(sizeof(T));
  const size_t es = sizeof(T);
  const bool vec = aligned16(weight) && aligned16(in) && (size_t(w_stride) * es) % 16 == 0 &&
                   (size_t(Kd) * es) % 16 == 0 && (size_t(in_ld) * es) % 16 == 0;
  const dim3 grid{unsigned((N + kWarps - 1) / kWarps), unsigned(E < rows ? E : rows)};
  if (vec)
    grouped_gemv_kernel<T, kVec><<<grid, kWarps * 32, 0, stream>>>(out, out_ld, in, in_ld, weight, w_stride,
                                                                   offsets, E, N, Kd, rows, accumulate);
  else
    grouped_gemv_kernel<T, 1><<<grid, kWarps * 32, 0, stream>>>(out, out_ld, in, in_ld, weight, w_stride, offsets,
                                                                E, N, Kd, rows, accumulate);
  CUDA_CHECK_LAUNCH("grouped_gemv_kernel");
}

template void grouped_gemv_forward<float>(float*, idx_t, const float*, idx_t, const float*, idx_t, const int32_t*,
                                          idx_t, idx_t, idx_t, idx_t, cudaStream_t, bool);
template void grouped_gemv_forward<bf16>(bf16*, idx_t, const bf16*, idx_t, const bf16*, idx_t, const int32_t*, idx_t,
                                         idx_t, idx_t, idx_t, cudaStream_t, bool);

}  // namespace moessm::cuda
