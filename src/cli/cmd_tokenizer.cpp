// `moessm tokenizer encode | decode | train`: inspect a tokenizer and train a byte-level BPE.
// encode prints the ids on one line, space-separated; decode prints the text followed by a
// newline; train writes a Hugging Face tokenizer.json (through write_file_atomic) and prints
// progress. --input for train takes files or directories (all regular files inside, sorted by
// name), comma-separated and/or repeated; each file is one document.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/check.h"
#include "io/file_util.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"

namespace moessm::cli {
namespace {

const char* const kUsage =
    "usage: moessm tokenizer <action> [options]      (moessm tokenizer <action> --help)\n\n"
    "actions:\n"
    "  encode   print the token ids of a text\n"
    "  decode   print the text of token ids\n"
    "  train    train a byte-level BPE (GPT-2 pre-tokenizer) and write a tokenizer.json\n\n"
    "A tokenizer is 'byte' (one id per byte) or a Hugging Face tokenizer.json with a byte-level\n"
    "BPE model, e.g. data/tokenizers/gpt2/tokenizer.json.\n";

std::vector<std::string> split_list(const std::string& s, const char* seps) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::strchr(seps, c)) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

int encode_action(int argc, char** argv) {
  Args a("tokenizer encode", "Print the token ids of a text, space-separated on one line.");
  a.path("tokenizer", "'byte' or a tokenizer.json", "", true)
      .option("text", "the text to encode (or use --file)")
      .path("file", "encode the contents of this file instead of --text");
  if (!a.parse(argc, argv)) return 0;
  CHECK(a.has("text") != a.has("file"), "moessm tokenizer encode: give exactly one of --text and --file");
  auto tok = Tokenizer::load(a.str("tokenizer"));
  const std::string text = a.has("text") ? a.str("text") : read_regular_file(a.str("file"), kMaxTextFileBytes);
  std::string line;
  for (int32_t id : tok->encode(text)) {
    if (!line.empty()) line.push_back(' ');
    line += std::to_string(id);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

int decode_action(int argc, char** argv) {
  Args a("tokenizer decode", "Print the text of token ids (followed by a newline).");
  a.path("tokenizer", "'byte' or a tokenizer.json", "", true)
      .option("ids", "token ids separated by spaces or commas, e.g. \"15496 995\"", "", true);
  if (!a.parse(argc, argv)) return 0;
  auto tok = Tokenizer::load(a.str("tokenizer"));
  std::vector<int32_t> ids;
  for (const std::string& s : split_list(a.str("ids"), " ,\t\n[]")) {
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    CHECK(end && *end == '\0', "moessm tokenizer decode: --ids: '", s, "' is not an integer");
    CHECK(v >= 0 && v < tok->vocab_size(), "moessm tokenizer decode: --ids: id ", s, " is out of range [0, ",
          tok->vocab_size(), ")");
    ids.push_back(static_cast<int32_t>(v));
  }
  const std::string text = tok->decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

int train_action(int argc, char** argv) {
  // --input may be repeated: gather every occurrence before Args (which keeps the last one).
  std::vector<std::string> inputs;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strcmp(argv[i], "--input") == 0 && i + 1 < argc) {
      for (auto& s : split_list(argv[++i], ",")) inputs.push_back(s);
    } else if (i > 0 && std::strncmp(argv[i], "--input=", 8) == 0) {
      for (auto& s : split_list(argv[i] + 8, ",")) inputs.push_back(s);
    } else {
      rest.push_back(argv[i]);
    }
  }
  Args a("tokenizer train",
         "Train a byte-level BPE with the GPT-2 pre-tokenizer and write it as a Hugging Face\n"
         "tokenizer.json: ids 0..255 are bytes (GPT-2 order), then learned tokens, and the last\n"
         "id is <|endoftext|>. Deterministic: the same input gives the same file.\n"
         "example: moessm tokenizer train --input data/corpus/austen --vocab-size 4096 --out runs/tok/tokenizer.json");
  a.path("input", "text files or directories, comma-separated or repeated (required)")
      .option("vocab-size", "total number of ids, including the 256 bytes and <|endoftext|>", "4096")
      .path("out", "output tokenizer.json", "", true);
  if (!a.parse(static_cast<int>(rest.size()), rest.data())) return 0;
  CHECK(!inputs.empty(), "moessm tokenizer train: missing required option --input (see --help)");

  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    CHECK(file_exists(in), "moessm tokenizer train: --input: ", in, ": no such file or directory");
    if (is_directory(in)) {
      std::vector<std::string> inside;
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.is_regular_file()) inside.push_back(e.path().string());
      std::sort(inside.begin(), inside.end());
      CHECK(!inside.empty(), "moessm tokenizer train: --input: directory ", in, " holds no files");
      files.insert(files.end(), inside.begin(), inside.end());
    } else {
      files.push_back(in);
    }
  }
  const int64_t vocab = a.integer("vocab-size");
  CHECK(vocab >= 257 && vocab <= (int64_t(1) << 24), "moessm tokenizer train: --vocab-size: expected 257..",
        int64_t(1) << 24, ", found ", vocab);

  prepare_output_file(a.str("out"));  // fail before training, not after
  const auto t0 = std::chrono::steady_clock::now();
  BpeTrainer trainer;
  for (const std::string& f : files) {
    const std::string text = read_regular_file(f, kMaxTextFileBytes);
    trainer.add_text(text);
    std::printf("tokenizer train: read %s (%zu bytes)\n", f.c_str(), text.size());
  }
  BpeTrainOptions opt;
  opt.vocab_size = static_cast<int32_t>(vocab);
  opt.log = [](const std::string& s) {
    std::printf("%s\n", s.c_str());
    std::fflush(stdout);
  };
  BpeTrainStats st;
  const Json doc = trainer.train(opt, &st);
  write_file_atomic(a.str("out"), doc.dump(2) + "\n");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %s: vocab %d (%d merges) from %lld bytes in %.2f s\n", a.str("out").c_str(), st.vocab_size,
              st.merges, (long long)st.bytes, secs);
  return 0;
}

int cmd_tokenizer(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string action = argv[1];
  if (action == "encode") return encode_action(argc - 1, argv + 1);
  if (action == "decode") return decode_action(argc - 1, argv + 1);
  if (action == "train") return train_action(argc - 1, argv + 1);
  FAIL("moessm tokenizer: unknown action '", action, "' (expected encode, decode or train; see --help)");
}

}  // namespace

REGISTER_COMMAND("tokenizer", "encode/decode text with a tokenizer; train a byte-level BPE", cmd_tokenizer);

}  // namespace moessm::cli
