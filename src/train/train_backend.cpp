// ModelTrainBackend<Bk>: the one TrainBackend, for every backend (see train_backend.h).
#include "train/train_backend.h"

#include <type_traits>

#include "backend/backends.h"
#include "core/check.h"

namespace moessm {

namespace {

template <typename Bk>
class ModelTrainBackend : public TrainBackend {
 public:
  using Param = typename Bk::Param;
  static_assert(std::is_same_v<Param, float>, "training keeps fp32 master weights and moments");

  explicit ModelTrainBackend(const ModelConfig& cfg) : model_(cfg) {
    const size_t n = model_.table().total();
    Bk::alloc(m_, n);
    Bk::alloc(v_, n);
    Bk::alloc(scalar_, 1);
  }
  std::string name() const override { return Bk::describe(model_.ctx()); }
  const ModelConfig& config() const override { return model_.config(); }
  const ParamTable& table() const override { return model_.table(); }
  MixerCounts counts() const override { return model_.counts(); }
  void init(uint64_t seed) override {
    model_.init(seed);
    Bk::zero(model_.ctx(), m_.data(), idx_t(m_.size()));
    Bk::zero(model_.ctx(), v_.data(), idx_t(v_.size()));
  }
  void prepare(idx_t B, idx_t T) override { model_.prepare(B, T, true); }
  void zero_grads() override { model_.zero_grads(); }
  LossResult loss(const int32_t* ids, const int32_t* targets, idx_t B, idx_t T, bool backward,
                  const int32_t* seq_idx) override {
    return model_.loss(ids, targets, B, T, backward, nullptr, nullptr, seq_idx);
  }
  std::string seq_idx_missing() const override { return model_.seq_idx_missing(); }
  void all_reduce_grads(dist::Communicator& comm) override {
    if constexpr (Bk::kOnDevice) {
      CHECK(comm.world_size() == 1, "train backend ", name(), ": gradients in device memory are not all-reduced "
            "across processes yet (world size ", comm.world_size(), "; docs/distributed.md)");
    } else {
      comm.all_reduce_sum(model_.grads.data(), model_.grads.size());
    }
  }
  double grad_norm_squared() override {
    Bk::grad_norm_squared(model_.ctx(), scalar_.data(), model_.grads.data(), idx_t(model_.grads.size()));
    double v = 0;
    Bk::to_host(model_.ctx(), &v, scalar_.data(), 1);
    return v;
  }
  void adamw_step(const TrainOptions& o, double lr, int64_t step, double grad_scale) override {
    Param* P = model_.params.data();
    typename Bk::Weight* W = model_.gemm_weights_mut();
    const Param* G = model_.grads.data();
    model_.table().visit([&](const ParamInfo& p) {
      Bk::adamw_update(model_.ctx(), P + p.offset, W + p.offset, m_.data() + p.offset, v_.data() + p.offset,
                       G + p.offset, idx_t(p.numel), lr, o.beta1, o.beta2, o.eps, p.no_decay ? 0.0 : o.weight_decay,
                       step, grad_scale);
    });
  }
  Json stats() const override { return model_.stats(); }
  void download(std::vector<float>& params, std::vector<float>& m, std::vector<float>& v) const override {
    const size_t n = model_.table().total();
    params.resize(n);
    m.resize(n);
    v.resize(n);
    model_.download_params(params.data());
    Bk::to_host(model_.ctx(), m.data(), m_.data(), idx_t(n));
    Bk::to_host(model_.ctx(), v.data(), v_.data(), idx_t(n));
  }
  void upload(const std::vector<float>& params, const std::vector<float>& m, const std::vector<float>& v) override {
    const size_t n = model_.table().total();
    CHECK(params.size() == n && m.size() == n && v.size() == n, "train backend: ", params.size(), " weights, ",
          m.size(), " and ", v.size(), " moments for ", n, " parameters");
    model_.upload_params(params.data());
    Bk::from_host(model_.ctx(), m_.data(), m.data(), idx_t(n));
    Bk::from_host(model_.ctx(), v_.data(), v.data(), idx_t(n));
  }

 private:
  Model<Bk> model_;
  typename Bk::template Buffer<Param> m_, v_;
  typename Bk::template Buffer<double> scalar_;
};

template <typename Bk>
std::string layers_seq_idx_missing(const ModelConfig& cfg) {
  ParamTable table;
  return seq_idx_missing(register_model<Bk>(cfg, table).mixers);
}

}  // namespace

std::string train_seq_idx_missing(const std::string& device, const ModelConfig& cfg) {
  CHECK(device == "cpu" || device == "cuda", "--device must be 'cpu' or 'cuda', found '", device, "'");
  if (device == "cpu") return layers_seq_idx_missing<CpuBackend<float>>(cfg);
#ifdef MOESSM_CUDA
  return layers_seq_idx_missing<CudaBackend<__nv_bfloat16>>(cfg);
#else
  return "this build has no CUDA backend";
#endif
}

std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, const ModelConfig& cfg) {
  CHECK(device == "cpu" || device == "cuda", "--device must be 'cpu' or 'cuda', found '", device, "'");
  if (device == "cpu") return std::make_unique<ModelTrainBackend<CpuBackend<float>>>(cfg);
#ifdef MOESSM_CUDA
  return std::make_unique<ModelTrainBackend<CudaBackend<__nv_bfloat16>>>(cfg);
#else
  FAIL("--device cuda: this build has no CUDA backend (configure with -DMOESSM_CUDA=ON where nvcc exists)");
#endif
}

}  // namespace moessm
