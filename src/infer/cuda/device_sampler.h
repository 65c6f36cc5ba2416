// Device-side token choice for CUDA decoding (one block per slot, no host sync), the GPU twin of
// infer/sampler.h with the same filters in the same order: temperature → top-k → top-p → draw,
// greedy (argmax, ties → lowest id) when temperature == 0, candidates only in [0, vocab_limit).
//
// The draw is a Gumbel-max over the kept candidates: token = argmax_i (x_i + G_i), G_i =
// -log(-log(u_i)), u_i from a counter-based hash of (seed, slot, position, i). That samples the
// renormalised softmax over the kept set exactly, reproducibly from the seed and independent of
// the other slots. The top-k / top-p thresholds are found by bisection on the logit value (24
// halvings of the value range): ties at the threshold keep every tied token, so top-k may keep
// a few more than k when logits tie exactly. (The CPU sampler draws by inverse CDF with its own
// stream: the two devices give different samples from the same distribution.)
//
// Per step and slot b (the decode loop's bookkeeping, fused so a CUDA graph can replay it):
//   pos[b] < forced_len[b]  → next = forced[b, pos[b]] (ragged prompt tail, teacher forcing)
//   else if done[b]         → next = the last token again (finished slot; outputs ignored)
//   else                    → next = sampled; out[n_out[b], b] = next; ++n_out[b];
//                             done[b] = (next == eot_id) || n_out[b] == max_new
//   tok[b] = next; emitted[b] = 1 if sampled this step; ++pos[b]
#pragma once
#include <cstdint>

#include "infer/sampler.h"
#include "ops/op_common.h"

#ifdef MOESSM_CUDA
namespace moessm::cuda {

struct DecodeSlots {
  int32_t* tok = nullptr;             // [B] next input token (in/out)
  int32_t* pos = nullptr;             // [B] steps taken since the prefill
  const int32_t* forced = nullptr;    // [B, forced_ld]
  const int32_t* forced_len = nullptr;  // [B]
  idx_t forced_ld = 0;
  int32_t* done = nullptr;            // [B] 1 = finished
  int32_t* out = nullptr;             // [max_new, B] sampled tokens
  int32_t* n_out = nullptr;           // [B]
  int32_t* emitted = nullptr;         // [B] sampled this step
  int32_t* eot_hit = nullptr;         // [B] stopped at the end-of-text id
  int64_t max_new = 0;
  int32_t eot_id = -1;
};

// logits [B, V_ld] (T = float or __nv_bfloat16).
template <typename T>
void decode_choose(const DecodeSlots& s, const T* logits, idx_t V_ld, idx_t vocab_limit,
                   const SamplingParams& p, uint64_t seed, idx_t B, cudaStream_t stream);

}  // namespace moessm::cuda
#endif
