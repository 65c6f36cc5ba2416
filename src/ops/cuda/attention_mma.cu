// Tensor-core attention (contract in ops/attention.h; which passes come here: attention_mma.cuh).
// Flash-attention style: bf16 mma.sync m16n8k16 with fp32 accumulators, online softmax in fp32
// in the exp2 domain, probabilities handed from one product to the next in registers, no T×T
// matrix in memory, no atomics (every output element is accumulated by one thread in a fixed
// order: bitwise repeatable).
//
// Blocks of 4 warps; a tile is 64 token rows × HD of one head, held in shared memory as bf16 with
// rows padded to HD + 8 elements (ldmatrix without bank conflicts), filled by cp.async, the next
// tile's copy overlapping the current tile's products (two buffers). Each warp owns 16 rows.
//   forward : grid (query tiles, H, B), the last query tiles first (they see the most keys). Per
//             key tile: S = Q Kᵀ (16 × 64 per warp), mask, online softmax (running max m and sum
//             l per row), O = O·exp2(m_old − m_new) + P V with P rounded to bf16 (as FlashAttention).
//             out = O / l, lse = (m ln 2 + ln l).
//   backward: delta = rowsum(dout ⊙ out) comes from attention.cu. dk / dv: grid (key tiles, Hkv,
//             B); each warp owns 16 keys and loops over the group's query heads and the query tiles
//             that see the tile: Sᵀ = K Qᵀ, Pᵀ = exp2(Sᵀ·c − lse₂), dPᵀ = V dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − delta),
//             dV += Pᵀ dO, dK += dSᵀ Q. dq: grid (query tiles, H, B), over key tiles as the forward:
//             S, P, dP = dO Vᵀ, dS, dQ += dS K. (Seven products instead of FlashAttention-2's five:
//             the price of no atomics.)
// HD is the compile-time tile width (32, 48, 64, 96, 128: the smallest >= hd); columns past hd
// are zero in shared memory and never written back.
// Shared memory: forward 5 tiles (Q, two K, two V), backward 6 tiles + 256 floats: 46 / 55 KB at
// HD 64, 87 / 105 KB at HD 128 (opted in).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "core/check.h"
#include "ops/cuda/attention_mma.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/warp_mma.cuh"

namespace moessm::cuda::attention_mma {

namespace {

using namespace moessm::cuda::mma;
using P = AttentionParams<bf16, float>;

constexpr int kRows = 64;      // rows of a tile (queries or keys)
constexpr int kWarps = 4;      // 16 rows each
constexpr int kThreads = 32 * kWarps;
constexpr int kNt = kRows / 8;  // n-tiles of 8 across a 64-row tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int HD>
__host__ __device__ constexpr int ld_s() {
  return HD + 8;
}
template <int HD>
__host__ __device__ constexpr int tile_elems() {
  return kRows * ld_s<HD>();
}

// cp.async of rows [0, 64) of a tile: token rows tok0 + r of a [B·T, ld] stream, columns col0 ..
// col0 + hd − 1, zero-filled past `count` rows and past hd columns (up to HD).
template <int HD>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, idx_t ld, idx_t tok0, idx_t col0, int count,
                                          int hd) {
  constexpr int kChunks = HD / 8;
  for (int e = threadIdx.x; e < kRows * kChunks; e += kThreads) {
    const int r = e / kChunks, ch = e % kChunks;
    const bool ok = r < count && ch * 8 < hd;
    cp_async16(dst + r * ld_s<HD>() + ch * 8, ok ? src + (tok0 + r) * ld + col0 + ch * 8 : src, ok);
  }
}

__device__ __forceinline__ bool visible(idx_t qpos, idx_t kpos, idx_t window) {
  return kpos <= qpos && (window == 0 || kpos > qpos - window);
}

// acc[n-tile][4] += (16 rows of A at a_tile + a_row0) · (64 rows of Bn)ᵀ over k = HD, A and Bn both
// row-major [rows][HD] tiles in shared memory.
template <int HD>
__device__ __forceinline__ void gemm_abt(float (&acc)[kNt][4], const bf16* a_tile, int a_row0, const bf16* bn_tile,
                                         int lane) {
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, a_tile + (a_row0 + a_row(lane)) * ld_s<HD>() + kk * 16 + a_col(lane));
#pragma unroll
    for (int np = 0; np < kNt / 2; ++np) {
      uint32_t bf[4];
      ldmatrix_x4(bf, bn_tile + (np * 16 + bn_row(lane)) * ld_s<HD>() + kk * 16 + bn_col(lane));
      mma_pair(acc[2 * np], acc[2 * np + 1], a, bf);
    }
  }
}

