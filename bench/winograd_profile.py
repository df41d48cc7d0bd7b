#!/usr/bin/env python
"""Where Winograd F(4×4, 3×3)'s time goes, per pass, on ResNet-50's 3×3 stride-1 layers (batch 8, float32).

Usage::

    python bench/winograd_profile.py                 # all cores
    python bench/winograd_profile.py --threads 1     # one core (also: CPU time, robust on a busy machine)

For each layer and pass (forward, grad_input, grad_weight) it times the steps of
:mod:`convscope.algorithms.winograd` apart, over the blocks of tile rows the pass uses, one after
another on one thread: the input transform (``input_block``), the 36 products of each block (NumPy's
BLAS, one thread), the output transform (``output_block``; for grad_weight the transform of the
output gradient, ``gradient_block``, and the sum of the blocks' products).  Then the whole pass
(blocks on ``--threads`` Python threads), the same pass unblocked (``flat``: each transform over all
tiles at once, numba's threads, then the 36 products over all tiles, the BLAS's threads, as before
the blocking), im2col GEMM and torch.  Effective GFLOP/s count a direct convolution's
2·N·C·C_out·9·H_out·W_out FLOPs.  Each figure is the median of ``--repeat`` samples, each after 0.2
s of untimed calls of the same step.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import time

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
    from convscope.algorithms import gemm, winograd
    from convscope.algorithms.kernels import _numba
    from convscope.algorithms.kernels import winograd as kernels
    from convscope.spec import check_shapes, make_spec
    from convscope.threads import single_blas

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
        th, tw = winograd._tiles(H, H)
        rows = N * th
        U = winograd.transform_weight(w)
        out = np.empty_like(x)
        xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
        per, wide = winograd._layout(C, C, tw, rows)
        per_w, wide_w = winograd._layout(C, C, tw, rows, winograd.WEIGHT_BLOCK_TILES)
        print(f"{C}ch {H}²: blocks of {per * tw} tiles{' (wide)' if wide else ''}, "
              f"grad_weight {per_w * tw}{' (wide)' if wide_w else ''}, of {rows * tw}")
        cols, cols_w = (rows if wide else per) * tw, (rows if wide_w else per_w) * tw
        V, M = np.empty((36, C, cols), np.float32), np.empty((36, C, cols), np.float32)
        Vw, Zw = np.empty((36, C, cols_w), np.float32), np.empty((36, C, cols_w), np.float32)
        dU, tmp = np.zeros((36, C, C), np.float32), np.empty((36, C, C), np.float32)

        def t(fn):
            return timed(fn, args.repeat, clock) * 1e3

        def blocks(per_block):                           # whole blocks only: one specialisation a kernel
            return [(r, r + per_block) for r in range(0, rows - per_block + 1, per_block)]

        def each(per_block, step, whole=False):          # whole: the wide layout's products, once
            def run():
                for r0, r1 in ([(0, rows)] if whole else blocks(per_block)):
                    step(r0, r1)
            return run

        def scaled(per_block):                           # the steps' times, scaled to all rows
            return rows / (len(blocks(per_block)) * per_block)

        def p0(r0, wide_):                               # where a block's tiles go
            return r0 * tw if wide_ else 0

        def flat_forward():
            Vf, _ = winograd._input_transform(x, 1, 1, H, H)
            Mf = np.matmul(U, Vf)                        # (36, O, C) @ (36, C, P) → (36, O, P)
            _numba.launch(kernels.output_tiles, Mf, b, th, tw, out)

        def flat_grad_weight():
            Vf, _ = winograd._input_transform(x, 1, 1, H, H)
            Zf = np.empty((36, C, N * th * tw), np.float32)
            _numba.launch(kernels.gradient_tiles, g, th, tw, Zf)
            return np.matmul(Zf, Vf.transpose(0, 2, 1))  # (36, O, P) @ (36, P, C) → (36, O, C)

        def products(r0, r1):
            np.matmul(Zw, Vw.transpose(0, 2, 1), out=tmp)
            np.add(dU, tmp, out=dU)

        torch_grad = {pass_: (lambda mask=mask: torch.ops.aten.convolution_backward(
            gt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask))
            for pass_, mask in (("grad_input", [True, False, False]), ("grad_weight", [False, True, False]))}
        steps = {
            "forward": [("in", per, each(per, lambda r0, r1: kernels.input_block(
                            x, 1, 1, th, tw, r0, r1, V, p0(r0, wide)))),
                        ("products", per, each(per, lambda r0, r1: np.matmul(U, V, out=M), wide)),
                        ("out", per, each(per, lambda r0, r1: kernels.output_block(
                            M, b, th, tw, r0, r1, out, p0(r0, wide)))),
                        ("wino", None, lambda: winograd.forward(x, w, b, spec, shape)),
                        ("flat", None, flat_forward),
                        ("gemm", None, lambda: gemm.forward(x, w, b, spec, shape)),
                        ("torch", None, lambda: F.conv2d(xt, wt, bt, 1, 1))],
            "grad_input": [("wino", None, lambda: winograd.grad_input(g, w, spec, shape)),
                           ("gemm", None, lambda: gemm.backward(g, None, w, spec, shape, (True, False))[0]),
                           ("torch", None, torch_grad["grad_input"])],
            "grad_weight": [("in", per_w, each(per_w, lambda r0, r1: kernels.input_block(
                                x, 1, 1, th, tw, r0, r1, Vw, p0(r0, wide_w)))),
                            ("out-grad", per_w, each(per_w, lambda r0, r1: kernels.gradient_block(
                                g, th, tw, r0, r1, Zw, p0(r0, wide_w)))),
                            ("products", per_w, each(per_w, products, wide_w)),
                            ("wino", None, lambda: winograd.grad_weight(g, x, spec, shape)),
                            ("flat", None, flat_grad_weight),
                            ("gemm", None, lambda: gemm.backward(g, x, None, spec, shape, (False, True))[1]),
                            ("torch", None, torch_grad["grad_weight"])],
        }
        for pass_, items in steps.items():
            times = {}
            for name, per_block, fn in items:
                if per_block is None:
                    times[name] = t(fn)
                else:
                    whole = name == "products" and (wide if pass_ == "forward" else wide_w)
                    with single_blas():
                        times[name] = t(fn) * (1 if whole else scaled(per_block))
            print(f"{C}ch {H}² {pass_:11s} " + "  ".join(f"{k} {v:.2f}" for k, v in times.items())
                  + f"   | GF/s wino {flops / times['wino'] / 1e6:.0f}, gemm {flops / times['gemm'] / 1e6:.0f}, "
                  f"torch {flops / times['torch'] / 1e6:.0f}", flush=True)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    print(f"NumPy GEMM 2048³: {2 * 2048**3 / timed(lambda: a @ a, args.repeat, clock) / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
