// CUDA attention (contract in ops/attention.h): flash-attention style tiled kernels, fp32 math
// on float or bf16 inputs, no T×T matrix in memory, no atomics. The entry points send the bf16
// passes the tensor-core kernels take (attention_mma.cuh says which) there; this file's scalar
// kernels run the rest (fp32, a KV cache, decoding, odd head sizes, unaligned rows).
//
// Tiles: kAttnTile (64) query rows × 64 key rows held in shared memory as fp32 (rows padded to
// HD + 1 floats against bank conflicts), 256 threads. In the score phase thread (r, cg) =
// (tid / 4, tid % 4) owns query row r and the key columns cg + 4j (j < 16); in the output phase
// the same thread owns dims cg + 4k (k < HD / 4) of row r. HD is the compile-time bound on hd
// (32, 64 or 128; the sizes up to it are looped with a guard).
//   forward : grid (query tiles, H, B); over the key tiles the tile's queries can see (cached
//             positions first, in position order) an online softmax: running max m and sum l
//             per row, the output rescaled by exp(m_old - m_new); out = o / l, lse = m + log l.
//   backward: delta = rowsum(dout ⊙ out) (one warp per row); dk / dv: grid (key tiles of the new
//             tokens, Hkv, B), looping over the group's query heads and the query tiles that
//             can see the tile, P recomputed from q, k and the saved lse; dq: grid (query tiles,
//             H, B), looping over key tiles as the forward. Every output element is written by
//             one thread after a fixed-order loop: bitwise repeatable.
// Shared memory per block at HD 128: forward 3 tiles + P = 115 KB, dk/dv 4 tiles + P + dS =
// 166 KB, dq 4 tiles + dS = 149 KB (opted in with cudaFuncSetAttribute; H200 allows 227 KB).
#include <cuda_bf16.h>

#include <cmath>
#include <type_traits>

#include "core/check.h"
#include "ops/attention.h"
#include "ops/cuda/attention_mma.cuh"
#include "ops/cuda/common.cuh"

