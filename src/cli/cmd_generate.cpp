// `moessm generate`: sample text from a checkpoint with the recurrent decoder (docs/inference.md).
//
// Slots: one --prompt with --batch N gives N independent samples of the same prompt; several
// --prompt values give one slot each. Output on stdout: slot 0 streams as it is produced (the
// prompt, then each token, flushed per token); with more than one slot every slot's text is
// preceded by a line "=== slot i ===" and slots 1.. are printed when generation ends. Throughput
// goes to stderr. Generation of a slot stops at the tokenizer's end-of-text id (not printed, but
// kept in --ids-out) or after --max-new-tokens.
// State snapshots (src/infer/state_file.h): --state-out saves the state after the prompt (prompts
// of equal token length), --state-in resumes from one (the prompt, possibly empty, continues it).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/check.h"
#include "infer/decoder.h"
#include "ops/matmul.h"
#include "infer/generator.h"
#include "infer/state_file.h"
#include "io/file_util.h"
#include "model/checkpoint.h"
#include "model/mixer_registry.h"
#include "tokenizer/tokenizer.h"
#ifdef MOESSM_CUDA
#include <cuda_bf16.h>

#include "infer/cuda/cuda_generator.h"
#endif

namespace moessm::cli {
namespace {

// Args keeps the last value of a repeated option, so the (repeatable) --prompt values are taken
// out of argv here; the rest goes to Args unchanged.
std::vector<std::string> take_prompts(int argc, char** argv, std::vector<char*>* rest,
                                      const std::vector<std::string>& value_options) {
  std::vector<std::string> prompts;
  rest->push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--prompt") {
      CHECK(i + 1 < argc, "moessm generate: option --prompt needs a value");
      prompts.push_back(argv[++i]);
    } else if (a.rfind("--prompt=", 0) == 0) {
      prompts.push_back(a.substr(9));
    } else {
      rest->push_back(argv[i]);
      // keep an option's value with it, even when the value looks like "--prompt"
      for (const auto& o : value_options)
        if (a == "--" + o && i + 1 < argc) rest->push_back(argv[++i]);
    }
  }
  return prompts;
}

std::string resolve_tokenizer(const Args& a) {
  if (a.has("tokenizer")) return a.str("tokenizer");
  // A training run directory resolves to its checkpoint/, which holds the data's tokenizer.
  const std::string inside = path_join(resolve_model_dir(a.str("model")), "tokenizer.json");
  CHECK(file_exists(inside), "moessm generate: ", a.str("model"),
        " holds no tokenizer.json; pass --tokenizer FILE (a tokenizer.json) or --tokenizer byte");
  return inside;
}

void write_ids(const std::string& path, const std::vector<std::vector<int32_t>>& prompts,
               const std::vector<SlotOutput>& out) {
  std::string text;
  for (size_t b = 0; b < prompts.size(); ++b) {
    bool first = true;
    for (const auto* v : {&prompts[b], &out[b].generated})
      for (int32_t id : *v) {
        text += (first ? "" : " ") + std::to_string(id);
        first = false;
      }
    text += "\n";
  }
  write_file_atomic(path, text);
}

