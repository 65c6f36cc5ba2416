// The `moessm` program: dispatches to the registered subcommands (cmd_*.cpp).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "cli/command.h"
#include "core/check.h"
#include "dist/dist.h"
#include "ops/matmul.h"

namespace {
void print_help() {
  std::printf(
      "moessm: train, evaluate and serve state-space language models with Mixture-of-Experts\n\n"
      "usage: moessm <command> [options]      (moessm <command> --help for its options)\n"
      "       moessm --version\n\n"
      "commands:\n");
  for (const auto& c : moessm::cli::command_registry())
    std::printf("  %-12s %s\n", c.name.c_str(), c.summary.c_str());
}
}  // namespace

// Error messages end in an internal "  [file.cpp:line]" tag; it is printed only with --verbose
// (anywhere on the command line) or MOESSM_VERBOSE=1.
int main(int argc, char** argv) {
  bool verbose = std::getenv("MOESSM_VERBOSE") && std::strcmp(std::getenv("MOESSM_VERBOSE"), "0") != 0;
  int n = 0;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && !std::strcmp(argv[i], "--verbose")) {
      verbose = true;
      continue;
    }
    argv[n++] = argv[i];
  }
  argc = n;
  if (argc >= 2 && (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "version"))) {
    std::printf("moessm %s (CUDA backend %s; matmul %s; MPI %s)\n", MOESSM_VERSION,
#ifdef MOESSM_CUDA
                "on",
#else
                "off",
#endif
                moessm::cpu::matmul_backend_name(), moessm::dist::transport_name());
    return 0;
  }
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : moessm::cli::command_registry()) {
    if (c.name != argv[1]) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const moessm::Error& e) {  // in a run of several processes: names the rank, ends them all
      return moessm::dist::report_error(verbose ? e.what() : e.message());
    } catch (const std::exception& e) {
      return moessm::dist::report_error(e.what());
    }
  }
  std::fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
  print_help();
  return 2;
}
