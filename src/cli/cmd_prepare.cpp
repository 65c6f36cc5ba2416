// `moessm prepare`: tokenise text files into a data directory (train.bin, val.bin, meta.json,
// tokenizer.json) with prepare_data (src/data/prepare.h). --input and --val take comma-separated
// lists and may be repeated; every occurrence counts (Args keeps only the last, so they are
// collected here first).
#include <cstdio>
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/check.h"
#include "data/prepare.h"

namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    size_t b = s.find(',', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) out.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

// Every value of --name (as "--name V" or "--name=V"), split at commas.
std::vector<std::string> collect(int argc, char** argv, const std::string& name) {
  std::vector<std::string> out;
  const std::string flag = "--" + name, eq = flag + "=";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    if (a == flag && i + 1 < argc) v = argv[++i];
    else if (a.rfind(eq, 0) == 0) v = a.substr(eq.size());
    else continue;
    for (auto& f : split_commas(v)) out.push_back(f);
  }
  return out;
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e6) std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

int cmd_prepare(int argc, char** argv) {
  moessm::cli::Args args(
      "prepare",
      "Tokenise text files into a self-describing data directory:\n"
      "  DIR/train.bin, DIR/val.bin  token shards (format: docs/data.md)\n"
      "  DIR/meta.json               tokenizer, vocab size, token counts, source files and sizes\n"
      "  DIR/tokenizer.json          copy of the tokenizer (not for --tokenizer byte)\n"
      "Each file is one document; documents are joined with the tokenizer's end-of-text id\n"
      "(when it has one). Validation split, first rule that applies: the --val files; else\n"
      "persuasion.txt when it is among several inputs (the bundled Austen corpus); else the last\n"
      "--val-fraction of the tokens. Inputs must be non-empty UTF-8 text.\n\n"
      "example: moessm prepare --input data/corpus/austen --tokenizer byte --out runs/data/austen-byte");
  args.path("input", "text files or directories (their *.txt), comma-separated; may be repeated", "", true)
      .path("tokenizer", "'byte', a tokenizer.json, or a prepared data directory", "byte")
      .path("out", "output directory (created if missing; existing files are replaced)", "", true)
      .path("val", "validation files, comma-separated; may be repeated (also removed from --input)")
      .option("val-fraction", "share of the tokens for validation when no validation files apply", "0.05")
      .option("min-tokens", "fewest tokens each split may have", std::to_string(moessm::kMinSplitTokens))
      .flag("quiet", "print only the summary line");
  if (!args.parse(argc, argv)) return 0;

  moessm::PrepareOptions opt;
  opt.inputs = collect(argc, argv, "input");
  opt.val_inputs = collect(argc, argv, "val");
  opt.tokenizer = args.str("tokenizer");
  opt.out_dir = args.str("out");
  opt.val_fraction = args.number("val-fraction");
  opt.min_split_tokens = args.integer("min-tokens");
  CHECK(!opt.inputs.empty(), "moessm prepare: --input: no file names given");
  if (!args.on("quiet")) opt.log = [](const std::string& s) { std::printf("%s\n", s.c_str()); std::fflush(stdout); };

  moessm::PrepareResult r = moessm::prepare_data(opt);
  if (args.has("val-fraction") && r.split_rule != "fraction")
    std::printf("note: --val-fraction was not used: the validation split is %s\n",
                r.split_rule == "persuasion" ? "persuasion.txt (pass --val to choose other files)"
                                             : "the --val files");
  std::printf("prepared %s: train %llu tokens, val %llu tokens (split: %s), vocab %d (%s ids), "
              "from %zu files, %s in %.2f s (%s/s)\n",
              opt.out_dir.c_str(), (unsigned long long)r.train_tokens, (unsigned long long)r.val_tokens,
              r.split_rule.c_str(), r.vocab_size, r.vocab_size <= 65535 ? "uint16" : "uint32",
              r.sources.size(), human_bytes(double(r.input_bytes)).c_str(), r.seconds,
              human_bytes(r.seconds > 0 ? r.input_bytes / r.seconds : 0).c_str());
  return 0;
}

}  // namespace

REGISTER_COMMAND("prepare", "tokenise text into train/val token shards + meta.json", cmd_prepare);
