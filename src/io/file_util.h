// File helpers with errors that name the path. Every file moessm writes for keeps (checkpoints,
// configs, tokenizers, shards, state snapshots) goes through write_file_atomic: the bytes go to a
// temporary file in the same directory, are flushed and fsync'ed, then renamed over the target,
// so a crash leaves either the old file or the new one, never a torn one.
//
// Every file-system mutation made through these helpers (create, write, fsync, rename, remove,
// mkdir, symlink, append) is one numbered "fs step" of the process. A test hook crashes the
// process at a chosen step: with MOESSM_FAIL_AT_FS_STEP=N the N-th step (from 1) calls
// _exit(137) instead of being done (an append writes only the first half of its text first, a
// torn line); with MOESSM_TRACE_FS_STEPS=1 every step is printed to stderr as
// "moessm-fs-step N OP PATH" before it is done.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace moessm {

// Limits on the whole files moessm reads, by kind (checked before reading; the error names the
// file, its size and the limit). Nothing is read unbounded.
constexpr size_t kMaxTextFileBytes = size_t(4) << 30;        // a corpus file for prepare / tokenizer train
constexpr size_t kMaxTokenizerBytes = size_t(256) << 20;     // tokenizer.json
constexpr size_t kMaxIdsFileBytes = size_t(1) << 30;         // token-id text files (logits / grads --ids)
constexpr size_t kMaxTensorFileBytes = size_t(256) << 30;    // safetensors, .npy, token shards
// Whole regular file of at most kMaxTensorFileBytes (the most any kind may hold); prefer
// read_regular_file with the limit of the file's kind.
std::string read_file(const std::string& path);
// Whole file, for inputs that must be bounded (JSON documents): PATH must be a regular file (not
// a FIFO or a device such as /dev/zero) of at most max_bytes, both checked before reading; the
// errors name the path (and the size).
std::string read_regular_file(const std::string& path, size_t max_bytes);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
void make_dirs(const std::string& path);                 // mkdir -p; error names the path
// rm -rf through std::filesystem (never a shell): removes PATH and everything under it; a
// missing PATH is fine; any other failure names the path and the reason.
void remove_tree(const std::string& path);
// Before long work that ends by writing PATH: creates PATH's directory (mkdir -p) and checks that
// a file can be created there, so the failure comes first, naming the path.
void prepare_output_file(const std::string& path);
// Renames FROM to TO (std::rename; replaces an empty directory TO); the error names both.
void rename_path(const std::string& from, const std::string& to);
void write_file_atomic(const std::string& path, const void* data, size_t n);
void write_file_atomic(const std::string& path, const std::string& text);
std::string path_join(const std::string& a, const std::string& b);

// The fs-step hook (see above): counts one step named OP on PATH, traces it, and crashes the
// process here when it is the step MOESSM_FAIL_AT_FS_STEP names (after calling before_crash,
// if given, to leave a partial effect).
void fs_step(const char* op, const std::string& path, void (*before_crash)(void*) = nullptr, void* arg = nullptr);
// fsync of a directory (makes renames, creations and removals in it durable); best effort
// where the file system refuses it.
void sync_dir(const std::string& path);
// Points the symbolic link LINK at TARGET (a relative name is resolved from LINK's directory)
// atomically: a new link LINK.tmp.<pid> is renamed over LINK, then the directory is synced.
void replace_symlink(const std::string& target, const std::string& link);
bool is_symlink(const std::string& path);
// Appends TEXT to the open file F (named PATH in errors) and flushes it (no fsync: a crash may
// lose or tear the last lines, which readers of such logs tolerate).
void append_to_file(std::FILE* f, const std::string& path, const std::string& text);
// The names in directory PATH (no "." / ".."), sorted; an unreadable directory is an error.
std::vector<std::string> list_dir(const std::string& path);

}  // namespace moessm
