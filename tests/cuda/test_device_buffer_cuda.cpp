// GPU tests of core/device_buffer.h's host copies and fills: they are synchronous with the whole
// device, so the backends' non-blocking streams never see a fill or an upload still in flight
// and a copy to the host sees what every stream wrote. (Run two GPU test programs at once, the
// legacy-stream cudaMemset of a DeviceVector once landed after the weights' upload.)
// Large buffers make the old race visible: a 1 GiB fill takes about a quarter of a millisecond,
// so a helper that returned at once would leave work pending when the query below runs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/device_buffer.h"
#include "gpu_testing.h"

namespace moessm {
namespace {

constexpr size_t kBig = size_t(1) << 28;  // floats: 1 GiB

// True when nothing is pending on the legacy default stream (and so on the device's blocking
// streams): cudaStreamQuery returns cudaErrorNotReady while work is in flight.
bool legacy_stream_idle() { return cudaStreamQuery(cudaStreamLegacy) == cudaSuccess; }

TEST(DeviceBufferCuda, ZeroFillHasLandedWhenResizeReturns) {
  REQUIRE_GPU();
  DeviceVector<float> v;
  v.resize(kBig);
  EXPECT_TRUE(legacy_stream_idle()) << "DeviceVector::resize returned with its fill still in flight";
  // A non-blocking stream reads the fill: it must see zeros everywhere it looks.
  cudaStream_t st = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  std::vector<float> tail(1024, -1.f);
  CUDA_CHECK(cudaMemcpyAsync(tail.data(), v.data() + kBig - tail.size(), tail.size() * sizeof(float),
                             cudaMemcpyDeviceToHost, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  CUDA_CHECK(cudaStreamDestroy(st));
  for (float x : tail) ASSERT_EQ(x, 0.f);
}

TEST(DeviceBufferCuda, UploadHasLandedWhenItReturns) {
  REQUIRE_GPU();
  std::vector<float> host(kBig / 4);
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(i % 1021);
  DeviceBuffer b(host.size() * sizeof(float));
  b.upload(host);
  EXPECT_TRUE(legacy_stream_idle()) << "DeviceBuffer::upload returned with its copy still in flight";
  DeviceBuffer c = DeviceBuffer::from_host(host);
  EXPECT_TRUE(legacy_stream_idle()) << "DeviceBuffer::from_host returned with its copy still in flight";
  // Read back through a non-blocking stream, as the backends would.
  cudaStream_t st = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  std::vector<float> tail(4096, -1.f);
  const size_t off = host.size() - tail.size();
  CUDA_CHECK(cudaMemcpyAsync(tail.data(), c.as<float>() + off, tail.size() * sizeof(float), cudaMemcpyDeviceToHost, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  CUDA_CHECK(cudaStreamDestroy(st));
  for (size_t i = 0; i < tail.size(); ++i) ASSERT_EQ(tail[i], host[off + i]) << i;
}

TEST(DeviceBufferCuda, CopyToHostWaitsForWorkOnOtherStreams) {
  REQUIRE_GPU();
  DeviceBuffer b(kBig * sizeof(float));
  b.fill_bytes(0);
  // A fill of 0x3f bytes (each float 0.747...) queued on a non-blocking stream, not synchronised:
  // to_host must wait for it.
  cudaStream_t st = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  CUDA_CHECK(cudaMemsetAsync(b.data(), 0x3f, b.bytes(), st));
  const std::vector<uint32_t> got = b.to_host<uint32_t>();
  CUDA_CHECK(cudaStreamDestroy(st));
  ASSERT_EQ(got.size(), kBig);
  // The copy's first megabytes leave while a fill that was not waited for would still run.
  for (size_t i = 0; i < (size_t(1) << 20); ++i) ASSERT_EQ(got[i], 0x3f3f3f3fu) << i;
  for (size_t i = got.size() - 4096; i < got.size(); ++i) ASSERT_EQ(got[i], 0x3f3f3f3fu) << i;
}

}  // namespace
}  // namespace moessm
