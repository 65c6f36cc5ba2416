// Fuzzes the safetensors reader (io/safetensors.h: SafetensorsFile::from_bytes, the same code
// SafetensorsFile::open runs after reading the file): any byte string must give a validated file
// or a moessm::Error. On an accepted file every floating tensor is read with read_into (float
// and double), and the file is written back with SafetensorsWriter and re-read: the same names,
// dtypes, shapes, bytes and metadata must come back.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "fuzz_util.h"
#include "io/safetensors.h"

using namespace moessm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    SafetensorsFile f = SafetensorsFile::from_bytes(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
    SafetensorsWriter w;
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    for (const SafetensorsEntry& e : f.entries()) {
      const size_t n = static_cast<size_t>(shape_numel(e.shape));
      fuzz::fuzz_check(n * dtype_size(e.dtype) == e.end - e.begin, "byte count == numel * size");
      if (e.dtype == DType::F32 || e.dtype == DType::F64 || e.dtype == DType::F16 ||
          e.dtype == DType::BF16) {
        std::vector<float> out_f(n);
        std::vector<double> out_d(n);
        f.read_into<float>(e.name, e.shape, out_f.data());
        f.read_into<double>(e.name, e.shape, out_d.data());
      }
      w.add(e.name, e.dtype, e.shape, n ? f.data(e) : nullptr);
    }
    SafetensorsFile g = SafetensorsFile::from_bytes(w.serialize(), "fuzz-rewritten.safetensors");
    fuzz::fuzz_check(g.entries().size() == f.entries().size(), "rewrite keeps every tensor");
    fuzz::fuzz_check(g.metadata() == f.metadata(), "rewrite keeps the metadata");
    for (const SafetensorsEntry& e : f.entries()) {
      const SafetensorsEntry* r = g.find(e.name);
      fuzz::fuzz_check(r && r->dtype == e.dtype && r->shape == e.shape, "rewrite keeps dtype/shape");
      fuzz::fuzz_check(r->end - r->begin == e.end - e.begin, "rewrite keeps the byte count");
      if (e.end > e.begin)
        fuzz::fuzz_check(std::memcmp(g.data(*r), f.data(e), e.end - e.begin) == 0,
                         "rewrite keeps the bytes");
    }
  } catch (const Error&) {
  }
  return 0;
}
