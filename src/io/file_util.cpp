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

}  // namespace

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
  if (std::rename(from.c_str(), to.c_str()) != 0)
    FAIL("cannot rename '", from, "' to '", to, "': ", std::strerror(errno));
}

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  CHECK(!path.empty(), "write_file_atomic: empty path");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) FAIL("cannot write '", path, "': cannot create '", tmp, "': ", std::strerror(errno));
  const auto give_up = [&](const char* step) {
    int err = errno;
    if (f) std::fclose(f);
    ::unlink(tmp.c_str());
    FAIL("cannot write '", path, "': ", step, " failed: ", std::strerror(err));
  };
  if (n > 0 && std::fwrite(data, 1, n, f) != n) give_up("write");
  if (std::fflush(f) != 0) give_up("flush");
  if (::fsync(::fileno(f)) != 0) give_up("fsync");
  int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) give_up("close");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) give_up("rename");
  // Make the rename durable. Best effort: some file systems refuse fsync on directories.
  int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
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
