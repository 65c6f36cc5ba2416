// Shared test helpers: temporary directories, random fills, finite-difference gradient checks
// and relative-error measures. Tests assert real values computed here, never hard-coded results.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"

namespace moessm::testing {

// A fresh empty directory under the build tree (removed at process exit is NOT guaranteed).
std::string temp_dir(const std::string& tag);
std::string source_dir();   // repository root
std::string binary_dir();   // CMake build directory (where the `moessm` program is)
// Runs the moessm CLI with args; returns exit code and captures stdout+stderr into *output.
int run_cli(const std::string& args, std::string* output);
// The same without a shell: each element is one argument, passed through unchanged.
int run_cli_argv(const std::vector<std::string>& args, std::string* output);
// The same with extra environment variables ("NAME=value") added to this process's environment;
// returns the exit code (a process that _exit(137)s returns 137), -1 if it did not exit.
int run_cli_env(const std::vector<std::string>& args, const std::vector<std::string>& env, std::string* output);
// Any program without a shell (argv[0] its path), in a process group of its own, with env
// ("NAME=value") replacing or adding to this process's variables; stdout+stderr into *output.
// After timeout_s seconds the group is killed (SIGKILL) and -2 returned; else the exit code
// (-1 when it ended by a signal or could not start).
int run_argv(const std::vector<std::string>& argv, const std::vector<std::string>& env, double timeout_s,
             std::string* output);

template <typename T>
std::vector<T> random_vector(size_t n, Rng& rng, double lo = -1.0, double hi = 1.0) {
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(rng.uniform(lo, hi));
  return v;
}

// max |a-b| / max(max |b|, tiny)
double max_rel_diff(const double* a, const double* b, size_t n);
double max_rel_diff(const float* a, const float* b, size_t n);

// Central finite differences of a scalar function f of the vector x, in double:
// returns df/dx[i] for every i (x is perturbed in place and restored).
std::vector<double> numeric_gradient(std::vector<double>& x, const std::function<double()>& f,
                                     double eps = 1e-6);

// Checks an analytic gradient against numeric_gradient: max |a-n| <= tol · max(1, max |n|).
// Returns an empty string on success, else a description of the worst element.
std::string compare_gradients(const std::vector<double>& analytic,
                              const std::vector<double>& numeric, double tol,
                              const std::string& what);

}  // namespace moessm::testing
