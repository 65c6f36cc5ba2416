// CudaGenerator: the decode loop of infer/generator.h on one GPU, for B slots of a
// CudaLanguageModel: a batched chunked prefill of the common prompt length, then one CUDA graph
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
#include "model/cuda/cuda_language_model.h"

namespace moessm::cuda {

template <typename Act>
class CudaGenerator {
 public:
  // prefill_chunk: tokens per prefill forward (0 = 2048); the model is prepared for (B, chunk).
  CudaGenerator(CudaLanguageModel<Act>& model, idx_t batch, const GenerateOptions& opts,
                idx_t prefill_chunk = 0);
  ~CudaGenerator();
  using TokenCallback = std::function<void(idx_t slot, int32_t token)>;
  // As Generator::run. The model's carried state is the starting point (zero after prepare, or
  // what CudaLanguageModel::set_state put there); after_prefill runs after the batched prefill.
  // The first step samples from the prefill's logits, so the common prompt length must be >= 1
  // (state snapshots with pending logits run on the CPU so far).
  std::vector<SlotOutput> run(const std::vector<std::vector<int32_t>>& prompts,
                              const TokenCallback& on_token = nullptr,
                              const std::function<void()>& after_prefill = nullptr);
  const GenerateStats& stats() const { return stats_; }

  static constexpr int kDoneCheckEvery = 16;

 private:
  void step_launches();  // choose + model step, on the model's stream
  CudaLanguageModel<Act>& m_;
  idx_t B_, V_, chunk_;
  GenerateOptions opts_;
  GenerateStats stats_;
  DeviceBuffer logits_, ids_, slots_, out_, forced_;
  int32_t* pinned_ = nullptr;  // [2B] tokens + emitted of the last step
  cudaGraphExec_t graph_ = nullptr;
  idx_t forced_ld_ = 0;
};

}  // namespace moessm::cuda
