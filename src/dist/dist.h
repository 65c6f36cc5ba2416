// Communicator: the processes of one data-parallel run (docs/distributed.md). world() is made on
// its first call from the launcher's environment: a process started by mpirun (Open MPI's
// OMPI_COMM_WORLD_SIZE / _RANK, or PMI_SIZE / PMI_RANK of MPICH-style launchers) joins the MPI
// world (MPI_Init_thread, FUNNELED: only the calling thread talks to MPI; MPI_Finalize at exit);
// any other process is world size 1 and never touches MPI. A build without MPI (MOESSM_MPI off)
// offers world size 1 only and refuses a launch of more processes, naming the variable.
//
// World size 1 goes through the same calls: all_reduce_sum, broadcast and barrier are then the
// identity / no-ops, so a single process computes bitwise what it did before this module.
//
// all_reduce_sum is deterministic: element i of the result is
//   x_0[i] + x_1[i] + ... + x_{W-1}[i]   summed in rank order (in double; float results rounded once)
// on every rank, whatever MPI's own reduction algorithm. It is a reduce-scatter (MPI_Alltoallv:
// rank r receives chunk r of every rank's buffer and sums it in rank order) followed by an
// MPI_Allgatherv of the reduced chunks, segment by segment (at most kSegment elements at a time,
// so counts fit MPI's int and the receive buffer stays about one segment). Every rank must call
// the collectives in the same order with the same n.
//
// Errors: an MPI call that fails aborts the whole run naming the rank, the call and MPI's reason.
// report_error (main's error path) prints "error: rank R of W: <message>" and, with W > 1, ends
// every process (MPI_Abort), so a rank that fails never leaves the others waiting.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/shard.h"

namespace moessm::dist {

class Communicator {
 public:
  ~Communicator();  // frees a split()'s MPI communicator (unless MPI has finalised)
  int rank() const { return rank_; }
  int world_size() const { return size_; }
  bool is_lead() const { return rank_ == 0; }  // rank 0: the only one that writes and prints
  bool uses_mpi() const { return mpi_; }

  // In place; every rank ends with the same sums (see the top of the file).
  void all_reduce_sum(float* data, size_t n);
  void all_reduce_sum(double* data, size_t n);
  // ZeRO-1 (docs/distributed.md): a flat buffer of n elements split into W contiguous shards,
  // rank r's shard = shard_of(n, W, r). all_gather_shards: every rank contributes its own shard
  // of `data` (in place) and ends with every shard. gather_shards: every rank sends `mine` (its
  // shard, hi − lo elements) and `root` receives all of them into `full` (n elements; nullptr on
  // the other ranks). World size 1: the identity / a copy.
  void all_gather_shards(float* data, size_t n);
  void gather_shards(const float* mine, float* full, size_t n, int root = 0);
  // Root's bytes to every rank.
  void broadcast(void* data, size_t bytes, int root = 0);
  // Personalised exchange (MPI_Alltoallv over bytes): `send` holds W contiguous blocks in rank
  // order, block p (send_bytes[p] bytes) going to rank p; `recv` receives W blocks in rank order,
  // block p (recv_bytes[p] bytes, which the caller knows) from rank p. A block or a buffer past
  // MPI's int counts is refused, naming the sizes. World size 1: a copy of block 0.
  void all_to_all(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                  const std::vector<size_t>& recv_bytes);
  // The sub-groups of group_size consecutive ranks ([g·G, (g+1)·G) is group g; group_size must
  // divide the world size): this rank's group, its own communicator (MPI_Comm_split), rank r's
  // rank in it r mod G. Collective over this communicator. group_size 1: a world of one.
  std::unique_ptr<Communicator> split(int group_size);
  // The ranks that hold the same position in every such group (r ≡ i mod G: the data-parallel
  // replicas of group rank i), ordered by rank; rank r's rank in it is r / G. Collective.
  std::unique_ptr<Communicator> replicas(int group_size);
  // Every rank sends n (its own count) floats; `root` receives them all, rank after rank, in
  // `all`, with each rank's count in `counts` (both left empty on the other ranks). The total
  // must fit MPI's int counts. World size 1: a copy.
  void gather_varying(const float* mine, size_t n, std::vector<float>& all, std::vector<size_t>& counts,
                      int root = 0);
  void barrier();
  // Prints "error: rank R of W: why" and ends every process of the run (exit status 1).
  [[noreturn]] void abort(const std::string& why);

  static constexpr size_t kSegment = size_t(1) << 26;  // elements per all-reduce segment
  static constexpr size_t kMaxShardedElements = 2147483647;  // MPI's int offsets (ZeRO-1 buffers)

 private:
  friend Communicator& world();
  friend struct CommAccess;  // dist.cpp: the MPI handle
  std::unique_ptr<Communicator> split_by(int color, int key, const char* what);
  Communicator() = default;
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
  int handle_ = -1;  // the MPI communicator as its Fortran handle (MPI_Comm_c2f); -1: MPI_COMM_WORLD
};

// Rank r's share of n elements (core/shard.h; also the chunk each rank reduces in all_reduce_sum).
using Shard = RankSlice;
inline Shard shard_of(size_t n, int world_size, int rank) { return rank_slice(n, world_size, rank); }

// The run's processes (made on the first call; errors in the launcher's environment throw).
Communicator& world();
// Whether world() has been made (main's error path asks before reporting with a rank).
bool world_started();
// "on" when this build has MPI, else "off" (--version).
const char* transport_name();
// main's error path: prints the message ("error: ...", with "rank R of W: " when W > 1) and,
// with W > 1, aborts every process; returns the exit status (1) otherwise.
int report_error(const std::string& message);

// The launcher's environment: world size and rank (1 and 0 when not started by a launcher), and
// the name of the variable that gave the size ("" when none). Malformed values throw, naming the
// variable.
struct Launch {
  int size = 1, rank = 0;
  std::string size_var;
};
Launch launch_from_env();

}  // namespace moessm::dist
