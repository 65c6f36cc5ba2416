// Recurrent-state snapshots ("state files"): the state of B decode slots after some tokens, saved
// so a prompt (a chat prefix) is read once and resumed later by `generate`, `logits`, `grads`.
//
// Format: safetensors (src/io/safetensors.h), all tensors F32 (converted on save/load for
// fp64 models):
//   state.layers.{l}   [B·state_size_l]  layer l's recurrent state for the B slots, exactly the
//                      block LanguageModel::state_offset(l, B) points at; its element order is the
//                      mixer's (dense / RoM / Swimba SsmCore: conv [B, Di, Kc-1] then ssm
//                      [B, Di, N]). For B = 1 it is the per-sequence state.
//   next_logits        [B, V] (optional) the logits after the last consumed token, so generation
//                      can resume without a new prompt token; V = the padded vocabulary.
// __metadata__ (all strings):
//   format "moessm.state", version "1",
//   model_fingerprint  16 hex digits: FNV-1a of the architecture (sizes, mixer list) and the
//                      per-layer state sizes — what decides the state's shape and meaning,
//   weights_fingerprint 16 hex digits: FNV-1a of a fixed strided sample of the parameters, so a
//                      state from other weights of the same architecture is caught as well,
//   model_summary      human-readable architecture (used in error messages),
//   batch              B,
//   state_sizes        state_size_l per layer, comma-separated,
//   tokens_consumed    per slot, comma-separated (tokens the state stands for),
//   last_token         per slot, comma-separated (the last consumed token id; -1 if unknown).
// Loading checks format, version, both fingerprints, the tensor shapes and (when asked) the
// batch; every error names the file, the field, what was expected and what was found.
// Because the element order for B > 1 is mixer-defined, a state is used with the batch it was
// written with (no re-batching).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/language_model.h"

namespace moessm {

template <typename T>
std::string model_fingerprint(const LanguageModel<T>& model);
template <typename T>
std::string weights_fingerprint(const LanguageModel<T>& model);
std::string model_summary(const ModelConfig& cfg);

template <typename T>
struct StateSnapshot {
  idx_t batch = 0;
  std::vector<T> state;                 // [batch · state_size] in model layout
  std::vector<T> next_logits;           // [batch, V] or empty
  std::vector<int64_t> tokens_consumed; // [batch]
  std::vector<int32_t> last_token;      // [batch]
};

// state: [B·model.state_size()]; next_logits: [B, V] or nullptr.
template <typename T>
void save_state_file(const std::string& path, const LanguageModel<T>& model, idx_t B,
                     const T* state, const T* next_logits,
                     const std::vector<int64_t>& tokens_consumed,
                     const std::vector<int32_t>& last_token);

// expect_batch > 0 also checks the batch (with a hint on how to get a matching file).
template <typename T>
StateSnapshot<T> load_state_file(const std::string& path, const LanguageModel<T>& model,
                                 idx_t expect_batch = 0);

}  // namespace moessm
