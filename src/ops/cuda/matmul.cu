// CUDA matmul through cuBLASLt (contract in ops/matmul.h). Row-major problems are mapped to
// cuBLASLt's column-major view by computing Cᵀ = op(B)ᵀ·op(A)ᵀ. The heuristic's choice is
// cached per problem key (shape, types, transposes, leading dimensions, pointer alignment);
// each (device, stream) has its own 32 MiB cuBLASLt workspace. Bias add and the bias gradient
// are small kernels; the bias gradient sums rows in a fixed order (deterministic). With
// matmul_set_small_m_gemv(true) the forward with M <= kDenseGemvMaxRows takes the GEMV kernel of
// grouped_gemv.cu (one weight pass) instead; off by default (ops/matmul.h says why).
#include <cublasLt.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>

#include "ops/cuda/common.cuh"
#include "ops/cuda/grouped_gemv.h"
#include "ops/matmul.h"

namespace moessm::cuda {

namespace {

constexpr size_t kLtWorkspace = size_t(32) << 20;
std::atomic<bool> g_small_m_gemv{false};  // measured slower in decoding (ops/matmul.h)

template <typename T> cudaDataType_t cuda_type();
template <> cudaDataType_t cuda_type<float>() { return CUDA_R_32F; }
template <> cudaDataType_t cuda_type<bf16>() { return CUDA_R_16BF; }

int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;                                  // per device
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;                 // per device, stream
  std::map<std::tuple<int, int, int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>,
           cublasLtMatmulAlgo_t> algos;
};
LtState& lt() {
  static LtState* s = new LtState();  // never destroyed: handles outlive static teardown order
  return *s;
}

__global__ void add_bias_kernel_f32(float* out, idx_t ld, const float* bias, idx_t M, idx_t N) {
  for (idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; e < M * N; e += idx_t(gridDim.x) * blockDim.x)
    out[(e / N) * ld + e % N] += bias[e % N];
}
__global__ void add_bias_kernel_bf16(bf16* out, idx_t ld, const bf16* bias, idx_t M, idx_t N) {
  for (idx_t e = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; e < M * N; e += idx_t(gridDim.x) * blockDim.x) {
    bf16* o = out + (e / N) * ld + e % N;
    *o = __float2bfloat16_rn(__bfloat162float(*o) + __bfloat162float(bias[e % N]));
  }
}

// dbias[n] += Σ_m dout[m, n]: a block owns 32 columns; its 8 row-groups sum strided rows, then
// the 8 partials are added in group order.
template <typename T>
__global__ void bias_grad_kernel(float* dbias, const T* dout, idx_t ld, idx_t M, idx_t N) {
  __shared__ float part[8][33];
  const int col = threadIdx.x % 32, grp = threadIdx.x / 32;
  const idx_t n = idx_t(blockIdx.x) * 32 + col;
  float s = 0.f;
  if (n < N)
    for (idx_t m = grp; m < M; m += 8) s += to_f32(dout[m * ld + n]);
  part[grp][col] = s;
  __syncthreads();
  if (grp == 0 && n < N) {
    float t = 0.f;
    for (int q = 0; q < 8; ++q) t += part[q][col];
    dbias[n] += t;
  }
}

__global__ void f32_to_bf16_kernel(bf16* out, const float* in, idx_t n) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < n; i += idx_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}
__global__ void bf16_to_f32_kernel(float* out, const bf16* in, idx_t n) {
  for (idx_t i = blockIdx.x * idx_t(blockDim.x) + threadIdx.x; i < n; i += idx_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

}  // namespace

const char* matmul_backend_name() { return "cublasLt"; }

template <typename Tab, typename Tc>
void gemm(bool trans_a, bool trans_b, idx_t M, idx_t N, idx_t K, float alpha, const Tab* A,
          idx_t lda, const Tab* Bm, idx_t ldb, float beta, Tc* C, idx_t ldc, cudaStream_t stream) {
  CHECK(M >= 0 && N >= 0 && K >= 0, "cuda gemm: negative size M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
  CHECK(ldc >= N, "cuda gemm: ldc=", ldc, " must be >= N=", N);
  CHECK(lda >= (trans_a ? M : K), "cuda gemm: lda=", lda, " too small for ", trans_a ? "Aᵀ" : "A",
        " (M=", M, ", K=", K, ")");
  CHECK(ldb >= (trans_b ? K : N), "cuda gemm: ldb=", ldb, " too small for ", trans_b ? "Bᵀ" : "B",
        " (K=", K, ", N=", N, ")");
  const cudaDataType_t tab = cuda_type<Tab>(), tc = cuda_type<Tc>();
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  LtState& s = lt();
  cublasLtHandle_t handle;
  void* ws;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.handles.find(dev);
    if (it == s.handles.end()) {
      CUBLAS_CHECK(cublasLtCreate(&handle));
      s.handles[dev] = handle;
      std::fprintf(stderr, "[moessm] cuda matmul: cuBLASLt %zu, fp32 accumulation, no TF32\n",
                   size_t(cublasLtGetVersion()));
    } else {
      handle = it->second;
    }
    void*& w = s.workspaces[{dev, stream}];
    if (!w) CUDA_CHECK(cudaMalloc(&w, kLtWorkspace));
    ws = w;
  }
  if (K == 0) {  // C = beta·C: cuBLASLt rejects K = 0
    FAIL("cuda gemm: K=0 is not supported (M=", M, ", N=", N, ")");
  }
  // Column-major view: C'[N,M] = op(B)'[N,K] · op(A)'[K,M].
  cublasLtMatmulDesc_t desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opB = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opA = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opB, sizeof(opB)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opA, sizeof(opA)));
  cublasLtMatrixLayout_t la, lb, lc;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, tab, trans_b ? K : N, trans_b ? N : K, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, tab, trans_a ? M : K, trans_a ? K : M, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, tc, N, M, ldc));

  const int al_a = alignment_of(Bm), al_b = alignment_of(A), al_c = alignment_of(C);
  const auto key = std::make_tuple(dev, int(tab) * 64 + int(tc), int(trans_a) * 2 + int(trans_b),
                                   al_a * 1024 + al_b, al_c, M, N, K, lda, ldb, ldc,
                                   int64_t(beta != 0.f));
  cublasLtMatmulAlgo_t algo;
  bool have = false;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.algos.find(key);
    if (it != s.algos.end()) {
      algo = it->second;
      have = true;
    }
  }
  if (!have) {
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t wsz = kLtWorkspace;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof(wsz)));
    uint32_t a1 = al_a, a2 = al_b, a3 = al_c;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a1, sizeof(a1)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a2, sizeof(a2)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a3, sizeof(a3)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a3, sizeof(a3)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, pref, 1, &res, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    CHECK(found > 0, "cuda gemm: cuBLASLt has no algorithm for M=", M, " N=", N, " K=", K,
          " trans_a=", trans_a, " trans_b=", trans_b, " lda=", lda, " ldb=", ldb, " ldc=", ldc,
          " alignments ", al_b, "/", al_a, "/", al_c, " bytes");
    algo = res.algo;
    std::lock_guard<std::mutex> lock(s.mu);
    s.algos[key] = algo;
  }
  CUBLAS_CHECK(cublasLtMatmul(handle, desc, &alpha, Bm, la, A, lb, &beta, C, lc, C, lc, &algo, ws,
                              kLtWorkspace, stream));
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
}

