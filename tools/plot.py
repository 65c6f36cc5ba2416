#!/usr/bin/env python3
"""Plots from moessm's own files (PNG, matplotlib from Debian's python3-matplotlib).

  tools/plot.py curves RUN [RUN ...] [--labels A,B] [--out loss.png]
      training loss (raw, faint, and an exponential moving average) and validation loss against
      the step, one colour per run; RUN is a training run directory (its metrics.jsonl) or a
      metrics.jsonl file.
  tools/plot.py routing RUN [--out routing.png]
      for every MoE layer: the share of routing slots each expert received at each evaluation
      (a heatmap, experts × steps; the value a perfectly balanced router gives is 1/E), and the
      normalised load entropy H(f) / log E per layer over training (1 = balanced, 0 = collapsed
      onto one expert). The shares are the "layers" field the trainer writes at every evaluation.
  tools/plot.py eval EVAL.json [EVAL.json ...] [--labels A,B] [--out eval.png]
      from `moessm eval --json`: perplexity against the context length, and the loss by position
      in the context (log-scaled position, one curve per context length), one colour per file.
  tools/plot.py --self-test
      writes a synthetic run to a temporary directory, checks the parsed series and the
      entropy against values computed by hand, and that both PNGs are written and readable.

Nothing here runs a shell; paths are used as given.
"""
import argparse
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_common import ema, reexec_if_no_matplotlib  # noqa: E402


def read_metrics(path):
    """The metrics.jsonl lines of a run directory (or of the file itself), in step order."""
    f = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(f):
        sys.exit(f"plot: {f}: no such file (expected a run directory holding metrics.jsonl, or the file)")
    rows = []
    with open(f, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"plot: {f}: line {n}: not JSON ({e.msg})")
    rows = [r for r in rows if isinstance(r, dict) and "step" in r]
    rows.sort(key=lambda r: r["step"])
    return rows


def load_entropy(load):
    """H(f) / log E of one layer's slot shares (1: balanced; 0: one expert takes everything)."""
    E = len(load)
    if E < 2:
        return 1.0
    h = -sum(f * math.log(f) for f in load if f > 0)
    return h / math.log(E)


def routing_series(rows):
    """{layer: (steps, [[share per expert] per step])} for the MoE layers of the runs' evaluations."""
    series = {}
    for r in rows:
        for l, layer in enumerate(r.get("layers") or []):
            if not isinstance(layer, dict) or "load" not in layer:
                continue
            steps, loads = series.setdefault(l, ([], []))
            steps.append(r["step"])
            loads.append(list(layer["load"]))
    return series


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        sys.exit("plot: matplotlib is missing: install Debian's python3-matplotlib (scripts/setup.sh does)")


