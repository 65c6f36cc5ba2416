#!/usr/bin/env python3
"""One command per experiment of the research-fidelity study (issue 17).

  tools/study.py NAME [--quick] [--device cpu|cuda] [--out DIR] [--moessm PATH] [--jobs N]
                      [--overwrite | --resume | --report-only] [--no-plot] [--check]

NAME is an experiment file configs/study/NAME.json (or a path to one). The runner
  1. prepares the data once and caches it in OUT/_data/ (language-model experiments: the study
     corpus of configs/study/data.json, decompressed, split, a BPE tokenizer trained on the
     training split with `moessm tokenizer train`, tokenised with `moessm prepare`; task
     experiments: `moessm task make`);
  2. resolves every arm's model config, prints and records the project's own accounting
     (`moessm init`: total / active parameters, forward FLOPs per token) and checks the
     experiment's "matching" constraints, refusing to run when one fails;
  3. trains every arm at every learning rate of its sweep on the FIRST seed, picks the lr with
     the lowest final validation loss (the trainer's val_loss), then trains the other seeds at
     that lr; every arm of a seed uses the same data directory, the same `--seed` (hence the
     same initialisation stream and the same batches) and the same token budget;
  4. evaluates every run (`moessm eval` at the experiment's context lengths; `moessm task eval`
     for task experiments), aggregates mean and spread over the seeds at the chosen lr, and
     writes OUT/NAME/results.json, OUT/NAME/table.md and OUT/NAME/loss.png; with
     "eval": {"by_position": true} also the loss by position in the longest window (octave
     means) in the table and OUT/NAME/length.png (loss against context length and position).

--quick applies the experiment's "quick" block (tiny models, few steps, 2 seeds allowed): a
pipeline smoke test that finishes on a 2-core CPU in minutes; its numbers are not evidence.
--check only resolves the arms and prints the accounting and the matching (no data, no training).
--resume continues an interrupted experiment in its existing results directory: every finished
run (recorded in OUT/NAME/done/, one JSON per run, written when the run's training and evaluation
have ended) is reused when its record matches the run exactly (the resolved model config, the
training settings, the data, the device and the evaluation), and only the missing runs are
trained. A run that another experiment under the same --out root finished with exactly the same
settings (only the arm's name differs: rom_routers' `shared` is rom_vs_dense's `rom`) is reused
too, its record copied into done/ with `reused_from`. A run that diverged is recorded (it would
diverge again); a run killed mid-way, or one that failed for any other reason (no GPU, out of
memory), left no record and is trained again. Re-running with --resume after every run is done
retrains nothing and rewrites the table and the plot.
--report-only rebuilds the results from the records alone (no training, no speed measurement:
an earlier call's is kept), listing the runs without a record as "not run yet"; it is how the
committed results under docs/study/ are redrawn from a clean checkout.
--no-plot skips loss.png (for a machine without matplotlib; a later --resume run draws it).
Progress with an ETA goes to stderr. Python standard library + matplotlib (Debian's
python3-matplotlib); subprocesses get argument lists, never a shell string.
"""
import argparse
import concurrent.futures
import glob
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_common import ema, reexec_if_no_matplotlib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_KEYS_FROM_EXPERIMENT = {"max_steps", "batch_size", "seq_len", "grad_accum", "warmup_steps", "weight_decay",
                              "beta1", "beta2", "eps", "grad_clip", "eval_every", "eval_tokens", "log_every",
                              "pack_documents", "answers_only"}
TASKS = ("mqar", "copy", "induction")


class ConfigError(Exception):
    pass


def log(msg):
    print(f"[study] {msg}", file=sys.stderr, flush=True)


def fmt_time(s):
    s = int(round(max(0.0, s)))
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def rel(path):
    try:
        r = os.path.relpath(path, ROOT)
        return path if r.startswith("..") else r
    except ValueError:
        return path


def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{rel(path)}: no such file ({what})")
    except json.JSONDecodeError as e:
        raise ConfigError(f"{rel(path)}: not valid JSON: line {e.lineno} column {e.colno}: {e.msg}")


# ---- experiment config -------------------------------------------------------------------------

def _req(d, key, types, where, path):
    if key not in d:
        raise ConfigError(f"{rel(path)}: {where}{key}: missing (required)")
    v = d[key]
    tt = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, tt) or (isinstance(v, bool) and bool not in tt):
        raise ConfigError(f"{rel(path)}: {where}{key}: expected {_tname(types)}, found {json.dumps(v)[:60]}")
    return v


def _tname(types):
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _positive_number(v, field, path):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{rel(path)}: {field}: expected a positive finite number, found {json.dumps(v)}")
    return float(v)


def _positive_int(v, field, path):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{rel(path)}: {field}: expected a positive integer, found {json.dumps(v)}")
    return v


def resolve_experiment_path(name):
    if name.endswith(".json") or os.sep in name:
        p = os.path.abspath(name)
    else:
        p = os.path.join(ROOT, "configs", "study", name + ".json")
    if not os.path.isfile(p):
        avail = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "study"))
                       if f.endswith(".json") and f != "data.json")
        raise ConfigError(f"{rel(p)}: no such experiment file (experiments: {', '.join(avail)})")
    return p


def read_experiment(path, chain=()):
    """An experiment file as written, with "extends": "NAME" resolved: the named experiment's fields,
    each replaced whole by the field of the same name here (e.g. the same study at another size:
    only comment, arms and matching differ)."""
    cfg = read_json(path, "experiment")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{rel(path)}: expected a JSON object at the top level")
    if "extends" not in cfg:
        return cfg
    base = cfg.pop("extends")
    if not isinstance(base, str):
        raise ConfigError(f"{rel(path)}: extends: expected the name of another experiment of configs/study/")
    try:
        base_path = resolve_experiment_path(base)
    except ConfigError as e:
        raise ConfigError(f"{rel(path)}: extends: {e}")
    if base_path in chain + (path,):
        raise ConfigError(f"{rel(path)}: extends: {base} extends this file again (a cycle)")
    return dict(read_experiment(base_path, chain + (path,)), **cfg)


