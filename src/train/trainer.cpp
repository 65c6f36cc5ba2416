// train_model (see trainer.h).
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include "core/check.h"
#include "data/loader.h"
#include "data/packing.h"
#include "data/shards.h"
#include "data/tasks.h"
#include "dist/dist.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/mixer_registry.h"
#include "ops/matmul.h"
#include "tokenizer/tokenizer.h"
#include "train/schedule.h"
#include "train/train_backend.h"

namespace moessm {

namespace {

// Test hook (fault tests, docs/distributed.md): MOESSM_KILL_RANK_AT_STEP="R:S" makes rank R end at
// once (exit status 137, as if killed) when it starts step S. Malformed values are ignored.
void maybe_die(int rank, int64_t step) {
  static const char* spec = std::getenv("MOESSM_KILL_RANK_AT_STEP");
  if (!spec) return;
  long long r = -1, s = -1;
  if (std::sscanf(spec, "%lld:%lld", &r, &s) != 2 || r != rank || s != step) return;
  std::fprintf(stderr, "moessm: injected death of rank %d at step %lld\n", rank, (long long)step);
  std::fflush(stderr);
  ::_exit(137);
}

using Clock = std::chrono::steady_clock;

double unigram_entropy(const std::vector<int32_t>& ids) {
  std::unordered_map<int32_t, int64_t> counts;
  for (int32_t id : ids) ++counts[id];
  double h = 0, n = double(ids.size());
  for (const auto& kv : counts) {
    double p = double(kv.second) / n;
    h -= p * std::log(p);
  }
  return h;
}

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  int64_t t = int64_t(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t / 60 % 60));
  else std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

// Names in a run directory that a completed checkpoint write clears away: leftovers of crashed
// writes and of older moessm layouts.
bool is_checkpoint_leftover(const std::string& name) {
  return name == "checkpoint.old" || name == "checkpoint.tmp" || name == "checkpoint.legacy" ||
         name.rfind("checkpoint.tmp.", 0) == 0 || name.rfind("metrics.jsonl.tmp.", 0) == 0;
}

// Makes the complete generation NAME of run directory OUT the published one: the checkpoint
// link points at it, older generations and leftovers of crashed writes are removed. Steps that
// are already done are skipped, so a resumed run finishes the publication a crash cut short.
void publish_generation(const std::string& out, const std::string& name) {
  const std::string link = path_join(out, "checkpoint");
  if (is_directory(link) && !is_symlink(link)) rename_path(link, path_join(out, "checkpoint.legacy"));
  std::error_code ec;
  if (!is_symlink(link) || std::filesystem::read_symlink(link, ec).string() != name) replace_symlink(name, link);
  for (const std::string& entry : list_dir(out)) {
    const bool older = checkpoint_generation_step(entry) >= 0 && entry != name;
    if (older || is_checkpoint_leftover(entry)) remove_tree(path_join(out, entry));
  }
}

// Writes the checkpoint generation <out>/checkpoint-<step>/ from host copies of the weights and
// AdamW moments (table layout) and makes it the newest (see trainer.h for the order of steps).
void save_checkpoint(const std::string& out, int64_t step, const TrainBackend& backend, const Json& state,
                     const std::string& tokenizer_json, const SpecialTokenIds& ids) {
  const std::string name = checkpoint_generation_name(step), gen = path_join(out, name);
  std::vector<float> params, m, v;
  backend.download(params, m, v);
  remove_tree(gen);  // an incomplete generation of this step, left by a crashed write
  make_dirs(gen);
  save_checkpoint_dir(gen, backend.config(), backend.table(), params.data(), {{"step", std::to_string(step)}}, ids);
  {
    SafetensorsWriter w;
    backend.table().visit([&](const ParamInfo& p) {
      w.add("exp_avg." + p.name, DType::F32, p.shape, m.data() + p.offset);
      w.add("exp_avg_sq." + p.name, DType::F32, p.shape, v.data() + p.offset);
    });
    w.write(path_join(gen, "optimizer.safetensors"));
  }
  if (!tokenizer_json.empty()) write_file_atomic(path_join(gen, "tokenizer.json"), tokenizer_json);
  write_file_atomic(path_join(gen, "trainer_state.json"), state.dump(2) + "\n");
  // Every file above is fsync'ed and renamed into place with the directory fsync'ed: the
  // marker, written last the same way, completes the generation.
  write_file_atomic(path_join(gen, kCheckpointMarker), std::to_string(step) + "\n");
  sync_dir(out);  // the generation's own directory entry is durable before anything older goes
  publish_generation(out, name);
}

// Keeps the metrics lines of steps <= last_step (a resumed run rewrites what came after). A
// last line that does not parse (torn by a crash while it was appended) is dropped with a
// warning; an unreadable line before it is an error naming the line.
void truncate_metrics(const std::string& path, int64_t last_step) {
  if (!file_exists(path)) return;
  std::vector<std::string> lines;
  {
    std::istringstream in(read_file(path));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) lines.push_back(line);
  }
  std::string kept;
  for (size_t i = 0; i < lines.size(); ++i) {
    int64_t step = 0;
    try {
      step = Json::parse(lines[i], path).at("step", path).as_int(path + ": step");
    } catch (const Error& e) {
      CHECK(i + 1 == lines.size(), path, ": line ", i + 1, " of ", lines.size(), " is not a metrics record (", e.what(),
            "); only the last line may be torn by a crash");
      std::fprintf(stderr, "warning: %s: dropping a torn last line (%zu bytes), left by an interrupted write\n",
                   path.c_str(), lines[i].size());
      continue;
    }
    if (step <= last_step) kept += lines[i] + "\n";
  }
  write_file_atomic(path, kept);
}

