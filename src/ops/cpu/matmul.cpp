// CPU matmul: OpenBLAS when available (MOESSM_HAVE_BLAS), else a cache-blocked GEMM with the
// same row-major contract. Both accumulate in the scalar type.
#include "ops/matmul.h"

#include <algorithm>
#include <vector>

#include "core/check.h"

#ifdef MOESSM_HAVE_BLAS
extern "C" {
// CBLAS prototypes (row-major = 101, no-trans = 111, trans = 112).
void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc);
void cblas_dgemm(int order, int ta, int tb, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc);
void openblas_set_num_threads(int n);
}
#endif
#include <cstdlib>

namespace moessm::cpu {

template <typename T>
void gemm_builtin(bool ta, bool tb, idx_t M, idx_t N, idx_t K, T alpha, const T* A, idx_t lda,
                  const T* Bm, idx_t ldb, T beta, T* C, idx_t ldc) {
  // Pack op(B) as [N][K] rows so the inner loop is a contiguous dot product.
  std::vector<T> bt(static_cast<size_t>(N * K));
  for (idx_t n = 0; n < N; ++n)
    for (idx_t k = 0; k < K; ++k) bt[n * K + k] = tb ? Bm[n * ldb + k] : Bm[k * ldb + n];
#pragma omp parallel
  {
    std::vector<T> arow(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (idx_t m = 0; m < M; ++m) {
      for (idx_t k = 0; k < K; ++k) arow[k] = ta ? A[k * lda + m] : A[m * lda + k];
      for (idx_t n = 0; n < N; ++n) {
        const T* b = &bt[n * K];
        T acc = 0;
        for (idx_t k = 0; k < K; ++k) acc += arow[k] * b[k];
        T* c = &C[m * ldc + n];
        *c = alpha * acc + (beta == T(0) ? T(0) : beta * *c);
      }
    }
  }
}

namespace {

#ifdef MOESSM_HAVE_BLAS
void blas_gemm(bool ta, bool tb, idx_t M, idx_t N, idx_t K, float alpha, const float* A, idx_t lda,
               const float* B, idx_t ldb, float beta, float* C, idx_t ldc) {
  cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
              (int)ldb, beta, C, (int)ldc);
}
void blas_gemm(bool ta, bool tb, idx_t M, idx_t N, idx_t K, double alpha, const double* A,
               idx_t lda, const double* B, idx_t ldb, double beta, double* C, idx_t ldc) {
  cblas_dgemm(101, ta ? 112 : 111, tb ? 112 : 111, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
              (int)ldb, beta, C, (int)ldc);
}
#endif

}  // namespace

bool blas_single_threaded_for_inference() {
#ifdef MOESSM_HAVE_BLAS
  if (std::getenv("OPENBLAS_NUM_THREADS")) return false;  // the user's choice stands
  openblas_set_num_threads(1);
  return true;
#else
  return false;
#endif
}

const char* matmul_backend_name() {
#ifdef MOESSM_HAVE_BLAS
  return "openblas";
#else
  return "builtin";
#endif
}

template <typename T>
void gemm(bool ta, bool tb, idx_t M, idx_t N, idx_t K, T alpha, const T* A, idx_t lda, const T* Bm,
          idx_t ldb, T beta, T* C, idx_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (idx_t m = 0; m < M; ++m)
      for (idx_t n = 0; n < N; ++n) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
    return;
  }
#ifdef MOESSM_HAVE_BLAS
  blas_gemm(ta, tb, M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
#else
  gemm_builtin(ta, tb, M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
#endif
}

// Few rows (decode steps): every weight row is read once and dotted with all M inputs, which
// stay in cache. BLAS would first copy (pack) the whole weight matrix, which for M = 1 costs
// more than the product itself. Four input rows share each load of the weight row (four
// independent accumulator chains), so a batch of 8 costs far less than 8 single rows; the
// M % 4 leftover rows go through matmul_few_rows.
constexpr idx_t kSmallM = 8;

template <typename T>
void matmul_few_rows(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t M, idx_t N, idx_t K,
                     bool accumulate);

template <typename T>
void matmul_small_m(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t M,
                    idx_t N, idx_t K, bool accumulate) {
  auto put = [&](idx_t m, idx_t n, T acc) {
    T* o = &out[m * out_ld + n];
    *o = accumulate ? *o + acc : acc;
  };
#pragma omp parallel for schedule(static) if (N * K > 32768)
  for (idx_t n = 0; n < N; ++n) {
    const T* w = weight + n * K;
    for (idx_t m = 0; m + 4 <= M; m += 4) {
      const T *x0 = in + m * in_ld, *x1 = x0 + in_ld, *x2 = x1 + in_ld, *x3 = x2 + in_ld;
      T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (idx_t k = 0; k < K; ++k) {
        const T wk = w[k];
        a0 += wk * x0[k];
        a1 += wk * x1[k];
        a2 += wk * x2[k];
        a3 += wk * x3[k];
      }
      put(m, n, a0);
      put(m + 1, n, a1);
      put(m + 2, n, a2);
      put(m + 3, n, a3);
    }
  }
  const idx_t done = M - M % 4;
  if (done < M) matmul_few_rows(out + done * out_ld, out_ld, in + done * in_ld, in_ld, weight, M - done, N, K, accumulate);
}

// M < 4 (batch-1..3 decode, and small_m's leftover rows): four weight rows share each load of
// the input row (four independent accumulator chains instead of one per output); the N % 4
// leftover weight rows one at a time.
template <typename T>
void matmul_few_rows(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, idx_t M, idx_t N, idx_t K,
                     bool accumulate) {
  auto put = [&](idx_t m, idx_t n, T acc) {
    T* o = &out[m * out_ld + n];
    *o = accumulate ? *o + acc : acc;
  };
  const idx_t N4 = N / 4;
#pragma omp parallel for schedule(static) if (M * N * K >= kParallelMinWork / 2)
  for (idx_t q = 0; q < N4 + (N % 4); ++q) {
    if (q < N4) {
      const idx_t n = 4 * q;
      const T *w0 = weight + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
      for (idx_t m = 0; m < M; ++m) {
        const T* x = in + m * in_ld;
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (idx_t k = 0; k < K; ++k) {
          const T xk = x[k];
          a0 += w0[k] * xk;
          a1 += w1[k] * xk;
          a2 += w2[k] * xk;
          a3 += w3[k] * xk;
        }
        put(m, n, a0);
        put(m, n + 1, a1);
        put(m, n + 2, a2);
        put(m, n + 3, a3);
      }
    } else {
      const idx_t n = 4 * N4 + (q - N4);
      const T* w = weight + n * K;
      for (idx_t m = 0; m < M; ++m) {
        const T* x = in + m * in_ld;
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (idx_t k = 0; k < K; ++k) acc += w[k] * x[k];
        put(m, n, acc);
      }
    }
  }
}

template <typename T>
void matmul_forward(T* out, idx_t out_ld, const T* in, idx_t in_ld, const T* weight, const T* bias,
                    idx_t M, idx_t N, idx_t K, bool accumulate) {
  if (M < 4)
    matmul_few_rows(out, out_ld, in, in_ld, weight, M, N, K, accumulate);
  else if (M <= kSmallM)
    matmul_small_m(out, out_ld, in, in_ld, weight, M, N, K, accumulate);
  else
    gemm<T>(false, true, M, N, K, T(1), in, in_ld, weight, K, accumulate ? T(1) : T(0), out, out_ld);
  if (bias)
    for (idx_t m = 0; m < M; ++m)
      for (idx_t n = 0; n < N; ++n) out[m * out_ld + n] += bias[n];
}

template <typename T>
void matmul_backward(T* din, idx_t din_ld, T* dweight, T* dbias, const T* dout, idx_t dout_ld,
                     const T* in, idx_t in_ld, const T* weight, idx_t M, idx_t N, idx_t K,
                     bool din_accumulate) {
  if (din) gemm<T>(false, false, M, K, N, T(1), dout, dout_ld, weight, K, din_accumulate ? T(1) : T(0), din, din_ld);
  if (dweight) gemm<T>(true, false, N, K, M, T(1), dout, dout_ld, in, in_ld, T(1), dweight, K);
  if (dbias)
    for (idx_t m = 0; m < M; ++m)
      for (idx_t n = 0; n < N; ++n) dbias[n] += dout[m * dout_ld + n];
}

#define INSTANTIATE(T)                                                                           \
  template void gemm_builtin<T>(bool, bool, idx_t, idx_t, idx_t, T, const T*, idx_t, const T*,   \
                                idx_t, T, T*, idx_t);                                            \
  template void gemm<T>(bool, bool, idx_t, idx_t, idx_t, T, const T*, idx_t, const T*, idx_t, T, \
                        T*, idx_t);                                                              \
  template void matmul_forward<T>(T*, idx_t, const T*, idx_t, const T*, const T*, idx_t, idx_t,  \
                                  idx_t, bool);                                                  \
  template void matmul_backward<T>(T*, idx_t, T*, T*, const T*, idx_t, const T*, idx_t, const T*, \
                                   idx_t, idx_t, idx_t, bool);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace moessm::cpu
