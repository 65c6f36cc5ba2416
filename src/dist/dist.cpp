// Communicator over MPI, or world size 1 without it (see dist.h). Only this file includes mpi.h;
// CMake compiles it with MOESSM_MPI=1 when MPI is found and the option is on.
#include "dist/dist.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/check.h"

#ifdef MOESSM_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only: no deprecated C++ bindings
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace moessm::dist {

#ifdef MOESSM_MPI
struct CommAccess {
  static MPI_Comm get(const Communicator& c) { return c.handle_ < 0 ? MPI_COMM_WORLD : MPI_Comm_f2c(c.handle_); }
  static void set(Communicator& c, MPI_Comm m, int rank, int size) {
    c.handle_ = int(MPI_Comm_c2f(m));
    c.rank_ = rank;
    c.size_ = size;
    c.mpi_ = true;
  }
  static Communicator* make() { return new Communicator(); }
};
#else
struct CommAccess {
  static Communicator* make() { return new Communicator(); }
};
#endif


namespace {

std::unique_ptr<Communicator> g_world;

// A non-negative integer environment variable, or -1 when unset.
long env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return -1;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  CHECK(*v != '\0' && end && *end == '\0' && errno != ERANGE && x >= 0 && x <= INT_MAX, "environment variable ", name,
        ": expected a non-negative integer (set by the MPI launcher), found '", v, "'");
  return x;
}

#ifdef MOESSM_MPI
void finalize_at_exit() {
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

// Aborts the run when an MPI call did not succeed, naming the rank, the call and MPI's reason.
void check_mpi(int rc, const char* call, Communicator& c) {
  if (rc == MPI_SUCCESS) return;
  char reason[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, reason, &len);
  c.abort(std::string(call) + " failed: " + reason);
}

template <typename T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

// MPI's int counts and displacements of the W shards (shard_of) of n elements; an offset past
// INT_MAX is refused, naming the sizes.
void shard_counts(size_t n, const Communicator& c, std::vector<int>& counts, std::vector<int>& displs) {
  const int W = c.world_size();
  counts.resize(W);
  displs.resize(W);
  for (int p = 0; p < W; ++p) {
    const Shard s = shard_of(n, W, p);
    CHECK(s.hi <= Communicator::kMaxShardedElements, "a buffer of ", n, " elements over ", W,
          " ranks needs offsets past MPI's int range (at most ", Communicator::kMaxShardedElements, " elements)");
    counts[p] = int(s.size());
    displs[p] = int(s.lo);
  }
}

// One segment (n <= kSegment) of the deterministic all-reduce (dist.h): reduce-scatter through
// MPI_Alltoallv with the rank-order sum, then MPI_Allgatherv of the reduced chunks.
template <typename T>
void all_reduce_segment(T* data, size_t n, Communicator& c) {
  const int W = c.world_size(), r = c.rank();
  std::vector<int> counts, displs;  // rank p reduces its shard of the segment
  shard_counts(n, c, counts, displs);
  const int mine = counts[r];
  std::vector<T> recv(size_t(mine) * size_t(W));
  std::vector<int> rcounts(W, mine), rdispls(W);
  for (int p = 0; p < W; ++p) rdispls[p] = p * mine;
  check_mpi(MPI_Alltoallv(data, counts.data(), displs.data(), mpi_type<T>(), recv.data(), rcounts.data(),
                          rdispls.data(), mpi_type<T>(), CommAccess::get(c)),
            "MPI_Alltoallv (all_reduce_sum)", c);
  T* out = data + displs[r];
  for (int i = 0; i < mine; ++i) {
    double acc = double(recv[size_t(i)]);
    for (int p = 1; p < W; ++p) acc += double(recv[size_t(p) * size_t(mine) + size_t(i)]);
    out[i] = T(acc);
  }
  check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, mpi_type<T>(), data, counts.data(), displs.data(), mpi_type<T>(),
                           CommAccess::get(c)),
            "MPI_Allgatherv (all_reduce_sum)", c);
}
#endif

template <typename T>
void all_reduce_impl(T* data, size_t n, Communicator& c) {
  if (c.world_size() == 1) return;  // the identity: one process sums nothing
#ifdef MOESSM_MPI
  for (size_t at = 0; at < n; at += Communicator::kSegment)
    all_reduce_segment(data + at, std::min(Communicator::kSegment, n - at), c);
#else
  (void)data;
  (void)n;
#endif
}

}  // namespace