// Refuses, or with --overwrite clears, a run directory that already holds a run or a checkpoint.
bool resumes_in_place(const TrainOptions& o) {
  if (o.resume.empty() || !is_directory(o.out) || !is_directory(o.resume)) return false;
  std::error_code ec;
  return std::filesystem::equivalent(o.out, o.resume, ec);
}

void prepare_run_dir(const TrainOptions& o) {
  if (resumes_in_place(o)) return;
  const std::string what = existing_output(o.out);
  if (what.empty()) return;
  CHECK(o.overwrite, "train: the run directory '", o.out, "' already holds ", what,
        "; pass --overwrite to replace it, or --resume ", o.out, " to continue it");
  std::fprintf(stderr, "warning: --overwrite: removing the run in '%s' (%s)\n", o.out.c_str(), what.c_str());
  for (const std::string& entry : list_dir(o.out))
    if (entry == "metrics.jsonl" || entry == "config.json" || entry == "model.safetensors" || entry == "checkpoint" ||
        checkpoint_generation_step(entry) >= 0 || is_checkpoint_leftover(entry))
      remove_tree(path_join(o.out, entry));
}

}  // namespace

std::string find_run_checkpoint(const std::string& run_dir) { return newest_run_checkpoint(run_dir); }

Json read_trainer_state(const std::string& ck) {
  const std::string sp = path_join(ck, "trainer_state.json");
  Json st = Json::parse_file(sp);
  const int64_t step = st.at("step", sp).as_int(sp + ": step");
  CHECK(step >= 0, sp, ": step must be a non-negative integer, found ", step);
  st.at("elapsed_s", sp).as_number(sp + ": elapsed_s");
  CHECK(st.at("options", sp).is_object(), sp, ": options must be a JSON object");
  for (const char* field : {"world_size", "global_batch"})
    if (const Json* v = st.get(field))
      CHECK(v->as_int(sp + ": " + field) >= 1, sp, ": ", field, " must be a positive integer, found ", v->dump());
  return st;
}

int64_t recorded_global_batch(const Json& st) {
  if (const Json* g = st.get("global_batch")) return g->as_int("trainer state: global_batch");
  // A state from before data-parallel runs: one process, its batch_size.
  const Json* b = st.at("options", "trainer state").get("batch_size");
  return b ? b->as_int("trainer state: options.batch_size") : 0;
}

int64_t recorded_world_size(const Json& st) {
  const Json* w = st.get("world_size");
  return w ? w->as_int("trainer state: world_size") : 1;
}

void inherit_batch_for_world(TrainOptions& o, const Json& st, int world_size) {
  const int64_t global = recorded_global_batch(st);
  if (global > 0 && world_size != recorded_world_size(st) && global % world_size == 0) o.batch_size = global / world_size;
}

