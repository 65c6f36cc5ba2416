// Token shards: the binary file `moessm prepare` writes (train.bin, val.bin) and training reads.
// Layout (all integers little-endian, independent of the host; full spec in docs/data.md):
//
//   offset size  field
//        0    8  magic            "MOESSMTK"
//        8    4  version          u32, kShardVersion (1)
//       12    4  id_bytes         u32, 2 when vocab_size <= 65535 (ids are u16), else 4 (u32)
//       16    4  vocab_size       u32, >= 1; every id is < vocab_size
//       20    4  tokenizer_desc_len  u32, <= kShardDescBytes
//       24    8  num_tokens       u64
//       32    8  tokenizer_hash   u64, FNV-1a of the tokenizer.json bytes (of "byte" for the byte
//                                 tokenizer); lets a reader check it has the right tokenizer
//       40  128  tokenizer_desc   UTF-8 description (e.g. "bpe gpt2/tokenizer.json"), zero padded
//      168   88  reserved         zero in version 1
//      256    -  ids              num_tokens × id_bytes
//
// The file size must be exactly 256 + num_tokens·id_bytes. The writer goes through
// write_file_atomic; the reader rejects anything else with an error naming the file, the field,
// what was expected and what was found.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moessm {

constexpr char kShardMagic[8] = {'M', 'O', 'E', 'S', 'S', 'M', 'T', 'K'};
constexpr uint32_t kShardVersion = 1;
constexpr size_t kShardHeaderBytes = 256;
constexpr size_t kShardDescBytes = 128;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t id_bytes = 2;
  uint32_t vocab_size = 0;
  uint64_t num_tokens = 0;
  uint64_t tokenizer_hash = 0;
  std::string tokenizer_desc;
};

struct Shard {
  std::string path;  // where it was read from ("" when built in memory)
  ShardHeader header;
  std::vector<int32_t> ids;  // widened to int32 in memory whatever the on-disk width
  // Optional, in memory only: scored[i] == 0 means token i is never a scored target (the loader
  // gives it target -1); empty: every token is scored. Set by the trainer's answers_only.
  std::vector<uint8_t> scored;
};

// 2 when vocab_size <= 65535, else 4.
uint32_t shard_id_bytes(uint32_t vocab_size);

// Serialises a shard (header + ids) to bytes. Checks vocab_size >= 1, every 0 <= id < vocab_size
// (error names the index and value), and desc.size() <= kShardDescBytes.
std::string encode_shard(const int32_t* ids, size_t n, uint32_t vocab_size,
                         uint64_t tokenizer_hash, const std::string& tokenizer_desc);
// encode_shard + write_file_atomic.
void write_shard(const std::string& path, const int32_t* ids, size_t n, uint32_t vocab_size,
                 uint64_t tokenizer_hash, const std::string& tokenizer_desc);

// Parses and validates bytes; `source` names the file in errors.
Shard decode_shard(const std::string& bytes, const std::string& source);
Shard read_shard(const std::string& path);
// Header only (validates the header and the file size, does not read or check the ids).
ShardHeader read_shard_header(const std::string& path);

// FNV-1a 64 of a tokenizer's identity: the bytes of its tokenizer.json, or the word "byte".
uint64_t tokenizer_hash(const std::string& path_or_byte);
// A prepared data directory's tokenizer matches its shards: the shard's tokenizer_hash equals
// the hash of DIR/tokenizer.json (or of "byte" when the directory holds none). The error names
// the shard, the tokenizer and both hashes.
void check_shard_tokenizer(const ShardHeader& header, const std::string& shard_path, const std::string& data_dir);

}  // namespace moessm
