// Expert parallelism's token exchange (docs/distributed.md, "Expert parallelism"), the stage
// between the local routing (moe_permute, unchanged) and the expert GEMMs.
//
// The G ranks of an expert group (Communicator::split) each route their own tokens and hold the
// chosen slots in moe_permute's grouped order: offsets[E+1], expert 0's rows first. Expert e is
// computed by ONE rank of the group, its owner: rank r owns the contiguous block
// experts_of(E, G, r) = dist::shard_of(E, G, r). An ExpertExchange is built from one rank's
// offsets by one all-to-all of the E counts (collective); then
//   dispatch  sends each rank's rows of expert e to owner(e), laid out EXPERT-MAJOR there: local
//             expert j's rows from source rank 0, then from rank 1, ... (each source's rows in its
//             grouped order). With the global batch split by rows over the ranks in rank order
//             (the trainer's split), an expert sees exactly the rows, in exactly the order, that
//             one process with the whole batch gives it.
//   combine   the way back: the owner's rows [received, X] to every source's grouped rows
//             (=, or += with accumulate).
// Shapes (DESIGN.md's legend): grouped rows [M·K, X] with row stride ld; received rows
// [received(), X] dense. Both are collectives: every rank of the group calls them in the same
// order (the layers do: every rank runs the same model on the same shapes).
//
// expert_parallel_grouped_matmul_forward / _backward: ops/grouped_matmul.h's contract across the
// group (the CPU backend's grouped GEMM when its context names an expert group), except that
// `weight` and `dweight` hold THIS rank's experts only: [hi - lo, N, Kd] with stride w_stride,
// expert lo first (the expert-sharded storage of core/params.h). offsets and E are the routing's
// over all E experts, as without expert parallelism.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/dist.h"
#include "ops/op_common.h"

namespace moessm::dist {

// Rank r's experts [lo, hi) of E in a group of G (shard_of: contiguous, the first E mod G ranks
// one more).
Shard experts_of(idx_t E, int group_size, int rank);

class ExpertExchange {
 public:
  // Collective over `group`: exchanges the per-expert row counts of offsets [E+1] (this rank's
  // grouped rows). Checks that the offsets start at 0 and do not decrease.
  ExpertExchange(Communicator& group, const int32_t* offsets, idx_t E);

  Shard experts() const { return mine_; }
  // [hi - lo + 1] offsets of the local experts over the received rows.
  const std::vector<int32_t>& local_offsets() const { return local_offsets_; }
  idx_t received() const { return local_offsets_.back(); }
  idx_t sent() const { return offsets_.back(); }  // this rank's grouped rows, M·K

  // Collectives (see the top of the file). T = float or double.
  template <typename T>
  void dispatch(const T* rows, idx_t ld, idx_t X, T* received) const;
  template <typename T>
  void combine(const T* received, idx_t X, T* rows, idx_t ld, bool accumulate) const;

 private:
  Communicator& g_;
  idx_t E_;
  Shard mine_;
  std::vector<int32_t> offsets_;        // this rank's [E+1]
  std::vector<Shard> owned_;            // per rank of the group: its experts
  std::vector<std::vector<int64_t>> from_;   // [source][local expert]: rows received
  std::vector<std::vector<int64_t>> start_;  // [source][local expert]: first expert-major row
  std::vector<int32_t> local_offsets_;

  std::vector<size_t> bytes_to_owners(size_t row) const;   // per rank: this rank's rows of its experts
  std::vector<size_t> bytes_of_sources(size_t row) const;  // per rank: its rows of my experts
  // fn(rows, expert-major start, source-major start) for each (source, local expert) block with
  // rows, in source-major order (the order all_to_all delivers).
  template <typename Fn>
  void for_each_block(Fn fn) const;
};

template <typename T>
void expert_parallel_grouped_matmul_forward(Communicator& group, T* out, idx_t out_ld, const T* in, idx_t in_ld,
                                            const T* weight, idx_t w_stride, const int32_t* offsets, idx_t E,
                                            idx_t N, idx_t Kd);
template <typename T>
void expert_parallel_grouped_matmul_backward(Communicator& group, T* din, idx_t din_ld, T* dweight, const T* dout,
                                             idx_t dout_ld, const T* in, idx_t in_ld, const T* weight,
                                             idx_t w_stride, const int32_t* offsets, idx_t E, idx_t N, idx_t Kd,
                                             bool din_accumulate);

}  // namespace moessm::dist
