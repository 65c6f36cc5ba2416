// ModelTrainBackend<Bk>: the one TrainBackend, for every backend (see train_backend.h).
#include "train/train_backend.h"

#include <algorithm>
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
  void shard_optimizer(dist::Communicator& comm) override {
    if (comm.world_size() == 1) return;
    if constexpr (Bk::kOnDevice) {
      FAIL("train backend ", name(), ": ZeRO-1 needs a host backend (device runs take world size 1)");
    } else {
      CHECK(!comm_, "train backend: shard_optimizer called twice");
      const size_t n = model_.table().total();
      CHECK(n <= dist::Communicator::kMaxShardedElements, "--zero1: ", n, " parameters exceed the ",
            dist::Communicator::kMaxShardedElements, " a sharded buffer can address through MPI");
      shard_ = dist::shard_of(n, comm.world_size(), comm.rank());
      for (auto* buf : {&m_, &v_}) {
        typename Bk::template Buffer<Param> mine;
        Bk::alloc(mine, shard_.size());
        std::copy(buf->data() + shard_.lo, buf->data() + shard_.hi, mine.data());
        *buf = std::move(mine);
      }
      comm_ = &comm;
    }
  }
  void gather_optimizer(dist::Communicator& comm) override {
    if (!comm_) return;
    const size_t n = model_.table().total();
    const bool root = comm.is_lead();
    m_full_.assign(root ? n : 0, 0.f);
    v_full_.assign(root ? n : 0, 0.f);
    comm.gather_shards(m_.data(), root ? m_full_.data() : nullptr, n);
    comm.gather_shards(v_.data(), root ? v_full_.data() : nullptr, n);
  }
  void set_expert_group(dist::Communicator* group) override { model_.set_expert_group(group); }
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
    // Each tensor's elements in [lo, hi): all of them, or this rank's ZeRO-1 shard (the moments
    // then hold only [lo, hi)); AdamW is elementwise, so the split changes no result.
    const size_t lo = comm_ ? shard_.lo : 0, hi = comm_ ? shard_.hi : model_.table().total();
    model_.table().visit([&](const ParamInfo& p) {
      const size_t a = std::max(p.offset, lo), b = std::min(p.offset + p.numel, hi);
      if (a >= b) return;
      Bk::adamw_update(model_.ctx(), P + a, W + a, m_.data() + (a - lo), v_.data() + (a - lo), G + a, idx_t(b - a), lr,
                       o.beta1, o.beta2, o.eps, p.no_decay ? 0.0 : o.weight_decay, step, grad_scale);
    });
    if (comm_) {
      comm_->all_gather_shards(P, model_.table().total());
      model_.refresh_weights();
    }
  }
  Json stats() const override { return model_.stats(); }
  void download(std::vector<float>& params, std::vector<float>& m, std::vector<float>& v) const override {
    const size_t n = model_.table().total();
    params.resize(n);
    m.resize(n);
    v.resize(n);
    model_.download_params(params.data());
    if (comm_) {  // sharded: the moments gathered by gather_optimizer (rank 0)
      CHECK(m_full_.size() == n && v_full_.size() == n,
            "train backend: ZeRO-1 moments are sharded; gather_optimizer() on every rank comes before download()");
      m.swap(m_full_);
      v.swap(v_full_);
      m_full_.clear();
      v_full_.clear();
      return;
    }
    Bk::to_host(model_.ctx(), m.data(), m_.data(), idx_t(n));
    Bk::to_host(model_.ctx(), v.data(), v_.data(), idx_t(n));
  }
  void upload(const std::vector<float>& params, const std::vector<float>& m, const std::vector<float>& v) override {
    const size_t n = model_.table().total();
    CHECK(params.size() == n && m.size() == n && v.size() == n, "train backend: ", params.size(), " weights, ",
          m.size(), " and ", v.size(), " moments for ", n, " parameters");
    model_.upload_params(params.data());
    const size_t lo = comm_ ? shard_.lo : 0, count = comm_ ? shard_.size() : n;
    Bk::from_host(model_.ctx(), m_.data(), m.data() + lo, idx_t(count));
    Bk::from_host(model_.ctx(), v_.data(), v.data() + lo, idx_t(count));
  }

 private:
  Model<Bk> model_;
  typename Bk::template Buffer<Param> m_, v_;
  typename Bk::template Buffer<double> scalar_;
  // ZeRO-1: set by shard_optimizer; m_ and v_ then hold [shard_.lo, shard_.hi) only, and rank 0
  // gathers them whole into m_full_ / v_full_ for the next download (a checkpoint).
  dist::Communicator* comm_ = nullptr;
  dist::Shard shard_;
  mutable std::vector<float> m_full_, v_full_;
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
