// Every backend this build has, and the explicit instantiation of a layer template for each
// (gemma.cpp's per-target instantiation): a layer's .cpp ends with
// MOESSM_INSTANTIATE_FOR_BACKENDS(Name), so the one definition is compiled for the CPU in f32
// and f64 and, with MOESSM_CUDA, for CUDA in f32 and bf16.
#pragma once
#include "backend/cpu_backend.h"
#ifdef MOESSM_CUDA
#include "backend/cuda_backend.h"
#endif

#define MOESSM_INSTANTIATE_CPU(X) \
  template class X<CpuBackend<float>>; \
  template class X<CpuBackend<double>>;
#ifdef MOESSM_CUDA
#define MOESSM_INSTANTIATE_FOR_BACKENDS(X) \
  MOESSM_INSTANTIATE_CPU(X)               \
  template class X<CudaBackend<float>>;  \
  template class X<CudaBackend<__nv_bfloat16>>;
#else
#define MOESSM_INSTANTIATE_FOR_BACKENDS(X) MOESSM_INSTANTIATE_CPU(X)
#endif
