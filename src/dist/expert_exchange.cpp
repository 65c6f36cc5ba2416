// ExpertExchange and the expert-parallel grouped GEMM (see expert_exchange.h). Only the
// Communicator talks to MPI; this file packs and unpacks rows around its all_to_all.
#include "dist/expert_exchange.h"

#include <cstring>

#include "core/check.h"
#include "ops/grouped_matmul.h"

namespace moessm::dist {

Shard experts_of(idx_t E, int group_size, int rank) { return shard_of(size_t(E), group_size, rank); }

ExpertExchange::ExpertExchange(Communicator& group, const int32_t* offsets, idx_t E)
    : g_(group), E_(E), offsets_(offsets, offsets + E + 1) {
  const int G = g_.world_size(), me = g_.rank();
  CHECK(E >= 1 && offsets_[0] == 0, "expert exchange: offsets must start at 0 (E = ", E, ")");
  for (idx_t e = 0; e < E; ++e)
    CHECK(offsets_[e + 1] >= offsets_[e], "expert exchange: offsets decrease at expert ", e);
  owned_.resize(G);
  for (int p = 0; p < G; ++p) owned_[p] = experts_of(E, G, p);
  mine_ = owned_[me];
  const size_t EL = mine_.size();

  // Send rank p the counts of p's experts; receive every source's counts of mine.
  std::vector<int64_t> send(static_cast<size_t>(E)), recv(EL * static_cast<size_t>(G));
  std::vector<size_t> sbytes(G), rbytes(G, EL * sizeof(int64_t));
  for (idx_t e = 0; e < E; ++e) send[size_t(e)] = offsets_[e + 1] - offsets_[e];
  for (int p = 0; p < G; ++p) sbytes[p] = owned_[p].size() * sizeof(int64_t);
  g_.all_to_all(send.data(), sbytes, recv.data(), rbytes);

  from_.assign(G, std::vector<int64_t>(EL));
  start_.assign(G, std::vector<int64_t>(EL));
  local_offsets_.assign(EL + 1, 0);
  int64_t at = 0;
  for (size_t j = 0; j < EL; ++j) {
    local_offsets_[j] = int32_t(at);
    for (int s = 0; s < G; ++s) {
      from_[s][j] = recv[size_t(s) * EL + j];
      start_[s][j] = at;
      at += from_[s][j];
    }
    CHECK(at <= INT32_MAX, "expert exchange: ", at, " rows for the experts of rank ", me, " exceed int32 offsets");
  }
  local_offsets_[EL] = int32_t(at);
}

std::vector<size_t> ExpertExchange::bytes_to_owners(size_t row) const {
  std::vector<size_t> b(owned_.size());
  for (size_t p = 0; p < owned_.size(); ++p) b[p] = size_t(offsets_[owned_[p].hi] - offsets_[owned_[p].lo]) * row;
  return b;
}

std::vector<size_t> ExpertExchange::bytes_of_sources(size_t row) const {
  std::vector<size_t> b(from_.size(), 0);
  for (size_t s = 0; s < from_.size(); ++s)
    for (int64_t n : from_[s]) b[s] += size_t(n) * row;
  return b;
}

template <typename Fn>
void ExpertExchange::for_each_block(Fn fn) const {
  size_t source_major = 0;
  for (size_t s = 0; s < from_.size(); ++s)
    for (size_t j = 0; j < mine_.size(); ++j) {
      const size_t n = size_t(from_[s][j]);
      if (n) fn(n, size_t(start_[s][j]), source_major);
      source_major += n;
    }
}

template <typename T>
void ExpertExchange::dispatch(const T* rows, idx_t ld, idx_t X, T* received) const {
  const size_t row = size_t(X) * sizeof(T);
  // Rank p's experts own one contiguous block of the grouped rows: pack them densely.
  std::vector<T> packed(size_t(sent()) * size_t(X)), by_source(size_t(this->received()) * size_t(X));
  for (idx_t r = 0; r < sent(); ++r) std::memcpy(packed.data() + size_t(r) * size_t(X), rows + r * ld, row);
  g_.all_to_all(packed.data(), bytes_to_owners(row), by_source.data(), bytes_of_sources(row));
  for_each_block([&](size_t n, size_t expert_major, size_t source_major) {
    std::memcpy(received + expert_major * size_t(X), by_source.data() + source_major * size_t(X), n * row);
  });
}

template <typename T>
void ExpertExchange::combine(const T* received, idx_t X, T* rows, idx_t ld, bool accumulate) const {
  const size_t row = size_t(X) * sizeof(T);
  std::vector<T> by_source(size_t(this->received()) * size_t(X)), back(size_t(sent()) * size_t(X));
  for_each_block([&](size_t n, size_t expert_major, size_t source_major) {
    std::memcpy(by_source.data() + source_major * size_t(X), received + expert_major * size_t(X), n * row);
  });
  g_.all_to_all(by_source.data(), bytes_of_sources(row), back.data(), bytes_to_owners(row));
  // Owner p's block lands on p's experts' grouped rows, which follow each other in rank order.
  for (idx_t r = 0; r < sent(); ++r) {
    const T* src = back.data() + size_t(r) * size_t(X);
    T* dst = rows + r * ld;
    if (accumulate) {
      for (idx_t x = 0; x < X; ++x) dst[x] += src[x];
    } else {
      std::memcpy(dst, src, row);
    }
  }
}

template <typename T>
void expert_parallel_grouped_matmul_forward(Communicator& group, T* out, idx_t out_ld, const T* in, idx_t in_ld,
                                            const T* weight, idx_t w_stride, const int32_t* offsets, idx_t E,
                                            idx_t N, idx_t Kd) {
  const ExpertExchange x(group, offsets, E);
  const Shard e = x.experts();
  std::vector<T> xin(size_t(x.received()) * size_t(Kd)), xout(size_t(x.received()) * size_t(N));
  x.dispatch(in, in_ld, Kd, xin.data());
  cpu::grouped_matmul_forward(xout.data(), N, xin.data(), Kd, weight, w_stride,
                              x.local_offsets().data(), idx_t(e.size()), N, Kd);
  x.combine(xout.data(), N, out, out_ld, /*accumulate=*/false);
}

template <typename T>
void expert_parallel_grouped_matmul_backward(Communicator& group, T* din, idx_t din_ld, T* dweight, const T* dout,
                                             idx_t dout_ld, const T* in, idx_t in_ld, const T* weight,
                                             idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N, idx_t Kd,
                                             bool din_accumulate) {
  const ExpertExchange x(group, offsets, E);
  const Shard e = x.experts();
  const size_t R = size_t(x.received());
  std::vector<T> xdout(R * size_t(N)), xin(R * size_t(Kd)), xdin(din ? R * size_t(Kd) : 0);
  x.dispatch(dout, dout_ld, N, xdout.data());
  x.dispatch(in, in_ld, Kd, xin.data());
  cpu::grouped_matmul_backward(din ? xdin.data() : nullptr, Kd, dweight, xdout.data(), N, xin.data(), Kd, weight,
                               w_stride,
                               x.local_offsets().data(), idx_t(e.size()), N, Kd, /*din_accumulate=*/false);
  if (din) x.combine(xdin.data(), Kd, din, din_ld, din_accumulate);
}

#define MOESSM_EP_INSTANTIATE(T)                                                                                     \
  template void ExpertExchange::dispatch<T>(const T*, idx_t, idx_t, T*) const;                                      \
  template void ExpertExchange::combine<T>(const T*, idx_t, T*, idx_t, bool) const;                                 \
  template void expert_parallel_grouped_matmul_forward<T>(Communicator&, T*, idx_t, const T*, idx_t, const T*,      \
                                                          idx_t, const int32_t*, idx_t, idx_t, idx_t);              \
  template void expert_parallel_grouped_matmul_backward<T>(Communicator&, T*, idx_t, T*, const T*, idx_t, const T*, \
                                                           idx_t, const T*, idx_t, const int32_t*, idx_t, idx_t,    \
                                                           idx_t, bool);
MOESSM_EP_INSTANTIATE(float)
MOESSM_EP_INSTANTIATE(double)
#undef MOESSM_EP_INSTANTIATE

}  // namespace moessm::dist
