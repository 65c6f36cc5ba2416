// The CPU TrainBackend and the device dispatch (see train_backend.h).
#include "train/train_backend.h"

#include "core/check.h"
#include "ops/adamw.h"

namespace moessm {

namespace {

class CpuTrainBackend : public TrainBackend {
 public:
  explicit CpuTrainBackend(const ModelConfig& cfg) : model_(cfg) {
    m_.assign(model_.params.size(), 0.f);
    v_.assign(model_.params.size(), 0.f);
  }
  std::string name() const override { return "cpu"; }
  void prepare(idx_t B, idx_t T) override { model_.prepare(B, T, true); }
  void zero_grads() override { model_.zero_grads(); }
  LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T, bool backward) override {
    return model_.loss(ids, targets, B, T, backward);
  }
  double grad_norm_squared() override {
    return cpu::grad_norm_squared(model_.grads.data(), idx_t(model_.grads.size()));
  }
  void adamw_step(const TrainOptions& o, double lr, int64_t step, double grad_scale) override {
    model_.table().visit([&](const ParamInfo& p) {
      cpu::adamw_update(model_.params.data() + p.offset, m_.data() + p.offset, v_.data() + p.offset,
                        model_.grads.data() + p.offset, idx_t(p.numel), lr, o.beta1, o.beta2, o.eps,
                        p.no_decay ? 0.0 : o.weight_decay, step, grad_scale);
    });
  }
  Json stats() const override { return model_.stats(); }
  LanguageModel<float>& host_model() override { return model_; }
  void sync_to_host(std::vector<float>& m, std::vector<float>& v) override {
    m = m_;
    v = v_;
  }
  void load_from_host(const std::vector<float>& m, const std::vector<float>& v) override {
    m_ = m;
    v_ = v;
  }

 private:
  LanguageModel<float> model_;
  std::vector<float> m_, v_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, const ModelConfig& cfg) {
  if (device == "cpu") return std::make_unique<CpuTrainBackend>(cfg);
  if (device == "cuda") {
#ifdef MOESSM_CUDA
    return make_cuda_train_backend(cfg);
#else
    FAIL("--device cuda: this build has no CUDA backend (configure with -DMOESSM_CUDA=ON where nvcc exists)");
#endif
  }
  FAIL("--device must be 'cpu' or 'cuda', found '", device, "'");
}

}  // namespace moessm
