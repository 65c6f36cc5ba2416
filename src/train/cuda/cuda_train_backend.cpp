// The CUDA TrainBackend (see train/train_backend.h): CudaLanguageModel<bf16> with fp32 master
// weights, fp32 AdamW moments on the device; the fused AdamW refreshes the bf16 weight copy.
// The host model keeps the config and table and receives the weights only for checkpoints.
#include <cuda_bf16.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "model/cuda/cuda_language_model.h"
#include "ops/adamw.h"
#include "train/train_backend.h"

namespace moessm {

namespace {

class CudaTrainBackend : public TrainBackend {
 public:
  explicit CudaTrainBackend(const ModelConfig& cfg) : host_(cfg), dev_(cfg) {
    const size_t n = dev_.num_params();
    m_.resize(n * sizeof(float));
    v_.resize(n * sizeof(float));
    norm_.resize(sizeof(double));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    name_ = std::string("cuda (") + prop.name + ", bf16 activations, fp32 master weights)";
  }
  std::string name() const override { return name_; }
  void prepare(idx_t B, idx_t T) override { dev_.prepare(B, T, true); }
  void zero_grads() override { dev_.zero_grads(); }
  LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T, bool backward) override {
    return dev_.loss(ids, targets, B, T, backward);
  }
  double grad_norm_squared() override {
    cuda::grad_norm_squared(norm_.as<double>(), dev_.grads(), idx_t(dev_.num_params()), dev_.stream());
    double v = 0;
    CUDA_CHECK(cudaMemcpyAsync(&v, norm_.data(), sizeof(double), cudaMemcpyDeviceToHost, dev_.stream()));
    CUDA_CHECK(cudaStreamSynchronize(dev_.stream()));
    return v;
  }
  void adamw_step(const TrainOptions& o, double lr, int64_t step, double grad_scale) override {
    float* P = dev_.params();
    __nv_bfloat16* P16 = dev_.params_bf16();
    const float* G = dev_.grads();
    host_.table().visit([&](const ParamInfo& p) {
      cuda::adamw_update(P + p.offset, P16 + p.offset, m_.as<float>() + p.offset, v_.as<float>() + p.offset,
                         G + p.offset, idx_t(p.numel), lr, o.beta1, o.beta2, o.eps,
                         p.no_decay ? 0.0 : o.weight_decay, step, grad_scale, nullptr, dev_.stream());
    });
  }
  Json stats() const override { return Json(); }  // dense only on CUDA: no routing statistics
  LanguageModel<float>& host_model() override { return host_; }
  void sync_to_host(std::vector<float>& m, std::vector<float>& v) override {
    dev_.download_params(host_.params.data());
    const size_t n = dev_.num_params();
    m.resize(n);
    v.resize(n);
    CUDA_CHECK(cudaMemcpy(m.data(), m_.data(), n * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(v.data(), v_.data(), n * sizeof(float), cudaMemcpyDeviceToHost));
  }
  void load_from_host(const std::vector<float>& m, const std::vector<float>& v) override {
    const size_t n = dev_.num_params();
    CHECK(m.size() == n && v.size() == n, "cuda backend: moments of ", m.size(), " elements for ", n, " parameters");
    dev_.upload_params(host_.params.data());
    CUDA_CHECK(cudaMemcpy(m_.data(), m.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(v_.data(), v.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }

 private:
  LanguageModel<float> host_;
  cuda::CudaLanguageModel<__nv_bfloat16> dev_;
  DeviceBuffer m_, v_, norm_;
  std::string name_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cuda_train_backend(const ModelConfig& cfg) {
  return std::make_unique<CudaTrainBackend>(cfg);
}

}  // namespace moessm
