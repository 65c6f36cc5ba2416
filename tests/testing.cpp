// Shared test helpers (see testing.h).
#include "testing.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

extern char** environ;

namespace moessm::testing {

std::string source_dir() { return MOESSM_SOURCE_DIR; }
std::string binary_dir() { return MOESSM_BINARY_DIR; }

std::string temp_dir(const std::string& tag) {
  static int counter = 0;
  std::string dir = binary_dir() + "/test_tmp/" + tag + "_" + std::to_string(::getpid()) + "_" +
                    std::to_string(counter++);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) std::abort();
  return dir;
}

int run_cli(const std::string& args, std::string* output) {
  std::string cmd = binary_dir() + "/moessm " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  std::string out;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run_cli_argv(const std::vector<std::string>& args, std::string* output) {
  return run_cli_env(args, {}, output);
}

int run_cli_env(const std::vector<std::string>& args, const std::vector<std::string>& env, std::string* output) {
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::vector<std::string> all = {binary_dir() + "/moessm"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  pid_t pid;
  int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return -1;
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run_argv(const std::vector<std::string>& args, const std::vector<std::string>& env, double timeout_s,
             std::string* output) {
  if (args.empty()) return -1;
  std::vector<std::string> vars;  // this process's environment, env's names replaced
  for (char** e = environ; *e; ++e) {
    const std::string v = *e, name = v.substr(0, v.find('='));
    bool replaced = false;
    for (const std::string& x : env) replaced = replaced || x.substr(0, x.find('=')) == name;
    if (!replaced) vars.push_back(v);
  }
  vars.insert(vars.end(), env.begin(), env.end());
  std::vector<char*> envp, argv;
  for (std::string& v : vars) envp.push_back(const_cast<char*>(v.c_str()));
  envp.push_back(nullptr);
  std::vector<std::string> all = args;
  for (std::string& a : all) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {  // the child: its own process group, so a timeout ends everything it started
    ::setpgid(0, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(fds[1]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string out;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, int(std::min(left, 1.0) * 1000) + 1) <= 0) continue;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (output) *output = out;
  if (timed_out) return -2;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

template <typename F>
static double rel_diff(const F* a, const F* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    num = std::max(num, d);
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}
double max_rel_diff(const double* a, const double* b, size_t n) { return rel_diff(a, b, n); }
double max_rel_diff(const float* a, const float* b, size_t n) { return rel_diff(a, b, n); }

std::vector<double> numeric_gradient(std::vector<double>& x, const std::function<double()>& f,
                                     double eps) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double keep = x[i];
    x[i] = keep + eps;
    double fp = f();
    x[i] = keep - eps;
    double fm = f();
    x[i] = keep;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

std::string compare_gradients(const std::vector<double>& analytic,
                              const std::vector<double>& numeric, double tol,
                              const std::string& what) {
  if (analytic.size() != numeric.size()) return what + ": size mismatch";
  double scale = 1.0;
  for (double v : numeric) scale = std::max(scale, std::fabs(v));
  size_t worst = 0;
  double worst_err = -1;
  for (size_t i = 0; i < numeric.size(); ++i) {
    double e = std::fabs(analytic[i] - numeric[i]);
    if (std::isnan(analytic[i])) e = INFINITY;
    if (e > worst_err) { worst_err = e; worst = i; }
  }
  if (worst_err <= tol * scale) return "";
  std::ostringstream os;
  os << what << ": element " << worst << " analytic " << analytic[worst] << " numeric "
     << numeric[worst] << " (|diff| " << worst_err << " > tol " << tol * scale << ")";
  return os.str();
}

}  // namespace moessm::testing
