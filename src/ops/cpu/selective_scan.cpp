// CPU selective scan, forward and backward (contract in ops/selective_scan.h).
// Forward: one pass over time per (b, c), state h[N] local; the state entering each chunk is
// saved. Backward: for each batch row, chunks are processed last to first; inside a chunk every
// channel recomputes its states from the saved boundary state, then walks back in time carrying
// dh. dB / dC need a sum over channels: each channel writes its contributions for the chunk to a
// scratch [Di, L, N] which is then reduced over c in index order (deterministic for any thread
// count). Packed rows (seq_idx): a document start replaces the previous state by 0 (forward and
// the backward's recomputation) and stops dh there, so the arithmetic of each document is that
// of a separate run of it.
#include "ops/selective_scan.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "ops/activations.h"

namespace moessm {

template <typename T>
void ScanParams<T>::validate() const {
  CHECK(B > 0 && T_ > 0 && Di > 0 && N > 0, "selective_scan: sizes B=", B, " T=", T_, " Di=", Di,
        " N=", N, " must be positive");
  CHECK(N <= 256, "selective_scan: d_state N=", N, " exceeds the supported maximum 256");
  CHECK(u && delta && Bm && Cm && A && out, "selective_scan: u, delta, B, C, A and out are required");
  CHECK(u_ld >= Di && delta_ld >= Di && out_ld >= Di, "selective_scan: token strides must be >= Di=", Di);
  CHECK(B_ld >= N && C_ld >= N, "selective_scan: B/C token strides must be >= N=", N);
  CHECK(!z || z_ld >= Di, "selective_scan: z token stride must be >= Di=", Di);
}

namespace cpu {

namespace {
constexpr int kMaxN = 256;
// Δ from the pre-activation v = delta + delta_bias (see ScanParams::delta_softplus).
template <typename T> inline T delta_act(T v, bool softplus) { return softplus ? softplus_of(v) : v; }
// Token t of row b starts a document (ops/op_common.h): its incoming state is 0.
inline bool doc_start(const int32_t* seq_idx, idx_t b, idx_t T_, idx_t t) {
  return seq_idx && t > 0 && seq_idx[b * T_ + t] != seq_idx[b * T_ + t - 1];
}
}

template <typename T>
void selective_scan_forward(const ScanParams<T>& p) {
  p.validate();
  const idx_t Bn = p.B, T_ = p.T_, Di = p.Di, N = p.N, nch = scan_num_chunks(T_);
#pragma omp parallel for collapse(2) schedule(static) if (Bn * Di * T_ * N * kScanStateWork >= kParallelMinWork)
  for (idx_t b = 0; b < Bn; ++b)
    for (idx_t c = 0; c < Di; ++c) {
      T h[kMaxN];
      for (idx_t n = 0; n < N; ++n) h[n] = p.h0 ? p.h0[(b * Di + c) * N + n] : T(0);
      const T* Ac = p.A + c * N;
      const T bias = p.delta_bias ? p.delta_bias[c] : T(0);
      const T Dc = p.D ? p.D[c] : T(0);
      for (idx_t t = 0; t < T_; ++t) {
        if (doc_start(p.seq_idx, b, T_, t))
          for (idx_t n = 0; n < N; ++n) h[n] = T(0);
        if (t % kScanChunk == 0 && p.chunk_states) {
          T* s = p.chunk_states + ((b * nch + t / kScanChunk) * Di + c) * N;
          for (idx_t n = 0; n < N; ++n) s[n] = h[n];
        }
        const idx_t bt = b * T_ + t;
        const T u = p.u[bt * p.u_ld + c];
        const T dt = delta_act(p.delta[bt * p.delta_ld + c] + bias, p.delta_softplus);
        if (p.delta_saved) p.delta_saved[bt * Di + c] = dt;
        const T* Bt = p.Bm + bt * p.B_ld;
        const T* Ct = p.Cm + bt * p.C_ld;
        const T du = dt * u;
        T y = 0;
#pragma omp simd reduction(+ : y)
        for (idx_t n = 0; n < N; ++n) {
          h[n] = exp_fast(dt * Ac[n]) * h[n] + du * Bt[n];
          y += Ct[n] * h[n];
        }
        y += Dc * u;
        if (p.z) y *= silu_of(p.z[bt * p.z_ld + c]);
        p.out[bt * p.out_ld + c] = y;
      }
      if (p.h_last)
        for (idx_t n = 0; n < N; ++n) p.h_last[(b * Di + c) * N + n] = h[n];
    }
}

template <typename T>
void selective_scan_backward(const ScanGrads<T>& g, const ScanParams<T>& p) {
  p.validate();
  CHECK(p.chunk_states, "selective_scan_backward: chunk_states from the forward pass are required");
  CHECK(g.dout && g.du && g.ddelta && g.dB && g.dC && g.dA, "selective_scan_backward: dout, du, ddelta, dB, dC and dA are required");
  CHECK(!p.z || g.dz, "selective_scan_backward: dz is required when z is given");
  const idx_t Bn = p.B, T_ = p.T_, Di = p.Di, N = p.N, nch = scan_num_chunks(T_);
  // Walks windows of kCpuWindow tokens (a whole number of chunks; the state entering a window is
  // the chunk state at its start): fewer, larger parallel regions than one per chunk.
  constexpr idx_t kCpuWindow = kScanChunk >= 64 ? kScanChunk : 64;
  static_assert(kCpuWindow % kScanChunk == 0, "the CPU backward window must hold whole chunks");
  const idx_t L = kCpuWindow, nwin = (T_ + L - 1) / L;
  std::vector<T> dBpart(static_cast<size_t>(Di * L * N)), dCpart(static_cast<size_t>(Di * L * N));
  std::vector<T> dh_all(static_cast<size_t>(Di * N));
  // Per-channel accumulators for dA / dD / ddelta_bias, summed over b and t by the channel owner.
  std::vector<T> dA_acc(static_cast<size_t>(Di * N), T(0)), dD_acc(Di, T(0)), dbias_acc(Di, T(0));

  for (idx_t b = 0; b < Bn; ++b) {
    for (idx_t i = 0; i < Di * N; ++i) dh_all[i] = g.dh_last ? g.dh_last[b * Di * N + i] : T(0);
    for (idx_t k = nwin - 1; k >= 0; --k) {
      const idx_t t0 = k * L, t1 = std::min(T_, t0 + L), len = t1 - t0;
#pragma omp parallel for schedule(static) if (Di * len * N * kScanStateWork >= kParallelMinWork)
      for (idx_t c = 0; c < Di; ++c) {
        // States h[t0-1 .. t1-1] and decays a[t0 .. t1-1] = exp(Δ·A) of this chunk: on the
        // stack for N <= 16, else on the heap.
        T hs[(kCpuWindow + 1) * 16], as[kCpuWindow * 16];
        std::vector<T> heap;
        T* H = hs;
        T* Ad = as;
        if (N > 16) {
          heap.resize(static_cast<size_t>((2 * L + 1) * N));
          H = heap.data();
          Ad = H + (L + 1) * N;
        }
        const T* Ac = p.A + c * N;
        const T bias = p.delta_bias ? p.delta_bias[c] : T(0);
        const T Dc = p.D ? p.D[c] : T(0);
        const T* s0 = p.chunk_states + ((b * nch + t0 / kScanChunk) * Di + c) * N;
        for (idx_t n = 0; n < N; ++n) H[n] = s0[n];
        static const T zeros[kMaxN] = {};  // the state a document start sees
        for (idx_t i = 0; i < len; ++i) {
          const idx_t bt = b * T_ + t0 + i;
          const T u = p.u[bt * p.u_ld + c];
          const T dt = p.delta_saved ? p.delta_saved[bt * Di + c]
                                   : delta_act(p.delta[bt * p.delta_ld + c] + bias, p.delta_softplus);
          const T* Bt = p.Bm + bt * p.B_ld;
          const T* hin = doc_start(p.seq_idx, b, T_, t0 + i) ? zeros : &H[i * N];
          const T du = dt * u;
#pragma omp simd
          for (idx_t n = 0; n < N; ++n) {
            const T a = exp_fast(dt * Ac[n]);
            Ad[i * N + n] = a;
            H[(i + 1) * N + n] = a * hin[n] + du * Bt[n];
          }
        }
        T* dh = &dh_all[c * N];
        for (idx_t i = len - 1; i >= 0; --i) {
          const idx_t bt = b * T_ + t0 + i;
          const T u = p.u[bt * p.u_ld + c];
          const T v = p.delta[bt * p.delta_ld + c] + bias;
          const T dt = p.delta_saved ? p.delta_saved[bt * Di + c] : delta_act(v, p.delta_softplus);
          const T* Bt = p.Bm + bt * p.B_ld;
          const T* Ct = p.Cm + bt * p.C_ld;
          const T* h = &H[(i + 1) * N];
          const bool start = doc_start(p.seq_idx, b, T_, t0 + i);
          const T* hprev = start ? zeros : &H[i * N];
          T dy = g.dout[bt * g.dout_ld + c];
          if (p.z) {
            const T zv = p.z[bt * p.z_ld + c];
            T y = Dc * u;
            for (idx_t n = 0; n < N; ++n) y += Ct[n] * h[n];
            g.dz[bt * g.dz_ld + c] = dy * y * silu_grad_of(zv);
            dy *= silu_of(zv);
          }
          T du = dy * Dc;
          dD_acc[c] += dy * u;
          T ddt = 0;
          T* dBc = &dBpart[(c * L + i) * N];
          T* dCc = &dCpart[(c * L + i) * N];
          const T* a_t = &Ad[i * N];
          T* dAc = &dA_acc[c * N];
#pragma omp simd reduction(+ : ddt, du)
          for (idx_t n = 0; n < N; ++n) {
            dCc[n] = dy * h[n];
            const T dhn = dh[n] + dy * Ct[n];
            const T a = a_t[n];
            const T da = dhn * hprev[n];
            ddt += da * a * Ac[n] + dhn * Bt[n] * u;
            dAc[n] += da * a * dt;
            dBc[n] = dhn * dt * u;
            du += dhn * dt * Bt[n];
            dh[n] = start ? T(0) : dhn * a;  // nothing flows back across a document start
          }
          const T dv = p.delta_softplus ? ddt * softplus_grad_of(v) : ddt;
          g.ddelta[bt * g.ddelta_ld + c] = dv;
          dbias_acc[c] += dv;
          g.du[bt * g.du_ld + c] = du;
        }
      }
      // Ordered reduction over channels for this chunk's dB, dC (c ascending, n contiguous).
#pragma omp parallel for schedule(static) if (len * Di * N * kScanStateWork >= kParallelMinWork)
      for (idx_t i = 0; i < len; ++i) {
        const idx_t bt = b * T_ + t0 + i;
        T* sb = g.dB + bt * g.dB_ld;
        T* sc = g.dC + bt * g.dC_ld;
        for (idx_t n = 0; n < N; ++n) sb[n] = sc[n] = T(0);
        for (idx_t c = 0; c < Di; ++c) {
          const T* pb = &dBpart[(c * L + i) * N];
          const T* pc = &dCpart[(c * L + i) * N];
#pragma omp simd
          for (idx_t n = 0; n < N; ++n) {
            sb[n] += pb[n];
            sc[n] += pc[n];
          }
        }
      }
    }
    if (g.dh0)
      for (idx_t i = 0; i < Di * N; ++i) g.dh0[b * Di * N + i] = dh_all[i];
  }
  for (idx_t i = 0; i < Di * N; ++i) g.dA[i] += dA_acc[i];
  if (g.dD)
    for (idx_t c = 0; c < Di; ++c) g.dD[c] += dD_acc[c];
  if (g.ddelta_bias)
    for (idx_t c = 0; c < Di; ++c) g.ddelta_bias[c] += dbias_acc[c];
}

template void selective_scan_forward<float>(const ScanParams<float>&);
template void selective_scan_forward<double>(const ScanParams<double>&);
template void selective_scan_backward<float>(const ScanGrads<float>&, const ScanParams<float>&);
template void selective_scan_backward<double>(const ScanGrads<double>&, const ScanParams<double>&);

}  // namespace cpu

template struct ScanParams<float>;
template struct ScanParams<double>;

}  // namespace moessm
