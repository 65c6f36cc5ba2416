// DeviceBuffer: RAII owner of one plain cudaMalloc allocation (never managed memory).
// Move-only; the destructor frees without throwing (a failed free during unwinding is ignored).
// Typed views: as<T>() and count<T>(). Host copies and DeviceVector's zero fill are synchronous
// with the whole device (set-up and tests): a copy to the host waits for the work of every
// stream, and an upload or fill has landed before it returns. (cudaMemcpy / cudaMemset run on
// the legacy default stream, which the backends' non-blocking streams do not wait for: without
// the device syncs a fill could land after a kernel's writes, or a kernel read an upload before
// its DMA finished. That race zeroed the weights of GPU tests run two at a time.)
// Hot paths use the raw pointer with their own stream.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "core/cuda_check.h"

namespace moessm {

// Waits for every stream of the current device.
inline void device_sync() { CUDA_CHECK(cudaDeviceSynchronize()); }

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { resize(bytes); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      std::swap(ptr_, o.ptr_);
      std::swap(bytes_, o.bytes_);
    }
    return *this;
  }

  // Reallocates (contents lost) when the size changes; 0 releases.
  void resize(size_t bytes) {
    if (bytes == bytes_) return;
    release();
    if (bytes == 0) return;
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    CHECK(e == cudaSuccess, "DeviceBuffer: cudaMalloc of ", bytes, " bytes failed: ",
          cudaGetErrorString(e));
    ptr_ = p;
    bytes_ = bytes;
  }
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  template <typename T> size_t count() const { return bytes_ / sizeof(T); }

  // Synchronous host <-> device copies of whole typed vectors (set-up and tests).
  template <typename T> static DeviceBuffer from_host(const std::vector<T>& v) {
    DeviceBuffer b(v.size() * sizeof(T));
    if (!v.empty()) CUDA_CHECK(cudaMemcpy(b.ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    device_sync();
    return b;
  }
  template <typename T> std::vector<T> to_host() const {
    std::vector<T> v(bytes_ / sizeof(T));
    device_sync();
    if (!v.empty()) CUDA_CHECK(cudaMemcpy(v.data(), ptr_, v.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  // Sets every byte to `byte` (device-synchronous, like the copies).
  void fill_bytes(int byte) {
    device_sync();
    if (bytes_) CUDA_CHECK(cudaMemset(ptr_, byte, bytes_));
    device_sync();
  }
  template <typename T> void upload(const std::vector<T>& v) {
    CHECK(v.size() * sizeof(T) <= bytes_, "DeviceBuffer::upload: ", v.size() * sizeof(T),
          " bytes into a buffer of ", bytes_);
    device_sync();  // no stream still reads the old contents
    if (!v.empty()) CUDA_CHECK(cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    device_sync();
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A typed device array (data(), size()): the device twin of std::vector for flat parameter,
// gradient and state buffers. resize() loses the contents (zero-filled).
template <typename U>
class DeviceVector {
 public:
  void resize(size_t n) {
    buf_.resize(n * sizeof(U));
    n_ = n;
    if (n) CUDA_CHECK(cudaMemset(buf_.data(), 0, n * sizeof(U)));
    device_sync();  // the fill lands before any stream's later work (see the file comment)
  }
  U* data() { return buf_.as<U>(); }
  const U* data() const { return buf_.as<U>(); }
  size_t size() const { return n_; }

 private:
  DeviceBuffer buf_;
  size_t n_ = 0;
};

}  // namespace moessm
