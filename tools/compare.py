#!/usr/bin/env python3
"""Train several model configs on the same data with the same steps and tokens, and print a table
of validation loss, steps and training tokens, parameters, forward FLOPs per token (the full split
printed by `moessm init`), training throughput, and the final expert load of MoE layers.

usage: tools/compare.py --moessm build/cpu/moessm --data runs/demo/data --out runs/compare \
           --max-steps 300 configs/cpu_dense_small.json configs/cpu_rom_small.json ...

Every run uses the config's "train" section with --max-steps overriding max_steps, so all runs see
the same batches (same seed, batch size and sequence length). Runs that already finished (their
checkpoint is at max_steps) are not trained again. Writes OUT/summary.md and OUT/summary.json,
then the plots (tools/plot.py): OUT/loss.png with every run's curves and OUT/routing_<config>.png
for each MoE run.
"""
import argparse
import json
import os
import re
import subprocess
import sys


def accounting(moessm, cfg, tmp):
    out = subprocess.run([moessm, "init", "--config", cfg, "--out", tmp], check=True,
                         capture_output=True, text=True).stdout
    total = int(re.search(r"total [^(]*\((\d+)\)", out).group(1))
    active = int(re.search(r"active per token [^(]*\((\d+)\)", out).group(1))
    flops = re.search(r"forward FLOPs per token: (\S+) = GEMM (\S+) \+ scan (\S+) \+ conv (\S+) "
                      r"\+ router (\S+) \+ other (\S+);", out)
    return (total, active) + flops.groups()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moessm", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, required=True)
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for cfg in args.configs:
        name = os.path.splitext(os.path.basename(cfg))[0]
        run = os.path.join(args.out, name)
        state = os.path.join(run, "checkpoint", "trainer_state.json")
        done = os.path.exists(state) and json.load(open(state))["step"] >= args.max_steps
        if not done:
            resume = ["--resume", run] if os.path.exists(state) else []
            print(f"== training {name}", flush=True)
            subprocess.run([args.moessm, "train", "--config", cfg, "--data", args.data, "--out", run,
                            "--max-steps", str(args.max_steps), "--log-every", "50"] + resume, check=True)
        total, active, fwd, gemm, scan, conv, router, other = accounting(
            args.moessm, cfg, os.path.join(args.out, ".init_" + name))
        opts = json.load(open(state))["options"]
        tokens_per_step = opts["batch_size"] * opts["seq_len"] * opts.get("grad_accum", 1)
        metrics = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
        evals = [m for m in metrics if "val_loss" in m]
        last = evals[-1]
        tok_s = sum(m["tokens_per_s"] for m in metrics[-20:]) / min(20, len(metrics))
        load = ""
        if "layers" in last:
            loads = [l.get("load") for l in last["layers"] if isinstance(l, dict) and l.get("load")]
            if loads:
                load = "; ".join("[" + " ".join(f"{x:.2f}" for x in l) + "]" for l in loads)
        rows.append(dict(config=name, total_params=total, active_params=active, fwd_flops=fwd, gemm_flops=gemm,
                         scan_flops=scan, conv_flops=conv, router_flops=router, other_flops=other,
                         val_loss=last["val_loss"], step=last["step"], train_tokens=last["step"] * tokens_per_step,
                         tokens_per_s=tok_s, train_s=metrics[-1].get("elapsed_s"), expert_load=load))
    lines = ["| config | total params | active params | fwd FLOPs/token = GEMM + scan + conv + router + other "
             "| steps (train tokens) | val loss | train tok/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['total_params']:,} | {r['active_params']:,} | {r['fwd_flops']} = "
                     f"{r['gemm_flops']} + {r['scan_flops']} + {r['conv_flops']} + {r['router_flops']} + "
                     f"{r['other_flops']} | {r['step']} ({r['train_tokens']:,}) | {r['val_loss']:.4f} | "
                     f"{r['tokens_per_s']:.0f} |")
    loads = [f"- {r['config']}: {r['expert_load']}" for r in rows if r["expert_load"]]
    text = "\n".join(lines) + ("\n\nexpert load (share of routing slots per expert, per layer) at the last evaluation:\n"
                               + "\n".join(loads) if loads else "") + "\n"
    print(text)
    open(os.path.join(args.out, "summary.md"), "w").write(text)
    json.dump(rows, open(os.path.join(args.out, "summary.json"), "w"), indent=2)
    # The plots: tools/plot.py under the same interpreter (it re-runs itself under Debian's python3
    # when this one lacks matplotlib).
    plot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot.py")
    runs = [os.path.join(args.out, r["config"]) for r in rows]
    subprocess.run([sys.executable, plot, "curves", *runs, "--labels", ",".join(r["config"] for r in rows),
                    "--out", os.path.join(args.out, "loss.png")], check=True)
    for r, run in zip(rows, runs):
        if r["expert_load"]:
            subprocess.run([sys.executable, plot, "routing", run, "--out",
                            os.path.join(args.out, f"routing_{r['config']}.png")], check=True)
    print(f"plots: {os.path.join(args.out, 'loss.png')}"
          + "".join(f", routing_{r['config']}.png" for r in rows if r["expert_load"]))


if __name__ == "__main__":
    sys.exit(main())
