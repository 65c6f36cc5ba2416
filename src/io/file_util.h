// File helpers with errors that name the path. Every file moessm writes for keeps (checkpoints,
// configs, tokenizers, shards, state snapshots) goes through write_file_atomic: the bytes go to a
// temporary file in the same directory, are flushed and fsync'ed, then renamed over the target,
// so a crash leaves either the old file or the new one, never a torn one.
#pragma once
#include <cstddef>
#include <string>

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

}  // namespace moessm