def plot_curves(runs, labels, out):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for i, run in enumerate(runs):
        rows = read_metrics(run)
        if not rows:
            sys.exit(f"plot: {run}: metrics.jsonl holds no steps")
        label = labels[i] if i < len(labels) else os.path.basename(os.path.normpath(run))
        colour = f"C{i % 10}"
        steps = [r["step"] for r in rows if "loss" in r]
        loss = [r["loss"] for r in rows if "loss" in r]
        ax.plot(steps, loss, color=colour, alpha=0.2, linewidth=0.8)
        ax.plot(steps, ema(loss), color=colour, linewidth=1.6, label=f"{label} train (EMA)")
        vs = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if vs:
            ax.plot([s for s, _ in vs], [v for _, v in vs], "o--", color=colour, markersize=4, linewidth=1,
                    label=f"{label} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_routing(run, out):
    plt = _pyplot()
    series = routing_series(read_metrics(run))
    if not series:
        sys.exit(f"plot: {run}: no routing statistics (a dense model, or no evaluation step yet)")
    layers = sorted(series)
    fig, axes = plt.subplots(len(layers) + 1, 1, figsize=(8, 1.8 * len(layers) + 2.6), dpi=120, squeeze=False)
    for ax, l in zip(axes[:-1, 0], layers):
        steps, loads = series[l]
        E = len(loads[0])
        grid = [[loads[j][e] if e < len(loads[j]) else 0.0 for j in range(len(steps))] for e in range(E)]
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0.0,
                       vmax=max(2.0 / E, max(max(row) for row in grid)),
                       extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, E - 0.5) if len(steps) > 1 else None)
        ax.set_ylabel(f"layer {l}\nexpert")
        fig.colorbar(im, ax=ax, label="share of slots", fraction=0.03)
    ax = axes[-1, 0]
    for l in layers:
        steps, loads = series[l]
        ax.plot(steps, [load_entropy(f) for f in loads], "o-", markersize=3, label=f"layer {l}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("H(load) / log E")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    fig.suptitle(f"expert load per layer: {os.path.basename(os.path.normpath(run))}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def read_eval(path):
    try:
        with open(path, encoding="utf-8") as fh:
            j = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot: {path}: cannot read an eval JSON ({e})")
    res = j.get("results") if isinstance(j, dict) else None
    if not res:
        sys.exit(f"plot: {path}: no 'results' list (expected the output of `moessm eval --json`)")
    return res


def plot_eval(files, labels, out):
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    for i, f in enumerate(files):
        res = sorted(read_eval(f), key=lambda r: r["ctx"])
        label = labels[i] if i < len(labels) else os.path.splitext(os.path.basename(f))[0]
        colour = f"C{i % 10}"
        a1.plot([r["ctx"] for r in res], [r["perplexity"] for r in res], "o-", color=colour, label=label)
        for k, r in enumerate(res):
            pos = [(p + 1, v) for p, v in enumerate(r["loss_by_position"]) if v is not None]
            # a moving mean over a window growing with the position (the raw curve is noisy)
            xs, ys = [], []
            for j, (p, v) in enumerate(pos):
                w = max(1, p // 8)
                seg = [q for _, q in pos[max(0, j - w):j + 1]]
                xs.append(p)
                ys.append(sum(seg) / len(seg))
            a2.plot(xs, ys, color=colour, alpha=0.35 + 0.65 * (k + 1) / len(res), linewidth=1.2,
                    label=f"{label}, ctx {r['ctx']}")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("context length (tokens)")
    a1.set_ylabel("perplexity")
    a1.set_title("perplexity vs context length")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.set_xscale("log", base=2)
    a2.set_xlabel("tokens of context before the prediction")
    a2.set_ylabel("loss (nats)")
    a2.set_title("loss by position in the context")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def self_test():
    d = tempfile.mkdtemp(prefix="moessm_plot_")
    E = 4
    with open(os.path.join(d, "metrics.jsonl"), "w", encoding="utf-8") as f:
        for step in range(1, 41):
            row = {"step": step, "loss": 5.0 - 0.05 * step, "lr": 1e-3}
            if step % 10 == 0:
                row["val_loss"] = 5.1 - 0.05 * step
                balanced = [1.0 / E] * E
                collapsed = [1.0, 0.0, 0.0, 0.0]
                row["layers"] = [None, {"type": "rom", "load": balanced}, {"type": "swimba", "load": collapsed}]
            f.write(json.dumps(row) + "\n")
    rows = read_metrics(d)
    assert [r["step"] for r in rows] == list(range(1, 41)), "steps read in order"
    s = routing_series(rows)
    assert sorted(s) == [1, 2], f"MoE layers found: {sorted(s)}"
    assert s[1][0] == [10, 20, 30, 40] and len(s[1][1]) == 4, "one load row per evaluation"
    assert abs(load_entropy(s[1][1][0]) - 1.0) < 1e-12, "balanced load has entropy 1"
    assert load_entropy(s[2][1][0]) == 0.0, "collapsed load has entropy 0"
    half = [0.5, 0.5, 0.0, 0.0]
    assert abs(load_entropy(half) - math.log(2) / math.log(4)) < 1e-12
    assert abs(ema([1.0, 3.0], alpha=0.5)[1] - 2.0) < 1e-12
    ev = os.path.join(d, "eval.json")
    with open(ev, "w", encoding="utf-8") as f:
        json.dump({"results": [{"ctx": c, "perplexity": 30.0 - c / 100, "loss_by_position":
                                [None] + [3.0 + 1.0 / (p + 1) for p in range(1, c - 1)]} for c in (64, 256)]}, f)
    assert [r["ctx"] for r in read_eval(ev)] == [64, 256]
    for path in (plot_curves([d], ["synthetic"], os.path.join(d, "loss.png")),
                 plot_routing(d, os.path.join(d, "routing.png")),
                 plot_eval([ev], ["synthetic"], os.path.join(d, "eval.png"))):
        with open(path, "rb") as fh:
            head = fh.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is a PNG"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width >= 600 and height >= 400, f"{path}: {width}x{height}"
    print(f"plot self-test passed ({d})")


def main():
    reexec_if_no_matplotlib(__file__, "MOESSM_PLOT_REEXEC")
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curves", help="loss and validation curves of one or more runs")
    c.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    c.add_argument("--labels", default="", help="comma-separated legend names, one per run")
    c.add_argument("--out", default="loss.png", help="PNG to write (default loss.png)")
    e = sub.add_parser("eval", help="perplexity vs context length and loss by position (moessm eval --json)")
    e.add_argument("files", nargs="+", help="eval JSON files")
    e.add_argument("--labels", default="", help="comma-separated legend names, one per file")
    e.add_argument("--out", default="eval.png", help="PNG to write (default eval.png)")
    r = sub.add_parser("routing", help="expert load heatmaps and load entropy of one MoE run")
    r.add_argument("run", help="run directory (or metrics.jsonl file)")
    r.add_argument("--out", default="routing.png", help="PNG to write (default routing.png)")
    a = ap.parse_args()
    if a.what == "curves":
        print(plot_curves(a.runs, [x for x in a.labels.split(",") if x], a.out))
    elif a.what == "eval":
        print(plot_eval(a.files, [x for x in a.labels.split(",") if x], a.out))
    else:
        print(plot_routing(a.run, a.out))


if __name__ == "__main__":
    main()