template <typename T>
void matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight,
                    const T* bias, idx_t M, idx_t N, idx_t K, bool accumulate, cudaStream_t stream) {
  CHECK(in_ld >= K && out_ld >= N, "cuda matmul_forward: in_ld=", in_ld, " (K=", K, "), out_ld=",
        out_ld, " (N=", N, ")");
  if (M > 0 && N > 0 && K > 0 && M <= kDenseGemvMaxRows && g_small_m_gemv.load())
    grouped_gemv_forward<T>(out, out_ld, in, in_ld, weight, 0, nullptr, 1, N, K, M, stream, accumulate);
  else
    gemm<T, T>(false, true, M, N, K, 1.f, in, in_ld, weight, K, accumulate ? 1.f : 0.f, out, out_ld, stream);
  if (bias) {
    if constexpr (std::is_same_v<T, float>)
      add_bias_kernel_f32<<<grid_1d(M * N, 256), 256, 0, stream>>>(out, out_ld, bias, M, N);
    else
      add_bias_kernel_bf16<<<grid_1d(M * N, 256), 256, 0, stream>>>(out, out_ld, bias, M, N);
    CUDA_CHECK_LAUNCH("add_bias_kernel");
  }
}

void matmul_set_small_m_gemv(bool on) { g_small_m_gemv.store(on); }

template <typename T>
void matmul_backward(T* din, idx_t din_ld, float* dweight, float* dbias, const T* dout,
                     idx_t dout_ld, const T* in, idx_t in_ld, const T* weight, idx_t M, idx_t N,
                     idx_t K, bool din_accumulate, cudaStream_t stream) {
  if (din) gemm<T, T>(false, false, M, K, N, 1.f, dout, dout_ld, weight, K, din_accumulate ? 1.f : 0.f, din, din_ld, stream);
  if (dweight) gemm<T, float>(true, false, N, K, M, 1.f, dout, dout_ld, in, in_ld, 1.f, dweight, K, stream);
  if (dbias) {
    bias_grad_kernel<T><<<unsigned((N + 31) / 32), 256, 0, stream>>>(dbias, dout, dout_ld, M, N);
    CUDA_CHECK_LAUNCH("bias_grad_kernel");
  }
}

void convert_f32_to_bf16(bf16* out, const float* in, idx_t n, cudaStream_t stream) {
  f32_to_bf16_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(out, in, n);
  CUDA_CHECK_LAUNCH("f32_to_bf16_kernel");
}
void convert_bf16_to_f32(float* out, const bf16* in, idx_t n, cudaStream_t stream) {
  bf16_to_f32_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(out, in, n);
  CUDA_CHECK_LAUNCH("bf16_to_f32_kernel");
}

template void gemm<float, float>(bool, bool, idx_t, idx_t, idx_t, float, const float*, idx_t, const float*, idx_t, float, float*, idx_t, cudaStream_t);
template void gemm<bf16, bf16>(bool, bool, idx_t, idx_t, idx_t, float, const bf16*, idx_t, const bf16*, idx_t, float, bf16*, idx_t, cudaStream_t);
template void gemm<bf16, float>(bool, bool, idx_t, idx_t, idx_t, float, const bf16*, idx_t, const bf16*, idx_t, float, float*, idx_t, cudaStream_t);
template void matmul_forward<float>(float*, idx_t, const float*, idx_t, const float*, const float*, idx_t, idx_t, idx_t, bool, cudaStream_t);
template void matmul_forward<bf16>(bf16*, idx_t, const bf16*, idx_t, const bf16*, const bf16*, idx_t, idx_t, idx_t, bool, cudaStream_t);
template void matmul_backward<float>(float*, idx_t, float*, float*, const float*, idx_t, const float*, idx_t, const float*, idx_t, idx_t, idx_t, bool, cudaStream_t);
template void matmul_backward<bf16>(bf16*, idx_t, float*, float*, const bf16*, idx_t, const bf16*, idx_t, const bf16*, idx_t, idx_t, idx_t, bool, cudaStream_t);

}  // namespace moessm::cuda