// Prints slots 1.. (slot 0 streamed), the throughput, and writes --ids-out.
void report(const Args& a, const Tokenizer& tok, const std::vector<std::string>& texts,
            const std::vector<std::vector<int32_t>>& prompts, const std::vector<SlotOutput>& out,
            const GenerateStats& s) {
  const idx_t B = idx_t(out.size());
  std::printf("\n");
  for (idx_t b = 1; b < B; ++b) {
    std::vector<int32_t> ids = out[b].generated;
    if (out[b].stopped_at_eot) ids.pop_back();
    std::printf("=== slot %lld ===\n%s%s\n", (long long)b, texts[b].c_str(), tok.decode(ids).c_str());
  }
  std::fflush(stdout);
  std::fprintf(stderr, "prompt: %lld tokens (%lld slot%s) in %.3f s: %.1f tokens/s",
               (long long)s.prefill_tokens, (long long)B, B > 1 ? "s" : "", s.prefill_seconds,
               s.prefill_seconds > 0 ? double(s.prefill_tokens) / s.prefill_seconds : 0.0);
  if (s.forced_tokens) std::fprintf(stderr, " (+%lld ragged prompt tokens fed by steps)", (long long)s.forced_tokens);
  std::fprintf(stderr, "\ngenerated: %lld tokens in %.3f s: %.1f tokens/s (%lld steps of %lld slot%s, %.3f ms/step)\n",
               (long long)s.generated_tokens, s.step_seconds,
               s.step_seconds > 0 ? double(s.generated_tokens) / s.step_seconds : 0.0, (long long)s.steps,
               (long long)B, B > 1 ? "s" : "", s.steps ? 1e3 * s.step_seconds / double(s.steps) : 0.0);
  if (a.has("ids-out")) {
    write_ids(a.str("ids-out"), prompts, out);
    std::fprintf(stderr, "wrote ids %s\n", a.str("ids-out").c_str());
  }
}

// --state-out saves the state after the prompt of every slot: the prompts need one length.
void check_state_out_prompts(const std::vector<std::vector<int32_t>>& prompts) {
  for (size_t b = 1; b < prompts.size(); ++b)
    CHECK(prompts[b].size() == prompts[0].size(), "moessm generate: --state-out needs prompts of equal "
          "token length (the state is saved after the prompt of every slot); slot 0 has ",
          prompts[0].size(), " tokens, slot ", b, " has ", prompts[b].size());
}
// The bookkeeping of a state saved after the prompts.
void after_prompt(const std::vector<std::vector<int32_t>>& prompts, std::vector<int64_t>& consumed,
                  std::vector<int32_t>& last) {
  for (size_t b = 0; b < prompts.size(); ++b) {
    consumed[b] += int64_t(prompts[b].size());
    if (!prompts[b].empty()) last[b] = prompts[b].back();
  }
}

// Streams slot 0's text (the end-of-text id is not printed).
struct StreamSlot0 {
  const Tokenizer& tok;
  int32_t eot;
  void operator()(idx_t slot, int32_t id) const {
    if (slot != 0 || id == eot) return;
    const std::string piece = tok.decode({id});
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  }
};

#ifdef MOESSM_CUDA
// The same run on one GPU: the one model on the CUDA backend, CUDA-graph steps, sampling on the
// device; state files are exchanged through the host fp32 layout (the same files as the CPU's).
template <typename Act>
int run_cuda(const Args& a, const LanguageModel<float>& host, const Tokenizer& tok,
             const std::vector<std::string>& texts, const std::vector<std::vector<int32_t>>& prompts,
             const GenerateOptions& opts, const StateSnapshot<float>* snap) {
  Model<CudaBackend<Act>> m(host.config());
  m.upload_params(host.params.data());
  const idx_t B = idx_t(prompts.size());
  cuda::CudaGenerator<Act> gen(m, B, opts, a.integer("prefill-chunk"));
  std::vector<int64_t> consumed(static_cast<size_t>(B), 0);
  std::vector<int32_t> last(static_cast<size_t>(B), -1);
  if (snap) {
    gen.load(snap->state.data(), snap->next_logits.empty() ? nullptr : snap->next_logits.data());
    consumed = snap->tokens_consumed;
    last = snap->last_token;
  }
  std::function<void()> save_after_prompt;
  if (a.has("state-out")) {
    check_state_out_prompts(prompts);
    save_after_prompt = [&] {
      std::vector<float> state(static_cast<size_t>(B * m.state_size())), logits(static_cast<size_t>(B * m.vocab()));
      m.state_to_host(state.data(), gen.state(), B);
      gen.logits_to_host(logits.data());
      after_prompt(prompts, consumed, last);
      save_state_file(a.str("state-out"), host, B, state.data(), logits.data(), consumed, last);
    };
  }
  if (prompts.size() > 1) std::printf("=== slot 0 ===\n");
  std::fputs(texts[0].c_str(), stdout);
  std::fflush(stdout);
  std::vector<SlotOutput> out = gen.run(prompts, StreamSlot0{tok, opts.eot_id}, save_after_prompt);
  report(a, tok, texts, prompts, out, gen.stats());
  if (a.has("state-out")) std::fprintf(stderr, "wrote state %s\n", a.str("state-out").c_str());
  return 0;
}
#endif

