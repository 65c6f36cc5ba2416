// Conventions shared by every op (read once; each op header documents only its specifics).
//
// - Each op has ONE header declaring <op>_forward / <op>_backward. The CPU reference lives in
//   namespace moessm::cpu (templated on the scalar type: float for use, double for
//   finite-difference tests); the CUDA implementation in moessm::cuda has the same name and
//   argument order plus a trailing cudaStream_t.
// - Argument order: outputs, inputs, weights, sizes, (stream).
// - Gradient contract: parameter gradients ACCUMULATE (+=); activation gradients ASSIGN (=),
//   unless an argument says otherwise.
// - Token-major activations [B, T, X] may be strided: `*_ld` is the distance in elements between
//   consecutive tokens (>= X), so slices of a wider buffer (x and z inside in_proj's [B,T,2Di]
//   output; dt_low, B, C inside x_proj's [B,T,R+2N]) are used in place without copies.
// - Optional inputs/outputs are nullptr when absent.
#pragma once
#include <cstdint>

#ifdef MOESSM_CUDA
typedef struct CUstream_st* cudaStream_t;
#endif

namespace moessm {
using idx_t = int64_t;
}
