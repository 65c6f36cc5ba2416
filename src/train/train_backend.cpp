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

  ModelTrainBackend(const ModelConfig& cfg, ExpertShard shard) : model_(cfg, 0, shard), full_(model_.table().full()) {
    const size_t n = model_.table().total();
    Bk::alloc(m_, n);
    Bk::alloc(v_, n);
    Bk::alloc(scalar_, 1);
  }
  std::string name() const override { return Bk::describe(model_.ctx()); }
  const ModelConfig& config() const override { return model_.config(); }
  // The checkpoints' layout: every tensor whole, also when this rank stores a shard of the experts.
  const ParamTable& table() const override { return full_; }
  size_t stored_parameters() const override { return model_.table().total(); }
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
    } else if (!model_.table().sharded()) {
      comm.all_reduce_sum(model_.grads.data(), model_.grads.size());
    } else {
      // Expert-sharded storage: the replicated tensors are summed over every rank; each expert
      // slab's gradient (already the whole group's on its owner) over the owner's replicas.
      all_reduce_part(comm, false);
      if (replicas_ && replicas_->world_size() > 1) all_reduce_part(*replicas_, true);
    }
  }
  void shard_optimizer(dist::Communicator& comm) override {
    if (comm.world_size() == 1) return;
    CHECK(!model_.table().sharded(), "--zero1 with --expert-parallel: not yet (the expert slabs are sharded "
          "already; docs/distributed.md)");
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
  void gather_for_download(dist::Communicator& comm) override {
    if (model_.table().sharded()) return gather_expert_shards();
    if (!comm_) return;
    const size_t n = model_.table().total();
    const bool root = comm.is_lead();
    m_full_.assign(root ? n : 0, 0.f);
    v_full_.assign(root ? n : 0, 0.f);
    comm.gather_shards(m_.data(), root ? m_full_.data() : nullptr, n);
    comm.gather_shards(v_.data(), root ? v_full_.data() : nullptr, n);
  }
  void set_expert_parallel(dist::Communicator* group, dist::Communicator* replicas) override {
    CHECK(group == nullptr || group->world_size() == model_.table().shard().size, "train backend: an expert group of ",
          group ? group->world_size() : 0, " ranks for storage sharded over ", model_.table().shard().size);
    model_.set_expert_group(group);
    group_ = group;
    replicas_ = replicas;
  }
  double grad_norm_squared() override {
    if constexpr (!Bk::kOnDevice) {
      if (model_.table().sharded()) {  // replicated tensors once, plus every expert of the group once
        double sums[2] = {0, 0};       // replicated, experts
        model_.table().visit([&](const ParamInfo& p) {
          const Param* g = model_.grads.data() + p.offset;
          double acc = 0;
          for (size_t i = 0; i < p.numel; ++i) acc += double(g[i]) * double(g[i]);
          sums[p.experts ? 1 : 0] += acc;
        });
        CHECK(group_, "train backend: expert-sharded storage without its expert group (set_expert_parallel)");
        group_->all_reduce_sum(sums + 1, 1);
        return sums[0] + sums[1];
      }
    }
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
    if (model_.table().sharded()) {  // the whole tensors gather_for_download assembled (rank 0 of the group)
      CHECK(params_full_.size() == full_.total(), "train backend: the experts are sharded; gather_for_download() "
            "on every rank comes before download()");
      params.swap(params_full_);
      m.swap(m_full_);
      v.swap(v_full_);
      params_full_.clear();
      m_full_.clear();
      v_full_.clear();
      return;
    }
    const size_t n = model_.table().total();
    params.resize(n);
    m.resize(n);
    v.resize(n);
    model_.download_params(params.data());
    if (comm_) {  // sharded: the moments gathered by gather_for_download (rank 0)
      CHECK(m_full_.size() == n && v_full_.size() == n,
            "train backend: ZeRO-1 moments are sharded; gather_for_download() on every rank comes before download()");
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
    const size_t n = full_.total();
    CHECK(params.size() == n && m.size() == n && v.size() == n, "train backend: ", params.size(), " weights, ",
          m.size(), " and ", v.size(), " moments for ", n, " parameters");
    if (model_.table().sharded()) {  // this rank's part of the whole tensors
      const ParamTable& t = model_.table();
      std::vector<float> mine(t.total());
      t.local_from_full(params.data(), mine.data());
      model_.upload_params(mine.data());
      t.local_from_full(m.data(), mine.data());
      Bk::from_host(model_.ctx(), m_.data(), mine.data(), idx_t(mine.size()));
      t.local_from_full(v.data(), mine.data());
      Bk::from_host(model_.ctx(), v_.data(), mine.data(), idx_t(mine.size()));
      return;
    }
    model_.upload_params(params.data());
    const size_t lo = comm_ ? shard_.lo : 0, count = comm_ ? shard_.size() : n;
    Bk::from_host(model_.ctx(), m_.data(), m.data() + lo, idx_t(count));
    Bk::from_host(model_.ctx(), v_.data(), v.data() + lo, idx_t(count));
  }

 private:
  // Expert-sharded storage: packs the gradients of the replicated tensors (experts false) or of
  // the expert slabs (true), sums them over `comm` and puts them back.
  void all_reduce_part(dist::Communicator& comm, bool experts) {
    std::vector<float> part;
    Param* g = model_.grads.data();
    model_.table().visit([&](const ParamInfo& p) {
      if (p.experts == experts) part.insert(part.end(), g + p.offset, g + p.offset + p.numel);
    });
    comm.all_reduce_sum(part.data(), part.size());
    size_t at = 0;
    model_.table().visit([&](const ParamInfo& p) {
      if (p.experts != experts) return;
      std::copy(part.begin() + at, part.begin() + at + p.numel, g + p.offset);
      at += p.numel;
    });
  }
  // Expert-sharded storage, collective over the expert group: its rank 0 assembles the whole
  // weights and moments (every member's part placed by the table that member holds).
  void gather_expert_shards() {
    if constexpr (!Bk::kOnDevice) {
      CHECK(group_, "train backend: expert-sharded storage without its expert group (set_expert_parallel)");
      const ParamTable& t = model_.table();
      const std::vector<float>* local[3] = {&host_of(model_.params), &host_of(m_), &host_of(v_)};
      std::vector<float>* whole[3] = {&params_full_, &m_full_, &v_full_};
      for (int k = 0; k < 3; ++k) {
        std::vector<float> all;
        std::vector<size_t> counts;
        group_->gather_varying(local[k]->data(), local[k]->size(), all, counts);
        whole[k]->clear();
        if (!group_->is_lead()) continue;
        whole[k]->assign(full_.total(), 0.f);
        size_t at = 0;
        for (int r = 0; r < group_->world_size(); ++r) {
          const ParamTable member = t.with_shard({r, t.shard().size});
          CHECK(counts[size_t(r)] == member.total(), "expert shards: rank ", r, " of the group sent ", counts[size_t(r)],
                " values, its table holds ", member.total());
          member.full_from_local(all.data() + at, whole[k]->data());
          at += counts[size_t(r)];
        }
      }
    }
  }
  template <typename U>
  static const std::vector<float>& host_of(const U& buffer) {  // host backends keep std::vector<float>
    return buffer;
  }

  Model<Bk> model_;
  ParamTable full_;  // the whole tensors' layout (== model_.table() unless the experts are sharded)
  dist::Communicator* group_ = nullptr;     // expert parallelism: the expert group,
  dist::Communicator* replicas_ = nullptr;  // and this rank's data-parallel replicas
  typename Bk::template Buffer<Param> m_, v_;
  typename Bk::template Buffer<double> scalar_;
  // ZeRO-1: set by shard_optimizer; m_ and v_ then hold [shard_.lo, shard_.hi) only, and rank 0
  // gathers them whole into m_full_ / v_full_ for the next download (a checkpoint).
  dist::Communicator* comm_ = nullptr;
  dist::Shard shard_;
  mutable std::vector<float> m_full_, v_full_, params_full_;  // whole copies for the next download()
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

std::unique_ptr<TrainBackend> make_train_backend(const std::string& device, const ModelConfig& cfg, ExpertShard shard) {
  CHECK(device == "cpu" || device == "cuda", "--device must be 'cpu' or 'cuda', found '", device, "'");
  if (device == "cpu") return std::make_unique<ModelTrainBackend<CpuBackend<float>>>(cfg, shard);
  CHECK(shard.size == 1, "--device cuda: expert parallelism runs on the CPU only so far (docs/distributed.md)");
#ifdef MOESSM_CUDA
  return std::make_unique<ModelTrainBackend<CudaBackend<__nv_bfloat16>>>(cfg, shard);
#else
  FAIL("--device cuda: this build has no CUDA backend (configure with -DMOESSM_CUDA=ON where nvcc exists)");
#endif
}

}  // namespace moessm
