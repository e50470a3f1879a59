#!/usr/bin/env python3
"""Microbenchmark of one attention block's products (PERFORMANCE.md, changes 2 and 3), in PyTorch on the same
LibTorch backend as ddpm: softmax(qᵀk/√C) applied to v for [B, C, N] inputs, as
  fp32      two bmm's (ddpm's fp32 path),
  conv      both products as grouped 1×1 convolutions (session 2's path),
  bf16      both products and the softmax in bfloat16 (ddpm's --attention-precision bf16),
  bf16+f32  bf16 products around an fp32 softmax.
Prints the median and best of REPS alternating repetitions in ms and the largest deviation from a double result.

    /usr/bin/python3 bench/attention_micro.py [--batch 64 --channels 64 --positions 256 --reps 15 --threads 2]
"""
import argparse
import math
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--positions", type=int, default=256)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    B, C, N = a.batch, a.channels, a.positions
    scale = 1 / math.sqrt(C)
    q, k, v = (torch.randn(B, C, N) for _ in range(3))

    def fp32(q, k, v):
        w = torch.softmax(torch.bmm((q * scale).transpose(1, 2), k), -1)
        return torch.bmm(v, w.transpose(1, 2))

    def conv(q, k, v):
        weight = (k * scale).transpose(1, 2).reshape(B * N, C, 1, 1)
        inp = q.reshape(1, B * C, N, 1).contiguous(memory_format=torch.channels_last)
        s = torch.conv2d(inp, weight, None, 1, 0, 1, B)
        w = torch.softmax(s.reshape(B, N, N), 1)
        return torch.conv2d(w.reshape(1, B * N, N, 1), v.reshape(B * C, N, 1, 1), None, 1, 0, 1, B).reshape(B, C, N)

    def bf16(q, k, v):
        qb, kb, vb = (q * scale).bfloat16(), k.bfloat16(), v.bfloat16()
        w = torch.softmax(torch.bmm(qb.transpose(1, 2), kb), -1)
        return torch.bmm(vb, w.transpose(1, 2)).float()

    def bf16_f32softmax(q, k, v):
        qb, kb, vb = (q * scale).bfloat16(), k.bfloat16(), v.bfloat16()
        w = torch.softmax(torch.bmm(qb.transpose(1, 2), kb).float(), -1).bfloat16()
        return torch.bmm(vb, w.transpose(1, 2)).float()

    paths = {"fp32": fp32, "conv": conv, "bf16": bf16, "bf16+f32": bf16_f32softmax}
    exact = fp32(q.double(), k.double(), v.double())
    times = {n: [] for n in paths}
    err = {}
    with torch.inference_mode():
        for f in paths.values():
            f(q, k, v)  # warm-up
        for _ in range(a.reps):
            for n, f in paths.items():
                t0 = time.perf_counter()
                out = f(q, k, v)
                times[n].append((time.perf_counter() - t0) * 1e3)
                err[n] = float((out.double() - exact).abs().max())
    print(f"B {B}, C {C}, N {N}, {a.threads} threads, torch {torch.__version__}")
    for n in paths:
        print(f"{n:9s} median {statistics.median(times[n]):7.2f} ms  best {min(times[n]):7.2f} ms  max |err| {err[n]:.1e}")


if __name__ == "__main__":
    main()
