// CudaGenerator (see cuda_generator.h).
#include "infer/cuda/cuda_generator.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"
#include "core/cuda_check.h"
#include "infer/cuda/device_sampler.h"
#include "ops/matmul.h"

namespace moessm::cuda {

namespace {
using Clock = std::chrono::steady_clock;
// Slot bookkeeping arrays inside one int32 buffer: tok, pos, forced_len, done, n_out, emitted, eot_hit.
enum SlotArray { kTok = 0, kPos, kForcedLen, kDone, kNOut, kEmitted, kEot, kSlotArrays };
}  // namespace

template <typename Act>
CudaGenerator<Act>::CudaGenerator(Model<CudaBackend<Act>>& model, idx_t batch, const GenerateOptions& o,
                                  idx_t prefill_chunk)
    : m_(model), dec_(model, batch, prefill_chunk), B_(batch), V_(model.vocab()), opts_(o) {
  CHECK(B_ >= 1, "cuda generate: batch must be >= 1");
  opts_.sampling.validate();
  CHECK(opts_.max_new_tokens >= 0, "cuda generate: max_new_tokens must be >= 0");
  if (opts_.vocab_limit <= 0) opts_.vocab_limit = model.config().vocab_size;
  slots_.resize(size_t(kSlotArrays * B_) * sizeof(int32_t));
  out_.resize(size_t(std::max<int64_t>(1, opts_.max_new_tokens) * B_) * sizeof(int32_t));
  CUDA_CHECK(cudaMallocHost(&pinned_, size_t(2 * B_) * sizeof(int32_t)));
}

template <typename Act>
void CudaGenerator<Act>::logits_to_host(float* host) const {
  const size_t n = size_t(B_ * V_);
  std::vector<Act> tmp(n);
  CUDA_CHECK(cudaStreamSynchronize(m_.ctx().stream));
  CUDA_CHECK(cudaMemcpy(tmp.data(), dec_.logits(), n * sizeof(Act), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) host[i] = float(tmp[i]);
}

template <typename Act>
CudaGenerator<Act>::~CudaGenerator() {
  if (graph_) cudaGraphExecDestroy(graph_);
  if (pinned_) cudaFreeHost(pinned_);
}

template <typename Act>
void CudaGenerator<Act>::step_launches() {
  int32_t* S = slots_.as<int32_t>();
  DecodeSlots s;
  s.tok = S + kTok * B_;
  s.pos = S + kPos * B_;
  s.forced = forced_.as<int32_t>();
  s.forced_len = S + kForcedLen * B_;
  s.forced_ld = forced_ld_;
  s.done = S + kDone * B_;
  s.out = out_.as<int32_t>();
  s.n_out = S + kNOut * B_;
  s.emitted = S + kEmitted * B_;
  s.eot_hit = S + kEot * B_;
  s.max_new = opts_.max_new_tokens;
  s.eot_id = opts_.eot_id;
  decode_choose<Act>(s, dec_.logits(), V_, opts_.vocab_limit, opts_.sampling, opts_.seed, B_, m_.ctx().stream);
  dec_.step(s.tok);
}

template <typename Act>
std::vector<SlotOutput> CudaGenerator<Act>::run(const std::vector<std::vector<int32_t>>& prompts,
                                                const TokenCallback& on_token,
                                                const std::function<void()>& after_prefill) {
  CHECK(idx_t(prompts.size()) == B_, "cuda generate: ", prompts.size(), " prompts for ", B_, " slots");
  const cudaStream_t st = m_.ctx().stream;
  for (const auto& p : prompts)
    for (int32_t id : p)
      CHECK(id >= 0 && id < m_.config().vocab_size, "cuda generate: prompt token ", id, " outside the vocabulary");
  size_t common = prompts[0].size(), longest = 0;
  for (const auto& p : prompts) {
    common = std::min(common, p.size());
    longest = std::max(longest, p.size());
  }
  CHECK(common > 0 || dec_.has_logits() || opts_.max_new_tokens == 0,
        "cuda generate: every slot needs at least one prompt token (the first step samples from the prompt's "
        "logits), or pending logits from a state file");
  stats_ = GenerateStats();
  // 1. batched prefill of the common length, chunk by chunk, from the carried state
  const auto t0 = Clock::now();
  if (common > 0) {
    std::vector<int32_t> gather(static_cast<size_t>(B_) * common);
    for (idx_t b = 0; b < B_; ++b) std::copy(prompts[b].begin(), prompts[b].begin() + common, gather.begin() + b * common);
    dec_.prefill(gather.data(), idx_t(common));
  }
  stats_.prefill_tokens = int64_t(common) * B_;
  stats_.prefill_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (after_prefill) after_prefill();

  // 2. slot bookkeeping: ragged prompt tails are fed by the steps
  forced_ld_ = idx_t(std::max<size_t>(1, longest - common));
  forced_.resize(size_t(B_ * forced_ld_) * sizeof(int32_t));
  std::vector<int32_t> forced(static_cast<size_t>(B_ * forced_ld_), 0), slots(static_cast<size_t>(kSlotArrays * B_), 0);
  int64_t max_forced = 0;
  for (idx_t b = 0; b < B_; ++b) {
    const int64_t n = int64_t(prompts[b].size() - common);
    for (int64_t i = 0; i < n; ++i) forced[b * forced_ld_ + i] = prompts[b][common + i];
    slots[kForcedLen * B_ + b] = int32_t(n);
    slots[kTok * B_ + b] = prompts[b].empty() ? 0 : prompts[b].back();
    if (opts_.max_new_tokens == 0) slots[kDone * B_ + b] = 1;
    max_forced = std::max(max_forced, n);
    stats_.forced_tokens += n;
  }
  forced_.upload(forced);  // device-synchronous: the steps' stream sees the data
  slots_.upload(slots);
  if (graph_) {  // buffers may have moved (forced_ resized): capture again
    CUDA_CHECK(cudaGraphExecDestroy(graph_));
    graph_ = nullptr;
  }

  // 3. steps: until every slot is done (each step samples at most one token per slot)
  const int64_t max_steps = max_forced + opts_.max_new_tokens;
  // Graph replays do not pass through the decoder's host-side position check: check the whole
  // run here (an attention layer's KV cache bounds the positions a state may reach).
  const int64_t bound = m_.max_positions();
  CHECK(bound == 0 || dec_.tokens_consumed() + max_steps <= bound, "cuda generate: ", dec_.tokens_consumed(),
        " tokens consumed + ", max_steps,
        " steps exceed the model's bound of ", bound, " positions per state (an attention layer's max_context)");
  const auto t1 = Clock::now();
  int32_t* S = slots_.as<int32_t>();
  std::vector<int32_t> done(static_cast<size_t>(B_));
  for (int64_t step = 0; step < max_steps; ++step) {
    if (step == 0) {
      step_launches();  // warm-up: sizes workspaces, picks GEMM algorithms, sets kernel attributes
    } else {
      if (!graph_) {
        cudaGraph_t g;
        CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        step_launches();
        CUDA_CHECK(cudaStreamEndCapture(st, &g));
        CUDA_CHECK(cudaGraphInstantiate(&graph_, g, 0));
        CUDA_CHECK(cudaGraphDestroy(g));
      }
      CUDA_CHECK(cudaGraphLaunch(graph_, st));
    }
    ++stats_.steps;
    if (on_token) {
      CUDA_CHECK(cudaMemcpyAsync(pinned_, S + kTok * B_, B_ * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
      CUDA_CHECK(cudaMemcpyAsync(pinned_ + B_, S + kEmitted * B_, B_ * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
      CUDA_CHECK(cudaStreamSynchronize(st));
      for (idx_t b = 0; b < B_; ++b)
        if (pinned_[B_ + b]) on_token(b, pinned_[b]);
    }
    if (step >= max_forced && ((step + 1) % kDoneCheckEvery == 0 || on_token)) {
      CUDA_CHECK(cudaMemcpyAsync(done.data(), S + kDone * B_, B_ * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
      CUDA_CHECK(cudaStreamSynchronize(st));
      if (std::all_of(done.begin(), done.end(), [](int32_t d) { return d != 0; })) break;
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(st));
  stats_.step_seconds = std::chrono::duration<double>(Clock::now() - t1).count();

  // 4. results
  const std::vector<int32_t> host_slots = slots_.to_host<int32_t>(), out = out_.to_host<int32_t>();
  std::vector<SlotOutput> res(static_cast<size_t>(B_));
  for (idx_t b = 0; b < B_; ++b) {
    const int32_t n = host_slots[kNOut * B_ + b];
    for (int32_t k = 0; k < n; ++k) res[b].generated.push_back(out[size_t(k) * B_ + b]);
    res[b].stopped_at_eot = host_slots[kEot * B_ + b] != 0;
    stats_.generated_tokens += n;
  }
  return res;
}

template class CudaGenerator<float>;
template class CudaGenerator<__nv_bfloat16>;

}  // namespace moessm::cuda
