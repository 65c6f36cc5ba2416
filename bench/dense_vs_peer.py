#!/usr/bin/env python3
"""Print issue 12's dense-path table from one lease's results.

  bench/dense_vs_peer.py SCAN.json MODEL.json [PEER.json]

SCAN.json is written by `bench_scan --json`, MODEL.json by `bench_model --json`, PEER.json by
../shared/peer/bench_peer.py (`--only env,scan,mamba,decode,train`, run in the same lease so the
ratios compare one machine at one time). Each row: the measure, our figure, the peer's, the
ratio (ours / peer, or peer / ours for throughput, so below 1 is always "moessm is faster"
except in the tokens/s row, which states its own direction) and the issue's target. A missing
figure prints as "-".
"""
import json
import sys

from peer_table import fmt, get, ratio


def scan_row(scan, B, T):
    """The automatic-choice row (states_per_lane 0, segments 0) of one shape."""
    for r in scan.get("scan", []):
        if r["B"] == B and r["T"] == T and r["Di"] == 2048 and r["states_per_lane"] == 0 and r["segments"] == 0:
            return r
    return {}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    scan = json.load(open(sys.argv[1]))
    model = json.load(open(sys.argv[2]))
    peer = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else {}
    ps = peer.get("sections", {})
    rows = []

    def add(name, ours, theirs, target, unit="ms", higher_is_better=False):
        r = ratio(theirs, ours) if higher_is_better else ratio(ours, theirs)
        rows.append((name, fmt(ours, "{:.0f}" if unit == "tok/s" else "{:.3f}"),
                     fmt(theirs, "{:.0f}" if unit == "tok/s" else "{:.3f}"), fmt(r), target))

    for B, T, key in ((8, 2048, "b8_d2048_l2048_n16"), (2, 8192, "b2_d2048_l8192_n16")):
        r = scan_row(scan, B, T)
        add(f"scan fwd+bwd ms, B {B} Di 2048 T {T} N 16", r.get("fwd_bwd_ms"),
            get(ps, "scan", key, "fwd_bwd", "median_ms"), "<= 0.6")
        add(f"scan fwd ms, B {B} Di 2048 T {T} N 16", r.get("fwd_ms"), get(ps, "scan", key, "fwd", "median_ms"),
            "<= 0.6")
    add("dense layer fwd+bwd ms, D 1024 B 8 T 2048", get(model, "layer_d1024_b8_t2048", "fwd_bwd_ms"),
        get(ps, "mamba", "fwd_bwd", "median_ms"), "<= 0.7")
    add("training tokens/s, 24 x 768, V 50280, B 8 x T 2048 (ratio: peer / ours)",
        get(model, "train_24x768_v50280_b8_t2048", "tokens_per_s"), get(ps, "train", "dense", "tokens_per_s"),
        "<= 0.667 (>= 1.5x the peer)", unit="tok/s", higher_is_better=True)
    add("decode batch 1, ms/token", get(model, "decode_ms_per_token", "batch1"),
        get(ps, "decode", "cg", "ms_per_token_decode_only"), "<= 0.5")
    add("prefill 2048 tokens batch 1, ms", get(model, "prefill_2048_ms"),
        get(ps, "decode", "prefill_2048", "median_ms"), "ours <= 3 ms")

    print(f"device: {scan.get('device', '-')} (ours) / {get(ps, 'env', 'gpu') or '-'} (peer)")
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'moessm':>10}  {'peer':>10}  {'ratio':>7}  target")
    for name, o, t, r, tgt in rows:
        print(f"{name:<{w}}  {o:>10}  {t:>10}  {r:>7}  {tgt}")


if __name__ == "__main__":
    main()
