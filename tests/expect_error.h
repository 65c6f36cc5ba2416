// Assertions on moessm::Error: error_of(f) runs f and returns the message it threw (recording a
// test failure when nothing was thrown); EXPECT_ERROR_HAS(expr, "part", ...) checks that
// evaluating expr throws an Error whose message contains every part (a file name, a field, the
// expected and the found value, ...).
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "core/check.h"

namespace moessm::testing {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected moessm::Error";
  return "";
}

}  // namespace moessm::testing

#define EXPECT_ERROR_HAS(expr, ...)                                                         \
  do {                                                                                      \
    std::string msg_ = ::moessm::testing::error_of([&] { (void)(expr); });                  \
    for (const std::string& part : std::initializer_list<std::string>{__VA_ARGS__})         \
      EXPECT_NE(msg_.find(part), std::string::npos) << "message: " << msg_                  \
                                                    << "\nmissing: " << part;               \
  } while (0)
