"""convscope against convscope: two checkouts of the project timed on bench_conv's layers, each in its
own process, in alternating rounds.

A change to a fast path is measured by the code before and after it, not by two bench runs against
torch, whose own times move between runs.  Each round starts one process per checkout (the order
alternates), and each process imports that checkout's ``src`` and times ``conv2d`` and ``conv2d`` +
``conv2d_backward`` on every layer (a warm-up, then the median of the calls in a fixed time).  The
ratio new ÷ old is taken per round, and its median over the rounds is reported with its range.

    git worktree add /tmp/old HEAD~1
    python bench/ab_checkouts.py /tmp/old . --layers layer1.0.conv1 mb.features.2.project --rounds 10

Layers are named as in ``bench_conv.py`` (``--layers`` defaults to all of its target layers).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _time_layers(root: str, names: list, warmup: float, budget: float) -> dict:
    """In a worker process: {layer: (forward ms, forward + backward ms)} for the checkout at ``root``."""
    sys.path.insert(0, os.path.join(root, "src"))
    import numpy as np
    import convscope

    here = os.path.realpath(os.path.join(root, "src"))
    if not os.path.realpath(convscope.__file__).startswith(here):
        raise SystemExit(f"imported convscope from {convscope.__file__}, not from {here}")
    sys.path.insert(1, os.path.join(root, "bench"))
    import bench_conv

    bench_conv.configure_malloc("reuse")
    layers = {layer.name: layer for layer in bench_conv.LAYERS}
    rng = np.random.default_rng(0)

    def median_ms(fn):
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            fn()
        samples, end = [], time.perf_counter() + budget
        while time.perf_counter() < end or len(samples) < 5:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return float(np.median(samples)) * 1e3

    result = {}
    for name in names:
        layer = layers[name]
        x = rng.standard_normal((layer.N, layer.C_in, layer.H, layer.W), dtype=np.float32)
        w = rng.standard_normal((layer.C_out, layer.C_in // layer.groups, layer.kH, layer.kW), dtype=np.float32)
        b = rng.standard_normal(layer.C_out, dtype=np.float32)
        kw = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups)
        g = rng.standard_normal(convscope.conv2d(x, w, b, **kw).shape, dtype=np.float32)
        result[name] = (median_ms(lambda: convscope.conv2d(x, w, b, **kw)),
                        median_ms(lambda: (convscope.conv2d(x, w, b, **kw), convscope.conv2d_backward(g, x, w, **kw))))
    return result


def _run(root, names, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", root, "--layers", *names,
           "--warmup", str(args.warmup), "--budget", str(args.budget)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the worker for {root} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", nargs="?", help="the checkout before the change")
    ap.add_argument("new", nargs="?", help="the checkout after it")
    ap.add_argument("--layers", nargs="+", metavar="NAME", help="bench_conv layer names (default: its targets)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    ap.add_argument("--warmup", type=float, default=0.15, metavar="S", help="untimed calls first, seconds")
    ap.add_argument("--budget", type=float, default=0.25, metavar="S", help="timed calls per layer, seconds")
    ap.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_time_layers(args.worker, args.layers, args.warmup, args.budget)))
        return 0
    if not (args.old and args.new):
        ap.error("give the two checkouts, old then new")
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_conv

    known = {layer.name: layer for layer in bench_conv.LAYERS}
    names = args.layers or [layer.name for layer in bench_conv.LAYERS if layer.net in ("ResNet-50", "MobileNetV2")]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"--layers: unknown layer {unknown[0]!r}; bench_conv.py's layers are {', '.join(known)}")
    ratios = {n: [] for n in names}
    for r in range(args.rounds):
        order = [("old", args.old), ("new", args.new)][:: 1 if r % 2 == 0 else -1]
        times = {label: _run(root, names, args) for label, root in order}
        for n in names:
            ratios[n].append([times["new"][n][i] / times["old"][n][i] for i in (0, 1)])
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print(f"new ÷ old, median of {args.rounds} rounds (range), forward and forward + backward")
    for n in names:
        fwd, fb = sorted(p[0] for p in ratios[n]), sorted(p[1] for p in ratios[n])
        med = lambda v: (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
        print(f"{n:26s} fwd {med(fwd):.2f} ({fwd[0]:.2f}–{fwd[-1]:.2f})   f+b {med(fb):.2f} ({fb[0]:.2f}–{fb[-1]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
