#!/usr/bin/env python
"""Time convscope's Conv1d and Conv3d against ``torch.nn.functional.conv1d`` / ``conv3d``.

Usage::

    python bench/bench_nd.py                      # every layer, forward and forward+backward
    python bench/bench_nd.py --repeat 5 --markdown bench/results_nd.md
    python bench/bench_nd.py --layers c3d.conv2 unet3d.enc1   # a subset
    python bench/bench_nd.py --cpu-time              # one thread each, process CPU time (a loaded machine)

Layers: a WaveNet/TCN dilated stack (kernel 2, dilations 1 to 512, 64 channels), the wav2vec
2.0 feature encoder (kernel 10 stride 5, then kernels 3 and 2 with stride 2, 512 channels, one
second of 16 kHz audio), a C3D/I3D 3×3×3 block and 3-D U-Net blocks; and transposed convolutions
(``tr.`` rows, against ``conv_transpose2d``): a DCGAN generator's 4×4 stride-2 layers, a U-Net
2×2/2 up-convolution and FCN's 4×4/2 score upsampling.  ``--transposed`` runs only those.  A row ``× n`` stands
for n layers of the same shape (timed once, counted n times in the totals).

Method (``bench_conv.sample``, the 2-d bench's ``--method handover``): both libraries in one process,
float32, on the same arrays; for each layer and pass the two are sampled alternately, each
sample preceded by ``--handover`` seconds of untimed calls of the same library (so that the
other library's thread pool has gone idle), and the median of ``--repeat`` samples is reported.
With ``--cpu-time`` both libraries run on one thread (torch's, BLAS's and numba's) and a sample is
the process's CPU time per call rather than wall time, with no handover: on a machine that other work
keeps busy, CPU time counts only this process's work (cache and memory contention still show), so the
ratios stay comparable where wall-clock samples are dominated by waiting.  The allocator is set as in the
2-d bench (``--malloc``, default ``reuse``: glibc keeps freed memory, so that neither library pays page
faults in steady state; ``--malloc default`` leaves glibc alone).  convscope
runs with ``algorithm=None`` (1-d: the 2-d planner's choice for height 1; 3-d: the rows of
``planner.ND_TABLE``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))   # this checkout's convscope

import numpy as np
import torch

import convscope
from bench_conv import MALLOC_MODES, configure_malloc, cpu_model, sample, threading_layer   # the 2-d bench's sampling and allocator setting (bench/ is the script's directory)

MIN_SAMPLE = 0.02   # seconds of timed calls per sample

# name, input shape, weight shape, parameters, count
LAYERS = [
    *[(f"tcn.d{d}", (4, 64, 4000), (64, 64, 2), dict(dilation=d), 1) for d in (1, 8, 64, 512)],
    ("w2v.conv0", (4, 1, 16000), (512, 1, 10), dict(stride=5), 1),
    ("w2v.conv1", (4, 512, 3199), (512, 512, 3), dict(stride=2), 1),
    ("w2v.conv3", (4, 512, 799), (512, 512, 3), dict(stride=2), 1),
    ("w2v.conv5", (4, 512, 199), (512, 512, 2), dict(stride=2), 1),
    ("c3d.conv2", (2, 64, 8, 28, 28), (128, 64, 3, 3, 3), dict(padding=1), 1),
    ("c3d.conv3", (2, 128, 4, 14, 14), (256, 128, 3, 3, 3), dict(padding=1), 1),
    ("unet3d.enc1", (1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1), 1),
    ("unet3d.enc3", (1, 128, 8, 8, 8), (128, 128, 3, 3, 3), dict(padding=1), 1),
]
# transposed: weight (in, out/groups, k...)
TRANSPOSED = [
    ("tr.dcgan.1", (16, 512, 4, 4), (512, 256, 4, 4), dict(stride=2, padding=1), 1),
    ("tr.dcgan.2", (16, 256, 8, 8), (256, 128, 4, 4), dict(stride=2, padding=1), 1),
    ("tr.dcgan.3", (16, 128, 16, 16), (128, 64, 4, 4), dict(stride=2, padding=1), 1),
    ("tr.dcgan.4", (16, 64, 32, 32), (64, 3, 4, 4), dict(stride=2, padding=1), 1),
    ("tr.unet.up", (8, 128, 32, 32), (128, 64, 2, 2), dict(stride=2), 1),
    ("tr.fcn.up2", (8, 21, 16, 16), (21, 21, 4, 4), dict(stride=2, bias=False), 1),
]


def _cpu_sample(fn, min_sample: float) -> float:
    """CPU seconds of this process per call of ``fn``: one call to size the sample, then as many calls
    as fill ``min_sample`` seconds of CPU time (at least one)."""
    t0 = time.process_time()
    fn()
    calls = max(1, int(min_sample / max(time.process_time() - t0, 1e-6)))
    t0 = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - t0) / calls


CPU_TIME = False    # --cpu-time: _cpu_sample on one thread instead of bench_conv's sample


def _pair(torch_fn, cs_fn, repeat: int, handover: float) -> tuple[float, float]:
    """(torch's, convscope's) median milliseconds per call, sampled in turn (bench_conv's ``sample``)."""
    fns = (torch_fn, cs_fn)
    samples = [[], []]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            samples[i].append(_cpu_sample(fn, MIN_SAMPLE) if CPU_TIME else sample(fn, handover, MIN_SAMPLE))
    return tuple(statistics.median(s) * 1e3 for s in samples)


def _arrays(layer, rng):
    """(x, w, b, params without ``bias``, transposed, nd) of a layer."""
    name, x_shape, w_shape, params, _ = layer
    nd = len(w_shape) - 2
    transposed = name.startswith("tr.")
    params = dict(params)
    with_bias = params.pop("bias", True)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / math.sqrt(math.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[1] if transposed else w_shape[0]).astype(np.float32) if with_bias else None
    return x, w, b, params, transposed, nd


def _torch_calls(x, w, b, g, params, transposed, nd):
    """(forward, forward+backward) of torch's layer on these arrays."""
    tconv = getattr(torch.nn.functional, f"{'conv_transpose' if transposed else 'conv'}{nd}d")
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    bt = None if b is None else torch.from_numpy(b)
    gt = torch.from_numpy(g)
    xg, wg = (a.clone().requires_grad_(True) for a in (xt, wt))
    bg = None if bt is None else bt.clone().requires_grad_(True)

    def torch_fb():
        for a in (xg, wg, bg):
            if a is not None:
                a.grad = None
        tconv(xg, wg, bg, **params).backward(gt)

    return (lambda: tconv(xt, wt, bt, **params)), torch_fb


def torch_calls(layer, rng):
    """(forward, forward+backward) of torch's layer, on random arrays of the layer's shapes."""
    x, w, b, params, transposed, nd = _arrays(layer, rng)
    tconv = getattr(torch.nn.functional, f"{'conv_transpose' if transposed else 'conv'}{nd}d")
    y = tconv(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b), **params)
    g = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    return _torch_calls(x, w, b, g, params, transposed, nd)


