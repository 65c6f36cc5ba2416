// State snapshot files (see state_file.h).
#include "infer/state_file.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/check.h"
#include "core/rng.h"
#include "io/safetensors.h"

namespace moessm {

namespace {

constexpr const char* kFormat = "moessm.state";
constexpr const char* kVersion = "1";

std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

template <typename V>
std::string join(const std::vector<V>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

std::vector<int64_t> parse_list(const std::string& path, const std::string& field, const std::string& s) {
  std::vector<int64_t> out;
  size_t at = 0;
  while (at <= s.size() && !s.empty()) {
    size_t end = s.find(',', at);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(at, end - at);
    char* stop = nullptr;
    errno = 0;
    const long long x = std::strtoll(item.c_str(), &stop, 10);
    CHECK(!item.empty() && stop && *stop == '\0', path, ": metadata '", field,
          "': expected comma-separated integers, found '", s, "'");
    CHECK(errno == 0, path, ": metadata '", field, "': '", item, "' is out of the int64 range");
    out.push_back(x);
    at = end + 1;
  }
  return out;
}

template <typename T>
std::vector<idx_t> layer_state_sizes(const LanguageModel<T>& m) {
  std::vector<idx_t> s;
  for (int l = 0; l < m.n_layers(); ++l)
    s.push_back((l + 1 < m.n_layers() ? m.state_offset(l + 1, 1) : m.state_size()) - m.state_offset(l, 1));
  return s;
}

const std::string& meta(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  CHECK(it != f.metadata().end(), f.path(), ": not a moessm state file: __metadata__ has no '", key,
        "' (write state files with `moessm generate --state-out`)");
  return it->second;
}

}  // namespace

std::string model_summary(const ModelConfig& c) {
  std::ostringstream os;
  os << "n_layer=" << c.n_layer << " d_model=" << c.d_model << " d_state=" << c.d_state
     << " d_conv=" << c.d_conv << " expand=" << c.expand << " vocab=" << c.padded_vocab() << " mixers=";
  for (size_t l = 0; l < c.layers.size(); ++l) os << (l ? "," : "") << c.layers[l].type;
  return os.str();
}

template <typename T>
std::string model_fingerprint(const LanguageModel<T>& m) {
  const ModelConfig& c = m.config();
  Json layers = Json::array();
  for (const auto& l : c.layers) layers.push_back(l.options);
  std::ostringstream os;
  os << "d_model=" << c.d_model << ";n_layer=" << c.n_layer << ";vocab=" << c.padded_vocab()
     << ";d_state=" << c.d_state << ";d_conv=" << c.d_conv << ";expand=" << c.expand
     << ";dt_rank=" << c.resolved_dt_rank() << ";layers=" << layers.dump()
     << ";state_sizes=" << join(layer_state_sizes(m));
  return hex64(stream_id(os.str()));
}

template <typename T>
std::string weights_fingerprint(const LanguageModel<T>& m) {
  // Up to 65536 parameters at a fixed stride, hashed as float32 (equal for fp32 and fp64 copies).
  const size_t n = m.params.size(), count = std::min<size_t>(n, 65536);
  const size_t stride = count ? n / count : 1;
  std::string bytes(count * sizeof(float), '\0');
  for (size_t i = 0; i < count; ++i) {
    const float v = static_cast<float>(m.params[i * stride]);
    std::memcpy(&bytes[i * sizeof(float)], &v, sizeof(float));
  }
  return hex64(stream_id(bytes));
}

template <typename T>
void save_state_file(const std::string& path, const LanguageModel<T>& m, idx_t B, const T* state,
                     const T* next_logits, const std::vector<int64_t>& tokens_consumed,
                     const std::vector<int32_t>& last_token) {
  CHECK(B > 0, "save_state_file ", path, ": batch must be positive, got ", B);
  CHECK(idx_t(tokens_consumed.size()) == B && idx_t(last_token.size()) == B, "save_state_file ", path,
        ": need one tokens_consumed and last_token per slot (", B, "), got ", tokens_consumed.size(),
        " and ", last_token.size());
  const std::vector<idx_t> sizes = layer_state_sizes(m);
  const size_t total = static_cast<size_t>(B * m.state_size());
  std::vector<float> s32(state, state + total);
  std::vector<float> l32;
  SafetensorsWriter w;
  for (int l = 0; l < m.n_layers(); ++l)
    w.add("state.layers." + std::to_string(l), DType::F32, {B * sizes[l]}, s32.data() + m.state_offset(l, B));
  if (next_logits) {
    l32.assign(next_logits, next_logits + B * m.vocab());
    w.add("next_logits", DType::F32, {B, m.vocab()}, l32.data());
  }
  w.set_metadata("format", kFormat);
  w.set_metadata("version", kVersion);
  w.set_metadata("model_fingerprint", model_fingerprint(m));
  w.set_metadata("weights_fingerprint", weights_fingerprint(m));
  w.set_metadata("model_summary", model_summary(m.config()));
  w.set_metadata("batch", std::to_string(B));
  w.set_metadata("state_sizes", join(sizes));
  w.set_metadata("tokens_consumed", join(tokens_consumed));
  w.set_metadata("last_token", join(last_token));
  w.write(path);
}

template <typename T>
StateSnapshot<T> load_state_file(const std::string& path, const LanguageModel<T>& m, idx_t expect_batch) {
  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(meta(f, "format") == kFormat, path, ": not a moessm state file: metadata 'format' is '",
        meta(f, "format"), "', expected '", kFormat, "'");
  CHECK(meta(f, "version") == kVersion, path, ": metadata 'version': expected ", kVersion, ", found ",
        meta(f, "version"), " (written by a different moessm version)");
  const std::string fp = model_fingerprint(m);
  CHECK(meta(f, "model_fingerprint") == fp, path, ": the state was written for a different model: ",
        "file model_fingerprint ", meta(f, "model_fingerprint"), " (", meta(f, "model_summary"),
        ", state sizes ", meta(f, "state_sizes"), "), this model ", fp, " (", model_summary(m.config()),
        ", state sizes ", join(layer_state_sizes(m)), ")");
  const std::string wfp = weights_fingerprint(m);
  CHECK(meta(f, "weights_fingerprint") == wfp, path,
        ": the state was written with different weights of the same architecture (",
        "weights_fingerprint: file ", meta(f, "weights_fingerprint"), ", this model ", wfp,
        "); recompute it with this checkpoint");
  StateSnapshot<T> s;
  const std::vector<int64_t> b = parse_list(path, "batch", meta(f, "batch"));
  CHECK(b.size() == 1 && b[0] > 0, path, ": metadata 'batch': expected a positive integer, found '",
        meta(f, "batch"), "'");
  s.batch = b[0];
  if (expect_batch > 0)
    CHECK(s.batch == expect_batch, path, ": the state holds ", s.batch, " sequence slot(s) but ",
          expect_batch, " are needed; a state is used with the batch it was written with (write it "
          "with the same --batch / number of prompts / id lines)");
  s.tokens_consumed = parse_list(path, "tokens_consumed", meta(f, "tokens_consumed"));
  const std::vector<int64_t> last = parse_list(path, "last_token", meta(f, "last_token"));
  CHECK(idx_t(s.tokens_consumed.size()) == s.batch && idx_t(last.size()) == s.batch, path,
        ": metadata 'tokens_consumed' and 'last_token': expected ", s.batch, " entries each, found ",
        s.tokens_consumed.size(), " and ", last.size());
  for (size_t i = 0; i < last.size(); ++i) {
    CHECK(s.tokens_consumed[i] >= 0, path, ": metadata 'tokens_consumed': slot ", i, " has ",
          s.tokens_consumed[i], ", expected a count >= 0");
    CHECK(last[i] >= -1 && last[i] < m.vocab(), path, ": metadata 'last_token': slot ", i, " has ",
          last[i], ", expected -1 (unknown) or a token id in [0, ", m.vocab(), ")");
  }
  s.last_token.assign(last.begin(), last.end());
  const std::vector<idx_t> sizes = layer_state_sizes(m);
  // The shapes are checked before anything is allocated: the batch comes from the metadata, the
  // tensors' sizes are bounded by the file's.
  for (int l = 0; l < m.n_layers(); ++l) {
    const std::string name = "state.layers." + std::to_string(l);
    const SafetensorsEntry* e = f.find(name);
    CHECK(e, path, ": missing tensor '", name, "'");
    CHECK(e->shape == Shape{s.batch * sizes[l]}, path, ": tensor '", name, "' has shape ",
          shape_str(e->shape), ", expected [", s.batch * sizes[l], "] (metadata 'batch' ", s.batch,
          " x layer state size ", sizes[l], ")");
  }
  if (const SafetensorsEntry* e = f.find("next_logits"))
    CHECK(e->shape == (Shape{s.batch, m.vocab()}), path, ": tensor 'next_logits' has shape ",
          shape_str(e->shape), ", expected [", s.batch, ", ", m.vocab(), "] (metadata 'batch' x vocabulary)");
  s.state.assign(static_cast<size_t>(s.batch * m.state_size()), T(0));
  size_t expected_tensors = sizes.size();
  for (int l = 0; l < m.n_layers(); ++l)
    f.read_into("state.layers." + std::to_string(l), {s.batch * sizes[l]}, s.state.data() + m.state_offset(l, s.batch));
  if (f.find("next_logits")) {
    s.next_logits.assign(static_cast<size_t>(s.batch * m.vocab()), T(0));
    f.read_into("next_logits", {s.batch, m.vocab()}, s.next_logits.data());
    ++expected_tensors;
  }
  // NaN or Inf in a state (or its logits) would poison every later token: name where it is.
  for (int l = 0; l < m.n_layers(); ++l)
    for (idx_t i = 0; i < s.batch * sizes[l]; ++i)
      CHECK(std::isfinite(double(s.state[size_t(m.state_offset(l, s.batch) + i)])), path, ": tensor 'state.layers.", l,
            "' holds a non-finite value at element ", i);
  for (size_t i = 0; i < s.next_logits.size(); ++i)
    CHECK(std::isfinite(double(s.next_logits[i])), path, ": tensor 'next_logits' holds a non-finite value at element ", i);
  CHECK(f.entries().size() == expected_tensors, path, ": expected ", expected_tensors,
        " tensors (state.layers.0..", m.n_layers() - 1, s.next_logits.empty() ? "" : ", next_logits",
        "), found ", f.entries().size());
  return s;
}

template std::string model_fingerprint(const LanguageModel<float>&);
template std::string model_fingerprint(const LanguageModel<double>&);
template std::string weights_fingerprint(const LanguageModel<float>&);
template std::string weights_fingerprint(const LanguageModel<double>&);
template void save_state_file(const std::string&, const LanguageModel<float>&, idx_t, const float*,
                              const float*, const std::vector<int64_t>&, const std::vector<int32_t>&);
template void save_state_file(const std::string&, const LanguageModel<double>&, idx_t, const double*,
                              const double*, const std::vector<int64_t>&, const std::vector<int32_t>&);
template StateSnapshot<float> load_state_file(const std::string&, const LanguageModel<float>&, idx_t);
template StateSnapshot<double> load_state_file(const std::string&, const LanguageModel<double>&, idx_t);

}  // namespace moessm
