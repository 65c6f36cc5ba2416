// File helpers (see file_util.h). POSIX only. write_file_atomic writes PATH.tmp.<pid> in the
// target's directory, fsyncs it, renames it over PATH and then fsyncs the directory so the
// rename itself survives a crash; on any failure the temporary file is removed and the old
// PATH is left untouched. Every error names the path and the system's reason (strerror).
#include "io/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <filesystem>
#include <limits>
#include <system_error>

#include "core/check.h"

namespace moessm {

namespace {

std::string dir_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

struct FsHook {
  long long fail_at = 0;  // 0: off
  bool trace = false;
  long long count = 0;
  FsHook() {
    if (const char* f = std::getenv("MOESSM_FAIL_AT_FS_STEP")) fail_at = std::atoll(f);
    if (const char* t = std::getenv("MOESSM_TRACE_FS_STEPS")) trace = t[0] != '\0' && t[0] != '0';
  }
};

FsHook& fs_hook() {
  static FsHook h;
  return h;
}

}  // namespace

void fs_step(const char* op, const std::string& path, void (*before_crash)(void*), void* arg) {
  FsHook& h = fs_hook();
  ++h.count;
  if (h.trace) std::fprintf(stderr, "moessm-fs-step %lld %s %s\n", h.count, op, path.c_str());
  if (h.fail_at > 0 && h.count == h.fail_at) {
    if (before_crash) before_crash(arg);
    std::fprintf(stderr, "moessm: injected crash at fs step %lld (%s %s)\n", h.count, op, path.c_str());
    std::fflush(stderr);
    ::_exit(137);
  }
}

namespace {

// Reads the open file F (named PATH in errors) to its end; more than max_bytes is an error.
std::string read_open_file(FILE* f, const std::string& path, size_t max_bytes) {
  std::string out;
  struct stat st;
  if (::fstat(::fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    try {
      out.reserve(std::min(static_cast<size_t>(st.st_size), max_bytes));
    } catch (const std::bad_alloc&) {
      std::fclose(f);
      FAIL("cannot read '", path, "': its ", st.st_size, " bytes do not fit in memory");
    }
  }
  char buf[1 << 16];
  bool too_big = false;
  for (;;) {
    size_t n = std::fread(buf, 1, sizeof buf, f);
    if (n > max_bytes - out.size()) {  // grew while being read
      too_big = true;
      break;
    }
    try {
      out.append(buf, n);
    } catch (const std::bad_alloc&) {
      std::fclose(f);
      FAIL("cannot read '", path, "': it does not fit in memory (", out.size(), " bytes read)");
    }
    if (n < sizeof buf) break;
  }
  bool bad = std::ferror(f) != 0;
  int err = errno;
  std::fclose(f);
  if (bad) FAIL("cannot read '", path, "': ", std::strerror(err));
  CHECK(!too_big, "'", path, "' is larger than the limit of ", max_bytes, " bytes for this kind of file");
  return out;
}

}  // namespace

std::string read_file(const std::string& path) { return read_regular_file(path, kMaxTensorFileBytes); }

std::string read_regular_file(const std::string& path, size_t max_bytes) {
  // stat before opening: opening a FIFO would block, and a device such as /dev/zero never ends.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) FAIL("cannot open '", path, "' for reading: ", std::strerror(errno));
  CHECK(!S_ISDIR(st.st_mode), "cannot read '", path, "': Is a directory (not a regular file)");
  CHECK(S_ISREG(st.st_mode), "'", path, "' is not a regular file");
  CHECK(static_cast<uint64_t>(st.st_size) <= max_bytes, "'", path, "' is ", st.st_size,
        " bytes, more than the limit of ", max_bytes, " bytes for this kind of file");
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) FAIL("cannot open '", path, "' for reading: ", std::strerror(errno));
  if (::fstat(::fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {  // replaced since the stat
    std::fclose(f);
    FAIL("'", path, "' is not a regular file");
  }
  return read_open_file(f, path, max_bytes);
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& path) {
  CHECK(!path.empty(), "make_dirs: empty path");
  // Create every prefix ending before a '/', then the whole path.
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (is_directory(prefix)) continue;
    fs_step("mkdir", prefix);
    if (::mkdir(prefix.c_str(), 0755) == 0) continue;
    int err = errno;
    if (err == EEXIST) {
      if (!is_directory(prefix))
        FAIL("cannot create directory '", path, "': '", prefix, "' exists and is not a directory");
      continue;
    }
    FAIL("cannot create directory '", path, "' (at '", prefix, "'): ", std::strerror(err));
  }
}

void remove_tree(const std::string& path) {
  CHECK(!path.empty(), "remove_tree: empty path");
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(std::filesystem::path(path), ec))) return;
  fs_step("remove", path);
  std::filesystem::remove_all(std::filesystem::path(path), ec);
  if (ec) FAIL("cannot remove '", path, "': ", ec.message());
}

