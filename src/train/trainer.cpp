// train_model (see trainer.h).
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "core/check.h"
#include "data/loader.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/mixer_registry.h"
#include "ops/matmul.h"
#include "train/schedule.h"
#include "train/train_backend.h"

namespace moessm {

namespace {

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

// The checkpoint directory from host copies of the weights and AdamW moments (table layout).
void save_checkpoint(const std::string& out, const TrainBackend& backend, const Json& state,
                     const std::string& tokenizer_src) {
  const std::string tmp = path_join(out, "checkpoint.tmp"), cur = path_join(out, "checkpoint"),
                    old = path_join(out, "checkpoint.old");
  std::vector<float> params, m, v;
  backend.download(params, m, v);
  remove_tree(tmp);
  make_dirs(tmp);
  save_checkpoint_dir(tmp, backend.config(), backend.table(), params.data(),
                      {{"step", std::to_string(state.at("step").as_int())}});
  {
    SafetensorsWriter w;
    backend.table().visit([&](const ParamInfo& p) {
      w.add("exp_avg." + p.name, DType::F32, p.shape, m.data() + p.offset);
      w.add("exp_avg_sq." + p.name, DType::F32, p.shape, v.data() + p.offset);
    });
    w.write(path_join(tmp, "optimizer.safetensors"));
  }
  if (!tokenizer_src.empty()) write_file_atomic(path_join(tmp, "tokenizer.json"), read_file(tokenizer_src));
  write_file_atomic(path_join(tmp, "trainer_state.json"), state.dump(2) + "\n");
  // Swap: cur → old, tmp → cur, drop old. At every instant one complete checkpoint exists.
  remove_tree(old);
  if (is_directory(cur)) rename_path(cur, old);
  rename_path(tmp, cur);
  remove_tree(old);
}

// Keeps the metrics lines of steps <= last_step (a resumed run rewrites what came after).
void truncate_metrics(const std::string& path, int64_t last_step) {
  if (!file_exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Json j = Json::parse(line, path);
    if (j.at("step", path).as_int() <= last_step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace

std::string find_run_checkpoint(const std::string& run_dir) {
  for (const char* name : {"checkpoint", "checkpoint.old"}) {
    std::string d = path_join(run_dir, name);
    if (file_exists(path_join(d, "trainer_state.json"))) return d;
  }
  return "";
}

TrainResult train_model(const ModelConfig& cfg, const TrainOptions& o) {
  o.validate();
  check_model_supported(cfg, o.device);  // before any work: names the layer, the device and the missing op
  TrainResult res;
  make_dirs(o.out);
  const std::string train_path = path_join(o.data, "train.bin"), val_path = path_join(o.data, "val.bin");
  CHECK(file_exists(train_path), "data directory '", o.data, "' has no train.bin (run `moessm prepare` first)");
  CHECK(file_exists(val_path), "data directory '", o.data, "' has no val.bin (run `moessm prepare` first)");
  auto train_shard = std::make_shared<Shard>(read_shard(train_path));
  auto val_shard = std::make_shared<Shard>(read_shard(val_path));
  CHECK(int64_t(train_shard->header.vocab_size) <= cfg.vocab_size, train_path, ": the data's vocabulary (",
        train_shard->header.vocab_size, " ids) is larger than the model's vocab_size ", cfg.vocab_size);
  const std::string tok_path = path_join(o.data, "tokenizer.json");
  const std::string tokenizer_src = file_exists(tok_path) ? tok_path : "";

  std::unique_ptr<TrainBackend> backend = make_train_backend(o.device, cfg);
  DataLoader loader(train_shard, uint64_t(o.seed));
  DataLoader val_loader(val_shard, 0);
  int64_t step = 0;
  double elapsed_before = 0;
  const std::string metrics_path = path_join(o.out, "metrics.jsonl");

  if (!o.resume.empty()) {
    const std::string ck = find_run_checkpoint(o.resume);
    CHECK(!ck.empty(), "--resume ", o.resume, ": no checkpoint found (expected ", path_join(o.resume, "checkpoint"), "/trainer_state.json)");
    ModelConfig saved = load_model_config(ck);
    CHECK(saved.to_json().dump() == cfg.to_json().dump(), "--resume ", ck,
          ": the checkpoint's model config differs from the given config");
    const size_t n = backend->table().total();
    std::vector<float> params(n), m(n), v(n);
    read_weights(path_join(ck, "model.safetensors"), backend->table(), params.data());
    SafetensorsFile f = SafetensorsFile::open(path_join(ck, "optimizer.safetensors"));
    backend->table().visit([&](const ParamInfo& p) {
      f.read_into<float>("exp_avg." + p.name, p.shape, m.data() + p.offset);
      f.read_into<float>("exp_avg_sq." + p.name, p.shape, v.data() + p.offset);
    });
    backend->upload(params, m, v);
    const std::string sp = path_join(ck, "trainer_state.json");
    Json st = Json::parse_file(sp);
    step = st.at("step", sp).as_int(sp + ": step");
    elapsed_before = st.at("elapsed_s", sp).as_number(sp + ": elapsed_s");
    loader.restore(DataLoader::State::from_json(st.at("loader", sp)));
    CHECK(step <= o.max_steps, "--resume: the checkpoint is at step ", step, ", beyond max_steps ", o.max_steps);
    truncate_metrics(metrics_path, step);
    std::printf("resumed from %s at step %lld\n", ck.c_str(), (long long)step);
  } else {
    backend->init(uint64_t(o.seed));
    write_file_atomic(metrics_path, "");
  }

  res.unigram_entropy = unigram_entropy(val_shard->ids);
  const MixerCounts counts = backend->counts();
  std::printf("%s", describe_counts(counts).c_str());
  std::printf("data: %llu train tokens, %llu validation tokens (vocab %u); device %s%s%s\n",
              (unsigned long long)train_shard->ids.size(), (unsigned long long)val_shard->ids.size(),
              train_shard->header.vocab_size, backend->name().c_str(),
              o.device == "cpu" ? ", matmul backend " : "", o.device == "cpu" ? cpu::matmul_backend_name() : "");
  std::printf("baseline: unigram entropy of the validation tokens = %.4f nats\n", res.unigram_entropy);
  std::fflush(stdout);

  const int64_t B = o.batch_size, T = o.seq_len, tokens_per_step = B * T * o.grad_accum;
  backend->prepare(B, T);
  std::vector<int32_t> inputs(B * T), targets(B * T);
  std::FILE* metrics = std::fopen(metrics_path.c_str(), "a");
  CHECK(metrics, "cannot open ", metrics_path, " for appending");

  auto evaluate = [&]() {
    const int64_t nb = val_loader.val_batches(B, T);
    const int64_t limit = o.eval_tokens > 0 ? std::max<int64_t>(1, o.eval_tokens / (B * T)) : nb;
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < std::min(nb, limit); ++i) {
      val_loader.val_batch(i, inputs.data(), targets.data(), B, T);
      LossResult r = backend->loss(inputs.data(), targets.data(), B, T, false);
      sum += r.ce * double(r.count);
      count += r.count;
    }
    return sum / double(count);
  };

  auto state_json = [&](double elapsed) {
    Json st = Json::object();
    st.set("step", step);
    st.set("elapsed_s", elapsed);
    st.set("loader", loader.state().to_json());
    st.set("options", o.to_json());
    return st;
  };

  const auto t_start = Clock::now();
  double ema_step_s = -1;
  int64_t steps_this_run = 0;
  while (step < o.max_steps) {
    const auto t0 = Clock::now();
    ++step;
    backend->zero_grads();
    double loss_sum = 0, aux_sum = 0;
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      loader.next_batch(inputs.data(), targets.data(), B, T);
      LossResult r = backend->loss(inputs.data(), targets.data(), B, T, true);
      loss_sum += r.ce;
      aux_sum += r.aux;
    }
    const double loss = loss_sum / double(o.grad_accum), aux = aux_sum / double(o.grad_accum);
    const double inv_accum = 1.0 / double(o.grad_accum);
    const double gnorm = std::sqrt(backend->grad_norm_squared()) * inv_accum;
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      std::fclose(metrics);
      FAIL("training diverged at step ", step, ": loss ", loss, ", gradient norm ", gnorm,
           "; the last good checkpoint is kept in ", path_join(o.out, "checkpoint"),
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
    std::fprintf(metrics, "%s\n", line.dump().c_str());
    std::fflush(metrics);
    if (step % o.log_every == 0 || eval_now || step == 1) {
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
      save_checkpoint(o.out, *backend, state_json(elapsed), tokenizer_src);
    }
    if (halt) {
      res.halted = true;
      std::printf("halted after %lld steps (checkpoint at step %lld; continue with --resume %s)\n",
                  (long long)steps_this_run, (long long)step, o.out.c_str());
      break;
    }
  }
  std::fclose(metrics);
  return res;
}

}  // namespace moessm
