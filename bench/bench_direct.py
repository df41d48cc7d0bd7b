#!/usr/bin/env python
"""Time the forward of layers with few input channels on the direct path, on gemm and in torch.

Usage::

    python bench/bench_direct.py                 # every layer below, 5 alternating rounds
    python bench/bench_direct.py --repeat 9 --layers stem mnist

Each sample is bench_conv's: 0.2 s of untimed calls (the handover, which lets the other library's
threads go idle), then timed calls for at least 0.05 s.  The libraries are sampled in alternating rounds
in one process; a line gives the median milliseconds (FFT's where its bounds admit the layer), GFLOP/s,
each convscope path's ratio to torch and the planner's choice for the forward.
The planner's ``direct`` row (``convscope.planner``) was set from these figures (bench/README.md).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))    # this checkout's convscope
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import bench_conv  # noqa: E402

# name: (N, C, H, W, C_out, kH, kW, stride, padding)
LAYERS = {
    "stem": (8, 3, 224, 224, 64, 7, 7, 2, 3),             # ResNet-50's conv1
    "mb.features.0": (8, 3, 224, 224, 32, 3, 3, 2, 1),    # MobileNetV2's first layer
    "vgg.conv1": (8, 3, 224, 224, 64, 3, 3, 1, 1),        # VGG's first layer
    "alexnet.conv1": (8, 3, 224, 224, 64, 11, 11, 4, 2),  # AlexNet's first layer
    "mnist": (64, 1, 28, 28, 32, 5, 5, 1, 2),             # LeNet-style, a batch of digits
    "mnist.3x3": (64, 1, 28, 28, 32, 3, 3, 1, 1),
    "gray.5x5": (8, 1, 256, 256, 16, 5, 5, 1, 2),         # a grey photo, a bank of filters
    "rgb.9x9": (4, 3, 128, 128, 16, 9, 9, 1, 4),
    "c8.3x3": (8, 8, 112, 112, 32, 3, 3, 1, 1),           # 8 channels: where im2col's product takes over
    "c4.3x3/2": (8, 4, 112, 112, 32, 3, 3, 2, 1),
    "c12.5x5": (8, 12, 56, 56, 32, 5, 5, 1, 2),
    "c16.5x5/2": (8, 16, 56, 56, 32, 5, 5, 2, 2),
    "c3.5x5/2": (8, 3, 128, 128, 32, 5, 5, 2, 2),
    "c32.5x5": (8, 32, 56, 56, 32, 5, 5, 1, 2),           # where the bound on channels lies
    "c64.5x5": (8, 64, 28, 28, 64, 5, 5, 1, 2),
    "c16.11x11": (8, 16, 56, 56, 16, 11, 11, 1, 5),       # where the bound on taps lies (FFT's costs do not grow)
    "c3.15x15": (4, 3, 128, 128, 16, 15, 15, 1, 7),
    "c3.21x21": (4, 3, 128, 128, 16, 21, 21, 1, 10),
    "c64.7x7": (8, 64, 56, 56, 64, 7, 7, 1, 3),
    "c64.9x9@32": (8, 64, 32, 32, 64, 9, 9, 1, 4),
    "c16.7x7": (8, 16, 56, 56, 16, 7, 7, 1, 3),
    "c32.7x7/2": (8, 32, 56, 56, 32, 7, 7, 2, 3),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", choices=sorted(LAYERS), default=list(LAYERS))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=bench_conv.usable_cores())
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import convscope

    torch.set_num_threads(args.threads)
    convscope.set_num_threads(args.threads)
    bench_conv.configure_malloc("reuse")
    print(f"# CPU: {bench_conv.cpu_model()}, {args.threads} threads; NumPy BLAS {bench_conv.numpy_blas()}; "
          f"torch {torch.__version__}; method: one process, alternating rounds, 0.2 s handover")
    print(f"{'layer':<15} {'conv':<34} {'torch ms':>9} {'direct ms':>10} {'gemm ms':>9} {'fft ms':>8} "
          f"{'GF/s torch':>10} {'GF/s direct':>11} {'direct÷torch':>12} {'gemm÷torch':>10}  planned")
    rng = np.random.default_rng(0)
    for name in args.layers:
        N, C, H, W, Co, kH, kW, s, p = LAYERS[name]
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = rng.standard_normal((Co, C, kH, kW), dtype=np.float32)
        b = rng.standard_normal(Co, dtype=np.float32)
        xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
        calls = {
            "torch": lambda: F.conv2d(xt, wt, bt, stride=s, padding=p),
            "direct": lambda: convscope.conv2d(x, w, b, stride=s, padding=p, algorithm="direct"),
            "gemm": lambda: convscope.conv2d(x, w, b, stride=s, padding=p, algorithm="gemm"),
            "fft": lambda: convscope.conv2d(x, w, b, stride=s, padding=p, algorithm="fft"),
        }
        planned = convscope.plan(x.shape, w.shape, stride=s, padding=p).forward.algorithm
        if kH * kW < 25 or s > 2:                          # FFT's own bounds (convscope.planner)
            del calls["fft"]
        want = calls["torch"]().numpy()
        for lib in calls.keys() - {"torch"}:
            err = np.abs(calls[lib]() - want).max() / np.abs(want).max()
            assert err < 1e-4, f"{name}: {lib} differs from torch by {err:.2g} of the largest output"
        times = {lib: [] for lib in calls}
        for _ in range(args.repeat):
            for lib, fn in calls.items():
                times[lib].append(bench_conv.sample(fn, 0.2, 0.05))
        ms = {lib: 1e3 * statistics.median(t) for lib, t in times.items()}
        Ho, Wo = want.shape[2:]
        flops = 2 * N * Co * Ho * Wo * C * kH * kW
        conv = f"{kH}×{kW}/{s} p{p} {C}→{Co} {H}×{W} N={N}"
        print(f"{name:<15} {conv:<34} {ms['torch']:>9.3f} {ms['direct']:>10.3f} {ms['gemm']:>9.3f} "
              f"{ms.get('fft', float('nan')):>8.3f} {flops / ms['torch'] / 1e6:>10.1f} {flops / ms['direct'] / 1e6:>11.1f} "
              f"{ms['direct'] / ms['torch']:>12.2f} {ms['gemm'] / ms['torch']:>10.2f}  {planned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
