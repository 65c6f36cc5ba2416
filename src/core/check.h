// CHECK: always-on contract and user-input checks. A failed CHECK throws moessm::Error whose
// message names the source location, the failed condition and the caller's explanation
// (which should name the file / field / tensor, what was expected and what was found).
// Library code throws; the CLI catches at the top, prints the message and exits non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace moessm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
  // The message without the trailing "  [file.cpp:line]" tag (for wrapping in another message).
  std::string message() const {
    const std::string w = what();
    const size_t at = w.rfind("  [");
    return at != std::string::npos && !w.empty() && w.back() == ']' ? w.substr(0, at) : w;
  }
};

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (void)(os << ... << args);
  return os.str();
}

[[noreturn]] void check_fail(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace moessm

#define CHECK(cond, ...)                                                             \
  do {                                                                               \
    if (!(cond)) ::moessm::check_fail(__FILE__, __LINE__, #cond, ::moessm::str_cat(__VA_ARGS__)); \
  } while (0)

// FAIL: unconditional error with the same message shape (user input that is simply wrong).
#define FAIL(...) ::moessm::check_fail(__FILE__, __LINE__, nullptr, ::moessm::str_cat(__VA_ARGS__))
