// ModelConfig: the JSON description of a model (DESIGN.md §1, §6).
//
//   { "d_model": 256, "n_layer": 4, "vocab_size": 4096,
//     "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "pad_vocab_size_multiple": 8,
//     "mixer": "mamba",                       // default mixer for every layer, or
//     "layers": ["mamba", {"type": "rom", "n_experts": 8, "top_k": 1}, ...] }  // one per layer
//
// Unknown or out-of-range fields are errors naming the source and the field. A mixer entry is
// a type name or an object {"type": ..., <mixer options>}; each mixer validates its own options.
// A "train" object is allowed at the top level and left to the trainer.
// config.json in a checkpoint holds the Hugging Face MambaConfig fields (so transformers loads a
// dense model) plus "moessm": <this config>; from_checkpoint_json reads either form.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/json.h"

namespace moessm {

struct MixerSpec {
  std::string type;  // "mamba", "rom", "swimba", "separated_moe_ssm", ...
  Json options;      // the whole entry as an object (includes "type")
};

// The special token ids a Hugging Face config.json names, from the tokenizer (-1: none, written
// as null). moessm's BPE tokenizers have one end-of-text token, used for all three (GPT-2's way).
struct SpecialTokenIds {
  int64_t bos = -1, eos = -1, pad = -1;
};

struct ModelConfig {
  int64_t d_model = 0, n_layer = 0, vocab_size = 0;
  int64_t d_state = 16, d_conv = 4, expand = 2, dt_rank = 0;  // dt_rank 0 = auto (ceil(D/16))
  int64_t pad_vocab_size_multiple = 8;
  double norm_eps = 1e-5;
  double dt_min = 1e-3, dt_max = 1e-1, dt_init_floor = 1e-4;
  double embedding_init_std = 0.02;
  std::vector<MixerSpec> layers;
  Json train;  // optional "train" section, validated by the trainer

  int64_t d_inner() const { return expand * d_model; }
  int64_t resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  int64_t padded_vocab() const;
  bool all_dense() const;  // every layer is "mamba"

  static ModelConfig from_json(const Json& j, const std::string& source);
  static ModelConfig from_file(const std::string& path);
  Json to_json() const;
  // config.json for a checkpoint directory (HF MambaConfig fields + "moessm").
  // Hugging Face config.json (with this config under "moessm"). Dense models are MambaForCausalLM
  // (loadable by transformers); a model with any MoE layer is "MoessmForCausalLM" /
  // model_type "moessm", which only moessm loads (its expert slabs [E, ...] fit no HF class).
  Json to_checkpoint_json(const SpecialTokenIds& ids = SpecialTokenIds()) const;
  static ModelConfig from_checkpoint_json(const Json& j, const std::string& source);
};

}  // namespace moessm
