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
// - Packed documents (seq_idx): the time-mixing ops (causal_conv1d, selective_scan) take an
//   optional per-token document index seq_idx [B,T] (int32, token stride T, row b at b·T; same
//   memory as the activations). Documents are the maximal runs of equal values: token t > 0 with
//   seq_idx[t] != seq_idx[t-1] STARTS a new document (values need not increase; only changes
//   count, so [0,1,0] is three documents). Nothing crosses a document start: the scan state
//   entering it is 0 and the conv reads only inputs of the token's own document. Position 0 is
//   never a start: the carried state (h0, conv state_in) belongs to the row's FIRST document and
//   is seen by its tokens only (a caller whose row begins a new document passes no state). The
//   state written out (h_last, conv state_out) is that of the row's LAST document, so a row split
//   inside a document and run as two segments with the state handed over gives the result of the
//   whole row. nullptr = one document per row: exactly (bit for bit) the behaviour without it.
#pragma once
#include <cstdint>

#ifdef MOESSM_CUDA
typedef struct CUstream_st* cudaStream_t;
#endif

namespace moessm {
using idx_t = int64_t;

// CPU ops open an OpenMP region only for at least this much work (elements times the inner
// length, roughly): below it, waking the other threads costs more than the loop (a batch-1
// decode step runs dozens of tiny ops; with OMP_WAIT_POLICY=passive each wake-up is a futex).
constexpr idx_t kParallelMinWork = idx_t(1) << 15;
// The scan's cost per (channel, state, step) in those units: an exp polynomial and three
// multiply-adds, about 16 (a batch-1 decode step's scan, Di 256 x N 16, is then worth two threads).
constexpr idx_t kScanStateWork = 16;
}
