// Fuzzes the .npy reader (io/npy.h: read_npy on a per-process temporary file). Any bytes must
// give an array or a moessm::Error; an accepted array's element count must equal the product of
// its shape.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "core/tensor.h"
#include "fuzz_util.h"
#include "io/npy.h"

using namespace moessm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::TempInput input("npy", ".npy");
  const std::string& path = input.write(data, size);
  try {
    NpyArray a = read_npy(path);
    fuzz::fuzz_check(a.data.size() == static_cast<size_t>(shape_numel(a.shape)), "numel == data size");
  } catch (const Error&) {
  }
  return 0;
}
