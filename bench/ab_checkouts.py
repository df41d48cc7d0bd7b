"""convscope against convscope: two checkouts of the project timed on bench_conv's layers, each in its
own process, in alternating rounds.

A change to a fast path is measured by the code before and after it, not by two bench runs against
torch, whose own times move between runs.  Each round starts one process per checkout (the order
alternates), and each process imports that checkout's ``src`` and times ``conv2d`` and ``conv2d`` +
``conv2d_backward`` on every layer with that checkout's bench_conv (its arrays, calls and samples:
untimed calls for ``--handover`` seconds, then timed ones; the median of ``--repeat`` samples).  The
ratio new ÷ old is taken per round, and its median over the rounds is reported with its range.

    git worktree add /tmp/old HEAD~1
    python bench/ab_checkouts.py /tmp/old . --layers layer1.0.conv1 mb.features.2.project --rounds 10

Layers are named as in ``bench_conv.py`` (``--layers`` defaults to all of its target layers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _time_layers(root: str, names: list, repeat: int, handover: float, min_sample: float) -> dict:
    """In a worker process: {layer: (forward ms, forward + backward ms)} for the checkout at ``root``,
    each the median of ``repeat`` of bench_conv's samples of its convscope calls."""
    sys.path.insert(0, os.path.join(root, "src"))
    import numpy as np
    import convscope

    here = os.path.realpath(os.path.join(root, "src"))
    if not os.path.realpath(convscope.__file__).startswith(here):
        raise SystemExit(f"imported convscope from {convscope.__file__}, not from {here}")
    sys.path.insert(1, os.path.join(root, "bench"))
    import bench_conv

    bench_conv.configure_malloc("reuse")
    threads = bench_conv.usable_cores()
    bench_conv.prepare("convscope", threads)
    layers = {layer.name: layer for layer in bench_conv.LAYERS}
    rng = np.random.default_rng(0)
    result = {}
    for name in names:
        calls = bench_conv.build("convscope", layers[name], bench_conv.layer_arrays(layers[name], rng), threads)
        result[name] = tuple(
            1e3 * statistics.median(bench_conv.sample(calls.run[p], handover, min_sample) for _ in range(repeat))
            for p in ("fwd", "fb"))
    return result


def _run(root, names, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", root, "--layers", *names,
           "--repeat", str(args.repeat), "--handover", str(args.handover), "--min-sample", str(args.min_sample)]
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
    ap.add_argument("--repeat", type=int, default=3, help="samples per layer, pass and round (median; default 3)")
    ap.add_argument("--handover", type=float, default=0.2, metavar="S", help="untimed calls before each sample")
    ap.add_argument("--min-sample", type=float, default=0.02, metavar="S", help="timed calls per sample, seconds")
    ap.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_time_layers(args.worker, args.layers, args.repeat, args.handover, args.min_sample)))
        return 0
    if not (args.old and args.new):
        ap.error("give the two checkouts, old then new")
    for option in ("rounds", "repeat"):
        if getattr(args, option) < 1:
            ap.error(f"--{option} must be at least 1, got {getattr(args, option)}")
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
        print(f"{n:26s} fwd {statistics.median(fwd):.2f} ({fwd[0]:.2f}–{fwd[-1]:.2f})   "
              f"f+b {statistics.median(fb):.2f} ({fb[0]:.2f}–{fb[-1]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
