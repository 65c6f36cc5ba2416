// Device sampler kernel (see device_sampler.h).
#include <cfloat>

#include "infer/cuda/device_sampler.h"
#include "ops/cuda/common.cuh"

namespace moessm::cuda {

namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// u in (0, 1), 24 random bits
__device__ __forceinline__ float uniform01(uint64_t seed, int64_t slot, int64_t pos, int64_t i) {
  const uint64_t h = mix64(seed ^ mix64(uint64_t(slot) * 0xD1B54A32D192ED03ull ^ mix64(uint64_t(pos) * 0x8CB92BA72F3D8DD7ull ^ uint64_t(i))));
  return (float(h >> 40) + 0.5f) * (1.f / 16777216.f);
}

// Block-wide reductions (kThreads threads), results broadcast to all threads.
__device__ float block_max(float v, float* sh) {
  v = warp_max(v);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float r = -FLT_MAX;
  for (int i = 0; i < kThreads / 32; ++i) r = fmaxf(r, sh[i]);
  return r;
}
__device__ float block_sum(float v, float* sh) {
  v = group_sum<32>(v);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float r = 0.f;
  for (int i = 0; i < kThreads / 32; ++i) r += sh[i];  // fixed order
  return r;
}
// argmax with ties to the lowest index
__device__ void block_argmax(float& v, int& idx, float* shv, int* shi) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
  }
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) { shv[w] = v; shi[w] = idx; }
  __syncthreads();
  v = shv[0];
  idx = shi[0];
  for (int i = 1; i < kThreads / 32; ++i)
    if (shv[i] > v || (shv[i] == v && shi[i] < idx)) { v = shv[i]; idx = shi[i]; }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) choose_kernel(DecodeSlots s, const T* logits, idx_t V_ld, int n,
                                                          float inv_temp, int top_k, float top_p, bool greedy,
                                                          uint64_t seed) {
  __shared__ float shf[kThreads / 32];
  __shared__ int shi[kThreads / 32];
  const int b = blockIdx.x;
  const int pos = s.pos[b];
  int next;
  bool sampled = false;
  if (pos < s.forced_len[b]) {
    next = s.forced[b * s.forced_ld + pos];
  } else if (s.done[b]) {
    next = s.tok[b];
  } else {
    const T* row = logits + b * V_ld;
    float best = -FLT_MAX;
    int besti = n;
    if (greedy) {
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const float x = to_f32(row[i]);
        if (x > best) { best = x; besti = i; }  // strided ascending: first max kept per thread
      }
      block_argmax(best, besti, shf, shi);
    } else {
      // x_i = logit_i / temperature; the kept set is {x_i >= lo}
      float mx = -FLT_MAX, mn = FLT_MAX;
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const float x = to_f32(row[i]) * inv_temp;
        mx = fmaxf(mx, x);
        mn = fminf(mn, x);
      }
      mx = block_max(mx, shf);
      mn = -block_max(-mn, shf);
      float lo = mn;
      if (top_k > 0 && top_k < n) {  // largest lo with count(x >= lo) >= k
        float a = mn, c = mx;
        for (int it = 0; it < 24; ++it) {
          const float mid = 0.5f * (a + c);
          float cnt = 0.f;
          for (int i = threadIdx.x; i < n; i += kThreads) cnt += to_f32(row[i]) * inv_temp >= mid ? 1.f : 0.f;
          if (block_sum(cnt, shf) >= float(top_k)) a = mid; else c = mid;
        }
        lo = a;
      }
      if (top_p < 1.f) {  // largest t >= lo whose upper set holds top_p of the kept mass
        float z = 0.f;
        for (int i = threadIdx.x; i < n; i += kThreads) {
          const float x = to_f32(row[i]) * inv_temp;
          z += x >= lo ? __expf(x - mx) : 0.f;
        }
        const float target = top_p * block_sum(z, shf);
        float a = lo, c = mx;
        for (int it = 0; it < 24; ++it) {
          const float mid = 0.5f * (a + c);
          float m = 0.f;
          for (int i = threadIdx.x; i < n; i += kThreads) {
            const float x = to_f32(row[i]) * inv_temp;
            m += x >= mid ? __expf(x - mx) : 0.f;
          }
          if (block_sum(m, shf) >= target) a = mid; else c = mid;
        }
        lo = a;
      }
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const float x = to_f32(row[i]) * inv_temp;
        if (x < lo) continue;
        const float g = x - __logf(-__logf(uniform01(seed, b, pos, i)));
        if (g > best) { best = g; besti = i; }
      }
      block_argmax(best, besti, shf, shi);
    }
    next = besti < n ? besti : 0;
    sampled = true;
  }
  if (threadIdx.x == 0) {
    if (sampled) {
      const int k = s.n_out[b];
      s.out[idx_t(k) * gridDim.x + b] = next;
      s.n_out[b] = k + 1;
      const bool eot = next == s.eot_id;
      if (eot) s.eot_hit[b] = 1;
      if (eot || k + 1 >= s.max_new) s.done[b] = 1;
    }
    s.emitted[b] = sampled ? 1 : 0;
    s.tok[b] = next;
    s.pos[b] = pos + 1;
  }
}

}  // namespace

template <typename T>
void decode_choose(const DecodeSlots& s, const T* logits, idx_t V_ld, idx_t vocab_limit,
                   const SamplingParams& p, uint64_t seed, idx_t B, cudaStream_t stream) {
  CHECK(vocab_limit >= 1 && vocab_limit <= V_ld, "decode_choose: vocab_limit ", vocab_limit, " outside [1, ", V_ld, "]");
  const bool greedy = p.temperature == 0;
  choose_kernel<T><<<unsigned(B), kThreads, 0, stream>>>(s, logits, V_ld, int(vocab_limit),
                                                         greedy ? 1.f : float(1.0 / p.temperature),
                                                         int(p.top_k), float(p.top_p), greedy, seed);
  CUDA_CHECK_LAUNCH("decode choose_kernel");
}

template void decode_choose<float>(const DecodeSlots&, const float*, idx_t, idx_t, const SamplingParams&, uint64_t, idx_t, cudaStream_t);
template void decode_choose<bf16>(const DecodeSlots&, const bf16*, idx_t, idx_t, const SamplingParams&, uint64_t, idx_t, cudaStream_t);

}  // namespace moessm::cuda
