// CUDA selective scan, forward and backward (contract in ops/selective_scan.h).
//
// Mapping: a channel c of batch row b is owned by TPC consecutive lanes, each holding NPT of
// the N states in fp32 registers (state n = lane_n·NPT + k; states >= N are padding with
// A = B = C = 0 and stay 0). A block holds CPB = threads/TPC channels of one batch row and walks
// time sequentially; the B / C rows of the block's batch row are staged in shared memory per
// time tile. y = Σ_n C·h is a butterfly over the TPC lanes.
//
// Forward writes out, the state entering every kScanChunk chunk and optionally h_last.
// Backward walks chunks last to first. Inside a chunk it recomputes the states from the saved
// boundary state twice: once to keep the states at every SUB-step sub-chunk boundary
// (registers), then per sub-chunk (last to first) to keep that sub-chunk's SUB states
// (registers), through which it walks back carrying dh. Nothing but chunk-boundary states ever
// reaches device memory. The next chunk's inputs are loaded into registers while the current
// one is processed; the per-step sums over a channel's lanes (y, dΔ, du) are finished once per
// sub-chunk from shared memory (kScanBwdDefer). The forward and backward choose their mapping
// (lanes × states per lane) independently.
//
// Deterministic reductions (no float atomics):
//  - dB[t,n], dC[t,n] = Σ_c: lanes of a warp reduce over their channels by xor butterflies, the
//    warps of a block are summed in warp order through shared memory, each block writes a
//    partial [B, slab, G, N] (G = channel blocks), and scan_reduce_bc sums over G in order.
//  - dA, dD, ddelta_bias: each (b, c) owner accumulates over time in registers (dD and
//    ddelta_bias: each lane over the steps it finishes, then a butterfly over the channel's
//    lanes) and writes a per-(segment, batch row) partial it alone touches; scan_reduce_batch
//    sums them in order.
//  - The partial buffer is bounded by processing time in slabs of whole segments (one launch
//    each).
//
// Time segments (both directions): when B·Di alone does not fill the device, time is split into
// S segments of whole chunks that run in parallel (blockIdx.z). A local pass computes each
// segment's end state from 0 (backward: its dh from 0) and Σ Δ; a combine pass walks the S
// segments per (b, c, n) with P = exp2(A·log2e·ΣΔ); then the full kernels start every segment
// from its true boundary value (see scan_local_kernel).
#include <algorithm>
#include <atomic>
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/selective_scan.h"