// out[mt][d-tile][4] += p[mt] (16 × 64 each, C layout over 8 n-tiles, rounded to bf16) · Bk
// (64 × HD tile, [k][n] row-major, loaded transposed): each B fragment serves the MT m-tiles.
template <int HD, int MT>
__device__ __forceinline__ void gemm_pb(float (&out)[MT][HD / 8][4], const float (&p)[MT][kNt][4],
                                        const bf16* bk_tile, int lane) {
#pragma unroll
  for (int kk = 0; kk < kNt / 2; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) pack_a(a[mt], p[mt][2 * kk], p[mt][2 * kk + 1]);
#pragma unroll
    for (int dp = 0; dp < HD / 16; ++dp) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, bk_tile + (kk * 16 + bk_row(lane)) * ld_s<HD>() + dp * 16 + bk_col(lane));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) mma_pair(out[mt][2 * dp], out[mt][2 * dp + 1], a[mt], bf);
    }
  }
}

// One m-tile.
template <int HD>
__device__ __forceinline__ void gemm_pb(float (&out)[HD / 8][4], const float (&p)[kNt][4], const bf16* bk_tile,
                                        int lane) {
  gemm_pb<HD, 1>(reinterpret_cast<float(&)[1][HD / 8][4]>(out), reinterpret_cast<const float(&)[1][kNt][4]>(p),
                 bk_tile, lane);
}

// The two-buffer pipeline's step at iteration j of n: start the copy of j + 1 (load(j + 1)) and
// wait until the copies of j have landed (for every thread of the block).
template <typename Load>
__device__ __forceinline__ void pipeline_step(int j, int n, Load&& load) {
  if (j + 1 < n) {
    load(j + 1);
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

// Key tile j (keys kb0 + 64·j ..) of kv head kvh of sequence b into buffer j & 1 of Ks and Vs.
template <int HD>
__device__ __forceinline__ void load_kv_tile(bf16* Ks, bf16* Vs, const P& p, idx_t b, idx_t kvh, idx_t kb0, int j) {
  const idx_t kb = kb0 + idx_t(j) * kRows;
  const int n = int(p.T - kb < kRows ? p.T - kb : kRows);
  load_tile<HD>(Ks + (j & 1) * tile_elems<HD>(), p.k, p.k_ld, b * p.T + kb, kvh * p.hd, n, int(p.hd));
  load_tile<HD>(Vs + (j & 1) * tile_elems<HD>(), p.v, p.v_ld, b * p.T + kb, kvh * p.hd, n, int(p.hd));
}

template <int N>
__device__ __forceinline__ void zero(float (&x)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) x[i][0] = x[i][1] = x[i][2] = x[i][3] = 0.f;
}

// The key tiles a query tile [t0, t0 + rows) reads: from the tile holding its first visible key.
__device__ __forceinline__ idx_t first_key_tile_start(idx_t t0, idx_t window) {
  const idx_t lo = window > 0 && t0 - window + 1 > 0 ? t0 - window + 1 : 0;
  return lo / kRows * kRows;
}

// The query rows of this block (the last blocks first: they see the most keys) and the key
// tiles they read: t0 .. t0 + rows − 1, key tiles from kb0 through q_last.
struct QueryBlock {
  idx_t t0, kb0, q_last;
  int rows, n_tiles;
};
template <int BM>
__device__ __forceinline__ QueryBlock query_block(const P& p) {
  QueryBlock q;
  const idx_t blocks = (p.T + BM - 1) / BM;
  q.t0 = (blocks - 1 - idx_t(blockIdx.x)) * BM;
  q.rows = int(p.T - q.t0 < BM ? p.T - q.t0 : BM);
  q.kb0 = first_key_tile_start(q.t0, p.window);
  q.q_last = q.t0 + q.rows - 1;
  q.n_tiles = int((q.q_last - q.kb0) / kRows + 1);
  return q;
}

// Writes a warp's 16 × hd accumulator (times s0 for row g, s1 for row g + 8) as bf16 rows row0 + g
// (+8) of a stream, rows below `valid` only.
template <int HD>
__device__ __forceinline__ void store_rows(bf16* dst, idx_t ld, idx_t tok0, idx_t col0, int row0, int valid, int hd,
                                           const float (&acc)[HD / 8][4], float s0, float s1, int lane) {
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = row0 + g + 8 * half;
    if (r >= valid) continue;
    const float s = half ? s1 : s0;
    bf16* row = dst + (tok0 + r) * ld + col0 + 2 * c;
#pragma unroll
    for (int dt = 0; dt < HD / 8; ++dt)
      if (dt * 8 < hd)
        *reinterpret_cast<__nv_bfloat162*>(row + dt * 8) =
          __floats2bfloat162_rn(acc[dt][2 * half] * s, acc[dt][2 * half + 1] * s);
  }
}

