#!/usr/bin/env python3
"""Outside reference: compare `moessm logits` with Hugging Face transformers' MambaForCausalLM.

Loads a checkpoint directory written by `moessm init` (or `train`) into
transformers.MambaForCausalLM unchanged (fp32, CPU or GPU; the slow path is fine), runs a few
random sequences through both, and checks max |diff| / max |ref| <= --tol (default 1e-4).
Optionally also compares `moessm grads` with PyTorch autograd gradients.

usage: tools/hf_compare.py --moessm build/moessm --model DIR [--seqs 3 --len 37 --tol 1e-4 --grads]
Exit status 0 when every check passes; prints one line per check.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moessm", required=True, help="path to the moessm program")
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json + model.safetensors)")
    ap.add_argument("--seqs", type=int, default=3)
    ap.add_argument("--len", type=int, default=37)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--grads", action="store_true", help="also compare parameter gradients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="torch device for the reference (cpu by default: CUDA convolutions may use TF32)")
    args = ap.parse_args()

    from transformers import MambaForCausalLM

    device = args.device
    model = MambaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).to(device).eval()
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    vocab = cfg["moessm"]["vocab_size"] if "moessm" in cfg else cfg["vocab_size"]

    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, vocab, size=(args.seqs, args.len))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ids_path = os.path.join(tmp, "ids.txt")
        with open(ids_path, "w") as f:
            for row in ids:
                f.write(" ".join(str(int(x)) for x in row) + "\n")
        out = os.path.join(tmp, "logits.npy")
        subprocess.run([args.moessm, "logits", "--model", args.model, "--ids", ids_path, "--out", out], check=True)
        ours = np.load(out)
        with torch.no_grad():
            # use_cache=False and the slow path (no mamba_ssm kernels installed): plain fp32 math
            ref = model(torch.tensor(ids, device=device), use_cache=False).logits.float().cpu().numpy()
        rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
        good = rel <= args.tol
        ok &= good
        print(f"logits  shape {list(ours.shape)}  max|diff|/max|ref| = {rel:.3e}  tol {args.tol:g}  {'PASS' if good else 'FAIL'}")

        if args.grads:
            gout = os.path.join(tmp, "grads.safetensors")
            subprocess.run([args.moessm, "grads", "--model", args.model, "--ids", ids_path, "--out", gout], check=True)
            from safetensors.numpy import load_file
            from safetensors import safe_open
            ours_g = load_file(gout)
            with safe_open(gout, "np") as f:
                our_loss = float(f.metadata()["loss"])
            model.zero_grad()
            t = torch.tensor(ids, device=device)
            logits = model(t, use_cache=False).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1))
            loss.backward()
            lrel = abs(our_loss - loss.item()) / abs(loss.item())
            good = lrel <= args.tol
            ok &= good
            print(f"loss    ours {our_loss:.7f}  ref {loss.item():.7f}  rel {lrel:.2e}  {'PASS' if good else 'FAIL'}")
            worst = 0.0
            for name, p in model.named_parameters():
                if name == "lm_head.weight" or p.grad is None:
                    continue
                g = p.grad.float().cpu().numpy()
                mine = ours_g[name]
                r = float(np.abs(mine - g).max() / max(np.abs(g).max(), 1e-30))
                worst = max(worst, r)
                if r > 10 * args.tol:
                    print(f"  grad {name}: rel {r:.3e}")
            good = worst <= 10 * args.tol
            ok &= good
            print(f"grads   {len(ours_g)} tensors, worst max|diff|/max|ref| = {worst:.3e}  tol {10 * args.tol:g}  {'PASS' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
