// GPT-2 byte <-> character map and the PCRE2-backed pre-token splitter (see byte_level.h).
#include "tokenizer/byte_level.h"

#include <limits>

#include "core/check.h"

#ifdef MOESSM_HAVE_PCRE2
#include <pcre2.h>
#endif

namespace moessm::byte_level {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\t-\r\x{85}\p{Z}\p{L}\p{N}]+)"
    R"(|[\t-\r\x{85}\p{Z}]+(?![^\t-\r\x{85}\p{Z}])|[\t-\r\x{85}\p{Z}]+)";

namespace {

bool stands_for_itself(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

struct Tables {
  uint32_t cp[256];
  std::string text[256];
  std::array<uint8_t, 256> order;
  Tables() {
    uint32_t next = 256;
    int k = 0;
    for (int b = 0; b < 256; ++b)
      if (stands_for_itself(b)) order[k++] = static_cast<uint8_t>(b);
    for (int b = 0; b < 256; ++b) {
      if (stands_for_itself(b)) {
        cp[b] = static_cast<uint32_t>(b);
      } else {
        cp[b] = next++;
        order[k++] = static_cast<uint8_t>(b);
      }
      append_utf8(cp[b], &text[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return tables().cp[b]; }

int byte_from_codepoint(uint32_t cp) {
  if (cp < 256) return stands_for_itself(static_cast<int>(cp)) ? static_cast<int>(cp) : -1;
  if (cp >= 256 + 68) return -1;
  // The 68 remapped bytes take U+0100.. in increasing byte order.
  const auto& order = tables().order;
  return order[188 + (cp - 256)];
}

const std::string& byte_to_text(uint8_t b) { return tables().text[b]; }

std::string to_text(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) out += tables().text[c];
  return out;
}

bool from_text(std::string_view text, std::string* bytes) {
  bytes->clear();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    if (p[i] < 0x80) {
      cp = p[i];
      i += 1;
    } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
      cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
      i += 2;
    } else {
      return false;  // every byte image is below U+0800: 1 or 2 UTF-8 bytes
    }
    int b = byte_from_codepoint(cp);
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
  }
  return true;
}

const std::array<uint8_t, 256>& base_order() { return tables().order; }

#ifdef MOESSM_HAVE_PCRE2

bool have_regex() { return true; }

struct Splitter::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() {
    if (code) pcre2_code_free(code);
  }
};

namespace {
std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  int r = pcre2_get_error_message(code, buf, sizeof(buf));
  return r < 0 ? str_cat("PCRE2 error ", code) : std::string(reinterpret_cast<const char*>(buf));
}

// Per-call match state; a Splitter itself is shared read-only.
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState(const pcre2_code* code, bool jit) {
    md = pcre2_match_data_create_from_pattern(code, nullptr);
    CHECK(md != nullptr, "pre-tokenizer: out of memory creating PCRE2 match data");
    if (jit) {
      mctx = pcre2_match_context_create(nullptr);
      stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
      CHECK(mctx && stack, "pre-tokenizer: out of memory creating the PCRE2 JIT stack");
      pcre2_jit_stack_assign(mctx, nullptr, stack);
    }
  }
  ~MatchState() {
    if (stack) pcre2_jit_stack_free(stack);
    if (mctx) pcre2_match_context_free(mctx);
    if (md) pcre2_match_data_free(md);
  }
};

size_t utf8_step(const unsigned char* p, size_t i, size_t n) {
  size_t len = p[i] < 0x80 ? 1 : (p[i] >> 5) == 6 ? 2 : (p[i] >> 4) == 14 ? 3 : (p[i] >> 3) == 30 ? 4 : 1;
  return i + len <= n ? len : 1;
}
}  // namespace

Splitter::Splitter(const std::string& pattern, bool literal, const std::string& what) : impl_(new Impl) {
  int err = 0;
  PCRE2_SIZE off = 0;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0);
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err, &off,
                              nullptr);
  CHECK(impl_->code != nullptr, what, ": cannot compile the pattern \"", pattern, "\" at offset ", off, ": ",
        pcre2_message(err));
  // JIT is an optional accelerator: the interpreter gives the same matches when it is missing.
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Splitter::~Splitter() = default;

void Splitter::split(std::string_view text, std::vector<Piece>* out) const {
  out->clear();
  const size_t n = text.size();
  if (n == 0) return;
  CHECK(n < std::numeric_limits<uint32_t>::max(), "pre-tokenizer: a text segment of ", n,
        " bytes is too long (at most 4 GiB)");
  MatchState st(impl_->code, impl_->jit);
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(text.data());
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t gap = 0, from = 0;
  while (from < n) {
    int rc = pcre2_match(impl_->code, subj, n, from, 0, st.md, st.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    CHECK(rc > 0, "pre-tokenizer: PCRE2 match failed at byte ", from, ": ", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
    const size_t s = ov[0], e = ov[1];
    if (e <= s) {  // an empty match makes no piece; look again one character further on
      from = s + utf8_step(bytes, s, n);
      continue;
    }
    if (s > gap) out->push_back({static_cast<uint32_t>(gap), static_cast<uint32_t>(s), false});
    out->push_back({static_cast<uint32_t>(s), static_cast<uint32_t>(e), true});
    gap = from = e;
  }
  if (gap < n) out->push_back({static_cast<uint32_t>(gap), static_cast<uint32_t>(n), false});
}

#else  // no PCRE2

bool have_regex() { return false; }

struct Splitter::Impl {};

Splitter::Splitter(const std::string& pattern, bool literal, const std::string& what) {
  FAIL(what, ": the byte-level BPE pre-tokenizer needs PCRE2, and this moessm was built without it "
             "(install libpcre2-dev and re-run cmake); the 'byte' tokenizer works without it");
}

Splitter::~Splitter() = default;

void Splitter::split(std::string_view, std::vector<Piece>*) const {
  FAIL("pre-tokenizer: built without PCRE2");
}

#endif

}  // namespace moessm::byte_level