// ---- forward ------------------------------------------------------------------------------------

// MT m-tiles of 16 query rows per warp: a block holds 64·MT queries, warp w the rows
// 64·mt + 16·w (mt < MT), so the warps share the causal diagonal's masked work evenly. A key
// tile's B fragments serve MT products (MT 2 halves the shared-memory reads per mma).
template <int HD, int MT>
__global__ void __launch_bounds__(kThreads) fwd_kernel(bf16* out, idx_t out_ld, float* lse, P p) {
  constexpr int kBM = kRows * MT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);  // MT tiles
  bf16* Ks = Qs + MT * tile_elems<HD>();          // two buffers
  bf16* Vs = Ks + 2 * tile_elems<HD>();           // two buffers
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const idx_t b = blockIdx.z, h = blockIdx.y, kvh = h / (p.H / p.Hkv);
  const QueryBlock qb = query_block<kBM>(p);
  const idx_t t0 = qb.t0, kb0 = qb.kb0, q_last = qb.q_last;
  const int rows = qb.rows, n_tiles = qb.n_tiles;
  const float sl2 = rsqrtf(float(p.hd)) * kLog2e;

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    if (mt * kRows < rows)
      load_tile<HD>(Qs + mt * tile_elems<HD>(), p.q, p.q_ld, b * p.T + t0 + mt * kRows, h * p.hd,
                    rows - mt * kRows, int(p.hd));
  auto load_kv = [&](int j) { load_kv_tile<HD>(Ks, Vs, p, b, kvh, kb0, j); };
  load_kv(0);
  cp_async_commit();

  uint32_t qf[MT][HD / 16][4];
  float o[MT][HD / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    zero(o[mt]);
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }
  const int qrow0 = warp * 16;  // within each m-tile

  for (int j = 0; j < n_tiles; ++j) {
    pipeline_step(j, n_tiles, load_kv);
    if (j == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk)
          ldmatrix_x4(qf[mt][kk],
                      Qs + mt * tile_elems<HD>() + (qrow0 + a_row(lane)) * ld_s<HD>() + kk * 16 + a_col(lane));
    }
    const bf16* K = Ks + (j & 1) * tile_elems<HD>();
    const bf16* V = Vs + (j & 1) * tile_elems<HD>();
    const idx_t kb = kb0 + idx_t(j) * kRows;
    float s[MT][kNt][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) zero(s[mt]);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
      for (int np = 0; np < kNt / 2; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, K + (np * 16 + bn_row(lane)) * ld_s<HD>() + kk * 16 + bn_col(lane));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_pair(s[mt][2 * np], s[mt][2 * np + 1], qf[mt][kk], bf);
      }
    // mask: the diagonal tiles, the window's edge (and keys past T, which sit past the diagonal)
    const bool masked = kb + kRows - 1 > t0 || (p.window > 0 && kb <= q_last - p.window);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float x = s[mt][nt][i] * sl2;
          if (masked) {
            const idx_t qpos = t0 + mt * kRows + qrow0 + g + 8 * (i >> 1), kpos = kb + nt * 8 + 2 * c + (i & 1);
            if (!visible(qpos, kpos, p.window)) x = -INFINITY;
          }
          s[mt][nt][i] = x;
          mx[i >> 1] = fmaxf(mx[i >> 1], x);
        }
      float alpha[2], mu[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m[mt][r], mx[r]);
        mu[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet: p = 0, not NaN
        alpha[r] = exp2f(m[mt][r] - mu[r]);
        m[mt][r] = m_new;
        l[mt][r] *= alpha[r];
      }
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float e = exp2f(s[mt][nt][i] - mu[i >> 1]);
          s[mt][nt][i] = e;
          l[mt][i >> 1] += e;
        }
