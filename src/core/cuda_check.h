// CUDA and cuBLAS status checks. Every runtime / cuBLAS(Lt) call goes through CUDA_CHECK /
// CUBLAS_CHECK; every kernel launch is followed by CUDA_CHECK_LAUNCH("kernel name"). A failure
// throws moessm::Error (via check_fail) naming the call, the status code and its text, so a
// bad launch configuration or an out-of-memory shows up where it happened, not three ops later.
// Only usable where the CUDA toolkit headers are on the include path (MOESSM_CUDA builds).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/check.h"

namespace moessm {

inline const char* cublas_status_text(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (a size, stride or layout the library rejects)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED (no kernel for these types / layouts)";
    default: return "unknown cuBLAS status";
  }
}

}  // namespace moessm

#define CUDA_CHECK(call)                                                                        \
  do {                                                                                          \
    cudaError_t moessm_cuda_err_ = (call);                                                      \
    if (moessm_cuda_err_ != cudaSuccess)                                                        \
      ::moessm::check_fail(__FILE__, __LINE__, #call,                                           \
                           ::moessm::str_cat("CUDA error ", int(moessm_cuda_err_), " (",        \
                                             cudaGetErrorName(moessm_cuda_err_), ": ",          \
                                             cudaGetErrorString(moessm_cuda_err_), ")"));       \
  } while (0)

// After a kernel launch: reports a bad configuration (grid, block, shared memory) at once.
#define CUDA_CHECK_LAUNCH(what)                                                                 \
  do {                                                                                          \
    cudaError_t moessm_cuda_err_ = cudaGetLastError();                                          \
    if (moessm_cuda_err_ != cudaSuccess)                                                        \
      ::moessm::check_fail(__FILE__, __LINE__, nullptr,                                         \
                           ::moessm::str_cat("launch of ", what, " failed: CUDA error ",        \
                                             int(moessm_cuda_err_), " (",                       \
                                             cudaGetErrorName(moessm_cuda_err_), ": ",          \
                                             cudaGetErrorString(moessm_cuda_err_), ")"));       \
  } while (0)

#define CUBLAS_CHECK(call)                                                                      \
  do {                                                                                          \
    cublasStatus_t moessm_cublas_st_ = (call);                                                  \
    if (moessm_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::moessm::check_fail(__FILE__, __LINE__, #call,                                           \
                           ::moessm::str_cat("cuBLAS error ", int(moessm_cublas_st_), " (",     \
                                             ::moessm::cublas_status_text(moessm_cublas_st_),   \
                                             ")"));                                             \
  } while (0)
