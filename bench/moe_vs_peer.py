#!/usr/bin/env python3
"""Print issue 11's MoE benchmark table from one lease's results.

  bench/moe_vs_peer.py OURS.json [PEER.json]

OURS.json is written by `bench_moe --json`; PEER.json by ../shared/peer/bench_peer.py (run in
the same lease, so ratios compare one machine at one time). Every row says what was measured,
our number, the peer's where it has one, and the ratio the issue's target is stated in.
A missing peer figure prints as "-".
"""
import json
import sys

from peer_table import fmt, get, ratio


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    ours = json.load(open(sys.argv[1]))
    peer = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {}
    ps = peer.get("sections", {})
    lay = ours["layer_d1024_b8_t2048"]
    dense = lay["dense"]["fwd_bwd_ms"]
    p_dense = get(ps, "mamba", "fwd_bwd", "median_ms")
    p_rom = get(ps, "rom", "grouped", "fwd_bwd", "median_ms")
    p_swimba = get(ps, "swimba", "grouped", "fwd_bwd", "median_ms")
    tr = ours["train_24x768_v50280_b8_t2048"]
    gg = ours["grouped_gemm_16384_e8"]
    rows = [
        ("dense Mamba layer fwd+bwd, D 1024, B 8, T 2048 (ms)", dense, p_dense, ratio(dense, p_dense), "vs peer"),
        ("RoM layer fwd+bwd (E 8, top-1) (ms)", lay["rom_e8_k1"]["fwd_bwd_ms"], p_rom,
         ratio(lay["rom_e8_k1"]["fwd_bwd_ms"], dense), "vs our dense (target <= 1.10)"),
        ("  same, vs the peer's RoM", lay["rom_e8_k1"]["fwd_bwd_ms"], p_rom,
         ratio(lay["rom_e8_k1"]["fwd_bwd_ms"], p_rom), "vs peer (target <= 0.6)"),
        ("Swimba layer fwd+bwd (E 8, top-2, normalize; peer top-1) (ms)", lay["swimba_e8_k2"]["fwd_bwd_ms"], p_swimba,
         ratio(lay["swimba_e8_k2"]["fwd_bwd_ms"], dense), "vs our dense (target <= 1.05)"),
        ("separated layer fwd+bwd (E 4, top-2) (ms)", lay["separated_e4_k2"]["fwd_bwd_ms"], None,
         ratio(lay["separated_e4_k2"]["fwd_bwd_ms"], dense), "vs our dense (report)"),
        ("training 24 x 768, every mixer RoM (tokens/s)", tr["rom_e8_k1"]["tokens_per_s"],
         get(ps, "train", "rom", "tokens_per_s"), ratio(tr["rom_e8_k1"]["tokens_per_s"], tr["dense"]["tokens_per_s"]),
         "vs our dense tokens/s (target >= 0.9)"),
        ("training 24 x 768, dense (tokens/s)", tr["dense"]["tokens_per_s"], get(ps, "train", "dense", "tokens_per_s"),
         ratio(tr["dense"]["tokens_per_s"], get(ps, "train", "dense", "tokens_per_s")), "vs peer"),
        ("GPU memory, RoM training step (GiB)", tr["rom_e8_k1"]["mem_gib"], get(ps, "train", "rom", "peak_mem_gib"),
         ratio(tr["rom_e8_k1"]["mem_gib"], get(ps, "train", "rom", "peak_mem_gib")), "vs peer (stay below)"),
        ("grouped GEMM in_proj fwd (TFLOP/s)", gg["in_proj"]["grouped_fwd_tflops"], None,
         ratio(gg["in_proj"]["grouped_fwd_tflops"], gg["in_proj"]["dense_fwd_tflops"]), "vs dense GEMM (target >= 0.9)"),
        ("grouped GEMM out_proj fwd (TFLOP/s)", gg["out_proj"]["grouped_fwd_tflops"], None,
         ratio(gg["out_proj"]["grouped_fwd_tflops"], gg["out_proj"]["dense_fwd_tflops"]), "vs dense GEMM (target >= 0.9)"),
        ("grouped GEMM in_proj bwd (TFLOP/s)", gg["in_proj"]["grouped_bwd_tflops"], None,
         ratio(gg["in_proj"]["grouped_bwd_tflops"], gg["in_proj"]["dense_bwd_tflops"]), "vs dense GEMM"),
        ("grouped GEMM out_proj bwd (TFLOP/s)", gg["out_proj"]["grouped_bwd_tflops"], None,
         ratio(gg["out_proj"]["grouped_bwd_tflops"], gg["out_proj"]["dense_bwd_tflops"]), "vs dense GEMM"),
        ("decode batch 1, RoM layers (ms/token)", ours["decode_b1_ms_per_token"]["rom_e8_k1"], None,
         ratio(ours["decode_b1_ms_per_token"]["rom_e8_k1"], ours["decode_b1_ms_per_token"]["dense"]),
         "vs our dense decode (target <= 1.2)"),
        ("decode batch 1, dense (ms/token)", ours["decode_b1_ms_per_token"]["dense"],
         get(ps, "decode", "cg", "ms_per_token_decode_only"),
         ratio(ours["decode_b1_ms_per_token"]["dense"], get(ps, "decode", "cg", "ms_per_token_decode_only")), "vs peer"),
    ]
    print(f"device: {ours['device']}; peer: {get(peer, 'sections', 'env', 'gpu') or ('none' if not peer else 'same lease')}")
    print("| measure | moessm | peer | ratio | ratio is |")
    print("|---|---|---|---|---|")
    for name, a, b, r, what in rows:
        print(f"| {name} | {fmt(a, '{:.4g}')} | {fmt(b, '{:.4g}')} | {fmt(r)} | {what} |")


if __name__ == "__main__":
    main()