int cmd_generate(int argc, char** argv) {
  Args a("generate",
         "Generate text with the recurrent decoder (constant memory per generated token).\n"
         "--prompt may be repeated: one slot per prompt. With one prompt, --batch N samples N\n"
         "independent continuations (slot i uses random stream i of --seed). Slot 0 streams to\n"
         "stdout; with several slots each slot's text follows a line '=== slot i ===' and slots\n"
         "1.. are printed at the end. Prompt and generation throughput go to stderr.");
  a.path("model", "checkpoint directory (config.json, model.safetensors, optional tokenizer.json)", "", true)
      .option("prompt", "prompt text (repeatable: one slot each); may be empty with --state-in")
      .path("tokenizer", "tokenizer.json path or 'byte' (default: <model>/tokenizer.json)")
      .option("max-new-tokens", "tokens to generate per slot (stops earlier at end-of-text)", "128")
      .option("temperature", "softmax temperature; 0 = greedy", "1.0")
      .option("top-k", "keep the k most likely tokens; 0 = off", "0")
      .option("top-p", "keep the smallest set of most likely tokens with this mass; 1 = off", "1.0")
      .option("seed", "sampling seed", "0")
      .option("batch", "independent slots for a single prompt (default 1, or the --state-in batch)")
      .option("prefill-chunk", "tokens per prefill forward pass; 0 = auto", "0")
      .path("ids-out", "write prompt+generated ids per slot (one line each, space-separated)")
      .path("state-out", "save the recurrent state after the prompt (safetensors)")
      .path("state-in", "resume from a saved state (the prompt continues it)")
      .option("device", "cpu or cuda (one GPU, every layer type: CUDA-graph decode, sampling on the device)", "cpu")
      .option("dtype", "with --device cuda: bfloat16 (bf16 activations, fp32 state) or float32", "bfloat16")
      .flag("ignore-eot", "do not stop at the end-of-text id (fixed-length runs for benchmarks)");
  std::vector<char*> rest;
  const std::vector<std::string> prompt_texts =
      take_prompts(argc, argv, &rest,
                   {"model", "tokenizer", "max-new-tokens", "temperature", "top-k", "top-p", "seed",
                    "batch", "prefill-chunk", "ids-out", "state-out", "state-in", "device", "dtype"});
  if (!a.parse(int(rest.size()), rest.data())) return 0;

  check_model_supported(load_model_config(a.str("model")), a.str("device"));  // before loading weights
  auto model = load_model<float>(a.str("model"));
  const ModelConfig& cfg = model->config();
  auto tok = Tokenizer::load(resolve_tokenizer(a));
  CHECK(tok->vocab_size() <= cfg.vocab_size, "moessm generate: the tokenizer has ", tok->vocab_size(),
        " ids but the model's vocab_size is ", cfg.vocab_size, " (tokenizer and checkpoint do not match)");

  StateSnapshot<float> snap;
  const bool resume = a.has("state-in");
  if (resume) snap = load_state_file(a.str("state-in"), *model);
  CHECK(!prompt_texts.empty() || resume, "moessm generate: give --prompt TEXT (or --state-in FILE to continue a saved state)");

  // Slots.
  idx_t B = a.has("batch") ? a.integer("batch") : (resume ? snap.batch : 1);
  CHECK(B >= 1, "moessm generate: --batch must be >= 1, got ", B);
  std::vector<std::string> texts = prompt_texts.empty() ? std::vector<std::string>{""} : prompt_texts;
  if (texts.size() > 1) {
    CHECK(!a.has("batch") || B == idx_t(texts.size()), "moessm generate: --batch ", B, " but ",
          texts.size(), " prompts were given (several prompts are one slot each)");
    B = idx_t(texts.size());
  } else {
    texts.assign(static_cast<size_t>(B), texts[0]);
  }
  if (resume)
    CHECK(snap.batch == B, a.str("state-in"), ": the state holds ", snap.batch, " slot(s) but this run has ", B,
          "; a state is used with the batch it was written with (use --batch ", snap.batch,
          " or as many prompts)");
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& t : texts) prompts.push_back(tok->encode(t));

  GenerateOptions opts;
  opts.sampling.temperature = a.number("temperature");
  opts.sampling.top_k = a.integer("top-k");
  opts.sampling.top_p = a.number("top-p");
  opts.max_new_tokens = a.integer("max-new-tokens");
  opts.seed = static_cast<uint64_t>(a.integer("seed"));
  opts.eot_id = a.on("ignore-eot") ? -1 : tok->eot_id();
  opts.vocab_limit = tok->vocab_size();
  const std::string device = a.str("device"), dtype = a.str("dtype");
  CHECK(device == "cpu" || device == "cuda", "moessm generate: --device must be cpu or cuda, found '", device, "'");
  CHECK(dtype == "bfloat16" || dtype == "float32", "moessm generate: --dtype must be bfloat16 or float32, found '", dtype, "'");
