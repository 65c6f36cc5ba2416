// TrainBackend: what the trainer needs from a device: the model's forward/backward, the
// gradient all-reduce of data-parallel runs, the global gradient norm, the AdamW step over the
// parameter table, and host copies of the weights and moments for checkpoints. The trainer (train/trainer.cpp) is written once against it, and ONE
// implementation (train_backend.cpp: ModelTrainBackend<Bk>) serves every backend: it owns a
// Model<Bk> and the AdamW moments in backend memory. CUDA training builds no host model: the
// weights reach the host only when a checkpoint is written (download), straight from the
// device's parameter table.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dist/dist.h"
#include "io/json.h"
#include "model/language_model.h"
#include "train/train_options.h"

namespace moessm {

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  virtual std::string name() const = 0;  // "cpu (f32)" or "cuda (<device>, bf16 ...)"
  virtual const ModelConfig& config() const = 0;
  virtual const ParamTable& table() const = 0;  // the whole tensors (checkpoints' layout)
  virtual size_t stored_parameters() const = 0;   // what this rank keeps (less with sharded experts)
  virtual MixerCounts counts() const = 0;
  virtual void init(uint64_t seed) = 0;  // fresh weights, zero moments
  virtual void prepare(idx_t B, idx_t T) = 0;
  virtual void zero_grads() = 0;
  // seq_idx: optional host [B,T] document index of packed rows (Model::loss); nullptr = none.
  virtual LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T, bool backward,
                          const int32_t* seq_idx = nullptr) = 0;
  // "" when this model on this device takes packed documents, else why not (Model::seq_idx_missing).
  virtual std::string seq_idx_missing() const = 0;
  // Sums the flat gradient buffer over the processes of a data-parallel run (in place, one
  // call; dist.h). The identity for world size 1; a device backend takes world size 1 only.
  virtual void all_reduce_grads(dist::Communicator& comm) = 0;
  // ZeRO-1 (TrainOptions::zero1): from now on this rank keeps only its shard (dist::shard_of) of
  // the AdamW moments, updates only its shard of the weights and all-gathers the rest after each
  // step (bitwise the same weights as without). Collective; world size 1: nothing changes. Host
  // backends only (a device backend takes world size 1 and ignores it).
  virtual void shard_optimizer(dist::Communicator& comm) = 0;
  // Collective, before a download() when anything is sharded: gathers ZeRO-1's moments onto
  // rank 0 of `comm`, or expert-sharded weights and moments onto rank 0 of the expert group,
  // whose next download() returns them whole. A no-op when nothing is sharded.
  virtual void gather_for_download(dist::Communicator& comm) = 0;
  // Expert parallelism (TrainOptions::expert_parallel; a backend made with an ExpertShard of the
  // group's size): the grouped expert GEMMs of the routed layers run across `group`
  // (dist/expert_exchange.h), and the expert gradients are summed over `replicas` (the ranks
  // holding the same experts in the other groups). nullptr: locally. Host backends only.
  virtual void set_expert_parallel(dist::Communicator* group, dist::Communicator* replicas) = 0;
  virtual double grad_norm_squared() = 0;
  // One AdamW step with gradients scaled by grad_scale (accumulation and clipping), per-tensor
  // weight decay from the table (no_decay → 0).
  virtual void adamw_step(const TrainOptions& o, double lr, int64_t step, double grad_scale) = 0;
  virtual Json stats() const = 0;  // per-layer mixer statistics of the last forward (MoE load)
  // Host fp32 copies in the table's layout: weights and AdamW moments (checkpoints, resume).
  virtual void download(std::vector<float>& params, std::vector<float>& m, std::vector<float>& v) const = 0;
  virtual void upload(const std::vector<float>& params, const std::vector<float>& m, const std::vector<float>& v) = 0;
};

// device: "cpu" or "cuda" (a clear error when this build has no CUDA backend; a model with a
// layer the device cannot run is refused naming the layer and the missing op).
// shard: expert parallelism's storage split (core/params.h; cpu only): the backend's model keeps
// this rank's experts of every expert slab; table(), download() and upload() still speak of the
// whole tensors.
std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, const ModelConfig& cfg,
                                                 ExpertShard shard = {});
// What make_train_backend(device, cfg)->seq_idx_missing() would say, without building the model
// (no allocation, no device work): "" when packed documents can be trained.
std::string train_seq_idx_missing(const std::string& device, const ModelConfig& cfg);

}  // namespace moessm