#pragma unroll
      for (int dt = 0; dt < HD / 8; ++dt) {
        o[mt][dt][0] *= alpha[0], o[mt][dt][1] *= alpha[0];
        o[mt][dt][2] *= alpha[1], o[mt][dt][3] *= alpha[1];
      }
    }
    gemm_pb<HD, MT>(o, s, V, lane);  // O += P V
    __syncthreads();  // buffer j & 1 is refilled by the copy issued at iteration j + 1
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 1);
      l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 2);
      inv[r] = 1.f / l[mt][r];
    }
    const int valid = rows - mt * kRows;
    store_rows<HD>(out, out_ld, b * p.T + t0 + mt * kRows, h * p.hd, qrow0, valid, int(p.hd), o[mt], inv[0], inv[1],
                   lane);
    if (c == 0)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = qrow0 + g + 8 * r;
        if (row < valid) lse[(b * p.H + h) * p.T + t0 + mt * kRows + row] = m[mt][r] * kLn2 + logf(l[mt][r]);
      }
  }
}

// ---- backward: dk, dv ---------------------------------------------------------------------------

template <int HD>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(bf16* dk, idx_t dk_ld, bf16* dv, idx_t dv_ld,
                                                        const bf16* dout, idx_t dout_ld, const float* lse,
                                                        const float* delta, P p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* Vs = Ks + tile_elems<HD>();
  bf16* Qs = Vs + tile_elems<HD>();      // two buffers
  bf16* Gs = Qs + 2 * tile_elems<HD>();  // dout, two buffers
  float* Ls = reinterpret_cast<float*>(Gs + 2 * tile_elems<HD>());  // lse · log2 e, two buffers
  float* Ds = Ls + 2 * kRows;                                       // delta, two buffers
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const idx_t b = blockIdx.z, kvh = blockIdx.y, group = p.H / p.Hkv, j0 = idx_t(blockIdx.x) * kRows;
  const int keys = int(p.T - j0 < kRows ? p.T - j0 : kRows);
  idx_t t_hi = p.T - 1;  // the last query that sees a key of this tile
  if (p.window > 0 && j0 + keys - 1 + p.window - 1 < t_hi) t_hi = j0 + keys - 1 + p.window - 1;
  const int n_q = int(t_hi / kRows - j0 / kRows + 1), n_iter = int(group) * n_q;
  const float scale = rsqrtf(float(p.hd)), sl2 = scale * kLog2e;

  load_tile<HD>(Ks, p.k, p.k_ld, b * p.T + j0, kvh * p.hd, keys, int(p.hd));
  load_tile<HD>(Vs, p.v, p.v_ld, b * p.T + j0, kvh * p.hd, keys, int(p.hd));
  auto load_q = [&](int it) {  // iteration it: query head kvh·group + it / n_q, query tile it % n_q
    const idx_t h = kvh * group + it / n_q, tq = j0 + idx_t(it % n_q) * kRows;
    const int n = int(p.T - tq < kRows ? p.T - tq : kRows);
    load_tile<HD>(Qs + (it & 1) * tile_elems<HD>(), p.q, p.q_ld, b * p.T + tq, h * p.hd, n, int(p.hd));
    load_tile<HD>(Gs + (it & 1) * tile_elems<HD>(), dout, dout_ld, b * p.T + tq, h * p.hd, n, int(p.hd));
    const int t = threadIdx.x;
    if (t < 2 * kRows) {
      const int r = t % kRows;
      const bool ok = r < n;
      const float* src = t < kRows ? lse : delta;
      float v = ok ? src[(b * p.H + h) * p.T + tq + r] : 0.f;
      if (t < kRows) Ls[(it & 1) * kRows + r] = v * kLog2e;
      else Ds[(it & 1) * kRows + r] = v;
    }
  };
  load_q(0);
  cp_async_commit();

  float dka[HD / 8][4], dva[HD / 8][4];
  zero(dka);
  zero(dva);
  const int krow0 = warp * 16;
  for (int it = 0; it < n_iter; ++it) {
    pipeline_step(it, n_iter, load_q);
    const bf16* Q = Qs + (it & 1) * tile_elems<HD>();
    const bf16* G = Gs + (it & 1) * tile_elems<HD>();
    const float* L = Ls + (it & 1) * kRows;
    const float* D = Ds + (it & 1) * kRows;
    const idx_t tq = j0 + idx_t(it % n_q) * kRows;
    float s[kNt][4], dp[kNt][4];
    zero(s);
    zero(dp);
    gemm_abt<HD>(s, Ks, krow0, Q, lane);   // Sᵀ: keys × queries
    gemm_abt<HD>(dp, Vs, krow0, G, lane);  // dPᵀ
    const bool masked = tq < j0 + kRows - 1 || tq + kRows > p.T ||
                        (p.window > 0 && tq + kRows - 1 >= j0 + p.window);
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int qc = nt * 8 + 2 * c + (i & 1);
        bool ok = true;
        if (masked) {
          const idx_t kpos = j0 + krow0 + g + 8 * (i >> 1), qpos = tq + qc;
          ok = qpos < p.T && kpos < p.T && visible(qpos, kpos, p.window);
        }
        const float pr = ok ? exp2f(s[nt][i] * sl2 - L[qc]) : 0.f;
        s[nt][i] = pr;
        dp[nt][i] = pr * (dp[nt][i] - D[qc]);
      }
    gemm_pb<HD>(dva, s, G, lane);   // dV += Pᵀ dO
    gemm_pb<HD>(dka, dp, Q, lane);  // dK += dSᵀ Q
    __syncthreads();
  }
  store_rows<HD>(dk, dk_ld, b * p.T + j0, kvh * p.hd, krow0, keys, int(p.hd), dka, scale, scale, lane);
  store_rows<HD>(dv, dv_ld, b * p.T + j0, kvh * p.hd, krow0, keys, int(p.hd), dva, 1.f, 1.f, lane);
}