std::string first_config_difference(const Json& a, const Json& b, const std::string& prefix) {
  auto show = [](const Json* j) { return j ? j->dump() : std::string("(absent)"); };
  if (a.is_object() && b.is_object()) {
    for (const auto& kv : a.as_object()) {
      const std::string name = prefix.empty() ? kv.first : prefix + "." + kv.first;
      const Json* other = b.get(kv.first);
      if (!other) return name + ": checkpoint " + kv.second.dump() + ", config (absent)";
      std::string d = first_config_difference(kv.second, *other, name);
      if (!d.empty()) return d;
    }
    for (const auto& kv : b.as_object())
      if (!a.has(kv.first))
        return (prefix.empty() ? kv.first : prefix + "." + kv.first) + ": checkpoint (absent), config " + show(&kv.second);
    return "";
  }
  if (a.is_array() && b.is_array()) {
    const auto &x = a.as_array(), &y = b.as_array();
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      std::string d = first_config_difference(x[i], y[i], prefix + "[" + std::to_string(i) + "]");
      if (!d.empty()) return d;
    }
    if (x.size() != y.size())
      return prefix + ": checkpoint " + std::to_string(x.size()) + " entries, config " + std::to_string(y.size());
    return "";
  }
  if (a != b) return (prefix.empty() ? "config" : prefix) + ": checkpoint " + a.dump() + ", config " + b.dump();
  return "";
}

TrainResult train_model(const ModelConfig& cfg, const TrainOptions& o) { return train_model(cfg, o, dist::world()); }