Launch launch_from_env() {
  Launch l;
  const char* size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
  const char* rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK"};
  for (int i = 0; i < 2; ++i) {
    const long size = env_int(size_vars[i]);
    if (size < 0) continue;
    const long rank = env_int(rank_vars[i]);
    CHECK(size >= 1, "environment variable ", size_vars[i], ": expected a world size >= 1, found ", size);
    CHECK(rank >= 0 && rank < size, "environment variable ", rank_vars[i], ": expected a rank in [0, ", size,
          ") (", size_vars[i], " is ", size, "), found ", rank < 0 ? std::string("(unset)") : std::to_string(rank));
    l.size = int(size);
    l.rank = int(rank);
    l.size_var = size_vars[i];
    return l;
  }
  return l;
}

Communicator& world() {
  if (g_world) return *g_world;
  const Launch l = launch_from_env();
  std::unique_ptr<Communicator> c(new Communicator());
#ifdef MOESSM_MPI
  if (!l.size_var.empty()) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      FAIL("MPI_Init_thread failed (", l.size_var, "=", l.size, ": started by an MPI launcher)");
    std::atexit(finalize_at_exit);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    c->mpi_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size_);
    CHECK(c->size_ == l.size && c->rank_ == l.rank, "MPI reports rank ", c->rank_, " of ", c->size_, " but ",
          l.size_var, " says rank ", l.rank, " of ", l.size, " (a launcher of another MPI?)");
  }
#else
  CHECK(l.size == 1, l.size_var, "=", l.size, ": started as one of ", l.size,
        " processes, but this moessm was built without MPI (install libopenmpi-dev, which scripts/setup.sh does, "
        "and configure with -DMOESSM_MPI=ON)");
#endif
  g_world = std::move(c);
  return *g_world;
}

bool world_started() { return g_world != nullptr; }

const char* transport_name() {
#ifdef MOESSM_MPI
  return "on";
#else
  return "off";
#endif
}

void Communicator::all_reduce_sum(float* data, size_t n) { all_reduce_impl(data, n, *this); }
void Communicator::all_reduce_sum(double* data, size_t n) { all_reduce_impl(data, n, *this); }

void Communicator::all_gather_shards(float* data, size_t n) {
  if (size_ == 1) return;
#ifdef MOESSM_MPI
  std::vector<int> counts, displs;
  shard_counts(n, *this, counts, displs);
  check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, data, counts.data(), displs.data(), MPI_FLOAT,
                           CommAccess::get(*this)),
            "MPI_Allgatherv (all_gather_shards)", *this);
#else
  (void)data;
  (void)n;
#endif
}

void Communicator::gather_shards(const float* mine, float* full, size_t n, int root) {
  CHECK(root >= 0 && root < size_, "gather_shards: root ", root, " is not a rank of a world of ", size_);
  if (size_ == 1) {
    std::copy(mine, mine + n, full);
    return;
  }
#ifdef MOESSM_MPI
  std::vector<int> counts, displs;
  shard_counts(n, *this, counts, displs);
  check_mpi(MPI_Gatherv(mine, counts[rank_], MPI_FLOAT, full, counts.data(), displs.data(), MPI_FLOAT, root,
                        CommAccess::get(*this)),
            "MPI_Gatherv (gather_shards)", *this);
#endif
}

void Communicator::broadcast(void* data, size_t bytes, int root) {
  CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of a world of ", size_);
  if (size_ == 1) return;
#ifdef MOESSM_MPI
  constexpr size_t kPiece = size_t(1) << 30;  // MPI counts are int
  char* p = static_cast<char*>(data);
  for (size_t at = 0; at < bytes; at += kPiece)
    check_mpi(MPI_Bcast(p + at, int(std::min(kPiece, bytes - at)), MPI_BYTE, root, CommAccess::get(*this)), "MPI_Bcast",
              *this);
#else
  (void)data;
  (void)bytes;
#endif
}

void Communicator::barrier() {
  if (size_ == 1) return;
#ifdef MOESSM_MPI
  check_mpi(MPI_Barrier(CommAccess::get(*this)), "MPI_Barrier", *this);
#endif
}

void Communicator::all_to_all(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                              const std::vector<size_t>& recv_bytes) {
  CHECK(send_bytes.size() == size_t(size_) && recv_bytes.size() == size_t(size_), "all_to_all: ",
        send_bytes.size(), " send and ", recv_bytes.size(), " receive blocks for a world of ", size_);
  if (size_ == 1) {
    CHECK(send_bytes[0] == recv_bytes[0], "all_to_all: sends ", send_bytes[0], " bytes to itself but expects ",
          recv_bytes[0]);
    if (send_bytes[0] > 0 && send != recv) std::memcpy(recv, send, send_bytes[0]);
    return;
  }
#ifdef MOESSM_MPI
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  size_t s_at = 0, r_at = 0;
  for (int p = 0; p < size_; ++p) {
    CHECK(s_at + send_bytes[p] <= size_t(INT_MAX) && r_at + recv_bytes[p] <= size_t(INT_MAX), "all_to_all: ",
          s_at + send_bytes[p], " bytes to send or ", r_at + recv_bytes[p],
          " to receive exceed MPI's int counts (at most ", INT_MAX, " bytes a call)");
    sc[p] = int(send_bytes[p]);
    sd[p] = int(s_at);
    rc[p] = int(recv_bytes[p]);
    rd[p] = int(r_at);
    s_at += send_bytes[p];
    r_at += recv_bytes[p];
  }
  check_mpi(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE,
                          CommAccess::get(*this)),
            "MPI_Alltoallv (all_to_all)", *this);
