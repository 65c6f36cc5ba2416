// CudaBackend's context: device selection and the stream (see backend/cuda_backend.h).
#include "backend/cuda_backend.h"

#include <string>

#include "core/check.h"

namespace moessm {

template <typename Act>
typename CudaBackend<Act>::Ctx CudaBackend<Act>::make_ctx(int device) {
  int n_dev = 0;
  const cudaError_t e = cudaGetDeviceCount(&n_dev);
  CHECK(e == cudaSuccess && device < n_dev, "--device cuda: no usable CUDA device ", device, " on this machine (",
        e == cudaSuccess ? std::to_string(n_dev) + " found" : std::string(cudaGetErrorString(e)), ")");
  CUDA_CHECK(cudaSetDevice(device));
  Ctx c;
  CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
  return c;
}

template <typename Act>
void CudaBackend<Act>::destroy_ctx(Ctx& c) {
  if (c.stream) {
    cudaStreamSynchronize(c.stream);
    cudaStreamDestroy(c.stream);
    c.stream = nullptr;
  }
}

template <typename Act>
std::string CudaBackend<Act>::describe(const Ctx&) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return std::string("cuda (") + prop.name + (kActIsF32 ? ", f32)" : ", bf16 activations, fp32 master weights)");
}

template struct CudaBackend<float>;
template struct CudaBackend<__nv_bfloat16>;

}  // namespace moessm