namespace moessm::cuda {

namespace {

constexpr int kTile = kAttnTile;     // 64 query rows, 64 key rows
constexpr int kThreads = 256;        // 4 threads per row
constexpr int kCols = kTile / 4;     // key columns per thread in the score phase (16)
constexpr int kPstride = kTile + 1;  // padded row of the P / dS tiles

template <int HD>
constexpr int tile_floats() {
  return kTile * (HD + 1);
}

__device__ __forceinline__ int64_t start_position(const float* pos0, idx_t b) {
  if (!pos0) return 0;
  const double x = double(pos0[b]);
  return x >= 0.5 ? int64_t(floor(x + 0.5)) : 0;
}

// Loads rows [0, 64) of a tile of token rows `first + row` of a [B, T, ·, hd] stream (head
// offset `head`), zero past `count` rows. Stored as fp32, row stride HD + 1.
template <typename T, int HD>
__device__ void load_rows(float* dst, const T* src, idx_t ld, idx_t base_row, idx_t head, int count, int hd) {
  for (int e = threadIdx.x; e < kTile * hd; e += kThreads) {
    const int r = e / hd, d = e % hd;
    dst[r * (HD + 1) + d] = r < count ? to_f32(src[(base_row + r) * ld + head * hd + d]) : 0.f;
  }
}

// Loads the key (or value) rows of positions kb .. kb+63 of sequence b, kv head g: new tokens
// (position >= P0) from x, cached ones from the ring; positions past `last` or below 0 are 0.
template <typename T, int HD>
__device__ void load_keys(float* dst, const T* x, idx_t x_ld, const T* cache, const AttentionParams<T, float>& p,
                          idx_t b, idx_t g, int64_t P0, int64_t kb, int64_t last) {
  const int hd = int(p.hd);
  for (int e = threadIdx.x; e < kTile * hd; e += kThreads) {
    const int r = e / hd, d = e % hd;
    const int64_t kp = kb + r;
    float val = 0.f;
    if (kp >= 0 && kp <= last) {
      if (kp >= P0) val = to_f32(x[(b * p.T + (kp - P0)) * x_ld + g * hd + d]);
      else val = to_f32(cache[((b * p.C + kp % p.C) * p.Hkv + g) * hd + d]);
    }
    dst[r * (HD + 1) + d] = val;
  }
}

__device__ __forceinline__ bool visible(int64_t qp, int64_t kp, idx_t window) {
  return kp <= qp && kp >= 0 && (window == 0 || kp > qp - window);
}

// The first key position any query of [q_first, q_last] can see (and the cache still holds).
__device__ __forceinline__ int64_t first_visible_key(int64_t q_first, idx_t window, int64_t P0, idx_t C) {
  int64_t lo = window > 0 ? q_first - window + 1 : 0;
  lo = lo > P0 - C ? lo : P0 - C;
  return lo > 0 ? lo : 0;
}

template <int HD>
__device__ __forceinline__ float row_dot(const float* a, const float* b, int hd) {
  float s = 0.f;
#pragma unroll 8
  for (int d = 0; d < HD; ++d)
    if (d < hd) s = fmaf(a[d], b[d], s);
  return s;
}

// ---- forward ------------------------------------------------------------------------------------

template <typename T, int HD>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(T* out, idx_t out_ld, float* lse,
                                                            AttentionParams<T, float> p) {
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + tile_floats<HD>();
  float* Vs = Ks + tile_floats<HD>();
  float* Ps = Vs + tile_floats<HD>();
  const int hd = int(p.hd), tid = threadIdx.x, r = tid >> 2, cg = tid & 3;
  const idx_t b = blockIdx.z, h = blockIdx.y, t0 = idx_t(blockIdx.x) * kTile, g = h / (p.H / p.Hkv);
  const int64_t P0 = start_position(p.pos0, b);
  const int rows = int(p.T - t0 < kTile ? p.T - t0 : kTile);
  const float scale = rsqrtf(float(p.hd));
  load_rows<T, HD>(Qs, p.q, p.q_ld, b * p.T + t0, h, rows, hd);
  const int64_t qp = P0 + t0 + r, q_last = P0 + t0 + rows - 1;
  const bool row_ok = r < rows;
  const int64_t k_first = first_visible_key(P0 + t0, p.window, P0, p.C);
  float m = -INFINITY, l = 0.f, o[HD / 4];
#pragma unroll
  for (int k = 0; k < HD / 4; ++k) o[k] = 0.f;
  for (int64_t kb = k_first; kb <= q_last; kb += kTile) {
    __syncthreads();  // the previous tile's K, V, P are no longer read
    load_keys<T, HD>(Ks, p.k, p.k_ld, p.k_cache, p, b, g, P0, kb, q_last);
    load_keys<T, HD>(Vs, p.v, p.v_ld, p.v_cache, p, b, g, P0, kb, q_last);
    __syncthreads();
    float s[kCols], tmax = -INFINITY;
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int c = cg + 4 * j;
      const bool ok = row_ok && visible(qp, kb + c, p.window);
      s[j] = ok ? row_dot<HD>(Qs + r * (HD + 1), Ks + c * (HD + 1), hd) * scale : -INFINITY;
      tmax = fmaxf(tmax, s[j]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    const float m_new = fmaxf(m, tmax);
    const float alpha = m_new == -INFINITY ? 1.f : expf(m - m_new);  // m = -inf, m_new finite: 0
    float psum = 0.f;
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const float pj = s[j] == -INFINITY ? 0.f : expf(s[j] - m_new);
      psum += pj;
      Ps[r * kPstride + cg + 4 * j] = pj;
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    psum += __shfl_xor_sync(0xffffffffu, psum, 2);
    l = l * alpha + psum;
    m = m_new;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < HD / 4; ++k) {
      const int d = cg + 4 * k;
      float acc = o[k] * alpha;
      if (d < hd)
        for (int c = 0; c < kTile; ++c) acc = fmaf(Ps[r * kPstride + c], Vs[c * (HD + 1) + d], acc);
      o[k] = acc;
    }
  }
  if (row_ok) {
    const float inv = 1.f / l;
    T* dst = out + (b * p.T + t0 + r) * out_ld + h * hd;
#pragma unroll
    for (int k = 0; k < HD / 4; ++k)
      if (cg + 4 * k < hd) dst[cg + 4 * k] = from_f32<T>(o[k] * inv);
    if (cg == 0) lse[(b * p.H + h) * p.T + t0 + r] = m + logf(l);
  }
}

// ---- backward -----------------------------------------------------------------------------------

template <typename T>
__global__ void attn_delta_kernel(float* delta, const T* dout, idx_t dout_ld, const T* out, idx_t out_ld, idx_t B,
                                  idx_t T_, idx_t H, idx_t hd) {
  const idx_t rows = B * T_ * H, warps = idx_t(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x & 31;
  for (idx_t w = blockIdx.x * idx_t(blockDim.x / 32) + threadIdx.x / 32; w < rows; w += warps) {
    const idx_t m = w / H, h = w % H, b = m / T_, t = m % T_;
    float s = 0.f;
    for (idx_t d = lane; d < hd; d += 32) s += to_f32(dout[m * dout_ld + h * hd + d]) * to_f32(out[m * out_ld + h * hd + d]);
    s = group_sum<32>(s);
    if (lane == 0) delta[(b * H + h) * T_ + t] = s;
  }
}

// dk, dv of the new keys j0 .. j0+63 of (b, kv head g).
template <typename T, int HD>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(T* dk, idx_t dk_ld, T* dv, idx_t dv_ld,
                                                                 const T* dout, idx_t dout_ld, const float* lse,
                                                                 const float* delta, AttentionParams<T, float> p) {
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + tile_floats<HD>();
  float* Qs = Vs + tile_floats<HD>();
  float* Gs = Qs + tile_floats<HD>();  // dout
  float* Ps = Gs + tile_floats<HD>();
  float* Ss = Ps + kTile * kPstride;   // dS
  float* Ls = Ss + kTile * kPstride;
  float* Ds = Ls + kTile;
  const int hd = int(p.hd), tid = threadIdx.x, r = tid >> 2, cg = tid & 3;
  const idx_t b = blockIdx.z, g = blockIdx.y, j0 = idx_t(blockIdx.x) * kTile, group = p.H / p.Hkv;
  const int64_t P0 = start_position(p.pos0, b);
  const int keys = int(p.T - j0 < kTile ? p.T - j0 : kTile);
  const float scale = rsqrtf(float(p.hd));
  load_rows<T, HD>(Ks, p.k, p.k_ld, b * p.T + j0, g, keys, hd);
  load_rows<T, HD>(Vs, p.v, p.v_ld, b * p.T + j0, g, keys, hd);
  // queries that can see a key of this tile: t in [j0, t_hi]
  idx_t t_hi = p.T - 1;
  if (p.window > 0 && j0 + keys - 1 + p.window - 1 < t_hi) t_hi = j0 + keys - 1 + p.window - 1;
  float dka[HD / 4], dva[HD / 4];
#pragma unroll
  for (int k = 0; k < HD / 4; ++k) dka[k] = dva[k] = 0.f;
  for (idx_t h = g * group; h < (g + 1) * group; ++h)
    for (idx_t tq = j0; tq <= t_hi; tq += kTile) {
      const int rows = int(p.T - tq < kTile ? p.T - tq : kTile);
      __syncthreads();  // the previous query tile is no longer read
      load_rows<T, HD>(Qs, p.q, p.q_ld, b * p.T + tq, h, rows, hd);
      load_rows<T, HD>(Gs, dout, dout_ld, b * p.T + tq, h, rows, hd);
      if (tid < kTile) {
        Ls[tid] = tid < rows ? lse[(b * p.H + h) * p.T + tq + tid] : 0.f;
        Ds[tid] = tid < rows ? delta[(b * p.H + h) * p.T + tq + tid] : 0.f;
      }
      __syncthreads();
      const int64_t qp = P0 + tq + r;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int c = cg + 4 * j;
        const bool ok = r < rows && c < keys && visible(qp, P0 + j0 + c, p.window);
        float pj = 0.f, ds = 0.f;
        if (ok) {
          pj = expf(row_dot<HD>(Qs + r * (HD + 1), Ks + c * (HD + 1), hd) * scale - Ls[r]);
          ds = pj * (row_dot<HD>(Gs + r * (HD + 1), Vs + c * (HD + 1), hd) - Ds[r]);
        }
        Ps[r * kPstride + c] = pj;
        Ss[r * kPstride + c] = ds;
      }
      __syncthreads();
      // thread (r, cg) now owns key row r, dims cg + 4k
#pragma unroll
      for (int k = 0; k < HD / 4; ++k) {
        const int d = cg + 4 * k;
        if (d >= hd) continue;
        float a = dka[k], v = dva[k];
        for (int q = 0; q < kTile; ++q) {
          a = fmaf(Ss[q * kPstride + r], Qs[q * (HD + 1) + d], a);
          v = fmaf(Ps[q * kPstride + r], Gs[q * (HD + 1) + d], v);
        }
        dka[k] = a;
        dva[k] = v;
      }
    }
  if (r < keys) {
    T* dkr = dk + (b * p.T + j0 + r) * dk_ld + g * hd;
    T* dvr = dv + (b * p.T + j0 + r) * dv_ld + g * hd;
#pragma unroll
    for (int k = 0; k < HD / 4; ++k)
      if (cg + 4 * k < hd) {
        dkr[cg + 4 * k] = from_f32<T>(dka[k] * scale);
        dvr[cg + 4 * k] = from_f32<T>(dva[k]);
      }
  }
}

// dq of the queries t0 .. t0+63 of (b, h).
template <typename T, int HD>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(T* dq, idx_t dq_ld, const T* dout, idx_t dout_ld,
                                                               const float* lse, const float* delta,
                                                               AttentionParams<T, float> p) {
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Gs = Qs + tile_floats<HD>();
  float* Ks = Gs + tile_floats<HD>();
  float* Vs = Ks + tile_floats<HD>();
  float* Ss = Vs + tile_floats<HD>();
  const int hd = int(p.hd), tid = threadIdx.x, r = tid >> 2, cg = tid & 3;
  const idx_t b = blockIdx.z, h = blockIdx.y, t0 = idx_t(blockIdx.x) * kTile, g = h / (p.H / p.Hkv);
  const int64_t P0 = start_position(p.pos0, b);
  const int rows = int(p.T - t0 < kTile ? p.T - t0 : kTile);
  const float scale = rsqrtf(float(p.hd));
  load_rows<T, HD>(Qs, p.q, p.q_ld, b * p.T + t0, h, rows, hd);
  load_rows<T, HD>(Gs, dout, dout_ld, b * p.T + t0, h, rows, hd);
  const bool row_ok = r < rows;
  const float Lr = row_ok ? lse[(b * p.H + h) * p.T + t0 + r] : 0.f;
  const float Dr = row_ok ? delta[(b * p.H + h) * p.T + t0 + r] : 0.f;
  const int64_t qp = P0 + t0 + r, q_last = P0 + t0 + rows - 1;
  const int64_t k_first = first_visible_key(P0 + t0, p.window, P0, p.C);
  float dqa[HD / 4];
#pragma unroll
  for (int k = 0; k < HD / 4; ++k) dqa[k] = 0.f;
  for (int64_t kb = k_first; kb <= q_last; kb += kTile) {
    __syncthreads();
    load_keys<T, HD>(Ks, p.k, p.k_ld, p.k_cache, p, b, g, P0, kb, q_last);
    load_keys<T, HD>(Vs, p.v, p.v_ld, p.v_cache, p, b, g, P0, kb, q_last);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int c = cg + 4 * j;
      float ds = 0.f;
      if (row_ok && visible(qp, kb + c, p.window)) {
        const float pj = expf(row_dot<HD>(Qs + r * (HD + 1), Ks + c * (HD + 1), hd) * scale - Lr);
        ds = pj * (row_dot<HD>(Gs + r * (HD + 1), Vs + c * (HD + 1), hd) - Dr);
      }
      Ss[r * kPstride + c] = ds;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < HD / 4; ++k) {
      const int d = cg + 4 * k;
      if (d >= hd) continue;
      float a = dqa[k];
      for (int c = 0; c < kTile; ++c) a = fmaf(Ss[r * kPstride + c], Ks[c * (HD + 1) + d], a);
      dqa[k] = a;
    }
  }
  if (row_ok) {
    T* dst = dq + (b * p.T + t0 + r) * dq_ld + h * hd;
#pragma unroll
    for (int k = 0; k < HD / 4; ++k)
      if (cg + 4 * k < hd) dst[cg + 4 * k] = from_f32<T>(dqa[k] * scale);
  }
}

// ---- host side ----------------------------------------------------------------------------------

template <typename T>
void check_params(const char* op, const AttentionParams<T, float>& p) {
  CHECK(p.B >= 0 && p.T >= 0, "cuda ", op, ": sizes B=", p.B, " T=", p.T, " must be >= 0");
  CHECK(p.B <= 65535 && p.H <= 65535, "cuda ", op, ": B=", p.B, " and H=", p.H, " must be <= 65535 (grid)");
  CHECK(p.H >= 1 && p.Hkv >= 1 && p.H % p.Hkv == 0, "cuda ", op, ": n_kv_heads ", p.Hkv, " must divide n_heads ",
        p.H);
  CHECK(p.hd >= 1 && p.hd <= kAttnMaxHeadDim, "cuda ", op, ": head_dim ", p.hd, " is not supported (cuda: 1..",
        kAttnMaxHeadDim, ")");
  CHECK(p.q_ld >= p.H * p.hd, "cuda ", op, ": q_ld ", p.q_ld, " must be >= H·hd = ", p.H * p.hd);
  CHECK(p.k_ld >= p.Hkv * p.hd && p.v_ld >= p.Hkv * p.hd, "cuda ", op, ": k_ld ", p.k_ld, " / v_ld ", p.v_ld,
        " must be >= Hkv·hd = ", p.Hkv * p.hd);
  CHECK(p.window >= 0, "cuda ", op, ": window must be >= 0, got ", p.window);
  CHECK((p.C == 0) == (p.k_cache == nullptr) && (p.k_cache == nullptr) == (p.v_cache == nullptr), "cuda ", op,
        ": k_cache, v_cache and C > 0 come together (C=", p.C, ")");
  CHECK(p.C == 0 || p.pos0, "cuda ", op, ": a cache needs the start positions pos0");
  CHECK(p.C == 0 || p.window == 0 || p.C >= p.window - 1, "cuda ", op, ": a window of ", p.window,
        " needs a cache of at least ", p.window - 1, " positions, got ", p.C);
}

template <int HD>
size_t fwd_smem() { return size_t(3 * tile_floats<HD>() + kTile * kPstride) * sizeof(float); }
template <int HD>
size_t dkdv_smem() { return size_t(4 * tile_floats<HD>() + 2 * kTile * kPstride + 2 * kTile) * sizeof(float); }
template <int HD>
size_t dq_smem() { return size_t(4 * tile_floats<HD>() + kTile * kPstride) * sizeof(float); }

template <typename T, int HD>
void forward_hd(T* out, idx_t out_ld, float* lse, const AttentionParams<T, float>& p, cudaStream_t stream) {
  const size_t smem = fwd_smem<HD>();
  allow_smem(attn_fwd_kernel<T, HD>, smem);
  const dim3 grid(unsigned((p.T + kTile - 1) / kTile), unsigned(p.H), unsigned(p.B));
  attn_fwd_kernel<T, HD><<<grid, kThreads, smem, stream>>>(out, out_ld, lse, p);
  CUDA_CHECK_LAUNCH("attn_fwd_kernel");
}

template <typename T, int HD>
void backward_hd(T* dq, idx_t dq_ld, T* dk, idx_t dk_ld, T* dv, idx_t dv_ld, const float* delta, const T* dout,
                 idx_t dout_ld, const float* lse, const AttentionParams<T, float>& p, cudaStream_t stream) {
  const size_t s_kv = dkdv_smem<HD>(), s_q = dq_smem<HD>();
  allow_smem(attn_bwd_dkdv_kernel<T, HD>, s_kv);
  allow_smem(attn_bwd_dq_kernel<T, HD>, s_q);
  const unsigned tiles = unsigned((p.T + kTile - 1) / kTile);
  attn_bwd_dkdv_kernel<T, HD><<<dim3(tiles, unsigned(p.Hkv), unsigned(p.B)), kThreads, s_kv, stream>>>(
      dk, dk_ld, dv, dv_ld, dout, dout_ld, lse, delta, p);
  CUDA_CHECK_LAUNCH("attn_bwd_dkdv_kernel");
  attn_bwd_dq_kernel<T, HD><<<dim3(tiles, unsigned(p.H), unsigned(p.B)), kThreads, s_q, stream>>>(
      dq, dq_ld, dout, dout_ld, lse, delta, p);
  CUDA_CHECK_LAUNCH("attn_bwd_dq_kernel");
}

}  // namespace

