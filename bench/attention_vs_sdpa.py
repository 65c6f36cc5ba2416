#!/usr/bin/env python3
"""Times torch's scaled_dot_product_attention (flash backend, bf16, causal) at the shapes of
bench_attention's JSON and prints our kernels' time and TFLOP/s against it.

    build/cuda/bench_attention --json attn.json
    python3 bench/attention_vs_sdpa.py attn.json

FLOPs count visible keys only, as bench_attention does (forward 4·hd per (head, query, visible
key); forward + backward 3.5x). SDPA's flash path has no sliding window, so windowed cases are
compared with full causal SDPA at the same T and marked as such (SDPA then does more work).
"""
import json
import sys


def mean_keys(L, W):
    if W <= 0 or W >= L:
        return (L + 1) / 2
    return (W * (W + 1) / 2 + (L - W) * W) / L


def time_ms(fn, warm=3, reps=10):
    import torch
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    t = sorted(s.elapsed_time(e) for s, e in zip(start, end))
    return t[len(t) // 2]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: attention_vs_sdpa.py BENCH_ATTENTION.json")
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ours = json.load(open(sys.argv[1]))
    print(f"device {torch.cuda.get_device_name()}; ours from {sys.argv[1]} ({ours.get('device', '?')}); "
          f"bf16 GEMM ceiling {ours['ceilings']['gemm_bf16_8192_tflops']:.0f} TFLOP/s")
    print(f"{'case':<30} {'ours fwd':>9} {'sdpa fwd':>9} {'ratio':>6} {'ours f+b':>9} {'sdpa f+b':>9} {'ratio':>6}"
          "   (ms; ratio = sdpa time / ours: 1 = parity)")
    for c in ours["cases"]:
        B, T, H, Hkv, hd, W = c["B"], c["T"], c["H"], c["Hkv"], c["hd"], c["window"]
        q = torch.randn(B, H, T, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(B, Hkv, T, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, Hkv, T, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        if Hkv != H:
            k2, v2 = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        else:
            k2, v2 = k, v
        g = torch.randn(B, H, T, hd, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            fwd = lambda: F.scaled_dot_product_attention(q, k2, v2, is_causal=True)
            f_ms = time_ms(lambda: fwd())

            def fb():
                o = fwd()
                o.backward(g)
            fb_ms = time_ms(fb)
        fl = 4.0 * hd * B * H * T * mean_keys(T, W)
        name = f"B {B} T {T} H {H}x{hd} " + (f"window {W}*" if W else "causal")
        print(f"{name:<30} {c['fwd_ms']:9.3f} {f_ms:9.3f} {f_ms / c['fwd_ms']:6.2f} "
              f"{c['fwd_bwd_ms']:9.3f} {fb_ms:9.3f} {fb_ms / c['fwd_bwd_ms']:6.2f}   "
              f"ours {c['fwd_tflops']:.1f} / {c['fwd_bwd_tflops']:.1f} TFLOP/s, "
              f"sdpa {fl / f_ms / 1e9:.1f} / {3.5 * fl / fb_ms / 1e9:.1f}")
    print("* SDPA flash has no sliding window: it ran full causal attention at that T")


if __name__ == "__main__":
    main()