#ifndef MOESSM_CUDA
  CHECK(device == "cpu", "moessm generate: --device cuda needs a build with the CUDA backend (-DMOESSM_CUDA=ON)");
#endif
  if (device == "cuda") {
#ifdef MOESSM_CUDA
    const StateSnapshot<float>* s = resume ? &snap : nullptr;
    return dtype == "float32" ? run_cuda<float>(a, *model, *tok, texts, prompts, opts, s)
                              : run_cuda<__nv_bfloat16>(a, *model, *tok, texts, prompts, opts, s);
#endif
  }
  cpu::blas_single_threaded_for_inference();  // OpenMP alone runs the threads (ops/matmul.h)
  Decoder<float> dec(*model, B, a.integer("prefill-chunk"));
  Generator<float> gen(dec, opts);

  std::vector<int64_t> consumed(static_cast<size_t>(B), 0);
  std::vector<int32_t> last(static_cast<size_t>(B), -1);
  if (resume) {
    dec.load(snap.state.data(), snap.next_logits.empty() ? nullptr : snap.next_logits.data(), 0);
    consumed = snap.tokens_consumed;
    last = snap.last_token;
  }
  std::function<void()> save_after_prompt;
  if (a.has("state-out")) {
    check_state_out_prompts(prompts);
    save_after_prompt = [&] {
      after_prompt(prompts, consumed, last);
      save_state_file(a.str("state-out"), *model, B, dec.state(), dec.has_logits() ? dec.logits() : nullptr,
                      consumed, last);
    };
  }

  // Stream slot 0.
  if (B > 1) std::printf("=== slot 0 ===\n");
  std::fputs(texts[0].c_str(), stdout);
  std::fflush(stdout);
  const StreamSlot0 on_token{*tok, opts.eot_id};
  std::vector<SlotOutput> out = gen.run(prompts, on_token, save_after_prompt);
  report(a, *tok, texts, prompts, out, gen.stats());
  if (a.has("state-out")) std::fprintf(stderr, "wrote state %s\n", a.str("state-out").c_str());
  return 0;
}

}  // namespace
REGISTER_COMMAND("generate", "sample text with the recurrent decoder (state snapshots, batches)", cmd_generate);
}  // namespace moessm::cli