// ---- backward: dq -------------------------------------------------------------------------------

template <int HD>
__global__ void __launch_bounds__(kThreads) dq_kernel(bf16* dq, idx_t dq_ld, const bf16* dout, idx_t dout_ld,
                                                      const float* lse, const float* delta, P p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Gs = Qs + tile_elems<HD>();
  bf16* Ks = Gs + tile_elems<HD>();      // two buffers
  bf16* Vs = Ks + 2 * tile_elems<HD>();  // two buffers
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const idx_t b = blockIdx.z, h = blockIdx.y, kvh = h / (p.H / p.Hkv);
  const QueryBlock qb = query_block<kRows>(p);
  const idx_t t0 = qb.t0, kb0 = qb.kb0, q_last = qb.q_last;
  const int rows = qb.rows, n_tiles = qb.n_tiles;
  const float scale = rsqrtf(float(p.hd)), sl2 = scale * kLog2e;
  const int qrow0 = warp * 16;

  load_tile<HD>(Qs, p.q, p.q_ld, b * p.T + t0, h * p.hd, rows, int(p.hd));
  load_tile<HD>(Gs, dout, dout_ld, b * p.T + t0, h * p.hd, rows, int(p.hd));
  auto load_kv = [&](int j) { load_kv_tile<HD>(Ks, Vs, p, b, kvh, kb0, j); };
  load_kv(0);
  cp_async_commit();
  float L2[2], Dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = qrow0 + g + 8 * r;
    const bool ok = row < rows;
    L2[r] = ok ? lse[(b * p.H + h) * p.T + t0 + row] * kLog2e : 0.f;
    Dr[r] = ok ? delta[(b * p.H + h) * p.T + t0 + row] : 0.f;
  }
  float dqa[HD / 8][4];
  zero(dqa);
  for (int j = 0; j < n_tiles; ++j) {
    pipeline_step(j, n_tiles, load_kv);
    const bf16* K = Ks + (j & 1) * tile_elems<HD>();
    const bf16* V = Vs + (j & 1) * tile_elems<HD>();
    const idx_t kb = kb0 + idx_t(j) * kRows;
    float s[kNt][4], dp[kNt][4];
    zero(s);
    zero(dp);
    gemm_abt<HD>(s, Qs, qrow0, K, lane);
    gemm_abt<HD>(dp, Gs, qrow0, V, lane);
    const bool masked = kb + kRows - 1 > t0 || (p.window > 0 && kb <= q_last - p.window);
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        bool ok = true;
        if (masked) {
          const idx_t qpos = t0 + qrow0 + g + 8 * (i >> 1), kpos = kb + nt * 8 + 2 * c + (i & 1);
          ok = visible(qpos, kpos, p.window);
        }
        const float pr = ok ? exp2f(s[nt][i] * sl2 - L2[i >> 1]) : 0.f;
        dp[nt][i] = pr * (dp[nt][i] - Dr[i >> 1]);
      }
    gemm_pb<HD>(dqa, dp, K, lane);  // dQ += dS K
    __syncthreads();
  }
  store_rows<HD>(dq, dq_ld, b * p.T + t0, h * p.hd, qrow0, rows, int(p.hd), dqa, scale, scale, lane);
}

