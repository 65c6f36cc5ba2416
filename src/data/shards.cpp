// Token shard writer and validating reader (format in shards.h and docs/data.md).
// Integers are assembled byte by byte, so the files are little-endian on any host.
#include "data/shards.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/check.h"
#include "core/rng.h"
#include "io/file_util.h"

namespace moessm {
namespace {

// Field offsets inside the 256-byte header.
constexpr size_t kOffMagic = 0, kOffVersion = 8, kOffIdBytes = 12, kOffVocab = 16,
                 kOffDescLen = 20, kOffNumTokens = 24, kOffHash = 32, kOffDesc = 40,
                 kOffReserved = kOffDesc + kShardDescBytes;
static_assert(kOffReserved < kShardHeaderBytes, "header fields overflow the fixed header");

void put_u32(std::string& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put_u64(std::string& b, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[off + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t get_u32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t get_u64(const unsigned char* p) {
  return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32;
}

// Printable rendering of raw bytes for error messages ("MOESSMTK" or "\x00\x01...").
std::string show_bytes(const unsigned char* p, size_t n) {
  std::string s = "\"";
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7F && p[i] != '"' && p[i] != '\\') {
      s += static_cast<char>(p[i]);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", p[i]);
      s += buf;
    }
  }
  return s + "\"";
}

// Validates the 256 header bytes against the total file size; `src` names the file.
// Reads nothing from h before file_size is known to cover the header.
ShardHeader parse_header(const unsigned char* h, uint64_t file_size, const std::string& src) {
  CHECK(file_size >= kShardHeaderBytes, src, ": not a moessm token shard: header: expected at least ",
        kShardHeaderBytes, " bytes, found a file of ", file_size, " bytes");
  CHECK(std::memcmp(h + kOffMagic, kShardMagic, 8) == 0, src,
        ": not a moessm token shard: magic: expected \"MOESSMTK\", found ", show_bytes(h, 8));
  ShardHeader hd;
  hd.version = get_u32(h + kOffVersion);
  CHECK(hd.version == kShardVersion, src, ": version: expected ", kShardVersion, ", found ",
        hd.version, " (written by a different moessm version?)");
  hd.id_bytes = get_u32(h + kOffIdBytes);
  CHECK(hd.id_bytes == 2 || hd.id_bytes == 4, src, ": id_bytes: expected 2 or 4, found ", hd.id_bytes);
  hd.vocab_size = get_u32(h + kOffVocab);
  CHECK(hd.vocab_size >= 1, src, ": vocab_size: expected >= 1, found 0");
  CHECK(hd.id_bytes == shard_id_bytes(hd.vocab_size), src, ": id_bytes: expected ",
        shard_id_bytes(hd.vocab_size), " for vocab_size ", hd.vocab_size, ", found ", hd.id_bytes);
  uint32_t desc_len = get_u32(h + kOffDescLen);
  CHECK(desc_len <= kShardDescBytes, src, ": tokenizer_desc_len: expected <= ", kShardDescBytes,
        ", found ", desc_len);
  hd.num_tokens = get_u64(h + kOffNumTokens);
  hd.tokenizer_hash = get_u64(h + kOffHash);
  hd.tokenizer_desc.assign(reinterpret_cast<const char*>(h + kOffDesc), desc_len);
  for (size_t i = kOffDesc + desc_len; i < kOffReserved; ++i)
    CHECK(h[i] == 0, src, ": tokenizer_desc padding: expected zero bytes after the ", desc_len,
          "-byte description, found 0x", std::hex, int(h[i]), std::dec, " at offset ", i);
  for (size_t i = kOffReserved; i < kShardHeaderBytes; ++i)
    CHECK(h[i] == 0, src, ": reserved: expected zero bytes (offsets ", kOffReserved, "..",
          kShardHeaderBytes - 1, "), found 0x", std::hex, int(h[i]), std::dec, " at offset ", i);
  uint64_t payload = file_size - kShardHeaderBytes;
  CHECK(payload % hd.id_bytes == 0 && payload / hd.id_bytes == hd.num_tokens, src,
        ": num_tokens: header says ", hd.num_tokens, " tokens of ", hd.id_bytes,
        " bytes, so the file should be ", kShardHeaderBytes, " + ", hd.num_tokens, "×", hd.id_bytes,
        " bytes, found a file of ", file_size, " bytes (", payload, " payload bytes; truncated or corrupt)");
  return hd;
}

}  // namespace

uint32_t shard_id_bytes(uint32_t vocab_size) { return vocab_size <= 65535 ? 2 : 4; }

std::string encode_shard(const int32_t* ids, size_t n, uint32_t vocab_size, uint64_t tok_hash,
                         const std::string& desc) {
  CHECK(vocab_size >= 1, "encode_shard: vocab_size: expected >= 1, found 0");
  CHECK(desc.size() <= kShardDescBytes, "encode_shard: tokenizer_desc: expected at most ",
        kShardDescBytes, " bytes, found ", desc.size(), " ('", desc, "')");
  const uint32_t w = shard_id_bytes(vocab_size);
  std::string b(kShardHeaderBytes + n * w, '\0');
  std::memcpy(&b[kOffMagic], kShardMagic, 8);
  put_u32(b, kOffVersion, kShardVersion);
  put_u32(b, kOffIdBytes, w);
  put_u32(b, kOffVocab, vocab_size);
  put_u32(b, kOffDescLen, static_cast<uint32_t>(desc.size()));
  put_u64(b, kOffNumTokens, n);
  put_u64(b, kOffHash, tok_hash);
  std::memcpy(&b[kOffDesc], desc.data(), desc.size());
  unsigned char* out = reinterpret_cast<unsigned char*>(&b[kShardHeaderBytes]);
  for (size_t i = 0; i < n; ++i) {
    int32_t id = ids[i];
    CHECK(id >= 0 && static_cast<uint32_t>(id) < vocab_size, "encode_shard: token ", i,
          ": expected an id in [0, ", vocab_size, "), found ", id);
    for (uint32_t k = 0; k < w; ++k) out[i * w + k] = static_cast<unsigned char>(uint32_t(id) >> (8 * k));
  }
  return b;
}

void write_shard(const std::string& path, const int32_t* ids, size_t n, uint32_t vocab_size,
                 uint64_t tok_hash, const std::string& desc) {
  std::string bytes;
  try {
    bytes = encode_shard(ids, n, vocab_size, tok_hash, desc);
  } catch (const Error& e) {
    FAIL(path, ": ", e.what());
  }
  write_file_atomic(path, bytes);
}

Shard decode_shard(const std::string& bytes, const std::string& src) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data());
  Shard s;
  s.path = src;
  s.header = parse_header(p, bytes.size(), src);
  const ShardHeader& h = s.header;
  s.ids.resize(h.num_tokens);
  const unsigned char* q = p + kShardHeaderBytes;
  for (uint64_t i = 0; i < h.num_tokens; ++i) {
    uint32_t id = h.id_bytes == 2 ? uint32_t(q[2 * i]) | uint32_t(q[2 * i + 1]) << 8 : get_u32(q + 4 * i);
    CHECK(id < h.vocab_size, src, ": ids[", i, "]: expected < vocab_size ", h.vocab_size,
          ", found ", id);
    s.ids[i] = static_cast<int32_t>(id);
  }
  return s;
}

