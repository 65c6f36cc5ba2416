// Shared test helpers (see testing.h).
#include "testing.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace moessm::testing {

std::string source_dir() { return MOESSM_SOURCE_DIR; }
std::string binary_dir() { return MOESSM_BINARY_DIR; }

std::string temp_dir(const std::string& tag) {
  static int counter = 0;
  std::string base = binary_dir() + "/test_tmp";
  ::mkdir(base.c_str(), 0755);
  std::string dir = base + "/" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  if (std::system(cmd.c_str()) != 0) std::abort();
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