// ---- host side ----------------------------------------------------------------------------------

template <int HD, int MT>
constexpr size_t fwd_smem() {
  return size_t((MT + 4) * tile_elems<HD>()) * sizeof(bf16);
}
template <int HD>
constexpr size_t dkdv_smem() {
  return size_t(6 * tile_elems<HD>()) * sizeof(bf16) + 4 * kRows * sizeof(float);
}
template <int HD>
constexpr size_t dq_smem() {
  return size_t(6 * tile_elems<HD>()) * sizeof(bf16);
}

template <int HD, int MT>
void forward_mt(bf16* out, idx_t out_ld, float* lse, const P& p, cudaStream_t stream) {
  allow_smem(fwd_kernel<HD, MT>, fwd_smem<HD, MT>());
  const dim3 grid(unsigned((p.T + kRows * MT - 1) / (kRows * MT)), unsigned(p.H), unsigned(p.B));
  fwd_kernel<HD, MT><<<grid, kThreads, fwd_smem<HD, MT>(), stream>>>(out, out_ld, lse, p);
  CUDA_CHECK_LAUNCH("attention_mma fwd_kernel");
}

// 32 query rows per warp where the registers allow it (HD <= 64) and the sequence fills them.
template <int HD>
void forward_hd(bf16* out, idx_t out_ld, float* lse, const P& p, int rows_per_warp, cudaStream_t stream) {
  if (rows_per_warp == 0) rows_per_warp = HD <= 64 && p.T > kRows ? 32 : 16;
  if constexpr (HD <= 64) {
    if (rows_per_warp == 32) return forward_mt<HD, 2>(out, out_ld, lse, p, stream);
  }
  forward_mt<HD, 1>(out, out_ld, lse, p, stream);
}