TrainResult train_model(const ModelConfig& cfg, const TrainOptions& o, dist::Communicator& comm) {
  o.validate();
  // Data parallelism (docs/distributed.md): W processes, each with batch_size rows of every
  // global batch of W·batch_size; rank 0 alone prints, writes metrics and checkpoints.
  const int W = comm.world_size(), rank = comm.rank();
  const bool lead = comm.is_lead();
  CHECK(W == 1 || o.device == "cpu", "train --device ", o.device, " with ", W, " processes: data-parallel training "
        "runs on the CPU only so far (multi-GPU is a later step, docs/distributed.md); use --device cpu or one process");
  // Expert parallelism (docs/distributed.md): groups of G consecutive ranks share the experts.
  const int G = int(o.expert_parallel);
  CHECK(W % G == 0, "train --expert-parallel ", G, ": the group size must divide the number of processes (", W,
        W == 1 ? "; start the run with mpirun -np N, N a multiple of the group size)" : ")");
  CHECK(!(o.zero1 && G > 1), "--zero1 with --expert-parallel: not yet (the expert slabs are sharded already; "
        "docs/distributed.md)");
  check_model_supported(cfg, o.device);  // before any work: names the layer, the device and the missing op
  TrainResult res;
  // A resumed run: the checkpoint, its state and the checks against it come before the run
  // directory is touched.
  std::string ck;
  Json st;
  if (!o.resume.empty()) {
    ck = find_run_checkpoint(o.resume);
    CHECK(!ck.empty(), "--resume ", o.resume, ": no complete checkpoint found (expected ",
          path_join(o.resume, "checkpoint-<step>"), "/ with its ", kCheckpointMarker, " marker)");
    const std::string diff = first_config_difference(load_model_config(ck).to_json(), cfg.to_json());
    CHECK(diff.empty(), "--resume ", ck, ": the model config differs from the checkpoint's: ", diff);
    st = read_trainer_state(ck);
    std::vector<std::string> changed = changed_options_on_resume(st.at("options"), o);
    // The batch that must match is the global one (processes × batch_size): a run may resume
    // with another number of processes as long as it is the same. (With the same number, the
    // batch_size line above says it.)
    const int64_t recorded_global = recorded_global_batch(st), global = int64_t(W) * o.batch_size;
    if (W != recorded_world_size(st)) {
      changed.erase(std::remove_if(changed.begin(), changed.end(),
                                   [](const std::string& c) { return c.rfind("batch_size:", 0) == 0; }),
                    changed.end());
    }
    if (W != recorded_world_size(st) && recorded_global != global)
      changed.push_back("global batch (processes × batch_size): checkpoint " + std::to_string(recorded_global) + " (" +
                        std::to_string(recorded_world_size(st)) + " × " +
                        std::to_string(recorded_global / std::max<int64_t>(1, recorded_world_size(st))) + "), now " +
                        std::to_string(global) + " (" + std::to_string(W) + " × " + std::to_string(o.batch_size) + ")");
    if (!changed.empty()) {
      std::string list;
      for (const std::string& c : changed) list += "\n  " + c;
      CHECK(o.allow_changed_options, "--resume ", ck, ": options differ from the run's:", list,
            "\n(pass --allow-changed-options to continue with the new values)");
      if (lead)
        std::fprintf(stderr, "warning: --resume %s: continuing with changed options (--allow-changed-options):%s\n",
                     ck.c_str(), list.c_str());
    }
  }
  // The data is checked before the run directory is touched: both splits present, and made
  // with the tokenizer the directory holds.
  const std::string train_path = path_join(o.data, "train.bin"), val_path = path_join(o.data, "val.bin");
  CHECK(file_exists(train_path), "data directory '", o.data, "' has no train.bin (run `moessm prepare` first)");
  CHECK(file_exists(val_path), "data directory '", o.data, "' has no val.bin (run `moessm prepare` first)");
  const ShardHeader train_header = read_shard_header(train_path);
  check_shard_tokenizer(train_header, train_path, o.data);
  check_shard_tokenizer(read_shard_header(val_path), val_path, o.data);
  const std::string tok_path = path_join(o.data, "tokenizer.json");
  // Packed documents need the separator and a model and device that reset at it (checked here,
  // before the run directory is touched).
  int32_t separator = -1;
  if (o.pack_documents) {
    separator = file_exists(tok_path) ? Tokenizer::load(tok_path)->eot_id() : -1;
    CHECK(separator >= 0, "--pack-documents: the data's tokenizer (",
          file_exists(tok_path) ? tok_path : std::string("byte, no tokenizer.json in ") + o.data,
          ") has no end-of-text id, so the documents joined in ", train_path, " cannot be told apart");
    const std::string missing = train_seq_idx_missing(o.device, cfg);
    CHECK(missing.empty(), "--pack-documents on --device ", o.device, ": ", missing);
  }
  // answers_only regenerates the answer flags from the task options the directory was made with.
  TaskOptions task_opts;
  if (o.answers_only) task_opts = read_task_options(o.data);  // errors name meta.json
  // Silent misconfigurations get a warning (the run goes on).
  if (lead && o.warmup_steps >= o.max_steps)
    std::fprintf(stderr, "warning: warmup_steps %lld >= max_steps %lld: the learning rate never reaches lr %g\n",
                 (long long)o.warmup_steps, (long long)o.max_steps, o.lr);
  if (lead && int64_t(train_header.vocab_size) < cfg.vocab_size)
    std::fprintf(stderr, "warning: the data's vocabulary has %u ids but the model's vocab_size is %lld: %lld embedding "
                 "rows are never trained (set vocab_size to the tokenizer's size)\n", train_header.vocab_size,
                 (long long)cfg.vocab_size, (long long)(cfg.vocab_size - int64_t(train_header.vocab_size)));
  if (lead) {  // only rank 0 touches the run directory
    prepare_run_dir(o);
    make_dirs(o.out);
  }
  auto train_shard = std::make_shared<Shard>(read_shard(train_path));
  auto val_shard = std::make_shared<Shard>(read_shard(val_path));
  if (o.answers_only) {  // examples [first, first + n) of the task stream, checked against the shard
    auto mask = [&](Shard& sh, uint64_t first, const std::string& path) {
      const size_t L = size_t(task_opts.length);
      CHECK(sh.ids.size() % L == 0 && !sh.ids.empty(), path, ": ", sh.ids.size(), " tokens are not whole ", L,
            "-token examples of the task in ", path_join(o.data, "meta.json"), " (answers_only)");
      const TaskExample ex = make_task_example(task_opts, first);
      CHECK(std::equal(ex.ids.begin(), ex.ids.end(), sh.ids.begin()), path,
            ": its first example differs from the task's example ", first, " regenerated from ",
            path_join(o.data, "meta.json"), " (made by another moessm version? make the data again)");
      sh.scored = task_answer_flags(task_opts, first, int64_t(sh.ids.size() / L));
    };
    mask(*train_shard, 0, train_path);
    mask(*val_shard, uint64_t(train_shard->ids.size() / size_t(task_opts.length)), val_path);
  }
  CHECK(int64_t(train_shard->header.vocab_size) <= cfg.vocab_size, train_path, ": the data's vocabulary (",
        train_shard->header.vocab_size, " ids) is larger than the model's vocab_size ", cfg.vocab_size);
  // Read once (bounded as every tokenizer.json); each checkpoint carries a copy.
  const std::string tokenizer_json = file_exists(tok_path) ? read_regular_file(tok_path, kMaxTokenizerBytes) : "";
  // config.json names the tokenizer's end-of-text as bos / eos / pad (none without a tokenizer).
  SpecialTokenIds special;
  if (!tokenizer_json.empty()) {
    const int64_t eot = Tokenizer::load(tok_path)->eot_id();
    special = SpecialTokenIds{eot, eot, eot};
  }

  // Expert parallelism: groups of G consecutive ranks, each keeping its shard of the experts.
  std::unique_ptr<dist::Communicator> experts = comm.split(G), replicas = comm.replicas(G);
  std::unique_ptr<TrainBackend> backend = make_train_backend(o.device, cfg, ExpertShard{rank % G, G});
  if (G > 1) backend->set_expert_parallel(experts.get(), replicas.get());
  DataLoader loader(train_shard, uint64_t(o.seed));
  DataLoader val_loader(val_shard, 0);
  int64_t step = 0;
  double elapsed_before = 0;
  const std::string metrics_path = path_join(o.out, "metrics.jsonl");

  // The weights and moments every rank starts from, whole (table()'s layout): rank 0's, read
  // from the checkpoint or freshly initialised, sent to the others below.
  const size_t n_params = backend->table().total();
  std::vector<float> params, m, v;
  if (!o.resume.empty()) {
    if (lead) {
      params.resize(n_params);
      m.resize(n_params);
      v.resize(n_params);
      read_weights(path_join(ck, "model.safetensors"), backend->table(), params.data());
      SafetensorsFile f = SafetensorsFile::open(path_join(ck, "optimizer.safetensors"));
      backend->table().visit([&](const ParamInfo& p) {
        f.read_into<float>("exp_avg." + p.name, p.shape, m.data() + p.offset);
        f.read_into<float>("exp_avg_sq." + p.name, p.shape, v.data() + p.offset);
      });
      if (W == 1) backend->upload(params, m, v);
    }
    const std::string sp = path_join(ck, "trainer_state.json");
    step = st.at("step", sp).as_int(sp + ": step");
    elapsed_before = st.at("elapsed_s", sp).as_number(sp + ": elapsed_s");
    loader.restore(DataLoader::State::from_json(st.at("loader", sp)));
    CHECK(step <= o.max_steps, "--resume: the checkpoint is at step ", step, ", beyond max_steps ", o.max_steps);
    if (lead) {
      truncate_metrics(metrics_path, step);
      const std::string ck_name = std::filesystem::path(ck).filename().string();
      if (resumes_in_place(o) && checkpoint_generation_step(ck_name) >= 0) publish_generation(o.out, ck_name);
      std::printf("resumed from %s at step %lld\n", ck.c_str(), (long long)step);
    }
  } else {
    backend->init(uint64_t(o.seed));
    if (W > 1) {
      backend->gather_for_download(comm);  // collective (expert shards onto rank 0)
      if (lead) backend->download(params, m, v);
    }
    if (lead) write_file_atomic(metrics_path, "");
  }
  if (W > 1) {  // every rank starts from rank 0's weights and moments (one process has them already)
    for (std::vector<float>* x : {&params, &m, &v}) {
      x->resize(n_params);
      comm.broadcast(x->data(), x->size() * sizeof(float));
    }
    backend->upload(params, m, v);
    if (o.zero1) backend->shard_optimizer(comm);  // each rank keeps its 1/W of the moments from here on
  }
  for (std::vector<float>* x : {&params, &m, &v}) std::vector<float>().swap(*x);

  res.unigram_entropy = unigram_entropy(val_shard->ids);
  const MixerCounts counts = backend->counts();
  if (lead) {
    std::printf("%s", describe_counts(counts).c_str());
    std::printf("data: %llu train tokens, %llu validation tokens (vocab %u); device %s%s%s\n",
                (unsigned long long)train_shard->ids.size(), (unsigned long long)val_shard->ids.size(),
                train_shard->header.vocab_size, backend->name().c_str(),
                o.device == "cpu" ? ", matmul backend " : "", o.device == "cpu" ? cpu::matmul_backend_name() : "");
    std::printf("baseline: unigram entropy of the validation tokens = %.4f nats\n", res.unigram_entropy);
    if (o.pack_documents)
      std::printf("packed documents: each end-of-text id (%d) starts a document; conv and scan state reset there\n",
                  separator);
    if (W > 1)
      std::printf("data parallel: %d processes x batch_size %lld = global batch %lld (rank 0 logs and checkpoints)\n",
                  W, (long long)o.batch_size, (long long)(int64_t(W) * o.batch_size));
    if (W > 1 && o.zero1) {
      const dist::Shard s0 = dist::shard_of(backend->table().total(), W, 0);
      std::printf("ZeRO-1: the AdamW moments are sharded over the %d ranks (%llu of %llu parameters each, at most); "
                  "the updated weights are all-gathered every step\n",
                  W, (unsigned long long)s0.size(), (unsigned long long)backend->table().total());
    } else if (o.zero1) {
      std::printf("ZeRO-1: one process, nothing to shard (--zero1 has no effect)\n");
    }
    if (G > 1) {
      int routed = 0;
      for (const MixerSpec& l : cfg.layers) routed += l.type == "rom" || l.type == "swimba" || l.type == "moe_mlp";
      std::printf("expert parallel: %d groups of %d ranks; in each group rank i computes the i-th contiguous 1/%d of "
                  "the experts of the %d layers with grouped expert GEMMs, on the tokens of the whole group, and "
                  "stores only those experts (rank 0: %llu of the %llu parameters)%s\n",
                  W / G, G, G, routed, (unsigned long long)backend->stored_parameters(),
                  (unsigned long long)backend->table().total(), routed ? "" : " (none here: --expert-parallel has no effect)");
    }
    std::fflush(stdout);
  }

  // This rank's rows of every global batch of W·B: [rank·B, rank·B + B).
  const int64_t B = o.batch_size, T = o.seq_len, global_B = int64_t(W) * B, first_row = int64_t(rank) * B;
  const int64_t tokens_per_step = global_B * T * o.grad_accum;
  backend->prepare(B, T);
  std::vector<int32_t> inputs(B * T), targets(B * T), seq_idx(o.pack_documents ? B * T : 0);
  // The document index of the rows in `inputs` (packed documents), or nullptr.
  auto documents = [&]() -> const int32_t* {
    if (!o.pack_documents) return nullptr;
    document_index_from_separators(seq_idx.data(), inputs.data(), B, T, separator);
    return seq_idx.data();
  };
  std::FILE* metrics = nullptr;
  if (lead) {
    metrics = std::fopen(metrics_path.c_str(), "a");
    CHECK(metrics, "cannot open ", metrics_path, " for appending");
  }

  // The validation batches of the global batch, each rank its rows; the summed losses and token
  // counts are all-reduced, so every rank returns the loss over the same windows one process
  // with batch W·B evaluates.
  auto evaluate = [&]() {
    const int64_t nb = val_loader.val_batches(global_B, T);
    const int64_t limit = o.eval_tokens > 0 ? std::max<int64_t>(1, o.eval_tokens / (global_B * T)) : nb;
    double sums[2] = {0, 0};  // loss × tokens, tokens
    for (int64_t i = 0; i < std::min(nb, limit); ++i) {
      if (val_loader.val_batch(i, inputs.data(), targets.data(), global_B, T, first_row, B) == 0) {
        if (G == 1) continue;
        // Expert parallelism: the group's ranks exchange rows in every forward, so a rank with
        // no rows of this batch still runs one (nothing scored) alongside the others.
        std::fill(inputs.begin(), inputs.end(), 0);
        std::fill(targets.begin(), targets.end(), -1);
        targets[0] = 0;  // loss() wants one target; the result is dropped
        backend->loss(inputs.data(), targets.data(), B, T, false, documents());
        continue;
      }
      LossResult r = backend->loss(inputs.data(), targets.data(), B, T, false, documents());
      sums[0] += r.ce * double(r.count);
      sums[1] += double(r.count);
    }
    comm.all_reduce_sum(sums, 2);
    return sums[0] / sums[1];
  };

  auto state_json = [&](double elapsed) {
    Json st = Json::object();
    st.set("step", step);
    st.set("elapsed_s", elapsed);
    st.set("loader", loader.state().to_json());
    st.set("options", o.to_json());
    st.set("world_size", int64_t(W));
    st.set("global_batch", global_B);
    return st;
  };

  const auto t_start = Clock::now();
  double ema_step_s = -1;
  int64_t steps_this_run = 0;
  while (step < o.max_steps) {
    const auto t0 = Clock::now();
    ++step;
    maybe_die(rank, step);
    backend->zero_grads();
    double sums[2] = {0, 0};  // cross-entropy, aux loss: summed over micro-batches, then ranks
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      loader.next_batch(inputs.data(), targets.data(), B, T, first_row);
      LossResult r = backend->loss(inputs.data(), targets.data(), B, T, true, documents());
      sums[0] += r.ce;
      sums[1] += r.aux;
    }
    // Each rank's gradient is that of its rows' mean loss: the sum over ranks scaled by
    // 1/(grad_accum·W) is the gradient of the mean over the global batch, before clipping.
    comm.all_reduce_sum(sums, 2);
    backend->all_reduce_grads(comm);
    const double inv_accum = 1.0 / double(o.grad_accum * W);
    const double loss = sums[0] / double(o.grad_accum * W), aux = sums[1] / double(o.grad_accum * W);
    const double gnorm = std::sqrt(backend->grad_norm_squared()) * inv_accum;
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      if (metrics) std::fclose(metrics);
      FAIL("training diverged at step ", step, ": loss ", loss, ", gradient norm ", gnorm,
           "; the last good checkpoint is kept in ", find_run_checkpoint(o.out).empty() ? "(none yet)" : find_run_checkpoint(o.out),
           " (lower the learning rate or raise warm-up, then --resume)");
    }
    const double clip = (o.grad_clip > 0 && gnorm > o.grad_clip) ? o.grad_clip / gnorm : 1.0;
    const double lr = lr_at(step, o.lr, o.min_lr, o.warmup_steps, o.max_steps);
    backend->adamw_step(o, lr, step, inv_accum * clip);
    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    ema_step_s = ema_step_s < 0 ? step_s : 0.9 * ema_step_s + 0.1 * step_s;
    const double elapsed = elapsed_before + std::chrono::duration<double>(Clock::now() - t_start).count();
    ++steps_this_run;

    Json line = Json::object();
    line.set("step", step);
    line.set("loss", loss);
    if (aux != 0) line.set("aux_loss", aux);
    line.set("lr", lr);
    line.set("grad_norm", gnorm);
    line.set("tokens_per_s", double(tokens_per_step) / step_s);
    line.set("elapsed_s", elapsed);
    const bool eval_now = (o.eval_every > 0 && step % o.eval_every == 0) || step == o.max_steps;
    if (eval_now) {
      res.last_val_loss = evaluate();
      line.set("val_loss", res.last_val_loss);
      Json st = backend->stats();
      if (!st.is_null()) line.set("layers", st);
    }
    if (lead) append_to_file(metrics, metrics_path, line.dump() + "\n");
    if (lead && (step % o.log_every == 0 || eval_now || step == 1)) {
      std::printf("step %5lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | elapsed %s | ETA %s",
                  (long long)step, (long long)o.max_steps, loss, lr, gnorm, double(tokens_per_step) / ema_step_s,
                  fmt_duration(elapsed).c_str(), fmt_duration(ema_step_s * double(o.max_steps - step)).c_str());
      if (eval_now) std::printf(" | val_loss %.4f (unigram %.4f)", res.last_val_loss, res.unigram_entropy);
      if (aux != 0) std::printf(" | aux %.4f", aux);
      std::printf("\n");
      std::fflush(stdout);
    }
    res.last_step = step;
    res.last_loss = loss;
    const bool halt = o.halt_after > 0 && steps_this_run >= o.halt_after && step < o.max_steps;
    if ((o.checkpoint_every > 0 && step % o.checkpoint_every == 0) || step == o.max_steps || halt) {
      backend->gather_for_download(comm);  // every rank: ZeRO-1's or the experts' shards onto rank 0 (else nothing)
      if (lead) save_checkpoint(o.out, step, *backend, state_json(elapsed), tokenizer_json, special);
    }
    if (halt) {
      res.halted = true;
      if (lead)
        std::printf("halted after %lld steps (checkpoint at step %lld; continue with --resume %s)\n",
                    (long long)steps_this_run, (long long)step, o.out.c_str());
      break;
    }
  }
  if (metrics) std::fclose(metrics);
  comm.barrier();  // the others end after rank 0's last checkpoint is written
  return res;
}

}  // namespace moessm