def load_experiment(path, quick):
    """The experiment file with its quick block applied (when asked), validated."""
    cfg = read_experiment(path)
    known = {"comment", "claim", "paper", "status", "kind", "data", "task", "arms", "matching", "seeds", "train",
             "eval", "task_eval", "quick", "report", "speed"}
    for k in cfg:
        if k not in known:
            raise ConfigError(f"{rel(path)}: {k}: unknown field (known: {', '.join(sorted(known))})")
    kind = _req(cfg, "kind", str, "", path)
    if kind not in ("lm", "task"):
        raise ConfigError(f"{rel(path)}: kind: expected \"lm\" or \"task\", found {json.dumps(kind)}")
    arms = _req(cfg, "arms", list, "", path)
    if not arms:
        raise ConfigError(f"{rel(path)}: arms: empty (an experiment compares at least one arm)")
    cfg = json.loads(json.dumps(cfg))  # a private copy
    if quick:
        q = _req(cfg, "quick", dict, "", path)
        for k in q:
            if k not in ("comment", "seeds", "train", "eval", "task", "task_eval", "arms", "matching", "speed"):
                raise ConfigError(f"{rel(path)}: quick.{k}: unknown field")
        for k in ("seeds", "matching"):
            if k in q:
                cfg[k] = q[k]
        for k in ("train", "eval", "task", "task_eval", "speed"):
            if k in q:
                if not isinstance(q[k], dict):
                    raise ConfigError(f"{rel(path)}: quick.{k}: expected an object")
                cfg.setdefault(k, {}).update(q[k])
        qa = q.get("arms", {})
        if not isinstance(qa, dict):
            raise ConfigError(f"{rel(path)}: quick.arms: expected an object of arm name -> overrides")
        names = [a.get("name") for a in arms if isinstance(a, dict)]
        for n, over in qa.items():
            if n not in names:
                raise ConfigError(f"{rel(path)}: quick.arms.{n}: no arm of that name (arms: {', '.join(map(str, names))})")
            if not isinstance(over, dict):
                raise ConfigError(f"{rel(path)}: quick.arms.{n}: expected an object")
            arm = cfg["arms"][names.index(n)]
            for k, v in over.items():
                if k == "override":
                    if not isinstance(v, dict):
                        raise ConfigError(f"{rel(path)}: quick.arms.{n}.override: expected an object")
                    merged = dict(arm.get("override", {}))
                    for kk, vv in v.items():
                        if kk == "mixer" and isinstance(vv, dict) and isinstance(merged.get(kk), dict):
                            merged[kk] = {**merged[kk], **vv}
                        else:
                            merged[kk] = vv
                    arm["override"] = merged
                elif k in ("lr", "model"):
                    arm[k] = v
                else:
                    raise ConfigError(f"{rel(path)}: quick.arms.{n}.{k}: unknown field (override, lr, model)")
    # validation of the resolved experiment
    seen = set()
    for i, a in enumerate(cfg["arms"]):
        w = f"arms[{i}]."
        if not isinstance(a, dict):
            raise ConfigError(f"{rel(path)}: arms[{i}]: expected an object")
        for k in a:
            if k not in ("name", "model", "override", "lr", "comment"):
                raise ConfigError(f"{rel(path)}: {w}{k}: unknown field (name, model, override, lr, comment)")
        n = _req(a, "name", str, w, path)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", n):
            raise ConfigError(f"{rel(path)}: {w}name: {json.dumps(n)}: use letters, digits, '_', '.', '-'")
        if n in seen:
            raise ConfigError(f"{rel(path)}: {w}name: {n} appears twice")
        seen.add(n)
        _req(a, "model", (str, dict), w, path)
        if "override" in a and not isinstance(a["override"], dict):
            raise ConfigError(f"{rel(path)}: {w}override: expected an object")
        lrs = _req(a, "lr", list, w, path)
        if not lrs:
            raise ConfigError(f"{rel(path)}: {w}lr: empty (give at least one learning rate)")
        a["lr"] = [_positive_number(v, f"{w}lr[{j}]", path) for j, v in enumerate(lrs)]
        if len(set(a["lr"])) != len(a["lr"]):
            raise ConfigError(f"{rel(path)}: {w}lr: a learning rate appears twice")
    seeds = _req(cfg, "seeds", list, "", path)
    for j, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{rel(path)}: seeds[{j}]: expected a non-negative integer, found {json.dumps(s)}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{rel(path)}: seeds: a seed appears twice")
    min_seeds = 2 if quick else 3
    if len(seeds) < min_seeds:
        raise ConfigError(f"{rel(path)}: {'quick.' if quick else ''}seeds: {len(seeds)} given, at least {min_seeds} needed")
    train = _req(cfg, "train", dict, "", path)
    for k, v in train.items():
        if k not in TRAIN_KEYS_FROM_EXPERIMENT | {"min_lr_ratio"}:
            raise ConfigError(f"{rel(path)}: train.{k}: not an experiment-level option (allowed: "
                              f"{', '.join(sorted(TRAIN_KEYS_FROM_EXPERIMENT | {'min_lr_ratio'}))}; lr comes from the arms, seed from seeds)")
    for k in ("max_steps", "batch_size", "seq_len"):
        _positive_int(_req(train, k, int, "train.", path), f"train.{k}", path)
    train.setdefault("grad_accum", 1)
    _positive_int(train["grad_accum"], "train.grad_accum", path)
    train.setdefault("min_lr_ratio", 0.1)
    _positive_number(train["min_lr_ratio"], "train.min_lr_ratio", path)
    train.setdefault("eval_every", train["max_steps"])
    train.setdefault("log_every", max(1, train["max_steps"] // 20))
    if kind == "lm":
        d = cfg.get("data", "configs/study/data.json")
        if not isinstance(d, str):
            raise ConfigError(f"{rel(path)}: data: expected a path to a data definition (configs/study/data.json)")
        cfg["data"] = d
        ev = _req(cfg, "eval", dict, "", path)
        ctx = _req(ev, "ctx", list, "eval.", path)
        if not ctx:
            raise ConfigError(f"{rel(path)}: eval.ctx: empty")
        for j, c in enumerate(ctx):
            _positive_int(c, f"eval.ctx[{j}]", path)
            if c < 2:
                raise ConfigError(f"{rel(path)}: eval.ctx[{j}]: at least 2")
        ev.setdefault("max_tokens", 262144)
        if isinstance(ev["max_tokens"], bool) or not isinstance(ev["max_tokens"], int) or ev["max_tokens"] < 0:
            raise ConfigError(f"{rel(path)}: eval.max_tokens: expected a non-negative integer")
        if not isinstance(ev.get("by_position", False), bool):
            raise ConfigError(f"{rel(path)}: eval.by_position: expected true or false")
        for k in ev:
            if k not in ("ctx", "max_tokens", "batch", "by_position"):
                raise ConfigError(f"{rel(path)}: eval.{k}: unknown field (ctx, max_tokens, batch, by_position)")
    else:
        t = _req(cfg, "task", dict, "", path)
        for k in t:
            if k not in ("task", "length", "pairs", "symbols", "seed", "train_examples", "val_examples"):
                raise ConfigError(f"{rel(path)}: task.{k}: unknown field (task, length, pairs, symbols, seed, "
                                  "train_examples, val_examples)")
        if _req(t, "task", str, "task.", path) not in TASKS:
            raise ConfigError(f"{rel(path)}: task.task: expected one of {', '.join(TASKS)}, found {json.dumps(t['task'])}")
        for k in ("length", "pairs", "symbols", "train_examples", "val_examples"):
            if k in t:
                _positive_int(t[k], f"task.{k}", path)
        te = cfg.setdefault("task_eval", {})
        te.setdefault("examples", 1000)
        _positive_int(te["examples"], "task_eval.examples", path)
    for j, m in enumerate(cfg.get("matching", [])):
        w = f"matching[{j}]."
        if not isinstance(m, dict):
            raise ConfigError(f"{rel(path)}: matching[{j}]: expected an object")
        q = _req(m, "quantity", str, w, path)
        if q not in ("active_params", "total_params", "fwd_flops"):
            raise ConfigError(f"{rel(path)}: {w}quantity: expected active_params, total_params or fwd_flops, found {json.dumps(q)}")
        pair = _req(m, "arms", list, w, path)
        if len(pair) != 2 or any(p not in seen for p in pair):
            raise ConfigError(f"{rel(path)}: {w}arms: expected two arm names of this experiment, found {json.dumps(pair)}")
        m.setdefault("ratio", 1.0)
        _positive_number(m["ratio"], w + "ratio", path)
        _positive_number(_req(m, "tolerance", (int, float), w, path), w + "tolerance", path)
    sp = cfg.get("speed")
    if sp is not None:
        if not isinstance(sp, dict):
            raise ConfigError(f"{rel(path)}: speed: expected an object (train_steps, decode_tokens, baseline)")
        for k in sp:
            if k not in ("train_steps", "decode_tokens", "baseline"):
                raise ConfigError(f"{rel(path)}: speed.{k}: unknown field (train_steps, decode_tokens, baseline)")
        sp.setdefault("train_steps", 60)
        sp.setdefault("decode_tokens", 256)
        if _positive_int(sp["train_steps"], "speed.train_steps", path) < 6:
            raise ConfigError(f"{rel(path)}: speed.train_steps: at least 6 (the first third is warm-up)")
        _positive_int(sp["decode_tokens"], "speed.decode_tokens", path)
        sp.setdefault("baseline", arms[0].get("name") if isinstance(arms[0], dict) else None)
        if sp["baseline"] not in seen:
            raise ConfigError(f"{rel(path)}: speed.baseline: {json.dumps(sp['baseline'])} is not an arm of this experiment")
    rep = cfg.get("report", {})
    if not isinstance(rep, dict):
        raise ConfigError(f"{rel(path)}: report: expected an object")
    for k in rep:
        if k != "flops_to_match":
            raise ConfigError(f"{rel(path)}: report.{k}: unknown field (flops_to_match)")
    if "flops_to_match" in rep:
        f = rep["flops_to_match"]
        w = "report.flops_to_match."
        if not isinstance(f, dict):
            raise ConfigError(f"{rel(path)}: report.flops_to_match: expected an object with target and ladder")
        if _req(f, "target", str, w, path) not in seen:
            raise ConfigError(f"{rel(path)}: {w}target: {json.dumps(f['target'])} is not an arm of this experiment")
        ladder = _req(f, "ladder", list, w, path)
        if len(ladder) < 2 or any(a not in seen or a == f["target"] for a in ladder):
            raise ConfigError(f"{rel(path)}: {w}ladder: expected two or more arm names other than the target, "
                              f"found {json.dumps(ladder)}")
    return cfg


def resolve_model(arm, exp_path):
    """The arm's model config: a file of configs/ (path from the repository root) or an inline object,
    with the arm's override applied (top-level fields; a "mixer" object is merged field by field)."""
    m = arm["model"]
    if isinstance(m, str):
        p = m if os.path.isabs(m) else os.path.join(ROOT, m)
        if not os.path.isfile(p):
            raise ConfigError(f"{rel(exp_path)}: arm {arm['name']}: model: {m}: no such file "
                              "(paths are relative to the repository root)")
        model = read_json(p, f"model of arm {arm['name']} in {rel(exp_path)}")
        src = rel(p)
    else:
        model, src = json.loads(json.dumps(m)), "inline"
    if not isinstance(model, dict):
        raise ConfigError(f"{rel(exp_path)}: arm {arm['name']}: model: expected a JSON object")
    for k, v in arm.get("override", {}).items():
        if k == "mixer" and isinstance(v, dict) and isinstance(model.get(k), dict):
            model[k] = {**model[k], **v}
        else:
            model[k] = v
    model.pop("train", None)
    model["comment"] = f"tools/study.py: arm {arm['name']} of {rel(exp_path)} (model: {src})"
    return model, src


# ---- subprocesses --------------------------------------------------------------------------------

def run_cmd(argv, log_path, env=None):
    """Runs argv (a list), stdout+stderr to log_path; returns (returncode, seconds)."""
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        p = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    return p.returncode, time.time() - t0


def tail(path, n=8):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


def check_run(argv, log_path, what, env=None):
    rc, _ = run_cmd(argv, log_path, env)
    if rc != 0:
        raise RuntimeError(f"{what} failed (exit {rc}); log {log_path}:\n{tail(log_path)}")


_SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _human(s):
    m = re.fullmatch(r"([0-9.]+)([kMGT]?)", s)
    if not m:
        raise ValueError(s)
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def parse_accounting(text):
    """moessm init's summary: exact parameter counts, forward FLOPs per token (4 significant digits)."""
    m = re.search(r"parameters: total \S+ \((\d+)\), active per token \S+ \((\d+)\)", text)
    f = re.search(r"forward FLOPs per token: (\S+) = GEMM (\S+) \+ scan (\S+) \+ conv (\S+) \+ router (\S+)"
                  r" \+ attention (\S+) \+ other (\S+); training ≈ 3× = (\S+)", text)
    if not m or not f:
        raise RuntimeError("could not read the accounting lines of `moessm init`:\n" + text[:600])
    g = [_human(x) for x in f.groups()]
    return {"total_params": int(m.group(1)), "active_params": int(m.group(2)), "fwd_flops": g[0],
            "fwd_flops_split": dict(zip(("gemm", "scan", "conv", "router", "attention", "other"), g[1:7])),
            "train_flops": g[7], "summary": text.strip().splitlines()[:2]}


def accounting(moessm, cfg_path, tmp):
    out = os.path.join(tmp, "init")
    p = subprocess.run([moessm, "init", "--config", cfg_path, "--out", out, "--overwrite"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if p.returncode != 0:
        raise ConfigError(f"moessm init --config {cfg_path} failed:\n{p.stdout.strip()}")
    return parse_accounting(p.stdout)


# ---- data -----------------------------------------------------------------------------------------

def sha16(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_text_source(path):
    if path.endswith(".zst"):
        if not shutil.which("zstd"):
            raise RuntimeError(f"{rel(path)}: the zstd program is missing (Debian package zstd; scripts/setup.sh installs it)")
        p = subprocess.run(["zstd", "-dcq", path], stdout=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"zstd -dcq {path} failed (exit {p.returncode})")
        return p.stdout
    with open(path, "rb") as fh:
        return fh.read()


DIVERGED = re.compile(r".*training diverged")


def diverged(train_log):
    """Whether a failed `moessm train` stopped because training diverged (its log says so)."""
    return bool(log_matches(train_log, DIVERGED))


def prepare_corpus(moessm, data_def_path, cache_root):
    """The study corpus as a prepared data directory (cached: reused when its spec is unchanged)."""
    dd = read_json(data_def_path, "data definition")
    where = rel(data_def_path)
    srcs = _req(dd, "sources", list, "", data_def_path)
    tok = _req(dd, "tokenizer", dict, "", data_def_path)
    vocab = _positive_int(_req(tok, "vocab_size", int, "tokenizer.", data_def_path), "tokenizer.vocab_size", data_def_path)
    spec = {"data_def": dd, "files": []}
    for i, s in enumerate(srcs):
        w = f"sources[{i}]."
        if not isinstance(s, dict):
            raise ConfigError(f"{where}: sources[{i}]: expected an object")
        n = _req(s, "name", str, w, data_def_path)
        p = os.path.join(ROOT, _req(s, "path", str, w, data_def_path))
        if not os.path.isfile(p):
            raise ConfigError(f"{where}: {w}path: {rel(p)}: no such file")
        sp = _req(s, "split", str, w, data_def_path)
        if sp not in ("train", "val", "tail"):
            raise ConfigError(f"{where}: {w}split: expected train, val or tail, found {json.dumps(sp)}")
        if sp == "tail":
            f = _positive_number(_req(s, "val_fraction", (int, float), w, data_def_path), w + "val_fraction", data_def_path)
            if f >= 1:
                raise ConfigError(f"{where}: {w}val_fraction: must be below 1")
        spec["files"].append({"name": n, "path": rel(p), "sha256_16": sha16(p)})
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    work = os.path.join(cache_root, f"corpus-{key}")
    if os.path.isfile(os.path.join(work, "spec.json")) and os.path.isfile(os.path.join(work, "data", "meta.json")):
        log(f"data: reusing {work}")
        return os.path.join(work, "data"), read_json(os.path.join(work, "split.json"), "split record")
    shutil.rmtree(work, ignore_errors=True)
    tdir, vdir = os.path.join(work, "text", "train"), os.path.join(work, "text", "val")
    os.makedirs(tdir)
    os.makedirs(vdir)
    split = []
    t0 = time.time()
    for s in srcs:
        raw = read_text_source(os.path.join(ROOT, s["path"]))
        if s["split"] == "tail":
            cut = int(len(raw) * (1 - float(s["val_fraction"])))
            nl = raw.find(b"\n", cut)
            cut = len(raw) if nl < 0 else nl + 1
            parts = [("train", raw[:cut]), ("val", raw[cut:])]
        else:
            parts = [(s["split"], raw)]
        for part, blob in parts:
            if not blob:
                raise ConfigError(f"{where}: source {s['name']}: its {part} part is empty")
            d = tdir if part == "train" else vdir
            fn = s["name"] + (".txt" if part == "train" or s["split"] == "val" else ".tail.txt")
            with open(os.path.join(d, fn), "wb") as fh:
                fh.write(blob)
            split.append({"source": s["name"], "split": part, "file": fn, "bytes": len(blob),
                          "lines": blob.count(b"\n")})
    log(f"data: decompressed and split {len(srcs)} sources in {time.time() - t0:.1f} s")
    tok_path = os.path.join(work, "tokenizer.json")
    check_run([moessm, "tokenizer", "train", "--input", tdir, "--vocab-size", str(vocab), "--out", tok_path],
              os.path.join(work, "tokenizer_train.log"), "moessm tokenizer train")
    data = os.path.join(work, "data")
    check_run([moessm, "prepare", "--input", tdir, "--val", vdir, "--tokenizer", tok_path, "--out", data],
              os.path.join(work, "prepare.log"), "moessm prepare")
    with open(os.path.join(work, "split.json"), "w") as fh:
        json.dump(split, fh, indent=1)
    with open(os.path.join(work, "spec.json"), "w") as fh:
        json.dump(spec, fh, indent=1)
    log(f"data: tokenizer (vocab {vocab}) and shards ready in {time.time() - t0:.1f} s: {data}")
    return data, split


def prepare_task(moessm, task, cache_root):
    key = hashlib.sha256(json.dumps(task, sort_keys=True).encode()).hexdigest()[:12]
    work = os.path.join(cache_root, f"task-{task['task']}-{key}")
    data = os.path.join(work, "data")
    if os.path.isfile(os.path.join(data, "meta.json")) and os.path.isfile(os.path.join(work, "spec.json")):
        log(f"data: reusing {work}")
        return data
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    argv = [moessm, "task", "make", "--task", task["task"], "--out", data]
    for k in ("length", "pairs", "symbols", "seed", "train_examples", "val_examples"):
        if k in task:
            argv += ["--" + k.replace("_", "-"), str(task[k])]
    check_run(argv, os.path.join(work, "task_make.log"), "moessm task make")
    with open(os.path.join(work, "spec.json"), "w") as fh:
        json.dump(task, fh, indent=1)
    return data


# ---- runs ------------------------------------------------------------------------------------------

def read_metrics(run_dir):
    rows = []
    p = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(p):
        with open(p, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return sorted((r for r in rows if isinstance(r, dict) and "step" in r), key=lambda r: r["step"])


CURVE_POINTS = 400


def thin_curve(curve, points=CURVE_POINTS):
    """A run's curve as recorded: every validation point, and the training loss at no more than
    `points` evenly spaced steps (the last one included), so a record stays tens of kilobytes
    (they are committed under docs/study/) while the plot's smoothed training loss keeps its shape."""
    if len(curve) <= points:
        return curve
    stride = -(-len(curve) // points)
    return [c for i, c in enumerate(curve) if c.get("val_loss") is not None or i % stride == 0 or i == len(curve) - 1]


def lr_tag(lr):
    return f"{lr:.3g}".replace("+", "")


class Runner:
    def __init__(self, args, exp, exp_path, name, out_dir, version):
        self.args, self.exp, self.exp_path, self.name, self.out = args, exp, exp_path, name, out_dir
        self.version = version  # `moessm --version` of the program that trains this call's runs
        self.lock = threading.Lock()
        self.done_cost = 0.0
        self.total_cost = 0.0
        self.t0 = time.time()
        self.n_done = 0
        self.n_total = 0
        self.reused = 0
        self.not_run = 0  # --report-only: runs without a record, reported as not run
        self.digests = {}
        self.done_dir = os.path.join(out_dir, "done")
        os.makedirs(self.done_dir, exist_ok=True)
        self.others = None  # {canonical key: record path} of the other experiments' runs (built on demand)
        jobs = max(1, args.jobs)
        env = dict(os.environ)
        if "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        env.setdefault("OMP_WAIT_POLICY", "passive")
        self.env = env

    def tokens_per_run(self):
        t = self.exp["train"]
        return t["max_steps"] * t["batch_size"] * t["seq_len"] * t["grad_accum"]

    def run_key(self, arm, lr, seed, cfg_path, data):
        """Everything a finished run's result depends on; a resumed run is reused only when equal."""
        with open(cfg_path, encoding="utf-8") as fh:
            cfg = json.load(fh)
        cfg.pop("comment", None)
        return {"arm": arm, "lr": lr, "seed": seed, "config": cfg, "device": self.args.device,
                "data": self.data_digest(data),
                "eval": self.exp.get("eval") or self.exp.get("task_eval"),
                "min_lr_ratio": self.exp["train"]["min_lr_ratio"]}

    def data_digest(self, data):
        """The token files' contents (not their paths: a record made on another machine still matches)."""
        with self.lock:
            if data not in self.digests:
                meta = read_json(os.path.join(data, "meta.json"), "data meta")
                h = hashlib.sha256(str(meta.get("vocab_size")).encode())
                for part in ("train", "val"):
                    with open(os.path.join(data, meta[part]["file"]), "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            h.update(block)
                self.digests[data] = h.hexdigest()[:16]
            return self.digests[data]

    @staticmethod
    def record(done_path, key, res):
        """A finished run's record for --resume, written atomically (complete or absent)."""
        tmp_path = done_path + ".tmp"
        with open(tmp_path, "w", encoding="utf-8") as fh:
            json.dump({"key": key, "result": res}, fh, indent=1, allow_nan=True)
        os.replace(tmp_path, done_path)

    def reuse(self, path, key):
        if not (self.args.resume and os.path.isfile(path)):
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                rec = json.load(fh)
        except (OSError, json.JSONDecodeError):
            log(f"resume: {rel(path)} is unreadable: the run is trained again")
            return None
        if rec.get("key") != key:
            log(f"resume: {rel(path)} was made with other settings: the run is trained again")
            return None
        return rec["result"]

    def from_other_experiment(self, key):
        """A run another experiment under the same --out root finished with exactly these settings
        (the same resolved config, lr, seed, data, device and evaluation; only the arm's name may
        differ), e.g. rom_routers' `shared` arm is rom_vs_dense's `rom`. Returns (result, path)."""
        if not self.args.resume:
            return None, None
        canon = lambda k: json.dumps({f: v for f, v in k.items() if f != "arm"}, sort_keys=True)
        with self.lock:
            if self.others is None:
                self.others = {}
                root = os.path.dirname(self.out)
                for path in sorted(glob.glob(os.path.join(root, "*", "done", "*.json"))):
                    if os.path.dirname(os.path.dirname(path)) == self.out:
                        continue
                    try:
                        with open(path, encoding="utf-8") as fh:
                            rec = json.load(fh)
                        self.others.setdefault(canon(rec["key"]), path)
                    except (OSError, ValueError, KeyError, TypeError, AttributeError):
                        continue  # unreadable or foreign: ignored, never trusted
            path = self.others.get(canon(key))
        if path is None:
            return None, None
        with open(path, encoding="utf-8") as fh:
            res = json.load(fh)["result"]
        return res, path

    def job(self, arm, lr, seed, cfg_path, data, cost):
        t = self.exp["train"]
        tag = f"{arm}/lr{lr_tag(lr)}_s{seed}"
        key = self.run_key(arm, lr, seed, cfg_path, data)
        stem = f"{arm}_lr{lr_tag(lr)}_s{seed}"  # names the run's record and its logs
        done_path = os.path.join(self.done_dir, stem + ".json")
        old = self.reuse(done_path, key)
        where = "by an earlier call"
        if old is None:
            old, other = self.from_other_experiment(key)
            if old is not None:
                old = dict(old, arm=arm, reused_from=old.get("reused_from") or rel(other))
                where = f"for {rel(other)}"
                self.record(done_path, key, old)
        if old is None and self.args.report_only:
            with self.lock:
                self.n_done += 1
                self.not_run += 1
            return {"arm": arm, "lr": lr, "seed": seed, "ok": False, "not_run": True, "val_loss": float("inf"),
                    "error": "not run yet (--report-only)", "curve": []}
        if old is not None:
            with self.lock:
                self.n_done += 1
                self.reused += 1
                self.total_cost -= cost
                log(f"[{self.n_done}/{self.n_total}] {tag}: reused (val_loss {old['val_loss']:.4f}, "
                    f"trained in {old.get('train_s', 0):.1f} s {where})")
            return old
        run_dir = os.path.join(self.out, "runs", arm, f"lr{lr_tag(lr)}_s{seed}")
        logs = os.path.join(self.out, "logs")
        os.makedirs(os.path.dirname(run_dir), exist_ok=True)
        train_argv = [self.args.moessm, "train", "--config", cfg_path, "--data", data, "--out", run_dir,
                      "--lr", repr(lr), "--min-lr", repr(lr * t["min_lr_ratio"]), "--seed", str(seed),
                      "--checkpoint-every", str(t["max_steps"]), "--device", self.args.device, "--overwrite"]
        res = {"arm": arm, "lr": lr, "seed": seed, "run_dir": rel(run_dir), "ok": False,
               "commands": [train_argv], "moessm_version": self.version, "jobs": max(1, self.args.jobs)}
        train_log = os.path.join(logs, stem + ".train.log")
        rc, secs = run_cmd(train_argv, train_log, self.env)
        res["train_s"] = round(secs, 2)
        rows = read_metrics(run_dir)
        res["curve"] = thin_curve([{"step": r["step"], "loss": r.get("loss"), "val_loss": r.get("val_loss")}
                                   for r in rows])
        vals = [r["val_loss"] for r in rows if "val_loss" in r]
        if rc != 0 or not vals:
            res["error"] = f"moessm train exit {rc}; log {rel(train_log)}"
            res["val_loss"] = float("inf")
        else:
            res["val_loss"] = vals[-1]
            res["train_loss"] = rows[-1].get("loss")
            ok = math.isfinite(res["val_loss"])
            if self.exp["kind"] == "lm":
                ev = self.exp["eval"]
                jpath = os.path.join(run_dir, "eval.json")
                argv = [self.args.moessm, "eval", "--model", run_dir, "--data", data,
                        "--ctx", ",".join(str(c) for c in ev["ctx"]), "--max-tokens", str(ev["max_tokens"]),
                        "--json", jpath, "--device", self.args.device]
                if "batch" in ev:
                    argv += ["--batch", str(ev["batch"])]
                res["commands"].append(argv)
                rc2, s2 = run_cmd(argv, os.path.join(logs, stem + ".eval.log"), self.env)
                res["eval_s"] = round(s2, 2)
                if rc2 == 0 and os.path.isfile(jpath):
                    ej = read_json(jpath, "eval result")
                    res["eval"] = {str(r["ctx"]): {"loss": r["loss"], "perplexity": r["perplexity"],
                                                   "bits_per_byte": r.get("bits_per_byte"),
                                                   "predictions": r["predictions"]} for r in ej["results"]}
                    if by_position(self.exp):
                        for r in ej["results"]:
                            res["eval"][str(r["ctx"])]["by_position"] = position_buckets(r.get("loss_by_position", []))
                else:
                    ok = False
                    res["error"] = f"moessm eval exit {rc2}"
            else:
                jpath = os.path.join(run_dir, "task_eval.json")
                argv = [self.args.moessm, "task", "eval", "--model", run_dir, "--data", data,
                        "--examples", str(self.exp["task_eval"]["examples"]), "--json", jpath,
                        "--device", self.args.device]
                res["commands"].append(argv)
                rc2, s2 = run_cmd(argv, os.path.join(logs, stem + ".task_eval.log"), self.env)
                res["eval_s"] = round(s2, 2)
                if rc2 == 0 and os.path.isfile(jpath):
                    tj = read_json(jpath, "task eval result")
                    res["task"] = {k: tj[k] for k in ("answer_accuracy", "example_accuracy", "examples", "answers")}
                else:
                    ok = False
                    res["error"] = f"moessm task eval exit {rc2}"
            res["ok"] = ok
        # Recorded for --resume: finished runs and runs that diverged (an outcome of the settings).
        # Any other failure (interrupted by a signal, no GPU, out of memory, a failed evaluation)
        # leaves no record, so a resumed experiment trains that run again.
        if res["ok"] or (rc > 0 and diverged(train_log)):
            self.record(done_path, key, res)
        with self.lock:
            self.n_done += 1
            self.done_cost += cost
            el = time.time() - self.t0
            eta = el / self.done_cost * (self.total_cost - self.done_cost) if self.done_cost > 0 else 0
            status = f"val_loss {res['val_loss']:.4f}" if res["ok"] else f"FAILED ({res.get('error')})"
            log(f"[{self.n_done}/{self.n_total}] {tag}: {status} in {res['train_s'] + res.get('eval_s', 0):.1f} s"
                f" | elapsed {fmt_time(el)} | ETA {fmt_time(eta)}")
        return res

    def run_all(self, arms, data):
        """Phase 1: every arm's lr sweep on the first seed; phase 2: the other seeds at the chosen lr."""
        seeds = self.exp["seeds"]
        cost_of = {a["name"]: a["accounting"]["train_flops"] * self.tokens_per_run() for a in arms}
        self.n_total = sum(len(a["lr"]) + len(seeds) - 1 for a in arms)
        self.total_cost = sum(cost_of[a["name"]] * (len(a["lr"]) + len(seeds) - 1) for a in arms)
        log(f"{self.n_total} runs ({len(arms)} arms, seeds {seeds}, {self.tokens_per_run():,} training tokens each), "
            f"{max(1, self.args.jobs)} at a time, OMP_NUM_THREADS={self.env['OMP_NUM_THREADS']}")
        results = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.args.jobs)) as pool:
            futs = [pool.submit(self.job, a["name"], lr, seeds[0], a["cfg_path"], data, cost_of[a["name"]])
                    for a in arms for lr in a["lr"]]
            sweep = [f.result() for f in futs]
            results += sweep
            for a in arms:
                mine = [r for r in sweep if r["arm"] == a["name"]]
                best = min(mine, key=lambda r: (r["val_loss"] if r["ok"] else float("inf"), r["lr"]))
                a["chosen_lr"] = best["lr"]
                a["sweep"] = [{"lr": r["lr"], "val_loss": r["val_loss"] if r["ok"] else None, "ok": r["ok"],
                               "not_run": bool(r.get("not_run"))} for r in mine]
                a["lr_at_edge"] = len(a["lr"]) > 1 and best["lr"] in (min(a["lr"]), max(a["lr"]))
            futs = [pool.submit(self.job, a["name"], a["chosen_lr"], s, a["cfg_path"], data, cost_of[a["name"]])
                    for a in arms for s in seeds[1:]]
            results += [f.result() for f in futs]
        return results


# ---- aggregation, table, plot -----------------------------------------------------------------------

def by_position(exp):
    """Whether the experiment reports the loss by position (language-model experiments only)."""
    return exp["kind"] == "lm" and exp["eval"].get("by_position", False)


def position_buckets(loss_by_position):
    """moessm eval's loss_by_position (entry i: the prediction made after i+1 tokens of context)
    averaged over octaves of the context length: [{"from": a, "to": b, "loss": mean}] for the
    predictions made after a … b-1 tokens (1, 2-3, 4-7, …; the last octave ends at the window)."""
    out, lo = [], 1
    n = len(loss_by_position)
    while lo <= n:
        hi = min(2 * lo, n + 1)
        v = [x for x in loss_by_position[lo - 1:hi - 1] if isinstance(x, (int, float))]
        out.append({"from": lo, "to": hi, "loss": sum(v) / len(v) if v else None})
        lo = hi
    return out


SPEED_TRAIN = re.compile(r"^step\s+(\d+)/\d+ .*\| (\d+) tok/s")
SPEED_DECODE = re.compile(r"^generated: .*, ([0-9.]+) ms/step\)")


def log_matches(path, pattern):
    """The matches of a compiled pattern at the start of each line of a log (none if it is absent)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [m for m in map(pattern.match, fh) if m]
    except OSError:
        return []


def measure_speed(args, exp, arms, data, out_dir, env):
    """Training throughput and decode latency of every arm, one process at a time (nothing else of
    this runner is running then): `moessm train` for speed.train_steps steps on the experiment's
    data (tokens/s: the median over the progress lines after the first third, i.e. after warm-up)
    and `moessm generate` of speed.decode_tokens tokens at batch 1 from a freshly initialised
    checkpoint (ms per token; speed does not depend on the weights' values). Ratios are to
    speed.baseline. Not part of any run's record: measured again on every call."""
    sp, t = exp["speed"], exp["train"]
    work = os.path.join(out_dir, "speed")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tok = os.path.join(data, "tokenizer.json")
    out = {}
    for a in arms:
        n, steps = a["name"], sp["train_steps"]
        run_dir, ck = os.path.join(work, n, "train"), os.path.join(work, n, "init")
        argv = [args.moessm, "train", "--config", a["cfg_path"], "--data", data, "--out", run_dir,
                "--lr", "1e-4", "--min-lr", "1e-5", "--max-steps", str(steps), "--warmup-steps", "1",
                "--eval-every", str(steps), "--checkpoint-every", str(steps),
                "--log-every", str(max(1, steps // 12)), "--device", args.device, "--overwrite"]
        rc, _ = run_cmd(argv, os.path.join(work, f"{n}.train.log"), env)
        rates = sorted(float(m.group(2)) for m in log_matches(os.path.join(work, f"{n}.train.log"), SPEED_TRAIN)
                       if int(m.group(1)) > steps // 3)
        res = {"train_tokens_per_s": rates[len(rates) // 2] if rc == 0 and rates else None,
               "train_tokens_per_step": t["batch_size"] * t["seq_len"] * t["grad_accum"]}
        rc1, _ = run_cmd([args.moessm, "init", "--config", a["cfg_path"], "--out", ck, "--overwrite"],
                         os.path.join(work, f"{n}.init.log"), env)
        argv = [args.moessm, "generate", "--model", ck, "--tokenizer", tok, "--prompt", "The",
                "--max-new-tokens", str(sp["decode_tokens"]), "--ignore-eot", "--temperature", "0",
                "--device", args.device]
        rc2, _ = run_cmd(argv, os.path.join(work, f"{n}.generate.log"), env) if rc1 == 0 else (rc1, 0)
        ms = [float(m.group(1)) for m in log_matches(os.path.join(work, f"{n}.generate.log"), SPEED_DECODE)]
        res["decode_ms_per_token"] = ms[-1] if rc2 == 0 and ms else None
        shutil.rmtree(os.path.join(work, n), ignore_errors=True)  # checkpoints: not needed
        out[n] = res
        log(f"speed {n}: training {res['train_tokens_per_s'] or 'failed'} tokens/s, decode "
            f"{res['decode_ms_per_token'] or 'failed'} ms/token (batch 1)")
    base = out.get(sp["baseline"], {})
    for n, r in out.items():
        for k in ("train_tokens_per_s", "decode_ms_per_token"):
            r[k + "_ratio"] = r[k] / base[k] if r.get(k) and base.get(k) else None
    return {"baseline": sp["baseline"], "device": args.device, "arms": out,
            "train_steps": sp["train_steps"], "decode_tokens": sp["decode_tokens"]}


def speed_table(sp):
    L = ["", f"Speed on `{sp['device']}`, one process at a time (training: median tokens/s over the progress lines "
             f"after warm-up of a {sp['train_steps']}-step run; decode: ms per token at batch 1 over "
             f"{sp['decode_tokens']} tokens; ratios to {sp['baseline']}):", "",
         "| arm | training tokens/s | ratio | decode ms/token | ratio |", "|---|---|---|---|---|"]
    f = lambda v, d: "failed" if v is None else f"{v:,.{d}f}"
    for n, r in sp["arms"].items():
        L.append(f"| {n} | {f(r['train_tokens_per_s'], 0)} | {f(r['train_tokens_per_s_ratio'], 3)} | "
                 f"{f(r['decode_ms_per_token'], 3)} | {f(r['decode_ms_per_token_ratio'], 3)} |")
    return L


def flops_to_match(target, ladder):
    """The forward FLOPs per token at which a ladder of models (e.g. ever wider dense hybrids)
    reaches the target's validation loss, by linear interpolation of the mean loss in log FLOPs
    between the two rungs that bracket it. target and ladder entries: (name, fwd_flops, mean loss).
    Returns {"flops": F or None, "ratio": F / target FLOPs or None, "status": ...}: status is
    "interpolated", "below the ladder" (the smallest rung already reaches the target's loss: the
    ratio is at most the smallest rung's) or "beyond the ladder" (no rung reaches it)."""
    name, f_t, loss_t = target
    rungs = sorted((f, l) for _, f, l in ladder)
    if loss_t is None or any(l is None for _, l in rungs):
        return {"flops": None, "ratio": None, "status": "a run is missing"}
    if rungs[0][1] <= loss_t:
        return {"flops": None, "ratio": None, "at_most": rungs[0][0] / f_t, "status": "below the ladder"}
    for (f0, l0), (f1, l1) in zip(rungs, rungs[1:]):
        if l1 <= loss_t < l0:
            x = math.log(f0) + (math.log(f1) - math.log(f0)) * (l0 - loss_t) / (l0 - l1)
            return {"flops": math.exp(x), "ratio": math.exp(x) / f_t, "status": "interpolated"}
    return {"flops": None, "ratio": None, "at_least": rungs[-1][0] / f_t, "status": "beyond the ladder"}


def flops_to_match_report(exp, arms_out):
    f = exp.get("report", {}).get("flops_to_match")
    if not f:
        return None
    point = lambda n: (n, arms_out[n]["accounting"]["fwd_flops"],
                       (arms_out[n]["summary"]["val_loss"] or {}).get("mean"))
    out = flops_to_match(point(f["target"]), [point(n) for n in f["ladder"]])
    out.update(target=f["target"], ladder=f["ladder"])
    return out


def flops_to_match_line(r):
    t, lad = r["target"], ", ".join(r["ladder"])
    if r["status"] == "interpolated":
        return (f"FLOPs to match: the dense ladder ({lad}) reaches {t}'s mean validation loss at "
                f"{human(r['flops'])} forward FLOPs/token, {r['ratio']:.2f}× {t}'s (interpolated in log FLOPs): "
                f"{t} saves {100 * (1 - 1 / r['ratio']):.0f}% of the FLOPs.")
    if r["status"] == "below the ladder":
        return (f"FLOPs to match: the smallest rung of the ladder ({lad}) already reaches {t}'s mean validation "
                f"loss at {r['at_most']:.2f}× its FLOPs: {t} saves nothing.")
    if r["status"] == "beyond the ladder":
        return (f"FLOPs to match: no rung of the ladder ({lad}) reaches {t}'s mean validation loss: more than "
                f"{r['at_least']:.2f}× its FLOPs (extend the ladder).")
    return f"FLOPs to match ({t} against {lad}): not computed ({r['status']})."


def stats(values):
    v = [x for x in values if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]
    if not v:
        return None
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": mean, "std": sd, "min": min(v), "max": max(v), "n": len(v)}


def pm(s, digits=4):
    if s is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def human(x):
    for suf, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.3f}{suf}"
    return f"{x:.0f}"


def aggregate(exp, arms, results):
    out = {}
    for a in arms:
        runs = [r for r in results if r["arm"] == a["name"] and r["lr"] == a["chosen_lr"]]
        runs.sort(key=lambda r: exp["seeds"].index(r["seed"]))
        summ = {"val_loss": stats([r["val_loss"] if r["ok"] else None for r in runs])}
        if exp["kind"] == "lm":
            for c in exp["eval"]["ctx"]:
                summ[f"eval_loss@{c}"] = stats([r.get("eval", {}).get(str(c), {}).get("loss") for r in runs])
                summ[f"perplexity@{c}"] = stats([r.get("eval", {}).get(str(c), {}).get("perplexity") for r in runs])
            if by_position(exp):
                c = str(max(exp["eval"]["ctx"]))  # the longest window holds every position
                buckets = [b for r in runs for b in r.get("eval", {}).get(c, {}).get("by_position", [])]
                edges = sorted({(b["from"], b["to"]) for b in buckets})
                summ[f"loss_by_position@{c}"] = [
                    {"from": f, "to": t, "loss": stats([b["loss"] for b in buckets if (b["from"], b["to"]) == (f, t)])}
                    for f, t in edges]
        else:
            for k in ("answer_accuracy", "example_accuracy"):
                summ[k] = stats([r.get("task", {}).get(k) for r in runs])
        out[a["name"]] = {"model_source": a["model_source"], "model": a["model"], "accounting": a["accounting"],
                          "lr_sweep": a["sweep"], "chosen_lr": a["chosen_lr"], "lr_at_edge_of_sweep": a["lr_at_edge"],
                          "seeds": [{k: r[k] for k in r if k != "curve"} for r in runs], "summary": summ,
                          "failed_runs": sum(1 for r in results if r["arm"] == a["name"] and not r["ok"]
                                             and not r.get("not_run")),
                          "not_run": sum(1 for r in results if r["arm"] == a["name"] and r.get("not_run"))}
    return out


def write_table(path, exp, name, quick, arms_out, matching, meta, cmdline, speed=None):
    t = exp["train"]
    tokens = t["max_steps"] * t["batch_size"] * t["seq_len"] * t["grad_accum"]
    L = [f"# Study `{name}`{' (QUICK: pipeline smoke test, not evidence)' if quick else ''}", ""]
    if exp.get("claim"):
        L += [f"Claim tested: {exp['claim']}", ""]
    L += [f"Command: `{cmdline}`", "",
          f"Budget per run: {t['max_steps']:,} steps × {t['batch_size']} × {t['seq_len']}"
          f"{' × ' + str(t['grad_accum']) if t['grad_accum'] != 1 else ''} = {tokens:,} training tokens; "
          f"seeds {exp['seeds']} (seed = initialisation and data order, the same for every arm); "
          f"cosine lr to {t['min_lr_ratio']}× the peak, warm-up {t.get('warmup_steps', 'default')} steps.", "",
          f"Data: {meta}", "",
          "Learning rate: each arm's sweep runs on the first seed; the lr with the lowest final validation loss "
          "is chosen and the other seeds run at it. The selection uses the same validation split that is "
          "reported (there is no separate test split); the first seed's run at the chosen lr is among the "
          "reported seeds. ± is the sample standard deviation over the seeds (n given).", ""]
    if exp["kind"] == "lm":
        ctx = exp["eval"]["ctx"]
        head = ["arm", "total params", "active params", "fwd FLOPs/token", "lr (chosen)", "n", "val loss"] + \
               [f"loss @ctx {c}" for c in ctx] + [f"ppl @ctx {c}" for c in ctx]
    else:
        head = ["arm", "total params", "active params", "fwd FLOPs/token", "lr (chosen)", "n", "val loss",
                "answer accuracy", "example accuracy"]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, a in arms_out.items():
        acc, s = a["accounting"], a["summary"]
        lr = f"{a['chosen_lr']:g}{' (edge of sweep)' if a['lr_at_edge_of_sweep'] else ''}"
        if not any(s["ok"] for s in a["lr_sweep"]):
            lr = "none (no finished sweep run)"
        nn = s["val_loss"]["n"] if s["val_loss"] else 0
        row = [n, f"{acc['total_params']:,}", f"{acc['active_params']:,}", human(acc["fwd_flops"]), lr, str(nn),
               pm(s["val_loss"])]
        if exp["kind"] == "lm":
            row += [pm(s[f"eval_loss@{c}"]) for c in ctx] + [pm(s[f"perplexity@{c}"], 2) for c in ctx]
        else:
            row += [pm(s["answer_accuracy"], 3), pm(s["example_accuracy"], 3)]
        L.append("| " + " | ".join(row) + " |")
    if by_position(exp):
        c = max(exp["eval"]["ctx"])
        rows = {n: a["summary"].get(f"loss_by_position@{c}", []) for n, a in arms_out.items()}
        edges = sorted({(b["from"], b["to"]) for v in rows.values() for b in v})
        if edges:
            L += ["", f"Loss by position in the {c:,}-token window (predictions made after that many tokens of "
                  f"context; trained at {t['seq_len']}):", "",
                  "| arm | " + " | ".join(f"{f:,}–{to - 1:,}" if to - 1 > f else f"{f:,}" for f, to in edges) + " |",
                  "|---|" + "---|" * len(edges)]
            for n, v in rows.items():
                by = {(b["from"], b["to"]): b["loss"] for b in v}
                L.append(f"| {n} | " + " | ".join(pm(by.get(e), 3) for e in edges) + " |")
    L += ["", "Learning-rate sweep (first seed, final validation loss; `failed` = the run stopped, e.g. diverged):", "",
          "| arm | " + " | ".join(["sweep"]) + " |", "|---|---|"]
    for n, a in arms_out.items():
        cells = ", ".join(f"{s['lr']:g}: {s['val_loss']:.4f}" if s["ok"] else
                          f"{s['lr']:g}: {'not run yet' if s.get('not_run') else 'failed'}" for s in a["lr_sweep"])
        L.append(f"| {n} | {cells} |")
    ftm = flops_to_match_report(exp, arms_out)
    if ftm:
        L += ["", flops_to_match_line(ftm)]
    if speed:
        L += speed_table(speed)
    if matching:
        L += ["", "Matching (the project's own accounting, `moessm init`):", ""]
        for m in matching:
            L.append(f"- {m['quantity']} {m['arms'][0]} / {m['arms'][1]} = {m['value']:.4f} "
                     f"(wanted {m['ratio']} ± {m['tolerance'] * 100:g}%): {'ok' if m['ok'] else 'NOT MET'}")
    failed = sum(a["failed_runs"] for a in arms_out.values())
    if failed:
        L += ["", f"**{failed} run(s) failed**: see results.json (`error`) and the logs under logs/."]
    missing = sum(a.get("not_run", 0) for a in arms_out.values())
    if missing:
        L += ["", f"**{missing} run(s) not run yet**: this table was rebuilt from the finished runs' records "
                  "(`--report-only`); `--resume` trains the rest. An arm whose sweep is incomplete has a "
                  "provisional lr and may lack seeds (n)."]
    L.append("")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(L))


def plot(path, exp, name, quick, arms_out, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = exp["train"]
    tps = t["batch_size"] * t["seq_len"] * t["grad_accum"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    for i, (n, a) in enumerate(arms_out.items()):
        colour = f"C{i % 10}"
        runs = [r for r in results if r["arm"] == n and r["lr"] == a["chosen_lr"] and r["ok"]]
        if not runs:
            continue
        steps = sorted({p["step"] for r in runs for p in r["curve"] if p.get("val_loss") is not None})
        mean, lo, hi, xs = [], [], [], []
        for s in steps:
            v = [p["val_loss"] for r in runs for p in r["curve"] if p["step"] == s and p.get("val_loss") is not None]
            if len(v) == len(runs):
                xs.append(s * tps)
                mean.append(sum(v) / len(v))
                lo.append(min(v))
                hi.append(max(v))
        ftok = a["accounting"]["train_flops"]
        for ax, scale in ((axes[0], 1.0), (axes[1], ftok)):
            x = [v * scale for v in xs]
            ax.plot(x, mean, "o-", color=colour, markersize=3, linewidth=1.5,
                    label=f"{n} (lr {a['chosen_lr']:g}, {len(runs)} seeds)")
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
            tr = [(p["step"] * tps * scale, p["loss"]) for p in runs[0]["curve"] if p.get("loss") is not None]
            if tr:
                ax.plot([u for u, _ in tr], ema([v for _, v in tr], alpha=0.1), color=colour, alpha=0.35, linewidth=0.8)
    axes[0].set_xlabel("training tokens")
    axes[1].set_xlabel("training FLOPs (3 × fwd FLOPs/token × tokens)")
    for ax in axes:
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}{' — QUICK smoke test, not evidence' if quick else ''}: validation loss, mean and "
                 "min–max over seeds (faint: first seed's training loss, EMA)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_length(path, exp, name, quick, arms_out):
    """Loss against the evaluation context length and against the position in the longest window."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ctx = sorted(exp["eval"]["ctx"])
    c = str(ctx[-1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    for i, (n, a) in enumerate(arms_out.items()):
        colour, s = f"C{i % 10}", a["summary"]
        pts = [(k, s.get(f"eval_loss@{k}")) for k in ctx]
        pts = [(k, v) for k, v in pts if v]
        if pts:
            axes[0].plot([k for k, _ in pts], [v["mean"] for _, v in pts], "o-", color=colour, markersize=3,
                         label=f"{n} ({pts[0][1]['n']} seeds)")
            axes[0].fill_between([k for k, _ in pts], [v["min"] for _, v in pts], [v["max"] for _, v in pts],
                                 color=colour, alpha=0.2, linewidth=0)
        pos = [(b["from"], b["to"], b["loss"]) for b in s.get(f"loss_by_position@{c}", []) if b["loss"]]
        if pos:
            x = [math.sqrt(f * (t - 1)) if t - 1 > f else f for f, t, _ in pos]
            axes[1].plot(x, [v["mean"] for _, _, v in pos], "o-", color=colour, markersize=3, label=n)
            axes[1].fill_between(x, [v["min"] for _, _, v in pos], [v["max"] for _, _, v in pos],
                                 color=colour, alpha=0.2, linewidth=0)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.axvline(exp["train"]["seq_len"], color="grey", linestyle=":", linewidth=1)
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_xlabel("evaluation context (tokens; windows from an empty state; dotted: training length)")
    axes[1].set_xlabel(f"position in a {int(c):,}-token window (octave means)")
    fig.suptitle(f"{name}{' — QUICK smoke test, not evidence' if quick else ''}: loss against context length "
                 "and position, mean and min–max over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------------

def default_moessm(device):
    cands = [os.path.join(ROOT, "build", d, "moessm") for d in (("gpu", "test", "cpu") if device == "cuda" else ("cpu", "test", "gpu"))]
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return cands[0]


def main():
    reexec_if_no_matplotlib(__file__, "MOESSM_STUDY_REEXEC")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="experiment: configs/study/NAME.json, or a path to an experiment file")
    ap.add_argument("--quick", action="store_true", help="apply the experiment's quick block (CPU smoke test)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "study"), help="output root (default runs/study)")
    ap.add_argument("--moessm", default=None, help="the moessm program (default build/cpu/moessm, build/gpu for cuda)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (OMP_NUM_THREADS = cores / jobs unless set)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT/NAME results directory")
    ap.add_argument("--resume", action="store_true",
                    help="continue OUT/NAME: reuse every finished run whose record matches, train the rest")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild results.json, table.md and the plots from the finished runs' records "
                         "(implies --resume); train and measure nothing, list the missing runs as not run")
    ap.add_argument("--no-plot", action="store_true", help="do not draw loss.png (no matplotlib needed)")
    ap.add_argument("--check", action="store_true", help="print the arms' accounting and the matching, run nothing")
    args = ap.parse_args()
    if args.report_only:
        args.resume = True
    if args.resume and args.overwrite:
        sys.exit("study: --resume and --overwrite exclude each other (continue the results, or replace them)")
    args.moessm = os.path.abspath(args.moessm or default_moessm(args.device))
    if not (os.path.isfile(args.moessm) and os.access(args.moessm, os.X_OK)):
        sys.exit(f"study: {args.moessm}: no moessm program there (build it: ninja -C build/cpu moessm, or pass --moessm)")
    try:
        return run(args)
    except ConfigError as e:
        sys.exit(f"study: {e}")
    except RuntimeError as e:
        sys.exit(f"study: {e}")


def run(args):
    t_start = time.time()
    exp_path = resolve_experiment_path(args.name)
    name = os.path.splitext(os.path.basename(exp_path))[0]
    exp = load_experiment(exp_path, args.quick)
    result_name = name + ("_quick" if args.quick else "")
    out_root = os.path.abspath(args.out)
    out_dir = os.path.join(out_root, result_name)
    if not args.check:
        if os.path.exists(out_dir) and os.listdir(out_dir) and not args.resume:
            if not args.overwrite:
                raise ConfigError(f"{out_dir}: a results directory already exists (pass --resume to continue it, "
                                  f"--overwrite to replace it)")
            shutil.rmtree(out_dir)
        os.makedirs(os.path.join(out_dir, "configs"), exist_ok=True)
        os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
        if not args.no_plot:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise RuntimeError("matplotlib is missing: install Debian's python3-matplotlib (scripts/setup.sh "
                                   "does), or pass --no-plot")
    # arms: resolved configs and the project's accounting
    arms = []
    tmp = tempfile.mkdtemp(prefix="moessm_study_")
    try:
        for a in exp["arms"]:
            model, src = resolve_model(a, exp_path)
            train = {k: v for k, v in exp["train"].items() if k in TRAIN_KEYS_FROM_EXPERIMENT}
            train["checkpoint_every"] = exp["train"]["max_steps"]
            model["train"] = train
            cfg_dir = os.path.join(out_dir, "configs") if not args.check else tmp
            cfg_path = os.path.join(cfg_dir, a["name"] + ".json")
            with open(cfg_path, "w", encoding="utf-8") as fh:
                json.dump(model, fh, indent=2)
                fh.write("\n")
            try:
                acc = accounting(args.moessm, cfg_path, tmp)
            except ConfigError as e:
                raise ConfigError(f"{rel(exp_path)}: arm {a['name']}: its model ({src} with the arm's override"
                                  f"{' and the quick block' if args.quick else ''}) is refused: {e}")
            arms.append({"name": a["name"], "lr": a["lr"], "model": model, "model_source": src, "cfg_path": cfg_path,
                         "accounting": acc})
            log(f"arm {a['name']} ({src}): params total {acc['total_params']:,}, active {acc['active_params']:,}; "
                f"forward FLOPs/token {human(acc['fwd_flops'])}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by = {a["name"]: a for a in arms}
    matching, bad = [], []
    for j, m in enumerate(exp.get("matching", [])):
        x, y = (by[n]["accounting"][m["quantity"]] for n in m["arms"])
        v = x / y
        ok = abs(v / m["ratio"] - 1) <= m["tolerance"]
        matching.append({**m, "value": v, "ok": ok})
        log(f"matching {m['quantity']} {m['arms'][0]}/{m['arms'][1]} = {v:.4f} (wanted {m['ratio']} ± "
            f"{m['tolerance'] * 100:g}%): {'ok' if ok else 'NOT MET'}")
        if not ok:
            bad.append(f"{rel(exp_path)}: {'quick.' if args.quick and 'matching' in exp.get('quick', {}) else ''}"
                       f"matching[{j}]: {m['quantity']} of {m['arms'][0]} / {m['arms'][1]} is {v:.4f}, wanted "
                       f"{m['ratio']} within {m['tolerance'] * 100:g}%")
    if bad:
        raise ConfigError("the arms are not matched as the experiment requires:\n  " + "\n  ".join(bad))
    if args.check:
        return 0
    cache = os.path.join(out_root, "_data")
    if exp["kind"] == "lm":
        data, split = prepare_corpus(args.moessm, os.path.join(ROOT, exp["data"]), cache)
        meta = read_json(os.path.join(data, "meta.json"), "data meta")
        data_info = {"kind": "corpus", "definition": exp["data"], "dir": data, "train_tokens": meta["train"]["tokens"],
                     "val_tokens": meta["val"]["tokens"], "vocab_size": meta["vocab_size"],
                     "tokenizer_hash": meta["tokenizer"].get("hash"), "split": split}
        meta_line = (f"{exp['data']}: {data_info['train_tokens']:,} training tokens, {data_info['val_tokens']:,} "
                     f"validation tokens, BPE vocabulary {data_info['vocab_size']:,} trained on the training split "
                     f"(tokenizer hash {data_info['tokenizer_hash']}).")
    else:
        data = prepare_task(args.moessm, exp["task"], cache)
        meta = read_json(os.path.join(data, "meta.json"), "task meta")
        data_info = {"kind": "task", "dir": data, "task": meta.get("task"), "train_tokens": meta["train"]["tokens"],
                     "val_tokens": meta["val"]["tokens"]}
        tk = meta.get("task", {})
        meta_line = (f"`moessm task make` {json.dumps(tk)}: {data_info['train_tokens']:,} training tokens; accuracy on "
                     f"{exp['task_eval']['examples']} fresh examples (chance per answer ≈ 1/{tk.get('symbols', '?')}).")
    version = subprocess.run([args.moessm, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True).stdout.strip()
    runner = Runner(args, exp, exp_path, result_name, out_dir, version)
    results = runner.run_all(arms, data)
    arms_out = aggregate(exp, arms, results)
    speed = None
    if exp.get("speed") and exp["kind"] == "lm":
        if args.report_only:  # measures nothing: keeps an earlier call's measurement, if any
            old_doc = os.path.join(out_dir, "results.json")
            speed = read_json(old_doc, "results").get("speed") if os.path.isfile(old_doc) else None
        else:
            speed = measure_speed(args, exp, arms, data, out_dir, runner.env)
    cmdline = "python3 tools/study.py " + " ".join(
        [name] + (["--quick"] if args.quick else []) + (["--device", args.device] if args.device != "cpu" else []) +
        (["--jobs", str(args.jobs)] if args.jobs != 1 else []))
    t = exp["train"]
    doc = {"experiment": name, "config": rel(exp_path), "quick": args.quick,
           "note": "QUICK mode: a pipeline smoke test on tiny models, not evidence" if args.quick else "",
           "claim": exp.get("claim"), "command": cmdline, "device": args.device, "moessm": args.moessm,
           "moessm_version": version, "jobs": args.jobs, "omp_num_threads": runner.env["OMP_NUM_THREADS"],
           # a resumed call reuses runs an earlier call (perhaps another machine) trained: who trained what
           "runs_reused": runner.reused, "runs_not_run": runner.not_run,
           "trained_by": sorted({r.get("moessm_version", "unrecorded") for r in results}),
           "data": data_info, "train": t, "tokens_per_run": runner.tokens_per_run(), "seeds": exp["seeds"],
           "eval": exp.get("eval") or exp.get("task_eval"),
           "lr_selection": "per arm: lowest final trainer val_loss on the first seed; the other seeds at that lr",
           "matching": matching, "arms": arms_out, "flops_to_match": flops_to_match_report(exp, arms_out),
           "speed": speed,
           "wall_s": round(time.time() - t_start, 1)}
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, allow_nan=True)
        fh.write("\n")
    write_table(os.path.join(out_dir, "table.md"), exp, name, args.quick, arms_out, matching, meta_line, cmdline,
                speed)
    if not args.no_plot:
        plot(os.path.join(out_dir, "loss.png"), exp, name, args.quick, arms_out, results)
        if by_position(exp):
            plot_length(os.path.join(out_dir, "length.png"), exp, name, args.quick, arms_out)
    failed = sum(a["failed_runs"] for a in arms_out.values())
    log(f"wrote {out_dir}/results.json, table.md{'' if args.no_plot else ', loss.png'}"
        f"{', length.png' if not args.no_plot and by_position(exp) else ''} in "
        f"{fmt_time(time.time() - t_start)}" + (f" ({runner.reused} runs reused)" if runner.reused else ""))
    with open(os.path.join(out_dir, "table.md"), encoding="utf-8") as fh:
        print(fh.read())
    if failed:
        log(f"{failed} run(s) failed: see the logs under {out_dir}/logs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
