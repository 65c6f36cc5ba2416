// TrainBackend: what the trainer needs from a device: the model's forward/backward, the global
// gradient norm, the AdamW step over the parameter table, and host copies of the weights and
// moments for checkpoints. The trainer (train/trainer.cpp) is written once against it; the CPU
// backend wraps LanguageModel<float>, the CUDA backend (train/cuda/) CudaLanguageModel<bf16>.
//
// Contract: host_model() is a LanguageModel<float> holding the config and the table; its weights
// are current after sync_to_host (which also returns the AdamW moments m, v, host vectors in the
// table's layout). load_from_host pushes the host model's weights and the given moments to the
// device (at the start and on --resume). On the CPU backend the host model is the model itself.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/json.h"
#include "model/language_model.h"
#include "train/train_options.h"

namespace moessm {

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  virtual std::string name() const = 0;  // "cpu" or "cuda (<device>, bf16)"
  virtual void prepare(idx_t B, idx_t T) = 0;
  virtual void zero_grads() = 0;
  virtual LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T, bool backward) = 0;
  virtual double grad_norm_squared() = 0;
  // One AdamW step with gradients scaled by grad_scale (accumulation and clipping), per-tensor
  // weight decay from the table (no_decay → 0).
  virtual void adamw_step(const TrainOptions& o, double lr, int64_t step, double grad_scale) = 0;
  virtual Json stats() const = 0;  // per-layer mixer statistics of the last forward (MoE load)
  virtual LanguageModel<float>& host_model() = 0;
  virtual void sync_to_host(std::vector<float>& m, std::vector<float>& v) = 0;
  virtual void load_from_host(const std::vector<float>& m, const std::vector<float>& v) = 0;
};

// device: "cpu" or "cuda" (a clear error when this build has no CUDA backend).
std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, const ModelConfig& cfg);

#ifdef MOESSM_CUDA
std::unique_ptr<TrainBackend> make_cuda_train_backend(const ModelConfig& cfg);  // train/cuda/
#endif

}  // namespace moessm
