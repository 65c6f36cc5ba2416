// CudaLanguageModel<Act>: the dense Mamba-1 language model (DESIGN.md §1) on one GPU, the twin of
// LanguageModel<float> built from the same CUDA ops (src/ops/cuda) on one stream.
//
// Precision (mamba_ssm's policy): fp32 master weights and gradients in one flat device buffer
// laid out by the same ParamTable as the CPU model (register_model); for Act = __nv_bfloat16 a
// bf16 copy of the whole buffer feeds the GEMMs (refreshed by upload_params and by the fused
// AdamW), and every activation between ops is bf16. A_log, D, the Δ bias, conv and norm
// weights, the residual stream, the scan state and the losses stay fp32. Act = float runs the
// same code in fp32 end to end (the reference path the tests compare with the CPU).
//
// Shapes: M = B·T tokens, token-major [B, T, ·] as on the CPU. The arena is sized by prepare(B,
// T, training) for at most B sequences of at most T tokens; calls may use any T' <= T with the
// same B. Training keeps every layer's activations for backward; inference shares one set.
//
// Recurrent state (decode / chunked prefill) lives on the device, per layer conv [B, Di, Kc-1]
// (Act) and ssm [B, Di, N] (fp32); set_state / get_state exchange it with the host in the CPU
// model's layout (LanguageModel::state_offset), so state files work for both devices.
// use_state reads the carried state, write_state replaces it with the state after the call.
//
// Only dense "mamba" layers run here (the MoE mixers are CPU-only so far): the constructor
// names the first other layer. No allocation happens inside forward, loss or a decode step.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "core/device_arena.h"
#include "core/device_buffer.h"
#include "core/params.h"
#include "model/config.h"
#include "model/language_model.h"
#include "ops/selective_scan.h"

namespace moessm::cuda {

template <typename Act>
class CudaLanguageModel {
 public:
  explicit CudaLanguageModel(const ModelConfig& cfg, int device = 0);
  ~CudaLanguageModel();
  CudaLanguageModel(const CudaLanguageModel&) = delete;
  CudaLanguageModel& operator=(const CudaLanguageModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  idx_t vocab() const { return V_; }  // padded vocabulary
  int n_layers() const { return int(layers_.size()); }
  cudaStream_t stream() const { return stream_; }
  MixerCounts counts() const;

  // Weights (host buffers in the table's layout, fp32).
  void upload_params(const float* host);
  void download_params(float* host) const;
  void download_grads(float* host) const;
  float* params() { return params_.as<float>(); }
  float* grads() { return grads_.as<float>(); }
  __nv_bfloat16* params_bf16() { return params16_.as<__nv_bfloat16>(); }  // null for Act = float
  size_t num_params() const { return table_.total(); }
  void zero_grads();

  void prepare(idx_t B, idx_t T, bool training);

  // State of the planned B slots (host layout of LanguageModel::state_offset; nullptr = zeros).
  void set_state(const float* host);
  void get_state(float* host) const;
  idx_t state_size() const;  // per sequence, as LanguageModel::state_size()

  // Host-facing (CLI, tests). ids [B, T] host; logits [B, T, V] host fp32.
  void forward_logits(float* logits_host, const int32_t* ids_host, idx_t B, idx_t T,
                      bool use_state, bool write_state);
  // Mean cross-entropy over targets >= 0 (+ 0 aux: dense). backward=true ACCUMULATES the
  // gradients (zero_grads first). One host sync (the loss value).
  LossResult loss(const int32_t* ids_host, const int32_t* targets_host, idx_t B, idx_t T,
                  bool backward, bool use_state = false);

  // Device-facing, capturable in a CUDA graph (no host sync, no allocation): runs ids_dev
  // [B, T] and writes the logits of each sequence's LAST position to logits_dev [B, V].
  void forward_last_logits(Act* logits_dev, const int32_t* ids_dev, idx_t B, idx_t T,
                           bool use_state, bool write_state);

 private:
  struct Layer;
  void forward_body(const int32_t* ids_dev, idx_t B, idx_t T, bool use_state, bool write_state);
  void mixer_forward(int l, idx_t B, idx_t T, bool use_state, bool write_state);
  void mixer_backward(int l, const Act* dout, Act* du, idx_t B, idx_t T, bool use_state);
  void backward_body(idx_t B, idx_t T, bool use_state);
  void carve(DeviceArena& a, idx_t B, idx_t T, bool training);
  ScanParamsT<Act> scan_params(int l, idx_t B, idx_t T, bool use_state, bool write_state) const;
  const Act* weight(size_t offset) const;  // GEMM operand view of a parameter
  float* resid(int l) { return training_ ? resid_[l] : resid_[0]; }

  ModelConfig cfg_;
  ParamTable table_;
  std::vector<std::unique_ptr<Mixer<CpuBackend<float>>>> cpu_mixers_;  // layout and accounting only
  std::vector<Layer> layers_;
  size_t emb_ = 0, norm_f_ = 0;
  std::vector<size_t> norm_;
  idx_t D_, V_, Di_, N_, R_, Kc_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer params_, grads_, params16_, state_;
  DeviceArena arena_;
  idx_t max_B_ = 0, max_T_ = 0;
  bool training_ = false;
  std::vector<float*> resid_;  // L+1 (training) or 1
  // shared activations and scratch
  Act *mix_out_ = nullptr, *hf_ = nullptr, *dhf_ = nullptr, *du_ = nullptr, *dres_act_ = nullptr;
  float *rstd_f_ = nullptr, *dres_ = nullptr, *row_loss_ = nullptr, *lse_ = nullptr,
        *dA_ = nullptr, *logits_f32_ = nullptr;
  Act *logits_ = nullptr, *dxz_ = nullptr, *dxc_ = nullptr, *dxdbl_ = nullptr,
      *ddelta_ = nullptr, *dy_ = nullptr;
  int32_t *ids_dev_ = nullptr, *targets_dev_ = nullptr;
  double* loss_sum_dev_ = nullptr;
  idx_t head_rows_ = 0, stage_rows_ = 0;
};

// Rows of the LM head (logits [rows, V]) processed at once in loss().
constexpr idx_t kCudaHeadChunkRows = 4096;

}  // namespace moessm::cuda
