// Subcommand registry and the Args flag parser (see command.h).
#include "cli/command.h"

#include <cstdio>
#include <algorithm>
#include <cstdlib>

#include "core/check.h"
#include "data/prepare.h"

namespace moessm::cli {

std::vector<Command>& command_registry() {
  static std::vector<Command> r;
  return r;
}

Args::Args(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

Args& Args::flag(const std::string& name, const std::string& help) {
  specs_.push_back({name, help, "", true, false});
  return *this;
}
Args& Args::option(const std::string& name, const std::string& help, const std::string& def,
                   bool required) {
  specs_.push_back({name, help, def, false, required});
  return *this;
}
Args& Args::path(const std::string& name, const std::string& help, const std::string& def,
                 bool required) {
  specs_.push_back({name, help, def, false, required, true});
  return *this;
}
Args& Args::positional(const std::string& name, const std::string& help) {
  positional_names_.push_back(name);
  positional_help_.push_back(help);
  return *this;
}

const Args::Spec* Args::spec(const std::string& name) const {
  for (const Spec& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

std::string Args::usage() const {
  std::string u = "usage: moessm " + program_;
  for (const auto& p : positional_names_) u += " <" + p + ">";
  u += " [options]\n\n" + description_ + "\n";
  if (!positional_names_.empty()) u += "\narguments:\n";
  for (size_t i = 0; i < positional_names_.size(); ++i)
    u += "  " + positional_names_[i] + std::string(std::max<int>(2, 24 - (int)positional_names_[i].size()), ' ') + positional_help_[i] + "\n";
  u += "\noptions:\n";
  for (const Spec& s : specs_) {
    // The metavar says what the value is: a path, an integer (its default is one) or a value.
    const bool integer = !s.def.empty() && s.def.find_first_not_of("-0123456789") == std::string::npos;
    std::string left = "  --" + s.name + (s.is_flag ? "" : s.is_path ? " PATH" : integer ? " N" : " VALUE");
    std::string right = s.help;
    if (s.required) right += " (required)";
    else if (!s.is_flag && !s.def.empty()) right += " (default: " + s.def + ")";
    u += left + std::string(std::max<int>(2, 28 - (int)left.size()), ' ') + right + "\n";
  }
  u += "  --help                    show this help\n";
  return u;
}

bool Args::parse(int argc, char** argv) {
  size_t npos = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage().c_str(), stdout);
      return false;
    }
    if (a.rfind("--", 0) == 0) {
      std::string key = a.substr(2), value;
      bool has_eq = false;
      size_t eq = key.find('=');
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
        has_eq = true;
      }
      const Spec* s = spec(key);
      CHECK(s != nullptr, "moessm ", program_, ": unknown option --", key, " (see moessm ", program_, " --help)");
      if (s->is_flag) {
        CHECK(!has_eq || value == "true" || value == "false", "moessm ", program_, ": --", key,
              " takes no value (or =true/=false), got '", value, "'");
        values_[key] = has_eq ? value : "true";
      } else {
        if (!has_eq) {
          CHECK(i + 1 < argc, "moessm ", program_, ": option --", key, " needs a value");
          value = argv[++i];
        }
        if (s->is_path) {
          const size_t bad = first_invalid_utf8(value);
          CHECK(bad == std::string::npos, "moessm ", program_, ": --", key, ": the path is not valid UTF-8 (byte ", bad,
                "); moessm records paths in JSON files, which hold UTF-8 only: rename it or use a link with a UTF-8 name");
        }
        values_[key] = value;
      }
    } else {
      CHECK(npos < positional_names_.size(), "moessm ", program_, ": unexpected argument '", a,
            "' (see moessm ", program_, " --help)");
      values_[positional_names_[npos++]] = a;
    }
  }
  CHECK(npos == positional_names_.size(), "moessm ", program_, ": missing argument <",
        positional_names_.size() > npos ? positional_names_[npos] : "", "> (see --help)");
  for (const Spec& s : specs_)
    CHECK(!s.required || values_.count(s.name), "moessm ", program_, ": missing required option --",
          s.name, " (see moessm ", program_, " --help)");
  return true;
}

bool Args::has(const std::string& name) const { return values_.count(name) > 0; }

std::string Args::str(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  const Spec* s = spec(name);
  CHECK(s != nullptr || std::find(positional_names_.begin(), positional_names_.end(), name) != positional_names_.end(),
        "internal: option --", name, " was never declared");
  return s ? s->def : "";
}

int64_t Args::integer(const std::string& name) const {
  std::string v = str(name);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  CHECK(!v.empty() && end && *end == '\0', "moessm ", program_, ": --", name,
        " expects an integer, got '", v, "'");
  return x;
}

double Args::number(const std::string& name) const {
  std::string v = str(name);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  CHECK(!v.empty() && end && *end == '\0', "moessm ", program_, ": --", name,
        " expects a number, got '", v, "'");
  return x;
}

bool Args::on(const std::string& name) const {
  std::string v = str(name);
  return v == "true" || v == "1";
}

}  // namespace moessm::cli