void prepare_output_file(const std::string& path) {
  CHECK(!path.empty(), "prepare_output_file: empty path");
  CHECK(!is_directory(path), "cannot write '", path, "': it is a directory");
  const std::string dir = dir_of(path);
  if (!is_directory(dir)) make_dirs(dir);
  const std::string probe = path + ".probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) FAIL("cannot write '", path, "': ", std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

void rename_path(const std::string& from, const std::string& to) {
  fs_step("rename", from + " -> " + to);
  if (std::rename(from.c_str(), to.c_str()) != 0)
    FAIL("cannot rename '", from, "' to '", to, "': ", std::strerror(errno));
}

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  CHECK(!path.empty(), "write_file_atomic: empty path");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  fs_step("create", tmp);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) FAIL("cannot write '", path, "': cannot create '", tmp, "': ", std::strerror(errno));
  const auto give_up = [&](const char* step) {
    int err = errno;
    if (f) std::fclose(f);
    ::unlink(tmp.c_str());
    FAIL("cannot write '", path, "': ", step, " failed: ", std::strerror(err));
  };
  fs_step("write", tmp);
  if (n > 0 && std::fwrite(data, 1, n, f) != n) give_up("write");
  if (std::fflush(f) != 0) give_up("flush");
  fs_step("fsync", tmp);
  if (::fsync(::fileno(f)) != 0) give_up("fsync");
  int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) give_up("close");
  fs_step("rename", tmp + " -> " + path);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) give_up("rename");
  sync_dir(dir_of(path));  // makes the rename durable
}

void sync_dir(const std::string& path) {
  fs_step("fsync-dir", path);
  // Best effort: some file systems refuse fsync on directories.
  int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

bool is_symlink(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

void replace_symlink(const std::string& target, const std::string& link) {
  const std::string tmp = link + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // a leftover of an earlier process with this pid
  fs_step("symlink", tmp + " -> " + target);
  if (::symlink(target.c_str(), tmp.c_str()) != 0)
    FAIL("cannot create the link '", tmp, "' to '", target, "': ", std::strerror(errno));
  fs_step("rename", tmp + " -> " + link);
  if (std::rename(tmp.c_str(), link.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    FAIL("cannot rename '", tmp, "' to '", link, "': ", std::strerror(err));
  }
  sync_dir(dir_of(link));
}

namespace {
struct PartialAppend { std::FILE* f; const std::string* text; };
void write_half(void* arg) {
  auto* p = static_cast<PartialAppend*>(arg);
  std::fwrite(p->text->data(), 1, p->text->size() / 2, p->f);
  std::fflush(p->f);
}
}  // namespace

void append_to_file(std::FILE* f, const std::string& path, const std::string& text) {
  PartialAppend half{f, &text};
  fs_step("append", path, write_half, &half);
  if (std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fflush(f) != 0)
    FAIL("cannot append to '", path, "': ", std::strerror(errno));
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(std::filesystem::path(path), ec), end; !ec && it != end; it.increment(ec))
    names.push_back(it->path().filename().string());
  if (ec) FAIL("cannot list directory '", path, "': ", ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

std::string path_join(const std::string& a, const std::string& b) {
  if (a.empty() || (!b.empty() && b[0] == '/')) return b;
  if (b.empty()) return a;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

}  // namespace moessm
