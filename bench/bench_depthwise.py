#!/usr/bin/env python
"""Time MobileNetV2's depthwise 3×3 layers (batch 8, float32), per pass, in one library per process.

Usage::

    python bench/bench_depthwise.py torch            # torch.nn.functional.conv2d and autograd
    python bench/bench_depthwise.py convscope        # convscope's planner (the depthwise path)
    python bench/bench_depthwise.py rows             # the depthwise path's row kernels, forced
    python bench/bench_depthwise.py blocks           # its channel-block kernels, forced
    python bench/bench_depthwise.py planes           # its plane kernels, forced
    python bench/bench_depthwise.py torch --threads 1 --clock cpu    # one thread, CPU time: for a busy machine

Each line gives the median of ``--repeat`` calls (after 3 untimed ones) of the forward, grad_input,
grad_weight and forward+backward (torch: autograd's backward of all three gradients; convscope:
``conv2d`` then ``conv2d_backward``).  One library runs per process, so that neither's thread
pool disturbs the other's timings: run the modes one after the other and compare.
"""
from __future__ import annotations

import argparse
import statistics
import time
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))   # this checkout's convscope

import numpy as np

# (channels, image size, stride): every distinct depthwise layer of torchvision's MobileNetV2 at 224²
LAYERS = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2),
          (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]
BATCH = 8


def median_ms(fn, repeat, clock=time.perf_counter):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1e3 * statistics.median(times)


def torch_passes(x, w, b, g, s, C):
    import torch
    import torch.nn.functional as F
    import torch.nn.grad as tgrad

    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
    xr, wr, br = (a.clone().requires_grad_() for a in (xt, wt, bt))

    def both():
        F.conv2d(xr, wr, br, stride=s, padding=1, groups=C).backward(gt)

    return {
        "fwd": lambda: F.conv2d(xt, wt, bt, stride=s, padding=1, groups=C),
        "gi": lambda: tgrad.conv2d_input(xt.shape, wt, gt, stride=s, padding=1, groups=C),
        "gw": lambda: tgrad.conv2d_weight(xt, wt.shape, gt, stride=s, padding=1, groups=C),
        "fwd+bwd": both,
    }


def convscope_passes(x, w, b, g, s, C, algorithm):
    import convscope

    p = dict(stride=s, padding=1, groups=C, algorithm=algorithm)

    def both():
        convscope.conv2d(x, w, b, **p)
        convscope.conv2d_backward(g, x, w, **p)

    return {
        "fwd": lambda: convscope.conv2d(x, w, b, **p),
        "gi": lambda: convscope.conv2d_input(x.shape, w, g, **p),
        "gw": lambda: convscope.conv2d_weight(x, w.shape, g, **p),
        "fwd+bwd": both,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("torch", "convscope", "rows", "blocks", "planes"))
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU time (with --threads 1, less disturbed by other processes)")
    args = ap.parse_args(argv)
    if args.mode == "torch":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    else:
        import convscope
        from convscope.algorithms import depthwise

        if args.threads:
            convscope.set_num_threads(args.threads)
        if args.mode != "convscope":
            depthwise.layout = lambda spec, shape, pass_="forward", lay=args.mode: lay
    rng = np.random.default_rng(0)
    for C, hw, s in LAYERS:
        x = rng.standard_normal((BATCH, C, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((C, 1, 3, 3)) / 3).astype(np.float32)
        b = rng.standard_normal(C).astype(np.float32)
        ho = (hw - 1) // s + 1
        g = rng.standard_normal((BATCH, C, ho, ho)).astype(np.float32)
        passes = (torch_passes(x, w, b, g, s, C) if args.mode == "torch"
                  else convscope_passes(x, w, b, g, s, C, None if args.mode == "convscope" else "depthwise"))
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        times = {name: median_ms(fn, args.repeat, clock) for name, fn in passes.items()}
        print(f"dw {C}×{hw}²/{s}: " + "  ".join(f"{k} {v:.2f}" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
