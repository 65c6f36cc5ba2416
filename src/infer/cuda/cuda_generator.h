// CudaGenerator: the decode loop of infer/generator.h on one GPU, for B slots of a
// Model<CudaBackend<Act>> driven by the one Decoder (ModelDecoder<CudaBackend<Act>>; CUDA-graph
// capture and device sampling are this backend's capabilities): a batched chunked prefill of the common prompt length, then one CUDA graph
// per step that holds every launch of the token: the device sampler (device_sampler.h: forced
// ragged-prompt tokens, sampling, end-of-text and length bookkeeping) followed by the model's
// T = 1 step (embedding → layers with the carried state → norm → head). The graph is captured
// once (after a warm-up step sized every workspace) and replayed; nothing is allocated per token.
//
// Host syncs: with an on_token callback (streaming) one small copy of the step's tokens per
// step; without, one check of the finished flags every kDoneCheckEvery steps. Same semantics as
// Generator::run (slots finish at eot_id, kept, or after max_new_tokens).
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <vector>

#include "core/device_buffer.h"
#include "infer/generator.h"
#include "backend/cuda_backend.h"
#include "infer/decoder.h"
#include "model/language_model.h"

namespace moessm::cuda {

template <typename Act>
class CudaGenerator {
 public:
  // prefill_chunk: tokens per prefill forward (0 = 2048); the model is prepared for (B, chunk).
  CudaGenerator(Model<CudaBackend<Act>>& model, idx_t batch, const GenerateOptions& opts,
                idx_t prefill_chunk = 0);
  ~CudaGenerator();
  using TokenCallback = std::function<void(idx_t slot, int32_t token)>;
  // As Generator::run. state() is the starting point (zero after construction, or what
  // Model::state_from_host put there) and holds the slots' state afterwards; after_prefill runs
  // after the batched prefill (e.g. to save the state after the prompt).
  // The first step samples from the prefill's logits, so the common prompt length must be >= 1
  // (state snapshots with pending logits run on the CPU so far).
  std::vector<SlotOutput> run(const std::vector<std::vector<int32_t>>& prompts,
                              const TokenCallback& on_token = nullptr,
                              const std::function<void()>& after_prefill = nullptr);
  const GenerateStats& stats() const { return stats_; }
  // The carried state of the B slots: a device block of model.state_bytes(B) in the backend layout.
  void* state() { return dec_.state(); }
  void reset_state() { dec_.reset(); }  // zero state, no pending logits
  // A saved state and, optionally, its pending next-token logits [B, V] (host fp32, the state
  // files' layout): a run may then start with no prompt tokens.
  void load(const float* state, const float* logits) { dec_.load(state, logits, 0); }
  void logits_to_host(float* host) const;  // the logits the last prefill or step left

  static constexpr int kDoneCheckEvery = 16;

 private:
  void step_launches();  // choose + model step, on the model's stream
  Model<CudaBackend<Act>>& m_;
  ModelDecoder<CudaBackend<Act>> dec_;
  idx_t B_, V_;
  GenerateOptions opts_;
  GenerateStats stats_;
  DeviceBuffer slots_, out_, forced_;
  int32_t* pinned_ = nullptr;  // [2B] tokens + emitted of the last step
  cudaGraphExec_t graph_ = nullptr;
  idx_t forced_ld_ = 0;
};

}  // namespace moessm::cuda