template <int HD>
void backward_hd(bf16* dq, idx_t dq_ld, bf16* dk, idx_t dk_ld, bf16* dv, idx_t dv_ld, const float* delta,
                 const bf16* dout, idx_t dout_ld, const float* lse, const P& p, cudaStream_t stream) {
  allow_smem(dkdv_kernel<HD>, dkdv_smem<HD>());
  allow_smem(dq_kernel<HD>, dq_smem<HD>());
  const unsigned tiles = unsigned((p.T + kRows - 1) / kRows);
  dkdv_kernel<HD><<<dim3(tiles, unsigned(p.Hkv), unsigned(p.B)), kThreads, dkdv_smem<HD>(), stream>>>(
      dk, dk_ld, dv, dv_ld, dout, dout_ld, lse, delta, p);
  CUDA_CHECK_LAUNCH("attention_mma dkdv_kernel");
  dq_kernel<HD><<<dim3(tiles, unsigned(p.H), unsigned(p.B)), kThreads, dq_smem<HD>(), stream>>>(
      dq, dq_ld, dout, dout_ld, lse, delta, p);
  CUDA_CHECK_LAUNCH("attention_mma dq_kernel");
}

}  // namespace

bool eligible(const P& p, std::initializer_list<idx_t> lds, std::initializer_list<const void*> ptrs) {
  if (p.C != 0 || p.k_cache || p.v_cache) return false;
  if (p.hd < 8 || p.hd > kAttnMaxHeadDim || p.hd % 8 != 0) return false;
  for (idx_t ld : {p.q_ld, p.k_ld, p.v_ld})
    if (ld % 8 != 0) return false;
  for (idx_t ld : lds)
    if (ld % 8 != 0) return false;
  for (const void* q : {static_cast<const void*>(p.q), static_cast<const void*>(p.k), static_cast<const void*>(p.v)})
    if (reinterpret_cast<uintptr_t>(q) % 16 != 0) return false;
  for (const void* q : ptrs)
    if (reinterpret_cast<uintptr_t>(q) % 16 != 0) return false;
  return true;
}

void forward(bf16* out, idx_t out_ld, float* lse, const P& p, cudaStream_t stream, int rows_per_warp) {
  CHECK(rows_per_warp == 0 || rows_per_warp == 16 || rows_per_warp == 32,
        "attention_mma::forward: rows_per_warp must be 0 (automatic), 16 or 32, got ", rows_per_warp);
  if (p.hd <= 32) forward_hd<32>(out, out_ld, lse, p, rows_per_warp, stream);
  else if (p.hd <= 48) forward_hd<48>(out, out_ld, lse, p, rows_per_warp, stream);
  else if (p.hd <= 64) forward_hd<64>(out, out_ld, lse, p, rows_per_warp, stream);
  else if (p.hd <= 96) forward_hd<96>(out, out_ld, lse, p, rows_per_warp, stream);
  else forward_hd<128>(out, out_ld, lse, p, rows_per_warp, stream);
}

void backward(bf16* dq, idx_t dq_ld, bf16* dk, idx_t dk_ld, bf16* dv, idx_t dv_ld, const float* delta,
              const bf16* dout, idx_t dout_ld, const float* lse, const P& p, cudaStream_t stream) {
  if (p.hd <= 32) backward_hd<32>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  else if (p.hd <= 48) backward_hd<48>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  else if (p.hd <= 64) backward_hd<64>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  else if (p.hd <= 96) backward_hd<96>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  else backward_hd<128>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
}

}  // namespace moessm::cuda::attention_mma
