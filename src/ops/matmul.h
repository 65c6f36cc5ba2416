// matmul: the linear layer.  out[M, N] = in[M, K] · weight[N, K]ᵀ (+ bias[N]).
// Weights are [out_features, in_features] as in PyTorch checkpoints.
// CPU: through OpenBLAS when built with it (MOESSM_HAVE_BLAS), else a blocked GEMM; both exact
// in the sense of plain fp accumulation. `gemm` is the row-major primitive underneath.
#pragma once
#include "ops/op_common.h"

namespace moessm {
namespace cpu {

// Row-major C[M,N] = alpha · op(A) · op(B) + beta · C with op = transpose when trans_* is set.
// A is [M,K] (or [K,M] when trans_a), B is [K,N] (or [N,K] when trans_b).
template <typename T>
void gemm(bool trans_a, bool trans_b, idx_t M, idx_t N, idx_t K, T alpha, const T* A, idx_t lda,
          const T* Bm, idx_t ldb, T beta, T* C, idx_t ldc);

// The built-in blocked GEMM (same contract as gemm); what gemm uses when built without BLAS.
template <typename T>
void gemm_builtin(bool trans_a, bool trans_b, idx_t M, idx_t N, idx_t K, T alpha, const T* A,
                  idx_t lda, const T* Bm, idx_t ldb, T beta, T* C, idx_t ldc);

// out = in · weightᵀ + bias; accumulate=true adds into out instead of assigning.
template <typename T>
void matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight,
                    const T* bias, idx_t M, idx_t N, idx_t K, bool accumulate = false);

// din = dout · weight (assign, or += when din_accumulate); dweight += doutᵀ · in;
// dbias += Σ_rows dout. Any of din / dweight / dbias may be nullptr.
template <typename T>
void matmul_backward(T* din, idx_t din_ld, T* dweight, T* dbias, const T* dout, idx_t dout_ld,
                     const T* in, idx_t in_ld, const T* weight, idx_t M, idx_t N, idx_t K,
                     bool din_accumulate = false);

const char* matmul_backend_name();  // "openblas" or "builtin"; logged once at start-up

// Inference (many small ops between the prefill's GEMMs): OpenBLAS's own thread pool and
// OpenMP's spin against each other on few cores (bench_infer_cpu on 2 cores: prefill median
// 1.8k tokens/s with 2 BLAS threads, range 1.7k-31.6k; 33.5k with 1). Gives OpenBLAS one thread
// unless OPENBLAS_NUM_THREADS is set; true when it did. Training keeps BLAS's threads.
bool blas_single_threaded_for_inference();

}  // namespace cpu
}  // namespace moessm

#ifdef MOESSM_CUDA
struct __nv_bfloat16;
namespace moessm::cuda {

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C through cuBLASLt with fp32 accumulation and fp32
// scale. Operand / output types: float·float → float (true fp32: no TF32), bf16·bf16 → bf16 or
// float. The algorithm is picked by the cuBLASLt heuristic once per (shape, types, strides,
// pointer alignment) and cached; the workspace is per (device, stream).
template <typename Tab, typename Tc>
void gemm(bool trans_a, bool trans_b, idx_t M, idx_t N, idx_t K, float alpha, const Tab* A,
          idx_t lda, const Tab* Bm, idx_t ldb, float beta, Tc* C, idx_t ldc, cudaStream_t stream);

// The CPU contract with T = float or __nv_bfloat16 activations and weights. Parameter
// gradients (dweight, dbias) are fp32 (master-weight gradients) for both; din is T.
// matmul_set_small_m_gemv(true) makes the forward with M <= 8 rows (decoding) run a GEMV kernel
// that streams the weight once (src/ops/cuda/grouped_gemv.cu: fp32 accumulation, fixed lane
// order, graph-capturable) instead of cuBLASLt. Off by default: bench_model measured batch-1
// decoding of the 24 x 768 model at 1.229 ms/token with it against 1.083 with cuBLASLt (H100,
// 2026-12-02). Kept as a measured variant (bench_model prints both).
template <typename T>
void matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight,
                    const T* bias, idx_t M, idx_t N, idx_t K, bool accumulate, cudaStream_t stream);
void matmul_set_small_m_gemv(bool on);
template <typename T>
void matmul_backward(T* din, idx_t din_ld, float* dweight, float* dbias, const T* dout,
                     idx_t dout_ld, const T* in, idx_t in_ld, const T* weight, idx_t M, idx_t N,
                     idx_t K, bool din_accumulate, cudaStream_t stream);

// Elementwise conversion between fp32 master copies and bf16 operands (n elements).
void convert_f32_to_bf16(__nv_bfloat16* out, const float* in, idx_t n, cudaStream_t stream);
void convert_bf16_to_f32(float* out, const __nv_bfloat16* in, idx_t n, cudaStream_t stream);

const char* matmul_backend_name();  // "cublasLt"

}  // namespace moessm::cuda
#endif
