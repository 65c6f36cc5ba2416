// Subcommand registry and argument parsing for the `moessm` program.
// Each subcommand lives in its own cmd_<name>.cpp and registers itself with REGISTER_COMMAND;
// main() dispatches, prints `--help`, and turns moessm::Error into a message + exit code 1.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace moessm::cli {

struct Command {
  std::string name, summary;
  std::function<int(int argc, char** argv)> run;  // argv[0] is the subcommand name
};
std::vector<Command>& command_registry();

struct Registrar {
  Registrar(const char* name, const char* summary, int (*fn)(int, char**)) {
    command_registry().push_back({name, summary, fn});
  }
};
#define REGISTER_COMMAND(name, summary, fn) \
  static ::moessm::cli::Registrar registrar_##fn(name, summary, fn)

// Flag parser: "--key value", "--key=value" and boolean "--flag". Every flag must be declared
// (with its help text) before parse(); an unknown flag, a missing value or a missing required
// flag is an error naming it. "--help" prints usage and makes parse() return false.
class Args {
 public:
  Args(std::string program, std::string description);
  Args& flag(const std::string& name, const std::string& help);  // boolean
  Args& option(const std::string& name, const std::string& help, const std::string& def = "",
               bool required = false);
  // An option whose value is a file-system path: refused at parse time unless it is valid UTF-8
  // (paths are written into JSON files, which hold UTF-8 only). Paths never reach a shell.
  Args& path(const std::string& name, const std::string& help, const std::string& def = "",
             bool required = false);
  Args& positional(const std::string& name, const std::string& help);  // required, in order
  bool parse(int argc, char** argv);  // false when --help was printed

  bool has(const std::string& name) const;  // given on the command line (or flag set)
  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool on(const std::string& name) const;
  std::string usage() const;

 private:
  struct Spec { std::string name, help, def; bool is_flag, required, is_path = false; };
  std::string program_, description_;
  std::vector<Spec> specs_;
  std::vector<std::string> positional_names_, positional_help_;
  std::map<std::string, std::string> values_;
  const Spec* spec(const std::string& name) const;
};

}  // namespace moessm::cli
