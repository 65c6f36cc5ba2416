// GPT-2 byte-level conventions shared by the BPE tokenizer and the BPE trainer.
//
// Byte-level BPE works on bytes, but tokenizer.json spells every token as text: each byte is
// written as one printable Unicode character (GPT-2's bytes_to_unicode map). Bytes 33..126,
// 161..172 and 174..255 stand for themselves; the other 68 bytes (controls, space, 127..160,
// 173) become U+0100, U+0101, ... in byte order, so " the" is spelled "Ġthe". Sorting the 256
// characters by code point gives GPT-2's base ids 0..255 (base_order()).
//
// Splitter wraps a PCRE2 pattern used to cut text into pre-tokens (the GPT-2 regex by
// default). It needs PCRE2 (MOESSM_HAVE_PCRE2); without it the constructor throws a clear error.
// A Splitter is immutable after construction and may be shared between threads.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moessm::byte_level {

uint32_t byte_to_codepoint(uint8_t b);
int byte_from_codepoint(uint32_t cp);          // -1 when cp is not the image of a byte
const std::string& byte_to_text(uint8_t b);    // the byte's character as UTF-8
std::string to_text(std::string_view bytes);   // bytes -> byte-level spelling
// Byte-level spelling -> bytes. False (and *bytes unspecified) when `text` is not valid UTF-8
// or holds a character that is not the image of a byte (e.g. an added token "<pad> x").
bool from_text(std::string_view text, std::string* bytes);
// The 256 byte values in code-point order of their characters: GPT-2's ids 0..255.
const std::array<uint8_t, 256>& base_order();

// The GPT-2 pre-tokenizer pattern as Hugging Face tokenizers runs it (through Oniguruma):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s spelled out as Oniguruma's Unicode \s ([\t-\r\x{85}\p{Z}]); PCRE2's \s would also
// match U+180E.
extern const char* const kGpt2Pattern;

bool have_regex();  // built with PCRE2

// A piece of the input: [begin, end) byte offsets, and whether the pattern matched it (false
// for the gaps between matches, which Isolated splitting keeps as pieces of their own).
struct Piece {
  uint32_t begin, end;
  bool matched;
};

class Splitter {
 public:
  // pattern: a regular expression (literal=false) or a plain string (literal=true). Compiled
  // for UTF-8 with Unicode properties (PCRE2_UTF | PCRE2_UCP), JIT-compiled when available.
  // Invalid UTF-8 in the subject never matches and ends up in gap pieces, so splitting is
  // total on arbitrary bytes. `what` names the pattern's origin in errors.
  Splitter(const std::string& pattern, bool literal, const std::string& what);
  ~Splitter();
  Splitter(const Splitter&) = delete;
  Splitter& operator=(const Splitter&) = delete;

  // Replaces *out with pieces covering `text` in order with no overlap or hole (empty pieces
  // are never produced).
  void split(std::string_view text, std::vector<Piece>* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moessm::byte_level
