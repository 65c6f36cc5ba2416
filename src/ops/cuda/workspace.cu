// Per-(device, stream) scratch workspace (see common.cuh). Grows with cudaMallocAsync /
// cudaFreeAsync on the requesting stream so a smaller earlier user of the old block is ordered
// before its release. Buffers live for the process.
#include <map>
#include <mutex>
#include <utility>

#include "ops/cuda/common.cuh"

namespace moessm::cuda {

namespace {
struct Slot {
  void* ptr = nullptr;
  size_t bytes = 0;
};
std::mutex g_mu;
std::map<std::pair<int, cudaStream_t>, Slot> g_slots;
}  // namespace

void* workspace(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) bytes = 256;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(g_mu);
  Slot& s = g_slots[{dev, stream}];
  if (s.bytes < bytes) {
    if (s.ptr) CUDA_CHECK(cudaFreeAsync(s.ptr, stream));
    const size_t want = bytes + bytes / 4;  // headroom so slowly growing requests settle
    cudaError_t e = cudaMallocAsync(&s.ptr, want, stream);
    CHECK(e == cudaSuccess, "cuda workspace: cudaMallocAsync of ", want, " bytes failed: ",
          cudaGetErrorString(e));
    s.bytes = want;
  }
  return s.ptr;
}

}  // namespace moessm::cuda