def bench(layer, repeat: int, handover: float):
    name, x_shape, w_shape, _, count = layer
    rng = np.random.default_rng(0)
    x, w, b, params, transposed, nd = _arrays(layer, rng)
    kind = "conv_transpose" if transposed else "conv"
    conv, backward = getattr(convscope, f"{kind}{nd}d"), getattr(convscope, f"{kind}{nd}d_backward")
    tconv = getattr(torch.nn.functional, f"{kind}{nd}d")
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    bt = None if b is None else torch.from_numpy(b)
    y = conv(x, w, b, **params)
    g = rng.standard_normal(y.shape).astype(np.float32)
    err = float(np.abs(y - tconv(xt, wt, bt, **params).numpy()).max() / np.abs(y).max())
    torch_fwd, torch_fb = _torch_calls(x, w, b, g, params, transposed, nd)

    def cs_fb():
        conv(x, w, b, **params)
        backward(g, x, w, **params)

    fwd = _pair(torch_fwd, lambda: conv(x, w, b, **params), repeat, handover)
    fb = _pair(torch_fb, cs_fb, repeat, handover)
    if transposed:      # the convolution whose grad-input pass it is
        algorithm = convscope.plan(y.shape, w_shape, **params).grad_input.algorithm
    else:
        algorithm = convscope.plan(x_shape, w_shape, **params).forward.algorithm
    return name, x_shape, w_shape, params, count, algorithm, fwd, fb, err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--handover", type=float, default=0.2)
    ap.add_argument("--markdown", help="write the table (and the geomeans) to this file")
    ap.add_argument("--transposed", action="store_true", help="only the transposed layers")
    ap.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (names as in the table)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread per library, samples of process CPU time (for a loaded machine)")
    ap.add_argument("--malloc", choices=list(MALLOC_MODES), default="reuse",
                    help="glibc's mmap and trim thresholds, as bench_conv.py's option (default: reuse)")
    args = ap.parse_args(argv)
    malloc = configure_malloc(args.malloc)
    if args.cpu_time:
        global CPU_TIME
        CPU_TIME = True
        torch.set_num_threads(1)
        convscope.set_num_threads(1)       # its BLAS and its compiled kernels
    layers = TRANSPOSED if args.transposed else LAYERS + TRANSPOSED
    if args.layers:
        unknown = sorted(set(args.layers) - {layer[0] for layer in LAYERS + TRANSPOSED})
        if unknown:
            ap.error(f"unknown layer names: {', '.join(unknown)}")
        layers = [layer for layer in layers if layer[0] in args.layers]
    rows = [bench(layer, args.repeat, args.handover) for layer in layers]
    lines = [
        "# convscope vs torch: Conv1d, Conv3d and transposed convolutions",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- command: `python bench/bench_nd.py --repeat {args.repeat}{' --transposed' if args.transposed else ''}"
        f"{' --layers ' + ' '.join(args.layers) if args.layers else ''}"
        f"{' --cpu-time' if args.cpu_time else ''}{'' if args.malloc == 'reuse' else ' --malloc ' + args.malloc}`",
        f"- CPU: {cpu_model()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), NumPy {np.__version__}, numba's {threading_layer()} threading layer",
        f"- float32, {args.repeat} interleaved samples per pass (median), "
        + ("process CPU time, one thread each" if args.cpu_time else f"{args.handover} s handover") + f", {malloc}",
        "",
        "| layer | input | weight | params | algorithm | fwd torch ms | fwd cs ms | fwd ratio "
        "| f+b torch ms | f+b cs ms | f+b ratio | fwd rel err |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {False: ([], []), True: ([], [])}
    for name, xs, ws, params, count, algorithm, (tf, cf), (tb, cb), err in rows:
        ratios_f, ratios_b = ratios[name.startswith("tr.")]
        ratios_f += [cf / tf] * count
        ratios_b += [cb / tb] * count
        lines.append(f"| {name} | {xs} | {ws} | {params} | {algorithm} | {tf:.3f} | {cf:.3f} | {cf / tf:.2f} "
                     f"| {tb:.3f} | {cb:.3f} | {cb / tb:.2f} | {err:.1e} |")
    geo = lambda r: math.exp(sum(map(math.log, r)) / len(r))  # noqa: E731
    lines.append("")
    for tr, (ratios_f, ratios_b) in ratios.items():
        if ratios_f:
            lines.append(f"geomean ratio (convscope / torch), {'transposed' if tr else 'Conv1d/Conv3d'} layers: "
                         f"forward {geo(ratios_f):.2f}, forward+backward {geo(ratios_b):.2f}; "
                         f"worst forward {max(ratios_f):.2f}")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