namespace moessm {
namespace cuda {

template <typename Tin>
void ScanParamsT<Tin>::validate() const {
  CHECK(B > 0 && T_ > 0 && Di > 0 && N > 0, "cuda selective_scan: sizes B=", B, " T=", T_,
        " Di=", Di, " N=", N, " must be positive");
  CHECK(N <= 256, "cuda selective_scan: d_state N=", N, " exceeds the supported maximum 256");
  CHECK(u && delta && Bm && Cm && A && out,
        "cuda selective_scan: u, delta, B, C, A and out are required");
  CHECK(u_ld >= Di && delta_ld >= Di && out_ld >= Di,
        "cuda selective_scan: token strides u_ld=", u_ld, " delta_ld=", delta_ld, " out_ld=",
        out_ld, " must be >= Di=", Di);
  CHECK(B_ld >= N && C_ld >= N, "cuda selective_scan: B/C token strides ", B_ld, "/", C_ld,
        " must be >= N=", N);
  CHECK(!z || z_ld >= Di, "cuda selective_scan: z token stride ", z_ld, " must be >= Di=", Di);
}

namespace {

constexpr float kLog2e = 1.4426950408889634f;
// Kernel-lab knobs: 1 issues the next tile's (forward) / chunk's (backward) global loads into
// registers before the current one's steps, 0 loads each just before its steps. H200, N 16,
// bench_scan (2026-12-02): the backward gains 3% (B 8 T 2048 2.87 against 2.94 ms, with 2
// resident blocks per SM: its 153 registers otherwise leave one); the forward loses 6%
// (0.78 against 0.74 ms), so it stays off.
#ifndef MOESSM_SCAN_FWD_PREFETCH
#define MOESSM_SCAN_FWD_PREFETCH 0
#endif
#ifndef MOESSM_SCAN_BWD_PREFETCH
#define MOESSM_SCAN_BWD_PREFETCH 1
#endif
constexpr bool kScanFwdPrefetch = MOESSM_SCAN_FWD_PREFETCH != 0;
constexpr bool kScanBwdPrefetch = MOESSM_SCAN_BWD_PREFETCH != 0;
// Kernel-lab knob: 1 (default) defers the backward's per-step sums over a channel's lanes (y for
// dz, dΔ, du) to one pass per sub-chunk: each lane stores its partials in shared memory and the
// lanes of a channel then finish one step each (fixed order), instead of three butterflies per
// step; the gate's silu(z)·dout is computed once per element at staging. H200, N 16
// (2026-12-02 lab lease): backward 2.23 against 2.89 ms at B 8 T 2048, 2.76 / 3.48 at B 2 T 8192,
// 0.306 / 0.368 at B 1 Di 1536.
#ifndef MOESSM_SCAN_BWD_DEFER
#define MOESSM_SCAN_BWD_DEFER 1
#endif
constexpr bool kScanBwdDefer = MOESSM_SCAN_BWD_DEFER != 0;
// Shared-memory footprint of the deferred partials: [3][SUB][NT + 1] (the +1 row pad puts the
// lanes a finishing thread reads in distinct banks) and the gated dout [kScanChunk][CPB].
template <int NT, int SUB, int CPB> constexpr size_t bwd_defer_floats() {
  return kScanBwdDefer ? size_t(3) * SUB * (NT + 1) + size_t(kScanChunk) * CPB : 0;
}
constexpr idx_t kPartialBudgetBytes = idx_t(256) << 20;  // dB/dC partials per slab (default)
std::atomic<idx_t> g_partial_budget{0};

template <int TPC> constexpr int threads_for() { return TPC <= 8 ? 32 * TPC : (TPC == 16 ? 256 : 128); }
template <int TPC, int NPT> constexpr int fwd_tile() {  // forward B/C staging tile (steps): divides the chunk
  return TPC * NPT <= 32 ? kScanChunk : (2048 / (TPC * NPT) < kScanChunk ? 2048 / (TPC * NPT) : kScanChunk);
}
template <int NPT> constexpr int bwd_sub() { return NPT <= 4 ? 16 : 8; }
static_assert(kScanChunk % 16 == 0 && kScanChunk % 8 == 0, "kScanChunk must be a multiple of 16");

struct BwdExtra {
  const float* dh_start;  // [S, B, Di, N] dh entering each segment from later times
  float* dh0;        // [B, Di, N] dh leaving segment 0 (the gradient of h0)
  float* accA;       // [S, B, Di, N] per-segment sums over time
  float* accD;       // [S, B, Di]
  float* accBias;    // [S, B, Di]
  float* partB;      // [B, slabT, G, N]
  float* partC;
  idx_t slab_t0;     // first time step of the slab
  idx_t slabT;       // slab length in steps (partial layout)
  int seg_base;      // first segment of this launch (blockIdx.z adds to it)
  int G;             // channel blocks
};

// ------------------------------------------------------------------------------------------
// Token t of row b starts a packed document (ops/op_common.h): the state entering it is 0.
__device__ __forceinline__ bool doc_start(const int32_t* seq, idx_t b, idx_t T, idx_t t) {
  return seq && t > 0 && seq[b * T + t] != seq[b * T + t - 1];
}

// Time segments (blockIdx.z): whole chunks [s·seg_chunks, (s+1)·seg_chunks) of the sequence.
struct Segments {
  int S = 1;            // number of segments
  int seg_chunks = 1;   // chunks per segment
  __host__ __device__ idx_t t_begin(int s) const { return idx_t(s) * seg_chunks * kScanChunk; }
  __host__ __device__ idx_t t_end(int s, idx_t T) const {
    const idx_t e = idx_t(s + 1) * seg_chunks * kScanChunk;
    return e < T ? e : T;
  }
};

template <typename Tin, int TPC, int NPT>
__global__ void __launch_bounds__(threads_for<TPC>())
scan_fwd_kernel(const ScanParamsT<Tin> p, const Segments sg, const float* h_start) {
  constexpr int NT = threads_for<TPC>(), CPB = NT / TPC, NP = TPC * NPT, TS = fwd_tile<TPC, NPT>();
  extern __shared__ float smem[];
  float* sB = smem;              // [TS][NP]
  float* sC = sB + TS * NP;      // [TS][NP]
  float* sU = sC + TS * NP;      // [TS][CPB] u
  float* sDt = sU + TS * CPB;    // [TS][CPB] Δ after bias + softplus
  float* sZ = sDt + TS * CPB;    // [TS][CPB] silu(z), or 1 without a gate
  float* sY = sZ + TS * CPB;     // [TS][CPB] gated output
  int* sSt = reinterpret_cast<int*>(sY + TS * CPB);  // [TS] token starts a document
  const bool packed = p.seq_idx != nullptr;
  const int lane_n = threadIdx.x % TPC, chl = threadIdx.x / TPC;
  const idx_t c0 = idx_t(blockIdx.x) * CPB, c = c0 + chl;
  const idx_t b = blockIdx.y;
  const int seg = blockIdx.z;
  const bool valid = c < p.Di;
  const idx_t N = p.N, Di = p.Di, T = p.T_, nch = (T + kScanChunk - 1) / kScanChunk;
  const idx_t cc = valid ? c : 0, t_stop = sg.t_end(seg, T);

  float A2[NPT], h[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const idx_t n = lane_n * NPT + k;
    const bool vn = valid && n < N;
    A2[k] = vn ? p.A[cc * N + n] * kLog2e : 0.f;
    // h_start: the state entering each segment [S, B, Di, N] (p.h0 itself when S == 1)
    h[k] = (vn && h_start) ? h_start[((idx_t(seg) * p.B + b) * Di + c) * N + n] : 0.f;
  }
  const float Dc = p.D ? p.D[cc] : 0.f;

  // A tile's inputs: fetch() issues this thread's share of the global loads into registers,
  // commit() converts them into the shared tile. With kScanFwdPrefetch the next tile's fetch is
  // issued before the current tile's steps, so its latency hides behind them.
  static_assert(TS <= NT, "one thread per tile step for the document starts");
  constexpr int PBC = (TS * NP + NT - 1) / NT, PS = (TS * CPB + NT - 1) / NT;
  Tin fB[PBC], fC[PBC], fU[PS], fD[PS], fZ[PS];
  int fSt = 0;
  auto fetch = [&](idx_t t0) {
    const int len = int(min(idx_t(TS), t_stop - t0));
#pragma unroll
    for (int j = 0; j < PBC; ++j) {
      const int e = threadIdx.x + j * NT, i = e / NP, n = e % NP;
      const bool ok = e < TS * NP && i < len && n < N;
      const idx_t row = b * T + t0 + i;
      fB[j] = p.Bm[ok ? row * p.B_ld + n : 0];
      fC[j] = p.Cm[ok ? row * p.C_ld + n : 0];
    }
#pragma unroll
    for (int j = 0; j < PS; ++j) {
      const int e = threadIdx.x + j * NT, i = e / CPB, q = e % CPB;
      const bool ok = e < TS * CPB && i < len && c0 + q < Di;
      const idx_t row = b * T + t0 + i, cg = c0 + q;
      fU[j] = p.u[ok ? row * p.u_ld + cg : 0];
      fD[j] = p.delta[ok ? row * p.delta_ld + cg : 0];
      if (p.z) fZ[j] = p.z[ok ? row * p.z_ld + cg : 0];
    }
    if (packed) fSt = int(threadIdx.x) < len && doc_start(p.seq_idx, b, T, t0 + threadIdx.x);
  };
  auto commit = [&](idx_t t0) {
    const int len = int(min(idx_t(TS), t_stop - t0));
#pragma unroll
    for (int j = 0; j < PBC; ++j) {
      const int e = threadIdx.x + j * NT, i = e / NP, n = e % NP;
      if (e >= TS * NP) continue;
      const bool ok = i < len && n < N;
      sB[e] = ok ? to_f32(fB[j]) : 0.f;
      sC[e] = ok ? to_f32(fC[j]) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < PS; ++j) {
      const int e = threadIdx.x + j * NT, i = e / CPB, q = e % CPB;
      if (e >= TS * CPB) continue;
      const idx_t cg = c0 + q;
      float uv = 0.f, dt = 0.f, zv = 1.f;
      if (i < len && cg < Di) {
        uv = to_f32(fU[j]);
        const float v = to_f32(fD[j]) + (p.delta_bias ? p.delta_bias[cg] : 0.f);
        dt = p.delta_softplus ? softplus_f(v) : v;
        if (p.z) zv = silu_f(to_f32(fZ[j]));
      }
      sU[e] = uv;
      sDt[e] = dt;
      sZ[e] = zv;
    }
    if (packed && threadIdx.x < TS) sSt[threadIdx.x] = fSt;
  };

  if (kScanFwdPrefetch) fetch(sg.t_begin(seg));
  for (idx_t t0 = sg.t_begin(seg); t0 < t_stop; t0 += TS) {
    if (p.chunk_states && t0 % kScanChunk == 0 && valid) {
      float* s = p.chunk_states + ((b * nch + t0 / kScanChunk) * Di + c) * N;
      const bool st = doc_start(p.seq_idx, b, T, t0);  // saves the state the token sees
#pragma unroll
      for (int k = 0; k < NPT; ++k)
        if (lane_n * NPT + k < N) s[lane_n * NPT + k] = st ? 0.f : h[k];
    }
    const int len = int(min(idx_t(TS), t_stop - t0));
    __syncthreads();  // the previous tile's shared inputs are read and its sY stored
    if (!kScanFwdPrefetch) fetch(t0);
    commit(t0);
    __syncthreads();
    if (kScanFwdPrefetch && t0 + TS < t_stop) fetch(t0 + TS);
    // Branch-free step (every lane of the channel finishes y; lane 0's store is predicated) so
    // the unrolled steps interleave: only h carries a dependency from step to step.
#pragma unroll 8
    for (int i = 0; i < len; ++i) {
      const float uv = sU[i * CPB + chl], dt = sDt[i * CPB + chl];
      const float dtu = dt * uv;
      const float* Bi = sB + i * NP + lane_n * NPT;
      const float* Ci = sC + i * NP + lane_n * NPT;
      float y = 0.f;
      if (packed && sSt[i]) {  // block-uniform
#pragma unroll
        for (int k = 0; k < NPT; ++k) h[k] = 0.f;
      }
#pragma unroll
      for (int k = 0; k < NPT; ++k) {
        const float a = exp2f(dt * A2[k]);
        h[k] = fmaf(a, h[k], dtu * Bi[k]);
        y = fmaf(Ci[k], h[k], y);
      }
      y = group_sum<TPC>(y);
      y = fmaf(Dc, uv, y) * sZ[i * CPB + chl];
      if (lane_n == 0) sY[i * CPB + chl] = y;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < TS * CPB; e += NT) {
      const int i = e / CPB, q = e % CPB;
      const idx_t cg = c0 + q;
      if (i < len && cg < Di) p.out[(b * T + t0 + i) * p.out_ld + cg] = from_f32<Tin>(sY[e]);
    }
  }
  if (p.h_last && valid && seg == sg.S - 1) {
#pragma unroll
    for (int k = 0; k < NPT; ++k)
      if (lane_n * NPT + k < N) p.h_last[(b * Di + c) * N + lane_n * NPT + k] = h[k];
  }
}

// ------------------------------------------------------------------------------------------
// Segment-parallel passes. The recurrence is linear in the state it starts from, and so is the
// backward's in the dh it starts from: over a segment s,
//   h_end = P_s · h_begin + h_end(from 0),     dh_begin = P_s · dh_end + dh_begin(from 0),
// with P_s = Π_t exp(Δ_t A) = exp2(A·log2e · Σ_t Δ_t) per (channel, state). The local passes
// compute the "from 0" terms and Σ Δ per segment (all segments at once); a short combine pass
// walks the S segments per (b, c, n); then the full passes run every segment in parallel from
// its true boundary value. The result equals the sequential scan up to fp32 rounding.

// The local pass of one segment (blockIdx.z = segment - seg0): forward, the end state from 0;
// backward, the dh leaving the segment's start from 0 at its end; both also Σ Δ (or -1 when the
// segment holds a document start). Tiles of the block's channels are staged in shared memory.
template <typename Tin, int TPC, int NPT>
__global__ void __launch_bounds__(threads_for<TPC>())
scan_local_kernel(const ScanParamsT<Tin> p, const ScanGradsT<Tin> g, const Segments sg, int seg0,
                  bool backward, float* local, float* sum_dt) {
  constexpr int NT = threads_for<TPC>(), CPB = NT / TPC, NP = TPC * NPT, TS = fwd_tile<TPC, NPT>();
  extern __shared__ float smem[];
  float* sBC = smem;             // [TS][NP] B rows (forward) or C rows (backward)
  float* sV = sBC + TS * NP;     // [TS][CPB] Δ·u (forward) or dout·silu(z) (backward)
  float* sDt = sV + TS * CPB;    // [TS][CPB] Δ
  int* sSt = reinterpret_cast<int*>(sDt + TS * CPB);  // [TS] token starts a document
  const bool packed = p.seq_idx != nullptr;
  bool reset = false;            // the segment holds a document start: its P is 0
  const int lane_n = threadIdx.x % TPC, chl = threadIdx.x / TPC;
  const idx_t c0 = idx_t(blockIdx.x) * CPB, c = c0 + chl, b = blockIdx.y;
  const int seg = seg0 + blockIdx.z;
  const bool valid = c < p.Di;
  const idx_t N = p.N, Di = p.Di, T = p.T_, cc = valid ? c : 0;
  const idx_t tb = sg.t_begin(seg), te = sg.t_end(seg, T);
  const Tin* bc = backward ? p.Cm : p.Bm;
  const idx_t bc_ld = backward ? p.C_ld : p.B_ld;
  float A2[NPT], h[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const idx_t n = lane_n * NPT + k;
    A2[k] = (valid && n < N) ? p.A[cc * N + n] * kLog2e : 0.f;
    h[k] = 0.f;
  }
  float sdt = 0.f;
  const idx_t ntiles = (te - tb + TS - 1) / TS;
  for (idx_t q = 0; q < ntiles; ++q) {
    const idx_t t0 = backward ? tb + (ntiles - 1 - q) * TS : tb + q * TS;
    const int len = int(min(idx_t(TS), te - t0));
    __syncthreads();
    for (int e = threadIdx.x; e < TS * NP; e += NT) {
      const int i = e / NP, n = e % NP;
      sBC[e] = (i < len && n < N) ? to_f32(bc[(b * T + t0 + i) * bc_ld + n]) : 0.f;
    }
    for (int e = threadIdx.x; e < TS * CPB; e += NT) {
      const int i = e / CPB, qq = e % CPB;
      const idx_t cg = c0 + qq, row = b * T + t0 + i;
      float v = 0.f, dt = 0.f;
      if (i < len && cg < Di) {
        const float d = to_f32(p.delta[row * p.delta_ld + cg]) + (p.delta_bias ? p.delta_bias[cg] : 0.f);
        dt = p.delta_softplus ? softplus_f(d) : d;
        if (backward) {
          v = to_f32(g.dout[row * g.dout_ld + cg]);
          if (p.z) v *= silu_f(to_f32(p.z[row * p.z_ld + cg]));
        } else {
          v = dt * to_f32(p.u[row * p.u_ld + cg]);
        }
      }
      sV[e] = v;
      sDt[e] = dt;
    }
    if (packed)
      for (int e = threadIdx.x; e < TS; e += NT) sSt[e] = e < len && doc_start(p.seq_idx, b, T, t0 + e);
    __syncthreads();
    if (backward) {
      // dh entering step t from later times: R ← a_t · (g_t C_t + R)
#pragma unroll 8
      for (int i = len - 1; i >= 0; --i) {
        const float dt = sDt[i * CPB + chl], gv = sV[i * CPB + chl];
        const float* Ci = sBC + i * NP + lane_n * NPT;
        sdt += dt;
#pragma unroll
        for (int k = 0; k < NPT; ++k) h[k] = exp2f(dt * A2[k]) * fmaf(gv, Ci[k], h[k]);
        if (packed && sSt[i]) {  // nothing flows back across a document start
          reset = true;
#pragma unroll
          for (int k = 0; k < NPT; ++k) h[k] = 0.f;
        }
      }
    } else {
#pragma unroll 8
      for (int i = 0; i < len; ++i) {
        const float dt = sDt[i * CPB + chl], dtu = sV[i * CPB + chl];
        const float* Bi = sBC + i * NP + lane_n * NPT;
        sdt += dt;
        if (packed && sSt[i]) {
          reset = true;
#pragma unroll
          for (int k = 0; k < NPT; ++k) h[k] = 0.f;
        }
#pragma unroll
        for (int k = 0; k < NPT; ++k) h[k] = fmaf(exp2f(dt * A2[k]), h[k], dtu * Bi[k]);
      }
    }
  }
  if (valid) {
    const idx_t row = (idx_t(seg) * p.B + b) * Di + c;
#pragma unroll
    for (int k = 0; k < NPT; ++k)
      if (lane_n * NPT + k < N) local[row * N + lane_n * NPT + k] = h[k];
    if (lane_n == 0) sum_dt[row] = reset ? -1.f : sdt;  // -1: P = 0 (Σ Δ is never negative)
  }
}

// Walks the segments per (b, c, n): forward (backward = false) bound[0] = start (or 0),
// bound[s+1] = P_s·bound[s] + local[s]; backward bound[S-1] = start (or 0),
// bound[s-1] = P_s·bound[s] + local[s]. bound, local [S, B, Di, N]; sum_dt [S, B, Di].
__global__ void scan_combine_kernel(float* bound, const float* local, const float* sum_dt,
                                    const float* start, const float* A, idx_t Bn, idx_t Di, idx_t N,
                                    int S, bool backward) {
  const idx_t per = Bn * Di * N;
  for (idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; e < per; e += idx_t(gridDim.x) * blockDim.x) {
    const idx_t n = e % N, bc = e / N, c = bc % Di;
    const float a2 = A[c * N + n] * kLog2e;
    auto decay = [&](int s) {  // P_s; a segment holding a document start passes nothing on
      const float sd = sum_dt[idx_t(s) * Bn * Di + bc];
      return sd < 0.f ? 0.f : exp2f(a2 * sd);
    };
    float v = start ? start[e] : 0.f;
    if (backward) {
      bound[idx_t(S - 1) * per + e] = v;
      for (int s = S - 1; s > 0; --s) {
        v = fmaf(decay(s), v, local[idx_t(s) * per + e]);
        bound[idx_t(s - 1) * per + e] = v;
      }
    } else {
      bound[e] = v;
      for (int s = 0; s + 1 < S; ++s) {
        v = fmaf(decay(s), v, local[idx_t(s) * per + e]);
        bound[idx_t(s + 1) * per + e] = v;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Kernel-lab knob: minimum resident backward blocks per SM asked of the register allocator
// (1 = as many registers as it likes). 2: the 8x2 and 16x2 kernels fit 128 registers without
// spilling, two 256-thread blocks per SM (B 8 T 2048 backward 2.87 ms against 4.98 at one).
#ifndef MOESSM_SCAN_BWD_MINBLOCKS
#define MOESSM_SCAN_BWD_MINBLOCKS 2
#endif
template <typename Tin, int TPC, int NPT>
__global__ void __launch_bounds__(threads_for<TPC>(), MOESSM_SCAN_BWD_MINBLOCKS)
scan_bwd_kernel(const ScanParamsT<Tin> p, const ScanGradsT<Tin> g, const Segments sg, const BwdExtra x) {
  constexpr int NT = threads_for<TPC>(), CPB = NT / TPC, NP = TPC * NPT, W = NT / 32;
  constexpr int SUB = bwd_sub<NPT>(), NS = kScanChunk / SUB;
  extern __shared__ float smem[];
  float* sB = smem;                    // [kScanChunk][NP]
  float* sC = sB + kScanChunk * NP;    // [kScanChunk][NP]
  float* rB = sC + kScanChunk * NP;    // [SUB][W][NP] per-warp dB sums
  float* rC = rB + SUB * W * NP;       // [SUB][W][NP]
  // The chunk's per-channel streams, staged once per chunk (coalesced), and its outputs.
  float* sU = rC + SUB * W * NP;       // [kScanChunk][CPB] u
  float* sDt = sU + kScanChunk * CPB;  // Δ (after bias / softplus)
  float* sSg = sDt + kScanChunk * CPB; // dΔ/dv (softplus' or 1)
  float* sZ = sSg + kScanChunk * CPB;  // z
  float* sG = sZ + kScanChunk * CPB;   // dout
  float* sDu = sG + kScanChunk * CPB;  // du
  float* sDd = sDu + kScanChunk * CPB; // ddelta
  float* sDz = sDd + kScanChunk * CPB; // dz
  // Deferred mode (kScanBwdDefer): gated dout, and the lanes' partials of y, dΔ, du per step.
  constexpr int RS = NT + 1;
  float* sDy = sDz + kScanChunk * CPB;                       // [kScanChunk][CPB] dout·silu(z)
  float* sPy = sDy + (kScanBwdDefer ? kScanChunk * CPB : 0); // [SUB][RS]
  float* sPd = sPy + (kScanBwdDefer ? SUB * RS : 0);
  float* sPu = sPd + (kScanBwdDefer ? SUB * RS : 0);
  int* sSt = reinterpret_cast<int*>(sPu + (kScanBwdDefer ? SUB * RS : 0));  // [kScanChunk] document starts
  const bool packed = p.seq_idx != nullptr;
  const int chl = threadIdx.x / TPC;
  const idx_t c0 = idx_t(blockIdx.x) * CPB;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int lane_n = threadIdx.x % TPC;
  const idx_t c = idx_t(blockIdx.x) * CPB + threadIdx.x / TPC;
  const idx_t b = blockIdx.y;
  const int seg = x.seg_base + blockIdx.z;
  const bool valid = c < p.Di;
  const idx_t N = p.N, Di = p.Di, T = p.T_, nch = (T + kScanChunk - 1) / kScanChunk;
  const idx_t cc = valid ? c : 0;
  const idx_t srow = (idx_t(seg) * p.B + b) * Di + c;  // this thread's row of the segment buffers
  const int k_lo = seg * sg.seg_chunks, k_hi = int((sg.t_end(seg, T) + kScanChunk - 1) / kScanChunk);

  float A2[NPT], Af[NPT], dh[NPT], accA[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const idx_t n = lane_n * NPT + k;
    const bool vn = valid && n < N;
    Af[k] = vn ? p.A[cc * N + n] : 0.f;
    A2[k] = Af[k] * kLog2e;
    dh[k] = vn ? x.dh_start[srow * N + n] : 0.f;
    accA[k] = 0.f;
  }
  const float Dc = p.D ? p.D[cc] : 0.f;
  float accD = 0.f, accBias = 0.f;

  // A chunk's inputs: fetch() issues this thread's share of the chunk's global loads (the
  // per-channel streams, the B / C rows, the document starts and the saved entering state) into
  // registers, commit() converts them into shared memory. With kScanBwdPrefetch the next (earlier)
  // chunk's fetch is issued before the current chunk's passes, so its latency hides behind them.
  static_assert(kScanChunk <= NT, "one thread per chunk step for the document starts");
  constexpr int PBC = (kScanChunk * NP + NT - 1) / NT, PS = (kScanChunk * CPB + NT - 1) / NT;
  Tin fB[PBC], fC[PBC], fU[PS], fD[PS], fZ[PS], fG[PS];
  float fH[NPT];
  int fSt = 0;
  auto fetch = [&](int k) {
    const idx_t t0 = idx_t(k) * kScanChunk;
    const int len = int(min(idx_t(kScanChunk), T - t0));
#pragma unroll
    for (int j = 0; j < PBC; ++j) {
      const int e = threadIdx.x + j * NT, i = e / NP, n = e % NP;
      const bool ok = e < kScanChunk * NP && i < len && n < N;
      const idx_t row = b * T + t0 + i;
      fB[j] = p.Bm[ok ? row * p.B_ld + n : 0];
      fC[j] = p.Cm[ok ? row * p.C_ld + n : 0];
    }
#pragma unroll
    for (int j = 0; j < PS; ++j) {
      const int e = threadIdx.x + j * NT, i = e / CPB, q = e % CPB;
      const bool ok = e < kScanChunk * CPB && i < len && c0 + q < Di;
      const idx_t row = b * T + t0 + i, cg = c0 + q;
      fU[j] = p.u[ok ? row * p.u_ld + cg : 0];
      fD[j] = p.delta[ok ? row * p.delta_ld + cg : 0];
      fG[j] = g.dout[ok ? row * g.dout_ld + cg : 0];
      if (p.z) fZ[j] = p.z[ok ? row * p.z_ld + cg : 0];
    }
    fSt = packed && int(threadIdx.x) < len && doc_start(p.seq_idx, b, T, t0 + threadIdx.x);
    const float* hs = p.chunk_states + ((b * nch + k) * Di + cc) * N;
#pragma unroll
    for (int q = 0; q < NPT; ++q) fH[q] = (valid && lane_n * NPT + q < N) ? hs[lane_n * NPT + q] : 0.f;
  };
  auto commit = [&](int k) {
    const int len = int(min(idx_t(kScanChunk), T - idx_t(k) * kScanChunk));
#pragma unroll
    for (int j = 0; j < PBC; ++j) {
      const int e = threadIdx.x + j * NT, i = e / NP, n = e % NP;
      if (e >= kScanChunk * NP) continue;
      const bool ok = i < len && n < N;
      sB[e] = ok ? to_f32(fB[j]) : 0.f;
      sC[e] = ok ? to_f32(fC[j]) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < PS; ++j) {
      const int e = threadIdx.x + j * NT, i = e / CPB, q = e % CPB;
      if (e >= kScanChunk * CPB) continue;
      const idx_t cg = c0 + q;
      float uv = 0.f, dt = 0.f, sgv = 0.f, zv = 0.f, gv = 0.f;
      if (i < len && cg < Di) {
        uv = to_f32(fU[j]);
        const float v = to_f32(fD[j]) + (p.delta_bias ? p.delta_bias[cg] : 0.f);
        dt = p.delta_softplus ? softplus_f(v) : v;
        sgv = p.delta_softplus ? softplus_grad_f(v) : 1.f;
        if (p.z) zv = to_f32(fZ[j]);
        gv = to_f32(fG[j]);
      }
      sU[e] = uv;
      sDt[e] = dt;
      sSg[e] = sgv;
      sZ[e] = zv;
      sG[e] = gv;
      if (kScanBwdDefer) sDy[e] = p.z ? gv * silu_f(zv) : gv;
    }
    if (threadIdx.x < kScanChunk) sSt[threadIdx.x] = fSt;
  };

  if (kScanBwdPrefetch) fetch(k_hi - 1);
  for (int k = k_hi - 1; k >= k_lo; --k) {
    const idx_t t0 = idx_t(k) * kScanChunk;
    const int len = int(min(idx_t(kScanChunk), T - t0));
    const int nsub = (len + SUB - 1) / SUB;
    __syncthreads();  // the previous chunk's shared inputs are read and its outputs stored
    if (!kScanBwdPrefetch) fetch(k);
    commit(k);
    float hb[NS][NPT];
#pragma unroll
    for (int q = 0; q < NPT; ++q) hb[0][q] = fH[q];
    __syncthreads();
    if (kScanBwdPrefetch && k > k_lo) fetch(k - 1);
    // Pass 1: states at the sub-chunk boundaries.
#pragma unroll
    for (int s = 0; s + 1 < NS; ++s) {
      if (s + 1 < nsub) {
        float h[NPT];
#pragma unroll
        for (int q = 0; q < NPT; ++q) h[q] = hb[s][q];
#pragma unroll 4
        for (int i = 0; i < SUB; ++i) {
          const int ci = (s * SUB + i) * CPB + chl;
          const float dt = sDt[ci];
          const float dtu = dt * sU[ci];
          const float* Bi = sB + (s * SUB + i) * NP + lane_n * NPT;
          const float keep = sSt[s * SUB + i] ? 0.f : 1.f;
#pragma unroll
          for (int q = 0; q < NPT; ++q) h[q] = fmaf(exp2f(dt * A2[q]), keep * h[q], dtu * Bi[q]);
        }
#pragma unroll
        for (int q = 0; q < NPT; ++q) hb[s + 1][q] = h[q];
      }
    }
    // Pass 2: sub-chunks last to first.
#pragma unroll
    for (int s = NS - 1; s >= 0; --s) {
      if (s < nsub) {
        const idx_t ts = t0 + s * SUB;
        const int slen = min(SUB, len - s * SUB);
        float hs[SUB][NPT];
#pragma unroll
        for (int i = 0; i < SUB; ++i) {
          if (i < slen) {
            const int ci = (s * SUB + i) * CPB + chl;
            const float dt = sDt[ci];
            const float dtu = dt * sU[ci];
            const float* Bi = sB + (s * SUB + i) * NP + lane_n * NPT;
            const float keep = sSt[s * SUB + i] ? 0.f : 1.f;
#pragma unroll
            for (int q = 0; q < NPT; ++q)
              hs[i][q] = fmaf(exp2f(dt * A2[q]), keep * (i == 0 ? hb[s][q] : hs[i > 0 ? i - 1 : 0][q]), dtu * Bi[q]);
          }
        }
#pragma unroll
        for (int i = SUB - 1; i >= 0; --i) {
          if (i < slen) {
            const int ci = (s * SUB + i) * CPB + chl;
            const float dt = sDt[ci];
            const float uv = sU[ci];
            const float dtu = dt * uv;
            const float* Bi = sB + (s * SUB + i) * NP + lane_n * NPT;
            const float* Ci = sC + (s * SUB + i) * NP + lane_n * NPT;
            float dy = kScanBwdDefer ? sDy[ci] : sG[ci];
            if (p.z) {
              float y = 0.f;
#pragma unroll
              for (int q = 0; q < NPT; ++q) y = fmaf(Ci[q], hs[i][q], y);
              if (kScanBwdDefer) {
                sPy[i * RS + threadIdx.x] = y;
              } else {
                y = group_sum<TPC>(y);
                y = fmaf(Dc, uv, y);
                const float zv = sZ[ci];
                if (lane_n == 0) sDz[ci] = dy * y * silu_grad_f(zv);
                dy *= silu_f(zv);
              }
            }
            float ddt = 0.f, du = 0.f, vb[NPT], vc[NPT];
            const float keep = sSt[s * SUB + i] ? 0.f : 1.f;  // 0 at a document start
#pragma unroll
            for (int q = 0; q < NPT; ++q) {
              const float hp = keep * (i == 0 ? hb[s][q] : hs[i > 0 ? i - 1 : 0][q]);
              const float a = exp2f(dt * A2[q]);
              const float gq = fmaf(dy, Ci[q], dh[q]);
              vc[q] = dy * hs[i][q];
              const float da = gq * hp * a;
              accA[q] = fmaf(da, dt, accA[q]);
              ddt = fmaf(da, Af[q], fmaf(gq * Bi[q], uv, ddt));
              vb[q] = gq * dtu;
              du = fmaf(gq * dt, Bi[q], du);
              dh[q] = keep * gq * a;
            }
            if (kScanBwdDefer) {
              sPd[i * RS + threadIdx.x] = ddt;
              sPu[i * RS + threadIdx.x] = du;
            } else {
              ddt = group_sum<TPC>(ddt);
              du = group_sum<TPC>(du);
              du = fmaf(dy, Dc, du);
              accD = fmaf(dy, uv, accD);  // meaningful in lane 0, which alone publishes it
              const float dv = ddt * sSg[ci];
              accBias += dv;
              if (lane_n == 0) {
                sDd[ci] = dv;
                sDu[ci] = du;
              }
            }
            // Sum over the warp's channels (lanes with equal lane_n), fixed butterfly order.
#pragma unroll
            for (int o = TPC; o < 32; o <<= 1) {
#pragma unroll
              for (int q = 0; q < NPT; ++q) {
                vb[q] += __shfl_xor_sync(0xffffffffu, vb[q], o);
                vc[q] += __shfl_xor_sync(0xffffffffu, vc[q], o);
              }
            }
            if (lane < TPC) {
#pragma unroll
              for (int q = 0; q < NPT; ++q) {
                rB[(i * W + warp) * NP + lane * NPT + q] = vb[q];
                rC[(i * W + warp) * NP + lane * NPT + q] = vc[q];
              }
            }
          }
        }
        __syncthreads();
        // Block partial over warps in warp order; one row of the partial buffer per step.
        for (int e = threadIdx.x; e < slen * NP; e += NT) {
          const int i = e / NP, n = e % NP;
          if (n >= N) continue;
          float sb = 0.f, sc = 0.f;
#pragma unroll
          for (int w = 0; w < W; ++w) {
            sb += rB[(i * W + w) * NP + n];
            sc += rC[(i * W + w) * NP + n];
          }
          const idx_t row = (b * x.slabT + (ts + i - x.slab_t0)) * x.G + blockIdx.x;
          x.partB[row * N + n] = sb;
          x.partC[row * N + n] = sc;
        }
        if (kScanBwdDefer) {
          // Lane l of channel chl finishes the sub-chunk's steps i = l, l + TPC, ...: its lanes'
          // partials summed in lane order, then du, dΔ, dz and the D / Δ-bias sums (which this
          // lane accumulates over its steps; the lanes are summed at the end).
          for (int i = lane_n; i < slen; i += TPC) {
            const int ci = (s * SUB + i) * CPB + chl;
            const float* py = sPy + i * RS + chl * TPC;
            const float* pd = sPd + i * RS + chl * TPC;
            const float* pu = sPu + i * RS + chl * TPC;
            float y = 0.f, ddt = 0.f, du = 0.f;
#pragma unroll
            for (int l = 0; l < TPC; ++l) {
              ddt += pd[l];
              du += pu[l];
              if (p.z) y += py[l];
            }
            const float uv = sU[ci], dyg = sDy[ci];
            du = fmaf(dyg, Dc, du);
            accD = fmaf(dyg, uv, accD);
            const float dv = ddt * sSg[ci];
            accBias += dv;
            sDd[ci] = dv;
            sDu[ci] = du;
            if (p.z) sDz[ci] = sG[ci] * fmaf(Dc, uv, y) * silu_grad_f(sZ[ci]);
          }
        }
        if (s > 0) __syncthreads();  // the next sub-chunk rewrites rB / rC (and the partials)
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < len * CPB; e += NT) {
      const int i = e / CPB, q = e % CPB;
      const idx_t cg = c0 + q, row = b * T + t0 + i;
      if (cg >= Di) continue;
      g.du[row * g.du_ld + cg] = from_f32<Tin>(sDu[e]);
      g.ddelta[row * g.ddelta_ld + cg] = from_f32<Tin>(sDd[e]);
      if (p.z) g.dz[row * g.dz_ld + cg] = from_f32<Tin>(sDz[e]);
    }
  }
  if (kScanBwdDefer) {  // each lane holds its steps' share: sum over the channel's lanes
    accD = group_sum<TPC>(accD);
    accBias = group_sum<TPC>(accBias);
  }
  if (valid) {
#pragma unroll
    for (int q = 0; q < NPT; ++q) {
      const idx_t n = lane_n * NPT + q;
      if (n < N) {
        if (seg == 0) x.dh0[(b * Di + c) * N + n] = dh[q];
        x.accA[srow * N + n] = accA[q];
      }
    }
    if (lane_n == 0) {
      x.accD[srow] = accD;
      x.accBias[srow] = accBias;
    }
  }
}

// dB[b,t,n] = Σ_g partB[b, t-slab_t0, g, n] in g order (same for C); t in the slab.
template <typename Tin>
__global__ void scan_reduce_bc(ScanGradsT<Tin> g, const float* partB, const float* partC,
                               idx_t Bn, idx_t T, idx_t N, idx_t slab_t0, idx_t slab_len,
                               idx_t slabT, int G) {
  const idx_t total = Bn * slab_len * N;
  for (idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; e < total;
       e += idx_t(gridDim.x) * blockDim.x) {
    const idx_t n = e % N, ti = (e / N) % slab_len, b = e / (N * slab_len);
    const float* pb = partB + ((b * slabT + ti) * G) * N + n;
    const float* pc = partC + ((b * slabT + ti) * G) * N + n;
    float sb = 0.f, sc = 0.f;
    for (int q = 0; q < G; ++q) {
      sb += pb[idx_t(q) * N];
      sc += pc[idx_t(q) * N];
    }
    const idx_t bt = b * T + slab_t0 + ti;
    g.dB[bt * g.dB_ld + n] = from_f32<Tin>(sb);
    g.dC[bt * g.dC_ld + n] = from_f32<Tin>(sc);
  }
}

// dst[i] += Σ_b src[b, i] in b order (i < n); dst may be nullptr (skipped by the caller).
__global__ void scan_reduce_batch(float* dst, const float* src, idx_t Bn, idx_t n) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < n; i += idx_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (idx_t b = 0; b < Bn; ++b) s += src[b * n + i];
    dst[i] += s;
  }
}

// ------------------------------------------------------------------------------------------
std::atomic<int> g_forced_npt{0};

struct Config {
  int tpc, npt;
};

// The two directions choose independently (the chunk states' layout does not depend on the
// mapping). Automatic: the forward holds 4 states per lane (H200, N 16, 2026-12-02: 0.645 against
// 0.736 ms at B 8 T 2048, 0.974 / 1.097 at B 2 T 8192, 0.118 / 0.128 at B 1 Di 1536); the
// backward 2 up to N = 64 (fwd+bwd with both at 2 against both at 4: 4.41 vs 6.05 ms at
// B 8 T 2048, 9.29 vs 13.38 at B 2 T 8192), 4 beyond. A forced count applies to both.
// Kernel-lab knob: states per lane of the forward (and its segments' local pass) for N <= 16
// when no count is forced: 4 (shipped), 8 (2 lanes per channel) or 16 (one lane: no lane sums).
#ifndef MOESSM_SCAN_FWD_NPT
#define MOESSM_SCAN_FWD_NPT 4
#endif
static_assert(MOESSM_SCAN_FWD_NPT == 4 || MOESSM_SCAN_FWD_NPT == 8 || MOESSM_SCAN_FWD_NPT == 16,
              "MOESSM_SCAN_FWD_NPT must be 4, 8 or 16");
Config choose(idx_t B, idx_t Di, idx_t N, bool backward) {
  int npt = g_forced_npt.load();
  if (MOESSM_SCAN_FWD_NPT > 4 && !backward && npt == 0 && N <= 16)
    return {16 / MOESSM_SCAN_FWD_NPT, MOESSM_SCAN_FWD_NPT};
  if (npt == 2 && N > 64) npt = 0;
  if (npt == 0) npt = (backward && N <= 64) ? 2 : 4;
  if (N > 32 * npt) npt = 8;  // only N in (128, 256]
  int tpc = 1;
  while (tpc * npt < N) tpc *= 2;
  if (npt == 2 && tpc < 4) tpc = 4;  // instantiated lab shapes
  return {tpc, npt};
}

std::atomic<int> g_forced_segments{0};

// Blocks of `kernel` resident on the whole device at once (occupancy × SMs), cached per kernel.
template <typename K>
idx_t resident_blocks(K kernel, int threads, size_t smem) {
  static std::atomic<idx_t> cached{0};
  idx_t r = cached.load();
  if (r == 0) {
    int dev = 0, sms = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    r = std::max<idx_t>(1, idx_t(sms) * per_sm);
    cached.store(r);
  }
  return r;
}

// Splits nch chunks into segments. Automatic: one segment when B·Di alone fills half the
// device's resident blocks or more (a segment costs an extra local pass over its tokens), else
// enough segments for about four waves (H200, N 16, bench_scan's segment sweep: B 2 T 8192
// fwd+bwd 4.96 ms at 16 segments against 5.47 at one wave's 2; B 1 T 2048 0.54 against 0.67 ms;
// B 8 T 2048, 512 forward blocks for 528 resident: forward 0.83 ms at 1 segment, 1.17 at 5).
// Segments never exceed max_chunks (the backward's partial-buffer budget).
Segments choose_segments(idx_t nch, idx_t blocks_per_segment, idx_t resident, idx_t max_chunks) {
  idx_t S = g_forced_segments.load();
  if (S <= 0)
    S = 2 * blocks_per_segment >= resident ? 1 : (4 * resident + blocks_per_segment - 1) / blocks_per_segment;
  S = std::min(std::max<idx_t>(S, 1), nch);
  idx_t seg_chunks = std::min((nch + S - 1) / S, std::max<idx_t>(1, max_chunks));
  S = (nch + seg_chunks - 1) / seg_chunks;
  CHECK(S <= 65535, "cuda selective_scan: ", S, " time segments (T=", nch * kScanChunk,
        ") exceed the grid limit 65535; raise the partial budget");
  Segments sg;
  sg.S = int(S);
  sg.seg_chunks = int(seg_chunks);
  return sg;
}

template <typename Tin, int TPC, int NPT>
size_t local_smem() {
  constexpr int CPB = threads_for<TPC>() / TPC, NP = TPC * NPT, TS = fwd_tile<TPC, NPT>();
  return (size_t(TS) * NP + size_t(2) * TS * CPB + TS) * sizeof(float);
}

// The local and combine passes; on return `bound` holds the value at every segment boundary.
template <typename Tin, int TPC, int NPT>
void segment_bounds(const ScanParamsT<Tin>& p, const ScanGradsT<Tin>& g, const Segments& sg, bool backward,
                    const float* start, float* bound, float* local, float* sum_dt, cudaStream_t st) {
  constexpr int NT = threads_for<TPC>(), CPB = NT / TPC;
  const idx_t per = p.B * p.Di * p.N;
  if (sg.S > 1) {
    const dim3 grid{unsigned((p.Di + CPB - 1) / CPB), unsigned(p.B), unsigned(sg.S - 1)};
    scan_local_kernel<Tin, TPC, NPT><<<grid, NT, local_smem<Tin, TPC, NPT>(), st>>>(
        p, g, sg, backward ? 1 : 0, backward, local, sum_dt);
    CUDA_CHECK_LAUNCH("scan_local_kernel");
  }
  scan_combine_kernel<<<grid_1d(per, 256), 256, 0, st>>>(bound, local, sum_dt, start, p.A, p.B, p.Di,
                                                        p.N, sg.S, backward);
  CUDA_CHECK_LAUNCH("scan_combine_kernel");
}

template <typename Tin, int TPC, int NPT>
void launch_fwd(const ScanParamsT<Tin>& p, cudaStream_t st) {
  constexpr int NT = threads_for<TPC>(), CPB = NT / TPC, NP = TPC * NPT;
  constexpr int TS = fwd_tile<TPC, NPT>();
  const size_t smem = (size_t(2) * TS * NP + size_t(4) * TS * CPB + TS) * sizeof(float);
  allow_smem(scan_fwd_kernel<Tin, TPC, NPT>, smem);  // per launch: the attribute belongs to the current device
  const idx_t G = (p.Di + CPB - 1) / CPB, nch = scan_num_chunks(p.T_);
  const Segments sg = choose_segments(nch, G * p.B, resident_blocks(scan_fwd_kernel<Tin, TPC, NPT>, NT, smem), nch);
  const float* h_start = p.h0;
  if (sg.S > 1) {
    const idx_t per = p.B * p.Di * p.N;
    float* ws = static_cast<float*>(workspace((2 * size_t(sg.S) * per + size_t(sg.S) * p.B * p.Di) * sizeof(float), st));
    float* bound = ws;
    float* local = bound + sg.S * per;
    segment_bounds<Tin, TPC, NPT>(p, ScanGradsT<Tin>{}, sg, false, p.h0, bound, local, local + sg.S * per, st);
    h_start = bound;
  }
  const dim3 grid{unsigned(G), unsigned(p.B), unsigned(sg.S)};
  scan_fwd_kernel<Tin, TPC, NPT><<<grid, NT, smem, st>>>(p, sg, h_start);
  CUDA_CHECK_LAUNCH("scan_fwd_kernel");
}

template <typename Tin, int TPC, int NPT>
void launch_bwd(const ScanGradsT<Tin>& g, const ScanParamsT<Tin>& p, cudaStream_t st) {
  constexpr int NT = threads_for<TPC>(), CPB = NT / TPC, NP = TPC * NPT, W = NT / 32;
  constexpr int SUB = bwd_sub<NPT>();
  const size_t smem = (size_t(2) * kScanChunk * NP + size_t(2) * SUB * W * NP + size_t(8) * kScanChunk * CPB +
                       bwd_defer_floats<NT, SUB, CPB>() + kScanChunk) *
                      sizeof(float);
  allow_smem(scan_bwd_kernel<Tin, TPC, NPT>, smem);  // per launch: the attribute belongs to the current device
  const idx_t Bn = p.B, T = p.T_, Di = p.Di, N = p.N, nch = scan_num_chunks(T);
  const int G = int((Di + CPB - 1) / CPB);
  // The dB/dC partial buffer of one launch (a slab of whole segments) stays within the budget.
  const idx_t per_step = Bn * G * N * 2 * idx_t(sizeof(float));
  const idx_t budget = g_partial_budget.load() > 0 ? g_partial_budget.load() : kPartialBudgetBytes;
  const idx_t budget_chunks = std::max<idx_t>(1, budget / (per_step * kScanChunk));
  const Segments sg = choose_segments(nch, idx_t(G) * Bn, resident_blocks(scan_bwd_kernel<Tin, TPC, NPT>, NT, smem),
                                      budget_chunks);
  const int slab_segs = int(std::min<idx_t>(sg.S, std::max<idx_t>(1, budget_chunks / sg.seg_chunks)));
  const idx_t slabT = idx_t(slab_segs) * sg.seg_chunks * kScanChunk;
  const idx_t S = sg.S, per = Bn * Di * N, rows = Bn * Di;
  const size_t part_elems = size_t(Bn * slabT * G * N);
  const size_t total = (2 * part_elems + size_t(3 * S + 1) * per + size_t(3 * S) * rows) * sizeof(float);
  float* ws = static_cast<float*>(workspace(total, st));
  BwdExtra x;
  x.partB = ws;
  x.partC = x.partB + part_elems;
  float* bound = x.partC + part_elems;  // [S, B, Di, N]
  float* local = bound + S * per;       // [S, B, Di, N]
  x.accA = local + S * per;             // [S, B, Di, N]
  x.dh0 = x.accA + S * per;             // [B, Di, N]
  float* sum_dt = x.dh0 + per;          // [S, B, Di]
  x.accD = sum_dt + S * rows;
  x.accBias = x.accD + S * rows;
  x.dh_start = bound;
  x.slabT = slabT;
  x.G = G;
  segment_bounds<Tin, TPC, NPT>(p, g, sg, true, g.dh_last, bound, local, sum_dt, st);

  for (int s0 = 0; s0 < sg.S; s0 += slab_segs) {
    const int nz = std::min(slab_segs, sg.S - s0);
    x.seg_base = s0;
    x.slab_t0 = sg.t_begin(s0);
    const idx_t slab_len = sg.t_end(s0 + nz - 1, T) - x.slab_t0;
    const dim3 grid{unsigned(G), unsigned(Bn), unsigned(nz)};
    scan_bwd_kernel<Tin, TPC, NPT><<<grid, NT, smem, st>>>(p, g, sg, x);
    CUDA_CHECK_LAUNCH("scan_bwd_kernel");
    const idx_t work = Bn * slab_len * N;
    scan_reduce_bc<Tin><<<grid_1d(work, 256), 256, 0, st>>>(g, x.partB, x.partC, Bn, T, N, x.slab_t0,
                                                           slab_len, slabT, G);
    CUDA_CHECK_LAUNCH("scan_reduce_bc");
  }
  // Parameter gradients: ordered sums over (segment, batch row).
  scan_reduce_batch<<<grid_1d(Di * N, 256), 256, 0, st>>>(g.dA, x.accA, S * Bn, Di * N);
  CUDA_CHECK_LAUNCH("scan_reduce_batch(dA)");
  if (g.dD) {
    scan_reduce_batch<<<grid_1d(Di, 256), 256, 0, st>>>(g.dD, x.accD, S * Bn, Di);
    CUDA_CHECK_LAUNCH("scan_reduce_batch(dD)");
  }
  if (g.ddelta_bias) {
    scan_reduce_batch<<<grid_1d(Di, 256), 256, 0, st>>>(g.ddelta_bias, x.accBias, S * Bn, Di);
    CUDA_CHECK_LAUNCH("scan_reduce_batch(ddelta_bias)");
  }
  if (g.dh0)
    CUDA_CHECK(cudaMemcpyAsync(g.dh0, x.dh0, size_t(per) * sizeof(float), cudaMemcpyDeviceToDevice, st));
}

#if MOESSM_SCAN_FWD_NPT == 8
#define MOESSM_SCAN_LAB_CASES(FN, ...) case 802: FN<Tin, 2, 8>(__VA_ARGS__); break;
#elif MOESSM_SCAN_FWD_NPT == 16
#define MOESSM_SCAN_LAB_CASES(FN, ...) case 1601: FN<Tin, 1, 16>(__VA_ARGS__); break;
#else
#define MOESSM_SCAN_LAB_CASES(FN, ...)
#endif
#define MOESSM_SCAN_DISPATCH(BACKWARD, FN, ...)                                           \
  do {                                                                                    \
    const Config cfg = choose(p.B, p.Di, p.N, BACKWARD);                                  \
    switch (cfg.npt * 100 + cfg.tpc) {                                                    \
      case 401: FN<Tin, 1, 4>(__VA_ARGS__); break;                                        \
      case 402: FN<Tin, 2, 4>(__VA_ARGS__); break;                                        \
      case 404: FN<Tin, 4, 4>(__VA_ARGS__); break;                                        \
      case 408: FN<Tin, 8, 4>(__VA_ARGS__); break;                                        \
      case 416: FN<Tin, 16, 4>(__VA_ARGS__); break;                                       \
      case 432: FN<Tin, 32, 4>(__VA_ARGS__); break;                                       \
      case 832: FN<Tin, 32, 8>(__VA_ARGS__); break;                                       \
      case 204: FN<Tin, 4, 2>(__VA_ARGS__); break;                                        \
      case 208: FN<Tin, 8, 2>(__VA_ARGS__); break;                                        \
      case 216: FN<Tin, 16, 2>(__VA_ARGS__); break;                                       \
      case 232: FN<Tin, 32, 2>(__VA_ARGS__); break;                                       \
      MOESSM_SCAN_LAB_CASES(FN, __VA_ARGS__)                                              \
      default: FAIL("cuda selective_scan: no kernel for N=", p.N, " (states/thread ",     \
                    cfg.npt, ", lanes/channel ", cfg.tpc, ")");                           \
    }                                                                                     \
  } while (0)

void log_config_once(idx_t B, idx_t Di, idx_t N) {
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true))
    std::fprintf(stderr, "[moessm] cuda selective_scan: %s (first call B=%lld Di=%lld N=%lld)\n",
                 selective_scan_config_name(B, Di, N), (long long)B, (long long)Di, (long long)N);
}

}  // namespace

void selective_scan_set_states_per_thread(int npt) {
  CHECK(npt == 0 || npt == 2 || npt == 4, "selective_scan_set_states_per_thread: ", npt,
        " is not one of 0 (auto), 2, 4");
  g_forced_npt.store(npt);
}

void selective_scan_set_segments(int segments) {
  CHECK(segments >= 0, "selective_scan_set_segments: ", segments, " must be >= 0 (0 = automatic)");
  g_forced_segments.store(segments);
}

void selective_scan_set_partial_budget(idx_t bytes) {
  CHECK(bytes >= 0, "selective_scan_set_partial_budget: ", bytes);
  g_partial_budget.store(bytes);
}

const char* selective_scan_config_name(idx_t B, idx_t Di, idx_t N) {
  static thread_local char buf[128];
  const Config f = choose(B, Di, N, false), b = choose(B, Di, N, true);
  std::snprintf(buf, sizeof(buf),
                "register scan, lanes/channel x states/lane: forward %dx%d, backward %dx%d; chunk %d",
                f.tpc, f.npt, b.tpc, b.npt, kScanChunk);
  return buf;
}

template <typename Tin>
void selective_scan_forward(const ScanParamsT<Tin>& p, cudaStream_t stream) {
  p.validate();
  log_config_once(p.B, p.Di, p.N);
  MOESSM_SCAN_DISPATCH(false, launch_fwd, p, stream);
}

template <typename Tin>
void selective_scan_backward(const ScanGradsT<Tin>& g, const ScanParamsT<Tin>& p, cudaStream_t stream) {
  p.validate();
  CHECK(p.chunk_states, "cuda selective_scan_backward: chunk_states from the forward pass are required");
  CHECK(g.dout && g.du && g.ddelta && g.dB && g.dC && g.dA,
        "cuda selective_scan_backward: dout, du, ddelta, dB, dC and dA are required");
  CHECK(!p.z || g.dz, "cuda selective_scan_backward: dz is required when z is given");
  CHECK(g.dout_ld >= p.Di && g.du_ld >= p.Di && g.ddelta_ld >= p.Di && (!p.z || g.dz_ld >= p.Di),
        "cuda selective_scan_backward: gradient token strides must be >= Di=", p.Di);
  CHECK(g.dB_ld >= p.N && g.dC_ld >= p.N, "cuda selective_scan_backward: dB/dC strides ", g.dB_ld,
        "/", g.dC_ld, " must be >= N=", p.N);
  log_config_once(p.B, p.Di, p.N);
  MOESSM_SCAN_DISPATCH(true, launch_bwd, g, p, stream);
}

namespace {
ScanParamsT<float> convert(const ScanParams<float>& q) {
  ScanParamsT<float> p;
  p.B = q.B; p.T_ = q.T_; p.Di = q.Di; p.N = q.N;
  p.u = q.u; p.u_ld = q.u_ld; p.delta = q.delta; p.delta_ld = q.delta_ld;
  p.Bm = q.Bm; p.B_ld = q.B_ld; p.Cm = q.Cm; p.C_ld = q.C_ld; p.z = q.z; p.z_ld = q.z_ld;
  p.A = q.A; p.D = q.D; p.delta_bias = q.delta_bias; p.h0 = q.h0; p.seq_idx = q.seq_idx;
  p.delta_softplus = q.delta_softplus;
  p.out = q.out; p.out_ld = q.out_ld; p.h_last = q.h_last; p.chunk_states = q.chunk_states;
  return p;
}
ScanGradsT<float> convert(const ScanGrads<float>& q) {
  ScanGradsT<float> g;
  g.dout = q.dout; g.dout_ld = q.dout_ld; g.dh_last = q.dh_last;
  g.du = q.du; g.du_ld = q.du_ld; g.ddelta = q.ddelta; g.ddelta_ld = q.ddelta_ld;
  g.dB = q.dB; g.dB_ld = q.dB_ld; g.dC = q.dC; g.dC_ld = q.dC_ld; g.dz = q.dz; g.dz_ld = q.dz_ld;
  g.dA = q.dA; g.dD = q.dD; g.ddelta_bias = q.ddelta_bias; g.dh0 = q.dh0;
  return g;
}
}  // namespace

void selective_scan_forward(const ScanParams<float>& p, cudaStream_t stream) {
  selective_scan_forward<float>(convert(p), stream);
}
void selective_scan_backward(const ScanGrads<float>& g, const ScanParams<float>& p, cudaStream_t stream) {
  selective_scan_backward<float>(convert(g), convert(p), stream);
}

template struct ScanParamsT<float>;
template struct ScanParamsT<bf16>;
template void selective_scan_forward<float>(const ScanParamsT<float>&, cudaStream_t);
template void selective_scan_forward<bf16>(const ScanParamsT<bf16>&, cudaStream_t);
template void selective_scan_backward<float>(const ScanGradsT<float>&, const ScanParamsT<float>&, cudaStream_t);
template void selective_scan_backward<bf16>(const ScanGradsT<bf16>&, const ScanParamsT<bf16>&, cudaStream_t);

}  // namespace cuda
}  // namespace moessm
