// warp_mma.cuh: the few warp-level tensor-core primitives the hand-written kernels use (sm_80+,
// so sm_90 too): 16-byte asynchronous global → shared copies, ldmatrix (plain and transposed)
// and the bf16 mma.sync m16n8k16 with fp32 accumulators.
//
// Fragment layouts of mma.m16n8k16 (lane = 4·g + c, g = lane / 4 the "group", c = lane % 4):
//   A (16 × 16, row-major) 4 registers of 2 bf16: a0 (row g, cols 2c, 2c+1), a1 (row g+8, same
//     cols), a2 (row g, cols 2c+8, 2c+9), a3 (row g+8, cols 2c+8, 2c+9);
//   B (16 × 8, "col": stored n-major, [n][k]) 2 registers: b0 (k rows 2c, 2c+1 of column g),
//     b1 (k rows 2c+8, 2c+9 of column g);
//   C / D (16 × 8) 4 floats: d0, d1 (row g, cols 2c, 2c+1), d2, d3 (row g+8, same cols).
// So a C tile of two neighbouring n-tiles, rounded to bf16, is an A fragment of the next product
// (pack_a): the softmax probabilities of attention go from one mma to the next in registers.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace moessm::cuda::mma {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// 16 bytes global → shared, asynchronously; `valid` false writes 16 zero bytes (nothing is read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8 × 8 bf16 matrices; lane l gives the row address of matrix l / 8, row l % 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a · b (bf16 in, fp32 accumulate)
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d0 += a · (b[0], b[1]), d1 += a · (b[2], b[3]): the two n-tiles of one x4 B load.
__device__ __forceinline__ void mma_pair(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
  mma_bf16(d0, a, b[0], b[1]);
  mma_bf16(d1, a, b[2], b[3]);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A fragment (16 rows × 16 k) made of the C tiles c0 (k 0..7) and c1 (k 8..15).
__device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// Lane offsets into a row-major [rows][ld] bf16 tile for the x4 loads above, as (row, col):
//   A fragment of the 16 × 16 block at (r0, c0):                 (r0 + l % 16, c0 + l / 16 · 8)
//   B fragments of two n-tiles (rows n0 .. n0+15 of an [n][k] tile), k block c0:
//                                                                (n0 + l % 8 + l / 16 · 8, c0 + (l / 8) % 2 · 8)
//     → r[0], r[1] = b0, b1 of n-tile n0; r[2], r[3] = those of n-tile n0 + 8
//   B fragments from a [k][n] tile (transposed load), k rows k0 .. k0+15, n columns n0 .. n0+15:
//                                                                (k0 + l % 8 + (l / 8) % 2 · 8, n0 + l / 16 · 8)
//     → r[0], r[1] = b0, b1 of n-tile n0; r[2], r[3] = those of n-tile n0 + 8
__device__ __forceinline__ int a_row(int lane) { return lane & 15; }
__device__ __forceinline__ int a_col(int lane) { return (lane >> 4) << 3; }
__device__ __forceinline__ int bn_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__device__ __forceinline__ int bn_col(int lane) { return ((lane >> 3) & 1) << 3; }
__device__ __forceinline__ int bk_row(int lane) { return (lane & 7) + (((lane >> 3) & 1) << 3); }
__device__ __forceinline__ int bk_col(int lane) { return (lane >> 4) << 3; }

}  // namespace moessm::cuda::mma
