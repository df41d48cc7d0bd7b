#!/usr/bin/env python
"""Where Winograd F(4×4, 3×3)'s time goes, per pass, on ResNet-50's 3×3 stride-1 layers (batch 8, float32).

Usage::

    python bench/winograd_profile.py                 # all cores
    python bench/winograd_profile.py --threads 1     # one core (also: CPU time, robust on a busy machine)

For each layer and pass (forward, grad_input, grad_weight) it times the steps of
:mod:`convscope.algorithms.winograd` apart: the input transform (compiled kernel), the 36 batched
products (BLAS, :func:`convscope.blas.stacked`), the output transform (compiled kernel; for grad_weight the transform of the
output gradient and the kernel-gradient transform), and the whole pass, beside im2col GEMM and torch.
Effective GFLOP/s count a direct convolution's 2·N·C·C_out·9·H_out·W_out FLOPs.  Each figure is the
median of ``--repeat`` samples, each after 0.2 s of untimed calls of the same step.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import time
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))   # this checkout's convscope

import numpy as np

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]      # (channels each way, image side)
N = 8


def timed(fn, repeats, clock, handover=0.2, min_sample=0.02):
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < handover:
            fn()
        calls, t0 = 0, clock()
        while True:
            fn()
            calls += 1
            if clock() - t0 >= min_sample:
                break
        samples.append((clock() - t0) / calls)
    return statistics.median(samples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all usable cores)")
    ap.add_argument("--repeat", type=int, default=5, help="samples per figure (default 5)")
    args = ap.parse_args(argv)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)                            # as bench_conv.py's --malloc reuse
        libc.mallopt(-1, 1 << 30)
    except (OSError, AttributeError):
        pass
    import torch
    import torch.nn.functional as F

    import convscope
    from convscope import blas
    from convscope.algorithms import gemm, winograd
    from convscope.algorithms.kernels import _numba
    from convscope.algorithms.kernels import winograd as kernels
    from convscope.spec import check_shapes, make_spec

    if args.threads:
        convscope.set_num_threads(args.threads)
    threads = convscope.get_num_threads()
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    print(f"# {threads} thread(s), {'CPU' if threads == 1 else 'wall'} time, ms (median of {args.repeat})")
    rng = np.random.default_rng(0)
    for C, H in LAYERS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((C, C, 3, 3), dtype=np.float32) / np.float32(np.sqrt(9 * C))
        b = rng.standard_normal(C, dtype=np.float32)
        g = rng.standard_normal((N, C, H, H), dtype=np.float32)
        spec = make_spec((3, 3), 1, 1, 1, 1, "zeros")
        shape = check_shapes(spec, x.shape, w.shape)
        flops = 2 * N * C * C * 9 * H * H
        th = tw = -(-H // 4)
        P = N * th * tw
        V = np.empty((36, P, C), dtype=np.float32)                     # channels last, as the path holds them
        Z = np.empty((36, P, C), dtype=np.float32)
        Ut = np.ascontiguousarray(winograd.transform_weight(w).transpose(0, 2, 1))   # (36, C_in, C_out)
        M = np.empty((36, P, C), dtype=np.float32)
        out = np.empty_like(x)
        dU = np.empty((36, C, C), dtype=np.float32)
        xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))

        def t(fn):
            return timed(fn, args.repeat, clock) * 1e3

        steps = {
            "forward": [("in", lambda: _numba.launch(kernels.input_tiles_last, x, 1, 1, th, tw, V)),
                        ("products", lambda: blas.stacked(V, Ut, out=M)),
                        ("out", lambda: _numba.launch(kernels.output_tiles_last, M, b, th, tw, out[:, :, None], 0, 1)),
                        ("wino", lambda: winograd.forward(x, w, b, spec, shape)),
                        ("gemm", lambda: gemm.forward(x, w, b, spec, shape)),
                        ("torch", lambda: F.conv2d(xt, wt, bt, 1, 1))],
            "grad_input": [("wino", lambda: winograd.grad_input(g, w, spec, shape)),
                           ("gemm", lambda: gemm.backward(g, None, w, spec, shape, (True, False))[0]),
                           ("torch", lambda: torch.ops.aten.convolution_backward(
                               gt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]))],
            "grad_weight": [("in", lambda: _numba.launch(kernels.input_tiles_last, x, 1, 1, th, tw, V)),
                            ("out-grad", lambda: _numba.launch(kernels.gradient_tiles_last, g[:, :, None], 0, 1, th, tw, Z)),
                            ("products", lambda: blas.stacked(Z.transpose(0, 2, 1), V, out=dU)),
                            ("wino", lambda: winograd.grad_weight(g, x, spec, shape)),
                            ("gemm", lambda: gemm.backward(g, x, None, spec, shape, (False, True))[1]),
                            ("torch", lambda: torch.ops.aten.convolution_backward(
                                gt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]))],
        }
        for pass_, items in steps.items():
            times = {name: t(fn) for name, fn in items}
            print(f"{C}ch {H}² {pass_:11s} " + "  ".join(f"{k} {v:.2f}" for k, v in times.items())
                  + f"   | GF/s wino {flops / times['wino'] / 1e6:.0f}, gemm {flops / times['gemm'] / 1e6:.0f}, "
                  f"torch {flops / times['torch'] / 1e6:.0f}", flush=True)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    print(f"NumPy GEMM 2048³: {2 * 2048**3 / timed(lambda: a @ a, args.repeat, clock) / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
