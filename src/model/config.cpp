// ModelConfig parsing (strict), serialisation, and the HF config.json mapping.
#include "model/config.h"

#include <set>

#include "core/check.h"
#include "backend/cpu_backend.h"
#include "model/mixer_registry.h"

namespace moessm {

namespace {

int64_t get_int(const Json& j, const std::string& key, const std::string& src, int64_t lo, int64_t hi) {
  const Json& v = j.at(key, src);
  CHECK(v.is_integer(), src, ": field '", key, "' must be an integer, found ", v.dump());
  int64_t x = v.as_int();
  CHECK(x >= lo && x <= hi, src, ": field '", key, "' must be in [", lo, ", ", hi, "], found ", x);
  return x;
}

double get_num(const Json& j, const std::string& key, const std::string& src, double lo, double hi) {
  const Json& v = j.at(key, src);
  CHECK(v.is_number(), src, ": field '", key, "' must be a number, found ", v.dump());
  double x = v.as_number();
  CHECK(x >= lo && x <= hi, src, ": field '", key, "' must be in [", lo, ", ", hi, "], found ", x);
  return x;
}

MixerSpec parse_mixer(const Json& e, const std::string& where) {
  MixerSpec m;
  if (e.is_string()) {
    m.type = e.as_string();
    m.options = Json::object();
    m.options.set("type", m.type);
  } else {
    CHECK(e.is_object(), where, ": a mixer must be a type name or an object with \"type\", found ", e.dump());
    const Json* t = e.get("type");
    CHECK(t && t->is_string(), where, ": mixer object needs a string field \"type\"");
    m.type = t->as_string();
    m.options = e;
  }
  if (!is_mixer_type(m.type)) {
    std::string names;
    for (const std::string& n : mixer_type_names()) names += (names.empty() ? "" : ", ") + n;
    FAIL(where, ": unknown mixer type '", m.type, "' (expected one of ", names, ")");
  }
  return m;
}

}  // namespace

int64_t ModelConfig::padded_vocab() const {
  int64_t m = pad_vocab_size_multiple;
  return (vocab_size + m - 1) / m * m;
}

bool ModelConfig::all_dense() const {
  for (const auto& l : layers)
    if (l.type != "mamba") return false;
  return true;
}

ModelConfig ModelConfig::from_json(const Json& j, const std::string& src) {
  CHECK(j.is_object(), src, ": the model config must be a JSON object");
  static const std::set<std::string> kKeys = {
      "d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "dt_rank",
      "pad_vocab_size_multiple", "norm_eps", "dt_min", "dt_max", "dt_init_floor",
      "embedding_init_std", "mixer", "layers", "train", "comment"};
  for (const auto& kv : j.as_object())
    CHECK(kKeys.count(kv.first), src, ": unknown field '", kv.first,
          "' (known: d_model, n_layer, vocab_size, d_state, d_conv, expand, dt_rank, "
          "pad_vocab_size_multiple, norm_eps, dt_min, dt_max, dt_init_floor, embedding_init_std, "
          "mixer, layers, train, comment)");
  ModelConfig c;
  c.d_model = get_int(j, "d_model", src, 1, 1 << 16);
  c.n_layer = get_int(j, "n_layer", src, 1, 1024);
  c.vocab_size = get_int(j, "vocab_size", src, 2, 1 << 24);
  if (j.has("d_state")) c.d_state = get_int(j, "d_state", src, 1, 256);
  if (j.has("d_conv")) c.d_conv = get_int(j, "d_conv", src, 1, 16);
  if (j.has("expand")) c.expand = get_int(j, "expand", src, 1, 16);
  if (j.has("dt_rank")) {
    const Json& r = j.at("dt_rank");
    if (r.is_string()) CHECK(r.as_string() == "auto", src, ": field 'dt_rank' must be \"auto\" or an integer, found ", r.dump());
    else c.dt_rank = get_int(j, "dt_rank", src, 1, 1 << 16);
  }
  if (j.has("pad_vocab_size_multiple")) c.pad_vocab_size_multiple = get_int(j, "pad_vocab_size_multiple", src, 1, 1 << 16);
  if (j.has("norm_eps")) c.norm_eps = get_num(j, "norm_eps", src, 0, 1);
  if (j.has("dt_min")) c.dt_min = get_num(j, "dt_min", src, 1e-12, 10);
  if (j.has("dt_max")) c.dt_max = get_num(j, "dt_max", src, 1e-12, 10);
  if (j.has("dt_init_floor")) c.dt_init_floor = get_num(j, "dt_init_floor", src, 0, 10);
  if (j.has("embedding_init_std")) c.embedding_init_std = get_num(j, "embedding_init_std", src, 0, 10);
  CHECK(c.dt_min <= c.dt_max, src, ": dt_min (", c.dt_min, ") must not exceed dt_max (", c.dt_max, ")");
  CHECK(!(j.has("mixer") && j.has("layers")), src, ": give either 'mixer' (for every layer) or 'layers' (one per layer), not both");
  if (j.has("layers")) {
    const Json& ls = j.at("layers");
    CHECK(ls.is_array(), src, ": field 'layers' must be an array of mixers");
    CHECK((int64_t)ls.size() == c.n_layer, src, ": field 'layers' has ", ls.size(),
          " entries, expected n_layer = ", c.n_layer);
    for (size_t i = 0; i < ls.size(); ++i)
      c.layers.push_back(parse_mixer(ls.as_array()[i], str_cat(src, ": layers[", i, "]")));
  } else {
    MixerSpec m = j.has("mixer") ? parse_mixer(j.at("mixer"), src + ": mixer") : parse_mixer(Json("mamba"), src);
    c.layers.assign(c.n_layer, m);
  }
  if (j.has("train")) {
    CHECK(j.at("train").is_object(), src, ": field 'train' must be an object");
    c.train = j.at("train");
  }
  // Each layer's options are validated here, where the source is known, by building the layer
  // once (cheap: options and sizes, no parameters): the error names the file and the layer.
  for (size_t l = 0; l < c.layers.size(); ++l) {
    try {
      (void)make_mixer<CpuBackend<float>>(c, c.layers[l], int(l));
    } catch (const Error& e) {
      FAIL(src, ": ", j.has("layers") ? str_cat("layers[", l, "]") : std::string("mixer"), " (", c.layers[l].type,
           "): ", e.message());
    }
  }
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  return from_json(Json::parse_file(path), path);
}

Json ModelConfig::to_json() const {
  Json j = Json::object();
  j.set("d_model", d_model);
  j.set("n_layer", n_layer);
  j.set("vocab_size", vocab_size);
  j.set("d_state", d_state);
  j.set("d_conv", d_conv);
  j.set("expand", expand);
  j.set("dt_rank", resolved_dt_rank());
  j.set("pad_vocab_size_multiple", pad_vocab_size_multiple);
  j.set("norm_eps", norm_eps);
  j.set("dt_min", dt_min);
  j.set("dt_max", dt_max);
  j.set("dt_init_floor", dt_init_floor);
  j.set("embedding_init_std", embedding_init_std);
  Json ls = Json::array();
  for (const auto& l : layers) ls.push_back(l.options.size() == 1 ? Json(l.type) : l.options);
  j.set("layers", ls);
  return j;
}

Json ModelConfig::to_checkpoint_json(const SpecialTokenIds& ids) const {
  Json j = Json::object();
  const bool dense = all_dense();
  j.set("architectures", Json::array({Json(dense ? "MambaForCausalLM" : "MoessmForCausalLM")}));
  j.set("model_type", dense ? "mamba" : "moessm");
  j.set("vocab_size", padded_vocab());
  j.set("hidden_size", d_model);
  j.set("state_size", d_state);
  j.set("num_hidden_layers", n_layer);
  j.set("layer_norm_epsilon", norm_eps);
  j.set("expand", expand);
  j.set("intermediate_size", d_inner());
  j.set("conv_kernel", d_conv);
  j.set("use_bias", false);
  j.set("use_conv_bias", true);
  j.set("hidden_act", "silu");
  j.set("initializer_range", 0.1);
  j.set("residual_in_fp32", true);
  j.set("time_step_rank", resolved_dt_rank());
  j.set("time_step_scale", 1.0);
  j.set("time_step_min", dt_min);
  j.set("time_step_max", dt_max);
  j.set("time_step_init_scheme", "random");
  j.set("time_step_floor", dt_init_floor);
  j.set("rescale_prenorm_residual", false);
  j.set("use_cache", true);
  j.set("tie_word_embeddings", true);
  auto id = [](int64_t v) { return v >= 0 ? Json(v) : Json(); };
  j.set("bos_token_id", id(ids.bos));
  j.set("eos_token_id", id(ids.eos));
  j.set("pad_token_id", id(ids.pad));
  j.set("torch_dtype", "float32");
  j.set("moessm", to_json());
  return j;
}

ModelConfig ModelConfig::from_checkpoint_json(const Json& j, const std::string& src) {
  CHECK(j.is_object(), src, ": config.json must be a JSON object");
  if (const Json* m = j.get("moessm")) return from_json(*m, src + " (field moessm)");
  // A plain Hugging Face MambaConfig: map its fields.
  const Json* mt = j.get("model_type");
  CHECK(mt && mt->is_string() && mt->as_string() == "mamba", src,
        ": expected a moessm config (field 'moessm') or a Hugging Face Mamba config (model_type \"mamba\")");
  Json c = Json::object();
  c.set("d_model", j.at("hidden_size", src));
  c.set("n_layer", j.at("num_hidden_layers", src));
  c.set("vocab_size", j.at("vocab_size", src));
  if (j.has("state_size")) c.set("d_state", j.at("state_size"));
  if (j.has("conv_kernel")) c.set("d_conv", j.at("conv_kernel"));
  if (j.has("expand")) c.set("expand", j.at("expand"));
  if (j.has("time_step_rank")) c.set("dt_rank", j.at("time_step_rank"));
  if (j.has("layer_norm_epsilon")) c.set("norm_eps", j.at("layer_norm_epsilon"));
  c.set("pad_vocab_size_multiple", 1);
  if (const Json* b = j.get("use_bias"))
    CHECK(!b->as_bool(src + ": use_bias"), src, ": use_bias=true is not supported (Mamba projections have no bias)");
  return from_json(c, src);
}

}  // namespace moessm