Shard read_shard(const std::string& path) { return decode_shard(read_file(path), path); }

ShardHeader read_shard_header(const std::string& path) {
  struct stat st;
  CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot stat token shard: ", std::strerror(errno));
  unsigned char h[kShardHeaderBytes] = {};
  FILE* f = std::fopen(path.c_str(), "rb");
  CHECK(f != nullptr, path, ": cannot open token shard: ", std::strerror(errno));
  size_t got = std::fread(h, 1, kShardHeaderBytes, f);
  std::fclose(f);
  CHECK(got == kShardHeaderBytes || uint64_t(st.st_size) < kShardHeaderBytes, path,
        ": short read of the header (", got, " bytes)");
  return parse_header(h, static_cast<uint64_t>(st.st_size), path);
}

uint64_t tokenizer_hash(const std::string& path_or_byte) {
  if (path_or_byte == "byte") return stream_id("byte");
  return stream_id(read_regular_file(path_or_byte, kMaxTokenizerBytes));
}

void check_shard_tokenizer(const ShardHeader& h, const std::string& shard_path, const std::string& data_dir) {
  const std::string tok = path_join(data_dir, "tokenizer.json");
  const bool has = file_exists(tok);
  const uint64_t want = tokenizer_hash(has ? tok : "byte");
  if (h.tokenizer_hash == want) return;
  char a[32], b[32];
  std::snprintf(a, sizeof a, "%016llx", (unsigned long long)h.tokenizer_hash);
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)want);
  FAIL(shard_path, ": the tokens were made with another tokenizer than ", has ? tok : std::string("'byte' (no tokenizer.json in ") + data_dir + ")",
       " (tokenizer_hash ", a, " in the shard, ", b, " of the tokenizer): prepare the data again with `moessm prepare`");
}

}  // namespace moessm