template <typename T>
void attention_forward(T* out, idx_t out_ld, float* lse, const AttentionParams<T, float>& p, cudaStream_t stream) {
  check_params("attention_forward", p);
  CHECK(out_ld >= p.H * p.hd, "cuda attention_forward: out_ld ", out_ld, " must be >= H·hd = ", p.H * p.hd);
  if (p.B * p.T == 0) return;
  if constexpr (std::is_same_v<T, bf16>) {
    if (attention_mma::eligible(p, {out_ld}, {out})) return attention_mma::forward(out, out_ld, lse, p, stream);
  }
  if (p.hd <= 32) forward_hd<T, 32>(out, out_ld, lse, p, stream);
  else if (p.hd <= 64) forward_hd<T, 64>(out, out_ld, lse, p, stream);
  else forward_hd<T, 128>(out, out_ld, lse, p, stream);
}

template <typename T>
void attention_backward(T* dq, idx_t dq_ld, T* dk, idx_t dk_ld, T* dv, idx_t dv_ld, float* delta, const T* dout,
                        idx_t dout_ld, const T* out, idx_t out_ld, const float* lse,
                        const AttentionParams<T, float>& p, cudaStream_t stream) {
  check_params("attention_backward", p);
  CHECK(dq_ld >= p.H * p.hd && dout_ld >= p.H * p.hd && out_ld >= p.H * p.hd,
        "cuda attention_backward: dq_ld, dout_ld and out_ld must be >= H·hd = ", p.H * p.hd);
  CHECK(dk_ld >= p.Hkv * p.hd && dv_ld >= p.Hkv * p.hd, "cuda attention_backward: dk_ld ", dk_ld, " / dv_ld ", dv_ld,
        " must be >= Hkv·hd = ", p.Hkv * p.hd);
  if (p.B * p.T == 0) return;
  attn_delta_kernel<T><<<grid_1d(p.B * p.T * p.H * 32, kThreads), kThreads, 0, stream>>>(delta, dout, dout_ld, out,
                                                                                        out_ld, p.B, p.T, p.H, p.hd);
  CUDA_CHECK_LAUNCH("attn_delta_kernel");
  if constexpr (std::is_same_v<T, bf16>) {
    if (attention_mma::eligible(p, {dq_ld, dk_ld, dv_ld, dout_ld}, {dq, dk, dv, dout}))
      return attention_mma::backward(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  }
  if (p.hd <= 32) backward_hd<T, 32>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  else if (p.hd <= 64) backward_hd<T, 64>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
  else backward_hd<T, 128>(dq, dq_ld, dk, dk_ld, dv, dv_ld, delta, dout, dout_ld, lse, p, stream);
}

#define MOESSM_CUDA_ATTENTION(T)                                                                                  \
  template void attention_forward<T>(T*, idx_t, float*, const AttentionParams<T, float>&, cudaStream_t);          \
  template void attention_backward<T>(T*, idx_t, T*, idx_t, T*, idx_t, float*, const T*, idx_t, const T*, idx_t,  \
                                      const float*, const AttentionParams<T, float>&, cudaStream_t);
MOESSM_CUDA_ATTENTION(float)
MOESSM_CUDA_ATTENTION(bf16)

}  // namespace moessm::cuda
