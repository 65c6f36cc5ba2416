// Helpers shared by the libFuzzer harnesses in fuzz/: a per-process temporary input file (for
// parsers that take a path) and fuzz_check(), which aborts (a finding) when a property the
// harness asserts does not hold. A harness catches moessm::Error (a clean, named error is the
// expected answer to a malformed input) and nothing else: any other exception, crash, leak or
// undefined behaviour is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace moessm::fuzz {

// A file under the system temp directory named after the harness and the process id, rewritten
// with each input and removed when the process exits normally.
class TempInput {
 public:
  explicit TempInput(const std::string& name, const std::string& ext)
      : path_((std::filesystem::temp_directory_path() /
               ("moessm_fuzz_" + name + "_" + std::to_string(::getpid()) + ext))
                  .string()) {}
  ~TempInput() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  // Writes the bytes and returns the path.
  const std::string& write(const uint8_t* data, size_t size) {
    std::ofstream f(path_, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    f.close();
    if (!f) {
      std::fprintf(stderr, "fuzz harness: cannot write %s\n", path_.c_str());
      std::abort();
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A property the harness checks on accepted inputs (round trips and the like).
inline void fuzz_check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace moessm::fuzz