#endif
}

std::unique_ptr<Communicator> Communicator::split(int group_size) {
  CHECK(group_size >= 1 && size_ % group_size == 0, "a group of ", group_size, " ranks does not divide the ",
        size_, " ranks of the run");
  if (group_size == 1) return std::unique_ptr<Communicator>(CommAccess::make());  // a world of one: no MPI
  return split_by(rank_ / group_size, rank_ % group_size, "MPI_Comm_split (groups)");
}

std::unique_ptr<Communicator> Communicator::replicas(int group_size) {
  CHECK(group_size >= 1 && size_ % group_size == 0, "a group of ", group_size, " ranks does not divide the ",
        size_, " ranks of the run");
  if (group_size == size_) return std::unique_ptr<Communicator>(CommAccess::make());  // one group: no replicas
  return split_by(rank_ % group_size, rank_ / group_size, "MPI_Comm_split (replicas)");
}

std::unique_ptr<Communicator> Communicator::split_by(int color, int key, const char* what) {
  std::unique_ptr<Communicator> g(CommAccess::make());
#ifdef MOESSM_MPI
  MPI_Comm sub = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(CommAccess::get(*this), color, key, &sub), what, *this);
  MPI_Comm_set_errhandler(sub, MPI_ERRORS_RETURN);
  int r = 0, n = 0;
  MPI_Comm_rank(sub, &r);
  MPI_Comm_size(sub, &n);
  CommAccess::set(*g, sub, r, n);
#else
  (void)color;
  (void)key;
  (void)what;
#endif
  return g;
}

void Communicator::gather_varying(const float* mine, size_t n, std::vector<float>& all, std::vector<size_t>& counts,
                                  int root) {
  CHECK(root >= 0 && root < size_, "gather_varying: root ", root, " is not a rank of a world of ", size_);
  all.clear();
  counts.clear();
  if (size_ == 1) {
    all.assign(mine, mine + n);
    counts.assign(1, n);
    return;
  }
#ifdef MOESSM_MPI
  CHECK(n <= size_t(INT_MAX), "gather_varying: ", n, " floats exceed MPI's int counts");
  const int mine_n = int(n);
  std::vector<int> cn(rank_ == root ? size_ : 0), displs(rank_ == root ? size_ : 0);
  check_mpi(MPI_Gather(&mine_n, 1, MPI_INT, cn.data(), 1, MPI_INT, root, CommAccess::get(*this)),
            "MPI_Gather (gather_varying counts)", *this);
  if (rank_ == root) {
    size_t total = 0;
    for (int p = 0; p < size_; ++p) {
      CHECK(total + size_t(cn[p]) <= size_t(INT_MAX), "gather_varying: ", total + size_t(cn[p]),
            " floats in all exceed MPI's int counts");
      displs[p] = int(total);
      total += size_t(cn[p]);
      counts.push_back(size_t(cn[p]));
    }
    all.resize(total);
  }
  check_mpi(MPI_Gatherv(mine, mine_n, MPI_FLOAT, all.data(), cn.data(), displs.data(), MPI_FLOAT, root,
                        CommAccess::get(*this)),
            "MPI_Gatherv (gather_varying)", *this);
#endif
}

Communicator::~Communicator() {
#ifdef MOESSM_MPI
  if (mpi_ && handle_ >= 0) {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) {
      MPI_Comm m = MPI_Comm_f2c(handle_);
      MPI_Comm_free(&m);
    }
  }
#endif
}

void Communicator::abort(const std::string& why) {
  std::fflush(stdout);
  const Communicator& w = g_world ? *g_world : *this;  // name the rank in the whole run
  std::fprintf(stderr, "error: rank %d of %d: %s\n", w.rank_, w.size_, why.c_str());
  std::fflush(stderr);
#ifdef MOESSM_MPI
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

int report_error(const std::string& message) {
  if (world_started() && g_world->world_size() > 1) g_world->abort(message);
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

}  // namespace moessm::dist
